//! Header blocks as they arrive from the server in an `HMSG` (any publisher writes them:
//! the server forwards them verbatim), read by the workspace's patched async-nats
//! (`patches/`). Whatever the bytes: no panic; a block that is read gives headers that
//! write back and read again as the same headers, and that trace-context extraction
//! takes without panicking; a block that is not read is an error the client reports
//! on the message (it is then delivered without headers).
#![no_main]

use async_nats::header::parse_header_block;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((_status, _description, headers)) = parse_header_block(data) else { return };
    let mut written = b"NATS/1.0\r\n".to_vec();
    for (name, values) in headers.iter() {
        for value in values {
            written.extend_from_slice(format!("{name}: {}\r\n", value.as_str()).as_bytes());
        }
    }
    written.extend_from_slice(b"\r\n");
    let (_, _, again) = parse_header_block(&written).expect("headers as written are readable");
    assert_eq!(again, headers);
    let _ = telemetry::propagation::extract_context(Some(&headers));
});
