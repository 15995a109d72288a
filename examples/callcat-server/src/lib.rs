#![doc = include_str!("../README.md")]
//! callcat-server: the example server's library — configuration, the choice of
//! store and provider, metrics, and the HTTP API of [`callcat_axum`] with JWT
//! authentication — assembled by [`ServerBuilder`].

pub mod admin;
pub mod app;
pub mod config;
pub mod metrics;
pub mod ops;
pub mod server;

pub use app::{AppState, ServerBuilder, StartError};
pub use callcat_axum::{ApiError, ApiResult, AuthUser, Claims, JwtAuthenticator};
pub use config::{AdminCommand, Config, ConfigError, DispatchConfig, StoreConfig, TelephonyConfig};
pub use metrics::Metrics;
pub use server::{RunningServer, Server};

/// Resolves on Ctrl-C (and SIGTERM on Unix), for [`Server::serve`].
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
