//! Validated input: [`NewCall`] to create a call, [`CallEdit`] to change one.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::call::{Call, CallStatus};
use crate::clock::to_millis_precision;
use crate::error::{Error, Result};
use crate::ids::{CallId, Owner};
use crate::phone::PhoneNumber;
use crate::retry::RetryPolicy;
use crate::time::check_range;
use crate::window::RecurringWindow;

/// Limits applied when validating input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// How far in the past `scheduled_for` may be (clock skew between client and server).
    pub past_tolerance: TimeDelta,
    /// Longest accepted prompt, in bytes.
    pub max_instructions_len: usize,
    /// Longest accepted callee name, subject, language or voice, in bytes.
    pub max_short_text_len: usize,
    /// Most dynamic variables.
    pub max_variables: usize,
    /// Largest serialized metadata, in bytes.
    pub max_metadata_bytes: usize,
    /// Longest idempotency key.
    pub max_idempotency_key_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            past_tolerance: TimeDelta::seconds(60),
            max_instructions_len: 16 * 1024,
            max_short_text_len: 256,
            max_variables: 64,
            max_metadata_bytes: 16 * 1024,
            max_idempotency_key_len: 255,
        }
    }
}

/// The call to place, without its time: used by [`NewCall`] and by call windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallTemplate {
    /// Who is called (non-empty).
    pub callee_name: String,
    /// The number to call.
    pub phone_number: PhoneNumber,
    /// The number to show, if not the provider's default.
    pub caller_number: Option<PhoneNumber>,
    /// A short description.
    pub subject: String,
    /// Instructions for the AI agent.
    pub instructions: String,
    /// Language (BCP 47).
    pub language: Option<String>,
    /// Voice id at the provider.
    pub voice: Option<String>,
    /// Agent id override.
    pub agent_id: Option<String>,
    /// Dynamic variables for the agent.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Free metadata.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Retry policy.
    #[serde(default)]
    pub retry_policy: RetryPolicy,
    /// Quiet hours: only dial inside this window.
    pub dial_window: Option<RecurringWindow>,
}

impl CallTemplate {
    /// A template with the required fields and defaults for the rest.
    pub fn new(
        callee_name: impl Into<String>,
        phone_number: PhoneNumber,
        subject: impl Into<String>,
        instructions: impl Into<String>,
    ) -> Self {
        CallTemplate {
            callee_name: callee_name.into(),
            phone_number,
            caller_number: None,
            subject: subject.into(),
            instructions: instructions.into(),
            language: None,
            voice: None,
            agent_id: None,
            variables: BTreeMap::new(),
            metadata: serde_json::Map::new(),
            retry_policy: RetryPolicy::default(),
            dial_window: None,
        }
    }

    /// Checks every field against `limits`.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        self.reject_nul()?;
        if self.callee_name.trim().is_empty() {
            return Err(Error::validation(
                "calleeName",
                "callee name must not be empty",
            ));
        }
        short_text("calleeName", &self.callee_name, limits)?;
        short_text("subject", &self.subject, limits)?;
        if self.instructions.len() > limits.max_instructions_len {
            return Err(Error::validation(
                "prompt",
                format!(
                    "prompt is {} bytes; at most {} are allowed",
                    self.instructions.len(),
                    limits.max_instructions_len
                ),
            ));
        }
        for (field, v) in [
            ("aiLanguage", &self.language),
            ("voiceId", &self.voice),
            ("agentId", &self.agent_id),
        ] {
            if let Some(v) = v {
                short_text(field, v, limits)?;
            }
        }
        if self.variables.len() > limits.max_variables {
            return Err(Error::validation(
                "variables",
                format!("at most {} variables are allowed", limits.max_variables),
            ));
        }
        for (k, v) in &self.variables {
            if k.is_empty() || k.len() > limits.max_short_text_len {
                return Err(Error::validation(
                    "variables",
                    "variable names must be 1 to 256 bytes",
                ));
            }
            if v.len() > limits.max_instructions_len {
                return Err(Error::validation(
                    "variables",
                    format!("variable {k:?} is too long"),
                ));
            }
        }
        let meta_len = serde_json::to_vec(&self.metadata)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if meta_len > limits.max_metadata_bytes {
            return Err(Error::validation(
                "metadata",
                format!(
                    "metadata is {meta_len} bytes; at most {} are allowed",
                    limits.max_metadata_bytes
                ),
            ));
        }
        self.retry_policy.validate()?;
        if let Some(w) = &self.dial_window {
            w.validate()?;
        }
        Ok(())
    }
}

/// The earliest `scheduled_for` accepted at `now` (never panics, whatever the tolerance).
fn earliest_allowed(now: DateTime<Utc>, limits: &Limits) -> DateTime<Utc> {
    now.checked_sub_signed(limits.past_tolerance)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl CallTemplate {
    /// A NUL character in any text (PostgreSQL cannot store one in `text`,
    /// and no provider means one) is refused, naming the field.
    fn reject_nul(&self) -> Result<()> {
        for (field, v) in [
            ("calleeName", Some(&self.callee_name)),
            ("subject", Some(&self.subject)),
            ("prompt", Some(&self.instructions)),
            ("aiLanguage", self.language.as_ref()),
            ("voiceId", self.voice.as_ref()),
            ("agentId", self.agent_id.as_ref()),
        ] {
            if let Some(v) = v {
                no_nul(field, v)?;
            }
        }
        for (k, v) in &self.variables {
            no_nul("variables", k)?;
            no_nul("variables", v)?;
        }
        for (k, v) in &self.metadata {
            no_nul("metadata", k)?;
            json_no_nul("metadata", v)?;
        }
        Ok(())
    }
}

fn nul_error(field: &str) -> Error {
    Error::validation(field, format!("{field} must not contain a NUL character"))
}

/// Refuses a NUL character in `v`, naming `field`.
fn no_nul(field: &str, v: &str) -> Result<()> {
    if v.contains('\0') {
        return Err(nul_error(field));
    }
    Ok(())
}

fn json_no_nul(field: &str, v: &serde_json::Value) -> Result<()> {
    match v {
        serde_json::Value::String(s) => no_nul(field, s),
        serde_json::Value::Array(a) => a.iter().try_for_each(|x| json_no_nul(field, x)),
        serde_json::Value::Object(o) => o.iter().try_for_each(|(k, x)| {
            no_nul(field, k)?;
            json_no_nul(field, x)
        }),
        _ => Ok(()),
    }
}

fn short_text(field: &str, v: &str, limits: &Limits) -> Result<()> {
    if v.len() > limits.max_short_text_len {
        return Err(Error::validation(
            field,
            format!(
                "{field} is {} bytes; at most {} are allowed",
                v.len(),
                limits.max_short_text_len
            ),
        ));
    }
    Ok(())
}

/// A request to create a call. Validate it with [`NewCall::into_call`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewCall {
    /// What to call.
    #[serde(flatten)]
    pub template: CallTemplate,
    /// When to dial; `None` means now.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Expire the call if it cannot be placed by then.
    pub not_after: Option<DateTime<Utc>>,
    /// Creating twice with the same key for the same owner returns the first call.
    pub idempotency_key: Option<String>,
    /// The call that led to this one (follow-up workflows).
    pub parent_call_id: Option<CallId>,
}

impl NewCall {
    /// A request to call now with defaults for everything optional.
    pub fn new(template: CallTemplate) -> Self {
        NewCall {
            template,
            scheduled_for: None,
            not_after: None,
            idempotency_key: None,
            parent_call_id: None,
        }
    }

    /// Sets the time to dial.
    pub fn at(mut self, t: DateTime<Utc>) -> Self {
        self.scheduled_for = Some(t);
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Validates against `limits` at time `now` and builds the stored call.
    pub fn into_call(self, owner: Owner, now: DateTime<Utc>, limits: &Limits) -> Result<Call> {
        self.template.validate(limits)?;
        let now = to_millis_precision(now);
        if let Some(at) = self.scheduled_for {
            check_range("scheduledAt", at)?;
        }
        if let Some(na) = self.not_after {
            check_range("notAfter", na)?;
        }
        let scheduled_for = to_millis_precision(self.scheduled_for.unwrap_or(now));
        if scheduled_for < earliest_allowed(now, limits) {
            return Err(Error::validation(
                "scheduledAt",
                "scheduled time is in the past",
            ));
        }
        let not_after = self.not_after.map(to_millis_precision);
        if let Some(na) = not_after
            && na <= scheduled_for
        {
            return Err(Error::validation(
                "notAfter",
                "notAfter must be after the scheduled time",
            ));
        }
        if let Some(key) = &self.idempotency_key {
            no_nul("idempotencyKey", key)?;
        }
        if let Some(key) = &self.idempotency_key
            && (key.is_empty() || key.len() > limits.max_idempotency_key_len)
        {
            return Err(Error::validation(
                "idempotencyKey",
                "idempotency key must be 1 to 255 bytes",
            ));
        }
        let t = self.template;
        Ok(Call {
            id: CallId::new(),
            owner,
            callee_name: t.callee_name.trim().to_owned(),
            phone_number: t.phone_number,
            caller_number: t.caller_number,
            subject: t.subject,
            instructions: t.instructions,
            language: t.language,
            voice: t.voice,
            agent_id: t.agent_id,
            variables: t.variables,
            metadata: t.metadata,
            idempotency_key: self.idempotency_key,
            scheduled_for,
            not_after,
            dial_window: t.dial_window,
            parent_call_id: self.parent_call_id,
            status: CallStatus::Scheduled,
            outcome: None,
            attempts: 0,
            retry_policy: t.retry_policy,
            next_action_at: Some(scheduled_for),
            lease: None,
            dial_started_at: None,
            provider: None,
            provider_call_id: None,
            started_at: None,
            ended_at: None,
            finished_at: None,
            duration_ms: None,
            disconnection_reason: None,
            analysis: None,
            recording_url: None,
            cost: None,
            last_error: None,
            history: Vec::new(),
            version: 0,
            created_at: now,
            updated_at: now,
        })
    }
}

/// Changes to a scheduled call; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallEdit {
    /// New callee name.
    pub callee_name: Option<String>,
    /// New number.
    pub phone_number: Option<PhoneNumber>,
    /// New caller number (the number shown).
    pub caller_number: Option<PhoneNumber>,
    /// New subject.
    pub subject: Option<String>,
    /// New prompt.
    pub instructions: Option<String>,
    /// New time.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// New language.
    pub language: Option<String>,
    /// New voice.
    pub voice: Option<String>,
    /// New variables (replaces all).
    pub variables: Option<BTreeMap<String, String>>,
    /// New metadata (replaces all).
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// New attempt limit.
    pub max_attempts: Option<u32>,
    /// New expiry.
    pub not_after: Option<DateTime<Utc>>,
}

impl CallEdit {
    /// Applies the edit to a copy of `call` and validates the result. Only a
    /// `Scheduled` call can be edited (else `InvalidTransition`).
    pub fn apply(&self, call: &Call, now: DateTime<Utc>, limits: &Limits) -> Result<Call> {
        crate::lifecycle::transition(call.status, &crate::lifecycle::LifecycleEvent::Edit)?;
        let mut next = call.clone();
        let mut template = CallTemplate {
            callee_name: self.callee_name.clone().unwrap_or(next.callee_name.clone()),
            phone_number: self
                .phone_number
                .clone()
                .unwrap_or(next.phone_number.clone()),
            caller_number: self.caller_number.clone().or(next.caller_number.clone()),
            subject: self.subject.clone().unwrap_or(next.subject.clone()),
            instructions: self
                .instructions
                .clone()
                .unwrap_or(next.instructions.clone()),
            language: self.language.clone().or(next.language.clone()),
            voice: self.voice.clone().or(next.voice.clone()),
            agent_id: next.agent_id.clone(),
            variables: self.variables.clone().unwrap_or(next.variables.clone()),
            metadata: self.metadata.clone().unwrap_or(next.metadata.clone()),
            retry_policy: next.retry_policy.clone(),
            dial_window: next.dial_window.clone(),
        };
        if let Some(m) = self.max_attempts {
            template.retry_policy.max_attempts = m;
        }
        template.validate(limits)?;
        let now = to_millis_precision(now);
        if let Some(at) = self.scheduled_for {
            check_range("scheduledAt", at)?;
            let at = to_millis_precision(at);
            if at < earliest_allowed(now, limits) {
                return Err(Error::validation(
                    "scheduledAt",
                    "scheduled time is in the past",
                ));
            }
            next.scheduled_for = at;
            next.next_action_at = Some(at);
        }
        if let Some(na) = self.not_after {
            check_range("notAfter", na)?;
            next.not_after = Some(to_millis_precision(na));
        }
        if let Some(na) = next.not_after
            && na <= next.scheduled_for
        {
            return Err(Error::validation(
                "notAfter",
                "notAfter must be after the scheduled time",
            ));
        }
        next.callee_name = template.callee_name.trim().to_owned();
        next.phone_number = template.phone_number;
        next.caller_number = template.caller_number;
        next.subject = template.subject;
        next.instructions = template.instructions;
        next.language = template.language;
        next.voice = template.voice;
        next.variables = template.variables;
        next.metadata = template.metadata;
        next.retry_policy = template.retry_policy;
        next.updated_at = now;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn template() -> CallTemplate {
        let phone = PhoneNumber::parse("+14155552671").unwrap_or_else(|e| panic!("{e}"));
        CallTemplate::new("Ada", phone, "Subject", "Prompt")
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_893_456_000, 0).unwrap_or_default()
    }

    fn extremes() -> Vec<DateTime<Utc>> {
        [
            8_210_266_873_199_999,
            -8_334_601_228_800_000,
            8_204_889_600_000, // about 2230
        ]
        .into_iter()
        .filter_map(DateTime::from_timestamp_millis)
        .chain([DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC])
        .collect()
    }

    fn assert_validation(r: Result<Call>, field: &str) {
        let e = r.expect_err("out of range");
        assert_eq!(e.kind(), ErrorKind::Validation, "{e}");
        assert_eq!(e.field(), Some(field), "{e}");
    }

    #[test]
    fn instants_out_of_range_are_validation_errors_naming_the_field() {
        let owner = Owner::new("t", "u");
        for t in extremes() {
            let new = NewCall::new(template()).at(t);
            assert_validation(
                new.into_call(owner.clone(), now(), &Limits::default()),
                "scheduledAt",
            );
            let mut new = NewCall::new(template());
            new.not_after = Some(t);
            assert_validation(
                new.into_call(owner.clone(), now(), &Limits::default()),
                "notAfter",
            );
        }
    }

    #[test]
    fn edits_to_instants_out_of_range_are_validation_errors_naming_the_field() {
        let owner = Owner::new("t", "u");
        let call = NewCall::new(template())
            .into_call(owner, now(), &Limits::default())
            .expect("valid");
        for t in extremes() {
            let edit = CallEdit {
                scheduled_for: Some(t),
                ..CallEdit::default()
            };
            assert_validation(edit.apply(&call, now(), &Limits::default()), "scheduledAt");
            let edit = CallEdit {
                not_after: Some(t),
                ..CallEdit::default()
            };
            assert_validation(edit.apply(&call, now(), &Limits::default()), "notAfter");
        }
    }

    #[test]
    fn a_huge_past_tolerance_does_not_panic() {
        let limits = Limits {
            past_tolerance: TimeDelta::MAX,
            ..Limits::default()
        };
        let call = NewCall::new(template()).into_call(Owner::new("t", "u"), now(), &limits);
        assert!(call.is_ok());
    }

    fn field_of(r: Result<()>) -> Option<String> {
        r.err().and_then(|e| e.field().map(str::to_owned))
    }

    #[test]
    fn a_nul_character_in_any_text_is_refused_naming_the_field() {
        let limits = Limits::default();
        assert!(template().validate(&limits).is_ok());
        type Edit = Box<dyn Fn(&mut CallTemplate)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("calleeName", Box::new(|t| t.callee_name = "A\0da".into())),
            ("subject", Box::new(|t| t.subject = "s\0".into())),
            ("prompt", Box::new(|t| t.instructions = "\0".into())),
            ("aiLanguage", Box::new(|t| t.language = Some("en\0".into()))),
            ("voiceId", Box::new(|t| t.voice = Some("v\0".into()))),
            ("agentId", Box::new(|t| t.agent_id = Some("\0a".into()))),
            (
                "variables",
                Box::new(|t| {
                    t.variables.insert("k".into(), "v\0".into());
                }),
            ),
            (
                "variables",
                Box::new(|t| {
                    t.variables.insert("k\0".into(), "v".into());
                }),
            ),
            (
                "metadata",
                Box::new(|t| {
                    t.metadata
                        .insert("a".into(), serde_json::json!({"b": ["ok", "x\u{0}"]}));
                }),
            ),
            (
                "metadata",
                Box::new(|t| {
                    t.metadata.insert("k\0".into(), serde_json::json!(1));
                }),
            ),
        ];
        for (field, edit) in cases {
            let mut t = template();
            edit(&mut t);
            assert_eq!(field_of(t.validate(&limits)).as_deref(), Some(field));
        }
        let owner = Owner::new("t", "u");
        let now = DateTime::from_timestamp(1_900_000_000, 0).expect("valid time");
        let e = NewCall::new(template())
            .idempotency_key("k\0")
            .into_call(owner.clone(), now, &limits)
            .unwrap_err();
        assert_eq!(e.field(), Some("idempotencyKey"));
        // An edit is validated the same way.
        let call = NewCall::new(template())
            .into_call(owner, now, &limits)
            .expect("valid call");
        let edit = CallEdit {
            subject: Some("new\0".into()),
            ..CallEdit::default()
        };
        assert_eq!(
            edit.apply(&call, now, &limits).unwrap_err().field(),
            Some("subject")
        );
    }
}
