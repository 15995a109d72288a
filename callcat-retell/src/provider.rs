//! [`RetellProvider`]: places, fetches and ends calls through Retell's REST API.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use callcat_core::provider::CALL_ID_METADATA_KEY;
use callcat_core::{
    Call, Clock, DialAccepted, Error, PhoneNumber, ProviderCall, ProviderCapabilities, Result,
    SystemClock, TelephonyProvider,
};
use reqwest::header::{ACCEPT, HeaderValue};
use url::Url;

use crate::error::{RetellError, SOURCE, Target, from_reqwest, from_status};
use crate::mapping::to_provider_call;
use crate::webhook::RetellWebhookVerifier;
use crate::wire::{CreatePhoneCall, RetellCall};

/// Retell's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.retellai.com";
/// Default time allowed for a whole request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time allowed to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Dynamic variable carrying [`Call::callee_name`].
pub const VAR_CALLEE_NAME: &str = "callee_name";
/// Dynamic variable carrying [`Call::subject`].
pub const VAR_SUBJECT: &str = "subject";
/// Dynamic variable carrying [`Call::instructions`] (the prompt).
pub const VAR_PROMPT: &str = "prompt";
/// Dynamic variable carrying [`Call::language`], when set.
pub const VAR_LANGUAGE: &str = "language";

/// A [`TelephonyProvider`] for Retell AI. Build it with [`RetellProvider::builder`].
///
/// `Debug` never shows the API key.
#[derive(Clone)]
pub struct RetellProvider {
    http: reqwest::Client,
    api_key: Arc<str>,
    base_url: Url,
    from_number: Option<PhoneNumber>,
    agent_id: Option<String>,
    clock: Arc<dyn Clock>,
    request_timeout: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for RetellProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetellProvider")
            .field("api_key", &"<redacted>")
            .field("base_url", &self.base_url.as_str())
            .field("from_number", &self.from_number)
            .field("agent_id", &self.agent_id)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// Configures a [`RetellProvider`]; everything is checked in [`build`](Self::build).
#[derive(Clone)]
pub struct RetellProviderBuilder {
    api_key: Option<String>,
    base_url: String,
    from_number: Option<String>,
    agent_id: Option<String>,
    request_timeout: Duration,
    connect_timeout: Duration,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for RetellProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetellProviderBuilder")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .field("from_number", &self.from_number.as_ref().map(|_| "<set>"))
            .field("agent_id", &self.agent_id)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for RetellProviderBuilder {
    fn default() -> Self {
        RetellProviderBuilder {
            api_key: None,
            base_url: DEFAULT_BASE_URL.to_owned(),
            from_number: None,
            agent_id: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            clock: None,
        }
    }
}

impl RetellProviderBuilder {
    /// The Retell API key (required). It also verifies webhooks.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The API's base URL (default [`DEFAULT_BASE_URL`]); a path prefix is kept.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The number calls come from when the call has no `caller_number` (E.164,
    /// one of the Retell account's numbers).
    pub fn from_number(mut self, number: impl Into<String>) -> Self {
        self.from_number = Some(number.into());
        self
    }

    /// The agent to use when the call has no `agent_id`. Without either, Retell uses
    /// the outbound agent bound to the from number.
    pub fn agent_id(mut self, agent_id: impl Into<String>) -> Self {
        self.agent_id = Some(agent_id.into());
        self
    }

    /// Time allowed for a whole request (default 30 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Time allowed to open a connection (default 10 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The clock used to turn an HTTP-date `Retry-After` into a delay (default: system time).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks the configuration and builds the provider. Errors are `Validation`
    /// errors naming the offending setting.
    pub fn build(self) -> Result<RetellProvider> {
        let invalid = |field: &'static str, message: &str| {
            Error::validation(field, message.to_owned()).with_source_name(SOURCE)
        };
        let api_key = self
            .api_key
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid("api_key", "the Retell API key is required"))?;
        if HeaderValue::from_str(&format!("Bearer {api_key}")).is_err()
            || api_key.chars().any(char::is_whitespace)
        {
            return Err(invalid(
                "api_key",
                "the Retell API key contains characters that cannot be sent in a header",
            ));
        }
        let mut base_url = Url::parse(self.base_url.trim())
            .map_err(|e| invalid("base_url", &format!("not a valid URL: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err(invalid("base_url", "the base URL must be an http(s) URL"));
        }
        if base_url.query().is_some() || base_url.fragment().is_some() {
            return Err(invalid(
                "base_url",
                "the base URL must not have a query or fragment",
            ));
        }
        if let Ok(mut segs) = base_url.path_segments_mut() {
            segs.pop_if_empty();
        }
        let from_number = self
            .from_number
            .map(|n| {
                PhoneNumber::parse(&n)
                    .map_err(|e| invalid("from_number", &format!("invalid from number: {e}")))
            })
            .transpose()?;
        let agent_id = match self.agent_id.map(|a| a.trim().to_owned()) {
            Some(a) if a.is_empty() => {
                return Err(invalid("agent_id", "the agent id must not be empty"));
            }
            other => other,
        };
        if self.request_timeout.is_zero() {
            return Err(invalid(
                "request_timeout",
                "the request timeout must be positive",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid(
                "connect_timeout",
                "the connect timeout must be positive",
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(self.request_timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("callcat-retell/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::from(RetellError::Client(e)))?;
        Ok(RetellProvider {
            http,
            api_key: api_key.into(),
            base_url,
            from_number,
            agent_id,
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            request_timeout: self.request_timeout,
            connect_timeout: self.connect_timeout,
        })
    }
}

impl RetellProvider {
    /// A builder with the defaults: [`DEFAULT_BASE_URL`], 30 s request timeout,
    /// 10 s connect timeout, system clock.
    pub fn builder() -> RetellProviderBuilder {
        RetellProviderBuilder::default()
    }

    /// A webhook verifier keyed by this provider's API key (Retell signs webhooks
    /// with the API key).
    pub fn webhook_verifier(&self) -> RetellWebhookVerifier {
        RetellWebhookVerifier::from_checked_key(self.api_key.clone())
    }

    /// The request body [`TelephonyProvider::place_call`] sends for `call`.
    ///
    /// - `from_number`: the call's `caller_number`, else the configured from number.
    /// - `override_agent_id`: the call's `agent_id`, else the configured agent id;
    ///   left out when neither is set.
    /// - `metadata`: the call's metadata plus `callcat_call_id` (our id always wins).
    /// - `retell_llm_dynamic_variables`: [`VAR_CALLEE_NAME`], [`VAR_SUBJECT`],
    ///   [`VAR_PROMPT`], [`VAR_LANGUAGE`] (when set), then the call's own variables,
    ///   which override those defaults on a name clash.
    pub fn create_request(&self, call: &Call) -> Result<CreatePhoneCall> {
        let from = call
            .caller_number
            .as_ref()
            .or(self.from_number.as_ref())
            .ok_or_else(|| {
                Error::from(RetellError::Invalid {
                    field: "callerNumber",
                    message: "the call has no caller number and the provider has no from number"
                        .to_owned(),
                })
            })?;
        let mut metadata = call.metadata.clone();
        metadata.insert(
            CALL_ID_METADATA_KEY.to_owned(),
            serde_json::Value::String(call.id.to_string()),
        );
        let mut vars = BTreeMap::new();
        vars.insert(VAR_CALLEE_NAME.to_owned(), call.callee_name.clone());
        vars.insert(VAR_SUBJECT.to_owned(), call.subject.clone());
        vars.insert(VAR_PROMPT.to_owned(), call.instructions.clone());
        if let Some(lang) = &call.language {
            vars.insert(VAR_LANGUAGE.to_owned(), lang.clone());
        }
        vars.extend(call.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(CreatePhoneCall {
            from_number: from.as_str().to_owned(),
            to_number: call.phone_number.as_str().to_owned(),
            override_agent_id: call
                .agent_id
                .clone()
                .filter(|a| !a.trim().is_empty())
                .or_else(|| self.agent_id.clone()),
            metadata,
            retell_llm_dynamic_variables: vars,
        })
    }

    /// Retell's full call object (`GET /v2/get-call/{call_id}`).
    pub async fn get_call(&self, provider_call_id: &str) -> Result<RetellCall> {
        let url = self.call_url("get-call", provider_call_id)?;
        let req = self.http.get(url);
        let bytes = self.send(req, Target::Call(provider_call_id)).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RetellError::Decode(format!("call object: {e}")).into())
    }

    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.extend(segments);
        }
        url
    }

    fn call_url(&self, action: &str, provider_call_id: &str) -> Result<Url> {
        if provider_call_id.trim().is_empty() {
            return Err(RetellError::Invalid {
                field: "providerCallId",
                message: "the Retell call id is empty".to_owned(),
            }
            .into());
        }
        Ok(self.endpoint(&["v2", action, provider_call_id]))
    }

    /// Sends an authenticated request; returns the body of a 2xx answer.
    async fn send(&self, req: reqwest::RequestBuilder, target: Target<'_>) -> Result<bytes::Bytes> {
        let resp = req
            .bearer_auth(&*self.api_key)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .inspect_err(|_| {
                metrics::counter!("callcat_provider_requests_total", "provider" => SOURCE, "status" => "transport_error").increment(1);
            })
            .map_err(from_reqwest)?;
        let status = resp.status();
        metrics::counter!("callcat_provider_requests_total", "provider" => SOURCE, "status" => status.as_str().to_owned())
            .increment(1);
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(from_reqwest)?;
        if status.is_success() {
            Ok(body)
        } else {
            tracing::debug!(status = status.as_u16(), "retell request failed");
            Err(from_status(status, &headers, &body, target, self.clock.now()).into())
        }
    }
}

#[async_trait::async_trait]
impl TelephonyProvider for RetellProvider {
    fn name(&self) -> &str {
        SOURCE
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            lookup_by_call_id: false,
            pushes_transcripts: true,
        }
    }

    async fn place_call(&self, call: &Call) -> Result<DialAccepted> {
        let body = self.create_request(call)?;
        let url = self.endpoint(&["v2", "create-phone-call"]);
        let bytes = self
            .send(self.http.post(url).json(&body), Target::Create)
            .await?;
        #[derive(serde::Deserialize)]
        struct Created {
            call_id: String,
        }
        let created: Created = serde_json::from_slice(&bytes)
            .map_err(|e| RetellError::Decode(format!("create-phone-call answer: {e}")))?;
        if created.call_id.trim().is_empty() {
            return Err(RetellError::Decode(
                "create-phone-call answer has an empty call_id".into(),
            )
            .into());
        }
        tracing::debug!(call_id = %call.id, provider_call_id = %created.call_id, "retell call created");
        Ok(DialAccepted {
            provider_call_id: created.call_id,
        })
    }

    async fn fetch_call(&self, provider_call_id: &str) -> Result<ProviderCall> {
        Ok(to_provider_call(&self.get_call(provider_call_id).await?))
    }

    async fn end_call(&self, provider_call_id: &str) -> Result<()> {
        let url = self.call_url("stop-call", provider_call_id)?;
        self.send(self.http.post(url), Target::Call(provider_call_id))
            .await?;
        Ok(())
    }
}
