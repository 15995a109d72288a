//! Which fields of the stored records are sealed, and how: calls, call windows
//! and transcripts. Every store seals and opens through these functions, so the
//! three backends keep the same fields encrypted.
//!
//! A text field is replaced by its ciphertext; a structured field (an object or a
//! list) by the ciphertext of its JSON text, opened back to the value. The field
//! name (as listed below) is bound in as associated data with the owner. Plain
//! values (written before encryption was enabled, or by the PostgreSQL
//! quarantine, which writes a plain `last_error`) read as they are; the next write
//! of the record seals them under the current key.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{FieldCipher, OwnerCipher, crypto};
use crate::error::{Error, Result};
use crate::ids::Owner;

/// The call fields sealed at rest as text: the called and shown numbers, the
/// recording URL, the callee's name, the subject, the prompt and the last error.
pub const SEALED_CALL_FIELDS: [&str; 7] = [
    "phone_number",
    "caller_number",
    "recording_url",
    "callee_name",
    "subject",
    "instructions",
    "last_error",
];

/// The call fields sealed at rest as the ciphertext of their JSON text: the
/// dynamic variables handed to the agent, and the post-call analysis (summary,
/// sentiment, action items, custom data).
pub const SEALED_CALL_JSON_FIELDS: [&str; 2] = ["variables", "analysis"];

/// The field name (associated data) of a sealed attempt error (`history[].error`).
pub const HISTORY_ERROR_FIELD: &str = "history.error";

/// The fields of a call window's template sealed at rest, as text; each is bound
/// as `template.<name>`.
pub const SEALED_TEMPLATE_FIELDS: [&str; 5] = [
    "phone_number",
    "caller_number",
    "callee_name",
    "subject",
    "instructions",
];

/// The fields of a call window's template sealed as their JSON text.
pub const SEALED_TEMPLATE_JSON_FIELDS: [&str; 1] = ["variables"];

/// The field name (bound as associated data) of sealed transcript segment texts.
pub const TRANSCRIPT_SEGMENTS_FIELD: &str = "transcript.segments";
/// The field name (bound as associated data) of a sealed free transcript text.
pub const TRANSCRIPT_TEXT_FIELD: &str = "transcript.text";

/// Whether a stored string is a sealed value (`cc1.` prefix). Stores open such
/// values and leave others as they are (written before encryption was enabled).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with("cc1.")
}

/// The sealed fields of one JSON object: `(name in the object, associated data)`.
struct Fields {
    text: &'static [(&'static str, &'static str)],
    json: &'static [(&'static str, &'static str)],
}

const CALL: Fields = Fields {
    text: &[
        ("phone_number", "phone_number"),
        ("caller_number", "caller_number"),
        ("recording_url", "recording_url"),
        ("callee_name", "callee_name"),
        ("subject", "subject"),
        ("instructions", "instructions"),
        ("last_error", "last_error"),
    ],
    json: &[("variables", "variables"), ("analysis", "analysis")],
};

const ATTEMPT: Fields = Fields {
    text: &[("error", HISTORY_ERROR_FIELD)],
    json: &[],
};

const TEMPLATE: Fields = Fields {
    text: &[
        ("phone_number", "template.phone_number"),
        ("caller_number", "template.caller_number"),
        ("callee_name", "template.callee_name"),
        ("subject", "template.subject"),
        ("instructions", "template.instructions"),
    ],
    json: &[("variables", "template.variables")],
};

fn seal_fields(
    obj: &mut Map<String, Value>,
    fields: &Fields,
    cipher: &mut OwnerCipher<'_>,
) -> Result<()> {
    for (name, aad) in fields.text {
        if let Some(Value::String(plain)) = obj.get(*name) {
            let sealed = cipher.encrypt(aad, plain)?;
            obj.insert((*name).to_owned(), Value::String(sealed));
        }
    }
    for (name, aad) in fields.json {
        match obj.get(*name) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let sealed = cipher.encrypt(aad, &v.to_string())?;
                obj.insert((*name).to_owned(), Value::String(sealed));
            }
        }
    }
    Ok(())
}

fn need<'c, 'a>(cipher: &'c mut Option<OwnerCipher<'a>>) -> Result<&'c mut OwnerCipher<'a>> {
    cipher
        .as_mut()
        .ok_or_else(|| crypto("the record is encrypted but no master key is configured"))
}

fn open_fields(
    obj: &mut Map<String, Value>,
    fields: &Fields,
    cipher: &mut Option<OwnerCipher<'_>>,
) -> Result<()> {
    for (name, aad) in fields.text {
        if let Some(Value::String(v)) = obj.get(*name)
            && is_sealed(v)
        {
            let plain = need(cipher)?.decrypt(aad, v)?;
            obj.insert((*name).to_owned(), Value::String(plain));
        }
    }
    for (name, aad) in fields.json {
        if let Some(Value::String(v)) = obj.get(*name)
            && is_sealed(v)
        {
            let text = need(cipher)?.decrypt(aad, v)?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| crypto(format!("the sealed {aad} is not JSON: {e}")))?;
            obj.insert((*name).to_owned(), value);
        }
    }
    Ok(())
}

/// The objects of a call record's `history` list.
fn attempts(obj: &mut Map<String, Value>) -> impl Iterator<Item = &mut Map<String, Value>> {
    obj.get_mut("history")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

fn owner_of(record: &Value, what: &str) -> Result<Owner> {
    record
        .get("owner")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| Error::internal(format!("stored {what} has a bad owner: {e}")))?
        .ok_or_else(|| Error::internal(format!("stored {what} has no owner")))
}

/// A call as stored: its JSON form with the sensitive fields sealed, plus the blind
/// index of its phone number (for equality look-ups without the plaintext).
#[derive(Debug, Clone, PartialEq)]
pub struct SealedCall {
    /// The record, as JSON (sealed fields replaced by ciphertexts when a cipher is set).
    pub record: serde_json::Value,
    /// The blind index of the phone number (`None` without a cipher).
    pub phone_index: Option<String>,
}

/// Seals a call for storage under the current key: [`SEALED_CALL_FIELDS`],
/// [`SEALED_CALL_JSON_FIELDS`] and each attempt's error ([`HISTORY_ERROR_FIELD`]).
/// What the stores query by (ids, owner, status, times, provider call id,
/// idempotency key, version) stays plain, and so do the free `metadata`, the
/// language, voice, agent, retry policy, dial window, cost and disconnection
/// reasons. Without a cipher the record is plain JSON.
pub fn seal_call(call: &crate::Call, cipher: Option<&FieldCipher>) -> Result<SealedCall> {
    let mut record =
        serde_json::to_value(call).map_err(|e| Error::internal(format!("serialize call: {e}")))?;
    let Some(cipher) = cipher else {
        return Ok(SealedCall {
            record,
            phone_index: None,
        });
    };
    if let Some(obj) = record.as_object_mut() {
        let mut sealer = OwnerCipher::new(cipher, &call.owner);
        seal_fields(obj, &CALL, &mut sealer)?;
        for attempt in attempts(obj) {
            seal_fields(attempt, &ATTEMPT, &mut sealer)?;
        }
    }
    Ok(SealedCall {
        record,
        phone_index: Some(cipher.blind_index(call.phone_number.as_str())),
    })
}

/// Opens a stored call record. Sealed fields need the cipher (else `Crypto`);
/// plain values (written before encryption was enabled) read as they are.
pub fn open_call(
    mut record: serde_json::Value,
    cipher: Option<&FieldCipher>,
) -> Result<crate::Call> {
    let owner = owner_of(&record, "call")?;
    if let Some(obj) = record.as_object_mut() {
        let mut opener = cipher.map(|c| OwnerCipher::new(c, &owner));
        open_fields(obj, &CALL, &mut opener)?;
        for attempt in attempts(obj) {
            open_fields(attempt, &ATTEMPT, &mut opener)?;
        }
    }
    serde_json::from_value(record)
        .map_err(|e| Error::internal(format!("stored call does not parse: {e}")))
}

/// Seals a call window for storage under the current key: its template's
/// [`SEALED_TEMPLATE_FIELDS`] and [`SEALED_TEMPLATE_JSON_FIELDS`], bound to the
/// window's owner. The id, owner, schedule and creation time stay plain, and so
/// do the template's metadata, language, voice, agent, retry policy and dial
/// window. Without a cipher the record is plain JSON.
pub fn seal_window(
    window: &crate::CallWindow,
    cipher: Option<&FieldCipher>,
) -> Result<serde_json::Value> {
    let mut record = serde_json::to_value(window)
        .map_err(|e| Error::internal(format!("serialize window: {e}")))?;
    if let Some(cipher) = cipher
        && let Some(template) = record.get_mut("template").and_then(Value::as_object_mut)
    {
        seal_fields(
            template,
            &TEMPLATE,
            &mut OwnerCipher::new(cipher, &window.owner),
        )?;
    }
    Ok(record)
}

/// Opens a stored window record ([`seal_window`]); plain values read as they are.
pub fn open_window(
    mut record: serde_json::Value,
    cipher: Option<&FieldCipher>,
) -> Result<crate::CallWindow> {
    let owner = owner_of(&record, "window")?;
    if let Some(template) = record.get_mut("template").and_then(Value::as_object_mut) {
        let mut opener = cipher.map(|c| OwnerCipher::new(c, &owner));
        open_fields(template, &TEMPLATE, &mut opener)?;
    }
    serde_json::from_value(record)
        .map_err(|e| Error::internal(format!("stored window does not parse: {e}")))
}

fn open_value(opener: &mut Option<OwnerCipher<'_>>, field: &str, value: String) -> Result<String> {
    if !is_sealed(&value) {
        return Ok(value);
    }
    need(opener)?.decrypt(field, &value)
}

/// Seals the texts of `segments` for `owner` (field [`TRANSCRIPT_SEGMENTS_FIELD`]);
/// without a cipher they are returned as they are.
pub fn seal_segments(
    owner: &Owner,
    segments: &[crate::TranscriptSegment],
    cipher: Option<&FieldCipher>,
) -> Result<Vec<crate::TranscriptSegment>> {
    let Some(cipher) = cipher else {
        return Ok(segments.to_vec());
    };
    let mut sealer = OwnerCipher::new(cipher, owner);
    segments
        .iter()
        .map(|s| {
            let mut sealed = s.clone();
            sealed.text = sealer.encrypt(TRANSCRIPT_SEGMENTS_FIELD, &s.text)?;
            Ok(sealed)
        })
        .collect()
}

/// Opens segment texts sealed by [`seal_segments`]; plain texts pass through.
pub fn open_segments(
    owner: &Owner,
    segments: Vec<crate::TranscriptSegment>,
    cipher: Option<&FieldCipher>,
) -> Result<Vec<crate::TranscriptSegment>> {
    let mut opener = cipher.map(|c| OwnerCipher::new(c, owner));
    segments
        .into_iter()
        .map(|mut s| {
            s.text = open_value(&mut opener, TRANSCRIPT_SEGMENTS_FIELD, s.text)?;
            Ok(s)
        })
        .collect()
}

/// Seals a transcript's segment texts and free text under the current key, for
/// its owner. Ids, timings, roles and the provider call id stay plain.
pub fn seal_transcript(
    transcript: &crate::Transcript,
    cipher: Option<&FieldCipher>,
) -> Result<crate::Transcript> {
    let mut out = transcript.clone();
    let Some(c) = cipher else {
        return Ok(out);
    };
    out.segments = seal_segments(&transcript.owner, &transcript.segments, cipher)?;
    out.text = transcript
        .text
        .as_deref()
        .map(|t| c.encrypt(&transcript.owner, TRANSCRIPT_TEXT_FIELD, t))
        .transpose()?;
    Ok(out)
}

/// Opens a transcript sealed by [`seal_transcript`]; plain texts pass through.
/// A sealed text without a cipher, under an unknown key, or tampered with is an
/// `ErrorKind::Crypto` error.
pub fn open_transcript(
    mut transcript: crate::Transcript,
    cipher: Option<&FieldCipher>,
) -> Result<crate::Transcript> {
    let owner = transcript.owner.clone();
    transcript.segments = open_segments(&owner, std::mem::take(&mut transcript.segments), cipher)?;
    let mut opener = cipher.map(|c| OwnerCipher::new(c, &owner));
    transcript.text = transcript
        .text
        .take()
        .map(|t| open_value(&mut opener, TRANSCRIPT_TEXT_FIELD, t))
        .transpose()?;
    Ok(transcript)
}

/// Which master keys a stored record's sealed fields use: what key rotation
/// needs to know ([`crate::rotation`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUsage {
    /// The ids of the keys its sealed values (and its blind index) were made with.
    pub key_ids: BTreeSet<u32>,
    /// Whether a field that is sealed at rest holds a plain value (written before
    /// encryption was enabled, or a plain quarantine reason).
    pub plain: bool,
}

impl KeyUsage {
    /// Notes one stored value of a sealed field.
    pub fn note_value(&mut self, value: &str) {
        match FieldCipher::sealed_key_id(value) {
            Some(id) => {
                self.key_ids.insert(id);
            }
            None => self.plain = true,
        }
    }

    /// Notes a stored blind index (`bi<key id>.…`).
    pub fn note_index(&mut self, index: &str) {
        if let Some(id) = FieldCipher::blind_index_key_id(index) {
            self.key_ids.insert(id);
        }
    }

    /// Whether rewriting the record with `cipher` would change which keys it uses:
    /// it holds plain values or values under a key other than the current one.
    pub fn needs_rewrite(&self, cipher: &FieldCipher) -> bool {
        self.plain || self.key_ids.iter().any(|k| *k != cipher.current_key_id())
    }

    fn note_fields(&mut self, obj: &Map<String, Value>, fields: &Fields) {
        for (name, _) in fields.text {
            if let Some(Value::String(v)) = obj.get(*name) {
                self.note_value(v);
            }
        }
        for (name, _) in fields.json {
            match obj.get(*name) {
                None | Some(Value::Null) => {}
                Some(Value::String(v)) => self.note_value(v),
                Some(_) => self.plain = true,
            }
        }
    }

    /// The key usage of a stored call record (as [`seal_call`] writes it).
    pub fn of_call(record: &Value) -> KeyUsage {
        let mut usage = KeyUsage::default();
        if let Some(obj) = record.as_object() {
            usage.note_fields(obj, &CALL);
            let history = obj.get("history").and_then(Value::as_array);
            for attempt in history.into_iter().flatten().filter_map(Value::as_object) {
                usage.note_fields(attempt, &ATTEMPT);
            }
        }
        usage
    }

    /// The key usage of a stored window record (as [`seal_window`] writes it).
    pub fn of_window(record: &Value) -> KeyUsage {
        let mut usage = KeyUsage::default();
        if let Some(template) = record.get("template").and_then(Value::as_object) {
            usage.note_fields(template, &TEMPLATE);
        }
        usage
    }

    /// The key usage of a stored transcript (as [`seal_transcript`] writes it).
    pub fn of_transcript(stored: &crate::Transcript) -> KeyUsage {
        let mut usage = KeyUsage::default();
        for s in &stored.segments {
            usage.note_value(&s.text);
        }
        if let Some(t) = &stored.text {
            usage.note_value(t);
        }
        usage
    }
}

#[cfg(test)]
mod tests;
