//! A raw NATS client: the protocol written by hand, so a test can send what a client
//! library refuses to produce (header blocks with a bare CR, invalid UTF-8, lines
//! without a colon; subjects that are not UTF-8), as a hostile user's own client would.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::app::WAIT;

pub(crate) struct RawClient {
    stream: BufReader<TcpStream>,
}

impl RawClient {
    /// Connects to `nats://host:port` with a connect token (through the auth callout)
    /// and waits until the server has accepted the connection.
    pub(crate) async fn connect(url: &str, token: &str) -> Self {
        let address = url.trim_start_matches("nats://");
        let stream = TcpStream::connect(address).await.expect("tcp connect");
        let mut client = Self { stream: BufReader::new(stream) };
        let info = client.line().await;
        assert!(info.starts_with("INFO "), "expected INFO, got {info:?}");
        let connect = serde_json::json!({
            "auth_token": token, "headers": true, "verbose": false, "pedantic": false,
            "protocol": 1, "no_responders": true, "name": "raw-hostile-client",
        });
        client.write(format!("CONNECT {connect}\r\n").as_bytes()).await;
        client.ping().await.expect("the server accepts the raw client");
        client
    }

    /// `HPUB subject [reply] <header bytes> <total bytes>` with `header` exactly as given.
    pub(crate) async fn hpub(&mut self, subject: &[u8], reply: Option<&[u8]>, header: &[u8], payload: &[u8]) {
        let mut op = b"HPUB ".to_vec();
        op.extend_from_slice(subject);
        if let Some(reply) = reply {
            op.push(b' ');
            op.extend_from_slice(reply);
        }
        op.extend_from_slice(format!(" {} {}\r\n", header.len(), header.len() + payload.len()).as_bytes());
        op.extend_from_slice(header);
        op.extend_from_slice(payload);
        op.extend_from_slice(b"\r\n");
        self.write(&op).await;
    }

    /// `PUB subject <bytes>`, the subject exactly as given.
    pub(crate) async fn publish(&mut self, subject: &[u8], payload: &[u8]) {
        let mut op = b"PUB ".to_vec();
        op.extend_from_slice(subject);
        op.extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
        op.extend_from_slice(payload);
        op.extend_from_slice(b"\r\n");
        self.write(&op).await;
    }

    /// PING, then the server's answer: `Err` with the server's `-ERR` line if it sent one
    /// first (a permissions violation, a refused connection).
    pub(crate) async fn ping(&mut self) -> Result<(), String> {
        self.write(b"PING\r\n").await;
        loop {
            let line = self.line().await;
            match line.as_str() {
                "PONG" => return Ok(()),
                "PING" => self.write(b"PONG\r\n").await,
                l if l.starts_with("-ERR") => return Err(line),
                _ => {}
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.expect("write");
    }

    async fn line(&mut self) -> String {
        let mut line = Vec::new();
        let read = tokio::time::timeout(WAIT, self.stream.read_until(b'\n', &mut line)).await;
        assert!(matches!(read, Ok(Ok(n)) if n > 0), "the server closed the raw connection or went silent");
        String::from_utf8_lossy(&line).trim_end().to_owned()
    }
}

/// The header blocks of the attack (issue 26, H1), each with what it is.
pub(crate) const UNREADABLE_HEADER_BLOCKS: [(&str, &[u8]); 5] = [
    ("a bare CR in a value", b"NATS/1.0\r\nX-Note: foo\rbar\r\n\r\n"),
    ("a value that is not UTF-8", b"NATS/1.0\r\nX-Note: \xff\xfe\r\n\r\n"),
    ("a line without a colon", b"NATS/1.0\r\nno colon here\r\n\r\n"),
    ("a space in a header name", b"NATS/1.0\r\nX Note: spaced\r\n\r\n"),
    ("a first line other than NATS/1.0", b"HTTP/1.1 200 OK\r\nX-Note: v\r\n\r\n"),
];

/// A short pause for the server to route what was just written.
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}
