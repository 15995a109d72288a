use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::page_limit;
use crate::crypto::{FieldCipher, KeyUsage, open_window, seal_window};
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::ids::{Owner, WindowId};
use crate::rotation::{KeyTally, ResealPage, RowOutcome, check_reseal};
use crate::store::{Page, WindowStore};
use crate::window::CallWindow;

/// Call windows in memory.
///
/// With a [`FieldCipher`] ([`InMemoryWindowStore::with_cipher`]) each window is
/// kept as its JSON record with the template's personal fields sealed
/// ([`crate::crypto::seal_window`]), and opened on read.
#[derive(Default, Debug)]
pub struct InMemoryWindowStore {
    state: Mutex<State>,
}

#[derive(Default, Debug)]
struct State {
    windows: BTreeMap<WindowId, Stored>,
    cipher: Option<FieldCipher>,
}

/// One window as kept: its owner in the clear (for look-ups) and the window.
#[derive(Debug, Clone)]
struct Stored {
    owner: Owner,
    body: Body,
}

/// The window itself.
#[derive(Debug, Clone)]
enum Body {
    /// As it is (no cipher was configured when it was written).
    Plain(Box<CallWindow>),
    /// Its JSON record with the template sealed ([`seal_window`]).
    Sealed(serde_json::Value),
}

impl Stored {
    fn key_usage(&self) -> KeyUsage {
        match &self.body {
            Body::Plain(_) => KeyUsage {
                plain: true,
                ..KeyUsage::default()
            },
            Body::Sealed(record) => KeyUsage::of_window(record),
        }
    }
}

impl State {
    /// The window as kept: sealed under the current key with a cipher.
    fn seal(&self, window: &CallWindow) -> Result<Stored> {
        let body = match &self.cipher {
            Some(c) => Body::Sealed(seal_window(window, Some(c))?),
            None => Body::Plain(Box::new(window.clone())),
        };
        Ok(Stored {
            owner: window.owner.clone(),
            body,
        })
    }

    fn open(&self, stored: &Stored) -> Result<CallWindow> {
        match &stored.body {
            Body::Plain(w) => Ok((**w).clone()),
            Body::Sealed(record) => open_window(record.clone(), self.cipher.as_ref()),
        }
    }
}

impl InMemoryWindowStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps windows sealed with `cipher`.
    pub fn with_cipher(cipher: FieldCipher) -> Self {
        let store = Self::default();
        store.set_cipher(cipher);
        store
    }

    /// Replaces the key ring (the first key seals; all open). Windows already
    /// stored are re-sealed on their next write, or by [`crate::rotation::rekey`].
    pub fn set_cipher(&self, cipher: FieldCipher) {
        self.lock().cipher = Some(cipher);
    }

    /// Stores `window` as it is, without validation: models a record written
    /// before a check existed, or by another process or backend, so tests can
    /// show that background work survives it.
    #[cfg(feature = "testing")]
    pub fn insert_unchecked(&self, window: CallWindow) {
        let mut st = self.lock();
        if let Ok(stored) = st.seal(&window) {
            st.windows.insert(window.id, stored);
        }
    }

    /// Everything the store holds, as `Debug` text (what a memory dump would show).
    #[cfg(test)]
    pub(super) fn dump(&self) -> String {
        format!("{:?}", self.lock().windows)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl WindowStore for InMemoryWindowStore {
    async fn create(&self, window: &CallWindow) -> Result<()> {
        window.schedule.validate()?;
        let mut st = self.lock();
        if st.windows.contains_key(&window.id) {
            return Err(Error::conflict(format!(
                "window {} already exists",
                window.id
            )));
        }
        let stored = st.seal(window)?;
        st.windows.insert(window.id, stored);
        Ok(())
    }

    async fn get(&self, owner: &Owner, id: WindowId) -> Result<Option<CallWindow>> {
        let st = self.lock();
        st.windows
            .get(&id)
            .filter(|w| &w.owner == owner)
            .map(|w| st.open(w))
            .transpose()
    }

    async fn list(&self, owner: &Owner) -> Result<Vec<CallWindow>> {
        // WindowIds are UUIDv7: id order is creation order.
        let st = self.lock();
        st.windows
            .values()
            .filter(|w| &w.owner == owner)
            .map(|w| st.open(w))
            .collect()
    }

    async fn list_all(&self, limit: u32, cursor: Option<&str>) -> Result<Page<CallWindow>> {
        let limit = page_limit(limit)?;
        let after = decode_cursor(cursor)?;
        let st = self.lock();
        let mut items: Vec<CallWindow> = st
            .windows
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| **id > a))
            .take(limit + 1)
            .map(|(_, w)| st.open(w))
            .collect::<Result<_>>()?;
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = more
            .then(|| items.last().map(|w| encode_cursor(w.id)))
            .flatten();
        Ok(Page { items, next_cursor })
    }

    async fn update(&self, window: &CallWindow) -> Result<()> {
        window.schedule.validate()?;
        let mut st = self.lock();
        let current = match st.windows.get(&window.id) {
            Some(w) if w.owner == window.owner => st.open(w)?,
            _ => return Err(Error::not_found(format!("window {} not found", window.id))),
        };
        let next = CallWindow {
            schedule: window.schedule.clone(),
            template: window.template.clone(),
            ..current
        };
        let stored = st.seal(&next)?;
        st.windows.insert(window.id, stored);
        Ok(())
    }

    async fn delete(&self, owner: &Owner, id: WindowId) -> Result<()> {
        let mut st = self.lock();
        match st.windows.get(&id) {
            Some(w) if &w.owner == owner => {
                st.windows.remove(&id);
                Ok(())
            }
            _ => Err(Error::not_found(format!("window {id} not found"))),
        }
    }

    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        let mut st = self.lock();
        let cipher = check_reseal(st.cipher.as_ref(), rewrite, limit)?.cloned();
        let after = decode_cursor(cursor)?;
        let limit = limit as usize;
        let page: Vec<(WindowId, Stored)> = st
            .windows
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| **id > a))
            .take(limit + 1)
            .map(|(id, w)| (*id, w.clone()))
            .collect();
        let more = page.len() > limit;
        let mut tally = KeyTally::default();
        for (id, stored) in page.iter().take(limit) {
            let found = stored.key_usage();
            let outcome = match &cipher {
                Some(c) if found.needs_rewrite(c) => match st.open(stored) {
                    Err(_) => RowOutcome::Unreadable,
                    Ok(window) => {
                        // Under the lock: nothing changed since it was read.
                        let resealed = st.seal(&window)?;
                        let after = resealed.key_usage();
                        st.windows.insert(*id, resealed);
                        RowOutcome::Rewritten(after)
                    }
                },
                _ => RowOutcome::Untouched,
            };
            tally.record(&found, outcome);
        }
        let next_cursor = more
            .then(|| page.get(limit - 1).map(|(id, _)| encode_cursor(*id)))
            .flatten();
        Ok(ResealPage { tally, next_cursor })
    }
}

fn decode_cursor(cursor: Option<&str>) -> Result<Option<WindowId>> {
    cursor
        .map(|c| {
            Cursor::decode(c)?
                .id
                .parse()
                .map_err(|_| Error::validation("nextToken", "the page token is not valid"))
        })
        .transpose()
}

fn encode_cursor(id: WindowId) -> String {
    Cursor {
        key: 0,
        id: id.to_string(),
    }
    .encode()
}
