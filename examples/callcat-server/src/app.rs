//! Assembly: [`ServerBuilder`] turns a [`Config`] (plus, for tests, an injected
//! clock and simulator timings) into a [`Server`]: stores, provider, scheduler,
//! window planner, live tracking and the HTTP router. [`Server::serve`] runs it
//! all until a shutdown signal, then stops everything gracefully.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use callcat_core::memory::in_memory_stores;
use callcat_core::{
    CallService, Clock, Limits, Scheduler, Simulator, SimulatorConfig, Stores, SystemClock,
    TelephonyProvider, UpdateBus, Wakeup, WindowPlanner,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::auth::JwtKeys;
use crate::config::{Config, ConfigError, StoreConfig, TelephonyConfig};
use crate::error::json_errors;
use crate::metrics::Metrics;
use crate::routes;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A component could not be built or reached (store, provider).
    #[error("{0}")]
    Core(#[from] callcat_core::Error),
    /// Listening or serving failed.
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Owner-scoped call operations.
    pub service: CallService,
    /// The stores.
    pub stores: Stores,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Live updates.
    pub bus: UpdateBus,
    /// Token verification.
    pub jwt: JwtKeys,
    /// Counters.
    pub metrics: Metrics,
    /// Input limits.
    pub limits: Limits,
    /// Places the calls of call windows.
    pub planner: WindowPlanner,
    /// Set to `true` when the server shuts down (ends event streams).
    pub stopping: watch::Receiver<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// How long a development-mode demo token is valid.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Builds a [`Server`]; [`ServerBuilder::build`] validates and connects.
pub struct ServerBuilder {
    config: Config,
    clock: Option<Arc<dyn Clock>>,
    simulator: SimulatorConfig,
    stores: Option<Stores>,
    body_limit: usize,
    scheduler_max_idle: Duration,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("simulator", &self.simulator)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// A builder for `config`.
    pub fn new(config: Config) -> Self {
        ServerBuilder {
            config,
            clock: None,
            simulator: SimulatorConfig::default(),
            stores: None,
            body_limit: 64 * 1024,
            scheduler_max_idle: Duration::from_secs(60),
        }
    }

    /// The clock (default: the system clock). Tests pass a `ManualClock`.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How simulated calls behave (telephony = simulator).
    pub fn simulator_config(mut self, config: SimulatorConfig) -> Self {
        self.simulator = config;
        self
    }

    /// Use these stores instead of the ones the config names.
    pub fn stores(mut self, stores: Stores) -> Self {
        self.stores = Some(stores);
        self
    }

    /// Largest accepted request body in bytes (default 64 KiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Validates, connects to the store and provider, and assembles the server.
    pub async fn build(self) -> Result<Server, StartError> {
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        if self.body_limit < 1024 {
            return Err(callcat_core::Error::validation(
                "bodyLimit",
                "the body limit must be at least 1024 bytes",
            )
            .into());
        }
        let stores = match self.stores {
            Some(s) => s,
            None => open_stores(&self.config).await?,
        };
        let bus = UpdateBus::default();
        let wakeup = Wakeup::new();
        let (provider, simulator): (Arc<dyn TelephonyProvider>, Option<Simulator>) =
            match &self.config.telephony {
                TelephonyConfig::Simulator => {
                    let sim = Simulator::new(clock.clone(), self.simulator.clone());
                    (Arc::new(sim.clone()), Some(sim))
                }
                other => return Err(unavailable_in_this_build(other).into()),
            };
        let (jwt_secret, dev_mode) = match &self.config.jwt_secret {
            Some(s) => (s.expose().as_bytes().to_vec(), false),
            None => (random_secret(), true),
        };
        let jwt = JwtKeys::new(&jwt_secret, clock.clone());
        let dev_token = if dev_mode {
            Some(jwt.mint("demo", None, None, DEV_TOKEN_TTL)?)
        } else {
            None
        };
        let limits = Limits::default();
        let service = CallService::new(stores.calls.clone(), clock.clone(), wakeup.clone())
            .with_provider(provider.clone())
            .with_bus(bus.clone())
            .with_limits(limits.clone());
        let scheduler = Scheduler::builder()
            .store(stores.calls.clone())
            .provider(provider.clone())
            .clock(clock.clone())
            .wakeup(wakeup.clone())
            .bus(bus.clone())
            .max_idle(self.scheduler_max_idle)
            .build()?;
        let planner = WindowPlanner::new(stores.windows.clone(), service.clone(), clock.clone());
        let metrics = Metrics::default();
        let metrics_task = metrics.follow_bus(&bus);
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = AppState {
            service,
            stores,
            clock,
            bus,
            jwt,
            metrics,
            limits,
            planner: planner.clone(),
            stopping: stop_rx,
        };
        let mut background: JoinSet<()> = JoinSet::new();
        background.spawn(metrics_task);
        Ok(Server {
            router: router(state.clone(), self.body_limit),
            state,
            config: self.config,
            scheduler,
            planner,
            simulator,
            dev_token,
            stop_tx,
            background,
        })
    }
}

async fn open_stores(config: &Config) -> Result<Stores, StartError> {
    match &config.store {
        StoreConfig::Memory => Ok(in_memory_stores()),
        StoreConfig::Postgres { .. } => Err(callcat_core::Error::new(
            callcat_core::ErrorKind::Unsupported,
            "CALLCAT_STORE=postgres: the PostgreSQL store is not part of this build yet",
        )
        .into()),
        StoreConfig::Dynamo { .. } => Err(callcat_core::Error::new(
            callcat_core::ErrorKind::Unsupported,
            "CALLCAT_STORE=dynamo: the DynamoDB store is not part of this build yet",
        )
        .into()),
    }
}

fn unavailable_in_this_build(t: &TelephonyConfig) -> callcat_core::Error {
    let name = match t {
        TelephonyConfig::Retell { .. } => "retell",
        TelephonyConfig::Twilio { .. } => "twilio",
        _ => "this provider",
    };
    callcat_core::Error::new(
        callcat_core::ErrorKind::Unsupported,
        format!("CALLCAT_TELEPHONY={name}: the provider is not part of this build yet"),
    )
}

fn store_name(s: &StoreConfig) -> &'static str {
    match s {
        StoreConfig::Memory => "memory",
        StoreConfig::Postgres { .. } => "postgres",
        StoreConfig::Dynamo { .. } => "dynamo",
    }
}

fn telephony_name(t: &TelephonyConfig) -> &'static str {
    match t {
        TelephonyConfig::Simulator => "simulator",
        TelephonyConfig::Retell { .. } => "retell",
        TelephonyConfig::Twilio { .. } => "twilio",
    }
}

fn random_secret() -> Vec<u8> {
    use rand::{RngCore as _, SeedableRng as _};
    let mut bytes = vec![0u8; 32];
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut bytes);
    bytes
}

/// The HTTP routes with their layers.
pub fn router(state: AppState, body_limit: usize) -> Router {
    routes::api()
        .layer(middleware::from_fn_with_state(state.clone(), count_http))
        .layer(middleware::from_fn(json_errors))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn count_http(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let resp = next.run(req).await;
    state.metrics.http(&route, resp.status().as_u16());
    resp
}

/// An assembled server, ready to [`Server::serve`].
pub struct Server {
    router: Router,
    state: AppState,
    config: Config,
    scheduler: Scheduler,
    planner: WindowPlanner,
    simulator: Option<Simulator>,
    dev_token: Option<String>,
    stop_tx: watch::Sender<bool>,
    background: JoinSet<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl Server {
    /// A builder for `config`.
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder::new(config)
    }

    /// The router (for serving it yourself or calling it in-process).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The simulator, when telephony = simulator.
    pub fn simulator(&self) -> Option<&Simulator> {
        self.simulator.as_ref()
    }

    /// In development mode (no JWT secret), a token for the user `demo`.
    pub fn dev_token(&self) -> Option<&str> {
        self.dev_token.as_deref()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What to tell the person starting the server: where it listens and, in
    /// development mode, a ready-to-use token and a curl line.
    pub fn startup_message(&self, addr: SocketAddr) -> String {
        let base = match &self.config.public_url {
            Some(u) => u.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{addr}"),
        };
        let mut s = format!(
            "callcat server listening on http://{addr} (store: {}, telephony: {})\n",
            store_name(&self.config.store),
            telephony_name(&self.config.telephony),
        );
        if let Some(token) = &self.dev_token {
            s.push_str(&format!(
                "\nDevelopment mode: no CALLCAT_JWT_SECRET, so a secret was generated for this run.\n\
                 A token for the user `demo` (valid 30 days):\n\n  export TOKEN={token}\n\n\
                 Try:\n\n  curl -s -X POST {base}/api/calls -H \"Authorization: Bearer $TOKEN\" \\\n    \
                 -H 'Content-Type: application/json' \\\n    \
                 -d '{{\"calleeName\":\"Ada Lovelace\",\"phoneNumber\":\"+14155552671\",\"subject\":\"Demo\",\"prompt\":\"Say hello.\"}}'\n\n  \
                 curl -s -N {base}/api/calls/stream -H \"Authorization: Bearer $TOKEN\"\n"
            ));
        }
        s
    }

    /// Binds the configured listen address.
    pub async fn bind(&self) -> Result<TcpListener, StartError> {
        Ok(TcpListener::bind(self.config.listen).await?)
    }

    /// Runs the scheduler, the window planner, live tracking and HTTP on
    /// `listener` until `shutdown` resolves, then stops accepting requests, ends
    /// event streams and background work, and returns.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let stop_rx = self.stop_tx.subscribe();
        let scheduler = self.scheduler.clone();
        let rx = stop_rx.clone();
        self.background.spawn(async move {
            if let Err(e) = scheduler.run(stopped(rx)).await {
                tracing::error!(error = %e, "scheduler stopped");
            }
        });
        let planner = self.planner.clone();
        let rx = stop_rx.clone();
        self.background
            .spawn(async move { planner.run(stopped(rx)).await });

        let stop_tx = self.stop_tx.clone();
        let result = axum::serve(listener, self.router.clone())
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down");
                let _ = stop_tx.send(true);
            })
            .await;
        let _ = self.stop_tx.send(true);
        self.background.abort_all();
        while self.background.join_next().await.is_some() {}
        result.map_err(StartError::Io)
    }

    /// Starts serving on `listener` in a background task (tests, embedding).
    pub fn spawn(self, listener: TcpListener) -> Result<RunningServer, StartError> {
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(listener, async move {
            let _ = rx.await;
        }));
        Ok(RunningServer {
            addr,
            stop: Some(tx),
            task,
        })
    }
}

/// A server serving in a background task.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), StartError>>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it gracefully and waits until it has.
    pub async fn shutdown(mut self) -> Result<(), StartError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(callcat_core::Error::internal(format!("server task failed: {e}")).into()),
        }
    }
}

/// Active calls per tenant, for the metrics gauge.
pub(crate) async fn active_by_tenant(
    state: &AppState,
) -> callcat_core::Result<BTreeMap<String, usize>> {
    use callcat_core::{ActiveScope, CallStoreExt as _};
    let mut out = BTreeMap::new();
    for c in state.stores.calls.all_active(&ActiveScope::All).await? {
        *out.entry(c.owner.tenant.as_str().to_owned()).or_default() += 1;
    }
    Ok(out)
}
