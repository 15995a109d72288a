#![doc = include_str!("../README.md")]
//! callcat-twilio: the Twilio provider for callcat: REST client, signed status
//! callbacks, answering-machine detection, a TwiML conversation flow and
//! real-time transcription.

mod client;
mod config;
pub mod flow;
#[cfg(feature = "axum")]
mod routes;
pub mod signature;
pub mod transcription;
pub mod twiml;
mod webhook;
mod wire;

pub use client::TwilioProvider;
pub use config::{
    CALL_ID_PARAM, CallbackPaths, CallbackUrls, DEFAULT_BASE_URL, DEFAULT_GATHER_PATH,
    DEFAULT_STATUS_CALLBACK_EVENTS, DEFAULT_STATUS_PATH, DEFAULT_TRANSCRIPTION_PATH,
    DEFAULT_TWIML_PATH, STEP_PARAM, TwilioProviderBuilder,
};
pub use flow::{ConversationFlow, GatherTurn, render_call_twiml};
#[cfg(feature = "axum")]
pub use routes::TwilioRoutes;
pub use signature::{SignatureError, compute_signature};
pub use transcription::{TranscriptStage, TranscriptionEvent, TranscriptionUpdate};
pub use webhook::{FormFields, TwilioWebhookError, TwilioWebhookVerifier, parse_status_callback};
pub use wire::{AnsweredBy, TwilioCallStatus};

/// The provider name, also used as the error source name.
pub(crate) const SOURCE: &str = "twilio";
