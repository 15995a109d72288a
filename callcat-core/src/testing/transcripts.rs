//! [`TranscriptStore`] contract cases. Each takes a fresh, empty store.

use std::sync::Arc;

use chrono::TimeDelta;

use super::fixtures::{at, owner, t0};
use crate::ids::CallId;
use crate::store::TranscriptStore;
use crate::transcript::{SpeakerRole, Transcript, TranscriptSegment};

type Store = Arc<dyn TranscriptStore>;

fn seg(role: SpeakerRole, text: &str, start: u64) -> TranscriptSegment {
    TranscriptSegment {
        role,
        text: text.to_owned(),
        start_ms: Some(start),
        end_ms: Some(start + 900),
    }
}

/// `put` creates and replaces; `get` reads back exactly.
pub async fn put_replaces_and_get_reads_back(store: Store) {
    let o = owner("t1");
    let id = CallId::new();
    let mut t = Transcript::new(id, o.clone(), t0());
    t.provider_call_id = Some("pc-1".into());
    t.segments = vec![
        seg(SpeakerRole::Agent, "Hello!", 0),
        seg(SpeakerRole::User, "Hi — ça va? 👋", 1000),
    ];
    store.put(&t).await.expect("put");
    assert_eq!(store.get(id, t0()).await.expect("get"), Some(t.clone()));

    let mut replaced = t.clone();
    replaced.segments = vec![seg(SpeakerRole::System, "replaced", 5)];
    replaced.text = Some("free text".into());
    replaced.updated_at = at(10);
    store.put(&replaced).await.expect("replace");
    let got = store.get(id, t0()).await.expect("get").expect("present");
    assert_eq!(got, replaced);
    assert_eq!(got.render_text(), "free text");
    assert!(store.get(CallId::new(), t0()).await.expect("get").is_none());
}

/// `append` creates the transcript on first use and extends it in order.
pub async fn append_creates_then_extends(store: Store) {
    let o = owner("t1");
    let id = CallId::new();
    let first = store
        .append(id, &o, None, &[seg(SpeakerRole::Agent, "one", 0)], at(1))
        .await
        .expect("append 1");
    assert_eq!(first.segments.len(), 1);
    assert_eq!(
        first.expires_at,
        at(1) + crate::transcript::DEFAULT_TRANSCRIPT_TTL
    );
    let second = store
        .append(
            id,
            &o,
            Some("pc-9"),
            &[
                seg(SpeakerRole::User, "two", 1000),
                seg(SpeakerRole::Agent, "three", 2000),
            ],
            at(2),
        )
        .await
        .expect("append 2");
    let texts: Vec<&str> = second.segments.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert_eq!(second.provider_call_id.as_deref(), Some("pc-9"));
    assert_eq!(second.updated_at, at(2));
    assert_eq!(store.get(id, at(3)).await.expect("get"), Some(second));
}

/// Expired transcripts are not returned and `delete_expired` removes them.
pub async fn expired_transcripts_are_hidden_and_deleted(store: Store) {
    let o = owner("t1");
    let old = CallId::new();
    let fresh = CallId::new();
    let mut t = Transcript::new(old, o.clone(), t0());
    t.expires_at = at(100);
    t.provider_call_id = Some("pc-old".into());
    store.put(&t).await.expect("put old");
    let mut u = Transcript::new(fresh, o.clone(), t0());
    u.expires_at = at(10_000);
    store.put(&u).await.expect("put fresh");

    assert!(store.get(old, at(99)).await.expect("get").is_some());
    assert!(store.get(old, at(100)).await.expect("get").is_none());
    assert!(
        store
            .get_by_provider_call_id("pc-old", at(100))
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(store.delete_expired(at(100)).await.expect("delete"), 1);
    assert!(
        store.get(old, at(0)).await.expect("get").is_none(),
        "deleted for good"
    );
    assert!(store.get(fresh, at(100)).await.expect("get").is_some());
    assert_eq!(
        store
            .delete_expired(at(100) + TimeDelta::seconds(1))
            .await
            .expect("again"),
        0
    );
}

/// Transcripts are found by the provider's call id.
pub async fn get_by_provider_call_id(store: Store) {
    let o = owner("t1");
    let id = CallId::new();
    store
        .append(
            id,
            &o,
            Some("pc-live"),
            &[seg(SpeakerRole::Agent, "hello", 0)],
            t0(),
        )
        .await
        .expect("append");
    let got = store
        .get_by_provider_call_id("pc-live", t0())
        .await
        .expect("get")
        .expect("found");
    assert_eq!(got.call_id, id);
    assert!(
        store
            .get_by_provider_call_id("pc-none", t0())
            .await
            .expect("get")
            .is_none()
    );
}
