#![doc = include_str!("../README.md")]
//! The facade: re-exports the core engine and, behind features, the adapters.

pub use callcat_core::*;

/// The PostgreSQL store (feature `postgres`).
#[cfg(feature = "postgres")]
pub use callcat_postgres as postgres;

/// The DynamoDB store (feature `dynamo`).
#[cfg(feature = "dynamo")]
pub use callcat_dynamo as dynamo;

/// The Retell AI provider (feature `retell`).
#[cfg(feature = "retell")]
pub use callcat_retell as retell;

/// The Twilio provider (feature `twilio`).
#[cfg(feature = "twilio")]
pub use callcat_twilio as twilio;

/// The HTTP API as an embeddable axum router (feature `axum`).
#[cfg(feature = "axum")]
pub use callcat_axum as axum;
