//! The TwiML conversation flow: every step parses as XML, hostile text is
//! escaped, gather callbacks become transcript segments.

use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{
    Call, CallId, CallTemplate, ErrorKind, Limits, NewCall, Owner, PhoneNumber, SpeakerRole,
    WebhookRequest,
};
use callcat_twilio::flow::{DEFAULT_CLOSING, DEFAULT_GREETING, DEFAULT_PROMPTS};
use callcat_twilio::{
    CallbackPaths, CallbackUrls, ConversationFlow, TwilioWebhookVerifier, compute_signature,
    render_call_twiml,
};
use http::{HeaderMap, HeaderValue};

const ID: &str = "01900000-0000-7000-8000-000000000001";
const HOSTILE: &str = r#"</Say><Hangup/><Say a="1">Tom & "Jerry" 'n' <friends>"#;

fn call() -> Call {
    let template = CallTemplate::new(
        "Ada",
        PhoneNumber::parse("+14155552671").expect("phone"),
        "Reflection",
        "Ask",
    );
    let now = DateTime::<Utc>::from_timestamp(1_893_456_000, 0).expect("time");
    let mut c = NewCall::new(template)
        .into_call(Owner::new("t", "u"), now, &Limits::default())
        .expect("call");
    c.id = ID.parse::<CallId>().expect("id");
    c
}

fn urls() -> CallbackUrls {
    CallbackUrls::new("https://calls.example.com", CallbackPaths::default()).expect("urls")
}

/// A verb: its name, attributes and text.
type Verb = (String, Vec<(String, String)>, String);

/// Parses the document and returns the root's child elements.
fn verbs(xml: &str) -> Vec<Verb> {
    let doc = roxmltree::Document::parse(xml).expect("TwiML parses as XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "Response");
    root.children()
        .filter(|n| n.is_element())
        .map(|n| {
            (
                n.tag_name().name().to_string(),
                n.attributes()
                    .map(|a| (a.name().to_string(), a.value().to_string()))
                    .collect(),
                n.descendants()
                    .filter(|d| d.is_text())
                    .filter_map(|d| d.text())
                    .collect::<String>(),
            )
        })
        .collect()
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn default_flow_is_seed_002() {
    let c = call();
    let step0 = render_call_twiml(&c, &urls(), 0).expect("step 0");
    let v = verbs(&step0);
    let names: Vec<&str> = v.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["Say", "Gather", "Redirect"]);
    assert_eq!(v[0].2, DEFAULT_GREETING);
    assert_eq!(v[1].2, DEFAULT_PROMPTS[0]);
    assert_eq!(attr(&v[1].1, "input"), Some("speech"));
    assert_eq!(
        attr(&v[1].1, "action"),
        Some(format!("https://calls.example.com/webhooks/twilio/gather/{ID}?step=0").as_str())
    );
    assert_eq!(
        v[2].2,
        format!("https://calls.example.com/webhooks/twilio/twiml/{ID}?step=1")
    );

    let step1 = verbs(&render_call_twiml(&c, &urls(), 1).expect("step 1"));
    assert_eq!(step1[0].0, "Gather");
    assert_eq!(step1[0].2, DEFAULT_PROMPTS[1]);
    assert_eq!(
        step1[1].2,
        format!("https://calls.example.com/webhooks/twilio/twiml/{ID}?step=2")
    );

    let last = verbs(&render_call_twiml(&c, &urls(), 2).expect("closing"));
    let names: Vec<&str> = last.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["Say", "Hangup"]);
    assert_eq!(last[0].2, DEFAULT_CLOSING);

    let e = render_call_twiml(&c, &urls(), 3).expect_err("past the end");
    assert_eq!(e.kind(), ErrorKind::Validation);
}

#[test]
fn hostile_text_is_escaped_and_configuration_comes_from_metadata() {
    let mut c = call();
    c.language = Some("en-GB".into());
    c.voice = Some("Polly.Amy".into());
    c.metadata.insert(
        "twilio_flow".into(),
        serde_json::json!({
            "greeting": HOSTILE,
            "prompts": [HOSTILE, "Second?"],
            "closing": "Bye & thanks",
            "realtime_transcription": true,
            "partial_results": true,
            "speech_timeout": 3
        }),
    );
    let xml = render_call_twiml(&c, &urls(), 0).expect("step 0");
    let v = verbs(&xml);
    let names: Vec<&str> = v.iter().map(|(n, _, _)| n.as_str()).collect();
    // The hostile text did not inject any element.
    assert_eq!(names, ["Start", "Say", "Gather", "Redirect"]);
    assert_eq!(v[1].2, HOSTILE);
    assert_eq!(v[2].2, HOSTILE);
    assert_eq!(attr(&v[1].1, "voice"), Some("Polly.Amy"));
    assert_eq!(attr(&v[1].1, "language"), Some("en-GB"));
    assert_eq!(attr(&v[2].1, "language"), Some("en-GB"));
    assert_eq!(attr(&v[2].1, "speechTimeout"), Some("3"));

    let doc = roxmltree::Document::parse(&xml).expect("xml");
    let t = doc
        .descendants()
        .find(|n| n.has_tag_name("Transcription"))
        .expect("transcription");
    assert_eq!(
        t.attribute("statusCallbackUrl"),
        Some(
            format!("https://calls.example.com/webhooks/twilio/transcription?callcat_call_id={ID}")
                .as_str()
        )
    );
    assert_eq!(t.attribute("partialResults"), Some("true"));
    // Later steps do not start transcription again.
    let step1 = render_call_twiml(&c, &urls(), 1).expect("step 1");
    assert!(!step1.contains("<Start>"));
    assert_eq!(
        verbs(&render_call_twiml(&c, &urls(), 2).expect("end"))[0].2,
        "Bye & thanks"
    );
}

#[test]
fn hostile_attribute_values_are_escaped() {
    let paths = CallbackPaths {
        gather: "/g/{call_id}/\"'<&>".into(),
        ..CallbackPaths::default()
    };
    let urls = CallbackUrls::new("https://calls.example.com", paths).expect("urls");
    let xml = ConversationFlow::default()
        .render_step(&urls, ID.parse().expect("id"), 0)
        .expect("render");
    let v = verbs(&xml);
    assert_eq!(
        attr(&v[1].1, "action"),
        Some(format!("https://calls.example.com/g/{ID}/\"'<&>?step=0").as_str())
    );
}

#[test]
fn bad_flow_configuration_is_a_validation_error() {
    for cfg in [
        serde_json::json!("not an object"),
        serde_json::json!({"prompts": []}),
        serde_json::json!({"prompts": "one"}),
        serde_json::json!({"prompts": [1, 2]}),
        serde_json::json!({"greeting": "   "}),
        serde_json::json!({"speech_timeout": 0}),
        serde_json::json!({"realtime_transcription": "yes"}),
        serde_json::json!({"colour": "blue"}),
    ] {
        let mut c = call();
        c.metadata.insert("twilio_flow".into(), cfg.clone());
        let e = ConversationFlow::for_call(&c).expect_err("invalid");
        assert_eq!(e.kind(), ErrorKind::Validation, "{cfg}");
        assert!(
            e.field().is_some_and(|f| f.starts_with("twilio_flow")),
            "{cfg}"
        );
    }
}

#[test]
fn gather_callbacks_become_segments() {
    let flow = ConversationFlow::default();
    let v = TwilioWebhookVerifier::new("tok", "https://calls.example.com");
    let target = format!("/webhooks/twilio/gather/{ID}?step=1");
    let pairs = [
        ("CallSid", "CA11111111111111111111111111111111"),
        ("SpeechResult", "  That <script> & patience matter.  "),
        ("Confidence", "0.87"),
    ];
    let sig = compute_signature("tok", &format!("https://calls.example.com{target}"), &pairs);
    let mut headers = HeaderMap::new();
    headers.insert(
        "X-Twilio-Signature",
        HeaderValue::from_str(&sig).expect("header"),
    );
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
        .into_bytes();
    let turn = v
        .verify_gather(
            &flow,
            WebhookRequest {
                url: &target,
                headers: &headers,
                body: &body,
            },
        )
        .expect("turn");
    assert_eq!(turn.step, 1);
    assert_eq!(turn.next_step(), 2);
    assert_eq!(turn.prompt.role, SpeakerRole::Agent);
    assert_eq!(turn.prompt.text, DEFAULT_PROMPTS[1]);
    let answer = turn.answer.clone().expect("answer");
    assert_eq!(answer.role, SpeakerRole::User);
    assert_eq!(answer.text, "That <script> & patience matter.");
    assert_eq!(turn.confidence, Some(0.87));
    assert_eq!(turn.segments().len(), 2);

    // Tampered: unauthorized.
    let tampered = body
        .iter()
        .map(|b| if *b == b'8' { b'9' } else { *b })
        .collect::<Vec<_>>();
    let e: callcat_core::Error = v
        .verify_gather(
            &flow,
            WebhookRequest {
                url: &target,
                headers: &headers,
                body: &tampered,
            },
        )
        .expect_err("tampered")
        .into();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);

    // A step the flow does not have, or no step number: validation.
    let form = callcat_twilio::FormFields::parse(&body).expect("form");
    for bad in ["?step=2", "?step=x"] {
        let url = format!("/webhooks/twilio/gather/{ID}{bad}");
        let e: callcat_core::Error = flow.parse_gather(&url, &form).expect_err(bad).into();
        assert_eq!(e.kind(), ErrorKind::Validation, "{bad}");
    }
    // Nothing recognized: the prompt alone.
    let empty = callcat_twilio::FormFields::parse(b"CallSid=CA1&SpeechResult=").expect("form");
    let turn = flow.parse_gather(&target, &empty).expect("turn");
    assert!(turn.answer.is_none());
    assert_eq!(turn.segments().len(), 1);
}
