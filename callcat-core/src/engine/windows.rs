//! [`WindowService`]: owner-scoped call windows — create, edit, list, delete —
//! validated (schedule, template, instants within a sane range), and the window
//! planner woken so that a new or moved window gets its call on time.

use std::sync::Arc;

use crate::caller_numbers::CallerNumbers;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ids::{Owner, WindowId};
use crate::new_call::{CallTemplate, Limits};
use crate::store::WindowStore;
use crate::wakeup::Wakeup;
use crate::window::{CallWindow, WindowSchedule};

/// Most windows one owner may have.
pub const MAX_WINDOWS_PER_OWNER: usize = 100;

/// What an edit changes; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowEdit {
    /// When the window is open.
    pub schedule: Option<WindowSchedule>,
    /// The call it places.
    pub template: Option<CallTemplate>,
}

/// Owner-scoped call windows. Cheap to clone.
#[derive(Clone)]
pub struct WindowService {
    store: Arc<dyn WindowStore>,
    clock: Arc<dyn Clock>,
    planner: Wakeup,
    limits: Limits,
    caller_numbers: CallerNumbers,
}

impl std::fmt::Debug for WindowService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowService").finish_non_exhaustive()
    }
}

fn validate(schedule: &WindowSchedule, template: &CallTemplate, limits: &Limits) -> Result<()> {
    // Also bounds a one-off window's instants to 2000–2200.
    schedule.validate()?;
    template.validate(limits)?;
    // The planner adds the window's id to each call's metadata: leave room for it.
    let mut planned = template.clone();
    planned.metadata.insert(
        "callcat_window_id".into(),
        WindowId::new().to_string().into(),
    );
    planned.validate(limits).map_err(|e| {
        Error::validation(
            e.field().unwrap_or("call.metadata"),
            format!("{e} (with room for the window's id)"),
        )
    })
}

impl WindowService {
    /// A service over `store`; `planner` wakes the window planner.
    pub fn new(
        store: Arc<dyn WindowStore>,
        clock: Arc<dyn Clock>,
        planner: Wakeup,
        limits: Limits,
    ) -> Self {
        WindowService {
            store,
            clock,
            planner,
            limits,
            caller_numbers: CallerNumbers::any(),
        }
    }

    /// Which caller numbers each tenant may give in a window's call (default: any).
    pub fn with_caller_numbers(mut self, caller_numbers: CallerNumbers) -> Self {
        self.caller_numbers = caller_numbers;
        self
    }

    /// Validates and stores a new window of `owner`, and wakes the planner (which
    /// places its call at once if it is open).
    pub async fn create(
        &self,
        owner: &Owner,
        schedule: WindowSchedule,
        template: CallTemplate,
    ) -> Result<CallWindow> {
        validate(&schedule, &template, &self.limits)?;
        self.caller_numbers
            .check(owner, template.caller_number.as_ref())?;
        if self.store.list(owner).await?.len() >= MAX_WINDOWS_PER_OWNER {
            return Err(Error::validation(
                "windows",
                format!("an owner may have at most {MAX_WINDOWS_PER_OWNER} call windows"),
            ));
        }
        let w = CallWindow {
            id: WindowId::new(),
            owner: owner.clone(),
            schedule,
            template,
            created_at: self.clock.now(),
        };
        self.store.create(&w).await?;
        self.planner.wake();
        Ok(w)
    }

    /// One of `owner`'s windows (`NotFound` for anyone else's).
    pub async fn get(&self, owner: &Owner, id: WindowId) -> Result<CallWindow> {
        self.store
            .get(owner, id)
            .await?
            .ok_or_else(|| Error::not_found(format!("window {id} not found")))
    }

    /// `owner`'s windows, oldest first.
    pub async fn list(&self, owner: &Owner) -> Result<Vec<CallWindow>> {
        self.store.list(owner).await
    }

    /// Changes one of `owner`'s windows and wakes the planner, so a window moved
    /// to open sooner places its call then.
    pub async fn edit(&self, owner: &Owner, id: WindowId, edit: WindowEdit) -> Result<CallWindow> {
        let mut w = self.get(owner, id).await?;
        if let Some(s) = edit.schedule {
            w.schedule = s;
        }
        if let Some(t) = edit.template {
            w.template = t;
        }
        validate(&w.schedule, &w.template, &self.limits)?;
        self.caller_numbers
            .check(owner, w.template.caller_number.as_ref())?;
        self.store.update(&w).await?;
        self.planner.wake();
        Ok(w)
    }

    /// Deletes one of `owner`'s windows (`NotFound` for anyone else's).
    pub async fn delete(&self, owner: &Owner, id: WindowId) -> Result<()> {
        self.store.delete(owner, id).await?;
        self.planner.wake();
        Ok(())
    }
}
