//! Errors as HTTP responses: `{"error": {"code", "message", "field"?}}`, with the
//! status chosen from the core [`ErrorKind`], and a JSON body extractor whose
//! rejections use the same shape.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use callcat_core::{Error, ErrorKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code: `validation`, `not_found`, `conflict`, `invalid_transition`,
    /// `unauthorized`, `rate_limited`, `unavailable`, `malformed_json`,
    /// `payload_too_large`, `route_not_found`, ...
    pub code: String,
    /// A human-readable message.
    pub message: String,
    /// The request field this is about (`phoneNumber`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    field: Option<String>,
    retry_after: Option<u64>,
}

/// `Result` for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// The HTTP status for a core error kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict | ErrorKind::InvalidTransition => StatusCode::CONFLICT,
        ErrorKind::Validation => StatusCode::BAD_REQUEST,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 400 naming a field.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "validation", message);
        e.field = Some(field.into());
        e
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: authenticated, but not allowed to do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 with a message written for the client (it is answered as is, so
    /// it must hold no dependency's error text); the client may retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The status answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code (`validation`, `not_found`, ...).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The message answered.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The request field this is about, if any.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = status_of(e.kind());
        // A server-side error's text (a database's or a provider's) never
        // reaches the client: it is logged under an id the client is given.
        let message = if status == StatusCode::SERVICE_UNAVAILABLE {
            let id = uuid::Uuid::now_v7();
            tracing::warn!(error = %e, error_id = %id, "dependency unavailable");
            format!("temporarily unavailable; try again (error id {id})")
        } else if status.is_server_error() {
            let id = uuid::Uuid::now_v7();
            tracing::error!(error = %e, error_id = %id, "request failed");
            format!("internal error (error id {id})")
        } else {
            e.message().to_owned()
        };
        ApiError {
            status,
            code: e.kind().code().to_owned(),
            message,
            field: e.field().map(str::to_owned),
            retry_after: e.retry_after().map(|d| d.as_secs().max(1)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// A JSON request body. Malformed JSON is a 400 `malformed_json`, a wrong field
/// a 400 `validation` naming the field, a body over the limit a 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
                status => ApiError::new(status, "bad_request", rejection.body_text()),
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// 413 in the error shape.
pub fn payload_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is over the size limit",
    )
}

/// Parses a JSON body, naming the field when the problem is in one. A field
/// the request does not have is a 400 naming it (a misspelled `scheduledAt`
/// must not silently mean "now").
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut unknown = BTreeSet::new();
    let mut note = |p: serde_ignored::Path<'_>| {
        unknown.insert(clean_path(&p.to_string()));
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, &mut note))
        .map_err(|e| deserialize_error(e, || culprit::<T>(bytes)))?;
    reject_unknown(&unknown)?;
    Ok(value)
}

/// Reads `T` from an already parsed JSON value, naming the field when the
/// problem is in one (as [`parse_json`]), and rejecting unknown fields.
pub fn from_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    let (v, unknown) = from_value_noting_unknown(value)?;
    reject_unknown(&unknown)?;
    Ok(v)
}

/// [`from_value`] that returns the paths of the fields `T` does not have
/// instead of rejecting them (for a body read as several parts: a field is
/// unknown only when no part has it).
pub fn from_value_noting_unknown<T: DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<(T, BTreeSet<String>), ApiError> {
    let mut unknown = BTreeSet::new();
    let mut note = |p: serde_ignored::Path<'_>| {
        unknown.insert(clean_path(&p.to_string()));
    };
    let v = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut note))
        .map_err(|e| deserialize_error(e, || None))?;
    Ok((v, unknown))
}

/// serde_ignored's path without its `?` steps (an `Option`'s `Some`).
fn clean_path(p: &str) -> String {
    p.split('.')
        .filter(|s| *s != "?" && !s.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

/// 400 naming the first unknown field, if any.
pub fn reject_unknown(unknown: &BTreeSet<String>) -> Result<(), ApiError> {
    match unknown.iter().next() {
        // Seed 001's PUT took a `status`: here the lifecycle owns it.
        Some(field) if field == "status" => Err(ApiError::validation(
            "status",
            "unknown field `status`: a call's status follows from its progress; \
             cancel with POST /api/calls/{callId}/cancel",
        )),
        Some(field) => Err(ApiError::validation(
            field.clone(),
            format!("unknown field `{field}`"),
        )),
        None => Ok(()),
    }
}

/// The answer to a body that does not deserialize; `fallback` names the field
/// when serde's path does not (a flattened struct loses it).
fn deserialize_error(
    e: serde_path_to_error::Error<serde_json::Error>,
    fallback: impl FnOnce() -> Option<String>,
) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {inner}"),
        );
    }
    let msg = inner.to_string();
    let field = if path == "." || path.is_empty() {
        missing_field(&msg).or_else(fallback).unwrap_or_default()
    } else {
        path
    };
    if field.is_empty() {
        ApiError::new(StatusCode::BAD_REQUEST, "validation", msg)
    } else {
        ApiError::validation(field, msg)
    }
}

/// Most top-level fields [`culprit`] looks through.
const MAX_CULPRIT_FIELDS: usize = 64;

/// The top-level field a type error is about, when serde could not say (a
/// `#[serde(flatten)]`ed struct loses the path): the first field whose removal
/// changes the error. Only run for bodies that already failed.
fn culprit<T: DeserializeOwned>(bytes: &[u8]) -> Option<String> {
    let serde_json::Value::Object(map) = serde_json::from_slice(bytes).ok()? else {
        return None;
    };
    // One retry per field: bounded, so a body of many fields costs no more.
    if map.len() > MAX_CULPRIT_FIELDS {
        return None;
    }
    let error_of = |m: serde_json::Map<String, serde_json::Value>| {
        serde_json::from_value::<T>(serde_json::Value::Object(m))
            .err()
            .map(|e| e.to_string())
    };
    let original = error_of(map.clone())?;
    map.keys().find_map(|k| {
        let mut without = map.clone();
        without.remove(k);
        (error_of(without).as_deref() != Some(original.as_str())).then(|| k.clone())
    })
}

/// serde's "missing field `x`" names the field only in the message.
fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// The fallback: an unknown route, in the error shape.
pub async fn route_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

/// Middleware: gives error responses that did not come from our handlers (unknown
/// routes, wrong methods, the body-limit layer) the JSON error shape.
pub async fn json_errors(req: Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("route_not_found", "no such route".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take that method".to_owned(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => return payload_too_large().into_response(),
        s => (
            "http_error",
            s.canonical_reason().unwrap_or("error").to_owned(),
        ),
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = resp.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Body {
        callee_name: String,
        max_attempts: Option<u32>,
    }

    #[test]
    fn json_errors_name_fields() {
        let e = parse_json::<Body>(b"{not json").unwrap_err();
        assert_eq!(e.code, "malformed_json");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_json::<Body>(b"{}").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("calleeName"));
        let e = parse_json::<Body>(br#"{"calleeName":"a","maxAttempts":"x"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("maxAttempts"));
        assert!(parse_json::<Body>(br#"{"calleeName":"a"}"#).is_ok());
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Flattened {
        #[serde(flatten)]
        inner: Body,
        subject: Option<String>,
    }

    #[test]
    fn json_errors_name_fields_of_flattened_structs() {
        let e = parse_json::<Flattened>(br#"{"calleeName":"a","maxAttempts":"x"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("maxAttempts"), "{}", e.message);
        let e = parse_json::<Flattened>(br#"{"maxAttempts":"x","calleeName":"a","subject":1}"#)
            .unwrap_err();
        assert!(
            matches!(e.field.as_deref(), Some("maxAttempts" | "subject")),
            "{e:?}"
        );
        let e = parse_json::<Flattened>(br#"{"maxAttempts":"x"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("maxAttempts"), "{}", e.message);
        let e = parse_json::<Flattened>(br#"{"calleeName":"a","subject":["x"]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subject"), "{}", e.message);
    }

    #[test]
    fn kinds_map_to_statuses() {
        assert_eq!(status_of(ErrorKind::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            status_of(ErrorKind::InvalidTransition),
            StatusCode::CONFLICT
        );
        assert_eq!(status_of(ErrorKind::Conflict), StatusCode::CONFLICT);
        assert_eq!(status_of(ErrorKind::Validation), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(ErrorKind::Unauthorized), StatusCode::UNAUTHORIZED);
        assert_eq!(
            status_of(ErrorKind::RateLimited),
            StatusCode::TOO_MANY_REQUESTS
        );
        let e = ApiError::from(Error::internal("secret detail"));
        assert!(
            e.message.starts_with("internal error (error id "),
            "{}",
            e.message
        );
        for e in [
            Error::unavailable("connection to postgres://u:hunter2@db refused"),
            Error::internal("relation \"calls\" does not exist"),
            Error::new(ErrorKind::Unsupported, "x").with_source_name("postgres"),
        ] {
            let kind = e.kind();
            let a = ApiError::from(e);
            assert!(a.status.is_server_error(), "{kind:?}");
            for leak in ["hunter2", "postgres", "relation"] {
                assert!(!a.message.contains(leak), "{kind:?}: {}", a.message);
            }
        }
        let a = ApiError::from(Error::unavailable("db down"));
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(a.message.starts_with("temporarily unavailable"));
    }
}
