//! What the in-memory call store keeps per call: the fields its queries need, in
//! the clear, and the call itself, sealed when the store has a [`FieldCipher`].

use chrono::{DateTime, Utc};

use crate::call::{Call, CallStatus};
use crate::crypto::{FieldCipher, KeyUsage, open_call, seal_call};
use crate::error::Result;
use crate::ids::{CallId, Owner};
use crate::phone::PhoneNumber;

/// One stored call. The query fields are copies of the call's own; the phone
/// number, caller number and recording URL live only in `body`.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) id: CallId,
    pub(super) owner: Owner,
    pub(super) status: CallStatus,
    pub(super) scheduled_for: DateTime<Utc>,
    pub(super) finished_key: DateTime<Utc>,
    pub(super) next_action_at: Option<DateTime<Utc>>,
    pub(super) provider_call_id: Option<String>,
    pub(super) idempotency_key: Option<String>,
    pub(super) version: u64,
    /// The blind index of the phone number (sealed entries only).
    pub(super) phone_index: Option<String>,
    pub(super) body: Body,
}

/// The call itself.
#[derive(Debug, Clone)]
pub(super) enum Body {
    /// As it is (no cipher was configured when it was written).
    Plain(Box<Call>),
    /// Its JSON form with the sensitive fields sealed ([`seal_call`]).
    Sealed(serde_json::Value),
}

impl Entry {
    /// The entry for `call`, sealed when `cipher` is set (always under its current key).
    pub(super) fn new(call: &Call, cipher: Option<&FieldCipher>) -> Result<Self> {
        let (body, phone_index) = match cipher {
            Some(c) => {
                let sealed = seal_call(call, Some(c))?;
                (Body::Sealed(sealed.record), sealed.phone_index)
            }
            None => (Body::Plain(Box::new(call.clone())), None),
        };
        Ok(Entry {
            id: call.id,
            owner: call.owner.clone(),
            status: call.status,
            scheduled_for: call.scheduled_for,
            finished_key: call.finished_sort_key(),
            next_action_at: call.next_action_at,
            provider_call_id: call.provider_call_id.clone(),
            idempotency_key: call.idempotency_key.clone(),
            version: call.version,
            phone_index,
            body,
        })
    }

    /// The call, opened with `cipher` (`Crypto` if sealed and the key is missing or
    /// the value was tampered with).
    pub(super) fn open(&self, cipher: Option<&FieldCipher>) -> Result<Call> {
        match &self.body {
            Body::Plain(c) => Ok((**c).clone()),
            Body::Sealed(record) => open_call(record.clone(), cipher),
        }
    }

    /// Which keys the stored form uses (a plain body counts as plain values).
    pub(super) fn key_usage(&self) -> KeyUsage {
        match &self.body {
            Body::Plain(_) => KeyUsage {
                plain: true,
                ..KeyUsage::default()
            },
            Body::Sealed(record) => {
                let mut usage = KeyUsage::of_call(record);
                if let Some(i) = &self.phone_index {
                    usage.note_index(i);
                }
                usage
            }
        }
    }

    /// Whether the call is to `number`: by blind index (under any key of `cipher`)
    /// for sealed entries, directly for plain ones.
    pub(super) fn is_to(&self, number: &PhoneNumber, indexes: &[String]) -> bool {
        match (&self.body, &self.phone_index) {
            (Body::Plain(c), _) => &c.phone_number == number,
            (Body::Sealed(_), Some(i)) => indexes.contains(i),
            (Body::Sealed(_), None) => false,
        }
    }
}
