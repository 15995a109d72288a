//! callcat's HTTP API inside someone else's axum application: the app keeps its
//! own routes and its own authentication (an `X-Api-Key` header mapped to an
//! owner by a custom [`Authenticator`]) and mounts callcat's router under
//! `/callcat`, on in-memory stores and the built-in simulator.
//!
//! ```text
//! cargo run --example embed_axum --features axum
//! curl -s -X POST localhost:3000/callcat/api/calls -H 'X-Api-Key: ada-key' \
//!   -H 'Content-Type: application/json' \
//!   -d '{"calleeName":"Ada","phoneNumber":"+14155552671","subject":"Demo","prompt":"Say hello."}'
//! ```
//!
//! `tests/embed_axum.rs` drives a call through this same app.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use callcat::axum::utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use callcat::axum::{Api, ApiRouter, AuthError, AuthUser, Authenticator, async_trait};
use callcat::memory::in_memory_stores;
use callcat::{Clock, Engine, Owner, Simulator, SimulatorConfig, SystemClock};
use tokio::sync::watch;

/// The header this application authenticates with.
pub const API_KEY_HEADER: &str = "x-api-key";

/// This application's users: API keys, each naming the owner whose calls the
/// key's holder sees.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: HashMap<String, Owner>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are secrets.
        f.debug_struct("ApiKeys")
            .field("count", &self.keys.len())
            .finish()
    }
}

impl ApiKeys {
    /// Adds a key for `owner`.
    pub fn with(mut self, key: &str, owner: Owner) -> Self {
        self.keys.insert(key.to_owned(), owner);
        self
    }

    /// The owner of the request's key, or why there is none.
    pub fn owner_of(&self, headers: &HeaderMap) -> Result<&Owner, AuthError> {
        let key = headers
            .get(API_KEY_HEADER)
            .ok_or_else(|| AuthError::new("missing X-Api-Key"))?
            .to_str()
            .map_err(|_| AuthError::new("X-Api-Key must be visible ASCII"))?;
        // A real application would store key hashes and compare in constant time.
        self.keys
            .get(key)
            .ok_or_else(|| AuthError::new("unknown X-Api-Key"))
    }
}

#[async_trait]
impl Authenticator for ApiKeys {
    async fn authenticate(&self, parts: &Parts) -> Result<AuthUser, AuthError> {
        self.owner_of(&parts.headers)
            .map(|o| AuthUser::user(o.clone()))
    }
}

/// The application's own route: who the key belongs to (401 without one).
async fn whoami(keys: ApiKeys, headers: HeaderMap) -> Result<String, (StatusCode, String)> {
    keys.owner_of(&headers)
        .map(|o| format!("{}/{}\n", o.tenant.as_str(), o.user.as_str()))
        .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))
}

/// The application: its own routes plus callcat's API under `/callcat`, and
/// the callcat engine to run next to it ([`Engine::run`]: scheduler, event
/// delivery, poller, sweeper, planner). Event streams end when `stopping`
/// becomes `true`.
pub async fn build_app(
    clock: Arc<dyn Clock>,
    simulator: SimulatorConfig,
    keys: ApiKeys,
    stopping: watch::Receiver<bool>,
) -> callcat::Result<(Router, Engine)> {
    let engine = Engine::builder()
        .stores(in_memory_stores())
        .simulator(Simulator::new(clock.clone(), simulator))
        .clock(clock)
        .build()
        .await?;
    let callcat = ApiRouter::new(Api::new(engine.clone()), Arc::new(keys.clone()))
        // The OpenAPI document describes this app's authentication.
        .security_scheme(SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(
            API_KEY_HEADER,
        ))))
        .shutdown_signal(stopping)
        .build()?;
    let app = Router::new()
        .route("/", get(|| async { "my application\n" }))
        .route(
            "/whoami",
            get(move |headers: HeaderMap| whoami(keys.clone(), headers)),
        )
        .nest("/callcat", callcat);
    Ok((app, engine))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = ApiKeys::default()
        .with("ada-key", Owner::new("acme", "ada"))
        .with("bob-key", Owner::new("acme", "bob"));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (app, engine) = build_app(
        Arc::new(SystemClock),
        SimulatorConfig::default(),
        keys,
        stop_rx.clone(),
    )
    .await?;
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let background = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(stopped(stop_rx)).await })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "listening on http://{}; callcat's API is under /callcat (X-Api-Key: ada-key)",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = stop_tx.send(true);
        })
        .await?;
    // The engine drains dials in flight before it returns.
    background.await??;
    Ok(())
}
