//! [`TwilioProvider`]: places, fetches and ends calls through Twilio's REST API
//! (`/2010-04-01/Accounts/{AccountSid}/Calls`).

use std::fmt;
use std::time::Duration;

use callcat_core::{
    Call, DialAccepted, Error, ErrorKind, ProviderCall, ProviderCapabilities, Result,
    TelephonyProvider,
};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::SOURCE;
use crate::config::{CallbackUrls, TwilioConfig, TwilioProviderBuilder};
use crate::wire::{CallResource, ErrorBody, TwilioCallStatus};

/// Twilio error codes that mean the number cannot be called (invalid `To`,
/// unreachable, unverified caller id ...): permanent rejections.
const INVALID_NUMBER_CODES: [i64; 6] = [21211, 21214, 21215, 21216, 21217, 21210];
/// Twilio's "too many requests" error code.
const RATE_LIMIT_CODE: i64 = 20429;

/// The Twilio [`TelephonyProvider`]. Build it with [`TwilioProvider::builder`].
#[derive(Clone)]
pub struct TwilioProvider {
    config: TwilioConfig,
    http: reqwest::Client,
}

impl fmt::Debug for TwilioProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TwilioProvider {
    /// Starts a builder.
    pub fn builder() -> TwilioProviderBuilder {
        TwilioProviderBuilder::default()
    }

    pub(crate) fn from_config(config: TwilioConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| {
                Error::internal(format!("cannot build the HTTP client: {e}"))
                    .with_source_name(SOURCE)
            })?;
        Ok(TwilioProvider { config, http })
    }

    /// The public callback URLs this provider puts on calls.
    pub fn callback_urls(&self) -> &CallbackUrls {
        &self.config.urls
    }

    /// The auth token, for building a [`crate::TwilioWebhookVerifier`] from the
    /// same configuration.
    pub fn webhook_verifier(&self) -> crate::TwilioWebhookVerifier {
        crate::TwilioWebhookVerifier::new(
            self.config.auth_token.clone(),
            self.config.urls.public_base_url(),
        )
    }

    /// The form fields of the create-call request for `call`, in the order they
    /// are sent (`StatusCallbackEvent` repeated once per event).
    pub fn create_call_form(&self, call: &Call) -> Result<Vec<(&'static str, String)>> {
        let c = &self.config;
        let from = call
            .caller_number
            .as_ref()
            .or(c.from_number.as_ref())
            .ok_or_else(|| {
                Error::validation(
                    "callerNumber",
                    "the call has no caller number and the provider no from number",
                )
                .with_source_name(SOURCE)
            })?;
        let status_url = c.urls.status(call.id);
        let mut form: Vec<(&'static str, String)> = vec![
            ("To", call.phone_number.as_str().to_string()),
            ("From", from.as_str().to_string()),
            ("Url", c.urls.twiml(call.id, 0)),
            ("Method", "POST".into()),
            ("StatusCallback", status_url.clone()),
            ("StatusCallbackMethod", "POST".into()),
        ];
        for ev in &c.status_callback_events {
            form.push(("StatusCallbackEvent", ev.clone()));
        }
        form.push(("Timeout", c.ring_timeout.as_secs().to_string()));
        if c.machine_detection {
            form.push(("MachineDetection", "Enable".into()));
            form.push(("AsyncAmd", "true".into()));
            form.push(("AsyncAmdStatusCallback", status_url.clone()));
            form.push(("AsyncAmdStatusCallbackMethod", "POST".into()));
        }
        if c.record {
            form.push(("Record", "true".into()));
            form.push(("RecordingStatusCallback", status_url));
            form.push(("RecordingStatusCallbackMethod", "POST".into()));
        }
        Ok(form)
    }

    fn calls_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls.json",
            self.config.base_url, self.config.account_sid
        )
    }

    fn call_url(&self, sid: &str) -> Result<String> {
        // A SID goes into the path: refuse anything that could change it.
        if sid.is_empty() || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::validation("providerCallId", "not a Twilio call SID")
                .with_source_name(SOURCE));
        }
        Ok(format!(
            "{}/2010-04-01/Accounts/{}/Calls/{sid}.json",
            self.config.base_url, self.config.account_sid
        ))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<CallResource> {
        let resp = req
            .basic_auth(&self.config.account_sid, Some(&self.config.auth_token))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .inspect_err(|_| {
                metrics::counter!("callcat_provider_requests_total", "provider" => SOURCE, "status" => "transport_error").increment(1);
            })
            .map_err(transport_error)?;
        let status = resp.status();
        metrics::counter!("callcat_provider_requests_total", "provider" => SOURCE, "status" => status.as_str().to_owned())
            .increment(1);
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            return serde_json::from_slice::<CallResource>(&body).map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("unexpected response body from Twilio: {e}"),
                )
                .with_retryable(false)
                .with_source_name(SOURCE)
            });
        }
        Err(map_error(status, &headers, &body))
    }

    /// Cancels a call that has not been answered yet (`Status=canceled`; Twilio
    /// ignores it for a call in progress) and returns the status Twilio reports.
    pub async fn cancel_call(&self, provider_call_id: &str) -> Result<TwilioCallStatus> {
        Ok(self
            .update_status(provider_call_id, "canceled")
            .await?
            .status())
    }

    /// Hangs up a call in progress (`Status=completed`) and returns the status
    /// Twilio reports.
    pub async fn hangup_call(&self, provider_call_id: &str) -> Result<TwilioCallStatus> {
        Ok(self
            .update_status(provider_call_id, "completed")
            .await?
            .status())
    }

    async fn update_status(&self, sid: &str, status: &str) -> Result<CallResource> {
        let url = self.call_url(sid)?;
        self.send(self.http.post(url).form(&[("Status", status)]))
            .await
    }
}

#[async_trait::async_trait]
impl TelephonyProvider for TwilioProvider {
    fn name(&self) -> &str {
        SOURCE
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            // Twilio cannot list calls by a value of ours.
            lookup_by_call_id: false,
            pushes_transcripts: true,
        }
    }

    async fn place_call(&self, call: &Call) -> Result<DialAccepted> {
        let form = self.create_call_form(call)?;
        let created = self
            .send(self.http.post(self.calls_url()).form(&form))
            .await?;
        tracing::debug!(call_id = %call.id, sid = %created.sid, "twilio call created");
        Ok(DialAccepted {
            provider_call_id: created.sid,
        })
    }

    async fn fetch_call(&self, provider_call_id: &str) -> Result<ProviderCall> {
        let url = self.call_url(provider_call_id)?;
        Ok(self.send(self.http.get(url)).await?.into_provider_call())
    }

    /// Cancels a call that has not been answered (`Status=canceled`) and hangs up
    /// one in progress (`Status=completed`); a call that is already over is left
    /// alone. The call is fetched first; if it is answered between the fetch and
    /// the cancel (Twilio then ignores the cancel), it is completed.
    async fn end_call(&self, provider_call_id: &str) -> Result<()> {
        let url = self.call_url(provider_call_id)?;
        let current = self.send(self.http.get(url)).await?.status();
        if current.is_final() {
            return Ok(());
        }
        if current.is_pre_answer() {
            let after = self.cancel_call(provider_call_id).await?;
            if after.is_final() || after.is_pre_answer() {
                return Ok(());
            }
        }
        self.hangup_call(provider_call_id).await?;
        Ok(())
    }
}

fn transport_error(e: reqwest::Error) -> Error {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let connect = e.is_connect();
    let err = Error::unavailable(format!("Twilio {what}: {e}"))
        .with_source_name(SOURCE)
        .with_source(e);
    // Anything but a failed connect may have reached Twilio: a dial failing so is
    // reconciled or failed by the scheduler, never sent again blindly.
    if connect {
        err
    } else {
        err.with_maybe_delivered()
    }
}

/// Maps a non-success response to callcat's error kinds.
pub(crate) fn map_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed.code;
    let mut message = parsed.message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {}", truncate(text, 500))
        }
    });
    if let Some(code) = code {
        message = format!("{message} (Twilio error {code})");
    }
    if let Some(info) = parsed.more_info {
        message = format!("{message}; see {info}");
    }
    let retry_after = retry_after(headers);
    let kind = if status == StatusCode::TOO_MANY_REQUESTS || code == Some(RATE_LIMIT_CODE) {
        ErrorKind::RateLimited
    } else if status.is_server_error() {
        ErrorKind::Unavailable
    } else if status == StatusCode::UNAUTHORIZED {
        ErrorKind::Unauthorized
    } else if status == StatusCode::NOT_FOUND {
        ErrorKind::NotFound
    } else {
        ErrorKind::Rejected
    };
    let mut err = Error::new(kind, message).with_source_name(SOURCE);
    if let Some(after) = retry_after
        && kind.is_retryable()
    {
        err = err.with_retry_after(after);
    }
    if let Some(code) = code
        && INVALID_NUMBER_CODES.contains(&code)
    {
        err = err.with_field("phoneNumber");
    }
    err
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
