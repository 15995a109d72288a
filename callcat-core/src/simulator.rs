//! [`Simulator`]: a [`TelephonyProvider`] that plays realistic calls without
//! credentials, driven by a [`Clock`] so tests control time.
//!
//! The outcome of each call comes from `metadata.simulate`: `answered` (default),
//! `no_answer`, `busy`, `voicemail`, `dial_error` (a retryable dial failure),
//! `rejected` (a permanent one), `hangup` (answered, then the callee hangs up at
//! once) or `hang` (the dial request reaches the provider but never answers, as if
//! the process died mid-dial). `metadata.simulate_talk_ms` overrides the talk time;
//! `metadata.simulate_analysis` (an object) becomes the analysis's custom data.
//! Every knob is bounded ([`MAX_SIMULATED_TALK`]; a call plays at most
//! [`MAX_TURNS`] transcript turns): a value out of range is a `Validation` error
//! naming it, at creation ([`TelephonyProvider::check_call`]) or else as a failed dial.
//! Every dial is recorded, so tests count dials per call and the peak number of
//! concurrent calls.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, watch};

use crate::call::{Call, CallAnalysis, CallCost, CallOutcome};
use crate::clock::{Clock, delta};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::CallId;
use crate::provider::{
    DialAccepted, ProviderCall, ProviderCallState, ProviderCapabilities, ProviderEvent,
    ProviderEventKind, TelephonyProvider,
};
use crate::transcript::{SpeakerRole, TranscriptSegment};

/// The longest talk time a simulated call may have (2 hours), from
/// `metadata.simulate_talk_ms` or [`SimulatorConfig::talk`].
pub const MAX_SIMULATED_TALK: Duration = Duration::from_secs(2 * 60 * 60);

/// The longest ring, no-answer, analysis delay or turn of a [`SimulatorConfig`]
/// (5 minutes); longer settings are clamped to it.
pub const MAX_SIMULATED_RING: Duration = Duration::from_secs(5 * 60);

/// The most transcript turns one simulated call plays: a long call spaces its
/// turns out instead of building an unbounded timeline.
pub const MAX_TURNS: u32 = 1000;

/// How simulated calls behave.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// From dial to answer.
    pub ring: Duration,
    /// From answer to hang-up.
    pub talk: Duration,
    /// Time between transcript turns.
    pub turn: Duration,
    /// From the end to the analysis.
    pub analysis_delay: Duration,
    /// How long an unanswered call rings.
    pub no_answer_after: Duration,
    /// Whether [`TelephonyProvider::find_by_call_id`] works (reconciliation).
    pub lookup_by_call_id: bool,
    /// Send every n-th event twice (webhook duplicates); `None` for never.
    pub duplicate_every: Option<u32>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            ring: Duration::from_secs(3),
            talk: Duration::from_secs(20),
            turn: Duration::from_secs(4),
            analysis_delay: Duration::from_secs(2),
            no_answer_after: Duration::from_secs(25),
            lookup_by_call_id: true,
            duplicate_every: None,
        }
    }
}

impl SimulatorConfig {
    /// Every duration within its bound ([`MAX_SIMULATED_RING`], [`MAX_SIMULATED_TALK`]).
    fn bounded(mut self) -> Self {
        for d in [
            &mut self.ring,
            &mut self.turn,
            &mut self.analysis_delay,
            &mut self.no_answer_after,
        ] {
            *d = (*d).min(MAX_SIMULATED_RING);
        }
        self.talk = self.talk.min(MAX_SIMULATED_TALK);
        self
    }

    /// Calls connect and end at the instant they are dialed (benchmarks, bulk tests).
    pub fn instant() -> Self {
        SimulatorConfig {
            ring: Duration::ZERO,
            talk: Duration::ZERO,
            turn: Duration::from_secs(1),
            analysis_delay: Duration::ZERO,
            no_answer_after: Duration::ZERO,
            ..Self::default()
        }
    }
}

/// The behaviour asked for by `metadata.simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimulatedOutcome {
    /// Answered; a conversation; ended normally; analyzed.
    Answered,
    /// Rings out.
    NoAnswer,
    /// Busy.
    Busy,
    /// Voicemail picks up.
    Voicemail,
    /// The dial request fails with a retryable error.
    DialError,
    /// The dial request is refused for good.
    Rejected,
    /// Answered, then the callee hangs up at once.
    Hangup,
    /// The dial reaches the provider but the request never returns.
    Hang,
}

impl SimulatedOutcome {
    /// Reads `metadata.simulate` (default `answered`); unknown values are a
    /// validation error naming `metadata.simulate`.
    pub fn of(call: &Call) -> Result<Self> {
        let v = call
            .metadata
            .get("simulate")
            .and_then(|v| v.as_str())
            .unwrap_or("answered");
        Ok(match v {
            "answered" => SimulatedOutcome::Answered,
            "no_answer" => SimulatedOutcome::NoAnswer,
            "busy" => SimulatedOutcome::Busy,
            "voicemail" => SimulatedOutcome::Voicemail,
            "dial_error" => SimulatedOutcome::DialError,
            "rejected" => SimulatedOutcome::Rejected,
            "hangup" => SimulatedOutcome::Hangup,
            "hang" => SimulatedOutcome::Hang,
            other => {
                return Err(Error::validation(
                    "metadata.simulate",
                    format!("unknown simulated outcome {other:?}"),
                ));
            }
        })
    }
}

/// What a call's metadata asks of the simulator, checked.
struct Knobs {
    outcome: SimulatedOutcome,
    talk: Option<Duration>,
    analysis: serde_json::Map<String, serde_json::Value>,
}

impl Knobs {
    /// Reads and bounds every `metadata.simulate*` knob; an invalid one is a
    /// `Validation` error naming it.
    fn of(call: &Call) -> Result<Self> {
        let outcome = SimulatedOutcome::of(call)?;
        let talk = match call.metadata.get("simulate_talk_ms") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let max = u64::try_from(MAX_SIMULATED_TALK.as_millis()).unwrap_or(u64::MAX);
                match v.as_u64() {
                    Some(ms) if ms <= max => Some(Duration::from_millis(ms)),
                    _ => {
                        return Err(Error::validation(
                            "metadata.simulate_talk_ms",
                            format!(
                                "metadata.simulate_talk_ms must be a whole number of milliseconds from 0 to {max}"
                            ),
                        ));
                    }
                }
            }
        };
        let analysis = match call.metadata.get("simulate_analysis") {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(Error::validation(
                    "metadata.simulate_analysis",
                    "metadata.simulate_analysis must be an object",
                ));
            }
        };
        Ok(Knobs {
            outcome,
            talk,
            analysis,
        })
    }
}

/// One dial request the simulator received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialRecord {
    /// Our call id.
    pub call_id: CallId,
    /// The attempt number the call carried.
    pub attempt: u32,
    /// The simulator's id for it (`None` for failed dials).
    pub provider_call_id: Option<String>,
    /// When it arrived.
    pub at: DateTime<Utc>,
}

struct SimCall {
    provider_call_id: String,
    call_id: CallId,
    outcome: SimulatedOutcome,
    dialed_at: DateTime<Utc>,
    talk: Duration,
    /// Set when ended through `end_call`.
    ended_by_api: Option<DateTime<Utc>>,
    /// Index of the next timeline event to emit.
    emitted: usize,
    /// `metadata.simulate_analysis`, merged into the analysis's custom data.
    custom_analysis: serde_json::Map<String, serde_json::Value>,
}

struct State {
    calls: HashMap<String, SimCall>,
    by_call_id: HashMap<CallId, String>,
    /// Calls with events not yet delivered: the only ones event delivery looks at,
    /// so its cost follows the calls in progress, not every call ever placed.
    pending: HashSet<String>,
    /// Calls that were not over when last looked at, by end time (for the peak
    /// count): ended ones are pruned from the front, O(log n) per dial.
    live: BTreeSet<(DateTime<Utc>, String)>,
    dials: Vec<DialRecord>,
    peak: usize,
    next_id: u64,
    events_sent: u32,
}

/// The simulated provider. Cloning shares it.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    config: SimulatorConfig,
    state: Mutex<State>,
    new_dial: Notify,
    dial_count: watch::Sender<usize>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// One moment in a simulated call's life.
#[derive(Debug, Clone)]
struct Moment {
    at: DateTime<Utc>,
    kind: ProviderEventKind,
}

impl Simulator {
    /// A simulator on `clock`.
    pub fn new(clock: Arc<dyn Clock>, config: SimulatorConfig) -> Self {
        Simulator {
            inner: Arc::new(Inner {
                clock,
                config: config.bounded(),
                state: Mutex::new(State {
                    calls: HashMap::new(),
                    by_call_id: HashMap::new(),
                    pending: HashSet::new(),
                    live: BTreeSet::new(),
                    dials: Vec::new(),
                    peak: 0,
                    next_id: 1,
                    events_sent: 0,
                }),
                new_dial: Notify::new(),
                dial_count: watch::channel(0).0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every dial received, in order.
    pub fn dials(&self) -> Vec<DialRecord> {
        self.lock().dials.clone()
    }

    /// How many dial requests arrived for `call_id`.
    pub fn dial_count(&self, call_id: CallId) -> usize {
        self.lock()
            .dials
            .iter()
            .filter(|d| d.call_id == call_id)
            .count()
    }

    /// How many dial requests arrived in all.
    pub fn total_dials(&self) -> usize {
        self.lock().dials.len()
    }

    /// The most calls that were live (dialed, not yet ended) at one time.
    pub fn peak_concurrent(&self) -> usize {
        self.lock().peak
    }

    /// Resolves once at least `n` dials have arrived.
    pub async fn wait_for_dials(&self, n: usize) {
        let mut rx = self.inner.dial_count.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    fn timeline(&self, c: &SimCall) -> Vec<Moment> {
        let cfg = &self.inner.config;
        let d = c.dialed_at;
        let mut m = vec![Moment {
            at: d,
            kind: ProviderEventKind::Ringing,
        }];
        let answered_at = d + delta(cfg.ring);
        let end = |talk: Duration| answered_at + delta(talk);
        match c.outcome {
            SimulatedOutcome::Answered | SimulatedOutcome::Hangup | SimulatedOutcome::Voicemail => {
                m.push(Moment {
                    at: answered_at,
                    kind: ProviderEventKind::Started,
                });
                let talk = self.talk_of(c);
                let turn = self.turn_for(talk);
                let mut t = answered_at + delta(turn);
                while !turn.is_zero() && t < end(talk) {
                    m.push(Moment {
                        at: t,
                        kind: ProviderEventKind::TranscriptUpdated,
                    });
                    t += delta(turn);
                }
                m.push(Moment {
                    at: end(talk),
                    kind: ProviderEventKind::Ended,
                });
                m.push(Moment {
                    at: end(talk) + delta(cfg.analysis_delay),
                    kind: ProviderEventKind::Analyzed,
                });
            }
            SimulatedOutcome::NoAnswer | SimulatedOutcome::Busy => {
                let over = if c.outcome == SimulatedOutcome::Busy {
                    d + delta(cfg.ring.min(Duration::from_secs(2)))
                } else {
                    d + delta(cfg.no_answer_after)
                };
                m.push(Moment {
                    at: over,
                    kind: ProviderEventKind::Ended,
                });
                m.push(Moment {
                    at: over + delta(cfg.analysis_delay),
                    kind: ProviderEventKind::Analyzed,
                });
            }
            SimulatedOutcome::DialError | SimulatedOutcome::Rejected | SimulatedOutcome::Hang => {
                m.clear()
            }
        }
        if let Some(cut) = c.ended_by_api {
            m.retain(|x| {
                x.at < cut
                    && !matches!(
                        x.kind,
                        ProviderEventKind::Ended | ProviderEventKind::Analyzed
                    )
            });
            m.push(Moment {
                at: cut,
                kind: ProviderEventKind::Ended,
            });
        }
        m
    }

    /// The time between transcript turns of a call talking for `talk`: the
    /// configured turn, spread out so that no call plays more than [`MAX_TURNS`].
    fn turn_for(&self, talk: Duration) -> Duration {
        let turn = self.inner.config.turn;
        if turn.is_zero() {
            return turn;
        }
        turn.max(talk / MAX_TURNS)
    }

    fn talk_of(&self, c: &SimCall) -> Duration {
        match c.outcome {
            SimulatedOutcome::Hangup => Duration::from_secs(2).min(c.talk),
            SimulatedOutcome::Voicemail => {
                Duration::from_secs(10).min(c.talk.max(Duration::from_secs(1)))
            }
            _ => c.talk,
        }
    }

    // The instants below are the timeline's, computed without building it (a long
    // call has a transcript moment every turn): `timeline_agrees_with_the_instants`.

    /// When the callee answers (the `Started` moment), if the call gets that far.
    fn answered_at(&self, c: &SimCall) -> Option<DateTime<Utc>> {
        let at = c.dialed_at + delta(self.inner.config.ring);
        let answers = matches!(
            c.outcome,
            SimulatedOutcome::Answered | SimulatedOutcome::Hangup | SimulatedOutcome::Voicemail
        );
        (answers && c.ended_by_api.is_none_or(|cut| at < cut)).then_some(at)
    }

    /// When the call ends on its own (no hang-up through the API), if ever.
    fn natural_end(&self, c: &SimCall) -> Option<DateTime<Utc>> {
        let cfg = &self.inner.config;
        let d = c.dialed_at;
        match c.outcome {
            SimulatedOutcome::Answered | SimulatedOutcome::Hangup | SimulatedOutcome::Voicemail => {
                Some(d + delta(cfg.ring) + delta(self.talk_of(c)))
            }
            SimulatedOutcome::Busy => Some(d + delta(cfg.ring.min(Duration::from_secs(2)))),
            SimulatedOutcome::NoAnswer => Some(d + delta(cfg.no_answer_after)),
            SimulatedOutcome::DialError | SimulatedOutcome::Rejected | SimulatedOutcome::Hang => {
                None
            }
        }
    }

    /// The `Ended` moment: the API hang-up if there was one, else the natural end.
    fn end_time(&self, c: &SimCall) -> Option<DateTime<Utc>> {
        c.ended_by_api.or_else(|| self.natural_end(c))
    }

    /// The `Analyzed` moment (none after a hang-up through the API).
    fn analyzed_at(&self, c: &SimCall) -> Option<DateTime<Utc>> {
        match c.ended_by_api {
            Some(_) => None,
            None => self
                .natural_end(c)
                .map(|e| e + delta(self.inner.config.analysis_delay)),
        }
    }

    /// The call as the provider sees it at `now`.
    fn snapshot(&self, c: &SimCall, now: DateTime<Utc>) -> ProviderCall {
        let started = self.answered_at(c).filter(|t| *t <= now);
        let ended = self.end_time(c).filter(|t| *t <= now);
        let analyzed = self.analyzed_at(c).is_some_and(|t| t <= now);
        let mut p = ProviderCall::new(
            c.provider_call_id.clone(),
            if ended.is_some() {
                ProviderCallState::Ended
            } else if started.is_some() {
                ProviderCallState::InProgress
            } else {
                ProviderCallState::Ringing
            },
        );
        p.call_id = Some(c.call_id);
        p.started_at = started;
        p.ended_at = ended;
        if let (Some(s), Some(e)) = (started, ended) {
            p.duration_ms = u64::try_from((e - s).num_milliseconds()).ok();
        }
        if let Some(s) = started {
            let upto = ended.unwrap_or(now);
            let turn = self.turn_for(self.talk_of(c));
            let mut segs = Vec::new();
            let mut t = s;
            let mut i = 0u64;
            // At most one segment per turn of the timeline, plus the opening one.
            while t <= upto && (!turn.is_zero() || i == 0) && i <= u64::from(MAX_TURNS) {
                let offset = u64::try_from((t - s).num_milliseconds()).unwrap_or(0);
                let (role, text) = if i.is_multiple_of(2) {
                    (SpeakerRole::Agent, format!("Agent turn {}", i / 2 + 1))
                } else {
                    (SpeakerRole::User, format!("Callee turn {}", i / 2 + 1))
                };
                segs.push(TranscriptSegment {
                    role,
                    text,
                    start_ms: Some(offset),
                    end_ms: Some(offset + 800),
                });
                i += 1;
                if turn.is_zero() {
                    break;
                }
                t += delta(turn);
            }
            p.transcript = Some(segs);
        }
        if ended.is_some() {
            let (outcome, reason) = if c.ended_by_api.is_some() {
                (CallOutcome::Canceled, "canceled_by_api")
            } else {
                match c.outcome {
                    SimulatedOutcome::NoAnswer => (CallOutcome::NoAnswer, "dial_no_answer"),
                    SimulatedOutcome::Busy => (CallOutcome::Busy, "dial_busy"),
                    SimulatedOutcome::Voicemail => (CallOutcome::Voicemail, "voicemail_reached"),
                    SimulatedOutcome::Hangup => (CallOutcome::Answered, "user_hangup"),
                    _ => (CallOutcome::Answered, "agent_hangup"),
                }
            };
            p.outcome = Some(outcome);
            p.disconnection_reason = Some(reason.to_owned());
            if started.is_some() {
                p.recording_url = Some(format!(
                    "https://simulator.invalid/recordings/{}.wav",
                    c.provider_call_id
                ));
                p.cost = Some(CallCost {
                    total: 0.07,
                    currency: "USD".into(),
                    items: Default::default(),
                });
            }
        }
        if analyzed {
            p.analysis = Some(CallAnalysis {
                summary: Some(match c.outcome {
                    SimulatedOutcome::Answered => {
                        "The callee answered and the agent completed the task.".into()
                    }
                    SimulatedOutcome::Voicemail => "Reached voicemail.".into(),
                    SimulatedOutcome::Hangup => "The callee hung up right away.".into(),
                    _ => "The call did not connect.".into(),
                }),
                sentiment: Some("Neutral".into()),
                successful: Some(
                    c.outcome == SimulatedOutcome::Answered && c.ended_by_api.is_none(),
                ),
                in_voicemail: Some(c.outcome == SimulatedOutcome::Voicemail),
                action_items: Vec::new(),
                custom: c.custom_analysis.clone(),
            });
        }
        p
    }

    /// Delivers every event due by the clock's time to `sink`, then sleeps until the
    /// next one (or a new dial). Runs until `sink` is closed.
    pub async fn run_events(self, sink: mpsc::Sender<ProviderEvent>) {
        loop {
            let now = self.inner.clock.now();
            let (due, next) = self.collect_due(now);
            for e in due {
                if sink.send(e).await.is_err() {
                    return;
                }
            }
            let notified = self.inner.new_dial.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check: a dial may have arrived while we were sending.
            let (due, next2) = self.collect_due(self.inner.clock.now());
            if !due.is_empty() {
                for e in due {
                    if sink.send(e).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            let next = next.min(next2);
            tokio::select! {
                _ = notified => {}
                _ = async {
                    match next {
                        Some(at) => self.inner.clock.sleep_until(at).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {}
                _ = sink.closed() => return,
            }
        }
    }

    /// Takes every event due at the clock's time that was not delivered yet, in
    /// time order (tests drive delivery with this instead of [`Simulator::run_events`]).
    pub fn drain_due_events(&self) -> Vec<ProviderEvent> {
        self.collect_due(self.inner.clock.now()).0
    }

    /// When the next undelivered event is due.
    pub fn next_event_at(&self) -> Option<DateTime<Utc>> {
        self.collect_due_peek()
    }

    fn collect_due_peek(&self) -> Option<DateTime<Utc>> {
        let st = self.lock();
        st.pending
            .iter()
            .filter_map(|id| st.calls.get(id))
            .filter_map(|c| self.timeline(c).get(c.emitted).map(|m| m.at))
            .min()
    }

    fn collect_due(&self, now: DateTime<Utc>) -> (Vec<ProviderEvent>, Option<DateTime<Utc>>) {
        let mut st = self.lock();
        let mut out = Vec::new();
        let mut next: Option<DateTime<Utc>> = None;
        let ids: Vec<String> = st.pending.iter().cloned().collect();
        for id in ids {
            let Some(c) = st.calls.get(&id) else {
                st.pending.remove(&id);
                continue;
            };
            let tl = self.timeline(c);
            let mut emitted = c.emitted;
            while emitted < tl.len() && tl[emitted].at <= now {
                let m = &tl[emitted];
                let snap = self.snapshot(c, m.at);
                out.push((
                    m.at,
                    ProviderEvent {
                        provider: "simulator".into(),
                        kind: m.kind.clone(),
                        call: snap,
                        sequence: Some(emitted as u64),
                        occurred_at: Some(m.at),
                    },
                ));
                emitted += 1;
            }
            if let Some(m) = tl.get(emitted) {
                next = Some(next.map_or(m.at, |n: DateTime<Utc>| n.min(m.at)));
            } else {
                st.pending.remove(&id);
            }
            if let Some(c) = st.calls.get_mut(&id) {
                c.emitted = emitted;
            }
        }
        out.sort_by_key(|(at, e)| (*at, e.sequence));
        let mut events = Vec::with_capacity(out.len());
        for (_, e) in out {
            st.events_sent += 1;
            let dup = self
                .inner
                .config
                .duplicate_every
                .is_some_and(|n| n > 0 && st.events_sent.is_multiple_of(n));
            if dup {
                events.push(e.clone());
            }
            events.push(e);
        }
        (events, next)
    }
}

#[async_trait::async_trait]
impl TelephonyProvider for Simulator {
    fn name(&self) -> &str {
        "simulator"
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            lookup_by_call_id: self.inner.config.lookup_by_call_id,
            pushes_transcripts: true,
        }
    }

    fn check_call(&self, call: &Call) -> Result<()> {
        Knobs::of(call).map(|_| ())
    }

    async fn place_call(&self, call: &Call) -> Result<DialAccepted> {
        // Checked at creation too; a call stored some other way fails its dial.
        let knobs = Knobs::of(call).map_err(|e| e.with_source_name("simulator"))?;
        let outcome = knobs.outcome;
        let now = self.inner.clock.now();
        let talk = knobs.talk.unwrap_or(self.inner.config.talk);
        let accepted = {
            let mut st = self.lock();
            let failed = matches!(
                outcome,
                SimulatedOutcome::DialError | SimulatedOutcome::Rejected
            );
            let pid = (!failed).then(|| {
                // Unique across processes (stores require unique provider ids).
                let id = format!("sim_{}", uuid::Uuid::now_v7().simple());
                st.next_id += 1;
                id
            });
            st.dials.push(DialRecord {
                call_id: call.id,
                attempt: call.attempts,
                provider_call_id: pid.clone(),
                at: now,
            });
            if let Some(pid) = &pid {
                let c = SimCall {
                    provider_call_id: pid.clone(),
                    call_id: call.id,
                    outcome,
                    dialed_at: now,
                    talk,
                    ended_by_api: None,
                    emitted: 0,
                    custom_analysis: knobs.analysis,
                };
                // Live at this instant: every other call not yet over, plus this one.
                // (A call once over stays over: ending it through the API only
                // moves its end to that moment.)
                while st.live.first().is_some_and(|(end, _)| *end <= now) {
                    st.live.pop_first();
                }
                st.peak = st.peak.max(st.live.len() + 1);
                if let Some(end) = self.end_time(&c) {
                    st.live.insert((end, pid.clone()));
                }
                st.by_call_id.insert(call.id, pid.clone());
                st.pending.insert(pid.clone());
                st.calls.insert(pid.clone(), c);
            }
            let n = st.dials.len();
            self.inner.dial_count.send_replace(n);
            pid
        };
        self.inner.new_dial.notify_one();
        match outcome {
            SimulatedOutcome::DialError => {
                Err(Error::new(ErrorKind::Unavailable, "simulated dial error")
                    .with_source_name("simulator")
                    .with_retry_after(Duration::from_secs(1)))
            }
            SimulatedOutcome::Rejected => Err(Error::new(
                ErrorKind::Rejected,
                "simulated: number cannot be reached",
            )
            .with_source_name("simulator")),
            SimulatedOutcome::Hang => std::future::pending().await,
            _ => Ok(DialAccepted {
                provider_call_id: accepted.unwrap_or_default(),
            }),
        }
    }

    async fn fetch_call(&self, provider_call_id: &str) -> Result<ProviderCall> {
        let now = self.inner.clock.now();
        let st = self.lock();
        let c = st.calls.get(provider_call_id).ok_or_else(|| {
            Error::not_found(format!("no simulated call {provider_call_id}"))
                .with_source_name("simulator")
        })?;
        Ok(self.snapshot(c, now))
    }

    async fn end_call(&self, provider_call_id: &str) -> Result<()> {
        let now = self.inner.clock.now();
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            let c = st.calls.get_mut(provider_call_id).ok_or_else(|| {
                Error::not_found(format!("no simulated call {provider_call_id}"))
                    .with_source_name("simulator")
            })?;
            if c.ended_by_api.is_none() {
                let before = self.end_time(c);
                c.ended_by_api = Some(now);
                // Still live: it now ends at this moment.
                if let Some(end) = before
                    && st.live.remove(&(end, provider_call_id.to_owned()))
                {
                    st.live.insert((now, provider_call_id.to_owned()));
                }
            }
            // Its timeline changed: an end may be due now.
            st.pending.insert(provider_call_id.to_owned());
        }
        self.inner.new_dial.notify_one();
        Ok(())
    }

    async fn find_by_call_id(&self, call_id: CallId) -> Result<Option<ProviderCall>> {
        if !self.inner.config.lookup_by_call_id {
            return Err(
                Error::new(ErrorKind::Unsupported, "lookup by call id is switched off")
                    .with_source_name("simulator"),
            );
        }
        let now = self.inner.clock.now();
        let st = self.lock();
        Ok(st
            .by_call_id
            .get(&call_id)
            .and_then(|pid| st.calls.get(pid))
            .map(|c| self.snapshot(c, now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::ids::Owner;
    use chrono::TimeDelta;

    fn kinds(events: &[ProviderEvent], pid: &str) -> Vec<ProviderEventKind> {
        events
            .iter()
            .filter(|e| e.call.provider_call_id == pid)
            .map(|e| e.kind.clone())
            .collect()
    }

    #[test]
    fn timeline_agrees_with_the_instants() {
        use SimulatedOutcome::*;
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
        let clock = Arc::new(ManualClock::new(t0));
        let sim = Simulator::new(
            clock,
            SimulatorConfig {
                ring: Duration::from_secs(3),
                talk: Duration::from_secs(40),
                turn: Duration::from_secs(4),
                ..SimulatorConfig::default()
            },
        );
        let first =
            |tl: &[Moment], k: ProviderEventKind| tl.iter().find(|m| m.kind == k).map(|m| m.at);
        let outcomes = [
            Answered, Hangup, Voicemail, NoAnswer, Busy, DialError, Rejected, Hang,
        ];
        // No hang-up, a hang-up while ringing, mid-call, and after the natural end.
        let cuts = [None, Some(1), Some(20), Some(500)];
        for outcome in outcomes {
            for cut in cuts {
                let c = SimCall {
                    provider_call_id: "sim_x".into(),
                    call_id: CallId::new(),
                    outcome,
                    dialed_at: t0,
                    talk: Duration::from_secs(40),
                    ended_by_api: cut.map(|s| t0 + TimeDelta::seconds(s)),
                    emitted: 0,
                    custom_analysis: Default::default(),
                };
                let tl = sim.timeline(&c);
                let case = format!("{outcome:?} cut {cut:?}");
                assert_eq!(
                    sim.answered_at(&c),
                    first(&tl, ProviderEventKind::Started),
                    "{case}"
                );
                assert_eq!(
                    sim.end_time(&c),
                    first(&tl, ProviderEventKind::Ended),
                    "{case}"
                );
                assert_eq!(
                    sim.analyzed_at(&c),
                    first(&tl, ProviderEventKind::Analyzed),
                    "{case}"
                );
            }
        }
    }

    #[tokio::test]
    async fn finished_calls_leave_delivery_and_the_peak_count() {
        let clock = ManualClock::new(chrono::Utc::now());
        let sim = Simulator::new(
            Arc::new(clock.clone()),
            SimulatorConfig {
                ring: Duration::from_secs(1),
                talk: Duration::from_secs(10),
                turn: Duration::ZERO,
                analysis_delay: Duration::from_secs(1),
                ..SimulatorConfig::default()
            },
        );
        let owner = Owner::new("t", "u");
        let a = sim
            .place_call(&crate::testing_support::sample_call(&owner))
            .await
            .expect("dial a")
            .provider_call_id;
        clock.advance(Duration::from_secs(5));
        let b = sim
            .place_call(&crate::testing_support::sample_call(&owner))
            .await
            .expect("dial b")
            .provider_call_id;
        assert_eq!(sim.peak_concurrent(), 2);

        // Both calls play out completely; nothing is delivered twice.
        clock.advance(Duration::from_secs(60));
        let events = sim.drain_due_events();
        let full = vec![
            ProviderEventKind::Ringing,
            ProviderEventKind::Started,
            ProviderEventKind::Ended,
            ProviderEventKind::Analyzed,
        ];
        assert_eq!(kinds(&events, &a), full);
        assert_eq!(kinds(&events, &b), full);
        assert!(sim.drain_due_events().is_empty());
        assert_eq!(sim.next_event_at(), None);

        // A new call after both ended is alone on the line.
        let c = sim
            .place_call(&crate::testing_support::sample_call(&owner))
            .await
            .expect("dial c")
            .provider_call_id;
        assert_eq!(sim.peak_concurrent(), 2);
        assert_eq!(
            kinds(&sim.drain_due_events(), &c),
            [ProviderEventKind::Ringing]
        );
        assert_eq!(
            sim.next_event_at(),
            Some(clock.now() + TimeDelta::seconds(1))
        );

        // Hanging up a call whose events were all delivered delivers its end.
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            kinds(&sim.drain_due_events(), &c),
            [ProviderEventKind::Started]
        );
        sim.end_call(&c).await.expect("end c");
        assert_eq!(
            kinds(&sim.drain_due_events(), &c),
            [ProviderEventKind::Ended]
        );
        assert_eq!(sim.next_event_at(), None);
        // A finished call is still there to fetch.
        assert_eq!(
            sim.fetch_call(&a).await.expect("fetch a").state,
            ProviderCallState::Ended
        );
    }

    #[tokio::test]
    async fn knobs_out_of_range_are_validation_errors_naming_them() {
        let clock = ManualClock::new(chrono::Utc::now());
        let sim = Simulator::new(Arc::new(clock), SimulatorConfig::default());
        let owner = Owner::new("t", "u");
        let bad: [(&str, serde_json::Value); 6] = [
            ("simulate_talk_ms", 10_000_000_000_000_000u64.into()),
            ("simulate_talk_ms", 7_200_001u64.into()),
            ("simulate_talk_ms", (-1).into()),
            ("simulate_talk_ms", "long".into()),
            ("simulate_analysis", "not an object".into()),
            ("simulate", "sing".into()),
        ];
        for (key, value) in bad {
            let mut call = crate::testing_support::sample_call(&owner);
            call.metadata.insert(key.into(), value.clone());
            let field = format!("metadata.{key}");
            let e = sim.check_call(&call).expect_err("checked at creation");
            assert_eq!(
                (e.kind(), e.field()),
                (ErrorKind::Validation, Some(field.as_str())),
                "{key} = {value}"
            );
            // A call stored some other way fails its dial with the same reason.
            let e = sim.place_call(&call).await.expect_err("a failed dial");
            assert_eq!(e.field(), Some(field.as_str()), "{key} = {value}");
            assert!(!e.is_retryable());
        }
        assert_eq!(sim.total_dials(), 0);
        let mut call = crate::testing_support::sample_call(&owner);
        call.metadata
            .insert("simulate_talk_ms".into(), 7_200_000u64.into());
        assert!(sim.check_call(&call).is_ok());
    }

    #[tokio::test]
    async fn a_two_hour_call_with_tiny_turns_plays_a_bounded_number_of_turns() {
        let clock = ManualClock::new(chrono::Utc::now());
        let sim = Simulator::new(
            Arc::new(clock.clone()),
            SimulatorConfig {
                turn: Duration::from_millis(1),
                // Clamped to the bounds, never added to an instant as is.
                ring: Duration::MAX,
                analysis_delay: Duration::MAX,
                talk: Duration::MAX,
                ..SimulatorConfig::default()
            },
        );
        let mut call = crate::testing_support::sample_call(&Owner::new("t", "u"));
        call.metadata
            .insert("simulate_talk_ms".into(), 7_200_000u64.into());
        let pid = sim.place_call(&call).await.expect("dial").provider_call_id;
        {
            let st = sim.lock();
            let c = st.calls.get(&pid).expect("placed");
            let moments = sim.timeline(c).len();
            assert!(
                moments <= MAX_TURNS as usize + 4,
                "{moments} moments in the timeline"
            );
        }
        clock.advance(MAX_SIMULATED_RING + MAX_SIMULATED_TALK + Duration::from_secs(1));
        let snap = sim.fetch_call(&pid).await.expect("fetch");
        assert_eq!(snap.state, ProviderCallState::Ended);
        let turns = snap.transcript.map(|t| t.len()).unwrap_or_default();
        assert!(
            turns > 1 && turns <= MAX_TURNS as usize + 1,
            "{turns} turns"
        );
    }
}
