//! The input of `POST /api/calls`: the call's fields ([`CallFields`], shared
//! with call windows) and how it is placed ([`CallPlan`]), mapped onto the
//! engine's default call template.

use std::collections::{BTreeMap, BTreeSet};

use callcat_core::{CallTemplate, Engine, NewCall};
use serde::Deserialize;
use utoipa::ToSchema;

use super::dial_window::DialWindowFields;
use super::retry::{self, RetryOnFields};
use super::{from_ms, phone};
use crate::error::{ApiError, from_value_noting_unknown, reject_unknown};

fn required(field: &str, v: Option<String>) -> Result<String, ApiError> {
    v.ok_or_else(|| ApiError::validation(field, format!("{field} is required")))
}

/// The call to place: shared by `POST /api/calls` and call windows.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallFields {
    /// Who is called.
    pub callee_name: Option<String>,
    /// E.164 number, e.g. `+14155552671`.
    pub phone_number: Option<String>,
    /// A short description.
    pub subject: Option<String>,
    /// Instructions for the AI agent.
    pub prompt: Option<String>,
    /// Language the agent speaks (BCP 47).
    pub ai_language: Option<String>,
    /// Voice id at the provider.
    pub voice_id: Option<String>,
    /// The number shown to the callee.
    pub caller_number: Option<String>,
    /// Dynamic variables for the agent.
    pub variables: Option<BTreeMap<String, String>>,
    /// Free metadata, returned as given. With the simulator, `metadata.simulate`
    /// picks the outcome (`answered`, `no_answer`, `busy`, `voicemail`, ...).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Most dial attempts (1 to 20); default: the engine's (the server's
    /// `CALLCAT_MAX_ATTEMPTS`).
    pub max_attempts: Option<u32>,
    /// Which outcomes are retried; each absent switch keeps the default.
    pub retry_on: Option<RetryOnFields>,
    /// Seconds to wait before each retry (`[60, 300]`: 1 min before the
    /// second attempt, 5 min before every later one); at most 20 entries, each
    /// 1 s to 7 days. Absent: exponential backoff from 60 s.
    pub retry_delays: Option<Vec<u64>>,
    /// Only dial inside this weekly window (quiet hours); outside it the dial
    /// waits for the next opening.
    pub dial_window: Option<DialWindowFields>,
}

impl CallFields {
    /// The core template, built from `engine`'s defaults (its retry policy) and
    /// validated further by the core.
    pub fn into_template(self, engine: &Engine) -> Result<CallTemplate, ApiError> {
        let number = phone("phoneNumber", &required("phoneNumber", self.phone_number)?)?;
        let mut t = engine.template(
            required("calleeName", self.callee_name)?,
            number,
            required("subject", self.subject)?,
            required("prompt", self.prompt)?,
        );
        t.caller_number = self
            .caller_number
            .map(|n| phone("callerNumber", &n))
            .transpose()?;
        t.language = self.ai_language;
        t.voice = self.voice_id;
        t.variables = self.variables.unwrap_or_default();
        t.metadata = self.metadata.unwrap_or_default();
        if let Some(m) = self.max_attempts {
            t.retry_policy.max_attempts = m;
        }
        if let Some(on) = self.retry_on {
            on.apply(&mut t.retry_policy);
        }
        if let Some(delays) = &self.retry_delays {
            t.retry_policy.delays = retry::delays_from_secs(delays);
        }
        t.dial_window = self
            .dial_window
            .map(DialWindowFields::into_window)
            .transpose()?;
        Ok(t)
    }
}

/// The one `workflow` accepted: seed 003's classification call, then the task
/// call as its follow-up.
pub const CLASSIFY_THEN_CALL: &str = "classify_then_call";

/// How a call is placed: `POST /api/calls` besides the call itself.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallPlan {
    /// When to dial (epoch ms); absent means now.
    pub scheduled_at: Option<i64>,
    /// Give up if it cannot be placed by then (epoch ms).
    pub not_after: Option<i64>,
    /// `classify_then_call`: first a classification call (`metadata.workflow =
    /// "classify"`), then this call as its follow-up (`parentCallId`), 30 s
    /// after an IVR answered, at once after a person. Absent: one call.
    pub workflow: Option<String>,
}

/// `POST /api/calls`: the call's fields and its plan, in one JSON object.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateCallRequest {
    /// What to call.
    #[serde(flatten)]
    pub call: CallFields,
    /// When and how.
    #[serde(flatten)]
    pub plan: CallPlan,
}

/// What `POST /api/calls` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workflow {
    /// One call.
    Single,
    /// Seed 003's classify-then-call.
    ClassifyThenCall,
}

impl CreateCallRequest {
    /// Reads the request from a JSON body. Each part is read on its own (not
    /// through serde's `flatten`, which loses the path), so a wrong type is a 400
    /// naming the field, e.g. `retryOn.noAnswer`.
    pub fn from_json(body: &serde_json::Value) -> Result<Self, ApiError> {
        if !body.is_object() {
            return Err(ApiError::new(
                http::StatusCode::BAD_REQUEST,
                "validation",
                "the body must be a JSON object",
            ));
        }
        let (call, not_call) = from_value_noting_unknown::<CallFields>(body)?;
        let (plan, not_plan) = from_value_noting_unknown::<CallPlan>(body)?;
        // Unknown to both parts: the one that owns a field's top-level key knows
        // the rest of its path (`retryOn.noAnswr` is reported by the call part).
        let top = |p: &String| p.split('.').next().unwrap_or_default().to_owned();
        let unknown: BTreeSet<String> = not_call
            .iter()
            .filter(|p| not_plan.contains(&top(p)))
            .chain(not_plan.iter().filter(|p| not_call.contains(&top(p))))
            .cloned()
            .collect();
        reject_unknown(&unknown)?;
        Ok(CreateCallRequest { call, plan })
    }

    /// The core request, built from `engine`'s defaults, and what to start.
    pub fn into_new_call(
        self,
        engine: &Engine,
        idempotency_key: Option<String>,
    ) -> Result<(NewCall, Workflow), ApiError> {
        let workflow = match self.plan.workflow.as_deref() {
            None => Workflow::Single,
            Some(CLASSIFY_THEN_CALL) => Workflow::ClassifyThenCall,
            Some(other) => {
                return Err(ApiError::validation(
                    "workflow",
                    format!("unknown workflow {other:?}; the only one is {CLASSIFY_THEN_CALL:?}"),
                ));
            }
        };
        let mut n = NewCall::new(self.call.into_template(engine)?);
        n.scheduled_for = self
            .plan
            .scheduled_at
            .map(|v| from_ms("scheduledAt", v))
            .transpose()?;
        n.not_after = self
            .plan
            .not_after
            .map(|v| from_ms("notAfter", v))
            .transpose()?;
        n.idempotency_key = idempotency_key;
        Ok((n, workflow))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use callcat_core::memory::in_memory_stores;
    use callcat_core::{EngineSettings, ManualClock, Simulator, SimulatorConfig};
    use serde_json::json;

    use super::*;

    async fn engine(default_attempts: u32) -> Engine {
        let clock = Arc::new(ManualClock::at_fixed_start());
        let mut settings = EngineSettings::default();
        settings.default_retry.max_attempts = default_attempts;
        Engine::builder()
            .stores(in_memory_stores())
            .simulator(Simulator::new(clock.clone(), SimulatorConfig::default()))
            .clock(clock)
            .settings(settings)
            .build()
            .await
            .expect("engine")
    }

    fn body(extra: serde_json::Value) -> serde_json::Value {
        let mut b = json!({"calleeName": "Ada", "phoneNumber": "+14155552671",
                           "subject": "s", "prompt": "p"});
        for (k, v) in extra.as_object().expect("object") {
            b[k] = v.clone();
        }
        b
    }

    async fn new_call(e: &Engine, extra: serde_json::Value) -> Result<NewCall, ApiError> {
        let (n, _) = CreateCallRequest::from_json(&body(extra))?.into_new_call(e, None)?;
        // The core's validation, as creating the call would run it.
        n.template
            .validate(&callcat_core::Limits::default())
            .map_err(ApiError::from)?;
        Ok(n)
    }

    async fn field(e: &Engine, extra: serde_json::Value) -> String {
        let err = new_call(e, extra).await.expect_err("invalid");
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        err.field().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn create_fields_map_onto_the_engines_default_policy() {
        let e = engine(7).await;
        let n = new_call(&e, json!({})).await.expect("valid");
        assert_eq!(
            n.template.retry_policy.max_attempts, 7,
            "the engine's default"
        );
        let n = new_call(
            &e,
            json!({"maxAttempts": 2, "retryOn": {"busy": false, "voicemail": true},
                   "retryDelays": [60, 300],
                   "dialWindow": {"weekdays": ["mon"], "start": "09:00", "end": "17:00",
                                  "timezone": "Europe/Berlin"}}),
        )
        .await
        .expect("valid");
        let p = &n.template.retry_policy;
        assert_eq!(p.max_attempts, 2, "an explicit maxAttempts wins");
        assert!(!p.retry_on_busy && p.retry_on_voicemail);
        assert!(
            p.retry_on_no_answer && p.retry_on_dial_error,
            "absent switches stay"
        );
        assert_eq!(
            p.delays,
            vec![
                std::time::Duration::from_secs(60),
                std::time::Duration::from_secs(300)
            ]
        );
        let w = n.template.dial_window.as_ref().expect("window");
        assert_eq!(w.timezone.name(), "Europe/Berlin");
        let (_, wf) =
            CreateCallRequest::from_json(&body(json!({"workflow": "classify_then_call"})))
                .expect("parsed")
                .into_new_call(&e, None)
                .expect("valid");
        assert_eq!(wf, Workflow::ClassifyThenCall);
    }

    #[tokio::test]
    async fn every_new_field_is_validated_naming_it() {
        let e = engine(3).await;
        assert_eq!(
            field(&e, json!({"retryOn": {"noAnswer": "x"}})).await,
            "retryOn.noAnswer"
        );
        assert_eq!(field(&e, json!({"retryOn": [true]})).await, "retryOn");
        assert_eq!(field(&e, json!({"maxAttempts": "x"})).await, "maxAttempts");
        assert_eq!(field(&e, json!({"maxAttempts": 21})).await, "maxAttempts");
        assert_eq!(
            field(&e, json!({"retryDelays": [60, -1]})).await,
            "retryDelays[1]"
        );
        assert_eq!(
            field(&e, json!({"retryDelays": [0]})).await,
            "retryDelays[0]"
        );
        assert_eq!(
            field(&e, json!({"retryDelays": [604_801]})).await,
            "retryDelays[0]"
        );
        assert_eq!(
            field(&e, json!({"retryDelays": vec![60; 21]})).await,
            "retryDelays"
        );
        assert_eq!(
            field(&e, json!({"workflow": "call_twice"})).await,
            "workflow"
        );
        assert_eq!(field(&e, json!({"workflow": 1})).await, "workflow");
        assert_eq!(
            field(
                &e,
                json!({"dialWindow": {"weekdays": ["mon"], "start": "09:00",
                                            "end": "10:00", "timezone": "Nowhere"}})
            )
            .await,
            "dialWindow.timezone"
        );
        assert_eq!(
            field(
                &e,
                json!({"dialWindow": {"weekdays": ["mon"], "start": "11:00", "end": "10:00"}})
            )
            .await,
            "dialWindow.end"
        );
        assert_eq!(field(&e, json!({"dialWindow": "mon"})).await, "dialWindow");
        assert_eq!(
            field(&e, json!({"scheduledAt": "soon"})).await,
            "scheduledAt"
        );
        assert!(CreateCallRequest::from_json(&json!([1])).is_err());
    }
}
