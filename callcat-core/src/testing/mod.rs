//! The backend conformance suite (feature `testing`).
