#![doc = include_str!("../README.md")]

mod calls;
mod client;
mod config;
mod do_not_call;
mod error;
mod keys;
mod metrics;
mod rotation;
mod tables;
mod transcripts;
mod windows;

pub use calls::DynamoCallStore;
pub use config::{
    DEFAULT_CALLS_TABLE, DEFAULT_DO_NOT_CALL_TABLE, DEFAULT_SHARDS, DEFAULT_TRANSCRIPTS_TABLE,
    DEFAULT_WINDOWS_TABLE, DynamoStores, DynamoStoresBuilder, MAX_SHARDS, TableNames,
};
pub use do_not_call::DynamoDoNotCallStore;
pub use metrics::{DynamoMetrics, MetricsSnapshot};
pub use tables::{
    CALLS_TABLE_JSON, DO_NOT_CALL_TABLE_JSON, TRANSCRIPT_TTL_ATTRIBUTE, TRANSCRIPTS_TABLE_JSON,
    WINDOWS_TABLE_JSON,
};
pub use transcripts::{CHUNK_MAX, DynamoTranscriptStore, INLINE_MAX};
pub use windows::DynamoWindowStore;

/// Re-exported so users build clients with the same SDK version.
pub use aws_sdk_dynamodb;
