//! [`DoNotCallService`]: a tenant's do-not-call list, and [`DoNotCallCheck`], the
//! pre-dial check that cancels any call to a listed number before it is dialed.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::call::Call;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ids::{Owner, TenantId};
use crate::phone::PhoneNumber;
use crate::scheduler::{PreDialCheck, PreDialVerdict};
use crate::store::{DoNotCallEntry, DoNotCallStore, MAX_PAGE_SIZE, Page};

/// A tenant's do-not-call list. Who may change it (e.g. administrators only) is
/// the caller's decision. Cheap to clone.
#[derive(Clone)]
pub struct DoNotCallService {
    store: Arc<dyn DoNotCallStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DoNotCallService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoNotCallService").finish_non_exhaustive()
    }
}

impl DoNotCallService {
    /// A service over `store`.
    pub fn new(store: Arc<dyn DoNotCallStore>, clock: Arc<dyn Clock>) -> Self {
        DoNotCallService { store, clock }
    }

    /// Lists `number` for `by`'s tenant. Returns the entry and whether it is new
    /// (listing a number twice keeps the first entry).
    pub async fn add(&self, by: &Owner, number: PhoneNumber) -> Result<(DoNotCallEntry, bool)> {
        let entry = DoNotCallEntry {
            tenant: by.tenant.clone(),
            phone_number: number,
            added_by: by.user.clone(),
            added_at: self.clock.now(),
        };
        let added = self.store.add(&entry).await?;
        Ok((entry, added))
    }

    /// Takes `number` off the tenant's list (`NotFound` if it was not listed).
    pub async fn remove(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<()> {
        self.store.remove(tenant, number).await
    }

    /// Whether `number` is on the tenant's list.
    pub async fn contains(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<bool> {
        self.store.contains(tenant, number).await
    }

    /// The tenant's entry for `number`, if it is listed.
    pub async fn get(
        &self,
        tenant: &TenantId,
        number: &PhoneNumber,
    ) -> Result<Option<DoNotCallEntry>> {
        self.store.get(tenant, number).await
    }

    /// A page of the tenant's list, oldest first.
    pub async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<DoNotCallEntry>> {
        if limit == 0 || limit > MAX_PAGE_SIZE {
            return Err(Error::validation(
                "limit",
                format!("limit must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        self.store.list(tenant, limit, cursor).await
    }
}

/// Cancels, before any dial, every call whose number is on its owner's tenant's
/// do-not-call list. Every engine runs it first among its pre-dial checks.
pub struct DoNotCallCheck {
    store: Arc<dyn DoNotCallStore>,
}

impl std::fmt::Debug for DoNotCallCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoNotCallCheck").finish_non_exhaustive()
    }
}

impl DoNotCallCheck {
    /// A check against `store`.
    pub fn new(store: Arc<dyn DoNotCallStore>) -> Self {
        DoNotCallCheck { store }
    }
}

#[async_trait::async_trait]
impl PreDialCheck for DoNotCallCheck {
    async fn check(&self, call: &Call, _now: DateTime<Utc>) -> Result<PreDialVerdict> {
        Ok(
            if self
                .store
                .contains(&call.owner.tenant, &call.phone_number)
                .await?
            {
                PreDialVerdict::Cancel {
                    reason: "the number is on the tenant's do-not-call list".into(),
                }
            } else {
                PreDialVerdict::Allow
            },
        )
    }
}
