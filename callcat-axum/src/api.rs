//! [`Api`]: what the HTTP handlers run on — one callcat [`Engine`] — shared
//! (cheaply cloned) by every request.

use std::sync::Arc;

use callcat_core::{
    CallService, Clock, Engine, EventIngestor, Limits, LiveTracker, Stores, UpdateBus,
    WindowPlanner,
};

/// The callcat engine the HTTP API calls. Handlers use its services (calls,
/// transcripts, windows, do-not-call), never a store directly, except to read.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Api {
    engine: Engine,
}

impl From<Engine> for Api {
    fn from(engine: Engine) -> Self {
        Api { engine }
    }
}

impl Api {
    /// The API over `engine`.
    pub fn new(engine: Engine) -> Self {
        Api { engine }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Owner-scoped call operations.
    pub fn service(&self) -> &CallService {
        self.engine.calls()
    }

    /// The stores (for reads the services do not cover).
    pub fn stores(&self) -> &Stores {
        self.engine.stores()
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        self.engine.clock()
    }

    /// Live updates.
    pub fn bus(&self) -> &UpdateBus {
        self.engine.bus()
    }

    /// Active calls per tenant, and live subscriptions.
    pub fn tracker(&self) -> &Arc<LiveTracker> {
        self.engine.tracker()
    }

    /// Applies provider events (webhooks).
    pub fn ingestor(&self) -> &Arc<EventIngestor> {
        self.engine.ingestor()
    }

    /// The window planner.
    pub fn planner(&self) -> &WindowPlanner {
        self.engine.planner()
    }

    /// Input limits.
    pub fn limits(&self) -> &Limits {
        &self.engine.settings().limits
    }
}
