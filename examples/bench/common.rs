//! What the scenarios share: options, backends, JSON output, percentiles, process
//! statistics, and wrappers that count what a provider and a store were asked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use callcat::chrono::{DateTime, Utc};
use callcat::dynamo::DynamoStores;
use callcat::postgres::sqlx::{self, AssertSqlSafe};
use callcat::postgres::{PostgresOptions, PostgresStore};
use callcat::{
    ActiveScope, Call, CallId, CallStore, CallTemplate, Created, DialAccepted, EventIngestor,
    IngestOutcome, Limits, ListQuery, NewCall, Owner, Page, PhoneNumber, ProviderCall,
    ProviderCapabilities, ProviderEvent, ProviderEventKind, Simulator, StoreCapabilities, Stores,
    TelephonyProvider, TenantId, WorkerId,
};
use serde_json::{Value, json};

/// Errors from anywhere, with a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Results of the harness.
pub type Res<T> = Result<T, BoxError>;

/// An error with this message.
pub fn fail(msg: impl Into<String>) -> BoxError {
    msg.into().into()
}

/// Which storage backend a scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Postgres,
    Dynamo,
}

impl Backend {
    pub fn parse(s: &str) -> Res<Backend> {
        match s {
            "memory" => Ok(Backend::Memory),
            "postgres" => Ok(Backend::Postgres),
            "dynamo" => Ok(Backend::Dynamo),
            other => Err(fail(format!(
                "unknown backend {other:?} (memory, postgres or dynamo)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Postgres => "postgres",
            Backend::Dynamo => "dynamo",
        }
    }
}

/// `--key value` options after the scenario name.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    map: HashMap<String, String>,
}

impl Opts {
    pub fn parse(args: &[String]) -> Res<Opts> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                return Err(fail(format!(
                    "unexpected argument {a:?} (options are --key value)"
                )));
            };
            let value = it
                .next()
                .ok_or_else(|| fail(format!("option --{key} needs a value")))?;
            map.insert(key.to_owned(), value.clone());
        }
        Ok(Opts { map })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    pub fn u64(&self, key: &str, default: u64) -> Res<u64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| fail(format!("--{key} must be a whole number, not {v:?}"))),
        }
    }

    pub fn f64(&self, key: &str, default: f64) -> Res<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| fail(format!("--{key} must be a number, not {v:?}"))),
        }
    }

    /// A comma-separated list of whole numbers.
    pub fn list(&self, key: &str, default: &[u64]) -> Res<Vec<u64>> {
        match self.get(key) {
            None => Ok(default.to_vec()),
            Some(v) => v
                .split(',')
                .map(|p| {
                    p.trim().parse().map_err(|_| {
                        fail(format!("--{key} must be whole numbers separated by commas"))
                    })
                })
                .collect(),
        }
    }
}

/// Prints one result line.
pub fn emit(scenario: &str, backend: &str, parameters: Value, metrics: Value) {
    println!(
        "{}",
        json!({
            "scenario": scenario,
            "backend": backend,
            "parameters": parameters,
            "metrics": metrics,
            "measured_at": Utc::now().to_rfc3339(),
            "load_avg_1m": load_avg(),
        })
    );
}

/// The 1-minute load average (other work on the machine blurs the figures).
pub fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Progress for the person watching (stderr, so stdout stays JSON lines).
pub fn note(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

/// Rounds to 3 decimals for printing.
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// p50 / p95 / p99 / max / mean of `samples` (nearest-rank percentiles).
pub fn summary(samples: &mut [f64]) -> Value {
    if samples.is_empty() {
        return json!({ "n": 0 });
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let p = |q: f64| {
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        r3(samples[rank - 1])
    };
    let mean = samples.iter().sum::<f64>() / n as f64;
    json!({
        "n": n,
        "min": r3(samples[0]),
        "p50": p(0.50),
        "p95": p(0.95),
        "p99": p(0.99),
        "max": r3(samples[n - 1]),
        "mean": r3(mean),
    })
}

/// This process's resident memory in KiB (`VmRSS` in /proc/self/status).
pub fn rss_kib() -> Res<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| fail("no VmRSS line in /proc/self/status"))
}

/// CPU time this process used so far (user + system, all threads), in seconds,
/// from /proc/self/stat (Linux reports it in 1/100 s ticks).
pub fn cpu_seconds() -> Res<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name is in parentheses and may contain spaces: split after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| fail("unexpected /proc/self/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let tick = |i: usize| -> Res<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| fail("unexpected /proc/self/stat"))
    };
    Ok((tick(11)? + tick(12)?) / 100.0)
}

/// The machine, for the report.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_gib": r3(mem_kib as f64 / 1024.0 / 1024.0),
        "cpu": cpu,
    })
}

// ---------------------------------------------------------------------------
// Backends

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn pg_url() -> String {
    std::env::var("CALLCAT_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// A short unique suffix for schema and table names.
pub fn unique() -> String {
    let id = CallId::new().to_string().replace('-', "");
    id[id.len() - 10..].to_owned()
}

/// A fresh schema `bench_<label>_<unique>` on `url`, migrated.
pub async fn pg_store(url: &str, label: &str, max_connections: u32) -> Res<PostgresStore> {
    let schema = format!("bench_{label}_{}", unique());
    let store = PostgresStore::connect_with(
        url,
        PostgresOptions::new()
            .schema(schema)
            .max_connections(max_connections),
    )
    .await?;
    store.migrate().await?;
    Ok(store)
}

/// Latency of a one-row UPDATE commit (the fsync every callcat write pays), for
/// context: 200 commits on a scratch table in the store's schema.
pub async fn commit_probe(store: &PostgresStore) -> Res<Value> {
    let schema = store.schema().unwrap_or("public");
    let table = format!("\"{schema}\".bench_commit_probe");
    let pool = store.pool();
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, v bigint NOT NULL)"
    )))
    .execute(pool)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} VALUES (1, 0) ON CONFLICT DO NOTHING"
    )))
    .execute(pool)
    .await?;
    let update = format!("UPDATE {table} SET v = v + 1 WHERE id = 1");
    let mut ms = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        sqlx::query(AssertSqlSafe(update.as_str()))
            .execute(pool)
            .await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(pool)
        .await?;
    Ok(summary(&mut ms))
}

/// Drops the store's schema.
pub async fn drop_schema(store: &PostgresStore) -> Res<()> {
    if let Some(schema) = store.schema() {
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(store.pool())
        .await?;
    }
    Ok(())
}

/// The calls table of a store, quoted.
pub fn calls_table(store: &PostgresStore) -> String {
    match store.schema() {
        Some(s) => format!("\"{s}\".calls"),
        None => "calls".to_owned(),
    }
}

pub fn dynamo_endpoint() -> Res<String> {
    std::env::var("CALLCAT_TEST_DYNAMO_ENDPOINT").map_err(|_| {
        fail("set CALLCAT_TEST_DYNAMO_ENDPOINT (scripts/bench starts moto and sets it)")
    })
}

/// Fresh tables `callcat-*-bench-<unique>` on the emulator.
pub async fn dynamo_stores(endpoint: &str) -> Res<DynamoStores> {
    let stores = DynamoStores::builder()
        .region("us-east-1")
        .endpoint_url(endpoint)
        .credentials("bench", "bench", None)
        .tables(callcat::dynamo::TableNames::with_suffix(&format!(
            "-bench-{}",
            unique()
        )))
        .build()?;
    stores.create_tables().await?;
    Ok(stores)
}

/// The stores a scenario runs on, and how to clean them up.
pub struct Env {
    pub stores: Stores,
    pub pg: Option<PostgresStore>,
    pub dynamo: Option<DynamoStores>,
}

impl Env {
    pub async fn open(backend: Backend, label: &str) -> Res<Env> {
        Ok(match backend {
            Backend::Memory => Env {
                stores: callcat::memory::in_memory_stores(),
                pg: None,
                dynamo: None,
            },
            Backend::Postgres => {
                let store = pg_store(&pg_url(), label, 16).await?;
                Env {
                    stores: store.stores(),
                    pg: Some(store),
                    dynamo: None,
                }
            }
            Backend::Dynamo => {
                let stores = dynamo_stores(&dynamo_endpoint()?).await?;
                Env {
                    stores: stores.stores(),
                    pg: None,
                    dynamo: Some(stores),
                }
            }
        })
    }

    pub async fn close(self) -> Res<()> {
        if let Some(pg) = &self.pg {
            drop_schema(pg).await?;
        }
        if let Some(d) = &self.dynamo {
            d.delete_tables().await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Calls

/// A request for a realistic call due at `at` (prompt and variables of typical size).
pub fn call_request(i: u64, at: DateTime<Utc>) -> Res<NewCall> {
    let phone = PhoneNumber::parse(&format!("+1415555{:04}", i % 10_000))
        .map_err(|e| fail(format!("phone number: {e}")))?;
    let mut t = CallTemplate::new(
        format!("Callee {i}"),
        phone,
        "Appointment reminder",
        "You are calling to remind the callee of their appointment tomorrow at 10:00. \
         Confirm the time, offer to reschedule if it does not suit, and keep it short.",
    );
    t.variables
        .insert("appointment".into(), "tomorrow 10:00".into());
    t.variables.insert("clinic".into(), "Main Street".into());
    Ok(NewCall::new(t).at(at))
}

/// A realistic call for `owner` due at `at`, as it would be stored.
pub fn new_call(i: u64, owner: &Owner, at: DateTime<Utc>, now: DateTime<Utc>) -> Res<Call> {
    Ok(call_request(i, at)?.into_call(owner.clone(), now, &Limits::default())?)
}

/// The `i`-th of `owners` owners.
pub fn owner(i: u64, owners: u64) -> Owner {
    let k = i % owners.max(1);
    Owner::new(format!("tenant-{}", k % 10), format!("user-{k}"))
}

// ---------------------------------------------------------------------------
// An instrumented provider

/// Wraps a provider: records when each dial request arrived (microseconds, wall
/// clock) and counts fetches.
pub struct Instrumented {
    inner: Arc<dyn TelephonyProvider>,
    dials: Mutex<Vec<(CallId, DateTime<Utc>)>>,
    fetches: AtomicU64,
    dialed: tokio::sync::watch::Sender<usize>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn TelephonyProvider>) -> Arc<Instrumented> {
        Arc::new(Instrumented {
            inner,
            dials: Mutex::new(Vec::new()),
            fetches: AtomicU64::new(0),
            dialed: tokio::sync::watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(CallId, DateTime<Utc>)>> {
        self.dials.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dials(&self) -> Vec<(CallId, DateTime<Utc>)> {
        self.lock().clone()
    }

    pub fn dial_count(&self) -> usize {
        self.lock().len()
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Waits until `n` dials arrived or `timeout` passed; returns the count.
    pub async fn wait_for_dials(&self, n: usize, timeout: Duration) -> usize {
        let mut rx = self.dialed.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await;
        self.dial_count()
    }
}

#[async_trait::async_trait]
impl TelephonyProvider for Instrumented {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> ProviderCapabilities {
        self.inner.capabilities()
    }

    async fn place_call(&self, call: &Call) -> callcat::Result<DialAccepted> {
        let at = Utc::now();
        let n = {
            let mut d = self.lock();
            d.push((call.id, at));
            d.len()
        };
        self.dialed.send_replace(n);
        self.inner.place_call(call).await
    }

    async fn fetch_call(&self, provider_call_id: &str) -> callcat::Result<ProviderCall> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.inner.fetch_call(provider_call_id).await
    }

    async fn end_call(&self, provider_call_id: &str) -> callcat::Result<()> {
        self.inner.end_call(provider_call_id).await
    }

    async fn find_by_call_id(&self, call_id: CallId) -> callcat::Result<Option<ProviderCall>> {
        self.inner.find_by_call_id(call_id).await
    }
}

// ---------------------------------------------------------------------------
// A counting store

const OPS: [&str; 12] = [
    "create",
    "get",
    "update",
    "delete_if_scheduled",
    "list",
    "find_by_provider_call_id",
    "list_active",
    "list_tenant_range",
    "claim_due",
    "next_due_at",
    "active_calls_to_number",
    "count_active",
];

/// Wraps a call store: counts each operation and the time spent in it.
pub struct CountingStore {
    inner: Arc<dyn CallStore>,
    counts: [AtomicU64; 12],
    micros: [AtomicU64; 12],
    /// Answer the capped claim as a store without one would (the trait's
    /// defaults: claim everything due; the scheduler defers after the claim).
    uncapped: bool,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn CallStore>) -> Arc<CountingStore> {
        Arc::new(CountingStore {
            inner,
            counts: Default::default(),
            micros: Default::default(),
            uncapped: false,
        })
    }

    /// Counts like [`CountingStore::new`], but hides the store's capped claim, for
    /// comparison with the claim-then-defer path.
    pub fn without_capped_claim(inner: Arc<dyn CallStore>) -> Arc<CountingStore> {
        Arc::new(CountingStore {
            inner,
            counts: Default::default(),
            micros: Default::default(),
            uncapped: true,
        })
    }

    fn done(&self, op: usize, started: Instant) {
        self.counts[op].fetch_add(1, Ordering::Relaxed);
        self.micros[op].fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// Operations so far.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Per operation: count and total milliseconds (only those that ran).
    pub fn snapshot(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (i, name) in OPS.iter().enumerate() {
            let n = self.counts[i].load(Ordering::Relaxed);
            if n > 0 {
                let ms = self.micros[i].load(Ordering::Relaxed) as f64 / 1000.0;
                m.insert(
                    (*name).to_owned(),
                    json!({ "count": n, "total_ms": r3(ms), "mean_ms": r3(ms / n as f64) }),
                );
            }
        }
        Value::Object(m)
    }

    /// Operations per `unit` (e.g. per call): count / unit for each.
    pub fn per(&self, unit: u64) -> Value {
        let mut m = serde_json::Map::new();
        for (i, name) in OPS.iter().enumerate() {
            let n = self.counts[i].load(Ordering::Relaxed);
            if n > 0 {
                m.insert((*name).to_owned(), json!(r3(n as f64 / unit.max(1) as f64)));
            }
        }
        m.insert(
            "total".into(),
            json!(r3(self.total() as f64 / unit.max(1) as f64)),
        );
        Value::Object(m)
    }
}

#[async_trait::async_trait]
impl CallStore for CountingStore {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }

    async fn create(&self, call: &Call) -> callcat::Result<Created> {
        let t = Instant::now();
        let r = self.inner.create(call).await;
        self.done(0, t);
        r
    }

    async fn get(&self, id: CallId) -> callcat::Result<Option<Call>> {
        let t = Instant::now();
        let r = self.inner.get(id).await;
        self.done(1, t);
        r
    }

    async fn update(&self, call: &Call) -> callcat::Result<Call> {
        let t = Instant::now();
        let r = self.inner.update(call).await;
        self.done(2, t);
        r
    }

    async fn delete_if_scheduled(&self, owner: &Owner, id: CallId) -> callcat::Result<()> {
        let t = Instant::now();
        let r = self.inner.delete_if_scheduled(owner, id).await;
        self.done(3, t);
        r
    }

    async fn list(&self, owner: &Owner, query: &ListQuery) -> callcat::Result<Page<Call>> {
        let t = Instant::now();
        let r = self.inner.list(owner, query).await;
        self.done(4, t);
        r
    }

    async fn find_by_provider_call_id(
        &self,
        provider_call_id: &str,
    ) -> callcat::Result<Option<Call>> {
        let t = Instant::now();
        let r = self.inner.find_by_provider_call_id(provider_call_id).await;
        self.done(5, t);
        r
    }

    async fn list_active(
        &self,
        scope: &ActiveScope,
        limit: u32,
        cursor: Option<&str>,
    ) -> callcat::Result<Page<Call>> {
        let t = Instant::now();
        let r = self.inner.list_active(scope, limit, cursor).await;
        self.done(6, t);
        r
    }

    async fn list_tenant_range(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
        cursor: Option<&str>,
    ) -> callcat::Result<Page<Call>> {
        let t = Instant::now();
        let r = self
            .inner
            .list_tenant_range(tenant, from, to, limit, cursor)
            .await;
        self.done(7, t);
        r
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
    ) -> callcat::Result<Vec<Call>> {
        let t = Instant::now();
        let r = self.inner.claim_due(now, limit, worker, lease_until).await;
        self.done(8, t);
        r
    }

    async fn next_due_at(&self) -> callcat::Result<Option<DateTime<Utc>>> {
        let t = Instant::now();
        let r = self.inner.next_due_at().await;
        self.done(9, t);
        r
    }

    async fn claim_due_capped(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
        owner_cap: u32,
    ) -> callcat::Result<Vec<Call>> {
        let t = Instant::now();
        let r = if self.uncapped {
            self.inner.claim_due(now, limit, worker, lease_until).await
        } else {
            self.inner
                .claim_due_capped(now, limit, worker, lease_until, owner_cap)
                .await
        };
        self.done(8, t);
        r
    }

    async fn next_due_capped(&self, owner_cap: u32) -> callcat::Result<callcat::NextDue> {
        let t = Instant::now();
        let r = if self.uncapped {
            self.inner
                .next_due_at()
                .await
                .map(|at| callcat::NextDue { at, blocked: false })
        } else {
            self.inner.next_due_capped(owner_cap).await
        };
        self.done(9, t);
        r
    }

    async fn active_calls_to_number(
        &self,
        scope: &ActiveScope,
        number: &PhoneNumber,
    ) -> callcat::Result<u32> {
        let t = Instant::now();
        let r = self.inner.active_calls_to_number(scope, number).await;
        self.done(10, t);
        r
    }

    async fn count_active(&self, scope: &ActiveScope) -> callcat::Result<u64> {
        let t = Instant::now();
        let r = self.inner.count_active(scope).await;
        self.done(11, t);
        r
    }
}

// ---------------------------------------------------------------------------
// Events from the simulator to the ingestor

/// Counts what the event pump did.
#[derive(Default)]
pub struct PumpStats {
    pub events: AtomicU64,
    pub finished: AtomicU64,
    pub errors: AtomicU64,
    finished_tx: Mutex<Option<tokio::sync::watch::Sender<u64>>>,
}

impl PumpStats {
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }
}

/// Feeds the simulator's events whose kind passes `keep` to the ingestor, up to
/// `concurrency` at a time (as a webhook endpoint would), counting calls that
/// reached a terminal status. Returns the stats and a receiver of the finished count.
pub fn pump_events(
    sim: Simulator,
    ingestor: Arc<EventIngestor>,
    keep: fn(&ProviderEventKind) -> bool,
    concurrency: usize,
) -> (Arc<PumpStats>, tokio::sync::watch::Receiver<u64>) {
    let (finished_tx, finished_rx) = tokio::sync::watch::channel(0u64);
    let stats = Arc::new(PumpStats {
        finished_tx: Mutex::new(Some(finished_tx)),
        ..PumpStats::default()
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ProviderEvent>(4096);
    tokio::spawn(sim.run_events(tx));
    let st = stats.clone();
    tokio::spawn(async move {
        let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        while let Some(event) = rx.recv().await {
            if !keep(&event.kind) {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let ingestor = ingestor.clone();
            let st = st.clone();
            tokio::spawn(async move {
                let _permit = permit;
                st.events.fetch_add(1, Ordering::Relaxed);
                match ingestor.ingest(&event).await {
                    Ok(IngestOutcome::Applied(c)) if c.status.is_terminal() => {
                        let n = st.finished.fetch_add(1, Ordering::Relaxed) + 1;
                        if let Some(tx) = st
                            .finished_tx
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .as_ref()
                        {
                            tx.send_replace(n);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        st.errors.fetch_add(1, Ordering::Relaxed);
                        note(format!("ingest failed: {e}"));
                    }
                }
            });
        }
    });
    (stats, finished_rx)
}

/// Counts calls by status (reads each call by id).
pub async fn status_counts(store: &dyn CallStore, ids: &[CallId]) -> Res<Value> {
    let mut counts: HashMap<&'static str, u64> = HashMap::new();
    for id in ids {
        let status = match store.get(*id).await? {
            Some(c) => c.status.as_str(),
            None => "MISSING",
        };
        *counts.entry(status).or_default() += 1;
    }
    Ok(json!(counts))
}
