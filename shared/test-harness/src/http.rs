//! A minimal HTTP/1.1 GET for readiness polling (no client crate needed).

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// GETs `http://127.0.0.1:<port><path>` and returns the status code, if any answer came.
pub(crate) async fn get_status(port: u16, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 64];
        let n = stream.read(&mut head).await.ok()?;
        String::from_utf8_lossy(&head[..n]).split_whitespace().nth(1)?.parse().ok()
    };
    // Longer than a service's readiness check timeout, so a slow check still answers 503.
    tokio::time::timeout(Duration::from_secs(5), exchange).await.ok().flatten()
}
