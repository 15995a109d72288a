//! Pre-dial checks: a pluggable async check right before each dial that can allow
//! it, defer it, or cancel it. [`DoNotCallList`] is one.

use std::collections::HashSet;
use std::sync::RwLock;

use chrono::{DateTime, Utc};

use crate::call::Call;
use crate::error::Result;
use crate::phone::PhoneNumber;

/// What a pre-dial check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreDialVerdict {
    /// Go ahead.
    Allow,
    /// Not now: try again at this instant.
    Defer {
        /// When to try again.
        until: DateTime<Utc>,
        /// Why, for the call's `last_error`.
        reason: String,
    },
    /// Never: cancel the call with this reason.
    Cancel {
        /// Why.
        reason: String,
    },
}

/// A check that runs right before each dial.
#[async_trait::async_trait]
pub trait PreDialCheck: Send + Sync + 'static {
    /// Decides whether `call` may be dialed at `now`. An error defers the call
    /// briefly (the check could not decide), it never lets it through.
    async fn check(&self, call: &Call, now: DateTime<Utc>) -> Result<PreDialVerdict>;
}

/// Numbers that must never be called.
#[derive(Debug, Default)]
pub struct DoNotCallList {
    numbers: RwLock<HashSet<PhoneNumber>>,
}

impl DoNotCallList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a number.
    pub fn add(&self, number: PhoneNumber) {
        self.numbers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(number);
    }

    /// Removes a number.
    pub fn remove(&self, number: &PhoneNumber) {
        self.numbers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(number);
    }

    /// Whether a number is listed.
    pub fn contains(&self, number: &PhoneNumber) -> bool {
        self.numbers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(number)
    }
}

#[async_trait::async_trait]
impl PreDialCheck for DoNotCallList {
    async fn check(&self, call: &Call, _now: DateTime<Utc>) -> Result<PreDialVerdict> {
        Ok(if self.contains(&call.phone_number) {
            PreDialVerdict::Cancel {
                reason: format!("{} is on the do-not-call list", call.phone_number),
            }
        } else {
            PreDialVerdict::Allow
        })
    }
}
