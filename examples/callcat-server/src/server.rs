//! Running an assembled [`Server`]: [`Server::serve`] starts the scheduler, the
//! window planner, simulator event delivery, the transcript poller and the
//! stale-call sweeper next to HTTP, and on shutdown stops accepting requests,
//! ends event streams, gives the dials in flight up to the drain time to finish
//! and stops every background task.
//!
//! HTTP is served by the server's own HTTP/1 accept loop over hyper rather than
//! `axum::serve`, which can neither set a header-read timeout (its hyper
//! builder has no timer) nor bound its graceful shutdown: here a client that
//! is slow to send its headers is disconnected after
//! `CALLCAT_HEADER_READ_TIMEOUT_SECONDS`, each request carries its peer
//! address (`ConnectInfo`, the source of webhook budgets), and on shutdown the
//! connections still open after the drain time (`CALLCAT_DRAIN_SECONDS`) are
//! cut.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use callcat_core::{Engine, Simulator};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::app::{AppState, ServerBuilder, StartError};
use crate::config::{Config, StoreConfig, TelephonyConfig};

/// The parts that run in the background while serving.
pub(crate) struct Background {
    /// Scheduler, planner, event delivery, poller, sweeper, workflows.
    pub(crate) engine: Engine,
    pub(crate) metrics_task: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Relays PostgreSQL NOTIFY wake-ups while it lives.
    pub(crate) pg_listener: Option<callcat_postgres::PostgresWakeupListener>,
}

/// An assembled server, ready to [`Server::serve`].
pub struct Server {
    router: Router,
    state: AppState,
    config: Config,
    background: Background,
    simulator: Option<Simulator>,
    dev_tokens: Option<DevTokens>,
    stop_tx: watch::Sender<bool>,
}

/// Development mode's tokens (tenant `default`), minted with the generated secret.
#[derive(Clone)]
pub(crate) struct DevTokens {
    /// The user `demo`.
    pub(crate) user: String,
    /// The user `admin`, role `admin` (the tenant's do-not-call list, analytics).
    pub(crate) admin: String,
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

fn store_name(s: &StoreConfig) -> &'static str {
    match s {
        StoreConfig::Memory => "memory",
        StoreConfig::Postgres { .. } => "postgres",
        StoreConfig::Dynamo(_) => "dynamo",
    }
}

fn telephony_name(t: &TelephonyConfig) -> &'static str {
    match t {
        TelephonyConfig::Simulator => "simulator",
        TelephonyConfig::Retell { .. } => "retell",
        TelephonyConfig::Twilio { .. } => "twilio",
    }
}

impl Server {
    pub(crate) fn new(
        router: Router,
        state: AppState,
        config: Config,
        background: Background,
        simulator: Option<Simulator>,
        dev_tokens: Option<DevTokens>,
        stop_tx: watch::Sender<bool>,
    ) -> Self {
        Server {
            router,
            state,
            config,
            background,
            simulator,
            dev_tokens,
            stop_tx,
        }
    }

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
        self.dev_tokens.as_ref().map(|t| t.user.as_str())
    }

    /// In development mode, a token for the administrator `admin` of the same
    /// tenant (it manages the tenant's do-not-call list).
    pub fn dev_admin_token(&self) -> Option<&str> {
        self.dev_tokens.as_ref().map(|t| t.admin.as_str())
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Binds the configured listen address.
    pub async fn bind(&self) -> Result<TcpListener, StartError> {
        Ok(TcpListener::bind(self.config.listen).await?)
    }

    /// What to tell the person starting the server: where it listens and, in
    /// development mode, a ready-to-use token and curl lines.
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
        if let Some(DevTokens { user: token, admin }) = &self.dev_tokens {
            let ttl = crate::app::DEV_TOKEN_TTL.min(self.config.jwt.max_lifetime);
            let valid = match ttl.as_secs() {
                n if n % 86_400 == 0 => format!("{} days", n / 86_400),
                n if n % 3_600 == 0 => format!("{} hours", n / 3_600),
                n => format!("{n} seconds"),
            };
            s.push_str(&format!(
                "\nDevelopment mode: no CALLCAT_JWT_SECRET, so a secret was generated for this run.\n\
                 A token for the user `demo` (valid {valid}):\n\n  export TOKEN={token}\n\n\
                 One for `admin`, an administrator of the same tenant (do-not-call list):\n\n  \
                 export ADMIN={admin}\n\n\
                 Try:\n\n  curl -s -X POST {base}/api/calls -H \"Authorization: Bearer $TOKEN\" \\\n    \
                 -H 'Content-Type: application/json' \\\n    \
                 -d '{{\"calleeName\":\"Ada Lovelace\",\"phoneNumber\":\"+14155552671\",\"subject\":\"Demo\",\"prompt\":\"Say hello.\"}}'\n\n  \
                 curl -s -N {base}/api/calls/stream -H \"Authorization: Bearer $TOKEN\"\n"
            ));
        }
        s
    }

    /// Runs the scheduler, the window planner, event delivery, the transcript
    /// poller, the stale-call sweeper and HTTP on `listener` until `shutdown`
    /// resolves, then stops accepting requests, ends event streams, lets the
    /// dials in flight finish for up to the configured drain time
    /// (`CALLCAT_DRAIN_SECONDS`) and stops the background work.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Server {
            router,
            background: bg,
            stop_tx,
            config,
            ..
        } = self;
        let stop_rx = stop_tx.subscribe();
        let metrics_task = tokio::spawn(bg.metrics_task);
        // On shutdown the engine stops claiming and gives the dials in flight up
        // to the drain time to be answered before it stops the rest.
        let engine = bg.engine.clone();
        let rx = stop_rx.clone();
        let engine_task = tokio::spawn(async move { engine.run(stopped(rx)).await });

        let tx = stop_tx.clone();
        let pg_listener = bg.pg_listener;
        let settings = HttpSettings {
            header_read_timeout: config.http.header_read_timeout,
            drain: config.dispatch.drain,
        };
        let result = serve_http(listener, router, settings, async move {
            shutdown.await;
            tracing::info!("shutting down");
            // Ends event streams, and the engine starts draining its dials.
            let _ = tx.send(true);
        })
        .await;
        let _ = stop_tx.send(true);
        match engine_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the engine stopped with an error"),
            Err(e) => tracing::error!(error = %e, "the engine task failed"),
        }
        drop(pg_listener);
        metrics_task.abort();
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

/// How [`serve_http`] treats connections.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// How long a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long open connections may finish after shutdown begins; then they
    /// are cut.
    pub drain: Duration,
}

/// Answers refused before their body was read (too large, timed out, over a
/// limit) close the connection: the unread body would otherwise be taken for the
/// next request, and a client reusing the connection would see it reset.
fn close_when_body_unread(mut resp: axum::response::Response) -> axum::response::Response {
    use axum::http::StatusCode;
    if matches!(
        resp.status(),
        StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::SERVICE_UNAVAILABLE
    ) {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// Serves `router` over HTTP/1 on `listener` until `shutdown` resolves, with a
/// header-read timeout and each request's peer address as
/// [`ConnectInfo<SocketAddr>`]; then stops accepting, asks every connection
/// to finish its request in progress and close, and cuts those still open
/// after the drain time. Returns once every connection is gone.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Per-connection failures (reset before accept, too many open
                // files) must not stop the server; back off briefly.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                })
                .map_response(close_when_body_unread),
        );
        let mut closing = closing_rx.clone();
        let header_read_timeout = settings.header_read_timeout;
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = async {
                    let _ = closing.wait_for(|c| *c).await;
                } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let drained = tokio::time::timeout(settings.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "cutting the connections still open after the drain time"
        );
        connections.shutdown().await;
    }
    Ok(())
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
