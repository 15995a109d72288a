//! JWT authentication (HS256): `Authorization: Bearer <token>` with claims `sub`
//! (the user), `tenant` (default `default`), `role` (`admin` sees all live calls)
//! and `exp`, checked against the injected clock.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use callcat_core::{Clock, Owner};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::error::ApiError;

/// The tenant of tokens without a `tenant` claim.
pub const DEFAULT_TENANT: &str = "default";

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

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    /// Whose data the caller sees.
    pub owner: Owner,
    /// Whether the caller is an administrator.
    pub admin: bool,
}

/// Signs and verifies tokens with one HS256 secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(<redacted>)")
    }
}

impl JwtKeys {
    /// Keys for `secret`; expiry is judged by `clock`.
    pub fn new(secret: &[u8], clock: Arc<dyn Clock>) -> Self {
        JwtKeys {
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
    pub fn verify(&self, token: &str) -> Result<AuthUser, ApiError> {
        let mut v = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the injected clock.
        v.validate_exp = false;
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))?;
        let c = data.claims;
        if c.exp <= self.clock.now().timestamp() {
            return Err(ApiError::unauthorized("the token has expired"));
        }
        if c.sub.trim().is_empty() {
            return Err(ApiError::unauthorized("the token's sub is empty"));
        }
        let tenant = c
            .tenant
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_TENANT.to_owned());
        Ok(AuthUser {
            owner: Owner::new(tenant, c.sub),
            admin: c.role.as_deref() == Some("admin"),
        })
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))?;
        state.jwt.verify(token)
    }
}

#[cfg(test)]
mod tests {
    use callcat_core::ManualClock;

    use super::*;

    #[test]
    fn tokens_round_trip_and_expire_on_the_clock() {
        let clock = ManualClock::at_fixed_start();
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef", Arc::new(clock.clone()));
        let t = keys
            .mint("u1", None, None, Duration::from_secs(60))
            .unwrap();
        let u = keys.verify(&t).unwrap();
        assert_eq!(u.owner, Owner::new("default", "u1"));
        assert!(!u.admin);
        let a = keys
            .mint("u2", Some("acme"), Some("admin"), Duration::from_secs(60))
            .unwrap();
        let u = keys.verify(&a).unwrap();
        assert_eq!(u.owner, Owner::new("acme", "u2"));
        assert!(u.admin);
        clock.advance(Duration::from_secs(61));
        assert_eq!(keys.verify(&t).unwrap_err().status(), 401);
    }

    #[test]
    fn wrong_secret_or_missing_claims_are_rejected() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
        let a = JwtKeys::new(b"0123456789abcdef0123456789abcdef", clock.clone());
        let b = JwtKeys::new(b"fedcba9876543210fedcba9876543210", clock.clone());
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
