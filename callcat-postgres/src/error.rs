//! The crate's private error type and its conversion into [`callcat_core::Error`].

use callcat_core::{Error, ErrorKind};

/// Names this backend in every error it returns.
pub(crate) const SOURCE: &str = "postgres";

/// What can go wrong inside this crate, before it becomes a core [`Error`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum PgError {
    /// A query, connection or pool error from sqlx.
    #[error("{context}: {source}")]
    Sqlx {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// Running the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored record could not be read back or a value could not be encoded.
    #[error("{context}: {source}")]
    Json {
        context: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The options are invalid.
    #[error("{message}")]
    Config {
        field: &'static str,
        message: String,
    },
}

impl PgError {
    pub(crate) fn sqlx(context: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
        move |source| PgError::Sqlx { context, source }.into()
    }

    pub(crate) fn json(context: &'static str) -> impl FnOnce(serde_json::Error) -> Error {
        move |source| PgError::Json { context, source }.into()
    }
}

/// SQLSTATE classes and codes (PostgreSQL appendix A) that decide the kind.
fn kind_of_sqlstate(code: &str) -> ErrorKind {
    match code {
        // unique_violation, exclusion_violation, serialization_failure, deadlock_detected
        "23505" | "23P01" | "40001" | "40P01" => ErrorKind::Conflict,
        // lock_not_available, query_canceled (statement timeout)
        "55P03" | "57014" => ErrorKind::Unavailable,
        // not_null / foreign_key / check violations: a row we built is wrong.
        "23502" | "23503" | "23514" => ErrorKind::Internal,
        _ => match &code[..code.len().min(2)] {
            // connection exception, insufficient resources, operator intervention
            // (admin shutdown, crash shutdown, cannot connect now), system error
            "08" | "53" | "57" | "58" => ErrorKind::Unavailable,
            // data exception (value out of range, invalid text representation, ...)
            "22" => ErrorKind::Validation,
            // invalid authorization specification
            "28" => ErrorKind::Unauthorized,
            _ => ErrorKind::Internal,
        },
    }
}

fn kind_of_sqlx(e: &sqlx::Error) -> ErrorKind {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .map(|c| kind_of_sqlstate(&c))
            .unwrap_or(ErrorKind::Internal),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorKind::Unavailable,
        sqlx::Error::Configuration(_) => ErrorKind::Validation,
        sqlx::Error::RowNotFound => ErrorKind::NotFound,
        _ => ErrorKind::Internal,
    }
}

/// A friendlier message for the unique constraints the schema defines.
fn constraint_message(e: &sqlx::Error) -> Option<&'static str> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    Some(match db.constraint()? {
        "calls_pkey" => "a call with this id already exists",
        "calls_provider_call_id_key" => "provider call id already belongs to another call",
        "calls_idempotency_key" => "this owner already used the idempotency key for another call",
        "call_windows_pkey" => "a window with this id already exists",
        "transcripts_pkey" => "a transcript for this call already exists",
        _ => return None,
    })
}

/// undefined_table / undefined_function: the schema has not been migrated.
fn is_unmigrated(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("42P01" | "42883")))
}

impl From<PgError> for Error {
    fn from(e: PgError) -> Error {
        let (kind, message, field) = match &e {
            PgError::Sqlx { context, source } => (
                kind_of_sqlx(source),
                match constraint_message(source) {
                    Some(m) => format!("{context}: {m}"),
                    None if is_unmigrated(source) => {
                        format!("{e} (has PostgresStore::migrate run for this schema?)")
                    }
                    None => e.to_string(),
                },
                None,
            ),
            PgError::Migrate(m) => (
                match m {
                    sqlx::migrate::MigrateError::Execute(s) => kind_of_sqlx(s),
                    _ => ErrorKind::Internal,
                },
                e.to_string(),
                None,
            ),
            PgError::Json { .. } => (ErrorKind::Internal, e.to_string(), None),
            PgError::Config { field, message } => {
                (ErrorKind::Validation, message.clone(), Some(*field))
            }
        };
        let mut out = Error::new(kind, message).with_source_name(SOURCE);
        if let Some(f) = field {
            out = out.with_field(f);
        }
        out.with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_kinds() {
        assert_eq!(kind_of_sqlstate("23505"), ErrorKind::Conflict);
        assert_eq!(kind_of_sqlstate("40001"), ErrorKind::Conflict);
        assert_eq!(kind_of_sqlstate("08006"), ErrorKind::Unavailable);
        assert_eq!(kind_of_sqlstate("57P01"), ErrorKind::Unavailable);
        assert_eq!(kind_of_sqlstate("53300"), ErrorKind::Unavailable);
        assert_eq!(kind_of_sqlstate("22P02"), ErrorKind::Validation);
        assert_eq!(kind_of_sqlstate("28P01"), ErrorKind::Unauthorized);
        assert_eq!(kind_of_sqlstate("42601"), ErrorKind::Internal);
        assert_eq!(kind_of_sqlstate("X"), ErrorKind::Internal);
    }

    #[test]
    fn io_and_pool_errors_are_retryable_and_named() {
        let e: Error = PgError::Sqlx {
            context: "claiming due calls",
            source: sqlx::Error::PoolTimedOut,
        }
        .into();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert_eq!(e.source_name(), Some("postgres"));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e: Error = PgError::Sqlx {
            context: "connecting",
            source: sqlx::Error::Io(io),
        }
        .into();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn config_errors_name_the_field() {
        let e: Error = PgError::Config {
            field: "schema",
            message: "bad".into(),
        }
        .into();
        assert_eq!(e.kind(), ErrorKind::Validation);
        assert_eq!(e.field(), Some("schema"));
        assert_eq!(e.source_name(), Some("postgres"));
    }
}
