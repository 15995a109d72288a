//! [`PostgresWakeupListener`]: relays `callcat_due` notifications (sent by the
//! migration's trigger on every write that makes a call due earlier, from any
//! process) into a core [`Wakeup`], so idle schedulers everywhere wake at once.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use callcat_core::{Result, Wakeup};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::task::JoinHandle;

use crate::error::PgError;
use crate::sql::validate_schema;

/// The channel the migration's trigger notifies. The payload is JSON:
/// `{"schema": "...", "id": "<call id>", "next_action_at": "<timestamp>"}`.
pub const NOTIFY_CHANNEL: &str = "callcat_due";

/// The `application_name` of the listening connection (visible in `pg_stat_activity`).
pub const LISTENER_APPLICATION_NAME: &str = "callcat-wakeup";

/// How a [`PostgresWakeupListener`] filters and reconnects.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    schema: Option<String>,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            schema: None,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl ListenerOptions {
    /// Every notification wakes; reconnects back off from 100 ms to 30 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only notifications from tables in this schema wake (payloads that cannot
    /// be read wake too: an extra wake is harmless, a missed one is not).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Reconnect back-off: starts at `initial`, doubles per failure up to `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Whether a notification payload concerns us.
    fn wants(&self, payload: &str) -> bool {
        let Some(schema) = &self.schema else {
            return true;
        };
        #[derive(serde::Deserialize)]
        struct Payload {
            schema: String,
        }
        match serde_json::from_str::<Payload>(payload) {
            Ok(p) => &p.schema == schema,
            Err(_) => true,
        }
    }
}

#[derive(Default)]
struct Status {
    /// The listening connection's server process id (0 while disconnected).
    pid: AtomicU32,
    /// How many times a listening connection was established.
    connects: AtomicU64,
}

/// A spawned task holding a `LISTEN callcat_due` connection (its own, outside the
/// store's pool) and calling [`Wakeup::wake`] for every relevant notification.
///
/// If the connection is lost it reconnects with exponential back-off and then
/// wakes once, since notifications sent while it was away are gone. Dropping the
/// listener stops the task.
pub struct PostgresWakeupListener {
    task: JoinHandle<()>,
    status: Arc<Status>,
}

impl fmt::Debug for PostgresWakeupListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresWakeupListener")
            .field("backend_pid", &self.backend_pid())
            .field("connects", &self.connects())
            .finish()
    }
}

impl PostgresWakeupListener {
    /// Connects (with `pool`'s connection options), subscribes, and starts
    /// relaying into `wakeup`. Returns once the subscription is active, so a
    /// write committed after this returns is never missed. Fails with
    /// `Unavailable` if the first connection cannot be made.
    pub async fn start(pool: &PgPool, wakeup: Wakeup, options: ListenerOptions) -> Result<Self> {
        if let Some(s) = &options.schema {
            validate_schema(s).map_err(|message| PgError::Config {
                field: "schema",
                message,
            })?;
        }
        let connect_options = (*pool.connect_options())
            .clone()
            .application_name(LISTENER_APPLICATION_NAME);
        // A pool of one, only used by PgListener to (re)open its connection.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(connect_options);
        let status = Arc::new(Status::default());
        let listener = connect(&own, &status)
            .await
            .map_err(PgError::sqlx("starting the LISTEN connection"))?;
        let task = tokio::spawn(relay(own, listener, wakeup, options, status.clone()));
        Ok(PostgresWakeupListener { task, status })
    }

    /// The server process id of the listening connection, `None` while it is
    /// reconnecting (for monitoring, or `pg_terminate_backend` in tests).
    pub fn backend_pid(&self) -> Option<u32> {
        match self.status.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// How many times the listening connection has been established (1 until
    /// the first reconnect).
    pub fn connects(&self) -> u64 {
        self.status.connects.load(Ordering::SeqCst)
    }

    /// Stops relaying.
    pub fn stop(self) {
        // Drop aborts the task.
    }
}

impl Drop for PostgresWakeupListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connect(pool: &PgPool, status: &Status) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    record_connection(&mut listener, status).await?;
    Ok(listener)
}

async fn record_connection(listener: &mut PgListener, status: &Status) -> Result<(), sqlx::Error> {
    let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(&mut *listener)
        .await?;
    status
        .pid
        .store(u32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
    status.connects.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

async fn relay(
    pool: PgPool,
    mut listener: PgListener,
    wakeup: Wakeup,
    options: ListenerOptions,
    status: Arc<Status>,
) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                if options.wants(n.payload()) {
                    wakeup.wake();
                }
            }
            Ok(None) => {
                // sqlx already reconnected and re-subscribed; anything sent in
                // between is lost, so wake once.
                tracing::warn!("LISTEN connection was lost and re-established");
                if let Err(e) = record_connection(&mut listener, &status).await {
                    tracing::warn!(error = %e, "could not read the new listener's backend pid");
                }
                wakeup.wake();
            }
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                status.pid.store(0, Ordering::SeqCst);
                drop(listener);
                listener = reconnect(&pool, &options, &status).await;
                wakeup.wake();
            }
        }
    }
}

/// Reconnects until it succeeds, backing off exponentially.
async fn reconnect(pool: &PgPool, options: &ListenerOptions, status: &Status) -> PgListener {
    let mut backoff = options.initial_backoff;
    loop {
        tokio::time::sleep(backoff).await;
        match connect(pool, status).await {
            Ok(l) => {
                tracing::info!("LISTEN connection re-established");
                return l;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "reconnecting the LISTEN connection failed");
                backoff = (backoff * 2).min(options.max_backoff);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_filter_reads_the_payload() {
        let all = ListenerOptions::new();
        assert!(all.wants(r#"{"schema":"a","id":"x"}"#));
        let a = ListenerOptions::new().schema("a");
        assert!(a.wants(r#"{"schema":"a","id":"x","next_action_at":"2025-01-01T00:00:00+00:00"}"#));
        assert!(!a.wants(r#"{"schema":"b","id":"x"}"#));
        // Unreadable payloads wake: a spurious wake is harmless, a missed one is not.
        assert!(a.wants("garbage"));
    }

    #[test]
    fn backoff_max_is_at_least_initial() {
        let o = ListenerOptions::new().backoff(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(o.max_backoff, Duration::from_secs(5));
    }
}
