//! [`Api`]: the parts of a running callcat that the HTTP handlers use, built
//! once by [`ApiBuilder`] and shared (cheaply cloned) by every request.

use std::sync::Arc;

use callcat_core::{
    CallService, Clock, Error, EventIngestor, Limits, LiveTracker, Stores, UpdateBus, WindowPlanner,
};

/// The callcat services the HTTP API calls: owner-scoped call operations, the
/// stores, the live tracker and update bus, event ingestion (webhooks), the
/// window planner, the clock and input limits. Cheap to clone.
///
/// Build it with [`Api::builder`]; every part is required except the limits.
#[derive(Clone)]
pub struct Api {
    pub(crate) service: CallService,
    pub(crate) stores: Stores,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) bus: UpdateBus,
    pub(crate) tracker: Arc<LiveTracker>,
    pub(crate) ingestor: Arc<EventIngestor>,
    pub(crate) planner: WindowPlanner,
    pub(crate) limits: Limits,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// A builder; [`ApiBuilder::build`] checks that every part was given.
    pub fn builder() -> ApiBuilder {
        ApiBuilder::default()
    }

    /// Owner-scoped call operations.
    pub fn service(&self) -> &CallService {
        &self.service
    }

    /// The stores (calls, transcripts, windows).
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The clock every handler reads the time from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Where live updates are published.
    pub fn bus(&self) -> &UpdateBus {
        &self.bus
    }

    /// Active calls per tenant, and live subscriptions.
    pub fn tracker(&self) -> &Arc<LiveTracker> {
        &self.tracker
    }

    /// Applies provider events (webhooks).
    pub fn ingestor(&self) -> &Arc<EventIngestor> {
        &self.ingestor
    }

    /// Places the calls of call windows.
    pub fn planner(&self) -> &WindowPlanner {
        &self.planner
    }

    /// Input limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// Builds an [`Api`] from its parts.
#[derive(Default)]
pub struct ApiBuilder {
    service: Option<CallService>,
    stores: Option<Stores>,
    clock: Option<Arc<dyn Clock>>,
    bus: Option<UpdateBus>,
    tracker: Option<Arc<LiveTracker>>,
    ingestor: Option<Arc<EventIngestor>>,
    planner: Option<WindowPlanner>,
    limits: Option<Limits>,
}

impl std::fmt::Debug for ApiBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiBuilder")
            .field("service", &self.service.is_some())
            .field("stores", &self.stores.is_some())
            .field("clock", &self.clock.is_some())
            .field("bus", &self.bus.is_some())
            .field("tracker", &self.tracker.is_some())
            .field("ingestor", &self.ingestor.is_some())
            .field("planner", &self.planner.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

impl ApiBuilder {
    /// Owner-scoped call operations (create, edit, cancel, ...).
    pub fn service(mut self, service: CallService) -> Self {
        self.service = Some(service);
        self
    }

    /// The stores.
    pub fn stores(mut self, stores: Stores) -> Self {
        self.stores = Some(stores);
        self
    }

    /// The clock (use the one the rest of callcat uses).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The update bus the services publish on.
    pub fn bus(mut self, bus: UpdateBus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// The live tracker (started on the same bus).
    pub fn tracker(mut self, tracker: Arc<LiveTracker>) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// The event ingestor that webhooks hand verified events to.
    pub fn ingestor(mut self, ingestor: Arc<EventIngestor>) -> Self {
        self.ingestor = Some(ingestor);
        self
    }

    /// The window planner (`POST /api/call-windows` plans at once and wakes it).
    pub fn planner(mut self, planner: WindowPlanner) -> Self {
        self.planner = Some(planner);
        self
    }

    /// Input limits (default: [`Limits::default`]; use the call service's).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The [`Api`], or a validation error naming the first missing part.
    pub fn build(self) -> Result<Api, Error> {
        fn need<T>(v: Option<T>, field: &str) -> Result<T, Error> {
            v.ok_or_else(|| Error::validation(field, format!("the Api needs a {field}")))
        }
        Ok(Api {
            service: need(self.service, "service")?,
            stores: need(self.stores, "stores")?,
            clock: need(self.clock, "clock")?,
            bus: need(self.bus, "bus")?,
            tracker: need(self.tracker, "tracker")?,
            ingestor: need(self.ingestor, "ingestor")?,
            planner: need(self.planner, "planner")?,
            limits: self.limits.unwrap_or_default(),
        })
    }
}
