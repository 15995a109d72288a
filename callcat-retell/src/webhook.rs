//! Retell webhooks, framework-free: verify `x-retell-signature`, then parse the body
//! into callcat [`ProviderEvent`]s.
//!
//! The header is `v=<unix ms>,d=<64 lowercase hex>`; the digest is HMAC-SHA256,
//! keyed by the Retell API key, over the raw body immediately followed by the
//! decimal timestamp. Requests signed more than [`SIGNATURE_TOLERANCE`] away from
//! `now` are rejected. The digest is compared in constant time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{
    Error, ErrorKind, ProviderEvent, ProviderEventKind, WebhookRequest, WebhookVerifier,
};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

use crate::error::SOURCE;
use crate::mapping::{from_millis, to_provider_call};
use crate::wire::{EventType, WebhookBody};

/// The header carrying Retell's signature.
pub const SIGNATURE_HEADER: &str = "x-retell-signature";

/// How far the signature's timestamp may be from `now`, either way.
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Why a webhook's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// There is no `x-retell-signature` header.
    #[error("the x-retell-signature header is missing")]
    MissingHeader,
    /// The header is not `v=<unix ms>,d=<64 lowercase hex>`.
    #[error("the x-retell-signature header is malformed: {0}")]
    MalformedHeader(MalformedReason),
    /// The signature was made too long before (or after) `now`.
    #[error(
        "the signature timestamp {timestamp_ms} is more than 5 minutes away from now ({now_ms})"
    )]
    StaleTimestamp {
        /// The header's timestamp, in Unix milliseconds.
        timestamp_ms: i64,
        /// `now`, in Unix milliseconds.
        now_ms: i64,
    },
    /// The digest does not match the body, timestamp and key.
    #[error("the signature does not match the request body")]
    Mismatch,
    /// No API key to verify with.
    #[error("no Retell API key is configured to verify webhooks")]
    MissingKey,
}

/// What exactly is wrong with a malformed signature header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedReason {
    /// The header value is not visible ASCII text.
    #[error("not text")]
    NotText,
    /// The header appears more than once.
    #[error("header given more than once")]
    Repeated,
    /// No `v=` part.
    #[error("missing v=<timestamp>")]
    MissingTimestamp,
    /// `v=` is not a Unix-millisecond number.
    #[error("v= is not a millisecond timestamp")]
    InvalidTimestamp,
    /// No `d=` part.
    #[error("missing d=<digest>")]
    MissingDigest,
    /// `d=` is not 64 lowercase hex digits.
    #[error("d= is not 64 lowercase hex digits")]
    InvalidDigest,
    /// A part other than one `v=` and one `d=`.
    #[error("unexpected content")]
    UnexpectedPart,
}

/// Why a webhook was not turned into events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The signature check failed; nothing was parsed.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The signature is valid but the body is not a Retell webhook.
    #[error("the webhook body is not a Retell event: {0}")]
    InvalidBody(#[source] serde_json::Error),
    /// A known event without its call object.
    #[error("the Retell {event} event has no call object")]
    MissingCall {
        /// The event type.
        event: String,
    },
}

impl WebhookError {
    /// The signature error, when that is what failed.
    pub fn signature_error(&self) -> Option<&SignatureError> {
        match self {
            WebhookError::Signature(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SignatureError> for Error {
    fn from(e: SignatureError) -> Error {
        Error::new(ErrorKind::Unauthorized, e.to_string())
            .with_source_name(SOURCE)
            .with_source(e)
    }
}

impl From<WebhookError> for Error {
    fn from(e: WebhookError) -> Error {
        match e {
            WebhookError::Signature(s) => s.into(),
            other => Error::validation("body", other.to_string())
                .with_source_name(SOURCE)
                .with_source(other),
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(api_key: &str) -> HmacSha256 {
    match HmacSha256::new_from_slice(api_key.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
    }
}

fn digest(body: &[u8], api_key: &str, timestamp: &str) -> HmacSha256 {
    let mut m = mac(api_key);
    m.update(body);
    m.update(timestamp.as_bytes());
    m
}

/// The `x-retell-signature` value Retell would send for `body` at `timestamp_ms`:
/// `v=<timestamp_ms>,d=<hex HMAC-SHA256(api_key, body ++ timestamp_ms)>`.
/// For tests and the simulator.
pub fn sign_payload(body: impl AsRef<[u8]>, api_key: &str, timestamp_ms: i64) -> String {
    let ts = timestamp_ms.to_string();
    let d = digest(body.as_ref(), api_key, &ts).finalize().into_bytes();
    format!("v={ts},d={}", hex::encode(d))
}

struct ParsedHeader<'a> {
    timestamp: &'a str,
    timestamp_ms: i64,
    digest: [u8; 32],
}

fn parse_header(value: &str) -> Result<ParsedHeader<'_>, MalformedReason> {
    let mut ts = None;
    let mut d = None;
    for part in value.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("v=") {
            if ts.replace(v).is_some() {
                return Err(MalformedReason::UnexpectedPart);
            }
        } else if let Some(v) = part.strip_prefix("d=") {
            if d.replace(v).is_some() {
                return Err(MalformedReason::UnexpectedPart);
            }
        } else {
            return Err(MalformedReason::UnexpectedPart);
        }
    }
    let ts = ts.ok_or(MalformedReason::MissingTimestamp)?;
    let d = d.ok_or(MalformedReason::MissingDigest)?;
    if ts.is_empty() || ts.len() > 18 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MalformedReason::InvalidTimestamp);
    }
    let timestamp_ms = ts
        .parse::<i64>()
        .map_err(|_| MalformedReason::InvalidTimestamp)?;
    if d.len() != 64 || !d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(MalformedReason::InvalidDigest);
    }
    let mut digest = [0u8; 32];
    hex::decode_to_slice(d, &mut digest).map_err(|_| MalformedReason::InvalidDigest)?;
    Ok(ParsedHeader {
        timestamp: ts,
        timestamp_ms,
        digest,
    })
}

/// Checks `x-retell-signature` against the raw `body`. Returns the signature's
/// timestamp when it is valid and within [`SIGNATURE_TOLERANCE`] of `now`.
pub fn verify_signature(
    headers: &HeaderMap,
    body: &[u8],
    api_key: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, SignatureError> {
    let mut values = headers.get_all(SIGNATURE_HEADER).iter();
    let value = values.next().ok_or(SignatureError::MissingHeader)?;
    if values.next().is_some() {
        return Err(SignatureError::MalformedHeader(MalformedReason::Repeated));
    }
    let value = value
        .to_str()
        .map_err(|_| SignatureError::MalformedHeader(MalformedReason::NotText))?;
    let parsed = parse_header(value).map_err(SignatureError::MalformedHeader)?;
    if api_key.is_empty() {
        return Err(SignatureError::MissingKey);
    }
    digest(body, api_key, parsed.timestamp)
        .verify_slice(&parsed.digest)
        .map_err(|_| SignatureError::Mismatch)?;
    let now_ms = now.timestamp_millis();
    let tolerance_ms = u64::try_from(SIGNATURE_TOLERANCE.as_millis()).unwrap_or(u64::MAX);
    match from_millis(parsed.timestamp_ms) {
        Some(at) if now_ms.abs_diff(parsed.timestamp_ms) <= tolerance_ms => Ok(at),
        _ => Err(SignatureError::StaleTimestamp {
            timestamp_ms: parsed.timestamp_ms,
            now_ms,
        }),
    }
}

/// Verifies the signature, then parses the body into events (provider `"retell"`).
///
/// Event kinds: `call_started` → Started, `call_ended` → Ended, `call_analyzed` →
/// Analyzed, `transcript_updated` → TranscriptUpdated; transfer events and event
/// types this version does not know → `Other(<event>)`. An unknown event without
/// a call object yields no events (there is nothing to apply it to).
pub fn verify_and_parse(
    headers: &HeaderMap,
    body: &[u8],
    api_key: &str,
    now: DateTime<Utc>,
) -> Result<Vec<ProviderEvent>, WebhookError> {
    verify_signature(headers, body, api_key, now)?;
    parse_body(body)
}

fn parse_body(body: &[u8]) -> Result<Vec<ProviderEvent>, WebhookError> {
    let parsed: WebhookBody = serde_json::from_slice(body).map_err(WebhookError::InvalidBody)?;
    let kind = match &parsed.event {
        EventType::CallStarted => ProviderEventKind::Started,
        EventType::CallEnded => ProviderEventKind::Ended,
        EventType::CallAnalyzed => ProviderEventKind::Analyzed,
        EventType::TranscriptUpdated => ProviderEventKind::TranscriptUpdated,
        other => ProviderEventKind::Other(other.as_str().to_owned()),
    };
    let Some(call) = parsed.call else {
        return match parsed.event {
            EventType::Unknown(_) => Ok(Vec::new()),
            known => Err(WebhookError::MissingCall {
                event: known.as_str().to_owned(),
            }),
        };
    };
    let occurred_at = match parsed.event {
        EventType::CallStarted => call.start_timestamp.and_then(from_millis),
        EventType::CallEnded | EventType::CallAnalyzed => call.end_timestamp.and_then(from_millis),
        _ => None,
    };
    Ok(vec![ProviderEvent {
        provider: SOURCE.to_owned(),
        kind,
        call: to_provider_call(&call),
        sequence: None,
        occurred_at,
    }])
}

/// A [`WebhookVerifier`] for Retell, keyed by the API key. `Debug` hides the key.
#[derive(Clone)]
pub struct RetellWebhookVerifier {
    api_key: Arc<str>,
}

impl fmt::Debug for RetellWebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetellWebhookVerifier")
            .field("api_key", &"<redacted>")
            .finish()
    }
}

impl RetellWebhookVerifier {
    /// A verifier for webhooks signed with `api_key` (a `Validation` error if empty).
    pub fn new(api_key: impl Into<String>) -> callcat_core::Result<Self> {
        let key = api_key.into().trim().to_owned();
        if key.is_empty() {
            return Err(
                Error::validation("api_key", "the Retell API key is required")
                    .with_source_name(SOURCE),
            );
        }
        Ok(Self::from_checked_key(key.into()))
    }

    pub(crate) fn from_checked_key(api_key: Arc<str>) -> Self {
        RetellWebhookVerifier { api_key }
    }
}

impl WebhookVerifier for RetellWebhookVerifier {
    fn verify_and_parse(
        &self,
        req: WebhookRequest<'_>,
        now: DateTime<Utc>,
    ) -> callcat_core::Result<Vec<ProviderEvent>> {
        verify_and_parse(req.headers, req.body, &self.api_key, now).map_err(Error::from)
    }
}
