//! A transcription callback that arrives while the store is down is answered
//! 503 (so Twilio sends it again), never 200 `unknown_call` or 200 with the
//! segment lost, and the store's own message never reaches the caller; once
//! the store is back, Twilio's resend is stored.
#![cfg(feature = "axum")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use callcat_axum::{Api, ApiRouter, JwtAuthenticator};
use callcat_core::chrono::{DateTime, Utc};
use callcat_core::memory::in_memory_stores;
use callcat_core::{
    ActiveScope, Call, CallId, CallStore, CallTemplate, Clock, Created, Engine, Error, ListQuery,
    ManualClock, NewCall, Owner, Page, PhoneNumber, Result, Simulator, SimulatorConfig,
    StoreCapabilities, Stores, TenantId, Transcript, TranscriptSegment, TranscriptStore, WorkerId,
};
use callcat_twilio::{CallbackPaths, TwilioProvider, TwilioRoutes, compute_signature};
use tower::ServiceExt as _;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-test-token";
const ORIGIN: &str = "https://calls.example.com";
const DB_MESSAGE: &str = "connection to 10.0.0.7:5432 refused";

/// The memory stores, with `get`/`find_by_provider_call_id` of calls and
/// `get`/`append` of transcripts failing while `down` is set; counts the
/// failing requests. (mockall cannot mock these traits: their `Option<&str>`
/// arguments under `async_trait` hit mockall's lifetime limits, issue #571.)
#[derive(Clone)]
struct Outage {
    calls: Arc<dyn CallStore>,
    transcripts: Arc<dyn TranscriptStore>,
    calls_down: Arc<AtomicBool>,
    transcripts_down: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

impl Outage {
    fn new() -> Outage {
        let stores = in_memory_stores();
        Outage {
            calls: stores.calls,
            transcripts: stores.transcripts,
            calls_down: Arc::default(),
            transcripts_down: Arc::default(),
            refused: Arc::default(),
        }
    }

    fn stores(&self) -> Stores {
        Stores {
            calls: Arc::new(self.clone()),
            transcripts: Arc::new(OutageTranscripts(self.clone())),
            ..in_memory_stores()
        }
    }

    fn check(&self, flag: &AtomicBool) -> Result<()> {
        if flag.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Error::unavailable(DB_MESSAGE));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl CallStore for Outage {
    fn capabilities(&self) -> StoreCapabilities {
        self.calls.capabilities()
    }
    async fn create(&self, call: &Call) -> Result<Created> {
        self.calls.create(call).await
    }
    async fn get(&self, id: CallId) -> Result<Option<Call>> {
        self.check(&self.calls_down)?;
        self.calls.get(id).await
    }
    async fn update(&self, call: &Call) -> Result<Call> {
        self.calls.update(call).await
    }
    async fn delete_if_scheduled(&self, owner: &Owner, id: CallId) -> Result<()> {
        self.calls.delete_if_scheduled(owner, id).await
    }
    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page<Call>> {
        self.calls.list(owner, query).await
    }
    async fn find_by_provider_call_id(&self, provider_call_id: &str) -> Result<Option<Call>> {
        self.check(&self.calls_down)?;
        self.calls.find_by_provider_call_id(provider_call_id).await
    }
    async fn list_active(
        &self,
        scope: &ActiveScope,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        self.calls.list_active(scope, limit, cursor).await
    }
    async fn list_tenant_range(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        self.calls
            .list_tenant_range(tenant, from, to, limit, cursor)
            .await
    }
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Call>> {
        self.calls.claim_due(now, limit, worker, lease_until).await
    }
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        self.calls.next_due_at().await
    }
}

struct OutageTranscripts(Outage);

#[async_trait::async_trait]
impl TranscriptStore for OutageTranscripts {
    async fn put(&self, transcript: &Transcript) -> Result<()> {
        self.0.transcripts.put(transcript).await
    }
    async fn append(
        &self,
        call_id: CallId,
        owner: &Owner,
        provider_call_id: Option<&str>,
        segments: &[TranscriptSegment],
        now: DateTime<Utc>,
    ) -> Result<Transcript> {
        self.0.check(&self.0.transcripts_down)?;
        self.0
            .transcripts
            .append(call_id, owner, provider_call_id, segments, now)
            .await
    }
    async fn get(&self, call_id: CallId, now: DateTime<Utc>) -> Result<Option<Transcript>> {
        self.0.transcripts.get(call_id, now).await
    }
    async fn get_by_provider_call_id(
        &self,
        provider_call_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Transcript>> {
        self.0
            .transcripts
            .get_by_provider_call_id(provider_call_id, now)
            .await
    }
    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        self.0.transcripts.delete_expired(now).await
    }
}

async fn api(stores: Stores) -> Api {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let engine = Engine::builder()
        .stores(stores)
        .simulator(Simulator::new(clock.clone(), SimulatorConfig::default()))
        .clock(clock)
        .build()
        .await
        .expect("engine");
    Api::new(engine)
}

fn app(api: Api) -> Router {
    let provider = TwilioProvider::builder()
        .account_sid(SID)
        .auth_token(TOKEN)
        .from_number(PhoneNumber::parse("+14155550100").expect("phone"))
        .public_base_url(ORIGIN)
        .callback_paths(CallbackPaths::default())
        .build()
        .expect("provider");
    let clock = api.clock().clone();
    TwilioRoutes::new(&provider)
        .register(
            ApiRouter::new(api, Arc::new(JwtAuthenticator::new(b"secret", clock)))
                .public_base_url(ORIGIN),
        )
        .build()
        .expect("router")
}

/// A signed final transcription result for `call_id`.
async fn send(app: &Router, call_id: &str) -> (StatusCode, String) {
    let target = format!("/webhooks/twilio/transcription?callcat_call_id={call_id}");
    let pairs = [
        ("CallSid", "CA1"),
        ("TranscriptionEvent", "transcription-content"),
        ("Final", "true"),
        (
            "TranscriptionData",
            r#"{"transcript":"I can come on Tuesday"}"#,
        ),
    ];
    let sig = compute_signature(TOKEN, &format!("{ORIGIN}{target}"), &pairs);
    let body = pairs
        .iter()
        .map(|(k, v)| {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair(k, v)
                .finish()
        })
        .collect::<Vec<_>>()
        .join("&");
    let req = Request::post(&target)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", sig)
        .body(Body::from(body))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn assert_retry_later(status: StatusCode, body: &str) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("\"unavailable\""), "{body}");
    assert!(!body.contains("unknown_call"), "{body}");
    assert!(
        !body.contains(DB_MESSAGE),
        "the store's message leaked: {body}"
    );
}

async fn a_call(api: &Api) -> Call {
    let t = CallTemplate::new(
        "Ada",
        PhoneNumber::parse("+14155552671").expect("phone"),
        "Check-in",
        "Ask about the day.",
    );
    api.service()
        .create(&Owner::new("acme", "ada"), NewCall::new(t))
        .await
        .expect("created")
        .into_call()
}

#[tokio::test]
async fn a_transcript_store_outage_answers_503_and_the_resend_is_stored() {
    let outage = Outage::new();
    let api = api(outage.stores()).await;
    let call = a_call(&api).await;
    let app = app(api.clone());
    outage.transcripts_down.store(true, Ordering::SeqCst);
    let (status, body) = send(&app, &call.id.to_string()).await;
    assert_retry_later(status, &body);
    assert_eq!(outage.refused.load(Ordering::SeqCst), 1);

    // The database is back: Twilio's resend is stored, once.
    outage.transcripts_down.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        let (status, body) = send(&app, &call.id.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("transcript_updated"), "{body}");
    }
    let t = api
        .engine()
        .transcripts()
        .get(&call.owner, call.id)
        .await
        .expect("transcript");
    let said: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(said, vec!["I can come on Tuesday"]);
}

#[tokio::test]
async fn a_call_store_outage_answers_503_not_unknown_call() {
    let outage = Outage::new();
    let api = api(outage.stores()).await;
    let call = a_call(&api).await;
    let app = app(api);
    outage.calls_down.store(true, Ordering::SeqCst);
    let (status, body) = send(&app, &call.id.to_string()).await;
    assert_retry_later(status, &body);
    // The handler stopped at the first failure.
    assert_eq!(outage.refused.load(Ordering::SeqCst), 1);
}
