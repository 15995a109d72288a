#![doc = include_str!("../README.md")]
//! callcat-axum: the HTTP API of callcat as an embeddable axum [`Router`],
//! over callcat-core only, with pluggable authentication and webhook verifiers.

pub mod api;
pub mod auth;
pub mod dto;
pub mod error;
pub mod openapi;
mod router;
pub mod routes;
pub mod sse;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;

pub use api::Api;
pub use async_trait::async_trait;
pub use auth::{
    AuthError, AuthUser, Authenticator, Claims, DEFAULT_MAX_TOKEN_LIFETIME, JwtAuthenticator, Role,
};
pub use error::{ApiError, ApiJson, ApiResult};
pub use router::{
    ApiRouter, ApiState, DEFAULT_BODY_LIMIT, DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_CONCURRENT_WEBHOOKS, DEFAULT_REQUEST_TIMEOUT, MAX_BODY_LIMIT, WEBHOOK_BODY_LIMIT,
};
pub use webhooks::{RateLimiter, SourceLimiter, WebhookAck, WebhookObserver};

/// The OpenAPI crates the router is built with (for [`ApiRouter::merge`] and
/// [`ApiRouter::security_scheme`]), so embedders use the same versions.
pub use {utoipa, utoipa_axum};

/// The API over `api`, authenticating requests with `auth`, with the default
/// limits and no provider webhooks: mount it anywhere (`Router::nest`). Use
/// [`ApiRouter`] to register webhook verifiers or change the settings.
pub fn router(api: Api, auth: Arc<dyn Authenticator>) -> Router {
    ApiRouter::new(api, auth).assemble().0
}
