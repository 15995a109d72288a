//! Authentication: an [`Authenticator`] maps a request to an [`AuthUser`] (an
//! [`Owner`] and a [`Role`]); handlers receive the [`AuthUser`] through its
//! extractor, which calls the authenticator the router was built with. A
//! refusal is a 401 in the API's error shape.
//!
//! [`JwtAuthenticator`] is the one shipped: HS256 `Authorization: Bearer
//! <token>` with claims `sub` (the user), `tenant` (default `default`), `role`
//! (`admin` sees the whole tenant) and `exp`, checked against the injected clock;
//! optionally `iss` and `aud` are required, and a token may not live longer than
//! a maximum lifetime (30 days by default).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use callcat_core::chrono::{DateTime, Utc};
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
    /// When the caller's credential stops being valid (a token's `exp`), if it
    /// does: long-lived responses such as the event stream end at that instant.
    pub expires_at: Option<DateTime<Utc>>,
}

impl AuthUser {
    /// A caller with the [`Role::User`] role.
    pub fn user(owner: Owner) -> Self {
        AuthUser {
            owner,
            role: Role::User,
            expires_at: None,
        }
    }

    /// A caller with the [`Role::Admin`] role.
    pub fn admin(owner: Owner) -> Self {
        AuthUser {
            owner,
            role: Role::Admin,
            expires_at: None,
        }
    }

    /// The same caller, whose credential expires at `at`.
    pub fn expiring_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self
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
    /// Issued at, seconds since the epoch (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// The issuer (required and checked when the authenticator names one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The audience (required and checked when the authenticator names one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// The longest a token may live (its `exp` ahead of now, or of its `iat`)
/// unless changed with [`JwtAuthenticator::max_lifetime`]: 30 days.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// How far in the future an `iat` may be (clock skew between issuer and us).
const IAT_LEEWAY_SECONDS: i64 = 60;

/// Authenticates `Authorization: Bearer <JWT>` signed with one HS256 secret,
/// and mints tokens (development, tests).
#[derive(Clone)]
pub struct JwtAuthenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    clock: Arc<dyn Clock>,
    issuer: Option<String>,
    audience: Option<String>,
    max_lifetime: Duration,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_lifetime", &self.max_lifetime)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    /// Keys for `secret`; expiry is judged by `clock`.
    pub fn new(secret: &[u8], clock: Arc<dyn Clock>) -> Self {
        JwtAuthenticator {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            clock,
            issuer: None,
            audience: None,
            max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        }
    }

    /// Requires tokens to carry `iss` equal to `issuer` (minted tokens carry it).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires tokens to carry `aud` naming `audience` (minted tokens carry it).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Refuses tokens whose `exp` is more than `lifetime` ahead of now (or of
    /// their `iat`): a leaked long-lived token is not valid for years.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// A token for `user` in `tenant` (with `role`), valid for `ttl` from the clock's now.
    pub fn mint(
        &self,
        user: &str,
        tenant: Option<&str>,
        role: Option<&str>,
        ttl: Duration,
    ) -> callcat_core::Result<String> {
        let now = self.clock.now().timestamp();
        let exp = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2));
        let claims = Claims {
            sub: user.to_owned(),
            tenant: tenant.map(str::to_owned),
            role: role.map(str::to_owned),
            exp,
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| callcat_core::Error::internal(format!("cannot sign a token: {e}")))
    }

    /// Verifies a token: signature (HS256 only), required `sub` and `exp`,
    /// expiry, lifetime, `iat` not in the future, and `iss`/`aud` when configured.
    pub fn verify(&self, token: &str) -> Result<AuthUser, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the injected clock.
        v.validate_exp = false;
        let mut required = vec!["exp", "sub"];
        match &self.issuer {
            Some(iss) => {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            None => v.iss = None,
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.decoding, &v)
            .map_err(|e| AuthError::new(format!("invalid token: {e}")))?;
        // `aud` may be an array (RFC 7519); the library checked it above.
        let mut claims = data.claims;
        if let Some(o) = claims.as_object_mut() {
            o.remove("aud");
        }
        let c: Claims = serde_json::from_value(claims)
            .map_err(|e| AuthError::new(format!("invalid token claims: {e}")))?;
        let now = self.clock.now().timestamp();
        if c.exp <= now {
            return Err(AuthError::new("the token has expired"));
        }
        let max = i64::try_from(self.max_lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        let from = c.iat.map_or(now, |iat| iat.min(now));
        if c.exp.saturating_sub(from) > max || c.exp.saturating_sub(now) > max {
            return Err(AuthError::new(format!(
                "the token lives longer than the {max} s this server accepts"
            )));
        }
        if c.iat
            .is_some_and(|iat| iat > now.saturating_add(IAT_LEEWAY_SECONDS))
        {
            return Err(AuthError::new("the token's iat is in the future"));
        }
        if c.sub.trim().is_empty() {
            return Err(AuthError::new("the token's sub is empty"));
        }
        let tenant = c
            .tenant
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_TENANT.to_owned());
        let owner = Owner::new(tenant, c.sub);
        let user = match c.role.as_deref() {
            Some("admin") => AuthUser::admin(owner),
            _ => AuthUser::user(owner),
        };
        Ok(match DateTime::from_timestamp(c.exp, 0) {
            Some(at) => user.expiring_at(at),
            None => user,
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

    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap()
    }

    #[test]
    fn issuer_and_audience_are_required_when_configured() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
        let now = clock.now().timestamp();
        let plain = JwtAuthenticator::new(b"0123456789abcdef0123456789abcdef", clock.clone());
        let strict = plain.clone().issuer("https://idp").audience("callcat");
        let bare = signed(serde_json::json!({"sub": "u", "exp": now + 60}));
        assert!(plain.verify(&bare).is_ok());
        assert!(strict.verify(&bare).is_err(), "no iss/aud");
        let wrong_iss = signed(
            serde_json::json!({"sub": "u", "exp": now + 60, "iss": "https://evil", "aud": "callcat"}),
        );
        assert!(strict.verify(&wrong_iss).is_err());
        let wrong_aud = signed(
            serde_json::json!({"sub": "u", "exp": now + 60, "iss": "https://idp", "aud": "other"}),
        );
        assert!(strict.verify(&wrong_aud).is_err());
        let good = signed(serde_json::json!({
            "sub": "u", "exp": now + 60, "iss": "https://idp", "aud": ["other", "callcat"]
        }));
        assert!(strict.verify(&good).is_ok());
        // Minted tokens carry what the authenticator requires.
        let minted = strict
            .mint("u", None, None, Duration::from_secs(60))
            .unwrap();
        assert!(strict.verify(&minted).is_ok());
        // A token with an audience is still accepted when none is required.
        assert!(plain.verify(&good).is_ok());
    }

    #[test]
    fn lifetime_is_capped_and_iat_is_accepted() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
        let now = clock.now().timestamp();
        let keys = JwtAuthenticator::new(b"0123456789abcdef0123456789abcdef", clock.clone())
            .max_lifetime(Duration::from_secs(3600));
        let ok = signed(serde_json::json!({"sub": "u", "exp": now + 3600, "iat": now}));
        let u = keys.verify(&ok).unwrap();
        assert_eq!(u.expires_at.map(|t| t.timestamp()), Some(now + 3600));
        let too_long = signed(serde_json::json!({"sub": "u", "exp": now + 3601}));
        assert!(
            keys.verify(&too_long)
                .unwrap_err()
                .message()
                .contains("longer")
        );
        let issued_long_ago =
            signed(serde_json::json!({"sub": "u", "exp": now + 60, "iat": now - 7200}));
        assert!(
            keys.verify(&issued_long_ago).is_err(),
            "exp - iat is over the cap"
        );
        let future_iat =
            signed(serde_json::json!({"sub": "u", "exp": now + 600, "iat": now + 300}));
        assert!(keys.verify(&future_iat).is_err());
        assert!(
            keys.mint("u", None, None, Duration::from_secs(7200))
                .is_ok_and(|t| keys.verify(&t).is_err())
        );
        // The default cap is 30 days.
        let default = JwtAuthenticator::new(b"0123456789abcdef0123456789abcdef", clock.clone());
        let year = signed(serde_json::json!({"sub": "u", "exp": now + 365 * 24 * 3600}));
        assert!(default.verify(&year).is_err());
        let month = default
            .mint("u", None, None, DEFAULT_MAX_TOKEN_LIFETIME)
            .unwrap();
        assert!(default.verify(&month).is_ok());
    }
}
