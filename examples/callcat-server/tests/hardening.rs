//! The server's own hardening: `/metrics` behind a token, JWT issuer and
//! audience from the settings, no development mode on a public address, a
//! header-read timeout on the listener, and a shutdown that a hung request
//! cannot hold up beyond the drain time.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use callcat_core::ManualClock;
use callcat_server::config::Secret;
use callcat_server::{Config, JwtAuthenticator, Server, StartError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

const SECRET: &str = "hardening-secret-hardening-secret-00";

fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        jwt_secret: Some(Secret::new(SECRET)),
        ..Config::default()
    }
}

async fn server(config: Config) -> Server {
    Server::builder(config)
        .clock(Arc::new(ManualClock::at_fixed_start()))
        .build()
        .await
        .expect("server builds")
}

async fn get(server: &Server, path: &str, token: Option<&str>) -> StatusCode {
    let mut req = Request::builder().uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Body::empty()).expect("request");
    server
        .router()
        .oneshot(req)
        .await
        .expect("infallible")
        .status()
}

#[tokio::test]
async fn metrics_need_the_metrics_token_when_one_is_set() {
    let open = server(config()).await;
    assert_eq!(get(&open, "/metrics", None).await, StatusCode::OK);
    let token = "scrape-token-0123456789";
    let guarded = server(Config {
        metrics_token: Some(Secret::new(token)),
        ..config()
    })
    .await;
    assert_eq!(
        get(&guarded, "/metrics", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&guarded, "/metrics", Some("scrape-token-0123456780")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get(&guarded, "/metrics", Some(token)).await, StatusCode::OK);
}

#[tokio::test]
async fn tokens_must_carry_the_configured_issuer_and_audience() {
    let mut c = config();
    c.jwt.issuer = Some("https://idp.example.com".into());
    c.jwt.audience = Some("callcat".into());
    let s = server(c).await;
    let good = s
        .state()
        .jwt
        .mint("ada", None, None, Duration::from_secs(60))
        .expect("token");
    assert_eq!(get(&s, "/api/calls", Some(&good)).await, StatusCode::OK);
    // Signed with the same secret, without iss and aud.
    let bare = JwtAuthenticator::new(SECRET.as_bytes(), s.state().api.clock().clone())
        .mint("ada", None, None, Duration::from_secs(60))
        .expect("token");
    assert_eq!(
        get(&s, "/api/calls", Some(&bare)).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn development_mode_refuses_a_public_address() {
    let c = Config {
        listen: "0.0.0.0:0".parse().expect("addr"),
        ..Config::default()
    };
    match Server::builder(c).build().await {
        Err(StartError::Config(e)) => assert_eq!(e.setting(), Some("CALLCAT_JWT_SECRET")),
        other => panic!("{other:?}"),
    }
}

/// Reads until the server closes the connection (bounded by `guard`).
async fn read_until_closed(stream: &mut TcpStream, guard: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(guard, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection");
    out
}

#[tokio::test]
async fn a_client_slow_to_send_its_headers_is_disconnected() {
    let mut c = config();
    c.http.header_read_timeout = Duration::from_secs(1);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let running = server(c).await.spawn(listener).expect("spawn");
    let mut stream = TcpStream::connect(running.addr()).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // The rest of the headers never comes; the server hangs up.
    let answer = read_until_closed(&mut stream, Duration::from_secs(60)).await;
    assert!(
        answer.is_empty() || String::from_utf8_lossy(&answer).contains("408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_hung_request_does_not_hold_shutdown_beyond_the_drain_time() {
    let mut c = config();
    c.dispatch.drain = Duration::from_secs(1);
    // Long enough that only the drain can end the hung request.
    c.http.request_timeout = Duration::from_secs(3600);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let running = server(c).await.spawn(listener).expect("spawn");
    let mut stream = TcpStream::connect(running.addr()).await.expect("connect");
    // A webhook whose body never arrives in full: the handler waits for it.
    stream
        .write_all(
            b"POST /webhooks/retell HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"event\":",
        )
        .await
        .expect("write");
    // Let the server start on the request before it is told to stop.
    let mut probe = TcpStream::connect(running.addr()).await.expect("connect");
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let health = read_until_closed(&mut probe, Duration::from_secs(60)).await;
    assert!(
        String::from_utf8_lossy(&health).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&health)
    );
    tokio::time::timeout(Duration::from_secs(60), running.shutdown())
        .await
        .expect("shutdown is bounded by the drain time")
        .expect("shutdown");
    // The hung connection was cut.
    read_until_closed(&mut stream, Duration::from_secs(60)).await;
}
