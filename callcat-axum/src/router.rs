//! [`ApiRouter`]: assembles the HTTP API (REST, provider webhooks, SSE,
//! OpenAPI) into an [`axum::Router`] over an [`Api`], an [`Authenticator`] and
//! the webhook verifiers registered by provider name. Every route is added
//! together with its OpenAPI operation, so the document served at
//! `/api/openapi.json` lists exactly what is routed.
//!
//! Nothing assumes the router sits at `/`: it can be mounted with
//! [`Router::nest`]; webhook signatures are checked against the public base URL
//! plus the request's original path (which includes the mount prefix), and the
//! OpenAPI document names the mount prefix as its server.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::OriginalUri;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use callcat_core::{Error, WebhookVerifier};
use tokio::sync::{Semaphore, watch};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::SecurityScheme;
use utoipa_axum::router::OpenApiRouter;

use crate::api::Api;
use crate::auth::Authenticator;
use crate::error::{ApiError, json_errors, route_not_found};
use crate::webhooks::{SourceLimiter, WebhookObserver, WebhookRoute};
use crate::{openapi, routes, webhooks};

/// Largest API request body (64 KiB) unless changed with [`ApiRouter::body_limit`].
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Largest webhook body (256 KiB) unless changed for every provider with
/// [`ApiRouter::webhook_body_limit`] or for one with
/// [`ApiRouter::provider_body_limit`]. Bodies are read before their signature
/// can be checked, so this is kept small.
pub const WEBHOOK_BODY_LIMIT: usize = 256 * 1024;
/// Largest body limit a setting may ask for (16 MiB).
pub const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// How long a request may take to be answered (its response headers) unless
/// changed with [`ApiRouter::request_timeout`]: 30 s. Event streams are not
/// cut by it (their headers are sent at once).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests handled at once unless changed with
/// [`ApiRouter::max_concurrent_requests`]: 256.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 256;
/// Webhook requests handled at once unless changed with
/// [`ApiRouter::max_concurrent_webhooks`]: 64.
pub const DEFAULT_MAX_CONCURRENT_WEBHOOKS: usize = 64;
/// Sources whose webhook failure budget is remembered at once.
const MAX_WEBHOOK_SOURCES: usize = 10_000;

/// The state of every route of the API: the [`Api`] (reachable through
/// `Deref`), the authenticator, the webhook rate limiter and settings. Cheap to
/// clone. Routes added with [`ApiRouter::merge`] receive it as
/// `State<ApiState>`.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    api: Api,
    auth: Arc<dyn Authenticator>,
    observer: Option<Arc<dyn WebhookObserver>>,
    failures: SourceLimiter,
    webhook_slots: Arc<Semaphore>,
    webhook_paths: BTreeSet<String>,
    client_ip_header: Option<HeaderName>,
    public_base_url: Option<String>,
    stopping: Option<watch::Receiver<bool>>,
    openapi: OnceLock<OpenApi>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("api", &self.inner.api)
            .field("public_base_url", &self.inner.public_base_url)
            .field("failures", &self.inner.failures)
            .finish_non_exhaustive()
    }
}

impl Deref for ApiState {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.inner.api
    }
}

impl ApiState {
    /// The callcat services.
    pub fn api(&self) -> &Api {
        &self.inner.api
    }

    /// The authenticator requests are checked with.
    pub fn authenticator(&self) -> &Arc<dyn Authenticator> {
        &self.inner.auth
    }

    /// The per-source budget of webhook requests that fail verification.
    pub fn webhook_failures(&self) -> &SourceLimiter {
        &self.inner.failures
    }

    /// The slots of webhook requests running at once.
    pub(crate) fn webhook_slots(&self) -> &Arc<Semaphore> {
        &self.inner.webhook_slots
    }

    /// The trusted proxy header that names the client, if configured.
    pub fn client_ip_header(&self) -> Option<&HeaderName> {
        self.inner.client_ip_header.as_ref()
    }

    /// Whether `path` (relative to the router) is a webhook route: a
    /// registered webhook path or anything under `/webhooks/`.
    pub(crate) fn is_webhook_path(&self, path: &str) -> bool {
        path.starts_with("/webhooks/") || self.inner.webhook_paths.contains(path)
    }

    /// Reports one webhook request's result to the observer, if any.
    pub fn observe_webhook(&self, provider: &str, result: &str) {
        if let Some(o) = &self.inner.observer {
            o.webhook(provider, result);
        }
    }

    /// Resolves when the host application shuts down (ends event streams);
    /// never, when no shutdown signal was given.
    pub async fn stopping(&self) {
        match self.inner.stopping.clone() {
            Some(mut rx) => {
                if rx.wait_for(|s| *s).await.is_err() {
                    // The sender is gone: nobody can ask to stop any more.
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    /// Whether the host application is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// The public URL a request was sent to, as a provider signed it: the
    /// configured public base URL (or `http://` + the `Host` header when none
    /// was configured) followed by the original path and query, which include
    /// the prefix the router is mounted under.
    pub fn public_url(&self, uri: &OriginalUri, headers: &HeaderMap) -> String {
        let target = uri
            .0
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| uri.0.path().to_owned());
        match &self.inner.public_base_url {
            Some(base) => format!("{base}{target}"),
            None => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("localhost");
                format!("http://{host}{target}")
            }
        }
    }

    pub(crate) fn openapi(&self) -> Option<&OpenApi> {
        self.inner.openapi.get()
    }
}

/// Builds the API's [`Router`]. [`crate::router()`] is the short form with every
/// default and no webhooks.
pub struct ApiRouter {
    api: Api,
    auth: Arc<dyn Authenticator>,
    webhooks: Vec<WebhookRoute>,
    extensions: Vec<OpenApiRouter<ApiState>>,
    body_limit: usize,
    webhook_body_limit: usize,
    provider_body_limits: BTreeMap<String, usize>,
    webhook_rate: (u32, u32),
    max_concurrent_webhooks: usize,
    client_ip_header: Option<String>,
    request_timeout: Duration,
    max_concurrent_requests: usize,
    request_queue: usize,
    public_base_url: Option<String>,
    observer: Option<Arc<dyn WebhookObserver>>,
    stopping: Option<watch::Receiver<bool>>,
    security: Option<SecurityScheme>,
}

impl std::fmt::Debug for ApiRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRouter")
            .field("webhooks", &self.webhooks)
            .field("extensions", &self.extensions.len())
            .field("body_limit", &self.body_limit)
            .field("webhook_body_limit", &self.webhook_body_limit)
            .field("provider_body_limits", &self.provider_body_limits)
            .field("webhook_rate", &self.webhook_rate)
            .field("max_concurrent_webhooks", &self.max_concurrent_webhooks)
            .field("client_ip_header", &self.client_ip_header)
            .field("request_timeout", &self.request_timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("request_queue", &self.request_queue)
            .field("public_base_url", &self.public_base_url)
            .finish_non_exhaustive()
    }
}

impl ApiRouter {
    /// The API over `api`, authenticating every `/api` request with `auth`.
    pub fn new(api: Api, auth: Arc<dyn Authenticator>) -> Self {
        ApiRouter {
            api,
            auth,
            webhooks: Vec::new(),
            extensions: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            webhook_body_limit: WEBHOOK_BODY_LIMIT,
            provider_body_limits: BTreeMap::new(),
            webhook_rate: (1, 20),
            max_concurrent_webhooks: DEFAULT_MAX_CONCURRENT_WEBHOOKS,
            client_ip_header: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            request_queue: DEFAULT_MAX_CONCURRENT_REQUESTS,
            public_base_url: None,
            observer: None,
            stopping: None,
            security: None,
        }
    }

    /// Serves `provider`'s webhooks at `POST /webhooks/{provider}`: the body
    /// read up to the provider's limit, verified by `verifier` before anything
    /// is parsed (401 when the signature fails, nothing stored; 429 once the
    /// source has spent its failure budget), every event handed to the
    /// ingestor, answered with `{"results": [...]}`.
    pub fn webhook(self, provider: &str, verifier: Arc<dyn WebhookVerifier>) -> Self {
        let path = format!("/webhooks/{provider}");
        self.webhook_at(&path, provider, verifier)
    }

    /// Like [`ApiRouter::webhook`], at `path` (e.g. Twilio's
    /// `/webhooks/twilio/status`).
    pub fn webhook_at(
        mut self,
        path: &str,
        provider: &str,
        verifier: Arc<dyn WebhookVerifier>,
    ) -> Self {
        self.webhooks
            .push(WebhookRoute::new(path, provider, Some(verifier)));
        self
    }

    /// Routes and documents a webhook path of a provider that is not
    /// configured: it answers 404 saying so (instead of an unknown route), so
    /// that the API's shape does not depend on the configuration.
    pub fn unconfigured_webhook(mut self, path: &str, provider: &str) -> Self {
        self.webhooks.push(WebhookRoute::new(path, provider, None));
        self
    }

    /// Adds routes (with their OpenAPI operations, e.g. from
    /// `utoipa_axum::routes!`) that run with the API's [`ApiState`] and its
    /// error handling. They get no body limit of their own: add a
    /// `RequestBodyLimitLayer` to them. A path that overlaps an API route makes
    /// [`ApiRouter::build`] panic, as [`Router::merge`] does.
    pub fn merge(mut self, routes: OpenApiRouter<ApiState>) -> Self {
        self.extensions.push(routes);
        self
    }

    /// Largest accepted API request body in bytes (default 64 KiB, at least 1024).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Largest accepted webhook body in bytes, for every provider without its
    /// own limit (default 256 KiB, 1024 to 16 MiB).
    pub fn webhook_body_limit(mut self, bytes: usize) -> Self {
        self.webhook_body_limit = bytes;
        self
    }

    /// Largest accepted webhook body of `provider`'s routes registered with
    /// [`ApiRouter::webhook`] / [`ApiRouter::webhook_at`] (1024 to 16 MiB).
    pub fn provider_body_limit(mut self, provider: &str, bytes: usize) -> Self {
        self.provider_body_limits.insert(provider.to_owned(), bytes);
        self
    }

    /// The failure budget of each source: webhook requests that fail
    /// verification, per second, and the burst (default 1/s, 20). Requests
    /// that pass verification are never limited by it.
    pub fn webhook_rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.webhook_rate = (per_second, burst);
        self
    }

    /// Webhook requests handled at once, over all providers (default 64);
    /// beyond, 503 with `Retry-After` before the body is read.
    pub fn max_concurrent_webhooks(mut self, n: usize) -> Self {
        self.max_concurrent_webhooks = n;
        self
    }

    /// The header a trusted reverse proxy puts the client's address in (e.g.
    /// `x-forwarded-for`; its last entry is used). Only set it behind such a
    /// proxy: clients can send the header themselves. Without it, the
    /// connection's peer address is the source (served with
    /// `into_make_service_with_connect_info::<SocketAddr>()`).
    pub fn client_ip_header(mut self, name: &str) -> Self {
        self.client_ip_header = Some(name.to_owned());
        self
    }

    /// How long a request may take until its response starts (default 30 s;
    /// 1 s to 1 h); then 408. An event stream's response starts at once, so
    /// streams are not cut by it.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Requests handled at once (default 256), and how many more may wait for
    /// a slot (default: as many); beyond both, 503 with `Retry-After`. A slot is
    /// held until the response starts (an open event stream does not hold one).
    pub fn max_concurrent_requests(mut self, n: usize, queue: usize) -> Self {
        self.max_concurrent_requests = n;
        self.request_queue = queue;
        self
    }

    /// The externally visible URL of the application's root
    /// (`https://host[:port][/proxy-prefix]`): the URL providers sign is this
    /// plus the request's original path. Without it, `http://` + the `Host`
    /// header is used.
    pub fn public_base_url(mut self, url: &str) -> Self {
        self.public_base_url = Some(url.trim_end_matches('/').to_owned());
        self
    }

    /// Told every webhook request's result (for metrics).
    pub fn webhook_observer(mut self, observer: Arc<dyn WebhookObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Event streams end when this becomes `true` (graceful shutdown).
    pub fn shutdown_signal(mut self, stopping: watch::Receiver<bool>) -> Self {
        self.stopping = Some(stopping);
        self
    }

    /// How the OpenAPI document describes authentication (default: HTTP
    /// bearer, JWT). Operations refer to it as `bearer`.
    pub fn security_scheme(mut self, scheme: SecurityScheme) -> Self {
        self.security = Some(scheme);
        self
    }

    /// The router, after checking the settings.
    pub fn build(self) -> Result<Router, Error> {
        self.build_with_openapi().map(|(r, _)| r)
    }

    /// The router and its OpenAPI document (the one `/api/openapi.json`
    /// serves, without the `servers` entry added per request).
    pub fn build_with_openapi(self) -> Result<(Router, OpenApi), Error> {
        self.validate()?;
        Ok(self.assemble())
    }

    fn validate(&self) -> Result<(), Error> {
        if self.body_limit < 1024 {
            return Err(Error::validation(
                "bodyLimit",
                "the body limit must be at least 1024 bytes",
            ));
        }
        if self.body_limit > MAX_BODY_LIMIT {
            return Err(Error::validation(
                "bodyLimit",
                "the body limit must be at most 16 MiB",
            ));
        }
        let webhook_limits = std::iter::once(self.webhook_body_limit)
            .chain(self.provider_body_limits.values().copied());
        for limit in webhook_limits {
            if !(1024..=MAX_BODY_LIMIT).contains(&limit) {
                return Err(Error::validation(
                    "webhookBodyLimit",
                    "a webhook body limit must be 1024 bytes to 16 MiB",
                ));
            }
        }
        if self.webhook_rate.0 == 0 || self.webhook_rate.1 == 0 {
            return Err(Error::validation(
                "webhookRateLimit",
                "the webhook rate and burst must be at least 1",
            ));
        }
        if !(1..=Semaphore::MAX_PERMITS / 2).contains(&self.max_concurrent_webhooks) {
            return Err(Error::validation(
                "maxConcurrentWebhooks",
                "at least 1 webhook request must be allowed at once",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_concurrent_requests)
            || self.request_queue > 1_000_000
        {
            return Err(Error::validation(
                "maxConcurrentRequests",
                "1 to 1000000 requests at once, and at most 1000000 waiting",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.request_timeout) {
            return Err(Error::validation(
                "requestTimeout",
                "the request timeout must be 1 s to 1 h",
            ));
        }
        if let Some(h) = &self.client_ip_header
            && HeaderName::try_from(h.as_str()).is_err()
        {
            return Err(Error::validation(
                "clientIpHeader",
                format!("{h:?} is not a header name"),
            ));
        }
        if let Some(base) = &self.public_base_url {
            let ok = url::Url::parse(base).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
            });
            if !ok {
                return Err(Error::validation(
                    "publicBaseUrl",
                    "must be an http(s) URL with a host and no query",
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for w in &self.webhooks {
            let valid_segments = w
                .path
                .split('/')
                .skip(1)
                .all(|s| !s.is_empty() && !s.contains(['{', '}', '*', '?', '#']));
            if !w.path.starts_with('/') || !valid_segments {
                return Err(Error::validation(
                    "webhookPath",
                    format!("{:?} is not a literal path like /webhooks/name", w.path),
                ));
            }
            if w.provider.is_empty() {
                return Err(Error::validation(
                    "webhookProvider",
                    "a webhook needs a provider name",
                ));
            }
            if !seen.insert(w.path.clone()) {
                return Err(Error::validation(
                    "webhookPath",
                    format!("{} is registered twice", w.path),
                ));
            }
        }
        Ok(())
    }

    /// Assembles without validating (the defaults are valid).
    pub(crate) fn assemble(self) -> (Router, OpenApi) {
        let webhook_paths = self.webhooks.iter().map(|w| w.path.clone()).collect();
        let state = ApiState {
            inner: Arc::new(Inner {
                failures: SourceLimiter::new(
                    self.api.clock().clone(),
                    self.webhook_rate.0,
                    self.webhook_rate.1,
                    MAX_WEBHOOK_SOURCES,
                ),
                webhook_slots: Arc::new(Semaphore::new(self.max_concurrent_webhooks.max(1))),
                webhook_paths,
                client_ip_header: self
                    .client_ip_header
                    .as_deref()
                    .and_then(|h| HeaderName::try_from(h).ok()),
                api: self.api,
                auth: self.auth,
                observer: self.observer,
                public_base_url: self.public_base_url,
                stopping: self.stopping,
                openapi: OnceLock::new(),
            }),
        };
        let api = routes::api().layer(RequestBodyLimitLayer::new(self.body_limit));
        let mut hooks = OpenApiRouter::new();
        for w in self.webhooks {
            let op = webhooks::operation_for(&w);
            hooks.get_openapi_mut().paths.add_path_operation(
                &w.path,
                vec![utoipa::openapi::HttpMethod::Post],
                op,
            );
            let path = w.path.clone();
            let limit = self
                .provider_body_limits
                .get(&w.provider)
                .copied()
                .unwrap_or(self.webhook_body_limit);
            let route = Arc::new(w);
            hooks = hooks.route(
                &path,
                post(move |st, uri, headers, body| {
                    webhooks::provider_webhook(st, route.clone(), uri, headers, body)
                })
                .layer(RequestBodyLimitLayer::new(limit)),
            );
        }
        let mut all = OpenApiRouter::with_openapi(openapi::base(self.security))
            .merge(api)
            .merge(hooks);
        for ext in self.extensions {
            all = all.merge(ext);
        }
        let (router, doc) = all.split_for_parts();
        // Set once, before any request can read it.
        let _ = state.inner.openapi.set(doc.clone());
        let admission = Admission::new(self.max_concurrent_requests, self.request_queue);
        let router = router
            .fallback(route_not_found)
            .layer(middleware::from_fn_with_state(
                state.clone(),
                webhooks::guard,
            ))
            .layer(middleware::from_fn_with_state(admission, admit))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                self.request_timeout,
            ))
            .layer(middleware::from_fn(json_errors))
            .layer(TraceLayer::new_for_http())
            .with_state(state);
        (router, doc)
    }
}

/// The bound on requests in progress: `slots` run at once, and admission
/// (running or waiting) is refused beyond `slots + queue`.
#[derive(Clone)]
struct Admission {
    admitted: Arc<Semaphore>,
    slots: Arc<Semaphore>,
}

impl Admission {
    fn new(slots: usize, queue: usize) -> Self {
        let slots = slots.clamp(1, Semaphore::MAX_PERMITS / 4);
        let queue = queue.min(Semaphore::MAX_PERMITS / 4);
        Admission {
            admitted: Arc::new(Semaphore::new(slots + queue)),
            slots: Arc::new(Semaphore::new(slots)),
        }
    }
}

/// Middleware: waits for a slot when every one is taken, answers 503 (with
/// `Retry-After`) when the waiting line is full too. The slot is held until the
/// response starts.
async fn admit(State(a): State<Admission>, req: Request, next: Next) -> Response {
    let Ok(_admitted) = a.admitted.clone().try_acquire_owned() else {
        let mut r = ApiError::unavailable("the server is busy; retry shortly").into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    };
    let Ok(_slot) = a.slots.clone().acquire_owned().await else {
        return ApiError::unavailable("the server is stopping").into_response();
    };
    next.run(req).await
}
