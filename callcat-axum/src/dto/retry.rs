//! A call's retry settings as JSON: `retryOn` (per-outcome switches) and
//! `retryDelays` (seconds before each retry), applied over the engine's default
//! [`RetryPolicy`].

use std::time::Duration;

use callcat_core::RetryPolicy;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which unsuccessful outcomes are retried; an absent switch keeps the default
/// policy's (no answer: yes, busy: yes, voicemail: no, dial error: yes).
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryOnFields {
    /// Retry when nobody answered.
    pub no_answer: Option<bool>,
    /// Retry when the line was busy.
    pub busy: Option<bool>,
    /// Retry when voicemail answered.
    pub voicemail: Option<bool>,
    /// Retry when the dial failed (retryable provider error or dial-error outcome).
    pub dial_error: Option<bool>,
}

impl RetryOnFields {
    /// Sets the given switches on `policy`.
    pub fn apply(self, policy: &mut RetryPolicy) {
        let set = |switch: &mut bool, v: Option<bool>| {
            if let Some(v) = v {
                *switch = v;
            }
        };
        set(&mut policy.retry_on_no_answer, self.no_answer);
        set(&mut policy.retry_on_busy, self.busy);
        set(&mut policy.retry_on_voicemail, self.voicemail);
        set(&mut policy.retry_on_dial_error, self.dial_error);
    }
}

/// The retry switches in effect.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryOnDto {
    /// Retried when nobody answered.
    pub no_answer: bool,
    /// Retried when the line was busy.
    pub busy: bool,
    /// Retried when voicemail answered.
    pub voicemail: bool,
    /// Retried when the dial failed.
    pub dial_error: bool,
}

impl From<&RetryPolicy> for RetryOnDto {
    fn from(p: &RetryPolicy) -> Self {
        RetryOnDto {
            no_answer: p.retry_on_no_answer,
            busy: p.retry_on_busy,
            voicemail: p.retry_on_voicemail,
            dial_error: p.retry_on_dial_error,
        }
    }
}

/// `retryDelays` (whole seconds) as the policy's delays; the core checks the
/// bounds (at most 20, each 1 s to 7 days) and names `retryDelays`.
pub fn delays_from_secs(secs: &[u64]) -> Vec<Duration> {
    secs.iter().map(|s| Duration::from_secs(*s)).collect()
}

/// The policy's delays in whole seconds (empty: exponential backoff).
pub fn delays_as_secs(p: &RetryPolicy) -> Vec<u64> {
    p.delays.iter().map(Duration::as_secs).collect()
}
