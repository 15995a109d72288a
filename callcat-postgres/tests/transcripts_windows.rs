//! PostgresTranscriptStore (append, owner checks, provider id, TTL) and
//! PostgresWindowStore (owner scoping, paging) against a real PostgreSQL.

mod common;

use callcat_core::transcript::DEFAULT_TRANSCRIPT_TTL;
use callcat_core::{
    CallId, CallTemplate, CallWindow, ErrorKind, PhoneNumber, SpeakerRole, Transcript,
    TranscriptSegment, TranscriptStore, WindowId, WindowSchedule, WindowStore,
};
use common::{owner, secs, t0};

fn seg(role: SpeakerRole, text: &str, start: u64) -> TranscriptSegment {
    TranscriptSegment {
        role,
        text: text.into(),
        start_ms: Some(start),
        end_ms: Some(start + 900),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transcripts_append_put_and_read_back() {
    let db = db_or_skip!();
    let ts = db.store.transcripts();
    let o = owner("t", "u");
    let id = CallId::new();
    let first = ts
        .append(id, &o, None, &[seg(SpeakerRole::Agent, "Hello", 0)], t0())
        .await
        .expect("append");
    assert_eq!(first.segments.len(), 1);
    assert_eq!(first.expires_at, t0() + DEFAULT_TRANSCRIPT_TTL);
    assert_eq!(first.provider_call_id, None);

    let second = ts
        .append(
            id,
            &o,
            Some("prov-9"),
            &[
                seg(SpeakerRole::User, "Hi", 1000),
                seg(SpeakerRole::Agent, "Bye", 2000),
            ],
            t0() + secs(5),
        )
        .await
        .expect("append");
    assert_eq!(
        second
            .segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>(),
        ["Hello", "Hi", "Bye"]
    );
    assert_eq!(second.provider_call_id.as_deref(), Some("prov-9"));
    assert_eq!(second.updated_at, t0() + secs(5));
    assert_eq!(second.expires_at, first.expires_at, "append keeps the TTL");
    // A later append without a provider id keeps the recorded one.
    let third = ts
        .append(id, &o, None, &[], t0() + secs(6))
        .await
        .expect("append");
    assert_eq!(third.provider_call_id.as_deref(), Some("prov-9"));

    assert_eq!(ts.get(id, t0()).await.expect("get"), Some(third.clone()));
    assert_eq!(
        ts.get_by_provider_call_id("prov-9", t0())
            .await
            .expect("get"),
        Some(third.clone())
    );
    assert_eq!(
        ts.get_by_provider_call_id("nope", t0()).await.expect("get"),
        None
    );

    // Someone else cannot append to or overwrite it.
    let stranger = owner("t", "x");
    assert_eq!(
        ts.append(id, &stranger, None, &[], t0())
            .await
            .expect_err("owner")
            .kind(),
        ErrorKind::Conflict
    );
    let mut theirs = third.clone();
    theirs.owner = stranger;
    assert_eq!(
        ts.put(&theirs).await.expect_err("owner").kind(),
        ErrorKind::Conflict
    );

    // put replaces the whole transcript.
    let mut replaced = Transcript::new(id, o.clone(), t0() + secs(10));
    replaced.text = Some("free text".into());
    ts.put(&replaced).await.expect("put");
    assert_eq!(ts.get(id, t0()).await.expect("get"), Some(replaced));
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_transcripts_are_hidden_and_deleted() {
    let db = db_or_skip!();
    let ts = db.store.transcripts();
    let o = owner("t", "u");
    let mut short = Transcript::new(CallId::new(), o.clone(), t0());
    short.expires_at = t0() + secs(60);
    short.provider_call_id = Some("p-short".into());
    let long = Transcript::new(CallId::new(), o.clone(), t0());
    ts.put(&short).await.expect("put");
    ts.put(&long).await.expect("put");

    let after = t0() + secs(60);
    assert_eq!(
        ts.get(short.call_id, t0()).await.expect("get"),
        Some(short.clone())
    );
    assert_eq!(ts.get(short.call_id, after).await.expect("get"), None);
    assert_eq!(
        ts.get_by_provider_call_id("p-short", after)
            .await
            .expect("get"),
        None
    );
    assert_eq!(ts.delete_expired(t0()).await.expect("delete"), 0);
    assert_eq!(ts.delete_expired(after).await.expect("delete"), 1);
    assert_eq!(ts.delete_expired(after).await.expect("delete"), 0);
    assert_eq!(ts.get(long.call_id, after).await.expect("get"), Some(long));
}

fn window(o: &callcat_core::Owner, start_s: i64) -> CallWindow {
    CallWindow {
        id: WindowId::new(),
        owner: o.clone(),
        schedule: WindowSchedule::OneOff {
            start_at: t0() + secs(start_s),
            end_at: t0() + secs(start_s + 3600),
            timezone: callcat_core::chrono_tz::Europe::Berlin,
        },
        template: CallTemplate::new(
            "Ada",
            PhoneNumber::parse("+14155550123").expect("number"),
            "Daily",
            "Say hi.",
        ),
        created_at: t0(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn windows_are_scoped_to_owners_and_page() {
    let db = db_or_skip!();
    let ws = db.store.windows();
    let (a, b) = (owner("t", "a"), owner("t", "b"));
    let mut mine = Vec::new();
    for i in 0..3 {
        let w = window(&a, i);
        ws.create(&w).await.expect("create");
        mine.push(w);
    }
    let theirs = window(&b, 0);
    ws.create(&theirs).await.expect("create");
    assert_eq!(
        ws.create(&theirs).await.expect_err("duplicate").kind(),
        ErrorKind::Conflict
    );
    let mut bad = window(&a, 0);
    bad.schedule = WindowSchedule::OneOff {
        start_at: t0(),
        end_at: t0(),
        timezone: callcat_core::chrono_tz::UTC,
    };
    assert_eq!(
        ws.create(&bad).await.expect_err("invalid").kind(),
        ErrorKind::Validation
    );

    assert_eq!(ws.list(&a).await.expect("list"), mine);
    assert_eq!(
        ws.get(&a, mine[1].id).await.expect("get"),
        Some(mine[1].clone())
    );
    assert_eq!(ws.get(&b, mine[1].id).await.expect("get"), None);

    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = ws.list_all(3, cursor.as_deref()).await.expect("page");
        assert!(page.items.len() <= 3);
        all.extend(page.items);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let mut expected = mine.clone();
    expected.push(theirs.clone());
    expected.sort_by_key(|w| w.id);
    assert_eq!(all, expected);
    assert_eq!(
        ws.list_all(0, None).await.expect_err("limit").field(),
        Some("limit")
    );

    assert_eq!(
        ws.delete(&b, mine[0].id)
            .await
            .expect_err("not theirs")
            .kind(),
        ErrorKind::NotFound
    );
    ws.delete(&a, mine[0].id).await.expect("delete");
    assert_eq!(ws.list(&a).await.expect("list"), mine[1..].to_vec());
    assert_eq!(
        ws.delete(&a, mine[0].id).await.expect_err("gone").kind(),
        ErrorKind::NotFound
    );
}
