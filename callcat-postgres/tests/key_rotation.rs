//! Encryption of call windows, and master key rotation on PostgreSQL: `rekey`
//! re-seals every table's old rows under the current key, leaves calls in flight
//! and quarantined rows alone, and its report says when an old key can go.

mod common;

use callcat_core::rotation::{key_report, rekey};
use callcat_core::{
    CallAnalysis, CallStatus, CallStore, CallTemplate, CallWindow, DoNotCallEntry, DoNotCallStore,
    ErrorKind, FieldCipher, MasterKey, Owner, PhoneNumber, SpeakerRole, TranscriptSegment,
    TranscriptStore, WindowId, WindowSchedule, WindowStore, WorkerId,
};
use callcat_postgres::sqlx::{self, AssertSqlSafe};
use common::{TestDb, call_at, owner, secs, t0};

const SECRETS: [&str; 6] = [
    "4155550123",
    "2071838750",
    "Secretname",
    "secret-subject",
    "secret-prompt",
    "secret-variable",
];

fn ring(ids: &[u32]) -> FieldCipher {
    FieldCipher::new(
        ids.iter()
            .map(|i| MasterKey::new(*i, [*i as u8; 32]))
            .collect(),
    )
    .expect("cipher")
}

/// Every row of a table as text.
async fn raw(db: &TestDb, name: &str) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT t::text FROM \"{}\".{name} AS t",
        db.schema
    )))
    .fetch_all(db.store.pool())
    .await
    .expect("raw rows");
    rows.into_iter().map(|r| r.0).collect()
}

fn window_of(o: &Owner) -> CallWindow {
    let mut template = CallTemplate::new(
        "Ada Secretname",
        PhoneNumber::parse("+14155550123").expect("number"),
        "the secret-subject",
        "Ask about the secret-prompt.",
    );
    template.caller_number = Some(PhoneNumber::parse("+442071838750").expect("caller"));
    template
        .variables
        .insert("diagnosis".into(), "secret-variable".into());
    CallWindow {
        id: WindowId::new(),
        owner: o.clone(),
        schedule: WindowSchedule::OneOff {
            start_at: t0(),
            end_at: t0() + secs(3600),
            timezone: callcat_core::chrono_tz::Europe::Berlin,
        },
        template,
        created_at: t0(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn window_rows_hold_no_plaintext_and_plain_rows_still_read() {
    let db = db_or_skip!();
    let o = owner("acme", "alice");
    let plain_window = window_of(&o);
    db.store
        .windows()
        .create(&plain_window)
        .await
        .expect("written before encryption");

    let windows = db.store.with_cipher(ring(&[1])).windows();
    let w = window_of(&o);
    windows.create(&w).await.expect("create");
    let mut edited = w.clone();
    edited.template.instructions = "Ask about the other secret-prompt.".into();
    windows.update(&edited).await.expect("update");
    let rows = raw(&db, "call_windows").await;
    let sealed: Vec<&String> = rows
        .iter()
        .filter(|r| r.contains(&w.id.to_string()))
        .collect();
    assert_eq!(sealed.len(), 1);
    for secret in SECRETS {
        assert!(!sealed[0].contains(secret), "{secret} in {}", sealed[0]);
    }
    assert!(sealed[0].contains("\"cc1.1."), "{}", sealed[0]);

    assert_eq!(
        windows.get(&o, w.id).await.expect("get"),
        Some(edited.clone())
    );
    let listed = windows.list(&o).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert!(
        listed.contains(&plain_window) && listed.contains(&edited),
        "plain and sealed rows read side by side"
    );
    let all = windows.list_all(10, None).await.expect("list all");
    assert_eq!(all.items.len(), 2);

    let err = db
        .store
        .with_cipher(ring(&[2]))
        .windows()
        .get(&o, w.id)
        .await
        .expect_err("key 1 unknown");
    assert_eq!(err.kind(), ErrorKind::Crypto);
    assert_eq!(err.source_name(), Some("postgres"));
}

/// Rows under key 1 in every table (and a plain call, a call in flight and a
/// quarantined call under a lost key 9); key 2 becomes current; `rekey` in
/// batches of 2.
#[tokio::test(flavor = "multi_thread")]
async fn rekey_reseals_every_table_and_reports_when_the_old_key_can_be_retired() {
    let db = db_or_skip!();
    let o = owner("acme", "alice");
    let acme: callcat_core::TenantId = "acme".into();
    let number = PhoneNumber::parse("+14155550123").expect("number");

    // Written before encryption was enabled, due tomorrow.
    let plain = call_at(&o, t0() + secs(86_400));
    db.store.calls().create(&plain).await.expect("plain call");
    // Under a key that is lost, with a sealed last error: the claim quarantines it.
    let mut lost = call_at(&o, t0());
    lost.last_error = Some("secret-error".into());
    db.store
        .with_cipher(ring(&[9]))
        .calls()
        .create(&lost)
        .await
        .expect("key 9 call");

    let v1 = db.store.with_cipher(ring(&[1]));
    let calls = v1.calls();
    let mut finished = call_at(&o, t0() + secs(60));
    finished.callee_name = "Ada Secretname".into();
    finished.status = CallStatus::Completed;
    finished.next_action_at = None;
    finished.finished_at = Some(t0() + secs(120));
    finished.analysis = Some(CallAnalysis {
        summary: Some("secret-summary".into()),
        ..CallAnalysis::default()
    });
    let finished = calls.create(&finished).await.expect("finished").into_call();
    let scheduled = calls
        .create(&call_at(&o, t0() + secs(7_200)))
        .await
        .expect("scheduled")
        .into_call();
    let mut ringing = call_at(&o, t0() + secs(30));
    ringing.status = CallStatus::Ringing;
    ringing.next_action_at = None;
    let ringing = calls.create(&ringing).await.expect("ringing").into_call();
    let claimed = calls
        .claim_due(t0() + secs(1), 10, &WorkerId::new("w"), t0() + secs(30))
        .await
        .expect("claim quarantines the key-9 call");
    assert!(claimed.is_empty());
    assert_eq!(calls.list_quarantined().await.expect("q"), vec![lost.id]);

    v1.windows().create(&window_of(&o)).await.expect("window");
    let seg = TranscriptSegment::new(SpeakerRole::User, "my account is 99887766");
    v1.transcripts()
        .append(finished.id, &o, None, &[seg], t0())
        .await
        .expect("transcript");
    let entry = DoNotCallEntry {
        tenant: acme.clone(),
        phone_number: number.clone(),
        added_by: "admin".into(),
        added_at: t0(),
    };
    assert!(v1.do_not_call().add(&entry).await.expect("dnc"));

    let rotated = ring(&[2, 1]);
    let v21 = db.store.with_cipher(rotated.clone());
    let before = key_report(&v21.stores(), &rotated, 2)
        .await
        .expect("report");
    // calls: finished, scheduled, ringing; window; transcript; do-not-call entry.
    assert_eq!(before.rows_under(1), 6, "{before}");
    assert_eq!(
        before.tables["calls"].plain, 2,
        "plain + quarantined: {before}"
    );
    assert_eq!(before.unknown_keys(), vec![9], "{before}");
    assert!(!before.can_retire(1));

    let report = rekey(&v21.stores(), &rotated, 2).await.expect("rekey");
    let c = &report.tables["calls"];
    assert_eq!(
        (c.rows, c.rewritten, c.deferred, c.unreadable),
        (5, 3, 1, 1),
        "plain, finished and scheduled re-sealed; ringing deferred; quarantined left: {report}"
    );
    assert_eq!(c.by_key.get(&1), Some(&1), "{report}");
    for t in ["windows", "transcripts", "do-not-call"] {
        assert_eq!(report.tables[t].rewritten, 1, "{t}: {report}");
        assert_eq!(report.tables[t].by_key.get(&1), None, "{t}: {report}");
    }
    assert!(report.unsupported.is_empty(), "{report}");
    assert!(!report.can_retire(1), "the ringing call still needs key 1");
    println!("{report}");

    // The quarantined row is untouched: still listed, its reason still plain.
    assert_eq!(calls.list_quarantined().await.expect("q"), vec![lost.id]);

    // Re-sealed rows read back the same, versions unchanged.
    let calls21 = v21.calls();
    for c in [&plain, &finished, &scheduled] {
        assert_eq!(calls21.get(c.id).await.expect("get").as_ref(), Some(c));
    }

    // The call in flight finishes (its own write re-seals it): key 1 can go.
    let mut done = ringing.clone();
    done.status = CallStatus::Completed;
    done.finished_at = Some(t0() + secs(90));
    calls21.update(&done).await.expect("finished");
    let after = rekey(&v21.stores(), &rotated, 2)
        .await
        .expect("rekey again");
    assert_eq!(after.tables["calls"].rewritten, 0, "{after}");
    assert!(after.can_retire(1), "{after}");
    assert!(
        after.to_string().contains("key 1: 0 rows: can be retired"),
        "{after}"
    );
    for name in ["calls", "call_windows", "transcripts", "do_not_call"] {
        for row in raw(&db, name).await {
            assert!(
                !row.contains("cc1.1.") && !row.contains("bi1."),
                "{name}: {row}"
            );
        }
    }

    // Key 1 retired: everything still reads, and the listed number is still found.
    let v2 = db.store.with_cipher(ring(&[2]));
    assert_eq!(
        v2.calls().get(finished.id).await.expect("get"),
        Some(finished.clone())
    );
    assert_eq!(v2.windows().list(&o).await.expect("windows").len(), 1);
    let t = v2
        .transcripts()
        .get(finished.id, t0())
        .await
        .expect("transcript");
    assert_eq!(t.map(|t| t.segments.len()), Some(1));
    assert!(
        v2.do_not_call()
            .contains(&acme, &number)
            .await
            .expect("contains")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rekey_needs_a_master_key() {
    let db = db_or_skip!();
    let err = db
        .store
        .calls()
        .reseal_page(true, 10, None)
        .await
        .expect_err("no cipher");
    assert_eq!(err.field(), Some("CALLCAT_MASTER_KEY"));
}
