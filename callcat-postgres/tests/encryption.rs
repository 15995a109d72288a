//! Encryption at rest on PostgreSQL: raw rows after a full lifecycle hold no
//! plaintext number, name, prompt, analysis, error or recording URL, keys
//! rotate, tampering is a typed error, and the blind-index look-up of active
//! calls to a number. (Windows and `rekey`: tests/key_rotation.rs.)

mod common;

use callcat_core::chrono::{DateTime, Utc};
use callcat_core::store::CallStoreExt;
use callcat_core::{
    ActiveScope, Call, CallAnalysis, CallStatus, CallStore, ErrorKind, FieldCipher, MasterKey,
    Owner, PhoneNumber, SpeakerRole, TranscriptSegment, TranscriptStore, WorkerId,
};
use callcat_postgres::sqlx::{self, AssertSqlSafe};
use callcat_postgres::{PostgresCallStore, PostgresStore};
use common::{TestDb, call_at, owner, secs, t0};

/// The number `common::call_at` dials.
const NUMBER: &str = "+14155550123";
const CALLER: &str = "+442071838750";
const RECORDING: &str = "https://recordings.example/secret-take.wav";

fn ring(ids: &[u32]) -> FieldCipher {
    FieldCipher::new(
        ids.iter()
            .map(|i| MasterKey::new(*i, [*i as u8; 32]))
            .collect(),
    )
    .expect("cipher")
}

fn table(db: &TestDb, name: &str) -> String {
    format!("\"{}\".{name}", db.schema)
}

/// `(record::text, phone_index)` of a call's row, read with plain SQL.
async fn raw_row(db: &TestDb, call: &Call) -> (String, Option<String>) {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT record::text, phone_index FROM {} WHERE id = $1",
        table(db, "calls")
    )))
    .bind(call.id.as_uuid())
    .fetch_one(db.store.pool())
    .await
    .expect("raw row")
}

fn assert_no_plaintext(text: &str) {
    for secret in [
        "4155550123",
        "2071838750",
        "secret-take",
        "recordings.example",
        "Secretname",
        "secret-subject",
        "secret-prompt",
        "secret-variable",
        "secret-summary",
        "secret-action",
        "secret-error",
        "secret-attempt",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} stored in the clear: {text}"
        );
    }
}

/// The call with a caller number and personal texts in every sealed field.
fn with_caller(mut c: Call) -> Call {
    c.caller_number = Some(PhoneNumber::parse(CALLER).expect("caller"));
    c.callee_name = "Ada Secretname".into();
    c.subject = "the secret-subject".into();
    c.instructions = "Ask about the secret-prompt.".into();
    c.variables
        .insert("diagnosis".into(), "secret-variable".into());
    c
}

/// create → claim → ringing (provider id) → completed (recording) → analysis.
async fn lifecycle(calls: &PostgresCallStore, o: &Owner) -> Call {
    let call = with_caller(call_at(o, t0()));
    calls.create(&call).await.expect("create");
    let mut claimed = calls
        .claim_due(t0(), 10, &WorkerId::new("w1"), t0() + secs(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let mut c = claimed.remove(0);
    assert_eq!(
        c.phone_number.as_str(),
        NUMBER,
        "the claim opens the record"
    );
    c.status = CallStatus::Ringing;
    c.provider_call_id = Some(format!("prov-{}", c.id));
    c.lease = None;
    c.next_action_at = None;
    let mut c = calls.update(&c).await.expect("ringing");
    c.status = CallStatus::Completed;
    c.recording_url = Some(RECORDING.into());
    c.ended_at = Some(t0() + secs(90));
    c.finished_at = c.ended_at;
    let mut c = calls.update(&c).await.expect("completed");
    c.analysis = Some(CallAnalysis {
        summary: Some("secret-summary".into()),
        action_items: vec!["secret-action".into()],
        ..CallAnalysis::default()
    });
    c.last_error = Some("secret-error".into());
    c.current_attempt_mut().error = Some("secret-attempt".into());
    calls.update(&c).await.expect("analysis")
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_rows_after_a_lifecycle_hold_no_plaintext() {
    let db = db_or_skip!();
    let store = db.store.with_cipher(ring(&[1]));
    let calls = store.calls();
    let o = owner("acme", "alice");
    let done = lifecycle(&calls, &o).await;

    let (record, phone_index) = raw_row(&db, &done).await;
    assert_no_plaintext(&record);
    assert!(record.contains("\"cc1.1."), "sealed values: {record}");
    let phone_index = phone_index.expect("blind index stored");
    assert!(phone_index.starts_with("bi1."), "{phone_index}");
    assert_no_plaintext(&phone_index);
    let all: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT t::text FROM {} AS t",
        table(&db, "calls")
    )))
    .fetch_all(db.store.pool())
    .await
    .expect("whole table");
    for (row,) in &all {
        assert_no_plaintext(row);
    }

    // The owner still reads everything back, by every read path.
    let read = calls.get(done.id).await.expect("get").expect("found");
    assert_eq!(read, done);
    assert_eq!(read.phone_number.as_str(), NUMBER);
    assert_eq!(read.recording_url.as_deref(), Some(RECORDING));
    let by_provider = calls
        .find_by_provider_call_id(done.provider_call_id.as_deref().expect("id"))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(by_provider, done);
    let page = calls
        .list(
            &o,
            &callcat_core::ListQuery::new(callcat_core::ListView::Finished, 10),
        )
        .await
        .expect("list");
    assert_eq!(page.items, vec![done.clone()]);

    // Transcript texts are sealed too.
    let transcripts = store.transcripts();
    let seg = TranscriptSegment::new(SpeakerRole::User, "call me on 4155550123");
    transcripts
        .append(
            done.id,
            &o,
            Some("prov-t"),
            std::slice::from_ref(&seg),
            t0(),
        )
        .await
        .expect("append");
    let mut whole = transcripts
        .get(done.id, t0())
        .await
        .expect("get")
        .expect("found");
    assert_eq!(whole.segments, vec![seg.clone()]);
    whole.text = Some("free text with secret-take".into());
    transcripts.put(&whole).await.expect("put");
    let (segments, text): (String, Option<String>) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT segments::text, text FROM {} WHERE call_id = $1",
        table(&db, "transcripts")
    )))
    .bind(done.id.as_uuid())
    .fetch_one(db.store.pool())
    .await
    .expect("raw transcript");
    assert_no_plaintext(&segments);
    assert_no_plaintext(text.as_deref().expect("text"));
    assert_eq!(
        transcripts
            .get_by_provider_call_id("prov-t", t0())
            .await
            .expect("get")
            .expect("found"),
        whole
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_old_rows_read_and_rewrites_use_the_new_key() {
    let db = db_or_skip!();
    let o = owner("acme", "alice");
    let v1 = db.store.with_cipher(ring(&[1])).calls();
    let rewritten = with_caller(call_at(&o, t0() + secs(60)));
    let untouched = call_at(&o, t0() + secs(120));
    v1.create(&rewritten).await.expect("create");
    v1.create(&untouched).await.expect("create");

    let v21 = db.store.with_cipher(ring(&[2, 1])).calls();
    let read = v21.get(rewritten.id).await.expect("old key reads");
    assert_eq!(read, Some(rewritten.clone()));
    let fresh = call_at(&o, t0() + secs(180));
    v21.create(&fresh).await.expect("create under key 2");
    let (record, index) = raw_row(&db, &fresh).await;
    assert!(
        record.contains("\"cc1.2.") && !record.contains("\"cc1.1."),
        "{record}"
    );
    assert!(index.expect("index").starts_with("bi2."));

    let mut edit = rewritten.clone();
    edit.subject = "rewritten".into();
    v21.update(&edit).await.expect("rewrite");
    let (record, index) = raw_row(&db, &edit).await;
    assert!(
        record.contains("\"cc1.2.") && !record.contains("\"cc1.1."),
        "{record}"
    );
    assert!(index.expect("index").starts_with("bi2."));
    let (record, _) = raw_row(&db, &untouched).await;
    assert!(record.contains("\"cc1.1."), "not rewritten yet: {record}");

    // A ring without key 1 cannot read key-1 rows: a typed error, no garbage.
    let v2 = db.store.with_cipher(ring(&[2])).calls();
    let err = v2.get(untouched.id).await.expect_err("key 1 gone");
    assert_eq!(err.kind(), ErrorKind::Crypto);
    assert_eq!(err.source_name(), Some("postgres"));
    assert!(v2.get(edit.id).await.expect("key 2 row").is_some());
    // A store with no cipher at all cannot read sealed rows either.
    let err = db.store.calls().get(edit.id).await.expect_err("no key");
    assert_eq!(err.kind(), ErrorKind::Crypto);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_rows_from_before_encryption_still_read_and_are_sealed_on_rewrite() {
    let db = db_or_skip!();
    let o = owner("acme", "alice");
    let plain = db.store.calls();
    let c = call_at(&o, t0() + secs(60));
    plain.create(&c).await.expect("create");
    let (record, index) = raw_row(&db, &c).await;
    assert!(
        record.contains(NUMBER) && index.is_none(),
        "no cipher: plain"
    );

    let sealed = db.store.with_cipher(ring(&[1])).calls();
    assert_eq!(sealed.get(c.id).await.expect("get"), Some(c.clone()));
    sealed.update(&c).await.expect("rewrite");
    let (record, index) = raw_row(&db, &c).await;
    assert_no_plaintext(&record);
    assert!(index.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_row_is_a_crypto_error() {
    let db = db_or_skip!();
    let store = db.store.with_cipher(ring(&[1]));
    let calls = store.calls();
    let o = owner("acme", "alice");
    let c = call_at(&o, t0() + secs(60));
    calls.create(&c).await.expect("create");
    let (record, _) = raw_row(&db, &c).await;
    let record: serde_json::Value = serde_json::from_str(&record).expect("json");
    let sealed = record["phone_number"].as_str().expect("sealed");
    let tampered = flip_one(sealed);
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {} SET record = jsonb_set(record, '{{phone_number}}', to_jsonb($2::text)) \
         WHERE id = $1",
        table(&db, "calls")
    )))
    .bind(c.id.as_uuid())
    .bind(&tampered)
    .execute(db.store.pool())
    .await
    .expect("tamper");
    let err = calls.get(c.id).await.expect_err("tampered");
    assert_eq!(err.kind(), ErrorKind::Crypto);
    let claimed = calls
        .claim_due(t0() + secs(60), 10, &WorkerId::new("w"), t0() + secs(90))
        .await
        .expect("the claim quarantines it instead of failing");
    assert!(claimed.is_empty());
    assert_eq!(raw_status(&db, &c).await, ("FAILED".to_owned(), None));

    // A transcript text moved or altered fails the same way.
    let transcripts = store.transcripts();
    transcripts
        .append(
            c.id,
            &o,
            None,
            &[TranscriptSegment::new(SpeakerRole::Agent, "hello")],
            t0(),
        )
        .await
        .expect("append");
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {} SET segments = jsonb_set(segments, '{{0,text}}', to_jsonb($2::text)) \
         WHERE call_id = $1",
        table(&db, "transcripts")
    )))
    .bind(c.id.as_uuid())
    .bind(&tampered)
    .execute(db.store.pool())
    .await
    .expect("tamper transcript");
    let err = transcripts.get(c.id, t0()).await.expect_err("tampered");
    assert_eq!(err.kind(), ErrorKind::Crypto);
}

/// `(status, next_action_at)` of a call's row, read with plain SQL.
async fn raw_status(db: &TestDb, call: &Call) -> (String, Option<DateTime<Utc>>) {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT status, next_action_at FROM {} WHERE id = $1",
        table(db, "calls")
    )))
    .bind(call.id.as_uuid())
    .fetch_one(db.store.pool())
    .await
    .expect("raw status")
}

/// Two due calls, one sealed under a key (9) the ring no longer holds: the
/// readable one is claimed, the other quarantined (Failed, never due again, not
/// active), and listing active calls and the live tracker still work.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_row_is_quarantined_and_the_others_are_claimed() {
    let db = db_or_skip!();
    let o = owner("acme", "alice");
    let bad = call_at(&o, t0());
    db.store
        .with_cipher(ring(&[9]))
        .calls()
        .create(&bad)
        .await
        .expect("create under key 9");
    let calls = db.store.with_cipher(ring(&[1])).calls();
    let good = call_at(&o, t0() + secs(1));
    calls.create(&good).await.expect("create under key 1");

    let w = WorkerId::new("w");
    let claimed = calls
        .claim_due(t0() + secs(5), 10, &w, t0() + secs(35))
        .await
        .expect("one unreadable row never fails the claim");
    assert_eq!(
        claimed.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![good.id]
    );
    assert_eq!(raw_status(&db, &bad).await, ("FAILED".to_owned(), None));
    assert_eq!(
        calls.list_quarantined().await.expect("quarantined"),
        vec![bad.id]
    );
    assert_eq!(
        calls.count_active(&ActiveScope::All).await.expect("count"),
        1,
        "the quarantined row holds no lease and counts toward no cap"
    );
    assert_eq!(
        calls.next_due_at().await.expect("next due"),
        Some(t0() + secs(35)),
        "only the claimed call's lease is due"
    );

    // The next pass, lease lapsed: only the readable call comes back.
    let again = calls
        .claim_due(t0() + secs(60), 10, &w, t0() + secs(90))
        .await
        .expect("claim again");
    assert_eq!(
        again.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![good.id]
    );

    let active = calls
        .all_active(&ActiveScope::All)
        .await
        .expect("all_active");
    assert_eq!(
        active.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![good.id]
    );
    let shared: std::sync::Arc<dyn CallStore> = std::sync::Arc::new(calls.clone());
    callcat_core::LiveTracker::start(shared, &callcat_core::UpdateBus::new(16), 16)
        .await
        .expect("the live tracker starts");
}

/// The capped claim (owner cap 1): an unreadable row of the owner is set aside
/// and the owner's next, readable call is claimed in the same claim, instead
/// of the unreadable one using up the owner's share of the pass.
#[tokio::test(flavor = "multi_thread")]
async fn the_capped_claim_takes_the_owners_readable_call_past_an_unreadable_one() {
    let db = db_or_skip!();
    let o = owner("acme", "alice");
    let bad = call_at(&o, t0());
    db.store
        .with_cipher(ring(&[9]))
        .calls()
        .create(&bad)
        .await
        .expect("create under key 9");
    let calls = db.store.with_cipher(ring(&[1])).calls();
    let good = call_at(&o, t0() + secs(1));
    calls.create(&good).await.expect("create under key 1");

    let claimed = calls
        .claim_due_capped(t0() + secs(5), 10, &WorkerId::new("w"), t0() + secs(35), 1)
        .await
        .expect("one unreadable row never fails the claim");
    assert_eq!(
        claimed.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![good.id]
    );
    assert_eq!(raw_status(&db, &bad).await, ("FAILED".to_owned(), None));
}

/// An active row that cannot be opened is skipped by listings (with a log), and
/// paging moves past it.
#[tokio::test(flavor = "multi_thread")]
async fn listings_skip_an_unreadable_active_row() {
    let db = db_or_skip!();
    let o = owner("acme", "alice");
    let v9 = db.store.with_cipher(ring(&[9])).calls();
    let bad = call_at(&o, t0());
    v9.create(&bad).await.expect("create under key 9");
    v9.claim_due(t0(), 10, &WorkerId::new("w"), t0() + secs(30))
        .await
        .expect("claimed while key 9 is known: active");
    let calls = db.store.with_cipher(ring(&[1])).calls();
    let good = call_at(&o, t0() + secs(1));
    calls.create(&good).await.expect("create");
    calls
        .claim_due(t0() + secs(1), 10, &WorkerId::new("w"), t0() + secs(30))
        .await
        .expect("claim the readable one");

    let page = calls
        .list_active(&ActiveScope::All, 1, None)
        .await
        .expect("a page of one unreadable row");
    assert!(page.items.is_empty());
    let page = calls
        .list_active(&ActiveScope::All, 1, page.next_cursor.as_deref())
        .await
        .expect("the cursor moved past it");
    assert_eq!(
        page.items.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![good.id]
    );
    let active = calls
        .all_active(&ActiveScope::All)
        .await
        .expect("all_active");
    assert_eq!(active.len(), 1);
}

/// Changes one base64 character in the middle of a sealed value's body.
fn flip_one(sealed: &str) -> String {
    let mut chars: Vec<char> = sealed.chars().collect();
    let i = chars.len() - 10;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn active_calls_to_a_number_by_blind_index_across_rotation() {
    let db = db_or_skip!();
    let number = PhoneNumber::parse(NUMBER).expect("number");
    let alice = owner("acme", "alice");
    let bob = owner("acme", "bob");
    let eve = owner("other", "eve");

    // Before encryption: a plain active call of eve's.
    let plain = db.store.calls();
    plain.create(&call_at(&eve, t0())).await.expect("create");
    // Under key 1: alice and bob, plus alice to another number.
    let v1 = db.store.with_cipher(ring(&[1])).calls();
    v1.create(&call_at(&alice, t0())).await.expect("create");
    v1.create(&call_at(&bob, t0())).await.expect("create");
    let mut other = call_at(&alice, t0());
    other.phone_number = PhoneNumber::parse("+14155550124").expect("other");
    v1.create(&other).await.expect("create");

    let v21 = db.store.with_cipher(ring(&[2, 1])).calls();
    assert_eq!(
        v21.active_calls_to_number(&ActiveScope::All, &number)
            .await
            .expect("count"),
        0,
        "scheduled calls are not in flight"
    );
    // Claimed (Dispatching) by the rotated store: claims patch the record and
    // keep the key-1 blind index, so both generations must match.
    let claimed = v21
        .claim_due(t0(), 10, &WorkerId::new("w"), t0() + secs(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 4);
    // One more, scheduled under key 2: not active.
    v21.create(&call_at(&alice, t0() + secs(600)))
        .await
        .expect("create");
    let count = |scope: ActiveScope| {
        let v21 = v21.clone();
        let number = number.clone();
        async move {
            v21.active_calls_to_number(&scope, &number)
                .await
                .expect("count")
        }
    };
    assert_eq!(count(ActiveScope::All).await, 3);
    assert_eq!(count(ActiveScope::Tenant("acme".into())).await, 2);
    assert_eq!(
        count(ActiveScope::Tenant("other".into())).await,
        1,
        "plain row"
    );
    assert_eq!(count(ActiveScope::Owner(alice.clone())).await, 1);
    assert_eq!(count(ActiveScope::Owner(owner("acme", "nobody"))).await, 0);

    // Rewritten under key 2 (Ringing): still found, now by the key-2 index.
    let mut alices = claimed
        .into_iter()
        .find(|c| c.owner == alice && c.phone_number == number)
        .expect("alice's call");
    alices.status = CallStatus::Ringing;
    v21.update(&alices).await.expect("ringing");
    assert_eq!(count(ActiveScope::Owner(alice.clone())).await, 1);
    // A ring with only key 1 no longer sees the rewritten row.
    assert_eq!(
        v1.active_calls_to_number(&ActiveScope::Owner(alice), &number)
            .await
            .expect("count"),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cipher_option_applies_to_connect_and_from_pool() {
    let db = db_or_skip!();
    let store = PostgresStore::from_pool_with(
        db.store.pool().clone(),
        callcat_postgres::PostgresOptions::new()
            .schema(&db.schema)
            .cipher(ring(&[7])),
    )
    .expect("options");
    let c = call_at(&owner("t", "u"), t0());
    store.calls().create(&c).await.expect("create");
    let (record, _) = raw_row(&db, &c).await;
    assert!(record.contains("\"cc1.7."), "{record}");
    assert!(!format!("{store:?}").contains("7, 7"), "keys never print");
}

fn dnc_entry(tenant: &str, number: &str, secs_after: i64) -> callcat_core::DoNotCallEntry {
    callcat_core::DoNotCallEntry {
        tenant: tenant.into(),
        phone_number: PhoneNumber::parse(number).expect("number"),
        added_by: "admin-1".into(),
        added_at: t0() + secs(secs_after),
    }
}

/// Every `do_not_call` row as `(row::text, number_key, phone_number)`.
async fn raw_do_not_call(db: &TestDb) -> Vec<(String, String, String)> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT t::text, number_key, phone_number FROM {} AS t ORDER BY added_at",
        table(db, "do_not_call")
    )))
    .fetch_all(db.store.pool())
    .await
    .expect("raw do-not-call rows")
}

#[tokio::test(flavor = "multi_thread")]
async fn do_not_call_rows_hold_no_plaintext_and_match_by_blind_index_across_rotation() {
    use callcat_core::DoNotCallStore;
    let db = db_or_skip!();
    let number = PhoneNumber::parse(NUMBER).expect("number");
    let acme: callcat_core::TenantId = "acme".into();

    let v1 = db.store.with_cipher(ring(&[1])).do_not_call();
    assert!(v1.add(&dnc_entry("acme", NUMBER, 0)).await.expect("add"));
    let rows = raw_do_not_call(&db).await;
    assert_eq!(rows.len(), 1);
    let (row, key, stored) = &rows[0];
    assert_no_plaintext(row);
    assert!(key.starts_with("bi1."), "blind index: {key}");
    assert!(stored.starts_with("cc1.1."), "sealed: {stored}");
    assert_eq!(
        v1.list(&acme, 10, None).await.expect("list").items,
        vec![dnc_entry("acme", NUMBER, 0)]
    );

    // After a rotation the key-1 row is still found by its old blind index: not
    // added twice, listed, removable.
    let v21 = db.store.with_cipher(ring(&[2, 1])).do_not_call();
    assert!(v21.contains(&acme, &number).await.expect("contains"));
    assert!(
        !v21.add(&dnc_entry("acme", NUMBER, 5))
            .await
            .expect("add again")
    );
    assert_eq!(raw_do_not_call(&db).await.len(), 1, "no second row");
    // A new entry is sealed under key 2.
    assert!(
        v21.add(&dnc_entry("acme", CALLER, 10))
            .await
            .expect("add under key 2")
    );
    let rows = raw_do_not_call(&db).await;
    assert!(rows[1].1.starts_with("bi2.") && rows[1].2.starts_with("cc1.2."));
    for (row, _, _) in &rows {
        assert_no_plaintext(row);
    }
    // Another tenant's list does not match the same number.
    assert!(
        !v21.contains(&"other".into(), &number)
            .await
            .expect("contains")
    );
    v21.remove(&acme, &number).await.expect("remove key-1 row");
    assert!(!v21.contains(&acme, &number).await.expect("contains"));

    // Neither a ring without key 2 nor a store without a cipher can open the
    // key-2 row: a typed error, never garbage.
    let err = v1.list(&acme, 10, None).await.expect_err("key 2 unknown");
    assert_eq!(err.kind(), ErrorKind::Crypto);
    let err = db
        .store
        .do_not_call()
        .list(&acme, 10, None)
        .await
        .expect_err("no cipher");
    assert_eq!(err.kind(), ErrorKind::Crypto);
    assert_eq!(err.source_name(), Some("postgres"));
}

#[tokio::test(flavor = "multi_thread")]
async fn do_not_call_rows_from_before_encryption_are_still_found() {
    use callcat_core::DoNotCallStore;
    let db = db_or_skip!();
    let number = PhoneNumber::parse(NUMBER).expect("number");
    let acme: callcat_core::TenantId = "acme".into();
    let plain = db.store.do_not_call();
    assert!(plain.add(&dnc_entry("acme", NUMBER, 0)).await.expect("add"));
    let rows = raw_do_not_call(&db).await;
    assert_eq!((rows[0].1.as_str(), rows[0].2.as_str()), (NUMBER, NUMBER));

    let sealed = db.store.with_cipher(ring(&[1])).do_not_call();
    assert!(sealed.contains(&acme, &number).await.expect("contains"));
    assert!(
        !sealed
            .add(&dnc_entry("acme", NUMBER, 5))
            .await
            .expect("already listed")
    );
    assert_eq!(
        sealed.list(&acme, 10, None).await.expect("list").items,
        vec![dnc_entry("acme", NUMBER, 0)]
    );
    sealed.remove(&acme, &number).await.expect("remove");
    assert!(raw_do_not_call(&db).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sealed_adds_of_one_number_insert_it_once() {
    use callcat_core::DoNotCallStore;
    let db = db_or_skip!();
    let store = db.store.with_cipher(ring(&[1])).do_not_call();
    let adds = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.add(&dnc_entry("acme", NUMBER, i)).await })
    });
    let mut inserted = 0;
    for add in adds.collect::<Vec<_>>() {
        inserted += usize::from(add.await.expect("join").expect("add"));
    }
    assert_eq!(inserted, 1, "exactly one add reports the insert");
    assert_eq!(raw_do_not_call(&db).await.len(), 1);
}
