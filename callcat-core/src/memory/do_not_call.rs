use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::page_limit;
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::phone::PhoneNumber;
use crate::rotation::{KeyTally, ResealPage, check_reseal};
use crate::store::{DoNotCallEntry, DoNotCallStore, Page};

/// Do-not-call lists in memory.
#[derive(Default, Debug)]
pub struct InMemoryDoNotCallStore {
    state: Mutex<BTreeMap<(TenantId, PhoneNumber), DoNotCallEntry>>,
}

impl InMemoryDoNotCallStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(TenantId, PhoneNumber), DoNotCallEntry>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sort position of an entry: (added at, number).
fn position(e: &DoNotCallEntry) -> (i64, String) {
    (
        e.added_at.timestamp_millis(),
        e.phone_number.as_str().to_owned(),
    )
}

#[async_trait::async_trait]
impl DoNotCallStore for InMemoryDoNotCallStore {
    async fn add(&self, entry: &DoNotCallEntry) -> Result<bool> {
        let mut st = self.lock();
        let key = (entry.tenant.clone(), entry.phone_number.clone());
        if st.contains_key(&key) {
            return Ok(false);
        }
        st.insert(key, entry.clone());
        Ok(true)
    }

    async fn remove(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<()> {
        match self.lock().remove(&(tenant.clone(), number.clone())) {
            Some(_) => Ok(()),
            None => Err(Error::not_found(
                "the number is not on the do-not-call list",
            )),
        }
    }

    async fn contains(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<bool> {
        Ok(self.lock().contains_key(&(tenant.clone(), number.clone())))
    }

    async fn get(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<Option<DoNotCallEntry>> {
        Ok(self.lock().get(&(tenant.clone(), number.clone())).cloned())
    }

    async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<DoNotCallEntry>> {
        let limit = page_limit(limit)?;
        let after = cursor
            .map(Cursor::decode)
            .transpose()?
            .map(|c| (c.key, c.id));
        let mut entries: Vec<DoNotCallEntry> = self
            .lock()
            .values()
            .filter(|e| &e.tenant == tenant)
            .filter(|e| after.as_ref().is_none_or(|a| &position(e) > a))
            .cloned()
            .collect();
        entries.sort_by_key(position);
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = match entries.last() {
            Some(last) if more => {
                let (key, id) = position(last);
                Some(Cursor { key, id }.encode())
            }
            _ => None,
        };
        Ok(Page {
            items: entries,
            next_cursor,
        })
    }

    /// The in-memory lists keep numbers in process memory unsealed (they have no
    /// cipher): every entry is counted, under no key, and nothing is rewritten.
    async fn reseal_page(
        &self,
        _rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        check_reseal(None, false, limit)?;
        let skip: usize = match cursor {
            None => 0,
            Some(c) => usize::try_from(Cursor::decode(c)?.key)
                .map_err(|_| Error::validation("nextToken", "the page token is not valid"))?,
        };
        let total = self.lock().len();
        let rows = total.saturating_sub(skip).min(limit as usize);
        let end = skip + rows;
        Ok(ResealPage {
            tally: KeyTally {
                rows: rows as u64,
                ..KeyTally::default()
            },
            next_cursor: (end < total).then(|| {
                Cursor {
                    key: i64::try_from(end).unwrap_or(i64::MAX),
                    id: String::new(),
                }
                .encode()
            }),
        })
    }
}
