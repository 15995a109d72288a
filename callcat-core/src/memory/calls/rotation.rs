//! Key rotation over the in-memory calls ([`crate::rotation`]).

use super::State;
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::ids::CallId;
use crate::rotation::{KeyTally, ResealPage, RowOutcome, check_reseal};

impl State {
    /// [`crate::CallStore::reseal_page`]: under the store's lock, so a rewrite
    /// can never race another write (the version stays as it is).
    pub(super) fn reseal_page(
        &mut self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        let cipher = check_reseal(self.cipher.as_ref(), rewrite, limit)?.cloned();
        let after: Option<CallId> = cursor
            .map(|c| {
                Cursor::decode(c)?
                    .id
                    .parse()
                    .map_err(|_| Error::validation("nextToken", "the page token is not valid"))
            })
            .transpose()?;
        let mut ids: Vec<CallId> = self
            .calls
            .keys()
            .filter(|id| after.is_none_or(|a| **id > a))
            .copied()
            .collect();
        ids.sort_unstable();
        let limit = limit as usize;
        let more = ids.len() > limit;
        ids.truncate(limit);
        let mut tally = KeyTally::default();
        for id in &ids {
            let Some(entry) = self.calls.get(id).cloned() else {
                continue;
            };
            let found = entry.key_usage();
            let outcome = match &cipher {
                Some(c) if found.needs_rewrite(c) => {
                    if self.quarantined.contains(id) {
                        // Set aside as unreadable: rewriting would index it again.
                        RowOutcome::Unreadable
                    } else if entry.status.is_active() {
                        RowOutcome::Deferred
                    } else {
                        match entry.open(Some(c)) {
                            Err(_) => RowOutcome::Unreadable,
                            Ok(call) => {
                                self.replace(&call)?;
                                match self.calls.get(id) {
                                    Some(e) => RowOutcome::Rewritten(e.key_usage()),
                                    None => RowOutcome::Deferred,
                                }
                            }
                        }
                    }
                }
                _ => RowOutcome::Untouched,
            };
            tally.record(&found, outcome);
        }
        let next_cursor = more
            .then(|| {
                ids.last().map(|id| {
                    Cursor {
                        key: 0,
                        id: id.to_string(),
                    }
                    .encode()
                })
            })
            .flatten();
        Ok(ResealPage { tally, next_cursor })
    }
}
