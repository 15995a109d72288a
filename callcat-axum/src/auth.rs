//! Authentication: an [`Authenticator`] maps a request to an [`AuthUser`] (an
//! [`Owner`] and a [`Role`]); handlers receive the [`AuthUser`] through its
//! extractor, which calls the authenticator the router was built with. A
//! refusal is a 401 in the API's error shape.
//!
//! [`JwtAuthenticator`] is the one shipped: HS256 `Authorization: Bearer
//! <token>` with claims `sub` (the user), `tenant` (default `default`), `role`
//! (`admin` sees the whole tenant) and `exp`, checked against the injected clock.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use callcat_core::{Clock, Owner};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::router::ApiState;

/// The tenant of tokens without a `tenant` claim.
pub const DEFAULT_TENANT: &str = "default";

/// What an authenticated caller may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Sees and changes their own calls and windows.
    User,
    /// Also sees every active call and the analytics of their tenant.
    Admin,
}

/// The authenticated caller: whose data they see, and their role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    /// Whose calls, transcripts and windows the caller sees.
    pub owner: Owner,
    /// What the caller may do.
    pub role: Role,
}

impl AuthUser {
    /// A caller with the [`Role::User`] role.
    pub fn user(owner: Owner) -> Self {
        AuthUser {
            owner,
            role: Role::User,
        }
    }

    /// A caller with the [`Role::Admin`] role.
    pub fn admin(owner: Owner) -> Self {
        AuthUser {
            owner,
            role: Role::Admin,
        }
    }

    /// Whether the caller is an administrator of their tenant.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Why a request was not authenticated; answered as 401 `unauthorized` with
/// this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    message: String,
}

impl AuthError {
    /// A refusal saying `message` to the client (no secrets in it).
    pub fn new(message: impl Into<String>) -> Self {
        AuthError {
            message: message.into(),
        }
    }

    /// The message answered.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::unauthorized(e.message)
    }
}

/// Maps a request to the caller it comes from. Object-safe: the router holds
/// an `Arc<dyn Authenticator>`.
///
/// ```
/// use callcat_axum::{AuthError, AuthUser, Authenticator, async_trait};
/// use callcat_core::Owner;
///
/// /// One fixed API key for one user.
/// struct ApiKey(String);
///
/// #[async_trait]
/// impl Authenticator for ApiKey {
///     async fn authenticate(&self, parts: &axum::http::request::Parts) -> Result<AuthUser, AuthError> {
///         match parts.headers.get("x-api-key") {
///             Some(k) if k.as_bytes() == self.0.as_bytes() => {
///                 Ok(AuthUser::user(Owner::new("acme", "ops")))
///             }
///             _ => Err(AuthError::new("missing or unknown X-Api-Key")),
///         }
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The caller of the request with these parts, or why it is refused (401).
    async fn authenticate(&self, parts: &Parts) -> Result<AuthUser, AuthError>;
}

impl<S> FromRequestParts<S> for AuthUser
where
    ApiState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = ApiState::from_ref(state);
        Ok(state.authenticator().authenticate(parts).await?)
    }
}

/// The bearer token of a request (`Authorization: Bearer <token>`).
pub fn bearer_token(parts: &Parts) -> Result<&str, AuthError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| AuthError::new("missing Authorization: Bearer <token>"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AuthError::new("expected Authorization: Bearer <token>"))
}

/// The token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The tenant (company/branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `admin` for administrators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

/// Authenticates `Authorization: Bearer <JWT>` signed with one HS256 secret,
/// and mints tokens (development, tests).
#[derive(Clone)]
pub struct JwtAuthenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtAuthenticator(<redacted>)")
    }
}

impl JwtAuthenticator {
    /// Keys for `secret`; expiry is judged by `clock`.
    pub fn new(secret: &[u8], clock: Arc<dyn Clock>) -> Self {
        JwtAuthenticator {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            clock,
        }
    }

    /// A token for `user` in `tenant` (with `role`), valid for `ttl` from the clock's now.
    pub fn mint(
        &self,
        user: &str,
        tenant: Option<&str>,
        role: Option<&str>,
        ttl: Duration,
    ) -> callcat_core::Result<String> {
        let exp =
            self.clock.now().timestamp() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            sub: user.to_owned(),
            tenant: tenant.map(str::to_owned),
            role: role.map(str::to_owned),
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| callcat_core::Error::internal(format!("cannot sign a token: {e}")))
    }

    /// Verifies a token: signature (HS256 only), required `sub` and `exp`, expiry.
    pub fn verify(&self, token: &str) -> Result<AuthUser, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the injected clock.
        v.validate_exp = false;
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(|e| AuthError::new(format!("invalid token: {e}")))?;
        let c = data.claims;
        if c.exp <= self.clock.now().timestamp() {
            return Err(AuthError::new("the token has expired"));
        }
        if c.sub.trim().is_empty() {
            return Err(AuthError::new("the token's sub is empty"));
        }
        let tenant = c
            .tenant
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_TENANT.to_owned());
        let owner = Owner::new(tenant, c.sub);
        Ok(match c.role.as_deref() {
            Some("admin") => AuthUser::admin(owner),
            _ => AuthUser::user(owner),
        })
    }
}

#[async_trait::async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, parts: &Parts) -> Result<AuthUser, AuthError> {
        self.verify(bearer_token(parts)?)
    }
}

#[cfg(test)]
mod tests {
    use callcat_core::ManualClock;

    use super::*;

    #[test]
    fn tokens_round_trip_and_expire_on_the_clock() {
        let clock = ManualClock::at_fixed_start();
        let keys =
            JwtAuthenticator::new(b"0123456789abcdef0123456789abcdef", Arc::new(clock.clone()));
        let t = keys
            .mint("u1", None, None, Duration::from_secs(60))
            .unwrap();
        let u = keys.verify(&t).unwrap();
        assert_eq!(u.owner, Owner::new("default", "u1"));
        assert!(!u.is_admin());
        let a = keys
            .mint("u2", Some("acme"), Some("admin"), Duration::from_secs(60))
            .unwrap();
        let u = keys.verify(&a).unwrap();
        assert_eq!(u.owner, Owner::new("acme", "u2"));
        assert!(u.is_admin());
        clock.advance(Duration::from_secs(61));
        assert_eq!(
            keys.verify(&t).unwrap_err().message(),
            "the token has expired"
        );
    }

    #[test]
    fn wrong_secret_or_missing_claims_are_rejected() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
        let a = JwtAuthenticator::new(b"0123456789abcdef0123456789abcdef", clock.clone());
        let b = JwtAuthenticator::new(b"fedcba9876543210fedcba9876543210", clock.clone());
        let t = a.mint("u1", None, None, Duration::from_secs(60)).unwrap();
        assert!(b.verify(&t).is_err());
        assert!(a.verify("not.a.token").is_err());
        // No exp claim.
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u1"}),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(a.verify(&no_exp).is_err());
    }
}
