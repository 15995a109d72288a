//! Crash torture: 4 scheduler processes share one store (PostgreSQL, or the
//! DynamoDB emulator); 10,000 calls come due within a minute; every 5 s one random
//! process is killed with SIGKILL and restarted. After a settle period without
//! kills, every call must be terminal and the dial log must show no call dialed twice.
//!
//! ```sh
//! cargo run --release --example torture --features postgres,dynamo -- --backend postgres
//! scripts/torture            # both backends, starting the services
//! ```
//!
//! The provider is the simulator (instant calls) behind a **dial log**: each dial
//! request is appended to a file opened with `O_APPEND` (one line per dial:
//! call id, attempt, process) *before* the simulator sees it. The log is kept
//! outside the store, so it is the ground truth for duplicates. It is also the
//! provider's registry across processes: `find_by_call_id` and `fetch_call` read
//! it, so a process restarted after a kill can reconcile a dial that another
//! (dead) process started, as a real provider that can look calls up by our id
//! would let it (`SimulatorConfig::lookup_by_call_id`). With `--lookup off` the
//! provider cannot look calls up and interrupted dials are failed at-most-once
//! instead; those are counted as `failed_at_most_once`, not as lost.
//!
//! A call counts as lost if it is not terminal at the end. A duplicate is a second
//! dial log line for the same call (every simulated call is answered, so no call
//! is ever legitimately dialed twice here).

#[allow(dead_code)]
#[path = "bench/common.rs"]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use callcat::chrono::{DateTime, TimeDelta, Utc};
use callcat::dynamo::DynamoStores;
use callcat::postgres::{PostgresOptions, PostgresStore};
use callcat::{
    Call, CallId, CallOutcome, CallStatus, DialAccepted, ErrorKind, EventIngestor, ProviderCall,
    ProviderCallState, ProviderCapabilities, ProviderEvent, ProviderEventKind, Scheduler,
    Simulator, SimulatorConfig, StaleCallSweeper, Stores, SweeperConfig, SystemClock,
    TelephonyProvider, UpdateBus, Wakeup,
};
use common::{Backend, Opts, Res, emit, fail, machine, note, owner, r3};
use rand::{Rng, SeedableRng};
use serde_json::json;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let child = args.first().is_some_and(|a| a == "child");
    let opts = Opts::parse(if child { &args[1..] } else { &args[..] })?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TORTURE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if child {
        rt.block_on(run_child(&opts))
    } else {
        rt.block_on(run_parent(&opts))
    }
}

// ---------------------------------------------------------------------------
// Where the shared store is

/// Names the shared store so children can open it.
#[derive(Clone, Debug)]
enum Target {
    Postgres { url: String, schema: String },
    Dynamo { endpoint: String, suffix: String },
}

impl Target {
    fn args(&self) -> Vec<String> {
        match self {
            Target::Postgres { url, schema } => vec![
                "--backend".into(),
                "postgres".into(),
                "--url".into(),
                url.clone(),
                "--schema".into(),
                schema.clone(),
            ],
            Target::Dynamo { endpoint, suffix } => vec![
                "--backend".into(),
                "dynamo".into(),
                "--endpoint".into(),
                endpoint.clone(),
                "--suffix".into(),
                suffix.clone(),
            ],
        }
    }

    fn from_opts(opts: &Opts) -> Res<Target> {
        let need = |k: &str| {
            opts.get(k)
                .map(str::to_owned)
                .ok_or_else(|| fail(format!("child needs --{k}")))
        };
        match Backend::parse(opts.get("backend").unwrap_or("postgres"))? {
            Backend::Postgres => Ok(Target::Postgres {
                url: need("url")?,
                schema: need("schema")?,
            }),
            Backend::Dynamo => Ok(Target::Dynamo {
                endpoint: need("endpoint")?,
                suffix: need("suffix")?,
            }),
            Backend::Memory => Err(fail("torture needs a shared store: postgres or dynamo")),
        }
    }
}

/// Opened stores, with what a wake-up listener needs.
struct Opened {
    stores: Stores,
    pg: Option<PostgresStore>,
    dynamo: Option<DynamoStores>,
}

async fn open(target: &Target, pool: u32) -> Res<Opened> {
    match target {
        Target::Postgres { url, schema } => {
            let store = PostgresStore::connect_with(
                url,
                PostgresOptions::new()
                    .schema(schema.clone())
                    .max_connections(pool),
            )
            .await?;
            Ok(Opened {
                stores: store.stores(),
                pg: Some(store),
                dynamo: None,
            })
        }
        Target::Dynamo { endpoint, suffix } => {
            let stores = DynamoStores::builder()
                .region("us-east-1")
                .endpoint_url(endpoint)
                .credentials("torture", "torture", None)
                .tables(callcat::dynamo::TableNames::with_suffix(suffix))
                .build()?;
            Ok(Opened {
                stores: stores.stores(),
                pg: None,
                dynamo: Some(stores),
            })
        }
    }
}

// ---------------------------------------------------------------------------
// The dial log: the provider's registry, shared by every process

/// One dial as logged.
struct Logged {
    call_id: CallId,
    attempt: u32,
    at: DateTime<Utc>,
}

fn parse_log(path: &Path) -> Res<Vec<Logged>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        let mut parts = line.split_whitespace();
        let (Some(id), Some(attempt), Some(ms)) = (parts.next(), parts.next(), parts.next()) else {
            // A torn last line cannot happen with O_APPEND writes of whole lines,
            // but a reader must not trust it either way.
            return Err(fail(format!("malformed dial log line {line:?}")));
        };
        out.push(Logged {
            call_id: id.parse()?,
            attempt: attempt.parse()?,
            at: DateTime::from_timestamp_millis(ms.parse()?)
                .ok_or_else(|| fail("bad time in the dial log"))?,
        });
    }
    Ok(out)
}

/// Our provider call id for one attempt: the same in every process.
fn global_id(call_id: CallId, attempt: u32) -> String {
    format!("{call_id}:{attempt}")
}

/// The simulator behind a dial log. Each dial is appended to the log (one
/// `write` on an `O_APPEND` file) before the simulator is asked, so a dial the
/// log does not show never reached the provider. Look-ups by our id, and fetches
/// of calls another process placed, are answered from the log: simulated calls
/// are instant, so a logged dial is a call that was answered and ended.
struct DialLogProvider {
    sim: Simulator,
    log_path: PathBuf,
    log: Mutex<std::fs::File>,
    lookup: bool,
    /// Global id → the local simulator's id, and back.
    ids: Mutex<(HashMap<String, String>, HashMap<String, String>)>,
    process: String,
}

impl DialLogProvider {
    fn new(sim: Simulator, log_path: PathBuf, lookup: bool, process: String) -> Res<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        Ok(DialLogProvider {
            sim,
            log_path,
            log: Mutex::new(log),
            lookup,
            ids: Mutex::new((HashMap::new(), HashMap::new())),
            process,
        })
    }

    fn ids(&self) -> MutexGuard<'_, (HashMap<String, String>, HashMap<String, String>)> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The global id for a local simulator id.
    fn global_of(&self, local: &str) -> Option<String> {
        self.ids().1.get(local).cloned()
    }

    fn logged(&self, call_id: CallId) -> callcat::Result<Option<Logged>> {
        let all = parse_log(&self.log_path).map_err(|e| {
            callcat::Error::unavailable(format!("reading the dial log: {e}"))
                .with_source_name("torture")
        })?;
        Ok(all.into_iter().rev().find(|l| l.call_id == call_id))
    }

    /// What the provider knows of a logged dial: answered and ended at once.
    fn ended(l: &Logged) -> ProviderCall {
        let mut p = ProviderCall::new(global_id(l.call_id, l.attempt), ProviderCallState::Ended);
        p.call_id = Some(l.call_id);
        p.started_at = Some(l.at);
        p.ended_at = Some(l.at);
        p.duration_ms = Some(0);
        p.outcome = Some(CallOutcome::Answered);
        p.disconnection_reason = Some("agent_hangup".into());
        p
    }
}

#[async_trait::async_trait]
impl TelephonyProvider for DialLogProvider {
    fn name(&self) -> &str {
        "simulator"
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            lookup_by_call_id: self.lookup,
            pushes_transcripts: true,
        }
    }

    async fn place_call(&self, call: &Call) -> callcat::Result<DialAccepted> {
        let line = format!(
            "{} {} {} {}\n",
            call.id,
            call.attempts,
            Utc::now().timestamp_millis(),
            self.process
        );
        {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.write_all(line.as_bytes()).map_err(|e| {
                callcat::Error::unavailable(format!("writing the dial log: {e}"))
                    .with_source_name("torture")
            })?;
        }
        let accepted = self.sim.place_call(call).await?;
        let global = global_id(call.id, call.attempts);
        let mut ids = self.ids();
        ids.0
            .insert(global.clone(), accepted.provider_call_id.clone());
        ids.1.insert(accepted.provider_call_id, global.clone());
        Ok(DialAccepted {
            provider_call_id: global,
        })
    }

    async fn fetch_call(&self, provider_call_id: &str) -> callcat::Result<ProviderCall> {
        let local = self.ids().0.get(provider_call_id).cloned();
        if let Some(local) = local {
            let mut p = self.sim.fetch_call(&local).await?;
            p.provider_call_id = provider_call_id.to_owned();
            return Ok(p);
        }
        // Placed by another process: the log knows.
        let (id, attempt) = provider_call_id
            .split_once(':')
            .and_then(|(id, a)| Some((id.parse::<CallId>().ok()?, a.parse::<u32>().ok()?)))
            .ok_or_else(|| callcat::Error::not_found(format!("no call {provider_call_id}")))?;
        match self.logged(id)? {
            Some(l) if l.attempt == attempt => Ok(Self::ended(&l)),
            _ => Err(callcat::Error::not_found(format!(
                "no call {provider_call_id}"
            ))),
        }
    }

    async fn end_call(&self, provider_call_id: &str) -> callcat::Result<()> {
        let local = self.ids().0.get(provider_call_id).cloned();
        match local {
            Some(local) => self.sim.end_call(&local).await,
            // Instant calls placed elsewhere are over already.
            None => Ok(()),
        }
    }

    async fn find_by_call_id(&self, call_id: CallId) -> callcat::Result<Option<ProviderCall>> {
        if !self.lookup {
            return Err(callcat::Error::new(
                ErrorKind::Unsupported,
                "lookup by call id is switched off",
            ));
        }
        Ok(self.logged(call_id)?.map(|l| Self::ended(&l)))
    }
}

// ---------------------------------------------------------------------------
// A scheduler process

async fn run_child(opts: &Opts) -> Res<()> {
    let target = Target::from_opts(opts)?;
    let log = PathBuf::from(opts.get("log").ok_or_else(|| fail("child needs --log"))?);
    let lookup = opts.get("lookup") != Some("off");
    let slot = opts.u64("slot", 0)?;
    let process = format!("slot{slot}-pid{}", std::process::id());
    // The parent holds our stdin: when it goes away (even killed), so do we.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });

    let opened = open(&target, 8).await?;
    let clock = Arc::new(SystemClock);
    let sim = Simulator::new(
        clock.clone(),
        SimulatorConfig {
            lookup_by_call_id: lookup,
            ..SimulatorConfig::instant()
        },
    );
    let provider = Arc::new(DialLogProvider::new(
        sim.clone(),
        log,
        lookup,
        process.clone(),
    )?);
    let bus = UpdateBus::default();
    let wakeup = Wakeup::new();
    let _listener = match &opened.pg {
        Some(pg) => Some(pg.wakeup_listener(wakeup.clone()).await?),
        None => None,
    };
    let ingestor = Arc::new(
        EventIngestor::from_stores(&opened.stores, bus.clone(), clock.clone())
            .with_wakeup(wakeup.clone()),
    );

    // The simulator's events, renamed to the global ids, as webhooks.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ProviderEvent>(1024);
    tokio::spawn(sim.run_events(tx));
    let ing = ingestor.clone();
    let prov = provider.clone();
    tokio::spawn(async move {
        while let Some(mut event) = rx.recv().await {
            if event.kind == ProviderEventKind::TranscriptUpdated {
                continue;
            }
            let Some(global) = prov.global_of(&event.call.provider_call_id) else {
                continue;
            };
            event.call.provider_call_id = global;
            let ing = ing.clone();
            tokio::spawn(async move {
                if let Err(e) = ing.ingest(&event).await {
                    tracing::warn!(error = %e, "ingest failed");
                }
            });
        }
    });

    // Calls stuck on the line because the process that placed them died before
    // their events arrived: ended after checking with the provider (the log).
    let sweeper = StaleCallSweeper::new(
        ingestor.clone(),
        provider.clone(),
        SweeperConfig {
            max_active: Duration::from_secs(opts.u64("stale-secs", 10)?),
            interval: Duration::from_secs(3),
            fetch_timeout: Duration::from_secs(5),
        },
    )?
    .spawn();

    let scheduler = Scheduler::builder()
        .store(opened.stores.calls.clone())
        .provider(provider)
        .clock(clock)
        .wakeup(wakeup)
        .bus(bus)
        .worker(process)
        .lease(Duration::from_secs(opts.u64("lease-secs", 5)?))
        .max_idle(Duration::from_secs(2))
        .global_cap(200)
        .build()?;
    let result = scheduler.run(std::future::pending::<()>()).await;
    sweeper.shutdown().await;
    let _ = opened.dynamo;
    Ok(result?)
}

// ---------------------------------------------------------------------------
// The parent

struct Proc {
    child: Child,
    _stdin: Option<ChildStdin>,
}

fn spawn_child(
    exe: &Path,
    target: &Target,
    log: &Path,
    slot: usize,
    extra: &[String],
    out_dir: &Path,
) -> Res<Proc> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out_dir.join(format!("child-{slot}.log")))?;
    let mut child = Command::new(exe)
        .arg("child")
        .args(target.args())
        .args(["--log".to_owned(), log.display().to_string()])
        .args(["--slot".to_owned(), slot.to_string()])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    let stdin = child.stdin.take();
    Ok(Proc {
        child,
        _stdin: stdin,
    })
}

async fn run_parent(opts: &Opts) -> Res<()> {
    let backend = Backend::parse(opts.get("backend").unwrap_or("postgres"))?;
    let n = opts.u64("calls", 10_000)?;
    let procs = opts.u64("procs", 4)? as usize;
    let kill_every = Duration::from_secs(opts.u64("kill-every-secs", 5)?);
    let due_within = opts.u64("due-within-secs", 60)? as i64;
    let settle_max = Duration::from_secs(opts.u64("settle-secs", 180)?);
    let lookup = opts.get("lookup").unwrap_or("on").to_owned();
    let seed = opts.u64("seed", 0)?;

    let id = common::unique();
    let out_dir = std::env::temp_dir().join(format!("callcat-torture-{}-{id}", backend.name()));
    std::fs::create_dir_all(&out_dir)?;
    let log = out_dir.join("dials.log");
    let target = match backend {
        Backend::Postgres => {
            let url = common::pg_url();
            let store = common::pg_store(&url, "torture", 4).await?;
            let schema = store.schema().ok_or_else(|| fail("no schema"))?.to_owned();
            Target::Postgres { url, schema }
        }
        Backend::Dynamo => {
            let endpoint = common::dynamo_endpoint()?;
            let suffix = format!("-torture-{id}");
            let stores = DynamoStores::builder()
                .region("us-east-1")
                .endpoint_url(&endpoint)
                .credentials("torture", "torture", None)
                .tables(callcat::dynamo::TableNames::with_suffix(&suffix))
                .build()?;
            stores.create_tables().await?;
            Target::Dynamo { endpoint, suffix }
        }
        Backend::Memory => return Err(fail("torture needs --backend postgres or dynamo")),
    };
    let opened = open(&target, 8).await?;
    note(format!(
        "torture/{}: {procs} processes, {n} calls due within {due_within} s, SIGKILL every {} s; logs in {}",
        backend.name(),
        kill_every.as_secs(),
        out_dir.display()
    ));

    let exe = std::env::current_exe()?;
    let mut extra = vec!["--lookup".to_owned(), lookup.clone()];
    for key in ["lease-secs", "stale-secs"] {
        if let Some(v) = opts.get(key) {
            extra.extend([format!("--{key}"), v.to_owned()]);
        }
    }
    let mut children = Vec::with_capacity(procs);
    for slot in 0..procs {
        children.push(spawn_child(&exe, &target, &log, slot, &extra, &out_dir)?);
    }

    // Create the calls while the schedulers run (and get killed): due evenly over
    // the next `due_within` seconds, from 5 s on.
    let started = Instant::now();
    let first_due = Utc::now() + TimeDelta::seconds(5);
    let spacing_us = due_within * 1_000_000 / n.max(1) as i64;
    let creator_store = opened.stores.calls.clone();
    let creator = tokio::spawn(async move {
        let mut ids = Vec::with_capacity(n as usize);
        let mut pending = futures::stream::FuturesOrdered::new();
        use futures::StreamExt;
        for i in 0..n {
            let at = first_due + TimeDelta::microseconds(spacing_us * i as i64);
            let store = creator_store.clone();
            pending.push_back(async move {
                let call = common::new_call(i, &owner(i, 1_000), at, Utc::now())?;
                store.create(&call).await?;
                Ok::<CallId, common::BoxError>(call.id)
            });
            if pending.len() >= 8
                && let Some(r) = pending.next().await
            {
                ids.push(r?);
            }
        }
        while let Some(r) = pending.next().await {
            ids.push(r?);
        }
        Ok::<Vec<CallId>, common::BoxError>(ids)
    });

    // Kill one at random every `kill_every`, until the creator is done and the
    // last call has been due for a while.
    let mut rng = if seed == 0 {
        rand::rngs::StdRng::from_os_rng()
    } else {
        rand::rngs::StdRng::seed_from_u64(seed)
    };
    let last_due = first_due + TimeDelta::seconds(due_within);
    let mut kills = 0u64;
    loop {
        tokio::time::sleep(kill_every).await;
        let slot = rng.random_range(0..procs);
        let p = &mut children[slot];
        p.child.kill()?;
        p.child.wait()?;
        kills += 1;
        children[slot] = spawn_child(&exe, &target, &log, slot, &extra, &out_dir)?;
        if creator.is_finished() && Utc::now() > last_due + TimeDelta::seconds(5) {
            break;
        }
    }
    let ids = creator.await??;
    let kill_phase = started.elapsed().as_secs_f64();
    note(format!(
        "torture: {kills} kills in {kill_phase:.0} s; settling (no kills) for up to {} s",
        settle_max.as_secs()
    ));

    // Settle: no more kills; wait until every call is terminal.
    let settle_start = Instant::now();
    let mut pending_ids = ids.clone();
    while settle_start.elapsed() < settle_max {
        let mut still = Vec::new();
        for id in &pending_ids {
            match opened.stores.calls.get(*id).await? {
                Some(c) if c.status.is_terminal() => {}
                _ => still.push(*id),
            }
        }
        pending_ids = still;
        if pending_ids.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let settle = settle_start.elapsed().as_secs_f64();
    for mut p in children {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    // The verdict.
    let dials = parse_log(&log)?;
    let mut per_call: HashMap<CallId, u64> = HashMap::new();
    for d in &dials {
        *per_call.entry(d.call_id).or_default() += 1;
    }
    let duplicates: u64 = per_call.values().map(|c| c.saturating_sub(1)).sum();
    let mut statuses: HashMap<&'static str, u64> = HashMap::new();
    let (mut lost, mut at_most_once, mut completed_undialed, mut recovered_attempts) =
        (0u64, 0u64, 0u64, 0u64);
    for id in &ids {
        let call = opened.stores.calls.get(*id).await?;
        let Some(c) = call else {
            lost += 1;
            *statuses.entry("MISSING").or_default() += 1;
            continue;
        };
        *statuses.entry(c.status.as_str()).or_default() += 1;
        if !c.status.is_terminal() {
            lost += 1;
        }
        if c.status == CallStatus::Failed
            && c.last_error
                .as_deref()
                .is_some_and(|e| e.contains("at-most-once"))
        {
            at_most_once += 1;
        }
        let dialed = per_call.get(id).copied().unwrap_or(0);
        if c.status == CallStatus::Completed && dialed == 0 {
            completed_undialed += 1;
        }
        if c.attempts > 1 {
            recovered_attempts += 1;
        }
    }
    let ok = duplicates == 0 && lost == 0 && completed_undialed == 0;
    emit(
        "torture",
        backend.name(),
        json!({
            "calls": n,
            "processes": procs,
            "kill_every_s": kill_every.as_secs(),
            "due_within_s": due_within,
            "lookup_by_call_id": lookup,
            "lease_s": opts.u64("lease-secs", 5)?,
            "machine": machine(),
        }),
        json!({
            "calls": ids.len(),
            "dials": dials.len(),
            "dialed_calls": per_call.len(),
            "duplicates": duplicates,
            "lost": lost,
            "kills": kills,
            "failed_at_most_once": at_most_once,
            "completed_without_a_dial": completed_undialed,
            "calls_with_more_than_one_attempt_recorded": recovered_attempts,
            "statuses": statuses,
            "kill_phase_s": r3(kill_phase),
            "settle_s": r3(settle),
            "ok": ok,
            "logs": out_dir.display().to_string(),
        }),
    );
    match &opened.pg {
        Some(pg) => common::drop_schema(pg).await?,
        None => {
            if let Some(d) = &opened.dynamo {
                d.delete_tables().await?;
            }
        }
    }
    if ok {
        Ok(())
    } else {
        Err(fail(
            "torture found duplicate dials, lost calls or inconsistent records",
        ))
    }
}
