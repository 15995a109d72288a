//! Configuration: the [`TwilioProviderBuilder`] and the public callback URLs
//! ([`CallbackUrls`]) that the server mounts.

use std::fmt;
use std::time::Duration;

use callcat_core::{CallId, Error, PhoneNumber, Result};

use crate::SOURCE;

/// Twilio's REST API host, the default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";
/// Default path (under the public base URL) that serves a call's TwiML; `{call_id}`
/// is replaced by our call id.
pub const DEFAULT_TWIML_PATH: &str = "/webhooks/twilio/twiml/{call_id}";
/// Default path of the gather (speech answer) callback; `{call_id}` is replaced.
pub const DEFAULT_GATHER_PATH: &str = "/webhooks/twilio/gather/{call_id}";
/// Default path of status callbacks (call progress, async AMD, recordings).
pub const DEFAULT_STATUS_PATH: &str = "/webhooks/twilio/status";
/// Default path of real-time transcription callbacks.
pub const DEFAULT_TRANSCRIPTION_PATH: &str = "/webhooks/twilio/transcription";
/// The query parameter that carries our call id on callback URLs.
pub const CALL_ID_PARAM: &str = callcat_core::provider::CALL_ID_METADATA_KEY;
/// The query parameter that carries the flow step on TwiML and gather URLs.
pub const STEP_PARAM: &str = "step";

/// The placeholder for our call id in path templates.
const CALL_ID_PLACEHOLDER: &str = "{call_id}";

/// The paths (under the public base URL) Twilio calls back on. The server mounts
/// each one; see the crate README.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackPaths {
    /// Serves the TwiML of a call's flow (must contain `{call_id}`); `?step=k`
    /// selects the step (0 when absent).
    pub twiml: String,
    /// Receives `<Gather input="speech">` results (must contain `{call_id}`);
    /// `?step=k` says which prompt was answered.
    pub gather: String,
    /// Receives status callbacks, async AMD results and recording callbacks,
    /// with `?callcat_call_id=...`.
    pub status: String,
    /// Receives real-time transcription callbacks, with `?callcat_call_id=...`.
    pub transcription: String,
}

impl Default for CallbackPaths {
    fn default() -> Self {
        CallbackPaths {
            twiml: DEFAULT_TWIML_PATH.into(),
            gather: DEFAULT_GATHER_PATH.into(),
            status: DEFAULT_STATUS_PATH.into(),
            transcription: DEFAULT_TRANSCRIPTION_PATH.into(),
        }
    }
}

impl CallbackPaths {
    fn validate(&self) -> Result<()> {
        for (field, path, needs_id) in [
            ("twiml_path", &self.twiml, true),
            ("gather_path", &self.gather, true),
            ("status_path", &self.status, false),
            ("transcription_path", &self.transcription, false),
        ] {
            if !path.starts_with('/') || path.contains(['?', '#']) {
                return Err(invalid(
                    field,
                    "must be an absolute path without query or fragment",
                ));
            }
            if needs_id && !path.contains(CALL_ID_PLACEHOLDER) {
                return Err(invalid(field, "must contain {call_id}"));
            }
        }
        Ok(())
    }
}

/// Builds the absolute callback URLs for calls: the public base URL plus
/// [`CallbackPaths`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrls {
    public_base_url: String,
    paths: CallbackPaths,
}

impl CallbackUrls {
    /// Validates and combines a public base URL (`https://host[:port][/prefix]`)
    /// and paths.
    pub fn new(public_base_url: &str, paths: CallbackPaths) -> Result<Self> {
        let parsed = url::Url::parse(public_base_url)
            .map_err(|e| invalid("public_base_url", format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(invalid(
                "public_base_url",
                "must be an http(s) URL with a host",
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid(
                "public_base_url",
                "must not have a query or fragment",
            ));
        }
        paths.validate()?;
        Ok(CallbackUrls {
            public_base_url: public_base_url.trim_end_matches('/').to_string(),
            paths,
        })
    }

    /// The public base URL, without a trailing slash.
    pub fn public_base_url(&self) -> &str {
        &self.public_base_url
    }

    /// The configured paths.
    pub fn paths(&self) -> &CallbackPaths {
        &self.paths
    }

    /// The URL of step `step` of the call's TwiML flow.
    pub fn twiml(&self, call_id: CallId, step: usize) -> String {
        let path = self
            .paths
            .twiml
            .replace(CALL_ID_PLACEHOLDER, &call_id.to_string());
        if step == 0 {
            format!("{}{path}", self.public_base_url)
        } else {
            format!("{}{path}?{STEP_PARAM}={step}", self.public_base_url)
        }
    }

    /// The gather action URL for step `step`.
    pub fn gather(&self, call_id: CallId, step: usize) -> String {
        let path = self
            .paths
            .gather
            .replace(CALL_ID_PLACEHOLDER, &call_id.to_string());
        format!("{}{path}?{STEP_PARAM}={step}", self.public_base_url)
    }

    /// The status callback URL (also used for async AMD and recording callbacks).
    pub fn status(&self, call_id: CallId) -> String {
        format!(
            "{}{}?{CALL_ID_PARAM}={call_id}",
            self.public_base_url, self.paths.status
        )
    }

    /// The real-time transcription callback URL.
    pub fn transcription(&self, call_id: CallId) -> String {
        format!(
            "{}{}?{CALL_ID_PARAM}={call_id}",
            self.public_base_url, self.paths.transcription
        )
    }
}

/// Everything a [`crate::TwilioProvider`] needs, validated.
#[derive(Clone)]
pub(crate) struct TwilioConfig {
    pub(crate) account_sid: String,
    pub(crate) auth_token: String,
    pub(crate) from_number: Option<PhoneNumber>,
    pub(crate) base_url: String,
    pub(crate) urls: CallbackUrls,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) ring_timeout: Duration,
    pub(crate) machine_detection: bool,
    pub(crate) record: bool,
    pub(crate) status_callback_events: Vec<String>,
}

/// Builds a [`crate::TwilioProvider`]; [`TwilioProviderBuilder::build`] validates.
#[derive(Clone, Default)]
pub struct TwilioProviderBuilder {
    account_sid: Option<String>,
    auth_token: Option<String>,
    from_number: Option<PhoneNumber>,
    base_url: Option<String>,
    public_base_url: Option<String>,
    paths: CallbackPaths,
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    ring_timeout: Option<Duration>,
    machine_detection: Option<bool>,
    record: bool,
    status_callback_events: Option<Vec<String>>,
}

/// The call progress events requested by default.
pub const DEFAULT_STATUS_CALLBACK_EVENTS: [&str; 4] =
    ["initiated", "ringing", "answered", "completed"];

impl TwilioProviderBuilder {
    /// The account SID (`AC` + 32 hex digits). Required.
    pub fn account_sid(mut self, sid: impl Into<String>) -> Self {
        self.account_sid = Some(sid.into());
        self
    }

    /// The auth token: the Basic-auth password and the webhook signing key. Required.
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// The caller id used when a call has no `caller_number`.
    pub fn from_number(mut self, number: PhoneNumber) -> Self {
        self.from_number = Some(number);
        self
    }

    /// The REST API base URL (default [`DEFAULT_BASE_URL`]); tests point it at a mock.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The public URL under which the server mounts the callback paths, e.g.
    /// `https://calls.example.com`. Required: Twilio fetches TwiML from it.
    pub fn public_base_url(mut self, url: impl Into<String>) -> Self {
        self.public_base_url = Some(url.into());
        self
    }

    /// Overrides the callback paths (default [`CallbackPaths::default`]).
    pub fn callback_paths(mut self, paths: CallbackPaths) -> Self {
        self.paths = paths;
        self
    }

    /// TCP connect timeout for REST requests (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Whole-request timeout for REST requests (default 15 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How long Twilio lets the phone ring (`Timeout`, 5..=600 s, default 30 s).
    pub fn ring_timeout(mut self, timeout: Duration) -> Self {
        self.ring_timeout = Some(timeout);
        self
    }

    /// Answering-machine detection (`MachineDetection=Enable` with async AMD
    /// reported to the status path). Default on.
    pub fn machine_detection(mut self, on: bool) -> Self {
        self.machine_detection = Some(on);
        self
    }

    /// Records calls (`Record=true`, recording callbacks to the status path).
    /// Default off.
    pub fn record(mut self, on: bool) -> Self {
        self.record = on;
        self
    }

    /// The call progress events to request (default
    /// [`DEFAULT_STATUS_CALLBACK_EVENTS`]); an empty list omits
    /// `StatusCallbackEvent`, and Twilio then reports only `completed`.
    pub fn status_callback_events<I, S>(mut self, events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.status_callback_events = Some(events.into_iter().map(Into::into).collect());
        self
    }

    /// Validates the configuration and builds the provider.
    pub fn build(self) -> Result<crate::TwilioProvider> {
        let account_sid = self
            .account_sid
            .ok_or_else(|| invalid("account_sid", "required"))?;
        if account_sid.len() != 34
            || !account_sid.starts_with("AC")
            || !account_sid.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(invalid(
                "account_sid",
                "must be AC followed by 32 characters",
            ));
        }
        let auth_token = self
            .auth_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("auth_token", "required"))?;
        let base_url = self.base_url.unwrap_or_else(|| DEFAULT_BASE_URL.into());
        match url::Url::parse(&base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => return Err(invalid("base_url", "must be an http(s) URL")),
        }
        let public = self
            .public_base_url
            .ok_or_else(|| invalid("public_base_url", "required (Twilio fetches TwiML from it)"))?;
        let urls = CallbackUrls::new(&public, self.paths)?;
        let connect_timeout = self.connect_timeout.unwrap_or(Duration::from_secs(5));
        let request_timeout = self.request_timeout.unwrap_or(Duration::from_secs(15));
        if connect_timeout.is_zero() || request_timeout.is_zero() {
            return Err(invalid("timeout", "timeouts must be positive"));
        }
        let ring_timeout = self.ring_timeout.unwrap_or(Duration::from_secs(30));
        if !(5..=600).contains(&ring_timeout.as_secs()) {
            return Err(invalid("ring_timeout", "must be 5..=600 seconds"));
        }
        let status_callback_events = self.status_callback_events.unwrap_or_else(|| {
            DEFAULT_STATUS_CALLBACK_EVENTS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        if let Some(bad) = status_callback_events
            .iter()
            .find(|e| !DEFAULT_STATUS_CALLBACK_EVENTS.contains(&e.as_str()))
        {
            return Err(invalid(
                "status_callback_events",
                format!("unknown event {bad:?} (initiated, ringing, answered, completed)"),
            ));
        }
        let config = TwilioConfig {
            account_sid,
            auth_token,
            from_number: self.from_number,
            base_url: base_url.trim_end_matches('/').to_string(),
            urls,
            connect_timeout,
            request_timeout,
            ring_timeout,
            machine_detection: self.machine_detection.unwrap_or(true),
            record: self.record,
            status_callback_events,
        };
        crate::TwilioProvider::from_config(config)
    }
}

impl fmt::Debug for TwilioProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioProviderBuilder")
            .field("account_sid", &self.account_sid)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("base_url", &self.base_url)
            .field("public_base_url", &self.public_base_url)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field(
                "from_number",
                &self.from_number.as_ref().map(|n| n.masked()),
            )
            .field("base_url", &self.base_url)
            .field("urls", &self.urls)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("ring_timeout", &self.ring_timeout)
            .field("machine_detection", &self.machine_detection)
            .field("record", &self.record)
            .field("status_callback_events", &self.status_callback_events)
            .finish()
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::validation(field, message.into()).with_source_name(SOURCE)
}
