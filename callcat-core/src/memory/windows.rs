use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::page_limit;
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::ids::{Owner, WindowId};
use crate::store::{Page, WindowStore};
use crate::window::CallWindow;

/// Call windows in memory.
#[derive(Default, Debug)]
pub struct InMemoryWindowStore {
    state: Mutex<BTreeMap<WindowId, CallWindow>>,
}

impl InMemoryWindowStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `window` as it is, without validation: models a record written
    /// before a check existed, or by another process or backend, so tests can
    /// show that background work survives it.
    #[cfg(feature = "testing")]
    pub fn insert_unchecked(&self, window: CallWindow) {
        self.lock().insert(window.id, window);
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<WindowId, CallWindow>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl WindowStore for InMemoryWindowStore {
    async fn create(&self, window: &CallWindow) -> Result<()> {
        window.schedule.validate()?;
        let mut st = self.lock();
        if st.contains_key(&window.id) {
            return Err(Error::conflict(format!(
                "window {} already exists",
                window.id
            )));
        }
        st.insert(window.id, window.clone());
        Ok(())
    }

    async fn get(&self, owner: &Owner, id: WindowId) -> Result<Option<CallWindow>> {
        Ok(self.lock().get(&id).filter(|w| &w.owner == owner).cloned())
    }

    async fn list(&self, owner: &Owner) -> Result<Vec<CallWindow>> {
        // WindowIds are UUIDv7: id order is creation order.
        Ok(self
            .lock()
            .values()
            .filter(|w| &w.owner == owner)
            .cloned()
            .collect())
    }

    async fn list_all(&self, limit: u32, cursor: Option<&str>) -> Result<Page<CallWindow>> {
        let limit = page_limit(limit)?;
        let after: Option<WindowId> = cursor
            .map(|c| {
                Cursor::decode(c)?
                    .id
                    .parse()
                    .map_err(|_| Error::validation("nextToken", "the page token is not valid"))
            })
            .transpose()?;
        let st = self.lock();
        let mut items: Vec<CallWindow> = st
            .values()
            .filter(|w| after.is_none_or(|a| w.id > a))
            .take(limit + 1)
            .cloned()
            .collect();
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = more
            .then(|| {
                items.last().map(|w| {
                    Cursor {
                        key: 0,
                        id: w.id.to_string(),
                    }
                    .encode()
                })
            })
            .flatten();
        Ok(Page { items, next_cursor })
    }

    async fn update(&self, window: &CallWindow) -> Result<()> {
        window.schedule.validate()?;
        let mut st = self.lock();
        match st.get_mut(&window.id) {
            Some(w) if w.owner == window.owner => {
                w.schedule = window.schedule.clone();
                w.template = window.template.clone();
                Ok(())
            }
            _ => Err(Error::not_found(format!("window {} not found", window.id))),
        }
    }

    async fn delete(&self, owner: &Owner, id: WindowId) -> Result<()> {
        let mut st = self.lock();
        match st.get(&id) {
            Some(w) if &w.owner == owner => {
                st.remove(&id);
                Ok(())
            }
            _ => Err(Error::not_found(format!("window {id} not found"))),
        }
    }
}
