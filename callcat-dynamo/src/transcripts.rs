//! [`DynamoTranscriptStore`]: transcripts with a TTL, split into chunks when large.
//!
//! Layout (partition key `callId`, sort key `sk`):
//! - `HEAD`: owner, provider call id, `expiresAt` (TTL, epoch seconds), `expiresAtMs`,
//!   `version`, and either the whole transcript as JSON in `body` (when it fits in
//!   [`INLINE_MAX`] bytes) or the generation `generation` and count `chunks` of its pieces.
//! - `CHUNK#<generation>#<i>`: piece `i` of the JSON (at most [`CHUNK_MAX`] bytes), with the
//!   same `expiresAt`, so DynamoDB's TTL removes them too.
//!
//! A write stores new pieces under a fresh generation, then swings the head to it
//! with a conditional write on `version`, then deletes the old pieces. Readers
//! follow the head, so they never see a half-written transcript.

use std::collections::HashSet;

use aws_sdk_dynamodb::types::ReturnConsumedCapacity;
use callcat_core::crypto::{open_transcript, seal_transcript};
use callcat_core::rotation::{KeyTally, ResealPage, RowOutcome, check_reseal};
use callcat_core::{
    CallId, FieldCipher, KeyUsage, Owner, Result, Transcript, TranscriptSegment, TranscriptStore,
};
use chrono::{DateTime, Utc};
use futures::future::{join_all, try_join_all};

use crate::client::{Ctx, Expr, Item, QuerySpec, get_n, get_s, n, s};
use crate::error::{DResult, DynamoError};
use crate::keys::shard_of;
use crate::metrics::{DynamoMetrics, MetricsSnapshot, OpKind};
use crate::rotation::scan_page;

/// The largest transcript JSON kept inline in the head item (DynamoDB's item limit
/// is 400 KB, attribute names included).
pub const INLINE_MAX: usize = 350_000;
/// The largest piece of transcript JSON per chunk item.
pub const CHUNK_MAX: usize = 350_000;
/// How many times `append` re-reads and retries when another writer got in between.
const APPEND_ATTEMPTS: usize = 16;
/// Chunk writes in flight at once.
const CHUNK_PARALLELISM: usize = 8;

mod attr {
    pub const CALL_ID: &str = "callId";
    pub const SK: &str = "sk";
    pub const OWNER: &str = "ownerKey";
    pub const PROVIDER: &str = "providerCallId";
    pub const EXPIRES_AT: &str = "expiresAt";
    pub const EXPIRES_AT_MS: &str = "expiresAtMs";
    pub const EXP_SHARD: &str = "expShard";
    pub const VERSION: &str = "version";
    pub const BODY: &str = "body";
    pub const GEN: &str = "gen";
    pub const CHUNKS: &str = "chunks";
}

mod index {
    pub const PROVIDER: &str = "provider-call-id";
    pub const EXPIRY: &str = "expiry";
}

const HEAD: &str = "HEAD";

fn chunk_sk(generation: &str, i: usize) -> String {
    format!("CHUNK#{generation}#{i:06}")
}

/// Epoch seconds at or after `at`: DynamoDB's TTL never removes an item early.
fn ttl_seconds(at: DateTime<Utc>) -> i64 {
    let ms = at.timestamp_millis();
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)
}

/// Splits `s` into pieces of at most `max` bytes, on character boundaries.
fn split(s: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        out.push(piece);
        rest = tail;
    }
    out
}

/// What a head item says.
struct Head {
    version: u64,
    owner_key: String,
    expires_at_ms: i64,
    body: Option<String>,
    generation: Option<String>,
    chunks: usize,
}

fn parse_head(item: &Item) -> DResult<Head> {
    let bad = |what: &str| DynamoError::Corrupt(format!("transcript head without {what}"));
    Ok(Head {
        version: get_n(item, attr::VERSION).ok_or_else(|| bad("version"))?,
        owner_key: get_s(item, attr::OWNER)
            .ok_or_else(|| bad("owner"))?
            .to_owned(),
        expires_at_ms: get_n(item, attr::EXPIRES_AT_MS).ok_or_else(|| bad("expiry"))?,
        body: get_s(item, attr::BODY).map(str::to_owned),
        generation: get_s(item, attr::GEN).map(str::to_owned),
        chunks: get_n(item, attr::CHUNKS).unwrap_or(0),
    })
}

/// Transcripts in a DynamoDB table with TTL on `expiresAt`.
#[derive(Clone)]
pub struct DynamoTranscriptStore {
    ctx: Ctx,
    table: String,
    shards: u32,
    cipher: Option<FieldCipher>,
}

impl std::fmt::Debug for DynamoTranscriptStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoTranscriptStore")
            .field("table", &self.table)
            .field("shards", &self.shards)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl DynamoTranscriptStore {
    /// A store over an existing table; `shards` spreads the expiry index (1 to 256).
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>, shards: u32) -> Self {
        DynamoTranscriptStore {
            ctx: Ctx::new(client),
            table: table.into(),
            shards: shards.clamp(1, crate::config::MAX_SHARDS),
            cipher: None,
        }
    }

    /// The same store, sealing segment texts and the free text with `cipher`
    /// (fields `transcript.segments`, `transcript.text`) before they are stored.
    pub fn with_cipher(mut self, cipher: FieldCipher) -> Self {
        self.cipher = Some(cipher);
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the transcripts table with its indexes and turns on TTL on `expiresAt` (on-demand billing) if it does not exist, and waits
    /// until it is active. For development and tests.
    pub async fn create_table(&self) -> Result<()> {
        Ok(crate::tables::create_transcripts(&self.ctx.client, &self.table).await?)
    }

    /// Deletes the table (a missing table is not an error). For tests.
    pub async fn delete_table(&self) -> Result<()> {
        Ok(crate::tables::delete_one(&self.ctx.client, &self.table).await?)
    }

    /// This store's request and capacity counters.
    pub fn metrics(&self) -> std::sync::Arc<DynamoMetrics> {
        self.ctx.metrics.clone()
    }

    /// A snapshot of this store's counters.
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        self.ctx.metrics.snapshot()
    }

    fn key(&self, call_id: CallId, sk: &str) -> Item {
        Item::from([
            (attr::CALL_ID.to_owned(), s(call_id.to_string())),
            (attr::SK.to_owned(), s(sk)),
        ])
    }

    async fn get_head(&self, call_id: CallId) -> DResult<Option<Item>> {
        let req = self
            .ctx
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(call_id, HEAD)))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        Ok(self
            .ctx
            .send(OpKind::Read, req)
            .await
            .map_err(|e| DynamoError::sdk("GetItem", e))?
            .item)
    }

    /// The stored transcript and its head version, expired or not.
    async fn read(&self, call_id: CallId) -> DResult<Option<(Transcript, Head)>> {
        match self.read_sealed(call_id).await? {
            Some((t, head)) => {
                let t = open_transcript(t, self.cipher.as_ref()).map_err(DynamoError::Core)?;
                Ok(Some((t, head)))
            }
            None => Ok(None),
        }
    }

    /// The transcript as stored (its texts still sealed) and its head.
    async fn read_sealed(&self, call_id: CallId) -> DResult<Option<(Transcript, Head)>> {
        // A concurrent write may delete the pieces of the generation we read the
        // head of; then read the new head.
        for _ in 0..4 {
            let Some(item) = self.get_head(call_id).await? else {
                return Ok(None);
            };
            let head = parse_head(&item)?;
            let json = match (&head.body, &head.generation) {
                (Some(body), _) => body.clone(),
                (None, Some(generation)) => {
                    let mut e = Expr::new();
                    let cond = format!(
                        "{} = {} AND begins_with({}, {})",
                        e.name(attr::CALL_ID),
                        e.value(s(call_id.to_string())),
                        e.name(attr::SK),
                        e.value(s(format!("CHUNK#{generation}#")))
                    );
                    let spec = QuerySpec {
                        table: self.table.clone(),
                        index: None,
                        key_condition: cond,
                        filter: None,
                        expr: e,
                        forward: true,
                        consistent: true,
                    };
                    let pieces = self.ctx.query_items(&spec, head.chunks + 1).await?;
                    if pieces.len() != head.chunks {
                        continue;
                    }
                    let mut json = String::new();
                    for p in &pieces {
                        json.push_str(get_s(p, attr::BODY).ok_or_else(|| {
                            DynamoError::Corrupt("transcript chunk without body".into())
                        })?);
                    }
                    json
                }
                (None, None) => {
                    return Err(DynamoError::Corrupt(
                        "transcript head without body or chunks".into(),
                    ));
                }
            };
            let t: Transcript = serde_json::from_str(&json).map_err(|e| {
                DynamoError::Corrupt(format!("transcript of call {call_id} does not parse: {e}"))
            })?;
            return Ok(Some((t, head)));
        }
        Err(DynamoError::Unavailable {
            op: "Query",
            message: format!("transcript of call {call_id} kept changing while being read"),
            source: None,
        })
    }

    async fn delete_pieces(&self, call_id: CallId, generation: &str, chunks: usize) {
        let keys: Vec<Item> = (0..chunks)
            .map(|i| self.key(call_id, &chunk_sk(generation, i)))
            .collect();
        for group in keys.chunks(CHUNK_PARALLELISM) {
            let results = join_all(group.iter().map(|k| {
                let req = self
                    .ctx
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(k.clone()))
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send();
                self.ctx.send(OpKind::Write, req)
            }))
            .await;
            for r in results {
                if let Err(e) = r {
                    // Left-over pieces carry the TTL, so DynamoDB removes them later.
                    tracing::warn!(%call_id, error = %DynamoError::sdk("DeleteItem", e), "could not delete an old transcript piece");
                }
            }
        }
    }

    /// Writes `t` if the head is still at `expected` (`None`: absent). `Ok(false)` if
    /// another writer got in between.
    async fn write(&self, t: &Transcript, expected: Option<&Head>) -> DResult<bool> {
        let sealed = seal_transcript(t, self.cipher.as_ref()).map_err(DynamoError::Core)?;
        let json = serde_json::to_string(&sealed)
            .map_err(|e| DynamoError::Corrupt(format!("transcript does not serialize: {e}")))?;
        let ttl = ttl_seconds(t.expires_at);
        let expires_ms = t.expires_at.timestamp_millis();
        let mut head = self.key(t.call_id, HEAD);
        head.insert(attr::OWNER.into(), s(t.owner.key()));
        head.insert(attr::EXPIRES_AT.into(), n(ttl));
        head.insert(attr::EXPIRES_AT_MS.into(), n(expires_ms));
        head.insert(
            attr::EXP_SHARD.into(),
            s(format!(
                "EXP#{}",
                shard_of(t.call_id.as_uuid(), self.shards)
            )),
        );
        head.insert(
            attr::VERSION.into(),
            n(expected.map_or(0, |h| h.version) + 1),
        );
        if let Some(p) = t.provider_call_id.as_deref().filter(|p| !p.is_empty()) {
            head.insert(attr::PROVIDER.into(), s(p));
        }
        let mut new_pieces: Option<(String, usize)> = None;
        if json.len() <= INLINE_MAX {
            head.insert(attr::BODY.into(), s(json.clone()));
        } else {
            let generation = uuid::Uuid::now_v7().simple().to_string();
            let pieces = split(&json, CHUNK_MAX);
            for (group_no, group) in pieces.chunks(CHUNK_PARALLELISM).enumerate() {
                let results = join_all(group.iter().enumerate().map(|(j, piece)| {
                    let mut item = self.key(
                        t.call_id,
                        &chunk_sk(&generation, group_no * CHUNK_PARALLELISM + j),
                    );
                    item.insert(attr::BODY.into(), s(*piece));
                    item.insert(attr::EXPIRES_AT.into(), n(ttl));
                    let req = self
                        .ctx
                        .client
                        .put_item()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .return_consumed_capacity(ReturnConsumedCapacity::Total)
                        .send();
                    self.ctx.send(OpKind::Write, req)
                }))
                .await;
                if let Some(err) = results.into_iter().find_map(|r| r.err()) {
                    self.delete_pieces(t.call_id, &generation, (group_no + 1) * CHUNK_PARALLELISM)
                        .await;
                    return Err(DynamoError::sdk("PutItem", err));
                }
            }
            head.insert(attr::GEN.into(), s(generation.clone()));
            head.insert(attr::CHUNKS.into(), n(pieces.len()));
            new_pieces = Some((generation, pieces.len()));
        }
        let mut e = Expr::new();
        let cond = match expected {
            None => format!("attribute_not_exists({})", e.name(attr::CALL_ID)),
            Some(h) => format!("{} = {}", e.name(attr::VERSION), e.value(n(h.version))),
        };
        let req = self
            .ctx
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(head))
            .condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        match self.ctx.send(OpKind::Write, req).await {
            Ok(_) => {
                if let Some(old) = expected
                    && let Some(generation) = &old.generation
                {
                    self.delete_pieces(t.call_id, generation, old.chunks).await;
                }
                Ok(true)
            }
            Err(err) => {
                if let Some((generation, count)) = &new_pieces {
                    self.delete_pieces(t.call_id, generation, *count).await;
                }
                match DynamoError::sdk("PutItem", err) {
                    DynamoError::Conflict(_) => Ok(false),
                    other => Err(other),
                }
            }
        }
    }

    async fn put_inner(&self, t: &Transcript) -> DResult<()> {
        for _ in 0..APPEND_ATTEMPTS {
            let current = self.read_head_only(t.call_id).await?;
            if let Some(h) = &current
                && h.owner_key != t.owner.key()
            {
                return Err(DynamoError::Conflict(
                    "transcript belongs to another owner".into(),
                ));
            }
            if self.write(t, current.as_ref()).await? {
                return Ok(());
            }
        }
        Err(DynamoError::Conflict(format!(
            "transcript of call {} kept changing while being replaced",
            t.call_id
        )))
    }

    async fn read_head_only(&self, call_id: CallId) -> DResult<Option<Head>> {
        self.get_head(call_id)
            .await?
            .as_ref()
            .map(parse_head)
            .transpose()
    }

    async fn append_inner(
        &self,
        call_id: CallId,
        owner: &Owner,
        provider_call_id: Option<&str>,
        segments: &[TranscriptSegment],
        now: DateTime<Utc>,
    ) -> DResult<Transcript> {
        for _ in 0..APPEND_ATTEMPTS {
            let (mut t, head) = match self.read(call_id).await? {
                Some((t, head)) => (t, Some(head)),
                None => (Transcript::new(call_id, owner.clone(), now), None),
            };
            if &t.owner != owner {
                return Err(DynamoError::Conflict(
                    "transcript belongs to another owner".into(),
                ));
            }
            if let Some(p) = provider_call_id {
                t.provider_call_id = Some(p.to_owned());
            }
            t.segments.extend_from_slice(segments);
            t.updated_at = now;
            if self.write(&t, head.as_ref()).await? {
                return Ok(t);
            }
        }
        Err(DynamoError::Conflict(format!(
            "transcript of call {call_id} kept changing while being appended to"
        )))
    }

    async fn get_by_provider_inner(
        &self,
        provider_call_id: &str,
        now: DateTime<Utc>,
    ) -> DResult<Option<Transcript>> {
        if provider_call_id.is_empty() {
            return Ok(None);
        }
        let mut e = Expr::new();
        let cond = format!(
            "{} = {}",
            e.name(attr::PROVIDER),
            e.value(s(provider_call_id))
        );
        let spec = QuerySpec {
            table: self.table.clone(),
            index: Some(index::PROVIDER),
            key_condition: cond,
            filter: None,
            expr: e,
            forward: true,
            consistent: false,
        };
        let mut seen = HashSet::new();
        for item in self.ctx.query_items(&spec, 25).await? {
            let Some(id) = get_s(&item, attr::CALL_ID).and_then(|v| v.parse::<CallId>().ok())
            else {
                continue;
            };
            if !seen.insert(id) {
                continue;
            }
            if let Some((t, _)) = self.read(id).await?
                && !t.is_expired(now)
                && t.provider_call_id.as_deref() == Some(provider_call_id)
            {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    /// Key rotation ([`TranscriptStore::reseal_page`]): a Scan page of the
    /// transcripts' head items; a rewrite re-seals the whole transcript under
    /// the current key as a new generation, conditional on the head's version
    /// (an append in between wins, and the transcript is left for a later run).
    async fn reseal_page_inner(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        let cipher = check_reseal(self.cipher.as_ref(), rewrite, limit)?;
        let mut e = Expr::new();
        let filter = format!("{} = {}", e.name(attr::SK), e.value(s(HEAD)));
        let (heads, next_cursor) = scan_page(
            &self.ctx,
            &self.table,
            &[attr::CALL_ID, attr::SK],
            limit,
            cursor,
            Some((filter, e)),
        )
        .await?;
        let mut tally = KeyTally::default();
        for item in &heads {
            let Some(id) = get_s(item, attr::CALL_ID).and_then(|v| v.parse::<CallId>().ok()) else {
                continue;
            };
            // Gone since the scan (expired, deleted): nothing to count.
            let Some((sealed, head)) = self.read_sealed(id).await? else {
                continue;
            };
            let found = KeyUsage::of_transcript(&sealed);
            let outcome = match cipher {
                Some(c) if found.needs_rewrite(c) => match open_transcript(sealed, Some(c)) {
                    Err(_) => RowOutcome::Unreadable,
                    Ok(plain) => {
                        let after = KeyUsage::of_transcript(&seal_transcript(&plain, Some(c))?);
                        if self.write(&plain, Some(&head)).await? {
                            RowOutcome::Rewritten(after)
                        } else {
                            RowOutcome::Deferred
                        }
                    }
                },
                _ => RowOutcome::Untouched,
            };
            tally.record(&found, outcome);
        }
        Ok(ResealPage { tally, next_cursor })
    }

    async fn delete_expired_inner(&self, now: DateTime<Utc>) -> DResult<u64> {
        let now_ms = now.timestamp_millis();
        let specs: Vec<QuerySpec> = (0..self.shards)
            .map(|sh| {
                let mut e = Expr::new();
                let cond = format!(
                    "{} = {} AND {} <= {}",
                    e.name(attr::EXP_SHARD),
                    e.value(s(format!("EXP#{sh}"))),
                    e.name(attr::EXPIRES_AT_MS),
                    e.value(n(now_ms))
                );
                QuerySpec {
                    table: self.table.clone(),
                    index: Some(index::EXPIRY),
                    key_condition: cond,
                    filter: None,
                    expr: e,
                    forward: true,
                    consistent: false,
                }
            })
            .collect();
        let pages =
            try_join_all(specs.iter().map(|sp| self.ctx.query_items(sp, usize::MAX))).await?;
        let mut deleted = 0u64;
        for item in pages.into_iter().flatten() {
            let Some(id) = get_s(&item, attr::CALL_ID).and_then(|v| v.parse::<CallId>().ok())
            else {
                continue;
            };
            if self.delete_if_expired(id, now_ms).await? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Deletes a transcript whose head is expired at `now_ms`, then its pieces.
    async fn delete_if_expired(&self, call_id: CallId, now_ms: i64) -> DResult<bool> {
        let mut e = Expr::new();
        let cond = format!("{} <= {}", e.name(attr::EXPIRES_AT_MS), e.value(n(now_ms)));
        let req = self
            .ctx
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.key(call_id, HEAD)))
            .condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        let old = match self.ctx.send(OpKind::Write, req).await {
            Ok(out) => out.attributes,
            Err(err) => {
                return match DynamoError::sdk("DeleteItem", err) {
                    // Rewritten with a later expiry, or already gone.
                    DynamoError::Conflict(_) => Ok(false),
                    other => Err(other),
                };
            }
        };
        let Some(old) = old else {
            return Ok(false);
        };
        let head = parse_head(&old)?;
        if let Some(generation) = &head.generation {
            self.delete_pieces(call_id, generation, head.chunks).await;
        }
        Ok(true)
    }
}

#[async_trait::async_trait]
impl TranscriptStore for DynamoTranscriptStore {
    async fn put(&self, transcript: &Transcript) -> Result<()> {
        Ok(self.put_inner(transcript).await?)
    }

    async fn append(
        &self,
        call_id: CallId,
        owner: &Owner,
        provider_call_id: Option<&str>,
        segments: &[TranscriptSegment],
        now: DateTime<Utc>,
    ) -> Result<Transcript> {
        Ok(self
            .append_inner(call_id, owner, provider_call_id, segments, now)
            .await?)
    }

    async fn get(&self, call_id: CallId, now: DateTime<Utc>) -> Result<Option<Transcript>> {
        // TTL deletion is lazy: hide what has expired, without reading its pieces.
        match self.read_head_only(call_id).await? {
            Some(h) if h.expires_at_ms > now.timestamp_millis() => {}
            _ => return Ok(None),
        }
        Ok(self
            .read(call_id)
            .await?
            .map(|(t, _)| t)
            .filter(|t| !t.is_expired(now)))
    }

    async fn get_by_provider_call_id(
        &self,
        provider_call_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Transcript>> {
        Ok(self.get_by_provider_inner(provider_call_id, now).await?)
    }

    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        self.reseal_page_inner(rewrite, limit, cursor).await
    }

    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(self.delete_expired_inner(now).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_char_boundaries_and_sizes() {
        let text = "é".repeat(10); // 2 bytes each
        let pieces = split(&text, 5);
        assert!(pieces.iter().all(|p| p.len() <= 5 && !p.is_empty()));
        assert_eq!(pieces.concat(), text);
        assert!(split("", 5).is_empty());
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        let at = DateTime::from_timestamp_millis(1_700_000_000_001).expect("valid");
        assert_eq!(ttl_seconds(at), 1_700_000_001);
        let at = DateTime::from_timestamp_millis(1_700_000_000_000).expect("valid");
        assert_eq!(ttl_seconds(at), 1_700_000_000);
    }
}
