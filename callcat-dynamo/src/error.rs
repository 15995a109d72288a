//! The crate's private error type and its conversion into [`callcat_core::Error`].

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use callcat_core::{Error, ErrorKind};

/// The name every error of this crate carries in [`Error::source_name`].
pub(crate) const SOURCE: &str = "dynamo";

/// Everything that can go wrong inside this crate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DynamoError {
    /// A compare-and-swap or uniqueness condition did not hold.
    #[error("{0}")]
    Conflict(String),
    /// The record is not there.
    #[error("{0}")]
    NotFound(String),
    /// DynamoDB throttled the request (capacity or request rate).
    #[error("{op}: throttled: {message}")]
    Throttled { op: &'static str, message: String },
    /// DynamoDB rejected the credentials or the caller lacks a permission.
    #[error("{op}: access denied: {message}")]
    Unauthorized { op: &'static str, message: String },
    /// DynamoDB refused the request as invalid (for instance an item over 400 KB).
    #[error("{op}: rejected as invalid: {message}")]
    Invalid { op: &'static str, message: String },
    /// A table or index is missing.
    #[error("{op}: table or index not found: {message}")]
    MissingTable { op: &'static str, message: String },
    /// The service failed or could not be reached.
    #[error("{op}: {message}")]
    Unavailable {
        op: &'static str,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// A stored item could not be read back (corrupt or written by something else).
    #[error("stored item is not valid: {0}")]
    Corrupt(String),
    /// The input cannot be stored.
    #[error("{message}")]
    Validation {
        field: &'static str,
        message: String,
    },
    /// The store is misconfigured.
    #[error("configuration: {0}")]
    Config(String),
    /// A core error (sealing or opening a record: `ErrorKind::Crypto` and the like).
    #[error("{0}")]
    Core(Error),
}

impl DynamoError {
    /// Classifies an SDK error from operation `op`.
    pub(crate) fn sdk<E, R>(op: &'static str, err: SdkError<E, R>) -> DynamoError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let code = err.code().map(str::to_owned);
        let message = err
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string());
        match code.as_deref() {
            Some("ConditionalCheckFailedException") => DynamoError::Conflict(message),
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "LimitExceededException",
            ) => DynamoError::Throttled { op, message },
            Some(
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "MissingAuthenticationTokenException"
                | "ExpiredTokenException"
                | "IncompleteSignatureException",
            ) => DynamoError::Unauthorized { op, message },
            Some("ResourceNotFoundException") => DynamoError::MissingTable { op, message },
            Some("ValidationException" | "ItemCollectionSizeLimitExceededException") => {
                DynamoError::Invalid { op, message }
            }
            Some("TransactionConflictException" | "TransactionInProgressException") => {
                DynamoError::Conflict(format!("{op}: {message}"))
            }
            _ => DynamoError::Unavailable {
                op,
                message,
                source: Some(Box::new(err)),
            },
        }
    }
}

impl From<DynamoError> for Error {
    fn from(e: DynamoError) -> Error {
        let message = e.to_string();
        let err = match e {
            DynamoError::Conflict(_) => Error::conflict(message),
            DynamoError::NotFound(_) => Error::not_found(message),
            DynamoError::Throttled { .. } => Error::new(ErrorKind::RateLimited, message),
            DynamoError::Unauthorized { .. } => Error::new(ErrorKind::Unauthorized, message),
            DynamoError::Invalid { .. } => Error::new(ErrorKind::Validation, message),
            DynamoError::MissingTable { .. } => Error::unavailable(message).with_retryable(false),
            DynamoError::Unavailable { source, .. } => match source {
                Some(s) => Error::unavailable(message).with_source(BoxedSource(s)),
                None => Error::unavailable(message),
            },
            DynamoError::Corrupt(_) => Error::internal(message),
            DynamoError::Validation { field, .. } => Error::validation(field, message),
            DynamoError::Config(_) => Error::new(ErrorKind::Validation, message),
            DynamoError::Core(e) => e,
        };
        err.with_source_name(SOURCE)
    }
}

/// Carries a boxed error as a concrete `Error` type (core's `with_source` takes one).
#[derive(Debug)]
struct BoxedSource(Box<dyn std::error::Error + Send + Sync + 'static>);

impl std::fmt::Display for BoxedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BoxedSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// `Result` with the crate's private error.
pub(crate) type DResult<T> = std::result::Result<T, DynamoError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_core_kinds_and_name_the_backend() {
        let cases = [
            (DynamoError::Conflict("x".into()), ErrorKind::Conflict),
            (DynamoError::NotFound("x".into()), ErrorKind::NotFound),
            (
                DynamoError::Throttled {
                    op: "Query",
                    message: "slow down".into(),
                },
                ErrorKind::RateLimited,
            ),
            (
                DynamoError::Unavailable {
                    op: "GetItem",
                    message: "connection refused".into(),
                    source: None,
                },
                ErrorKind::Unavailable,
            ),
            (DynamoError::Corrupt("bad json".into()), ErrorKind::Internal),
        ];
        for (e, kind) in cases {
            let core: Error = e.into();
            assert_eq!(core.kind(), kind);
            assert_eq!(core.source_name(), Some("dynamo"));
        }
        let missing: Error = DynamoError::MissingTable {
            op: "GetItem",
            message: "no table".into(),
        }
        .into();
        assert_eq!(missing.kind(), ErrorKind::Unavailable);
        assert!(!missing.is_retryable());
    }
}
