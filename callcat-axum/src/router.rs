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

use std::collections::BTreeSet;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::OriginalUri;
use axum::http::{HeaderMap, header};
use axum::middleware;
use axum::routing::post;
use callcat_core::{Error, WebhookVerifier};
use tokio::sync::watch;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::SecurityScheme;
use utoipa_axum::router::OpenApiRouter;

use crate::api::Api;
use crate::auth::Authenticator;
use crate::error::{json_errors, route_not_found};
use crate::webhooks::{RateLimiter, WebhookObserver, WebhookRoute};
use crate::{openapi, routes, webhooks};

/// Largest API request body (64 KiB) unless changed with [`ApiRouter::body_limit`].
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Largest webhook body (providers send whole call objects with transcripts)
/// unless changed with [`ApiRouter::webhook_body_limit`].
pub const WEBHOOK_BODY_LIMIT: usize = 2 * 1024 * 1024;

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
    limiter: RateLimiter,
    public_base_url: Option<String>,
    stopping: Option<watch::Receiver<bool>>,
    openapi: OnceLock<OpenApi>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("api", &self.inner.api)
            .field("public_base_url", &self.inner.public_base_url)
            .field("limiter", &self.inner.limiter)
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

    /// The rate limit shared by every webhook route.
    pub fn webhook_limiter(&self) -> &RateLimiter {
        &self.inner.limiter
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
    webhook_rate: (u32, u32),
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
            .field("webhook_rate", &self.webhook_rate)
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
            webhook_rate: (50, 200),
            public_base_url: None,
            observer: None,
            stopping: None,
            security: None,
        }
    }

    /// Serves `provider`'s webhooks at `POST /webhooks/{provider}`: rate
    /// limited, verified by `verifier` before anything is parsed (401 when the
    /// signature fails, nothing stored), every event handed to the ingestor,
    /// answered with `{"results": [...]}`.
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

    /// Largest accepted webhook body in bytes (default 2 MiB, at least 1024).
    pub fn webhook_body_limit(mut self, bytes: usize) -> Self {
        self.webhook_body_limit = bytes;
        self
    }

    /// Webhook requests admitted per second, and the burst (default 50/s, 200).
    pub fn webhook_rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.webhook_rate = (per_second, burst);
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
        if self.webhook_body_limit < 1024 {
            return Err(Error::validation(
                "webhookBodyLimit",
                "the webhook body limit must be at least 1024 bytes",
            ));
        }
        if self.webhook_rate.0 == 0 || self.webhook_rate.1 == 0 {
            return Err(Error::validation(
                "webhookRateLimit",
                "the webhook rate and burst must be at least 1",
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
        let state = ApiState {
            inner: Arc::new(Inner {
                limiter: RateLimiter::new(
                    self.api.clock().clone(),
                    self.webhook_rate.0,
                    self.webhook_rate.1,
                ),
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
            let route = Arc::new(w);
            hooks = hooks.route(
                &path,
                post(move |st, uri, headers, body| {
                    webhooks::provider_webhook(st, route.clone(), uri, headers, body)
                }),
            );
        }
        let hooks = hooks.layer(RequestBodyLimitLayer::new(self.webhook_body_limit));
        let mut all = OpenApiRouter::with_openapi(openapi::base(self.security))
            .merge(api)
            .merge(hooks);
        for ext in self.extensions {
            all = all.merge(ext);
        }
        let (router, doc) = all.split_for_parts();
        // Set once, before any request can read it.
        let _ = state.inner.openapi.set(doc.clone());
        let router = router
            .fallback(route_not_found)
            .layer(middleware::from_fn(json_errors))
            .layer(TraceLayer::new_for_http())
            .with_state(state);
        (router, doc)
    }
}
