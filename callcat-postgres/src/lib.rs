#![doc = include_str!("../README.md")]
//! callcat-postgres: the PostgreSQL backend of callcat's call, transcript,
//! window and do-not-call stores, with embedded migrations and LISTEN/NOTIFY scheduler wake-ups.

mod calls;
mod do_not_call;
mod error;
mod listener;
mod rotation;
mod sql;
mod store;
mod transcripts;
mod windows;

pub use calls::PostgresCallStore;
pub use do_not_call::PostgresDoNotCallStore;
pub use listener::{
    LISTENER_APPLICATION_NAME, ListenerOptions, NOTIFY_CHANNEL, PostgresWakeupListener,
};
pub use store::{PostgresOptions, PostgresStore};
pub use transcripts::PostgresTranscriptStore;
pub use windows::PostgresWindowStore;

/// Re-exported so users name the same sqlx version (pools, options).
pub use sqlx;
