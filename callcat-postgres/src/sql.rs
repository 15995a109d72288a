//! SQL fragments shared by the stores: status predicates (repeated verbatim from
//! the partial indexes in the migration) and schema-qualified table names.

#[cfg(test)]
use callcat_core::CallStatus;

/// Claimable statuses: `calls_due_idx` and the NOTIFY trigger.
pub(crate) const CLAIMABLE: &str = "status IN ('SCHEDULED', 'RETRY_PENDING', 'DISPATCHING')";
/// Upcoming-view statuses: `calls_owner_upcoming_idx`.
pub(crate) const UPCOMING: &str = "status IN ('SCHEDULED', 'DISPATCHING', 'RINGING', 'IN_PROGRESS', 'RETRY_PENDING', 'CANCELING')";
/// Finished-view statuses: `calls_owner_finished_idx`.
pub(crate) const FINISHED: &str = "status IN ('COMPLETED', 'FAILED', 'CANCELED', 'EXPIRED')";
/// Active statuses: `calls_tenant_active_idx`, `calls_active_idx`.
pub(crate) const ACTIVE: &str = "status IN ('DISPATCHING', 'RINGING', 'IN_PROGRESS', 'CANCELING')";

/// The embedded migration, for the consistency test.
#[cfg(test)]
const MIGRATION: &str = include_str!("../migrations/0001_callcat_init.sql");
/// The phone blind-index migration, for the same check.
#[cfg(test)]
const MIGRATION_2: &str = include_str!("../migrations/0002_callcat_phone_index.sql");

/// Schema-qualified table names (unqualified when no schema is configured, so
/// they resolve through the connection's `search_path`).
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    pub(crate) calls: String,
    pub(crate) transcripts: String,
    pub(crate) windows: String,
    pub(crate) do_not_call: String,
}

impl Tables {
    /// `schema` must already be validated by [`validate_schema`].
    pub(crate) fn new(schema: Option<&str>) -> Self {
        let q = |t: &str| match schema {
            Some(s) => format!("{}.{t}", quote_ident(s)),
            None => t.to_owned(),
        };
        Tables {
            calls: q("calls"),
            transcripts: q("transcripts"),
            windows: q("call_windows"),
            do_not_call: q("do_not_call"),
        }
    }
}

/// Double-quotes an identifier (doubling any quote inside).
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A schema name is 1 to 63 ASCII letters, digits and underscores, not starting
/// with a digit (so it never needs care beyond quoting and is the same in any case).
pub(crate) fn validate_schema(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schema {s:?} must be 1 to 63 ASCII letters, digits or underscores, not starting with a digit"
        ))
    }
}

/// The SQL literal list of statuses matching `pred`, e.g. for a CHECK.
#[cfg(test)]
fn status_list(pred: fn(CallStatus) -> bool, order: &[CallStatus]) -> String {
    let names: Vec<String> = order
        .iter()
        .copied()
        .filter(|s| pred(*s))
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("status IN ({})", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use CallStatus::*;

    #[test]
    fn predicates_match_the_core_status_sets() {
        assert_eq!(
            CLAIMABLE,
            status_list(
                CallStatus::is_claimable,
                &[Scheduled, RetryPending, Dispatching]
            )
        );
        assert_eq!(
            UPCOMING,
            status_list(CallStatus::is_upcoming, &CallStatus::ALL)
        );
        assert_eq!(
            FINISHED,
            status_list(CallStatus::is_terminal, &CallStatus::ALL)
        );
        assert_eq!(ACTIVE, status_list(CallStatus::is_active, &CallStatus::ALL));
    }

    #[test]
    fn predicates_match_the_migration_verbatim() {
        for p in [CLAIMABLE, UPCOMING, FINISHED, ACTIVE] {
            assert!(MIGRATION.contains(p), "migration lacks `{p}`");
        }
        assert!(
            MIGRATION_2.contains(&format!("WHERE {ACTIVE} AND phone_index IS NOT NULL")),
            "calls_active_phone_idx lacks the active predicate"
        );
    }

    #[test]
    fn schema_names_are_validated_and_quoted() {
        assert!(validate_schema("callcat_test_1").is_ok());
        assert!(validate_schema("").is_err());
        assert!(validate_schema("1abc").is_err());
        assert!(validate_schema("a\"; DROP").is_err());
        assert!(validate_schema(&"a".repeat(64)).is_err());
        assert_eq!(Tables::new(Some("s1")).calls, "\"s1\".calls");
        assert_eq!(Tables::new(None).windows, "call_windows");
        assert_eq!(Tables::new(Some("s1")).do_not_call, "\"s1\".do_not_call");
    }
}
