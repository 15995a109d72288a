//! Encryption of call windows, and master key rotation on DynamoDB: `rekey`
//! re-seals calls, windows and do-not-call entries under the current key (a
//! conditional write per item), and reports the stores it cannot count.

mod common;

use std::sync::Arc;

use callcat_core::rotation::rekey;
use callcat_core::testing::fixtures::{at, owner, scheduled_call, t0};
use callcat_core::{
    CallStatus, CallStore, CallTemplate, CallWindow, DoNotCallEntry, DoNotCallStore, ErrorKind,
    FieldCipher, MasterKey, Owner, PhoneNumber, SpeakerRole, Stores, TranscriptSegment,
    TranscriptStore, WindowId, WindowSchedule, WindowStore,
};
use callcat_dynamo::DynamoWindowStore;
use callcat_dynamo::aws_sdk_dynamodb::types::AttributeValue;
use common::{TestStores, test_stores};

fn ring(ids: &[u32]) -> FieldCipher {
    FieldCipher::new(
        ids.iter()
            .map(|i| MasterKey::new(*i, [*i as u8; 32]))
            .collect(),
    )
    .expect("cipher")
}

fn windows_with(s: &TestStores, ids: &[u32]) -> DynamoWindowStore {
    s.windows.as_ref().clone().with_cipher(ring(ids))
}

fn window_of(o: &Owner) -> CallWindow {
    let mut template = CallTemplate::new(
        "Ada Secretname",
        PhoneNumber::parse("+14155552671").expect("number"),
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
            end_at: at(3600),
            timezone: callcat_core::chrono_tz::Europe::Berlin,
        },
        template,
        created_at: t0(),
    }
}

/// The `window` attribute of a window's item, read with a plain GetItem.
async fn raw_window(s: &TestStores, w: &CallWindow) -> String {
    let item = s
        .client()
        .get_item()
        .table_name(&s.tables().windows)
        .key("ownerKey", AttributeValue::S(w.owner.key()))
        .key("windowId", AttributeValue::S(w.id.to_string()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
        .expect("item exists");
    match item.get("window") {
        Some(AttributeValue::S(s)) => s.clone(),
        other => panic!("no window attribute: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_items_hold_no_plaintext_and_plain_items_still_read() {
    let Some(s) = test_stores().await else { return };
    let o = owner("acme");
    let plain = window_of(&o);
    s.windows
        .create(&plain)
        .await
        .expect("written before encryption");
    let windows = windows_with(&s, &[1]);
    let w = window_of(&o);
    windows.create(&w).await.expect("create");
    let raw = raw_window(&s, &w).await;
    for secret in [
        "4155552671",
        "2071838750",
        "Secretname",
        "secret-subject",
        "secret-prompt",
        "secret-variable",
    ] {
        assert!(!raw.contains(secret), "{secret} in {raw}");
    }
    assert!(raw.contains("cc1.1."), "{raw}");
    assert_eq!(windows.get(&o, w.id).await.expect("get"), Some(w.clone()));
    assert_eq!(windows.get(&o, plain.id).await.expect("plain"), Some(plain));
    let err = windows_with(&s, &[2])
        .get(&o, w.id)
        .await
        .expect_err("key 1 unknown");
    assert_eq!(err.kind(), ErrorKind::Crypto);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_reseals_every_table_so_the_old_key_can_be_retired() {
    let Some(s) = test_stores().await else { return };
    let o = owner("acme");
    let v1 = s.calls.as_ref().clone().with_cipher(ring(&[1]));
    let mut finished = scheduled_call(&o, t0());
    finished.status = CallStatus::Completed;
    finished.next_action_at = None;
    finished.finished_at = Some(at(60));
    let finished = v1.create(&finished).await.expect("finished").into_call();
    let mut ringing = scheduled_call(&o, at(5));
    ringing.status = CallStatus::Ringing;
    ringing.next_action_at = None;
    v1.create(&ringing).await.expect("ringing");
    let w = window_of(&o);
    windows_with(&s, &[1]).create(&w).await.expect("window");
    let number = PhoneNumber::parse("+14155552671").expect("number");
    let entry = DoNotCallEntry {
        tenant: o.tenant.clone(),
        phone_number: number.clone(),
        added_by: "admin".into(),
        added_at: t0(),
    };
    let dnc_v1 = s.do_not_call.as_ref().clone().with_cipher(ring(&[1]));
    assert!(dnc_v1.add(&entry).await.expect("listed under key 1"));
    let said = [TranscriptSegment::new(SpeakerRole::User, "secret-words")];
    s.transcripts
        .as_ref()
        .clone()
        .with_cipher(ring(&[1]))
        .append(finished.id, &o, None, &said, t0())
        .await
        .expect("a transcript under key 1");

    let rotated = ring(&[2, 1]);
    let calls = Arc::new(s.calls.as_ref().clone().with_cipher(rotated.clone()));
    let windows = Arc::new(windows_with(&s, &[2, 1]));
    let dnc = Arc::new(s.do_not_call.as_ref().clone().with_cipher(rotated.clone()));
    let transcripts = Arc::new(s.transcripts.as_ref().clone().with_cipher(rotated.clone()));
    let stores = Stores {
        calls: calls.clone(),
        windows: windows.clone(),
        do_not_call: dnc,
        transcripts,
    };
    let report = rekey(&stores, &rotated, 1).await.expect("rekey");
    let c = &report.tables["calls"];
    assert_eq!((c.rows, c.rewritten, c.deferred), (2, 1, 1), "{report}");
    assert_eq!(report.tables["windows"].rewritten, 1, "{report}");
    let d = &report.tables["do-not-call"];
    assert_eq!((d.rows, d.rewritten), (1, 1), "{report}");
    assert_eq!(d.by_key.get(&1), None, "{report}");
    let t = &report.tables["transcripts"];
    assert_eq!((t.rows, t.rewritten), (1, 1), "{report}");
    assert_eq!(report.rows_under(1), 1, "the ringing call: {report}");
    assert!(report.unsupported.is_empty(), "{report}");
    assert!(!report.can_retire(1));
    assert!(raw_window(&s, &w).await.contains("cc1.2."));

    // Key 1 gone: the re-sealed rows still read.
    let v2 = s.calls.as_ref().clone().with_cipher(ring(&[2]));
    assert_eq!(
        v2.get(finished.id).await.expect("get"),
        Some(finished.clone())
    );
    assert_eq!(
        windows_with(&s, &[2]).get(&o, w.id).await.expect("get"),
        Some(w)
    );
    let dnc_v2 = s.do_not_call.as_ref().clone().with_cipher(ring(&[2]));
    assert!(
        dnc_v2.contains(&o.tenant, &number).await.expect("contains"),
        "the listed number is still found with key 2 only"
    );
    let listed = dnc_v2.list(&o.tenant, 10, None).await.expect("list");
    assert_eq!(listed.items, vec![entry]);
    let t = s
        .transcripts
        .as_ref()
        .clone()
        .with_cipher(ring(&[2]))
        .get(finished.id, t0())
        .await
        .expect("the transcript reads with key 2 only")
        .expect("present");
    assert_eq!(t.segments, said.to_vec());
}
