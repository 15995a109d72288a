//! Follow-up workflows: after each attempt ends, a [`WorkflowPolicy`] decides what
//! is next — done, retry later, or a follow-up call after a delay.
//! [`ClassifyThenCall`] is seed 003's two-call flow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::bus::{CallUpdate, UpdateBus};
use crate::call::{Call, CallStatus};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ids::{CallId, Owner};
use crate::new_call::{CallTemplate, NewCall};
use crate::phone::PhoneNumber;
use crate::service::CallService;
use crate::store::{CallStore, CallStoreExt, Created};

/// What follows an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkflowDecision {
    /// Nothing more.
    Done,
    /// Try this call again at an instant (only while it is RetryPending).
    RetryAt(DateTime<Utc>),
    /// Place another call after a delay.
    FollowUp {
        /// The call to place (its parent is set to this call).
        call: Box<NewCall>,
        /// How long after now.
        delay: Duration,
    },
}

/// Decides what follows an attempt.
#[async_trait::async_trait]
pub trait WorkflowPolicy: Send + Sync + 'static {
    /// Called once per finished attempt (the call is RetryPending or terminal).
    async fn after_attempt(&self, call: &Call, now: DateTime<Utc>) -> Result<WorkflowDecision>;
}

/// Runs a [`WorkflowPolicy`] on every finished attempt. Follow-ups are created with
/// the idempotency key `followup:<call id>:<attempt>`, so running it twice (two
/// processes, a restart) creates each follow-up once.
#[derive(Clone)]
pub struct WorkflowRunner {
    policy: Arc<dyn WorkflowPolicy>,
    service: CallService,
    store: Arc<dyn CallStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for WorkflowRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowRunner").finish_non_exhaustive()
    }
}

/// What the runner did for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkflowOutcome {
    /// The attempt was not finished, or the policy said done.
    Nothing,
    /// The retry time was moved.
    Rescheduled(DateTime<Utc>),
    /// A follow-up call exists (new, or already created earlier).
    FollowUp(CallId),
}

impl WorkflowRunner {
    /// A runner creating follow-ups through `service`.
    pub fn new(
        policy: Arc<dyn WorkflowPolicy>,
        service: CallService,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let store = service.store().clone();
        WorkflowRunner {
            policy,
            service,
            store,
            clock,
        }
    }

    /// Applies the policy to one call if its latest attempt is over.
    pub async fn process(&self, call: &Call) -> Result<WorkflowOutcome> {
        let finished = call.status.is_terminal() || call.status == CallStatus::RetryPending;
        if !finished || call.attempts == 0 && call.status != CallStatus::Canceled {
            return Ok(WorkflowOutcome::Nothing);
        }
        let now = self.clock.now();
        match self.policy.after_attempt(call, now).await? {
            WorkflowDecision::Done => Ok(WorkflowOutcome::Nothing),
            WorkflowDecision::RetryAt(at) => {
                let c =
                    self.store
                        .update_with(call.id, 8, |c| {
                            Ok((c.status == CallStatus::RetryPending
                                && c.attempts == call.attempts)
                                .then(|| {
                                    let mut n = c.clone();
                                    n.next_action_at = Some(at);
                                    n.updated_at = now;
                                    n
                                }))
                        })
                        .await?;
                Ok(if c.next_action_at == Some(at) {
                    WorkflowOutcome::Rescheduled(at)
                } else {
                    WorkflowOutcome::Nothing
                })
            }
            WorkflowDecision::FollowUp { call: new, delay } => {
                let mut new = *new;
                // Saturating: a policy's absurd delay is a Validation error at create, not a panic.
                new.scheduled_for = Some(crate::time::saturating_add(now, delay));
                new.parent_call_id = Some(call.id);
                new.idempotency_key = Some(format!("followup:{}:{}", call.id, call.attempts));
                let created = self.service.create(&call.owner, new).await?;
                Ok(WorkflowOutcome::FollowUp(created.call().id))
            }
        }
    }

    /// Processes every finished attempt published on `bus` until the bus closes.
    /// A lagging subscription is logged; missed calls are processed again when they
    /// next change (the follow-up key makes repeats harmless).
    pub async fn run(&self, bus: &UpdateBus) {
        let mut rx = bus.subscribe();
        let mut seen: HashMap<CallId, (u32, CallStatus, bool)> = HashMap::new();
        loop {
            match rx.recv().await {
                Ok(update) => {
                    let CallUpdate::Call(c) = update.as_ref() else {
                        continue;
                    };
                    // The analysis often arrives after the end: process again when it does.
                    let key = (c.attempts, c.status, c.analysis.is_some());
                    if seen.get(&c.id) == Some(&key) {
                        continue;
                    }
                    if let Err(e) = self.process(c).await {
                        tracing::warn!(call_id = %c.id, error = %e, "workflow step failed");
                        continue;
                    }
                    seen.insert(c.id, key);
                    if seen.len() > 100_000 {
                        seen.clear();
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "workflow runner lagged behind the bus");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// What a classification call found at a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    /// An automated phone menu (IVR) answers.
    Ivr,
    /// A person answers.
    Human,
}

/// Classifications per phone number, each valid until it expires.
#[derive(Debug, Default)]
pub struct ClassificationCache {
    entries: Mutex<HashMap<PhoneNumber, (Classification, DateTime<Utc>)>>,
}

impl ClassificationCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The classification of `number` if it has not expired at `now`.
    pub fn get(&self, number: &PhoneNumber, now: DateTime<Utc>) -> Option<Classification> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(number)
            .filter(|(_, until)| *until > now)
            .map(|(c, _)| *c)
    }

    /// Remembers a classification until `until`.
    pub fn put(&self, number: PhoneNumber, c: Classification, until: DateTime<Utc>) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(number, (c, until));
    }
}

/// Seed 003's two-call flow: a classification call finds out whether an IVR
/// answers the number; the task call follows — 30 s later after an IVR, at once
/// after a person. A cached classification skips the first call.
///
/// The classification call carries `metadata.workflow = "classify"` and the task
/// call's template in `metadata.task`; the provider's analysis reports
/// `custom.classification` = `"ivr"` or `"human"`. The task call gets the variable
/// `classification`.
#[derive(Debug)]
pub struct ClassifyThenCall {
    /// Cached classifications.
    pub cache: Arc<ClassificationCache>,
    /// Delay between an IVR classification and the task call.
    pub ivr_delay: Duration,
    /// How long a classification stays valid.
    pub ttl: TimeDelta,
}

impl Default for ClassifyThenCall {
    fn default() -> Self {
        ClassifyThenCall {
            cache: Arc::new(ClassificationCache::new()),
            ivr_delay: Duration::from_secs(30),
            ttl: TimeDelta::days(30),
        }
    }
}

impl ClassifyThenCall {
    /// Starts the flow for `owner`: the task call at once if the number's
    /// classification is cached, else the classification call.
    pub async fn start(
        &self,
        service: &CallService,
        owner: &Owner,
        classify: CallTemplate,
        task: CallTemplate,
        now: DateTime<Utc>,
    ) -> Result<Created> {
        self.start_call(service, owner, NewCall::new(classify), task, now)
            .await
    }

    /// Like [`ClassifyThenCall::start`], with the classification call's timing
    /// (`scheduled_for`, `not_after`, idempotency key) given; a cached
    /// classification places the task call with that timing instead.
    pub async fn start_call(
        &self,
        service: &CallService,
        owner: &Owner,
        classify: NewCall,
        task: CallTemplate,
        now: DateTime<Utc>,
    ) -> Result<Created> {
        if let Some(c) = self.cache.get(&task.phone_number, now) {
            let mut direct = NewCall::new(task_with(task, c));
            direct.scheduled_for = classify.scheduled_for;
            direct.not_after = classify.not_after;
            direct.idempotency_key = classify.idempotency_key;
            return service.create(owner, direct).await;
        }
        let mut classify = classify;
        classify
            .template
            .metadata
            .insert("workflow".into(), "classify".into());
        classify.template.metadata.insert(
            "task".into(),
            serde_json::to_value(&task)
                .map_err(|e| Error::internal(format!("task template: {e}")))?,
        );
        service.create(owner, classify).await
    }
}

fn task_with(mut task: CallTemplate, c: Classification) -> CallTemplate {
    let name = match c {
        Classification::Ivr => "ivr",
        Classification::Human => "human",
    };
    task.variables.insert("classification".into(), name.into());
    task
}

#[async_trait::async_trait]
impl WorkflowPolicy for ClassifyThenCall {
    async fn after_attempt(&self, call: &Call, now: DateTime<Utc>) -> Result<WorkflowDecision> {
        if call.metadata.get("workflow").and_then(|v| v.as_str()) != Some("classify")
            || call.status != CallStatus::Completed
        {
            return Ok(WorkflowDecision::Done);
        }
        let found = call
            .analysis
            .as_ref()
            .and_then(|a| a.custom.get("classification"))
            .and_then(|v| serde_json::from_value::<Classification>(v.clone()).ok());
        let Some(class) = found else {
            return Ok(WorkflowDecision::Done);
        };
        let Some(task) = call.metadata.get("task") else {
            return Ok(WorkflowDecision::Done);
        };
        let task: CallTemplate = serde_json::from_value(task.clone())
            .map_err(|e| Error::validation("metadata.task", format!("not a call template: {e}")))?;
        self.cache.put(
            task.phone_number.clone(),
            class,
            now.checked_add_signed(self.ttl)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        );
        let delay = if class == Classification::Ivr {
            self.ivr_delay
        } else {
            Duration::ZERO
        };
        Ok(WorkflowDecision::FollowUp {
            call: Box::new(NewCall::new(task_with(task, class))),
            delay,
        })
    }
}
