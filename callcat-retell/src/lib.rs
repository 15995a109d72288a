#![doc = include_str!("../README.md")]
//! callcat-retell: the Retell AI telephony provider for callcat — a REST client
//! that places, fetches and ends calls, and verified webhook parsing.

mod error;
pub mod mapping;
mod provider;
pub mod webhook;
pub mod wire;

pub use provider::{
    DEFAULT_BASE_URL, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, RetellProvider,
    RetellProviderBuilder, VAR_CALLEE_NAME, VAR_LANGUAGE, VAR_PROMPT, VAR_SUBJECT,
};
pub use webhook::{
    MalformedReason, RetellWebhookVerifier, SIGNATURE_HEADER, SIGNATURE_TOLERANCE, SignatureError,
    WebhookError, sign_payload, verify_and_parse, verify_signature,
};
