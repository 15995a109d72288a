//! Shutdown drains the dials in flight for up to `CALLCAT_DRAIN_SECONDS`: a dial
//! the provider answers during the drain is recorded; with no drain it is cut.
//! The provider is a loopback Retell stand-in that holds the create-phone-call
//! answer until the test releases it (no wall-clock waits). Without the drain
//! the first test fails in most runs, not all: the answer, sent once HTTP has
//! stopped, races the abort of the background work.

mod common;

use std::time::Duration;

use callcat::{CallId, CallStatus, PhoneNumber};
use callcat_server::config::{Secret, TelephonyConfig};
use common::{TestServer, test_config};
use serde_json::json;
use tokio::sync::watch;

/// Generous bound on each step, so a regression fails instead of hanging.
const STEP: Duration = Duration::from_secs(30);

/// A Retell-backed server on the stand-in, with `drain`, and one call for now
/// whose dial the stand-in holds.
async fn server_with_a_held_dial(drain: Duration) -> (TestServer, CallId, watch::Sender<bool>) {
    let (url, mut dials, release) = common::retell::held().await;
    let mut config = test_config();
    config.telephony = TelephonyConfig::Retell {
        api_key: Secret::new("key_drain_test_0123456789"),
        base_url: Some(url.parse().expect("url")),
        from_number: PhoneNumber::parse("+14155550100").expect("phone"),
        agent_id: "agent_drain".into(),
    };
    config.dispatch.drain = drain;
    let s = TestServer::start_with(config, |b| b).await;
    let id = s.create_call(&s.token("ada"), json!({}), 1).await;
    tokio::time::timeout(STEP, dials.recv())
        .await
        .expect("the scheduler dials the call")
        .expect("a dial");
    (s, id.parse().expect("call id"), release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_answered_during_the_drain_is_recorded() {
    let (mut s, id, release) = server_with_a_held_dial(Duration::from_secs(60)).await;
    let running = s.running.take().expect("running");
    let stopping = tokio::spawn(running.shutdown());
    // The answer comes only once HTTP has stopped: the point where the server
    // stops its background work, so without a drain the dial would be cut.
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut closed = false;
    for _ in 0..common::WAIT_ROUNDS {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            closed = true;
            break;
        }
        common::pause().await;
    }
    assert!(closed, "the server stops listening");
    release.send(true).expect("the dial is still held");
    tokio::time::timeout(STEP, stopping)
        .await
        .expect("shutdown ends once the dial is answered")
        .expect("join")
        .expect("clean shutdown");
    let call = s
        .server_state
        .api
        .stores()
        .calls
        .get(id)
        .await
        .expect("store")
        .expect("call");
    assert_eq!(call.status, CallStatus::Ringing, "{call:?}");
    assert_eq!(call.provider_call_id.as_deref(), Some("call_1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_drain_shutdown_does_not_wait_for_the_provider() {
    let (mut s, id, release) = server_with_a_held_dial(Duration::ZERO).await;
    let running = s.running.take().expect("running");
    // The answer never comes while the server stops.
    tokio::time::timeout(STEP, running.shutdown())
        .await
        .expect("shutdown does not wait for the held dial")
        .expect("clean shutdown");
    drop(release);
    let call = s
        .server_state
        .api
        .stores()
        .calls
        .get(id)
        .await
        .expect("store")
        .expect("call");
    assert_eq!(call.status, CallStatus::Dispatching, "{call:?}");
    assert_eq!(call.provider_call_id, None);
}
