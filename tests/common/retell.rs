//! A loopback Retell API stand-in whose create-phone-call answers wait until
//! the test releases them: a dial in flight, held as long as a test needs.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Starts the stand-in: its base URL, one message on `dials` per
/// create-phone-call request, and `release`: set it to `true` to answer every
/// held request (`{"call_id": "call_<n>"}`, n counting connections from 1);
/// dropped, they are never answered. Anything else gets a 404.
pub async fn held() -> (String, mpsc::Receiver<()>, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (dials_tx, dials) = mpsc::channel(16);
    let (release, released) = watch::channel(false);
    tokio::spawn(async move {
        let mut n = 0u32;
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            n += 1;
            let dials_tx = dials_tx.clone();
            let mut released = released.clone();
            tokio::spawn(async move {
                let head = read_head(&mut conn).await;
                if !head.starts_with("POST /v2/create-phone-call") {
                    let _ = conn
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
                let _ = dials_tx.send(()).await;
                if released.wait_for(|r| *r).await.is_err() {
                    return;
                }
                let body = format!(r#"{{"call_id":"call_{n}"}}"#);
                let _ = conn
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (url, dials, release)
}

/// Reads one request (head and a content-length body); returns the head.
pub async fn read_head(conn: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = conn.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text[..end].to_owned();
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}
