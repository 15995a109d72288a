//! The one public error type of callcat: a kind, a message, and whether retrying can help.

use std::time::Duration;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing asked for does not exist (or is not visible to this owner).
    NotFound,
    /// Optimistic concurrency lost, or the record is in a state that forbids the operation.
    Conflict,
    /// The lifecycle forbids this move (see [`crate::lifecycle`]).
    InvalidTransition,
    /// The input is invalid; [`Error::field`] names the field when there is one.
    Validation,
    /// Too many requests; [`Error::retry_after`] says when to come back if known.
    RateLimited,
    /// Credentials or a signature were missing or wrong.
    Unauthorized,
    /// A dependency (database, provider) could not be reached or failed transiently.
    Unavailable,
    /// A provider refused the request for good (invalid number, bad agent id, ...).
    Rejected,
    /// The backend or provider does not support this operation.
    Unsupported,
    /// Encrypted data could not be decrypted or authenticated.
    Crypto,
    /// A bug or an unexpected state inside callcat or a backend.
    Internal,
}

impl ErrorKind {
    /// Whether trying the same operation again later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Conflict | ErrorKind::RateLimited | ErrorKind::Unavailable
        )
    }

    /// A stable lower-case code for logs and APIs (`not_found`, `conflict`, ...).
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidTransition => "invalid_transition",
            ErrorKind::Validation => "validation",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Crypto => "crypto",
            ErrorKind::Internal => "internal",
        }
    }
}

/// The error returned by every fallible callcat operation.
///
/// Adapters keep their own private error enums and convert them into this type,
/// naming themselves in [`Error::source_name`] (`"postgres"`, `"retell"`, ...).
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", source_name.map(|s| format!("{s}: ")).unwrap_or_default(), kind.code())]
pub struct Error {
    kind: ErrorKind,
    message: String,
    field: Option<String>,
    source_name: Option<&'static str>,
    retry_after: Option<Duration>,
    retryable: Option<bool>,
    maybe_delivered: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with callcat's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            field: None,
            source_name: None,
            retry_after: None,
            retryable: None,
            maybe_delivered: false,
            source: None,
        }
    }

    /// `NotFound` with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// `Conflict` with a message.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// `Validation` naming the offending field.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Validation, message).with_field(field)
    }

    /// `Internal` with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// `Unavailable` with a message.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Names the input field this error is about.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Names the backend or provider that failed (`"postgres"`, `"retell"`, ...).
    pub fn with_source_name(mut self, name: &'static str) -> Self {
        self.source_name = Some(name);
        self
    }

    /// Attaches the time the other side asked us to wait, capped at
    /// [`crate::time::MAX_RETRY_AFTER`] (1 day): a provider's `Retry-After` never
    /// parks a call, a poll or a delivery for longer.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(crate::time::clamp_retry_after(after));
        self
    }

    /// Overrides whether retrying can help (by default it follows the kind).
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = Some(retryable);
        self
    }

    /// Marks a failed request that may nevertheless have reached the other side
    /// (a timeout after the request was sent). A dial failing this way is never
    /// retried blindly: the scheduler reconciles or fails it (at-most-once).
    pub fn with_maybe_delivered(mut self) -> Self {
        self.maybe_delivered = true;
        self
    }

    /// Whether the failed request may have reached the other side anyway.
    pub fn maybe_delivered(&self) -> bool {
        self.maybe_delivered
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message (without the kind or source prefix).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The input field this error is about, if any.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The backend or provider that failed, if any.
    pub fn source_name(&self) -> Option<&'static str> {
        self.source_name
    }

    /// How long the other side asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable.unwrap_or_else(|| self.kind.is_retryable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_source_and_kind() {
        let e = Error::unavailable("connection refused").with_source_name("postgres");
        assert_eq!(e.to_string(), "postgres: unavailable: connection refused");
        assert!(e.is_retryable());
        let e = Error::validation("phoneNumber", "not a number");
        assert_eq!(e.to_string(), "validation: not a number");
        assert_eq!(e.field(), Some("phoneNumber"));
        assert!(!e.is_retryable());
        assert!(!Error::unavailable("x").with_retryable(false).is_retryable());
    }
}
