//! [`PostgresStore`]: connecting, options, migrations, and the stores.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use callcat_core::{FieldCipher, Result, Stores, Wakeup};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor};

use crate::error::PgError;
use crate::listener::{ListenerOptions, PostgresWakeupListener};
use crate::sql::{Tables, quote_ident, validate_schema};
use crate::{
    PostgresCallStore, PostgresDoNotCallStore, PostgresTranscriptStore, PostgresWindowStore,
};

/// The embedded migrations (`migrations/` in this crate).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How to connect and where the tables live.
///
/// ```
/// use callcat_postgres::PostgresOptions;
/// let options = PostgresOptions::new().schema("callcat").max_connections(20);
/// assert_eq!(options.schema_name(), Some("callcat"));
/// ```
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
    cipher: Option<FieldCipher>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            cipher: None,
        }
    }
}

impl PostgresOptions {
    /// Defaults: the connection's default schema (`search_path`), 10 connections,
    /// a 10 s acquire timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps every table in this schema (created by [`PostgresStore::migrate`]).
    /// 1 to 63 ASCII letters, digits and underscores, not starting with a digit.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The configured schema, if any.
    pub fn schema_name(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Pool size when connecting from a URL (ignored by [`PostgresStore::from_pool_with`]).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// How long to wait for a free pooled connection before failing with
    /// `Unavailable` (ignored by [`PostgresStore::from_pool_with`]).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Encrypts calls (phone number, caller number, recording URL), transcript
    /// texts and do-not-call numbers at rest with `cipher`, and stores the phone
    /// numbers' blind indexes in `calls.phone_index` and `do_not_call.number_key`.
    /// See the crate docs ("Encryption at rest").
    pub fn cipher(mut self, cipher: FieldCipher) -> Self {
        self.cipher = Some(cipher);
        self
    }

    fn validate(&self) -> Result<()> {
        if let Some(s) = &self.schema {
            validate_schema(s).map_err(|message| PgError::Config {
                field: "schema",
                message,
            })?;
        }
        if self.max_connections == 0 {
            return Err(PgError::Config {
                field: "max_connections",
                message: "max_connections must be at least 1".into(),
            }
            .into());
        }
        Ok(())
    }
}

/// What the stores share: the pool and where the tables are.
pub(crate) struct Db {
    pub(crate) pool: PgPool,
    pub(crate) schema: Option<String>,
    pub(crate) tables: Tables,
    /// Seals calls, transcript texts and do-not-call numbers when set.
    pub(crate) cipher: Option<FieldCipher>,
}

/// A PostgreSQL database holding callcat's calls, transcripts, windows and
/// do-not-call lists.
///
/// Cloning shares the pool. See the crate docs for the schema.
#[derive(Clone)]
pub struct PostgresStore {
    db: Arc<Db>,
}

impl fmt::Debug for PostgresStore {
    // Hand-written: the pool's connect options hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.db.schema)
            .field("pool_size", &self.db.pool.size())
            .field("cipher", &self.db.cipher)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) with
    /// default options. Fails with `Unavailable` if the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects to `url` with `options`.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self> {
        options.validate()?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect(url)
            .await
            .map_err(PgError::sqlx("connecting to PostgreSQL"))?;
        Self::from_pool_with(pool, options)
    }

    /// Uses an existing pool, tables in its default schema.
    pub fn from_pool(pool: PgPool) -> Self {
        let tables = Tables::new(None);
        PostgresStore {
            db: Arc::new(Db {
                pool,
                schema: None,
                tables,
                cipher: None,
            }),
        }
    }

    /// Uses an existing pool with `options` (the schema and the cipher apply).
    pub fn from_pool_with(pool: PgPool, options: PostgresOptions) -> Result<Self> {
        options.validate()?;
        let tables = Tables::new(options.schema.as_deref());
        Ok(PostgresStore {
            db: Arc::new(Db {
                pool,
                schema: options.schema,
                tables,
                cipher: options.cipher,
            }),
        })
    }

    /// Creates the schema (if configured) and applies every embedded migration
    /// not yet applied. Safe to call from many processes at once: sqlx holds an
    /// advisory lock while migrating. The migration history lives in
    /// `_sqlx_migrations` inside the same schema.
    pub async fn migrate(&self) -> Result<()> {
        let Some(schema) = &self.db.schema else {
            return MIGRATOR
                .run(&self.db.pool)
                .await
                .map_err(|e| PgError::Migrate(e).into());
        };
        // A connection of our own: `search_path` is changed for the migration and
        // the connection is closed afterwards instead of going back to the pool.
        let mut conn = self
            .db
            .pool
            .acquire()
            .await
            .map_err(PgError::sqlx("connecting to migrate"))?
            .detach();
        let result = migrate_in_schema(&mut conn, schema).await;
        // Closing is best-effort; dropping the connection closes it too.
        let _ = conn.close().await;
        result
    }

    /// The same database (shared pool and schema) with `cipher` instead of the
    /// configured one, e.g. to rotate keys without reconnecting.
    pub fn with_cipher(&self, cipher: FieldCipher) -> PostgresStore {
        PostgresStore {
            db: Arc::new(Db {
                pool: self.db.pool.clone(),
                schema: self.db.schema.clone(),
                tables: self.db.tables.clone(),
                cipher: Some(cipher),
            }),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// The schema the tables live in, if one was configured.
    pub fn schema(&self) -> Option<&str> {
        self.db.schema.as_deref()
    }

    /// The call store.
    pub fn calls(&self) -> PostgresCallStore {
        PostgresCallStore::new(self.db.clone())
    }

    /// The transcript store.
    pub fn transcripts(&self) -> PostgresTranscriptStore {
        PostgresTranscriptStore::new(self.db.clone())
    }

    /// The window store.
    pub fn windows(&self) -> PostgresWindowStore {
        PostgresWindowStore::new(self.db.clone())
    }

    /// The do-not-call store (per-tenant lists; numbers sealed with a cipher).
    pub fn do_not_call(&self) -> PostgresDoNotCallStore {
        PostgresDoNotCallStore::new(self.db.clone())
    }

    /// All the stores as core [`Stores`].
    pub fn stores(&self) -> Stores {
        Stores {
            calls: Arc::new(self.calls()),
            transcripts: Arc::new(self.transcripts()),
            windows: Arc::new(self.windows()),
            do_not_call: Arc::new(self.do_not_call()),
        }
    }

    /// Starts relaying `callcat_due` notifications for this store's schema into
    /// `wakeup` (see [`PostgresWakeupListener`]).
    pub async fn wakeup_listener(&self, wakeup: Wakeup) -> Result<PostgresWakeupListener> {
        let mut options = ListenerOptions::new();
        if let Some(s) = &self.db.schema {
            options = options.schema(s.clone());
        }
        PostgresWakeupListener::start(&self.db.pool, wakeup, options).await
    }
}

async fn migrate_in_schema(conn: &mut PgConnection, schema: &str) -> Result<()> {
    let q = quote_ident(schema);
    match conn
        .execute(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {q}")))
        .await
    {
        Ok(_) => {}
        // Two processes creating it at once: the loser sees a unique violation on
        // pg_namespace; the schema exists either way.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {}
        Err(e) => return Err(PgError::sqlx("creating the schema")(e)),
    }
    conn.execute(AssertSqlSafe(format!("SET search_path TO {q}")))
        .await
        .map_err(PgError::sqlx("setting search_path"))?;
    MIGRATOR
        .run(&mut *conn)
        .await
        .map_err(|e| PgError::Migrate(e).into())
}
