//! [`WindowPlanner`] (seed 002): while one of an owner's call windows is open, it
//! places that window's call — at most one per owner per local day, none while
//! another call of the owner is in flight, none when "already done today" says so.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ids::Owner;
use crate::new_call::NewCall;
use crate::service::CallService;
use crate::store::{ActiveScope, CallStore, Created, MAX_PAGE_SIZE, WindowStore};
use crate::time::{local_date, saturating_add};
use crate::wakeup::Wakeup;
use crate::window::{CallWindow, WindowSchedule};

/// Says whether an owner already did today's task (e.g. wrote today's journal entry).
#[async_trait::async_trait]
pub trait DoneToday: Send + Sync + 'static {
    /// Whether `owner` is done for the local date `date`.
    async fn done(&self, owner: &Owner, date: NaiveDate) -> Result<bool>;
}

/// What one planning pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanReport {
    /// Windows looked at.
    pub windows: usize,
    /// Calls created.
    pub created: usize,
    /// Owners whose call for today already existed.
    pub already_planned: usize,
    /// Owners skipped because a call was in flight.
    pub busy: usize,
    /// Owners skipped because they were done today.
    pub done_today: usize,
    /// Owners whose planning failed (logged; tried again next pass).
    pub failed: usize,
}

/// Places calls from open call windows.
#[derive(Clone)]
pub struct WindowPlanner {
    windows: Arc<dyn WindowStore>,
    calls: Arc<dyn CallStore>,
    service: CallService,
    clock: Arc<dyn Clock>,
    done_today: Option<Arc<dyn DoneToday>>,
    max_sleep: Duration,
    wakeup: Wakeup,
}

impl std::fmt::Debug for WindowPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowPlanner")
            .field("max_sleep", &self.max_sleep)
            .finish_non_exhaustive()
    }
}

impl WindowPlanner {
    /// A planner reading `windows` and creating calls through `service`.
    pub fn new(windows: Arc<dyn WindowStore>, service: CallService, clock: Arc<dyn Clock>) -> Self {
        let calls = service.store().clone();
        WindowPlanner {
            windows,
            calls,
            service,
            clock,
            done_today: None,
            max_sleep: Duration::from_secs(60),
            wakeup: Wakeup::new(),
        }
    }

    /// Skip owners this predicate says are done today.
    pub fn with_done_today(mut self, p: Arc<dyn DoneToday>) -> Self {
        self.done_today = Some(p);
        self
    }

    /// The longest sleep between passes in [`WindowPlanner::run`].
    pub fn with_max_sleep(mut self, d: Duration) -> Self {
        self.max_sleep = d;
        self
    }

    /// Wake [`WindowPlanner::run`] through this signal (e.g. when a window is created
    /// or deleted) instead of waiting for its next planned pass.
    pub fn with_wakeup(mut self, wakeup: Wakeup) -> Self {
        self.wakeup = wakeup;
        self
    }

    /// The signal that wakes [`WindowPlanner::run`].
    pub fn wakeup(&self) -> &Wakeup {
        &self.wakeup
    }

    /// One pass over every window.
    pub async fn plan_once(&self) -> Result<PlanReport> {
        let now = self.clock.now();
        let mut report = PlanReport::default();
        let mut by_owner: BTreeMap<Owner, Vec<CallWindow>> = BTreeMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .windows
                .list_all(MAX_PAGE_SIZE, cursor.as_deref())
                .await?;
            report.windows += page.items.len();
            for w in page.items {
                by_owner.entry(w.owner.clone()).or_default().push(w);
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        for (owner, windows) in by_owner {
            // One owner's failure (a store error, a window whose call does not
            // validate) is logged and skipped: it never stops the other owners.
            if let Err(e) = self.plan_owner(&owner, &windows, now, &mut report).await {
                report.failed += 1;
                tracing::warn!(%owner, error = %e, "planning an owner's window failed; skipped this pass");
            }
        }
        Ok(report)
    }

    async fn plan_owner(
        &self,
        owner: &Owner,
        windows: &[CallWindow],
        now: DateTime<Utc>,
        report: &mut PlanReport,
    ) -> Result<()> {
        let Some(window) = open_window(windows, now) else {
            return Ok(());
        };
        let Some(date) = local_date(now, &window.schedule.timezone()) else {
            return Err(Error::internal(format!(
                "window {}: the local date of {now} is not representable",
                window.id
            )));
        };
        let active = self
            .calls
            .list_active(&ActiveScope::Owner(owner.clone()), 1, None)
            .await?;
        if !active.items.is_empty() {
            report.busy += 1;
            return Ok(());
        }
        // With one open call per user, a SCHEDULED or RETRY_PENDING call counts
        // too (unless it is this window's call for today, which the create below
        // finds again by its key).
        if self.service.one_open_call_per_user()
            && let Some(open) = self.service.open_call(owner).await?
            && open.idempotency_key.as_deref() != Some(format!("window:{date}").as_str())
        {
            report.busy += 1;
            return Ok(());
        }
        if let Some(p) = &self.done_today
            && p.done(owner, date).await?
        {
            report.done_today += 1;
            return Ok(());
        }
        let mut new = NewCall::new(window.template.clone()).at(now);
        // One call per owner per local day, whichever process plans it.
        new.idempotency_key = Some(format!("window:{date}"));
        new.template
            .metadata
            .insert("callcat_window_id".into(), window.id.to_string().into());
        match self
            .service
            .create(owner, new)
            .await
            .map_err(|e| Error::new(e.kind(), format!("window {}: {e}", window.id)))?
        {
            Created::New(_) => report.created += 1,
            Created::Existing(_) => report.already_planned += 1,
        }
        Ok(())
    }

    /// Plans, then sleeps until the next window opens (at most `max_sleep`), until
    /// `shutdown` resolves.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let mut woken = self.wakeup.subscribe();
        loop {
            if let Err(e) = self.plan_once().await {
                tracing::warn!(error = %e, "window planning failed");
            }
            let now = self.clock.now();
            let longest = saturating_add(now, self.max_sleep);
            let next = self.next_opening(now).await.unwrap_or(longest);
            let until = next
                .min(longest)
                .max(saturating_add(now, Duration::from_millis(100)));
            tokio::select! {
                biased;
                _ = &mut shutdown => return,
                _ = woken.woken() => {}
                _ = self.clock.sleep_until(until) => {}
            }
        }
    }

    async fn next_opening(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let page = self.windows.list_all(MAX_PAGE_SIZE, None).await.ok()?;
        page.items
            .iter()
            .filter_map(|w| match &w.schedule {
                WindowSchedule::Recurring(r) => r.next_open(now + TimeDelta::seconds(1)),
                WindowSchedule::OneOff { start_at, .. } => (*start_at > now).then_some(*start_at),
            })
            .min()
    }
}

/// The window that decides for an owner now: a one-off window on today's local
/// date takes precedence over recurring ones.
fn open_window(windows: &[CallWindow], now: DateTime<Utc>) -> Option<&CallWindow> {
    let one_offs_today: Vec<&CallWindow> = windows
        .iter()
        .filter(|w| match &w.schedule {
            WindowSchedule::OneOff {
                start_at, timezone, ..
            } => {
                // Checked: a stored instant at the edge of time is simply not today.
                let day = local_date(*start_at, timezone);
                day.is_some() && day == local_date(now, timezone)
            }
            WindowSchedule::Recurring(_) => false,
        })
        .collect();
    if !one_offs_today.is_empty() {
        return one_offs_today
            .into_iter()
            .find(|w| w.schedule.contains(now));
    }
    windows.iter().find(|w| w.schedule.contains(now))
}
