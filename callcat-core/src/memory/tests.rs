//! Encryption at rest in the in-memory stores: what memory holds, rotation,
//! tampering, and the blind-index look-up.

use chrono::{DateTime, TimeDelta, Utc};

use super::{
    InMemoryCallStore, InMemoryDoNotCallStore, InMemoryTranscriptStore, InMemoryWindowStore,
};
use crate::crypto::{FieldCipher, MasterKey};
use crate::{
    ActiveScope, Call, CallAnalysis, CallStatus, CallStore, CallTemplate, ErrorKind, Limits,
    NewCall, Owner, PhoneNumber, SpeakerRole, TranscriptSegment, TranscriptStore, WorkerId,
};

const NUMBER: &str = "+14155552671";
const CALLER: &str = "+442071838750";
const RECORDING: &str = "https://recordings.example/secret-take.wav";

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_893_456_000, 0).unwrap_or_default()
}

fn key(id: u32) -> MasterKey {
    MasterKey::new(id, [id as u8; 32])
}

fn ring(ids: &[u32]) -> FieldCipher {
    FieldCipher::new(ids.iter().map(|i| key(*i)).collect()).expect("cipher")
}

fn call_to(owner: &Owner, number: &str) -> Call {
    let mut template = CallTemplate::new(
        "Ada Secretname",
        PhoneNumber::parse(number).expect("number"),
        "Checkup about the secret-subject",
        "Ask how the secret-prompt week went.",
    );
    template.caller_number = Some(PhoneNumber::parse(CALLER).expect("caller"));
    template
        .variables
        .insert("diagnosis".into(), "secret-variable".into());
    NewCall::new(template)
        .at(t0())
        .into_call(owner.clone(), t0(), &Limits::default())
        .expect("call")
}

/// create → claim → ringing (provider id) → completed (recording) → analysis.
async fn lifecycle(store: &InMemoryCallStore, owner: &Owner) -> Call {
    let call = call_to(owner, NUMBER);
    store.create(&call).await.expect("create");
    let claimed = store
        .claim_due(
            t0(),
            10,
            &WorkerId::new("w1"),
            t0() + TimeDelta::seconds(30),
        )
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let mut c = claimed.into_iter().next().expect("claimed");
    c.status = CallStatus::Ringing;
    c.provider_call_id = Some(format!("prov-{}", c.id));
    c.lease = None;
    c.next_action_at = None;
    let c = store.update(&c).await.expect("ringing");
    let mut c = c;
    c.status = CallStatus::Completed;
    c.recording_url = Some(RECORDING.into());
    c.ended_at = Some(t0() + TimeDelta::seconds(90));
    c.finished_at = c.ended_at;
    let mut c = store.update(&c).await.expect("completed");
    c.analysis = Some(CallAnalysis {
        summary: Some("secret-summary".into()),
        action_items: vec!["secret-action".into()],
        ..CallAnalysis::default()
    });
    c.last_error = Some("secret-error".into());
    c.current_attempt_mut().error = Some("secret-attempt".into());
    store.update(&c).await.expect("analysis")
}

#[tokio::test]
async fn memory_holds_no_plaintext_and_the_owner_reads_it_back() {
    let store = InMemoryCallStore::with_cipher(ring(&[1]));
    let owner = Owner::new("acme", "alice");
    let done = lifecycle(&store, &owner).await;
    let dump = store.dump();
    for secret in [
        "4155552671",
        "2071838750",
        "secret-take",
        "Secretname",
        "secret-subject",
        "secret-prompt",
        "secret-variable",
        "secret-summary",
        "secret-action",
        "secret-error",
        "secret-attempt",
    ] {
        assert!(!dump.contains(secret), "{secret} in memory: {dump}");
    }
    assert!(dump.contains("cc1.1."), "sealed values are there");
    let read = store.get(done.id).await.expect("get").expect("found");
    assert_eq!(read, done);
    assert_eq!(read.phone_number.as_str(), NUMBER);
    assert_eq!(read.recording_url.as_deref(), Some(RECORDING));
    let by_provider = store
        .find_by_provider_call_id(done.provider_call_id.as_deref().expect("id"))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(by_provider, done);
}

#[tokio::test]
async fn rotation_reads_old_rows_and_rewrites_them_with_the_new_key() {
    let store = InMemoryCallStore::with_cipher(ring(&[1]));
    let owner = Owner::new("acme", "alice");
    let old = call_to(&owner, NUMBER);
    store.create(&old).await.expect("create");
    assert!(store.dump().contains("cc1.1."));

    store.set_cipher(ring(&[2, 1]));
    let read = store
        .get(old.id)
        .await
        .expect("old key reads")
        .expect("found");
    assert_eq!(read, old);
    let fresh = call_to(&owner, "+14155552672");
    store.create(&fresh).await.expect("create under key 2");
    let mut edited = read.clone();
    edited.subject = "rewritten".into();
    store.update(&edited).await.expect("rewrite");
    let dump = store.dump();
    assert!(
        !dump.contains("cc1.1."),
        "every row is under key 2 now: {dump}"
    );
    assert!(dump.contains("cc1.2."));

    // A store that only knows key 2 cannot read key-1 rows.
    let other = InMemoryCallStore::with_cipher(ring(&[1]));
    let c = call_to(&owner, NUMBER);
    other.create(&c).await.expect("create");
    other.set_cipher(ring(&[2]));
    let err = other.get(c.id).await.expect_err("key 1 is gone");
    assert_eq!(err.kind(), ErrorKind::Crypto);
    let claimed = other
        .claim_due(t0(), 10, &WorkerId::new("w"), t0() + TimeDelta::seconds(5))
        .await
        .expect("an unreadable call never fails the claim");
    assert!(claimed.is_empty());
    assert_eq!(
        other.next_due_at().await.expect("due"),
        None,
        "quarantined: never due again"
    );
    assert_eq!(other.list_quarantined().await.expect("list"), vec![c.id]);
}

#[tokio::test]
async fn plain_rows_from_before_encryption_still_read() {
    let store = InMemoryCallStore::new();
    let owner = Owner::new("acme", "alice");
    let c = call_to(&owner, NUMBER);
    store.create(&c).await.expect("create");
    store.set_cipher(ring(&[1]));
    assert_eq!(store.get(c.id).await.expect("get"), Some(c.clone()));
    store.update(&c).await.expect("rewrite seals it");
    assert!(!store.dump().contains("4155552671"));
}

#[tokio::test]
async fn tampered_ciphertext_is_a_crypto_error() {
    let store = InMemoryCallStore::with_cipher(ring(&[1]));
    let owner = Owner::new("acme", "alice");
    let c = call_to(&owner, NUMBER);
    store.create(&c).await.expect("create");
    store.tamper(c.id, |record| {
        let sealed = record["phone_number"].as_str().expect("sealed").to_owned();
        // Change one character in the middle of the base64 body (6 bits of the tag).
        let mut chars: Vec<char> = sealed.chars().collect();
        let i = chars.len() - 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let t: String = chars.into_iter().collect();
        record["phone_number"] = serde_json::Value::String(t);
    });
    let err = store.get(c.id).await.expect_err("tampered");
    assert_eq!(err.kind(), ErrorKind::Crypto);
    let page = store
        .list(
            &owner,
            &crate::ListQuery::new(crate::ListView::Upcoming, 10),
        )
        .await
        .expect("listing skips it");
    assert!(page.items.is_empty());
}

#[tokio::test]
async fn active_calls_to_a_number_match_by_blind_index_across_rotation() {
    let store = InMemoryCallStore::with_cipher(ring(&[1]));
    let alice = Owner::new("acme", "alice");
    let bob = Owner::new("acme", "bob");
    let eve = Owner::new("other", "eve");
    let number = PhoneNumber::parse(NUMBER).expect("number");
    for owner in [&alice, &bob, &eve] {
        store.create(&call_to(owner, NUMBER)).await.expect("create");
    }
    store
        .create(&call_to(&alice, "+14155552672"))
        .await
        .expect("other number");
    let count = |scope: ActiveScope| store.active_calls_to_number(&scope, &number);
    assert_eq!(
        count(ActiveScope::All).expect("count"),
        0,
        "none active yet"
    );

    // Claim everything under key 1, then rotate: the blind indexes differ per key.
    store
        .claim_due(t0(), 10, &WorkerId::new("w"), t0() + TimeDelta::seconds(30))
        .await
        .expect("claim");
    store.set_cipher(ring(&[2, 1]));
    store
        .create(&call_to(&alice, NUMBER))
        .await
        .expect("scheduled, key 2");
    assert_eq!(count(ActiveScope::All).expect("all"), 3);
    assert_eq!(
        count(ActiveScope::Tenant("acme".into())).expect("tenant"),
        2
    );
    assert_eq!(count(ActiveScope::Owner(alice.clone())).expect("owner"), 1);
    assert_eq!(
        count(ActiveScope::Owner(Owner::new("acme", "nobody"))).expect("nobody"),
        0
    );

    // Without a cipher the look-up compares numbers.
    let plain = InMemoryCallStore::new();
    plain
        .create(&call_to(&alice, NUMBER))
        .await
        .expect("create");
    plain
        .claim_due(t0(), 10, &WorkerId::new("w"), t0() + TimeDelta::seconds(30))
        .await
        .expect("claim");
    assert_eq!(
        plain
            .active_calls_to_number(&ActiveScope::All, &number)
            .expect("plain"),
        1
    );
}

#[tokio::test]
async fn transcripts_are_sealed_in_memory() {
    let store = InMemoryTranscriptStore::with_cipher(ring(&[1]));
    let owner = Owner::new("acme", "alice");
    let call = call_to(&owner, NUMBER);
    let seg = TranscriptSegment::new(SpeakerRole::User, "my account is 99887766");
    let t = store
        .append(
            call.id,
            &owner,
            Some("prov-1"),
            std::slice::from_ref(&seg),
            t0(),
        )
        .await
        .expect("append");
    assert_eq!(t.segments, vec![seg.clone()]);
    assert!(!format!("{store:?}").contains("99887766"));
    let got = store.get(call.id, t0()).await.expect("get").expect("found");
    assert_eq!(got.segments, vec![seg]);
    store.set_cipher(ring(&[2]));
    let err = store.get(call.id, t0()).await.expect_err("key 1 gone");
    assert_eq!(err.kind(), ErrorKind::Crypto);
    let err = store
        .append(call.id, &owner, None, &[], t0())
        .await
        .expect_err("cannot extend what cannot be read");
    assert_eq!(err.kind(), ErrorKind::Crypto);
}

/// One due call sealed under a key the ring no longer holds, one readable: the
/// readable one is claimed and dialed, the other is quarantined (never claimed
/// again, not active), and the live tracker starts.
#[tokio::test]
async fn an_unreadable_call_is_quarantined_and_the_others_are_dialed() {
    use std::sync::Arc;

    use crate::store::CallStoreExt;

    let store = Arc::new(InMemoryCallStore::with_cipher(ring(&[9])));
    let owner = Owner::new("acme", "alice");
    let bad = call_to(&owner, NUMBER);
    store.create(&bad).await.expect("create under key 9");
    store.set_cipher(ring(&[1]));
    let good = call_to(&owner, "+14155552672");
    store.create(&good).await.expect("create under key 1");

    let worker = WorkerId::new("w");
    let claimed = store
        .claim_due(t0(), 10, &worker, t0() + TimeDelta::seconds(30))
        .await
        .expect("one unreadable call never fails the claim");
    let ids: Vec<_> = claimed.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![good.id]);
    assert_eq!(store.list_quarantined().await.expect("list"), vec![bad.id]);
    assert_eq!(
        store.count_active(&ActiveScope::All).await.expect("count"),
        1,
        "only the readable call counts toward the cap"
    );

    // The next pass, lease lapsed: the readable call comes back, never the other.
    let later = t0() + TimeDelta::seconds(60);
    let again = store
        .claim_due(later, 10, &worker, later + TimeDelta::seconds(30))
        .await
        .expect("claim again");
    assert_eq!(
        again.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![good.id]
    );

    let active = store
        .all_active(&ActiveScope::All)
        .await
        .expect("all_active skips nothing it can read");
    assert_eq!(
        active.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![good.id]
    );
    let bus = crate::UpdateBus::new(16);
    crate::LiveTracker::start(store.clone(), &bus, 16)
        .await
        .expect("the live tracker starts");
}

/// A Scheduler tick over a store holding one unreadable due call dials the
/// readable one.
#[tokio::test]
async fn a_scheduler_tick_dials_past_an_unreadable_call() {
    use std::sync::Arc;

    let store = Arc::new(InMemoryCallStore::with_cipher(ring(&[9])));
    let owner = Owner::new("acme", "alice");
    let bad = call_to(&owner, NUMBER);
    store.create(&bad).await.expect("create under key 9");
    store.set_cipher(ring(&[1]));
    let good = call_to(&owner, "+14155552672");
    store.create(&good).await.expect("create under key 1");

    let clock = crate::ManualClock::new(t0());
    let sim = crate::Simulator::new(Arc::new(clock.clone()), crate::SimulatorConfig::default());
    let sched = crate::Scheduler::builder()
        .store(store.clone())
        .provider(Arc::new(sim.clone()))
        .clock(Arc::new(clock.clone()))
        .wakeup(crate::Wakeup::new())
        .bus(crate::UpdateBus::new(64))
        .retry_seed(7)
        .build()
        .expect("scheduler");
    let report = sched.tick().await.expect("the tick does not fail");
    assert_eq!((report.claimed, report.dialed), (1, 1));
    assert_eq!(sim.dial_count(good.id), 1);
    assert_eq!(sim.dial_count(bad.id), 0);
    let report = sched.tick().await.expect("a second tick");
    assert_eq!(report.claimed, 0);
    assert_eq!(store.list_quarantined().await.expect("list"), vec![bad.id]);
}

fn window_of(owner: &Owner) -> crate::CallWindow {
    let template = call_to(owner, NUMBER);
    let mut t = CallTemplate::new(
        template.callee_name,
        template.phone_number,
        template.subject,
        template.instructions,
    );
    t.caller_number = template.caller_number;
    t.variables = template.variables;
    crate::CallWindow {
        id: crate::WindowId::new(),
        owner: owner.clone(),
        schedule: crate::WindowSchedule::OneOff {
            start_at: t0(),
            end_at: t0() + TimeDelta::hours(1),
            timezone: chrono_tz::Europe::Berlin,
        },
        template: t,
        created_at: t0(),
    }
}

#[tokio::test]
async fn windows_hold_no_plaintext_and_the_owner_reads_them_back() {
    use crate::WindowStore;
    let store = InMemoryWindowStore::with_cipher(ring(&[1]));
    let owner = Owner::new("acme", "alice");
    let w = window_of(&owner);
    store.create(&w).await.expect("create");
    let mut edited = w.clone();
    edited.template.instructions = "Ask about the other secret-prompt.".into();
    store.update(&edited).await.expect("update");
    let dump = store.dump();
    for secret in [
        "4155552671",
        "2071838750",
        "Secretname",
        "secret-subject",
        "secret-prompt",
        "secret-variable",
    ] {
        assert!(!dump.contains(secret), "{secret} in memory: {dump}");
    }
    assert_eq!(
        store.get(&owner, w.id).await.expect("get"),
        Some(edited.clone())
    );
    assert_eq!(
        store.list(&owner).await.expect("list"),
        vec![edited.clone()]
    );
    let page = store.list_all(10, None).await.expect("list all");
    assert_eq!(page.items, vec![edited.clone()]);
    assert_eq!(
        store
            .get(&Owner::new("acme", "bob"), w.id)
            .await
            .expect("get"),
        None
    );
    store.set_cipher(ring(&[2]));
    let err = store.get(&owner, w.id).await.expect_err("key 1 is gone");
    assert_eq!(err.kind(), ErrorKind::Crypto);

    // Windows written before encryption was enabled still read.
    let plain = InMemoryWindowStore::new();
    plain.create(&w).await.expect("create");
    assert!(plain.dump().contains("Secretname"));
    plain.set_cipher(ring(&[1]));
    assert_eq!(plain.get(&owner, w.id).await.expect("plain reads"), Some(w));
}

/// Stores under key 1 (and one plain call from before encryption), then key 2
/// becomes current: `rekey` re-seals every row it may touch, in batches of 2,
/// leaves the call in flight for its own next write, and the report says when
/// key 1 can go.
#[tokio::test]
async fn rekey_reseals_old_rows_and_reports_when_the_old_key_can_be_retired() {
    use std::sync::Arc;

    use crate::rotation::{key_report, rekey};
    use crate::{Stores, WindowStore};

    let calls = Arc::new(InMemoryCallStore::new());
    let windows = Arc::new(InMemoryWindowStore::with_cipher(ring(&[1])));
    let transcripts = Arc::new(InMemoryTranscriptStore::with_cipher(ring(&[1])));
    let stores = Stores {
        calls: calls.clone(),
        transcripts: transcripts.clone(),
        windows: windows.clone(),
        do_not_call: Arc::new(InMemoryDoNotCallStore::new()),
    };
    let owner = Owner::new("acme", "alice");
    // Due tomorrow, so the lifecycle's claim below leaves it alone.
    let mut plain = call_to(&owner, "+14155552600");
    plain.scheduled_for = t0() + TimeDelta::days(1);
    plain.next_action_at = Some(plain.scheduled_for);
    calls.create(&plain).await.expect("plain call");
    calls.set_cipher(ring(&[1]));
    let finished = lifecycle(&calls, &owner).await;
    for i in 1..=3 {
        let c = call_to(&owner, &format!("+1415555261{i}"));
        calls.create(&c).await.expect("scheduled");
    }
    let mut in_flight = call_to(&owner, "+14155552699");
    in_flight.status = CallStatus::Ringing;
    in_flight.next_action_at = None;
    let in_flight = calls.create(&in_flight).await.expect("ringing").into_call();
    windows.create(&window_of(&owner)).await.expect("window");
    let seg = TranscriptSegment::new(SpeakerRole::User, "my account is 99887766");
    transcripts
        .append(finished.id, &owner, None, &[seg], t0())
        .await
        .expect("transcript");

    let rotated = ring(&[2, 1]);
    calls.set_cipher(rotated.clone());
    windows.set_cipher(rotated.clone());
    transcripts.set_cipher(rotated.clone());

    let before = key_report(&stores, &rotated, 2).await.expect("report");
    assert_eq!(before.rows_under(1), 7, "{before}");
    assert_eq!(before.plain_rows(), 1, "{before}");
    assert!(!before.can_retire(1));
    assert!(calls.dump().contains("cc1.1."), "counting changes nothing");

    let report = rekey(&stores, &rotated, 2).await.expect("rekey");
    let t = &report.tables["calls"];
    assert_eq!(
        (t.rows, t.rewritten, t.deferred, t.unreadable),
        (6, 5, 1, 0),
        "{report}"
    );
    assert_eq!(
        t.by_key.get(&1),
        Some(&1),
        "only the call in flight: {report}"
    );
    assert_eq!(t.plain, 0, "{report}");
    assert_eq!(report.tables["windows"].rewritten, 1, "{report}");
    assert_eq!(report.tables["transcripts"].rewritten, 1, "{report}");
    assert_eq!(report.tables["do-not-call"].rows, 0, "{report}");
    assert!(report.unsupported.is_empty(), "{report}");
    assert_eq!(report.rows_under(1), 1);
    assert!(!report.can_retire(1));
    assert!(
        report.to_string().contains("key 1: 1 rows: still needed"),
        "{report}"
    );

    // Every rewritten row reads back the same; versions did not move.
    let read = calls.get(finished.id).await.expect("get").expect("found");
    assert_eq!(read, finished);
    assert_eq!(calls.get(plain.id).await.expect("get"), Some(plain.clone()));

    // The call in flight ends (its write seals it under key 2): key 1 is free.
    let mut done = in_flight.clone();
    done.status = CallStatus::Completed;
    done.finished_at = Some(t0());
    calls.update(&done).await.expect("finished");
    let after = rekey(&stores, &rotated, 2).await.expect("rekey again");
    assert_eq!(after.tables["calls"].rewritten, 0, "{after}");
    assert!(after.can_retire(1), "{after}");
    assert!(
        after.to_string().contains("key 1: 0 rows: can be retired"),
        "{after}"
    );
    for dump in [calls.dump(), windows.dump(), format!("{transcripts:?}")] {
        assert!(!dump.contains("cc1.1."), "{dump}");
        assert!(dump.contains("cc1.2."), "{dump}");
    }

    // Only key 2 left: everything still reads.
    let only_new = ring(&[2]);
    calls.set_cipher(only_new.clone());
    windows.set_cipher(only_new.clone());
    transcripts.set_cipher(only_new);
    assert_eq!(
        calls.get(finished.id).await.expect("get"),
        Some(finished.clone())
    );
    assert_eq!(windows.list(&owner).await.expect("windows").len(), 1);
    let t = transcripts.get(finished.id, t0()).await.expect("get");
    assert!(t.is_some());
}

#[tokio::test]
async fn rekey_without_a_master_key_is_refused_naming_it() {
    use crate::store::TranscriptStore as _;
    let store = InMemoryTranscriptStore::new();
    let err = store
        .reseal_page(true, 10, None)
        .await
        .expect_err("no cipher");
    assert_eq!(err.field(), Some("CALLCAT_MASTER_KEY"));
    let err = store.reseal_page(false, 0, None).await.expect_err("limit");
    assert_eq!(err.field(), Some("limit"));
}
