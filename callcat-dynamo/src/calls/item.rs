//! How a [`Call`] maps to an item of the calls table, and back.

use callcat_core::{Call, CallId, CallStatus, FieldCipher, ListView, Owner, open_call, seal_call};

use crate::client::{Expr, Item, get_s, n, s};
use crate::error::{DResult, DynamoError};
use crate::keys::{owner_part, shard_of, time_id_key};

/// Attribute names of the calls table.
pub(crate) mod attr {
    /// Partition key of every item (`CALL#<id>`, `IDEM#...`, `PROV#...`).
    pub const PK: &str = "pk";
    /// The whole call, as JSON.
    pub const CALL: &str = "call";
    /// The call's version (compare-and-swap).
    pub const VERSION: &str = "version";
    /// The call's status (`SCHEDULED`, ...).
    pub const STATUS: &str = "status";
    /// `Owner::key()`.
    pub const OWNER: &str = "ownerKey";
    /// On guard items: the call they belong to.
    pub const CALL_ID: &str = "callId";
    /// `<owner>#U` (upcoming) or `<owner>#F` (finished).
    pub const OWNER_VIEW: &str = "ownerView";
    /// Upcoming: `scheduled_for#id`; finished: `finished_sort_key#id`.
    pub const VIEW_SORT: &str = "viewSort";
    /// `T#<tenant>`.
    pub const TENANT: &str = "tenant";
    /// `scheduled_for#id`.
    pub const SCHED_SORT: &str = "schedSort";
    /// The current attempt's provider call id (sparse).
    pub const PROVIDER: &str = "providerCallId";
    /// `T#<tenant>` while active (sparse).
    pub const ACTIVE_TENANT: &str = "activeTenant";
    /// `ACTIVE#<n>` while active (sparse).
    pub const ACTIVE_SHARD: &str = "activeShard";
    /// `scheduled_for#id` while active (sparse).
    pub const ACTIVE_SORT: &str = "activeSort";
    /// The blind index of the phone number (only with a cipher).
    pub const PHONE_INDEX: &str = "phoneIndex";
    /// `DUE#<n>` while claimable (sparse).
    pub const DUE_SHARD: &str = "dueShard";
    /// `next_action_at` in epoch ms while claimable (sparse).
    pub const DUE_AT: &str = "dueAt";
    /// Set (to the reason) on a call whose record cannot be opened: it has left
    /// the due and active indexes for good (see `claim_due`).
    pub const QUARANTINED: &str = "quarantined";
}

/// Index names of the calls table.
pub(crate) mod index {
    pub const OWNER_VIEW: &str = "owner-view";
    pub const TENANT_SCHEDULE: &str = "tenant-schedule";
    pub const PROVIDER: &str = "provider-call-id";
    pub const ACTIVE_TENANT: &str = "active-tenant";
    pub const ACTIVE_SHARD: &str = "active-shard";
    pub const DUE: &str = "due";
}

/// Attributes that exist only in some states; an update removes them when absent.
const SPARSE: [&str; 8] = [
    attr::QUARANTINED,
    attr::PROVIDER,
    attr::PHONE_INDEX,
    attr::ACTIVE_TENANT,
    attr::ACTIVE_SHARD,
    attr::ACTIVE_SORT,
    attr::DUE_SHARD,
    attr::DUE_AT,
];

pub(crate) fn call_pk(id: CallId) -> String {
    format!("CALL#{id}")
}

pub(crate) fn idem_pk(owner: &Owner, key: &str) -> String {
    format!("IDEM#{}#{}", owner_part(&owner.key()), key)
}

pub(crate) fn provider_pk(provider_call_id: &str) -> String {
    format!("PROV#{provider_call_id}")
}

pub(crate) fn owner_view(owner: &Owner, view: ListView) -> String {
    let v = match view {
        ListView::Upcoming => "U",
        ListView::Finished => "F",
    };
    format!("{}#{v}", owner_part(&owner.key()))
}

pub(crate) fn tenant_key(tenant: &str) -> String {
    format!("T#{tenant}")
}

pub(crate) fn due_shard(n: u32) -> String {
    format!("DUE#{n}")
}

pub(crate) fn active_shard(n: u32) -> String {
    format!("ACTIVE#{n}")
}

/// The calls that claim_due may take, in the condition of a claim.
pub(crate) const CLAIMABLE: [CallStatus; 3] = [
    CallStatus::Scheduled,
    CallStatus::RetryPending,
    CallStatus::Dispatching,
];

/// The full item for a call: the JSON record (its phone number, caller number and
/// recording URL sealed under the current key when `cipher` is set) plus every key
/// and index attribute, and the phone number's blind index with a cipher.
pub(crate) fn call_item(call: &Call, shards: u32, cipher: Option<&FieldCipher>) -> DResult<Item> {
    let sealed = seal_call(call, cipher).map_err(DynamoError::Core)?;
    let json = serde_json::to_string(&sealed.record)
        .map_err(|e| DynamoError::Corrupt(format!("call {} does not serialize: {e}", call.id)))?;
    let id = call.id;
    let shard = shard_of(id.as_uuid(), shards);
    let view = ListView::of(call.status);
    let view_sort = match view {
        ListView::Upcoming => time_id_key(call.scheduled_for, &id),
        ListView::Finished => time_id_key(call.finished_sort_key(), &id),
    };
    let sched_sort = time_id_key(call.scheduled_for, &id);
    let tenant = tenant_key(call.owner.tenant.as_str());
    let mut item = Item::new();
    item.insert(attr::PK.into(), s(call_pk(id)));
    item.insert(attr::CALL.into(), s(json));
    item.insert(attr::VERSION.into(), n(call.version));
    item.insert(attr::STATUS.into(), s(call.status.as_str()));
    item.insert(attr::OWNER.into(), s(call.owner.key()));
    item.insert(attr::OWNER_VIEW.into(), s(owner_view(&call.owner, view)));
    item.insert(attr::VIEW_SORT.into(), s(view_sort));
    item.insert(attr::TENANT.into(), s(tenant.clone()));
    item.insert(attr::SCHED_SORT.into(), s(sched_sort.clone()));
    if let Some(p) = call.provider_call_id.as_deref().filter(|p| !p.is_empty()) {
        item.insert(attr::PROVIDER.into(), s(p));
    }
    if let Some(i) = sealed.phone_index {
        item.insert(attr::PHONE_INDEX.into(), s(i));
    }
    if call.status.is_active() {
        item.insert(attr::ACTIVE_TENANT.into(), s(tenant));
        item.insert(attr::ACTIVE_SHARD.into(), s(active_shard(shard)));
        item.insert(attr::ACTIVE_SORT.into(), s(sched_sort));
    }
    if let (true, Some(at)) = (call.status.is_claimable(), call.next_action_at) {
        item.insert(attr::DUE_SHARD.into(), s(due_shard(shard)));
        item.insert(attr::DUE_AT.into(), n(at.timestamp_millis()));
    }
    Ok(item)
}

/// Reads the call out of an item, opening sealed fields with `cipher` (a tampered
/// value or a missing key is `ErrorKind::Crypto`).
pub(crate) fn call_from_item(item: &Item, cipher: Option<&FieldCipher>) -> DResult<Call> {
    let json = get_s(item, attr::CALL).ok_or_else(|| {
        DynamoError::Corrupt(format!(
            "item {:?} has no `{}` attribute",
            get_s(item, attr::PK).unwrap_or("?"),
            attr::CALL
        ))
    })?;
    let record: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        DynamoError::Corrupt(format!(
            "item {:?}: the call does not parse: {e}",
            get_s(item, attr::PK).unwrap_or("?")
        ))
    })?;
    open_call(record, cipher).map_err(DynamoError::Core)
}

/// `SET` every attribute of `item` but the key, `REMOVE` the sparse ones it lacks.
pub(crate) fn update_expression(item: &Item, e: &mut Expr) -> String {
    let mut names: Vec<&String> = item.keys().filter(|k| k.as_str() != attr::PK).collect();
    names.sort();
    let sets: Vec<String> = names
        .into_iter()
        .map(|k| {
            let name = e.name(k);
            let value = e.value(item[k].clone());
            format!("{name} = {value}")
        })
        .collect();
    let removes: Vec<String> = SPARSE
        .iter()
        .filter(|a| !item.contains_key(**a))
        .map(|a| e.name(a))
        .collect();
    let mut out = format!("SET {}", sets.join(", "));
    if !removes.is_empty() {
        out.push_str(" REMOVE ");
        out.push_str(&removes.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use callcat_core::{CallTemplate, Limits, NewCall, PhoneNumber};
    use chrono::{DateTime, Utc};

    fn call() -> Call {
        let now = DateTime::<Utc>::from_timestamp_millis(1_700_000_000_123).expect("valid");
        let template = CallTemplate::new(
            "Ada",
            PhoneNumber::parse("+14155550100").expect("phone"),
            "follow-up",
            "be brief",
        );
        NewCall::new(template)
            .at(now + chrono::TimeDelta::minutes(5))
            .into_call(Owner::new("acme", "u1"), now, &Limits::default())
            .expect("valid call")
    }

    #[test]
    fn scheduled_call_is_in_the_due_index_and_not_active() {
        let c = call();
        let item = call_item(&c, 8, None).expect("item");
        assert!(item.contains_key(attr::DUE_SHARD));
        assert!(!item.contains_key(attr::ACTIVE_TENANT));
        assert_eq!(call_from_item(&item, None).expect("parses"), c);
        assert!(!item.contains_key(attr::PHONE_INDEX));
        let mut e = Expr::new();
        let expr = update_expression(&item, &mut e);
        assert!(expr.starts_with("SET "));
        assert!(expr.contains(" REMOVE "), "{expr}");
        assert!(
            !expr.contains("status"),
            "reserved words go through names: {expr}"
        );
    }

    #[test]
    fn sealed_items_hold_the_blind_index_and_no_plaintext() {
        use callcat_core::{ErrorKind, MasterKey};
        let cipher = FieldCipher::new(vec![MasterKey::new(3, [3; 32])]).expect("cipher");
        let c = call();
        let item = call_item(&c, 8, Some(&cipher)).expect("item");
        let shown = format!("{item:?}");
        assert!(!shown.contains("4155550100"), "{shown}");
        assert_eq!(
            get_s(&item, attr::PHONE_INDEX),
            Some(cipher.blind_index("+14155550100").as_str())
        );
        assert_eq!(call_from_item(&item, Some(&cipher)).expect("opens"), c);
        let err = call_from_item(&item, None).expect_err("no key");
        assert!(matches!(&err, DynamoError::Core(e) if e.kind() == ErrorKind::Crypto));
        assert_eq!(callcat_core::Error::from(err).source_name(), Some("dynamo"));
    }
}
