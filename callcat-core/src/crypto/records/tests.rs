use super::*;
use crate::crypto::MasterKey;
use crate::error::ErrorKind;
use crate::{AttemptRecord, CallAnalysis, CallTemplate, CallWindow, PhoneNumber, WindowSchedule};

fn ring(ids: &[u32]) -> FieldCipher {
    FieldCipher::new(
        ids.iter()
            .map(|i| MasterKey::new(*i, [*i as u8; 32]))
            .collect(),
    )
    .expect("cipher")
}

/// A call with every personal field filled with a recognizable secret.
fn personal_call(owner: &Owner) -> crate::Call {
    let mut call = crate::testing_support::sample_call(owner);
    call.callee_name = "Ada SECRET-NAME".into();
    call.subject = "SECRET-SUBJECT".into();
    call.instructions = "SECRET-PROMPT".into();
    call.caller_number = Some(PhoneNumber::parse("+14155550199").expect("valid"));
    call.recording_url = Some("https://rec.example/SECRET-URL.wav".into());
    call.last_error = Some("SECRET-ERROR".into());
    call.variables
        .insert("account".into(), "SECRET-VARIABLE".into());
    call.analysis = Some(CallAnalysis {
        summary: Some("SECRET-SUMMARY".into()),
        action_items: vec!["SECRET-ACTION".into()],
        successful: Some(true),
        ..CallAnalysis::default()
    });
    call.history = vec![AttemptRecord {
        number: 1,
        error: Some("SECRET-ATTEMPT-ERROR".into()),
        ..AttemptRecord::default()
    }];
    call
}

fn personal_window(owner: &Owner) -> CallWindow {
    let mut template = CallTemplate::new(
        "Ada SECRET-NAME",
        PhoneNumber::parse("+14155552671").expect("valid"),
        "SECRET-SUBJECT",
        "SECRET-PROMPT",
    );
    template.caller_number = Some(PhoneNumber::parse("+14155550199").expect("valid"));
    template
        .variables
        .insert("account".into(), "SECRET-VARIABLE".into());
    let now = chrono::Utc::now();
    CallWindow {
        id: crate::WindowId::new(),
        owner: owner.clone(),
        schedule: WindowSchedule::OneOff {
            start_at: now,
            end_at: now + chrono::TimeDelta::hours(1),
            timezone: chrono_tz::Europe::Berlin,
        },
        template,
        created_at: now,
    }
}

const SECRETS: [&str; 10] = [
    "4155552671",
    "4155550199",
    "SECRET-NAME",
    "SECRET-SUBJECT",
    "SECRET-PROMPT",
    "SECRET-URL",
    "SECRET-ERROR",
    "SECRET-VARIABLE",
    "SECRET-SUMMARY",
    "SECRET-ACTION",
];

fn assert_no_secret(text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(!text.contains("SECRET-ATTEMPT-ERROR"), "{text}");
}

#[test]
fn sealed_calls_hide_every_personal_field_and_open_back() {
    let cipher = ring(&[1]);
    let owner = Owner::new("t", "u");
    let call = personal_call(&owner);
    let sealed = seal_call(&call, Some(&cipher)).expect("seal");
    assert_no_secret(&sealed.record.to_string());
    assert!(sealed.phone_index.is_some());
    // What the stores query by stays plain.
    assert_eq!(sealed.record["status"], "SCHEDULED");
    assert_eq!(sealed.record["owner"]["tenant"], "t");
    assert_eq!(
        open_call(sealed.record.clone(), Some(&cipher)).expect("open"),
        call
    );
    assert_eq!(
        open_call(sealed.record.clone(), None)
            .expect_err("no key")
            .kind(),
        ErrorKind::Crypto
    );
    let usage = KeyUsage::of_call(&sealed.record);
    assert_eq!(usage.key_ids, BTreeSet::from([1]));
    assert!(!usage.plain && !usage.needs_rewrite(&cipher));
}

#[test]
fn a_sealed_value_moved_to_another_field_or_owner_does_not_open() {
    let cipher = ring(&[1]);
    let owner = Owner::new("t", "u");
    let sealed = seal_call(&personal_call(&owner), Some(&cipher)).expect("seal");
    let mut moved = sealed.record.clone();
    moved["instructions"] = moved["last_error"].clone();
    assert_eq!(
        open_call(moved, Some(&cipher)).expect_err("moved").kind(),
        ErrorKind::Crypto
    );
    let mut moved = sealed.record.clone();
    moved["variables"] = moved["analysis"].clone();
    assert_eq!(
        open_call(moved, Some(&cipher)).expect_err("moved").kind(),
        ErrorKind::Crypto
    );
    let mut stolen = sealed.record;
    stolen["owner"]["user"] = "mallory".into();
    assert_eq!(
        open_call(stolen, Some(&cipher))
            .expect_err("other owner")
            .kind(),
        ErrorKind::Crypto
    );
}

#[test]
fn plain_call_records_and_plain_values_in_sealed_records_read() {
    let cipher = ring(&[1]);
    let owner = Owner::new("t", "u");
    let call = personal_call(&owner);
    let plain = seal_call(&call, None).expect("plain");
    assert!(KeyUsage::of_call(&plain.record).plain);
    assert_eq!(
        open_call(plain.record, Some(&cipher)).expect("plain reads"),
        call
    );
    // The PostgreSQL quarantine writes a plain reason into a sealed record.
    let mut sealed = seal_call(&call, Some(&cipher)).expect("seal");
    sealed.record["last_error"] = "quarantined: cannot open".into();
    let usage = KeyUsage::of_call(&sealed.record);
    assert!(usage.plain && usage.needs_rewrite(&cipher));
    let opened = open_call(sealed.record, Some(&cipher)).expect("opens");
    assert_eq!(
        opened.last_error.as_deref(),
        Some("quarantined: cannot open")
    );
    assert_eq!(opened.analysis, call.analysis);
}

#[test]
fn windows_seal_their_template_and_open_back() {
    let cipher = ring(&[1]);
    let owner = Owner::new("t", "u");
    let window = personal_window(&owner);
    let sealed = seal_window(&window, Some(&cipher)).expect("seal");
    assert_no_secret(&sealed.to_string());
    assert_eq!(sealed["schedule"]["kind"], "one_off");
    assert_eq!(
        open_window(sealed.clone(), Some(&cipher)).expect("open"),
        window
    );
    assert_eq!(
        open_window(sealed.clone(), None)
            .expect_err("no key")
            .kind(),
        ErrorKind::Crypto
    );
    let mut stolen = sealed.clone();
    stolen["owner"]["user"] = "mallory".into();
    assert_eq!(
        open_window(stolen, Some(&cipher))
            .expect_err("other owner")
            .kind(),
        ErrorKind::Crypto
    );
    // A call's sealed phone number does not open as a window's.
    let call_phone = seal_call(&crate::testing_support::sample_call(&owner), Some(&cipher))
        .expect("seal")
        .record["phone_number"]
        .clone();
    let mut swapped = sealed.clone();
    swapped["template"]["phone_number"] = call_phone;
    assert_eq!(
        open_window(swapped, Some(&cipher))
            .expect_err("other field")
            .kind(),
        ErrorKind::Crypto
    );
    let plain = seal_window(&window, None).expect("plain");
    assert!(KeyUsage::of_window(&plain).plain);
    assert_eq!(
        open_window(plain, Some(&cipher)).expect("plain reads"),
        window
    );
    assert_eq!(KeyUsage::of_window(&sealed).key_ids, BTreeSet::from([1]));
}

#[test]
fn transcripts_seal_texts_and_open_back() {
    use crate::{SpeakerRole, Transcript, TranscriptSegment};
    let cipher = ring(&[1]);
    let owner = Owner::new("t", "u");
    let mut t = Transcript::new(crate::CallId::new(), owner.clone(), chrono::Utc::now());
    t.segments = vec![TranscriptSegment::new(SpeakerRole::User, "my PIN is 4321")];
    t.text = Some("free text 4321".into());
    let sealed = seal_transcript(&t, Some(&cipher)).expect("seal");
    assert!(!format!("{sealed:?}").contains("4321"));
    assert_eq!(
        open_transcript(sealed.clone(), Some(&cipher)).expect("open"),
        t
    );
    assert_eq!(
        open_transcript(sealed.clone(), None)
            .expect_err("no key")
            .kind(),
        ErrorKind::Crypto
    );
    assert_eq!(
        KeyUsage::of_transcript(&sealed).key_ids,
        BTreeSet::from([1])
    );
    assert!(KeyUsage::of_transcript(&t).plain);
    let mut moved = sealed;
    moved.text = Some(moved.segments[0].text.clone());
    assert_eq!(
        open_transcript(moved, Some(&cipher))
            .expect_err("other field")
            .kind(),
        ErrorKind::Crypto
    );
    assert_eq!(open_transcript(t.clone(), Some(&cipher)).expect("plain"), t);
    assert_eq!(seal_transcript(&t, None).expect("no cipher"), t);
}

#[test]
fn resealing_an_old_record_uses_the_current_key() {
    let old = ring(&[1]);
    let rotated = ring(&[2, 1]);
    let owner = Owner::new("t", "u");
    let call = personal_call(&owner);
    let v1 = seal_call(&call, Some(&old)).expect("seal");
    let usage = KeyUsage::of_call(&v1.record);
    assert_eq!(usage.key_ids, BTreeSet::from([1]));
    assert!(usage.needs_rewrite(&rotated) && !usage.needs_rewrite(&old));
    let opened = open_call(v1.record, Some(&rotated)).expect("old key reads");
    let v2 = seal_call(&opened, Some(&rotated)).expect("reseal");
    assert_eq!(KeyUsage::of_call(&v2.record).key_ids, BTreeSet::from([2]));
    let phone = v2.record["phone_number"].as_str().expect("sealed phone");
    assert!(phone.starts_with("cc1.2."), "{phone}");
    assert_eq!(
        v2.phone_index,
        Some(rotated.blind_index(call.phone_number.as_str()))
    );
    let mut usage = KeyUsage::default();
    usage.note_index(&old.blind_index("+1"));
    assert_eq!(usage.key_ids, BTreeSet::from([1]));
}
