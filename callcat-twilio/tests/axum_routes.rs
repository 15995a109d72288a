//! `TwilioRoutes` on callcat-axum's router, mounted under `/callcat`: requests
//! are verified against the prefixed public URL Twilio signed, the TwiML flow
//! links to the prefixed gather URL, configured paths are served and
//! documented, and unconfigured routes answer 404.
#![cfg(feature = "axum")]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use callcat_axum::{Api, ApiRouter, JwtAuthenticator};
use callcat_core::memory::in_memory_stores;
use callcat_core::{
    CallTemplate, Clock, Engine, ManualClock, NewCall, Owner, PhoneNumber, Simulator,
    SimulatorConfig,
};
use callcat_twilio::{CallbackPaths, TwilioProvider, TwilioRoutes, compute_signature};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-test-token";
const ORIGIN: &str = "https://calls.example.com";

async fn api() -> Api {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let engine = Engine::builder()
        .stores(in_memory_stores())
        .simulator(Simulator::new(clock.clone(), SimulatorConfig::default()))
        .clock(clock)
        .build()
        .await
        .expect("engine");
    Api::new(engine)
}

fn provider(paths: CallbackPaths) -> TwilioProvider {
    TwilioProvider::builder()
        .account_sid(SID)
        .auth_token(TOKEN)
        .from_number(PhoneNumber::parse("+14155550100").expect("phone"))
        .public_base_url(format!("{ORIGIN}/callcat"))
        .callback_paths(paths)
        .build()
        .expect("provider")
}

/// A call whose flow asks one question.
async fn flow_call(api: &Api) -> String {
    let mut t = CallTemplate::new(
        "Ada",
        PhoneNumber::parse("+14155552671").expect("phone"),
        "Check-in",
        "Ask about the day.",
    );
    t.metadata = json!({"twilio_flow": {"prompts": ["How was your day?"]}})
        .as_object()
        .cloned()
        .expect("object");
    let created = api
        .service()
        .create(&Owner::new("acme", "ada"), NewCall::new(t))
        .await
        .expect("created");
    created.call().id.to_string()
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair(k, v)
                .finish()
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// POSTs a form to `target` (under the app), signed with `token` over the
/// public URL `ORIGIN + target`.
async fn post(
    app: &Router,
    target: &str,
    pairs: &[(&str, &str)],
    token: &str,
) -> (StatusCode, String) {
    let sig = compute_signature(token, &format!("{ORIGIN}{target}"), pairs);
    let req = Request::post(target)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", sig)
        .body(Body::from(form(pairs)))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn app(api: Api, routes: TwilioRoutes) -> (Router, Value) {
    let clock = api.clock().clone();
    let (router, doc) = routes
        .register(
            ApiRouter::new(api, Arc::new(JwtAuthenticator::new(b"secret", clock)))
                .public_base_url(ORIGIN),
        )
        .build_with_openapi()
        .expect("router");
    (
        Router::new().nest("/callcat", router),
        serde_json::to_value(doc).expect("json"),
    )
}

#[tokio::test]
async fn the_flow_is_verified_and_linked_under_the_mount_prefix() {
    let api = api().await;
    let id = flow_call(&api).await;
    let (app, doc) = app(api, TwilioRoutes::new(&provider(CallbackPaths::default())));
    for path in [
        "/webhooks/twilio/status",
        "/webhooks/twilio/transcription",
        "/webhooks/twilio/twiml/{callId}",
        "/webhooks/twilio/gather/{callId}",
    ] {
        assert!(
            doc["paths"][path]["post"].is_object(),
            "{path} undocumented"
        );
    }

    let twiml_target = format!("/callcat/webhooks/twilio/twiml/{id}");
    let (st, _) = post(&app, &twiml_target, &[("CallSid", "CA1")], "forged").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, twiml) = post(&app, &twiml_target, &[("CallSid", "CA1")], TOKEN).await;
    assert_eq!(st, StatusCode::OK, "{twiml}");
    assert!(twiml.contains("How was your day?"), "{twiml}");
    assert!(
        twiml.contains(&format!(
            "{ORIGIN}/callcat/webhooks/twilio/gather/{id}?step=0"
        )),
        "{twiml}"
    );

    let gather_target = format!("/callcat/webhooks/twilio/gather/{id}?step=0");
    let answer = [("CallSid", "CA1"), ("SpeechResult", "Lovely.")];
    let (st, _) = post(&app, &gather_target, &answer, "forged").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, closing) = post(&app, &gather_target, &answer, TOKEN).await;
    assert_eq!(st, StatusCode::OK, "{closing}");
    assert!(closing.contains("<Hangup"), "{closing}");

    // Status callbacks take callcat-axum's generic webhook route.
    let status_target = format!("/callcat/webhooks/twilio/status?callcat_call_id={id}");
    let ringing = [("CallSid", "CA1"), ("CallStatus", "ringing")];
    let (st, _) = post(&app, &status_target, &ringing, "forged").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, ack) = post(&app, &status_target, &ringing, TOKEN).await;
    assert_eq!(st, StatusCode::OK, "{ack}");
    let ack: Value = serde_json::from_str(&ack).expect("ack");
    assert_eq!(ack["results"].as_array().map(Vec::len), Some(1), "{ack}");
}

#[tokio::test]
async fn configured_paths_are_served_and_documented() {
    let api = api().await;
    let id = flow_call(&api).await;
    let paths = CallbackPaths {
        twiml: "/tw/{call_id}/doc".into(),
        gather: "/tw/{call_id}/answer".into(),
        status: "/tw/status".into(),
        transcription: "/tw/words".into(),
    };
    let (app, doc) = app(api, TwilioRoutes::new(&provider(paths)));
    for path in [
        "/tw/status",
        "/tw/words",
        "/tw/{callId}/doc",
        "/tw/{callId}/answer",
    ] {
        assert!(
            doc["paths"][path]["post"].is_object(),
            "{path} undocumented"
        );
    }
    assert!(doc["paths"]["/webhooks/twilio/status"].is_null());
    let (st, twiml) = post(
        &app,
        &format!("/callcat/tw/{id}/doc"),
        &[("CallSid", "CA1")],
        TOKEN,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{twiml}");
    assert!(
        twiml.contains(&format!("{ORIGIN}/callcat/tw/{id}/answer?step=0")),
        "{twiml}"
    );
}

#[tokio::test]
async fn unconfigured_routes_answer_404() {
    let api = api().await;
    let id = flow_call(&api).await;
    let (app, doc) = app(api, TwilioRoutes::unconfigured());
    assert!(doc["paths"]["/webhooks/twilio/twiml/{callId}"]["post"].is_object());
    for target in [
        format!("/callcat/webhooks/twilio/twiml/{id}"),
        "/callcat/webhooks/twilio/status".to_owned(),
        "/callcat/webhooks/twilio/transcription".to_owned(),
    ] {
        let (st, body) = post(&app, &target, &[("CallSid", "CA1")], TOKEN).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{target}");
        let body: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["error"]["code"], "not_found", "{target}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("not configured")),
            "{body}"
        );
    }
}

/// Final transcription results arriving at once are all kept: each is an atomic
/// append (a read-modify-write of the whole transcript lost some of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transcription_callbacks_lose_no_segment() {
    const N: usize = 24;
    let api = api().await;
    let id = flow_call(&api).await;
    let (app, _) = app(
        api.clone(),
        TwilioRoutes::new(&provider(CallbackPaths::default())),
    );
    let target = format!("/callcat/webhooks/twilio/transcription?callcat_call_id={id}");
    let sends: Vec<_> = (0..N)
        .map(|i| {
            let (app, target) = (app.clone(), target.clone());
            tokio::spawn(async move {
                let data = format!(r#"{{"transcript":"utterance {i}"}}"#);
                let pairs = [
                    ("CallSid", "CA1"),
                    ("TranscriptionEvent", "transcription-content"),
                    ("Final", "true"),
                    ("TranscriptionData", data.as_str()),
                ];
                post(&app, &target, &pairs, TOKEN).await
            })
        })
        .collect();
    for sent in sends {
        let (st, body) = sent.await.expect("joined");
        assert_eq!(st, StatusCode::OK, "{body}");
        assert!(body.contains("transcript_updated"), "{body}");
    }
    let owner = Owner::new("acme", "ada");
    let t = api
        .engine()
        .transcripts()
        .get(&owner, id.parse().expect("id"))
        .await
        .expect("transcript");
    let mut said: Vec<String> = t.segments.iter().map(|s| s.text.clone()).collect();
    said.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("utterance {i}")).collect();
    expected.sort();
    assert_eq!(said, expected);
}
