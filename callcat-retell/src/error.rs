//! How Retell's HTTP answers and transport failures become callcat errors.

use std::time::Duration;

use callcat_core::chrono::{DateTime, NaiveDateTime, Utc};
use callcat_core::{Error, ErrorKind};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::wire::ErrorBody;

/// The name this crate gives itself in errors.
pub(crate) const SOURCE: &str = "retell";

/// Everything that can go wrong talking to Retell's REST API.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RetellError {
    /// HTTP 429.
    #[error("Retell rate limit reached (HTTP 429): {message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    /// HTTP 5xx.
    #[error("Retell failed (HTTP {status}): {message}")]
    Server {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// HTTP 401 or 403.
    #[error("Retell refused the API key (HTTP {status}): {message}")]
    Unauthorized { status: u16, message: String },
    /// HTTP 404 for an operation on a call id.
    #[error("Retell has no call {call_id:?}: {message}")]
    NotFound { call_id: String, message: String },
    /// Any other 4xx.
    #[error("Retell rejected the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    /// The request timed out.
    #[error("request to Retell timed out")]
    Timeout(#[source] reqwest::Error),
    /// The connection could not be made.
    #[error("could not connect to Retell")]
    Connect(#[source] reqwest::Error),
    /// Another transport failure (connection reset, broken body, ...).
    #[error("request to Retell failed")]
    Transport(#[source] reqwest::Error),
    /// A 2xx response whose body is not what Retell documents.
    #[error("Retell sent a response callcat cannot read: {0}")]
    Decode(String),
    /// The call cannot be sent as asked (checked before any request).
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Building the HTTP client failed.
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl From<RetellError> for Error {
    fn from(e: RetellError) -> Error {
        let message = e.to_string();
        let err = match &e {
            RetellError::RateLimited { retry_after, .. } => {
                with_retry_after(Error::new(ErrorKind::RateLimited, message), *retry_after)
            }
            RetellError::Server { retry_after, .. } => {
                with_retry_after(Error::new(ErrorKind::Unavailable, message), *retry_after)
            }
            RetellError::Unauthorized { .. } => Error::new(ErrorKind::Unauthorized, message),
            RetellError::NotFound { .. } => Error::new(ErrorKind::NotFound, message),
            RetellError::Rejected { .. } => Error::new(ErrorKind::Rejected, message),
            // The request never left: safe to retry.
            RetellError::Connect(_) => Error::new(ErrorKind::Unavailable, message),
            // Sent, answer lost: Retell may have placed the call, so the scheduler
            // reconciles or fails it instead of dialing again.
            RetellError::Timeout(_) | RetellError::Transport(_) => {
                Error::new(ErrorKind::Unavailable, message).with_maybe_delivered()
            }
            // A success answer that does not parse: the call may exist.
            RetellError::Decode(_) => {
                Error::new(ErrorKind::Internal, message).with_maybe_delivered()
            }
            RetellError::Client(_) => Error::new(ErrorKind::Internal, message),
            RetellError::Invalid { field, .. } => Error::validation(*field, message),
        };
        err.with_source_name(SOURCE).with_source(e)
    }
}

fn with_retry_after(e: Error, after: Option<Duration>) -> Error {
    match after {
        Some(d) => e.with_retry_after(d),
        None => e,
    }
}

/// What the failed request was about, for errors that depend on it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// Creating a call: a 404 means a wrong agent or number, not a missing call.
    Create,
    /// An operation on an existing call: a 404 means there is no such call.
    Call(&'a str),
}

/// Maps a non-2xx answer from Retell.
pub(crate) fn from_status(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    target: Target<'_>,
    now: DateTime<Utc>,
) -> RetellError {
    let message = error_message(status, body);
    let retry_after = || {
        headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now))
    };
    let code = status.as_u16();
    match (code, target) {
        (429, _) => RetellError::RateLimited {
            message,
            retry_after: retry_after(),
        },
        (500..=599, _) => RetellError::Server {
            status: code,
            message,
            retry_after: retry_after(),
        },
        (401 | 403, _) => RetellError::Unauthorized {
            status: code,
            message,
        },
        (404, Target::Call(id)) => RetellError::NotFound {
            call_id: id.to_owned(),
            message,
        },
        _ => RetellError::Rejected {
            status: code,
            message,
        },
    }
}

/// Maps a transport failure.
pub(crate) fn from_reqwest(e: reqwest::Error) -> RetellError {
    if e.is_timeout() {
        RetellError::Timeout(e)
    } else if e.is_connect() {
        RetellError::Connect(e)
    } else if e.is_builder() {
        RetellError::Client(e)
    } else {
        RetellError::Transport(e)
    }
}

/// Retell's message from an error body; the raw text (shortened) when it is not
/// JSON; the status's reason phrase when the body is empty.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Some(m) = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.message())
    {
        return m;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() || text.starts_with('{') {
        return status.canonical_reason().unwrap_or("no message").to_owned();
    }
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (IMF-fixdate, and the
/// obsolete RFC 850 and asctime forms). A date in the past means "now".
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = DateTime::parse_from_rfc2822(v)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
                .map(|n| n.and_utc())
        })?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now()),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(parse_retry_after("", now()), None);
    }

    #[test]
    fn message_falls_back_on_text_then_reason() {
        assert_eq!(
            error_message(
                StatusCode::BAD_REQUEST,
                br#"{"message":"to_number invalid"}"#
            ),
            "to_number invalid"
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, b"<html>upstream down</html>"),
            "<html>upstream down</html>"
        );
        assert_eq!(error_message(StatusCode::BAD_REQUEST, b""), "Bad Request");
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, br#"{"status":"error"}"#),
            "Bad Request"
        );
        let long = "x".repeat(1000);
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, long.as_bytes())
                .chars()
                .count(),
            301
        );
    }

    #[test]
    fn statuses_map_to_kinds() {
        let kind = |code: u16, target| {
            let e: Error = from_status(
                StatusCode::from_u16(code).unwrap(),
                &HeaderMap::new(),
                b"",
                target,
                now(),
            )
            .into();
            (e.kind(), e.is_retryable())
        };
        assert_eq!(kind(429, Target::Create), (ErrorKind::RateLimited, true));
        assert_eq!(kind(503, Target::Create), (ErrorKind::Unavailable, true));
        assert_eq!(kind(401, Target::Create), (ErrorKind::Unauthorized, false));
        assert_eq!(kind(403, Target::Create), (ErrorKind::Unauthorized, false));
        assert_eq!(kind(404, Target::Call("c")), (ErrorKind::NotFound, false));
        assert_eq!(kind(404, Target::Create), (ErrorKind::Rejected, false));
        assert_eq!(kind(402, Target::Create), (ErrorKind::Rejected, false));
        assert_eq!(kind(422, Target::Create), (ErrorKind::Rejected, false));
    }

    #[test]
    fn a_huge_retry_after_is_capped_at_a_day() {
        for value in ["18446744073709551615", "Fri, 31 Dec 9999 23:59:59 GMT"] {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, value.parse().expect("header"));
            let e: Error = from_status(
                StatusCode::TOO_MANY_REQUESTS,
                &headers,
                b"",
                Target::Create,
                now(),
            )
            .into();
            assert_eq!(
                e.retry_after(),
                Some(callcat_core::time::MAX_RETRY_AFTER),
                "{value}"
            );
        }
    }
}
