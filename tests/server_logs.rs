//! Security in logs and at rest, end to end: a whole call through the server with
//! every log line captured at TRACE level, with encryption at rest switched on.
//! No log line may hold the plaintext number; the owner still gets it back.
//! (Raw rows and items are checked in callcat-postgres and callcat-dynamo.)

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::{TestServer, short_simulator, test_config};
use serde_json::json;

/// A `MakeWriter` that appends every log line to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_call_logs_no_plaintext_number_and_stores_none() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_ansi(false)
        .try_init()
        .expect("this test binary installs the only subscriber");

    let mut config = test_config();
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    config.master_key = Some(callcat_server::config::MasterKeys::parse(&key).expect("key"));
    let s = TestServer::start_with(config, |b| b.simulator_config(short_simulator())).await;
    let ada = s.token("ada");

    let id = s.create_call(&ada, json!({}), 1).await;
    s.wait_status(&ada, &id, "RINGING").await;
    for _ in 0..8 {
        s.advance(Duration::from_secs(2));
    }
    s.wait_status(&ada, &id, "COMPLETED").await;
    s.advance(Duration::from_secs(2));
    let call = s
        .wait_call(&ada, &id, "analyzed", |c| c["analysis"].is_object())
        .await;
    // The owner gets the number (and the recording URL) back in clear.
    assert_eq!(call["phoneNumber"], "+14155552671");
    assert!(call["recordingUrl"].is_string());
    let (status, _) = s.get(&format!("/api/calls/{id}/transcript"), &ada).await;
    assert_eq!(status, 200);

    let text = String::from_utf8(logs.0.lock().expect("log buffer").clone()).expect("utf-8 logs");
    assert!(
        text.lines().count() > 20,
        "the capture saw the call's logs:\n{text}"
    );
    assert!(text.contains(&id), "the logs are about this call");
    for needle in ["+14155552671", "4155552671"] {
        assert!(
            !text.contains(needle),
            "a log line holds the number {needle}:\n{}",
            text.lines()
                .filter(|l| l.contains(needle))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
