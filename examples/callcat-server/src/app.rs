//! Assembly: [`ServerBuilder`] turns a [`Config`] (plus, for tests, an injected
//! clock and simulator timings) into a [`Server`]: stores, provider, scheduler,
//! window planner, event ingestion, live tracking, and the HTTP API of
//! [`callcat_axum`] with JWT authentication, metrics and the provider's webhooks.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware;
use callcat_axum::{Api, ApiRouter, JwtAuthenticator};
use callcat_core::memory::in_memory_stores;
use callcat_core::{
    Clock, Engine, EngineSettings, PollerConfig, Simulator, SimulatorConfig, Stores, SweeperConfig,
    SystemClock, TelephonyProvider, Wakeup,
};
use callcat_core::{
    InMemoryCallStore, InMemoryDoNotCallStore, InMemoryTranscriptStore, InMemoryWindowStore,
};
use callcat_dynamo::DynamoStores;
use callcat_postgres::{PostgresOptions, PostgresStore, PostgresWakeupListener};
use callcat_retell::RetellProvider;
use callcat_twilio::{TwilioProvider, TwilioRoutes};
use tokio::sync::watch;

use crate::config::{
    CallerNumbersConfig, Config, ConfigError, DynamoConfig, StoreConfig, TelephonyConfig,
};
use crate::metrics::Metrics;
use crate::ops;
use crate::server::{Background, DevTokens, Server};

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

/// The server's shared parts: the callcat services the API runs on, token
/// signing and verification, and the counters. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The services the HTTP API calls.
    pub api: Api,
    /// Signs (development, tests) and verifies tokens.
    pub jwt: JwtAuthenticator,
    /// Counters.
    pub metrics: Metrics,
    /// The externally visible base URL (no trailing slash).
    pub base_url: String,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// How long a development-mode demo token is valid.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Largest API request body (64 KiB) unless changed with [`ServerBuilder::body_limit`].
pub const DEFAULT_BODY_LIMIT: usize = callcat_axum::DEFAULT_BODY_LIMIT;
/// Largest webhook body (providers send whole call objects with transcripts).
pub const WEBHOOK_BODY_LIMIT: usize = callcat_axum::WEBHOOK_BODY_LIMIT;

/// Webhook requests that fail verification, per second and burst, that one
/// source may send before it gets 429 (verified requests are never limited).
pub const WEBHOOK_FAILURE_BUDGET: (u32, u32) = (1, 20);

/// Builds a [`Server`]; [`ServerBuilder::build`] validates and connects.
pub struct ServerBuilder {
    config: Config,
    clock: Option<Arc<dyn Clock>>,
    simulator: SimulatorConfig,
    stores: Option<Stores>,
    body_limit: usize,
    webhook_rate: (u32, u32),
    poller: PollerConfig,
    sweeper: SweeperConfig,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("simulator", &self.simulator)
            .field("body_limit", &self.body_limit)
            .field("webhook_rate", &self.webhook_rate)
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
            body_limit: DEFAULT_BODY_LIMIT,
            webhook_rate: WEBHOOK_FAILURE_BUDGET,
            poller: PollerConfig::default(),
            sweeper: SweeperConfig::default(),
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

    /// Largest accepted API request body in bytes (default 64 KiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Webhook requests failing verification admitted per second from one
    /// source, and the burst (default 1/s, 20); verified ones are never limited.
    pub fn webhook_rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.webhook_rate = (per_second, burst);
        self
    }

    /// How the transcript poller paces itself.
    pub fn poller_config(mut self, config: PollerConfig) -> Self {
        self.poller = config;
        self
    }

    /// When the stale-call sweeper ends calls.
    pub fn sweeper_config(mut self, config: SweeperConfig) -> Self {
        self.sweeper = config;
        self
    }

    /// Validates, connects to the store and provider, and assembles the server.
    pub async fn build(self) -> Result<Server, StartError> {
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        self.config.check()?;
        if self.body_limit < 1024 {
            return Err(callcat_core::Error::validation(
                "bodyLimit",
                "the body limit must be at least 1024 bytes",
            )
            .into());
        }
        if self.webhook_rate.0 == 0 || self.webhook_rate.1 == 0 {
            return Err(callcat_core::Error::validation(
                "webhookRateLimit",
                "the webhook rate and burst must be at least 1",
            )
            .into());
        }
        self.poller.validate()?;
        self.sweeper.validate()?;
        let base_url = self.config.base_url();
        let wakeup = Wakeup::new();
        let (stores, pg_listener) = match self.stores {
            Some(s) => (s, None),
            None => open_stores(&self.config, &wakeup).await?,
        };
        let mut retell = None;
        let mut twilio = None;
        let mut simulator = None;
        let provider: Arc<dyn TelephonyProvider> = match &self.config.telephony {
            TelephonyConfig::Simulator => {
                let sim = Simulator::new(clock.clone(), self.simulator.clone());
                simulator = Some(sim.clone());
                Arc::new(sim)
            }
            TelephonyConfig::Retell {
                api_key,
                base_url: api_base,
                from_number,
                agent_id,
            } => {
                let mut b = RetellProvider::builder()
                    .api_key(api_key.expose())
                    .from_number(from_number.as_str())
                    .agent_id(agent_id.as_str())
                    .clock(clock.clone());
                if let Some(u) = api_base {
                    b = b.base_url(u.as_str().trim_end_matches('/'));
                }
                let p = b.build()?;
                retell = Some(p.webhook_verifier());
                Arc::new(p)
            }
            TelephonyConfig::Twilio {
                account_sid,
                auth_token,
                from_number,
                base_url: api_base,
            } => {
                let mut b = TwilioProvider::builder()
                    .account_sid(account_sid.as_str())
                    .auth_token(auth_token.expose())
                    .from_number(from_number.clone())
                    .public_base_url(base_url.as_str());
                if let Some(u) = api_base {
                    b = b.base_url(u.as_str().trim_end_matches('/'));
                }
                let p = b.build()?;
                twilio = Some(TwilioRoutes::new(&p));
                Arc::new(p)
            }
        };
        let (jwt_secret, dev_mode) = match &self.config.jwt_secret {
            Some(s) => (s.expose().as_bytes().to_vec(), false),
            None => (random_secret(), true),
        };
        let mut jwt = JwtAuthenticator::new(&jwt_secret, clock.clone())
            .max_lifetime(self.config.jwt.max_lifetime);
        if let Some(iss) = &self.config.jwt.issuer {
            jwt = jwt.issuer(iss.as_str());
        }
        if let Some(aud) = &self.config.jwt.audience {
            jwt = jwt.audience(aud.as_str());
        }
        let dev_ttl = DEV_TOKEN_TTL.min(self.config.jwt.max_lifetime);
        let dev_tokens = if dev_mode {
            Some(DevTokens {
                user: jwt.mint("demo", None, None, dev_ttl)?,
                admin: jwt.mint("admin", None, Some("admin"), dev_ttl)?,
            })
        } else {
            None
        };
        let dispatch = &self.config.dispatch;
        let mut settings = EngineSettings::default();
        settings.scheduler.global_cap = dispatch.global_cap;
        settings.scheduler.owner_cap = dispatch.owner_cap;
        settings.default_retry.max_attempts = dispatch.max_attempts;
        settings.drain = dispatch.drain;
        settings.one_open_call_per_user = self.config.one_open_call_per_user;
        settings.poller = self.poller;
        settings.sweeper = self.sweeper;
        settings.caller_numbers = CallerNumbersConfig::policy(
            self.config.caller_numbers.as_ref(),
            match &self.config.telephony {
                TelephonyConfig::Simulator => None,
                TelephonyConfig::Retell { from_number, .. }
                | TelephonyConfig::Twilio { from_number, .. } => Some(from_number),
            },
        );
        let mut engine = Engine::builder()
            .stores(stores)
            .clock(clock)
            .wakeup(wakeup)
            .settings(settings);
        engine = match simulator.clone() {
            Some(sim) => engine.simulator(sim),
            None => engine.provider(provider),
        };
        let engine = engine.build().await?;
        let metrics = Metrics::new(self.config.metrics_tenant_labels);
        let metrics_task = metrics.follow_bus(engine.bus());
        let (stop_tx, stop_rx) = watch::channel(false);
        let api = Api::new(engine.clone());
        let limits = &self.config.http;
        let mut http = ApiRouter::new(api.clone(), Arc::new(jwt.clone()))
            .body_limit(self.body_limit)
            .webhook_rate_limit(self.webhook_rate.0, self.webhook_rate.1)
            .webhook_body_limit(limits.webhook_body_limit)
            .max_concurrent_webhooks(limits.max_concurrent_webhooks)
            .request_timeout(limits.request_timeout)
            .max_concurrent_requests(
                limits.max_concurrent_requests,
                limits.max_concurrent_requests,
            )
            .public_base_url(&base_url)
            .webhook_observer(Arc::new(ops::WebhookCounter(metrics.clone())))
            .shutdown_signal(stop_rx)
            .merge(ops::metrics_routes(
                metrics.clone(),
                engine.tracker().clone(),
                self.config.metrics_token.as_ref().map(|t| t.expose()),
            ));
        if let Some(h) = &limits.trusted_proxy_header {
            http = http.client_ip_header(h);
        }
        // Every provider's webhook paths are routed; an unconfigured one answers 404.
        http = match retell {
            Some(v) => http.webhook("retell", Arc::new(v)),
            None => http.unconfigured_webhook("/webhooks/retell", "retell"),
        };
        http = twilio
            .unwrap_or_else(TwilioRoutes::unconfigured)
            .register(http);
        let router: Router = http.build()?.layer(middleware::from_fn_with_state(
            metrics.clone(),
            ops::count_http,
        ));
        let state = AppState {
            api,
            jwt,
            metrics,
            base_url,
        };
        let background = Background {
            engine,
            metrics_task: Box::pin(metrics_task),
            pg_listener,
        };
        Ok(Server::new(
            router,
            state,
            self.config,
            background,
            simulator,
            dev_tokens,
            stop_tx,
        ))
    }
}

/// Opens the configured store. For PostgreSQL the schema is migrated and a
/// LISTEN/NOTIFY listener relays wake-ups from other processes (keep it alive).
pub(crate) async fn open_stores(
    config: &Config,
    wakeup: &Wakeup,
) -> Result<(Stores, Option<PostgresWakeupListener>), StartError> {
    let cipher = match &config.master_key {
        Some(keys) => Some(keys.cipher()?),
        None => None,
    };
    match &config.store {
        StoreConfig::Memory => Ok((
            match cipher {
                Some(c) => Stores {
                    calls: Arc::new(InMemoryCallStore::with_cipher(c.clone())),
                    transcripts: Arc::new(InMemoryTranscriptStore::with_cipher(c.clone())),
                    windows: Arc::new(InMemoryWindowStore::with_cipher(c)),
                    do_not_call: Arc::new(InMemoryDoNotCallStore::new()),
                },
                None => in_memory_stores(),
            },
            None,
        )),
        StoreConfig::Postgres {
            database_url,
            schema,
        } => {
            let mut options = PostgresOptions::new();
            if let Some(c) = cipher {
                options = options.cipher(c);
            }
            if let Some(s) = schema {
                options = options.schema(s.as_str());
            }
            let pg = PostgresStore::connect_with(database_url.expose(), options).await?;
            pg.migrate().await?;
            let listener = pg.wakeup_listener(wakeup.clone()).await?;
            Ok((pg.stores(), Some(listener)))
        }
        StoreConfig::Dynamo(d) => {
            let DynamoConfig {
                endpoint,
                calls_table,
                transcripts_table,
                windows_table,
                do_not_call_table,
                create_tables,
                region,
                access_key_id,
                secret_access_key,
                session_token,
            } = &**d;
            let mut b = DynamoStores::builder()
                .region(region.as_str())
                .credentials(
                    access_key_id.as_str(),
                    secret_access_key.expose(),
                    session_token.as_ref().map(|t| t.expose().to_owned()),
                )
                .calls_table(calls_table.as_str())
                .transcripts_table(transcripts_table.as_str())
                .windows_table(windows_table.as_str())
                .do_not_call_table(do_not_call_table.as_str());
            if let Some(u) = endpoint {
                b = b.endpoint_url(u.as_str().trim_end_matches('/'));
            }
            if let Some(c) = cipher {
                b = b.cipher(c);
            }
            let dynamo = b.build()?;
            if *create_tables {
                dynamo.create_tables().await?;
            }
            Ok((dynamo.stores(), None))
        }
    }
}

fn random_secret() -> Vec<u8> {
    use rand::{RngCore as _, SeedableRng as _};
    let mut bytes = vec![0u8; 32];
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut bytes);
    bytes
}
