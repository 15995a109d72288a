#![doc = include_str!("../README.md")]
//! callcat-core: the domain (calls, lifecycle, retry, windows), the storage and
//! telephony traits, in-memory stores, and the engine that schedules and tracks calls.

pub mod apply;
pub mod bus;
pub mod call;
pub mod caller_numbers;
pub mod clock;
pub mod crypto;
pub mod cursor;
pub mod engine;
pub mod error;
pub mod ids;
pub mod lifecycle;
pub mod live;
pub mod memory;
pub mod new_call;
pub mod phone;
pub mod planner;
pub mod provider;
pub mod retry;
pub mod rotation;
pub mod scheduler;
pub mod service;
pub mod simulator;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod transcript;
pub mod wakeup;
pub mod window;
pub mod workflow;

pub use apply::{Applied, apply_provider_event};
pub use bus::{CallUpdate, UpdateBus};
pub use call::{AttemptRecord, Call, CallAnalysis, CallCost, CallOutcome, CallStatus, Lease};
pub use caller_numbers::CallerNumbers;
pub use clock::{Clock, ManualClock, SystemClock};
pub use crypto::{
    FieldCipher, KeyUsage, MasterKey, SealedCall, open_call, open_segments, open_transcript,
    open_window, seal_call, seal_segments, seal_transcript, seal_window,
};
pub use engine::{
    DoNotCallCheck, DoNotCallService, Engine, EngineBuilder, EngineSettings, TranscriptService,
    WindowEdit, WindowService,
};
pub use error::{Error, ErrorKind, Result};
pub use ids::{CallId, Owner, TenantId, UserId, WindowId, WorkerId};
pub use lifecycle::{IgnoreReason, LifecycleEvent, Transition, TransitionError, transition};
pub use live::{
    ActiveCall, ActivityChange, CallAnalytics, EventIngestor, IngestMetrics, IngestOutcome,
    LiveEvent, LiveScope, LiveSubscription, LiveTracker, PollerConfig, PollerHandle,
    StaleCallSweeper, SweepReport, SweeperConfig, SweeperHandle, TranscriptPoller,
};
pub use memory::{
    InMemoryCallStore, InMemoryDoNotCallStore, InMemoryTranscriptStore, InMemoryWindowStore,
};
pub use new_call::{CallEdit, CallTemplate, Limits, NewCall};
pub use phone::{PhoneNumber, PhoneNumberError};
pub use planner::{DoneToday, PlanReport, WindowPlanner};
pub use provider::{
    DialAccepted, ProviderCall, ProviderCallState, ProviderCapabilities, ProviderEvent,
    ProviderEventKind, TelephonyProvider, WebhookRequest, WebhookVerifier,
};
pub use retry::{RetryDecision, RetryPolicy};
pub use rotation::{KeyTally, RekeyReport, ResealPage, key_report, rekey};
pub use scheduler::{
    DispatchResult, DoNotCallList, PreDialCheck, PreDialVerdict, Scheduler, SchedulerBuilder,
    SchedulerConfig, TickReport,
};
pub use service::CallService;
pub use simulator::{Simulator, SimulatorConfig};
pub use store::{
    ActiveScope, CallStore, CallStoreExt, Created, DoNotCallEntry, DoNotCallStore, ListQuery,
    ListView, NextDue, Page, StoreCapabilities, Stores, TranscriptStore, WindowStore,
};
pub use transcript::{SpeakerRole, Transcript, TranscriptSegment};
pub use wakeup::{Wakeup, WakeupListener};
pub use window::{CallWindow, RecurringWindow, WindowSchedule};
pub use workflow::{
    Classification, ClassificationCache, ClassifyThenCall, WorkflowDecision, WorkflowPolicy,
    WorkflowRunner,
};

/// Re-exported so users name the same versions callcat uses.
pub use chrono;
/// Re-exported so users name the same versions callcat uses.
pub use chrono_tz;

#[cfg(test)]
mod testing_support {
    use crate::{Call, CallTemplate, Limits, NewCall, Owner, PhoneNumber};

    pub(crate) fn sample_call(owner: &Owner) -> Call {
        let phone = PhoneNumber::parse("+14155552671").unwrap_or_else(|e| panic!("{e}"));
        NewCall::new(CallTemplate::new("Ada", phone, "Subject", "Prompt"))
            .into_call(owner.clone(), chrono::Utc::now(), &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }
}
