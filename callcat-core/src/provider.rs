//! The telephony side: [`TelephonyProvider`] places, fetches and ends calls;
//! [`WebhookVerifier`] turns a provider's HTTP request into [`ProviderEvent`]s.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::call::{Call, CallAnalysis, CallCost, CallOutcome};
use crate::error::Result;
use crate::ids::CallId;
use crate::transcript::TranscriptSegment;

/// The metadata key under which providers carry our call id.
pub const CALL_ID_METADATA_KEY: &str = "callcat_call_id";

/// The provider accepted a dial request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialAccepted {
    /// The provider's id for the new call.
    pub provider_call_id: String,
}

/// Where a call stands at the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ProviderCallState {
    /// Accepted, not yet ringing (Retell `registered`, Twilio `queued`/`initiated`).
    Queued,
    /// Ringing.
    Ringing,
    /// Connected.
    InProgress,
    /// Over (see the snapshot's outcome).
    Ended,
    /// The provider reports an error for the call.
    Error,
    /// A state this version does not know, kept verbatim.
    Unknown(String),
}

impl ProviderCallState {
    /// Whether the call is over at the provider.
    pub fn is_over(&self) -> bool {
        matches!(self, ProviderCallState::Ended | ProviderCallState::Error)
    }
}

/// What a provider knows about one of its calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderCall {
    /// The provider's id.
    pub provider_call_id: String,
    /// Our call id, when the provider carried it in metadata.
    pub call_id: Option<CallId>,
    /// Where it stands.
    pub state: ProviderCallState,
    /// When it was answered.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Talk time in milliseconds.
    pub duration_ms: Option<u64>,
    /// How it ended, mapped to callcat's outcomes.
    pub outcome: Option<CallOutcome>,
    /// The provider's disconnection reason, verbatim.
    pub disconnection_reason: Option<String>,
    /// The transcript so far, if the provider gives one.
    pub transcript: Option<Vec<TranscriptSegment>>,
    /// The analysis, once available.
    pub analysis: Option<CallAnalysis>,
    /// Where the recording is.
    pub recording_url: Option<String>,
    /// What it cost.
    pub cost: Option<CallCost>,
}

impl ProviderCall {
    /// A snapshot with only an id and a state.
    pub fn new(provider_call_id: impl Into<String>, state: ProviderCallState) -> Self {
        ProviderCall {
            provider_call_id: provider_call_id.into(),
            call_id: None,
            state,
            started_at: None,
            ended_at: None,
            duration_ms: None,
            outcome: None,
            disconnection_reason: None,
            transcript: None,
            analysis: None,
            recording_url: None,
            cost: None,
        }
    }
}

/// What happened, as the provider reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ProviderEventKind {
    /// Queued or ringing (progress before answer).
    Ringing,
    /// Answered / connected.
    Started,
    /// Over.
    Ended,
    /// Post-call analysis is ready.
    Analyzed,
    /// The live transcript changed.
    TranscriptUpdated,
    /// An event callcat does not act on (transfer events, new event types), kept verbatim.
    Other(String),
}

/// One event from a provider, already verified and parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderEvent {
    /// Which provider (`"retell"`, `"twilio"`, `"simulator"`).
    pub provider: String,
    /// What happened.
    pub kind: ProviderEventKind,
    /// The call as the provider describes it in this event.
    pub call: ProviderCall,
    /// The provider's ordering hint (Twilio `SequenceNumber`), if any.
    pub sequence: Option<u64>,
    /// When the provider says it happened.
    pub occurred_at: Option<DateTime<Utc>>,
}

/// What a provider can do beyond the basics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderCapabilities {
    /// [`TelephonyProvider::find_by_call_id`] can find a call by our id, so a dial
    /// interrupted by a crash can be reconciled instead of failed.
    pub lookup_by_call_id: bool,
    /// The provider pushes transcript updates.
    pub pushes_transcripts: bool,
}

/// Places, fetches and ends calls at a telephony provider.
///
/// Errors say whether they are retryable ([`crate::Error::is_retryable`]) and carry
/// Retry-After when the provider gave one.
#[async_trait::async_trait]
pub trait TelephonyProvider: Send + Sync + 'static {
    /// A short stable name (`"retell"`, `"twilio"`, `"simulator"`).
    fn name(&self) -> &str;

    /// What this provider can do.
    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities::default()
    }

    /// Checks, when a call is created or edited, what only this provider knows
    /// is wrong with it (the simulator's `metadata.simulate*` knobs), so the
    /// caller gets a `Validation` error at once instead of a failed dial later.
    /// The default accepts every call.
    fn check_call(&self, call: &Call) -> Result<()> {
        let _ = call;
        Ok(())
    }

    /// Sends the dial request for the call's current attempt.
    async fn place_call(&self, call: &Call) -> Result<DialAccepted>;

    /// What the provider knows about a call now.
    async fn fetch_call(&self, provider_call_id: &str) -> Result<ProviderCall>;

    /// Hangs up (or cancels before answer).
    async fn end_call(&self, provider_call_id: &str) -> Result<()>;

    /// Finds the call placed for `call_id`, when the provider can look calls up by
    /// our id ([`ProviderCapabilities::lookup_by_call_id`]). `Ok(None)` means the
    /// provider is sure there is none.
    async fn find_by_call_id(&self, call_id: CallId) -> Result<Option<ProviderCall>> {
        let _ = call_id;
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!("{} cannot look calls up by callcat id", self.name()),
        ))
    }
}

/// An incoming webhook request, framework-free.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    /// The full public URL the provider posted to (signatures may cover it).
    pub url: &'a str,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
    /// The raw body, exactly as received.
    pub body: &'a [u8],
}

/// Verifies a provider's webhook request and parses it into events.
pub trait WebhookVerifier: Send + Sync + 'static {
    /// Verifies the signature first (an `Unauthorized` error when it fails), then
    /// parses. `now` is the injected clock's time for timestamp tolerance.
    fn verify_and_parse(
        &self,
        req: WebhookRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ProviderEvent>>;
}
