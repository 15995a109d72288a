//! Master key rotation: re-encrypting stored rows still sealed under an old key,
//! and counting the rows under each key, so an old key can be retired.
//!
//! Rotating is three steps. Put a new key first in the ring and keep the old
//! ones (new writes seal under the new key, every key still opens). Run
//! [`rekey`]: it pages through every store in bounded batches and re-seals each
//! row still holding a value under another key, or a plain value written before
//! encryption was enabled. Read the [`RekeyReport`]: once no row is under the old
//! key ([`RekeyReport::can_retire`]), remove it from the ring.
//!
//! Each backend implements the primitive, `reseal_page`, on its stores
//! ([`crate::CallStore::reseal_page`] and the same on the window, transcript and
//! do-not-call stores). A rewrite is conditional on the row being unchanged
//! since it was read, so it never loses a concurrent write; a row that changed
//! is left for the next run. Calls in flight (Dispatching, Ringing, InProgress,
//! Canceling) are left alone too: their own next write seals them under the
//! current key.

use std::collections::BTreeMap;
use std::fmt;

use crate::crypto::{FieldCipher, KeyUsage};
use crate::error::{Error, ErrorKind, Result};
use crate::store::{MAX_PAGE_SIZE, Stores};

/// Counts over one kind of stored row (calls, windows, transcripts, do-not-call
/// entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyTally {
    /// Rows looked at.
    pub rows: u64,
    /// For each key id, the rows holding at least one value (or blind index)
    /// made with it.
    pub by_key: BTreeMap<u32, u64>,
    /// Rows holding plain values of fields that are sealed at rest (written
    /// before encryption was enabled).
    pub plain: u64,
    /// Rows re-sealed under the current key.
    pub rewritten: u64,
    /// Rows that needed re-sealing but were left for a later run: calls in
    /// flight, or rows that changed while being rewritten.
    pub deferred: u64,
    /// Rows that needed re-sealing but cannot be opened (their key is not in the
    /// ring, or they were tampered with): they can only be repaired or deleted.
    pub unreadable: u64,
}

/// What happened to one row in a re-encryption pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    /// Nothing to do, or only counting.
    Untouched,
    /// Re-sealed; its key usage now.
    Rewritten(KeyUsage),
    /// Needed it, but left for later (in flight, or changed meanwhile).
    Deferred,
    /// Needed it, but cannot be opened.
    Unreadable,
}

impl KeyTally {
    /// Counts one row: `found` is its key usage as read, `outcome` what a
    /// rewrite did to it.
    pub fn record(&mut self, found: &KeyUsage, outcome: RowOutcome) {
        self.rows += 1;
        let now = match &outcome {
            RowOutcome::Rewritten(after) => after,
            _ => found,
        };
        for k in &now.key_ids {
            *self.by_key.entry(*k).or_default() += 1;
        }
        if now.plain {
            self.plain += 1;
        }
        match outcome {
            RowOutcome::Untouched => {}
            RowOutcome::Rewritten(_) => self.rewritten += 1,
            RowOutcome::Deferred => self.deferred += 1,
            RowOutcome::Unreadable => self.unreadable += 1,
        }
    }

    fn add(&mut self, other: &KeyTally) {
        self.rows += other.rows;
        for (k, n) in &other.by_key {
            *self.by_key.entry(*k).or_default() += n;
        }
        self.plain += other.plain;
        self.rewritten += other.rewritten;
        self.deferred += other.deferred;
        self.unreadable += other.unreadable;
    }
}

/// One page of a `reseal_page` scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealPage {
    /// What the page held and what was done to it.
    pub tally: KeyTally,
    /// Where the next page starts; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Checks a `reseal_page` request: the page size, and that a rewrite has a
/// cipher to seal with. Returns the cipher to use for rewriting, if any.
pub fn check_reseal(
    cipher: Option<&FieldCipher>,
    rewrite: bool,
    limit: u32,
) -> Result<Option<&FieldCipher>> {
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(Error::validation(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    if rewrite && cipher.is_none() {
        return Err(Error::validation(
            "CALLCAT_MASTER_KEY",
            "re-encryption needs a master key: this store has no cipher",
        ));
    }
    Ok(cipher.filter(|_| rewrite))
}

/// The error a store without key rotation answers `reseal_page` with.
pub fn reseal_unsupported(what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("this backend cannot re-encrypt or count the keys of its {what}"),
    )
}

/// The stores [`rekey`] goes through, by the name the report uses.
pub const TABLES: [&str; 4] = ["calls", "windows", "transcripts", "do-not-call"];

/// What [`rekey`] or [`key_report`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyReport {
    /// The key new values are sealed with.
    pub current_key_id: u32,
    /// Every key id of the ring, current first.
    pub ring: Vec<u32>,
    /// Per store (see [`TABLES`]): the counts.
    pub tables: BTreeMap<&'static str, KeyTally>,
    /// Stores that cannot count or re-encrypt, and why: while one is listed, no
    /// key can be declared unused.
    pub unsupported: BTreeMap<&'static str, String>,
}

impl RekeyReport {
    /// Rows (over every store) holding a value made with `key_id`.
    pub fn rows_under(&self, key_id: u32) -> u64 {
        self.tables
            .values()
            .map(|t| t.by_key.get(&key_id).copied().unwrap_or(0))
            .sum()
    }

    /// Rows still holding plain values of sealed fields.
    pub fn plain_rows(&self) -> u64 {
        self.tables.values().map(|t| t.plain).sum()
    }

    /// Whether `key_id` can be removed from the ring: it is not the current key,
    /// no row uses it, and every store could count.
    pub fn can_retire(&self, key_id: u32) -> bool {
        key_id != self.current_key_id && self.rows_under(key_id) == 0 && self.unsupported.is_empty()
    }

    /// Key ids rows use that are not in the ring (those rows cannot be read).
    pub fn unknown_keys(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .tables
            .values()
            .flat_map(|t| t.by_key.keys().copied())
            .filter(|k| !self.ring.contains(k))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl fmt::Display for RekeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "current key: {}", self.current_key_id)?;
        for (name, t) in &self.tables {
            let keys: Vec<String> = t
                .by_key
                .iter()
                .map(|(k, n)| format!("key {k}: {n}"))
                .collect();
            let keys = if keys.is_empty() {
                "no sealed values".to_owned()
            } else {
                keys.join(", ")
            };
            writeln!(
                f,
                "{name}: {} rows; {keys}; plain: {}; rewritten: {}, deferred: {}, unreadable: {}",
                t.rows, t.plain, t.rewritten, t.deferred, t.unreadable
            )?;
        }
        for (name, why) in &self.unsupported {
            writeln!(f, "{name}: not counted: {why}")?;
        }
        for k in &self.ring {
            if *k == self.current_key_id {
                continue;
            }
            let n = self.rows_under(*k);
            let verdict = if self.can_retire(*k) {
                "can be retired"
            } else {
                "still needed"
            };
            writeln!(f, "key {k}: {n} rows: {verdict}")?;
        }
        for k in self.unknown_keys() {
            writeln!(
                f,
                "key {k}: {} rows under a key missing from the ring: they cannot be read",
                self.rows_under(k)
            )?;
        }
        Ok(())
    }
}

/// Pages through one store with `reseal_page`.
async fn scan<F, Fut>(mut page: F) -> Result<KeyTally>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<ResealPage>>,
{
    let mut tally = KeyTally::default();
    let mut cursor: Option<String> = None;
    loop {
        let p = page(cursor.take()).await?;
        tally.add(&p.tally);
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(tally),
        }
    }
}

/// A store's tally, or why it cannot count (`Unsupported`).
type Counted = Vec<(&'static str, std::result::Result<KeyTally, String>)>;

/// Only "cannot do this" is kept per store; any other error stops the pass.
fn keep_unsupported(r: Result<KeyTally>) -> Result<std::result::Result<KeyTally, String>> {
    match r {
        Ok(t) => Ok(Ok(t)),
        Err(e) if e.kind() == ErrorKind::Unsupported => Ok(Err(e.message().to_owned())),
        Err(e) => Err(e),
    }
}

/// One pass over every store: re-sealing (`rewrite`) or only counting.
async fn pass(stores: &Stores, rewrite: bool, batch: u32) -> Result<Counted> {
    let calls =
        scan(|c| async move { stores.calls.reseal_page(rewrite, batch, c.as_deref()).await }).await;
    let calls = keep_unsupported(calls)?;
    let windows = scan(|c| async move {
        stores
            .windows
            .reseal_page(rewrite, batch, c.as_deref())
            .await
    })
    .await;
    let windows = keep_unsupported(windows)?;
    let transcripts = scan(|c| async move {
        stores
            .transcripts
            .reseal_page(rewrite, batch, c.as_deref())
            .await
    })
    .await;
    let transcripts = keep_unsupported(transcripts)?;
    let do_not_call = scan(|c| async move {
        stores
            .do_not_call
            .reseal_page(rewrite, batch, c.as_deref())
            .await
    })
    .await;
    let do_not_call = keep_unsupported(do_not_call)?;
    Ok(vec![
        (TABLES[0], calls),
        (TABLES[1], windows),
        (TABLES[2], transcripts),
        (TABLES[3], do_not_call),
    ])
}

fn report(cipher: &FieldCipher, counted: Counted, rewritten: Option<Counted>) -> RekeyReport {
    let mut out = RekeyReport {
        current_key_id: cipher.current_key_id(),
        ring: cipher.key_ids(),
        tables: BTreeMap::new(),
        unsupported: BTreeMap::new(),
    };
    let mut done: BTreeMap<&'static str, KeyTally> = rewritten
        .into_iter()
        .flatten()
        .filter_map(|(n, r)| r.ok().map(|t| (n, t)))
        .collect();
    for (name, r) in counted {
        match r {
            Ok(mut t) => {
                if let Some(d) = done.remove(name) {
                    t.rewritten = d.rewritten;
                    t.deferred = d.deferred;
                    t.unreadable = d.unreadable;
                }
                out.tables.insert(name, t);
            }
            Err(why) => {
                out.unsupported.insert(name, why);
            }
        }
    }
    out
}

/// Counts, in every store, the rows under each key of `cipher`'s ring (and
/// under keys missing from it), without changing anything. `batch` rows are
/// read per request (1 to [`MAX_PAGE_SIZE`]).
pub async fn key_report(stores: &Stores, cipher: &FieldCipher, batch: u32) -> Result<RekeyReport> {
    check_reseal(Some(cipher), false, batch)?;
    let counted = pass(stores, false, batch).await?;
    Ok(report(cipher, counted, None))
}

/// Re-seals, in every store, the rows still under a key other than the current
/// one (or holding plain values), `batch` rows per request, then counts the
/// rows under each key (see the module docs). The stores must have been built
/// with the same ring as `cipher`. Safe to run while the service runs, and to
/// run again: rows already under the current key are only counted.
pub async fn rekey(stores: &Stores, cipher: &FieldCipher, batch: u32) -> Result<RekeyReport> {
    check_reseal(Some(cipher), true, batch)?;
    let rewritten = pass(stores, true, batch).await?;
    let counted = pass(stores, false, batch).await?;
    Ok(report(cipher, counted, Some(rewritten)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn usage(keys: &[u32], plain: bool) -> KeyUsage {
        KeyUsage {
            key_ids: keys.iter().copied().collect(),
            plain,
        }
    }

    #[test]
    fn tallies_count_rows_by_key_after_rewriting() {
        let mut t = KeyTally::default();
        t.record(
            &usage(&[1], false),
            RowOutcome::Rewritten(usage(&[2], false)),
        );
        t.record(&usage(&[1, 2], false), RowOutcome::Deferred);
        t.record(&usage(&[], true), RowOutcome::Unreadable);
        t.record(&usage(&[2], false), RowOutcome::Untouched);
        assert_eq!(t.rows, 4);
        assert_eq!(t.by_key, BTreeMap::from([(1, 1), (2, 3)]));
        assert_eq!(
            (t.plain, t.rewritten, t.deferred, t.unreadable),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn a_key_can_be_retired_only_when_no_row_uses_it_and_every_store_counted() {
        let cipher = FieldCipher::new(vec![MasterKey::new(2, [2; 32]), MasterKey::new(1, [1; 32])])
            .expect("cipher");
        let mut calls = KeyTally::default();
        calls.record(&usage(&[2], false), RowOutcome::Untouched);
        let mut windows = KeyTally::default();
        windows.record(&usage(&[1], false), RowOutcome::Deferred);
        let mut r = report(
            &cipher,
            vec![("calls", Ok(calls.clone())), ("windows", Ok(windows))],
            None,
        );
        assert_eq!(r.rows_under(1), 1);
        assert!(!r.can_retire(1) && !r.can_retire(2));
        assert!(r.to_string().contains("key 1: 1 rows: still needed"), "{r}");
        r.tables.insert("windows", KeyTally::default());
        assert!(r.can_retire(1));
        assert!(
            r.to_string().contains("key 1: 0 rows: can be retired"),
            "{r}"
        );
        let r = report(
            &cipher,
            vec![
                ("calls", Ok(calls)),
                (
                    "do-not-call",
                    Err(reseal_unsupported("do-not-call entries")
                        .message()
                        .to_owned()),
                ),
            ],
            None,
        );
        assert!(
            !r.can_retire(1),
            "a store that cannot count blocks retiring"
        );
        assert!(r.to_string().contains("do-not-call: not counted"), "{r}");
    }

    #[test]
    fn reseal_requests_are_checked() {
        let cipher = FieldCipher::new(vec![MasterKey::new(1, [1; 32])]).expect("cipher");
        assert_eq!(
            check_reseal(Some(&cipher), true, 0)
                .expect_err("zero")
                .field(),
            Some("limit")
        );
        assert_eq!(
            check_reseal(None, true, 10).expect_err("no cipher").field(),
            Some("CALLCAT_MASTER_KEY")
        );
        assert!(check_reseal(None, false, 10).expect("count only").is_none());
        assert!(
            check_reseal(Some(&cipher), false, 10)
                .expect("count")
                .is_none()
        );
        assert!(
            check_reseal(Some(&cipher), true, 10)
                .expect("rewrite")
                .is_some()
        );
    }
}
