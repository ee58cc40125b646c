//! An authorization request as the callout reads it (sealed and unsealed), and a connect
//! token as it validates one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A request signed by a server we know nothing of is never accepted.
    assert!(!auth_service::fuzzing::callout_request(data, false));
    assert!(!auth_service::fuzzing::callout_request(data, true));
    if let Ok(token) = std::str::from_utf8(data) {
        assert!(!auth_service::fuzzing::access_token(token), "no keys are loaded: no token passes");
    }
});
