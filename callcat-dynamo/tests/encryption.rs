//! Encryption at rest on DynamoDB: raw items (GetItem, every attribute) after a
//! full lifecycle hold no plaintext number, name, prompt, variables, analysis,
//! error or recording URL, keys rotate,
//! tampering is a typed error, and the blind-index look-up of active calls.

mod common;

use callcat_core::testing::fixtures::{at, owner, scheduled_call, t0};
use callcat_core::{
    ActiveScope, Call, CallAnalysis, CallStatus, CallStore, ErrorKind, FieldCipher, MasterKey,
    Owner, PhoneNumber, SpeakerRole, TranscriptSegment, TranscriptStore, WorkerId,
};
use callcat_dynamo::aws_sdk_dynamodb::types::AttributeValue;
use callcat_dynamo::{DynamoCallStore, DynamoStores, DynamoTranscriptStore};
use common::{TestStores, test_stores};

/// The number the fixtures dial.
const NUMBER: &str = "+14155552671";
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

fn calls_with(s: &TestStores, ids: &[u32]) -> DynamoCallStore {
    s.calls.as_ref().clone().with_cipher(ring(ids))
}

fn transcripts_with(s: &TestStores, ids: &[u32]) -> DynamoTranscriptStore {
    s.transcripts.as_ref().clone().with_cipher(ring(ids))
}

/// Every attribute of an item, read with a plain GetItem.
async fn raw_item(
    stores: &DynamoStores,
    table: &str,
    key: &[(&str, &str)],
) -> std::collections::HashMap<String, AttributeValue> {
    let mut req = stores
        .client()
        .get_item()
        .table_name(table)
        .consistent_read(true);
    for (k, v) in key {
        req = req.key(*k, AttributeValue::S((*v).to_owned()));
    }
    req.send()
        .await
        .expect("GetItem")
        .item
        .expect("item exists")
}

async fn raw_call(s: &TestStores, c: &Call) -> std::collections::HashMap<String, AttributeValue> {
    raw_item(s, &s.tables().calls, &[("pk", &format!("CALL#{}", c.id))]).await
}

fn text_of(item: &std::collections::HashMap<String, AttributeValue>) -> String {
    format!("{item:?}")
}

fn record_of(item: &std::collections::HashMap<String, AttributeValue>) -> String {
    match item.get("call") {
        Some(AttributeValue::S(s)) => s.clone(),
        other => panic!("no call attribute: {other:?}"),
    }
}

fn phone_index_of(item: &std::collections::HashMap<String, AttributeValue>) -> Option<String> {
    match item.get("phoneIndex") {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    }
}

fn assert_no_plaintext(text: &str) {
    for secret in [
        "4155552671",
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

fn new_call(o: &Owner) -> Call {
    let mut c = scheduled_call(o, t0());
    c.caller_number = Some(PhoneNumber::parse(CALLER).expect("caller"));
    c.callee_name = "Ada Secretname".into();
    c.subject = "the secret-subject".into();
    c.instructions = "Ask about the secret-prompt.".into();
    c.variables
        .insert("diagnosis".into(), "secret-variable".into());
    c
}

/// create → claim → ringing (provider id) → completed (recording) → analysis.
async fn lifecycle(calls: &DynamoCallStore, o: &Owner) -> Call {
    let call = new_call(o);
    calls.create(&call).await.expect("create");
    let mut claimed = calls
        .claim_due(t0(), 10, &WorkerId::new("w1"), at(30))
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
    c.ended_at = Some(at(90));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_items_after_a_lifecycle_hold_no_plaintext() {
    let Some(s) = test_stores().await else { return };
    let calls = calls_with(&s, &[1]);
    let o = owner("acme");
    let done = lifecycle(&calls, &o).await;

    let item = raw_call(&s, &done).await;
    assert_no_plaintext(&text_of(&item));
    assert!(record_of(&item).contains("\"cc1.1."), "sealed values");
    let index = phone_index_of(&item).expect("blind index stored");
    assert!(index.starts_with("bi1."), "{index}");
    // The provider-id guard item carries nothing sensitive either.
    let guard = raw_item(
        &s,
        &s.tables().calls,
        &[("pk", &format!("PROV#prov-{}", done.id))],
    )
    .await;
    assert_no_plaintext(&text_of(&guard));

    // The owner reads everything back, by every read path.
    let read = calls.get(done.id).await.expect("get").expect("found");
    assert_eq!(read, done);
    assert_eq!(read.phone_number.as_str(), NUMBER);
    assert_eq!(read.recording_url.as_deref(), Some(RECORDING));
    let found = calls
        .find_by_provider_call_id(done.provider_call_id.as_deref().expect("id"))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(found, done);
    let page = calls
        .list(
            &o,
            &callcat_core::ListQuery::new(callcat_core::ListView::Finished, 10),
        )
        .await
        .expect("list");
    assert_eq!(page.items, vec![done.clone()]);

    // Transcript texts are sealed too.
    let transcripts = transcripts_with(&s, &[1]);
    let seg = TranscriptSegment::new(SpeakerRole::User, "call me on 4155552671");
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
    assert_eq!(whole.segments, vec![seg]);
    whole.text = Some("free text with secret-take".into());
    transcripts.put(&whole).await.expect("put");
    let head = raw_item(
        &s,
        &s.tables().transcripts,
        &[("callId", &done.id.to_string()), ("sk", "HEAD")],
    )
    .await;
    assert_no_plaintext(&text_of(&head));
    assert_eq!(
        transcripts
            .get_by_provider_call_id("prov-t", t0())
            .await
            .expect("get")
            .expect("found"),
        whole
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_old_items_read_and_rewrites_use_the_new_key() {
    let Some(s) = test_stores().await else { return };
    let o = owner("acme");
    let v1 = calls_with(&s, &[1]);
    let rewritten = new_call(&o);
    let untouched = scheduled_call(&o, at(120));
    v1.create(&rewritten).await.expect("create");
    v1.create(&untouched).await.expect("create");

    let v21 = calls_with(&s, &[2, 1]);
    assert_eq!(
        v21.get(rewritten.id).await.expect("old key reads"),
        Some(rewritten.clone())
    );
    let fresh = scheduled_call(&o, at(180));
    v21.create(&fresh).await.expect("create under key 2");
    let item = raw_call(&s, &fresh).await;
    let record = record_of(&item);
    assert!(
        record.contains("\"cc1.2.") && !record.contains("\"cc1.1."),
        "{record}"
    );
    assert!(phone_index_of(&item).expect("index").starts_with("bi2."));

    let mut edit = rewritten.clone();
    edit.subject = "rewritten".into();
    v21.update(&edit).await.expect("rewrite");
    let item = raw_call(&s, &edit).await;
    let record = record_of(&item);
    assert!(
        record.contains("\"cc1.2.") && !record.contains("\"cc1.1."),
        "{record}"
    );
    assert!(phone_index_of(&item).expect("index").starts_with("bi2."));
    assert!(record_of(&raw_call(&s, &untouched).await).contains("\"cc1.1."));

    // A ring without key 1 cannot read key-1 items: a typed error, no garbage.
    let v2 = calls_with(&s, &[2]);
    let err = v2.get(untouched.id).await.expect_err("key 1 gone");
    assert_eq!(err.kind(), ErrorKind::Crypto);
    assert_eq!(err.source_name(), Some("dynamo"));
    assert!(v2.get(edit.id).await.expect("key 2 item").is_some());
    let err = s.calls.get(edit.id).await.expect_err("no cipher");
    assert_eq!(err.kind(), ErrorKind::Crypto);

    // Items written before encryption read, and are sealed on their next write.
    let plain = scheduled_call(&o, at(240));
    s.calls.create(&plain).await.expect("plain create");
    assert!(phone_index_of(&raw_call(&s, &plain).await).is_none());
    assert_eq!(
        v21.get(plain.id).await.expect("plain reads"),
        Some(plain.clone())
    );
    v21.update(&plain).await.expect("rewrite");
    let item = raw_call(&s, &plain).await;
    assert_no_plaintext(&text_of(&item));
    assert!(phone_index_of(&item).is_some());
}

/// Changes one base64 character in the middle of a sealed value's body.
fn flip_one(sealed: &str) -> String {
    let mut chars: Vec<char> = sealed.chars().collect();
    let i = chars.len() - 10;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_item_is_a_crypto_error() {
    let Some(s) = test_stores().await else { return };
    let calls = calls_with(&s, &[1]);
    let o = owner("acme");
    let c = new_call(&o);
    calls.create(&c).await.expect("create");
    let mut record: serde_json::Value =
        serde_json::from_str(&record_of(&raw_call(&s, &c).await)).expect("json");
    let tampered = flip_one(record["phone_number"].as_str().expect("sealed"));
    record["phone_number"] = serde_json::Value::String(tampered);
    s.client()
        .update_item()
        .table_name(&s.tables().calls)
        .key("pk", AttributeValue::S(format!("CALL#{}", c.id)))
        .update_expression("SET #c = :c")
        .expression_attribute_names("#c", "call")
        .expression_attribute_values(":c", AttributeValue::S(record.to_string()))
        .send()
        .await
        .expect("tamper");
    let err = calls.get(c.id).await.expect_err("tampered");
    assert_eq!(err.kind(), ErrorKind::Crypto);
    let page = calls
        .list(
            &o,
            &callcat_core::ListQuery::new(callcat_core::ListView::Upcoming, 10),
        )
        .await
        .expect("listing skips it");
    assert!(page.items.is_empty());
}

/// Two due calls, one sealed under a key (9) the ring no longer holds: the
/// readable one is claimed, the other quarantined (out of the due and active
/// indexes, never claimed again, counted toward no cap), and listing active
/// calls and the live tracker still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_item_is_quarantined_and_the_others_are_claimed() {
    use callcat_core::store::CallStoreExt;

    let Some(s) = test_stores().await else { return };
    let o = owner("acme");
    let bad = scheduled_call(&o, t0());
    calls_with(&s, &[9])
        .create(&bad)
        .await
        .expect("create under key 9");
    let calls = calls_with(&s, &[1]);
    let good = scheduled_call(&o, at(1));
    calls.create(&good).await.expect("create under key 1");

    let w = WorkerId::new("w");
    let claimed = calls
        .claim_due(at(5), 10, &w, at(35))
        .await
        .expect("one unreadable item never fails the claim");
    assert_eq!(
        claimed.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![good.id]
    );
    let item = raw_call(&s, &bad).await;
    assert!(item.contains_key("quarantined"), "{item:?}");
    assert!(!item.contains_key("dueShard") && !item.contains_key("dueAt"));
    assert_eq!(
        calls.count_active(&ActiveScope::All).await.expect("count"),
        1,
        "the quarantined item counts toward no cap"
    );
    assert_eq!(calls.next_due_at().await.expect("next due"), Some(at(35)));

    // The next pass, lease lapsed: only the readable call comes back.
    let again = calls
        .claim_due(at(60), 10, &w, at(90))
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

/// An active item that cannot be opened is skipped by listings (with a log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_skip_an_unreadable_active_item() {
    use callcat_core::store::CallStoreExt;

    let Some(s) = test_stores().await else { return };
    let o = owner("acme");
    let v9 = calls_with(&s, &[9]);
    let bad = scheduled_call(&o, t0());
    v9.create(&bad).await.expect("create under key 9");
    v9.claim_due(t0(), 10, &WorkerId::new("w"), at(30))
        .await
        .expect("claimed while key 9 is known: active");
    let calls = calls_with(&s, &[1]);
    let good = scheduled_call(&o, at(1));
    calls.create(&good).await.expect("create");
    calls
        .claim_due(at(1), 10, &WorkerId::new("w"), at(30))
        .await
        .expect("claim the readable one");
    let active = calls
        .all_active(&ActiveScope::All)
        .await
        .expect("all_active");
    assert_eq!(
        active.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![good.id]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_calls_to_a_number_by_blind_index_across_rotation() {
    let Some(s) = test_stores().await else { return };
    let number = PhoneNumber::parse(NUMBER).expect("number");
    let alice = owner("acme");
    let bob = owner("acme");
    let eve = owner("other");

    // Before encryption: eve's plain call, due first and claimed by a store
    // without a cipher, so its item stays plain (no phoneIndex).
    s.calls
        .create(&scheduled_call(&eve, t0()))
        .await
        .expect("create");
    assert_eq!(
        s.calls
            .claim_due(t0(), 10, &WorkerId::new("w"), at(30))
            .await
            .expect("claim plain")
            .len(),
        1
    );
    // Under key 1: alice's and bob's, plus one of alice's to another number,
    // claimed under key 1 too (so their index is bi1).
    let v1 = calls_with(&s, &[1]);
    v1.create(&scheduled_call(&alice, at(1)))
        .await
        .expect("create");
    v1.create(&scheduled_call(&bob, at(1)))
        .await
        .expect("create");
    let mut other = scheduled_call(&alice, at(1));
    other.phone_number = PhoneNumber::parse("+14155552672").expect("other");
    v1.create(&other).await.expect("create");

    let v21 = calls_with(&s, &[2, 1]);
    let count = |scope: ActiveScope| {
        let v21 = v21.clone();
        let number = number.clone();
        async move {
            v21.active_calls_to_number(&scope, &number)
                .await
                .expect("count")
        }
    };
    assert_eq!(count(ActiveScope::All).await, 1, "only eve's is in flight");
    let claimed = v1
        .claim_due(at(1), 10, &WorkerId::new("w"), at(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 3);
    // One more, scheduled under key 2: not in flight.
    v21.create(&scheduled_call(&alice, at(600)))
        .await
        .expect("create");

    assert_eq!(count(ActiveScope::All).await, 3);
    assert_eq!(count(ActiveScope::Tenant("acme".into())).await, 2);
    assert_eq!(
        count(ActiveScope::Tenant("other".into())).await,
        1,
        "plain item"
    );
    assert_eq!(count(ActiveScope::Owner(alice.clone())).await, 1);
    assert_eq!(count(ActiveScope::Owner(owner("acme"))).await, 0);

    // Rewritten under key 2 (Ringing): still found, now by the key-2 index, and
    // no longer by a ring that only has key 1.
    let mut alices = claimed
        .into_iter()
        .find(|c| c.owner == alice && c.phone_number == number)
        .expect("alice's call");
    alices.status = CallStatus::Ringing;
    v21.update(&alices).await.expect("ringing");
    assert!(
        phone_index_of(&raw_call(&s, &alices).await)
            .expect("index")
            .starts_with("bi2.")
    );
    assert_eq!(count(ActiveScope::Owner(alice.clone())).await, 1);
    assert_eq!(
        v1.active_calls_to_number(&ActiveScope::Owner(alice), &number)
            .await
            .expect("count"),
        0
    );
}

#[test]
fn the_builder_takes_a_cipher_and_never_prints_keys() {
    let stores = DynamoStores::builder()
        .region("us-east-1")
        .credentials("AKID", "secret", None)
        .cipher(ring(&[9]))
        .build()
        .expect("build");
    let shown = format!("{:?} {:?}", stores.calls, stores.transcripts);
    assert!(shown.contains("key_ids: [9]"), "{shown}");
    assert!(!shown.contains("9, 9"), "{shown}");
}

fn dnc_entry(tenant: &str, number: &str, secs: i64) -> callcat_core::DoNotCallEntry {
    callcat_core::DoNotCallEntry {
        tenant: tenant.into(),
        phone_number: PhoneNumber::parse(number).expect("number"),
        added_by: "admin-1".into(),
        added_at: at(secs),
    }
}

fn dnc_with(s: &TestStores, ids: &[u32]) -> callcat_dynamo::DynamoDoNotCallStore {
    s.do_not_call.as_ref().clone().with_cipher(ring(ids))
}

/// Every item of the do-not-call table (a plain Scan, every attribute), oldest first.
async fn raw_do_not_call(s: &TestStores) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    let mut items = s
        .client()
        .scan()
        .table_name(&s.tables().do_not_call)
        .consistent_read(true)
        .send()
        .await
        .expect("Scan")
        .items
        .unwrap_or_default();
    items.sort_by_key(|i| format!("{:?}", i.get("addedSort")));
    items
}

fn attr_s(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        other => panic!("no {name} attribute: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn do_not_call_items_hold_no_plaintext_and_match_by_blind_index_across_rotation() {
    use callcat_core::DoNotCallStore;
    let Some(s) = test_stores().await else { return };
    let number = PhoneNumber::parse(NUMBER).expect("number");
    let acme: callcat_core::TenantId = "acme".into();

    let v1 = dnc_with(&s, &[1]);
    assert!(v1.add(&dnc_entry("acme", NUMBER, 0)).await.expect("add"));
    let items = raw_do_not_call(&s).await;
    assert_eq!(items.len(), 1);
    assert_no_plaintext(&text_of(&items[0]));
    assert!(attr_s(&items[0], "numberKey").starts_with("bi1."));
    assert!(attr_s(&items[0], "number").starts_with("cc1.1."));
    assert_eq!(
        v1.list(&acme, 10, None).await.expect("list").items,
        vec![dnc_entry("acme", NUMBER, 0)]
    );

    // After a rotation the key-1 item is still found by its old blind index: not
    // added twice, listed, removable.
    let v21 = dnc_with(&s, &[2, 1]);
    assert!(v21.contains(&acme, &number).await.expect("contains"));
    assert!(
        !v21.add(&dnc_entry("acme", NUMBER, 5))
            .await
            .expect("add again")
    );
    assert_eq!(raw_do_not_call(&s).await.len(), 1, "no second item");
    assert!(
        v21.add(&dnc_entry("acme", CALLER, 10))
            .await
            .expect("add under key 2")
    );
    let items = raw_do_not_call(&s).await;
    assert!(attr_s(&items[1], "numberKey").starts_with("bi2."));
    assert!(attr_s(&items[1], "number").starts_with("cc1.2."));
    for item in &items {
        assert_no_plaintext(&text_of(item));
    }
    assert!(
        !v21.contains(&"other".into(), &number)
            .await
            .expect("another tenant")
    );
    v21.remove(&acme, &number).await.expect("remove key-1 item");
    assert!(!v21.contains(&acme, &number).await.expect("contains"));

    // Neither a ring without key 2 nor a store without a cipher opens the key-2
    // item: a typed error, never garbage.
    let err = v1.list(&acme, 10, None).await.expect_err("key 2 unknown");
    assert_eq!(err.kind(), ErrorKind::Crypto);
    let err = s
        .do_not_call
        .list(&acme, 10, None)
        .await
        .expect_err("no cipher");
    assert_eq!(err.kind(), ErrorKind::Crypto);
    assert_eq!(err.source_name(), Some("dynamo"));
}

#[tokio::test(flavor = "multi_thread")]
async fn do_not_call_items_from_before_encryption_are_still_found() {
    use callcat_core::DoNotCallStore;
    let Some(s) = test_stores().await else { return };
    let number = PhoneNumber::parse(NUMBER).expect("number");
    let acme: callcat_core::TenantId = "acme".into();
    assert!(
        s.do_not_call
            .add(&dnc_entry("acme", NUMBER, 0))
            .await
            .expect("add plain")
    );
    let items = raw_do_not_call(&s).await;
    assert_eq!(attr_s(&items[0], "numberKey"), NUMBER);

    let sealed = dnc_with(&s, &[1]);
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
    assert!(raw_do_not_call(&s).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sealed_adds_of_one_number_insert_it_once() {
    use callcat_core::DoNotCallStore;
    let Some(s) = test_stores().await else { return };
    let store = dnc_with(&s, &[1]);
    let adds = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.add(&dnc_entry("acme", NUMBER, i)).await })
    });
    let mut inserted = 0;
    for add in adds.collect::<Vec<_>>() {
        inserted += usize::from(add.await.expect("join").expect("add"));
    }
    assert_eq!(inserted, 1, "exactly one add reports the insert");
    assert_eq!(raw_do_not_call(&s).await.len(), 1);
}
