//! `webhooks`: Retell-signed webhooks (`call_started`, `call_ended`,
//! `call_analyzed`, built from the real Retell call object in
//! `callcat-retell/tests/fixtures/`) posted to the example server (`callcat-server`, serving
//! in this process on a loopback port), 10 % of events sent twice and 5 % of calls
//! with their events out of order. Measures events per second and the time from
//! sending a webhook to its 2xx (the server answers after the state is committed,
//! so this bounds receipt-to-commit from above), then checks every call's final state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callcat::chrono::Utc;
use callcat::retell::{SIGNATURE_HEADER, sign_payload};
use callcat::{
    Call, CallStatus, DialAccepted, PhoneNumber, PollerConfig, ProviderCall, Scheduler,
    SystemClock, TelephonyProvider,
};
use callcat_server::Server;
use callcat_server::config::{Config, Secret, TelephonyConfig};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::common::{Backend, Env, Opts, Res, emit, fail, new_call, note, owner, r3, summary};

const API_KEY: &str = "key_bench_retell_webhooks_0123456789";
const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/callcat-retell/tests/fixtures/retell_call_object.json"
));

/// Stands in for Retell when placing the calls before the run: accepts every dial
/// at once with a Retell-like id, so the calls are ringing at "retell".
struct AcceptingRetell;

#[async_trait::async_trait]
impl TelephonyProvider for AcceptingRetell {
    fn name(&self) -> &str {
        "retell"
    }

    async fn place_call(&self, call: &Call) -> callcat::Result<DialAccepted> {
        Ok(DialAccepted {
            provider_call_id: provider_id(call),
        })
    }

    async fn fetch_call(&self, provider_call_id: &str) -> callcat::Result<ProviderCall> {
        Err(callcat::Error::not_found(format!(
            "{provider_call_id} is not fetched in this benchmark"
        )))
    }

    async fn end_call(&self, _provider_call_id: &str) -> callcat::Result<()> {
        Ok(())
    }
}

fn provider_id(call: &Call) -> String {
    format!("rc_{}", call.id.as_uuid().simple())
}

/// The three webhook bodies of one call, from the fixture.
fn bodies(template: &Value, call: &Call) -> Res<Vec<(String, Vec<u8>)>> {
    let now = Utc::now().timestamp_millis();
    let mut base = template.clone();
    let obj = base
        .as_object_mut()
        .ok_or_else(|| fail("the Retell fixture is not an object"))?;
    obj.insert("call_id".into(), json!(provider_id(call)));
    obj.insert("direction".into(), json!("outbound"));
    obj.insert("to_number".into(), json!(call.phone_number.as_str()));
    obj.insert(
        "metadata".into(),
        json!({ "callcat_call_id": call.id.to_string() }),
    );
    obj.insert("start_timestamp".into(), json!(now - 30_000));
    obj.insert("end_timestamp".into(), json!(now - 2_000));
    obj.insert("duration_ms".into(), json!(28_000));
    let mut started = base.clone();
    if let Some(s) = started.as_object_mut() {
        for k in [
            "end_timestamp",
            "duration_ms",
            "transcript",
            "transcript_object",
            "transcript_with_tool_calls",
            "recording_url",
            "disconnection_reason",
            "call_analysis",
            "call_cost",
        ] {
            s.remove(k);
        }
        s.insert("call_status".into(), json!("ongoing"));
    }
    let mut ended = base.clone();
    if let Some(e) = ended.as_object_mut() {
        e.remove("call_analysis");
        e.insert("call_status".into(), json!("ended"));
    }
    let mut analyzed = base;
    if let Some(a) = analyzed.as_object_mut() {
        a.insert("call_status".into(), json!("ended"));
    }
    let mut out = Vec::new();
    for (event, call) in [
        ("call_started", started),
        ("call_ended", ended),
        ("call_analyzed", analyzed),
    ] {
        out.push((
            event.to_owned(),
            serde_json::to_vec(&json!({ "event": event, "call": call }))?,
        ));
    }
    Ok(out)
}

pub async fn run(backend: Backend, opts: &Opts) -> Res<()> {
    if backend == Backend::Dynamo {
        return Err(fail("webhooks runs on --backend memory or postgres"));
    }
    let default_calls = if backend == Backend::Memory {
        5_000
    } else {
        2_000
    };
    let n = opts.u64("calls", default_calls)?;
    let concurrency = opts.u64("concurrency", 32)? as usize;
    let dup_pct = opts.f64("duplicates", 10.0)?;
    let reorder_pct = opts.f64("reordered", 5.0)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.u64("seed", 7)?);
    let env = Env::open(backend, "hooks").await?;
    let clock = Arc::new(SystemClock);

    note(format!(
        "webhooks/{}: placing {n} calls at a stand-in Retell",
        backend.name()
    ));
    let now = Utc::now();
    let mut calls = Vec::with_capacity(n as usize);
    for i in 0..n {
        let c = new_call(i, &owner(i, 1_000), now, now)?;
        env.stores.calls.create(&c).await?;
        calls.push(c);
    }
    let dialer = Scheduler::builder()
        .store(env.stores.calls.clone())
        .provider(Arc::new(AcceptingRetell))
        .clock(clock.clone())
        .batch(1000)
        .global_cap(n as usize + 1)
        .owner_cap(None)
        .build()?;
    while dialer.tick().await?.claimed > 0 {}

    let config = Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        telephony: TelephonyConfig::Retell {
            api_key: Secret::new(API_KEY),
            // Nothing is dialed or fetched during the run; a closed port if it were.
            base_url: Some("http://127.0.0.1:9".parse()?),
            from_number: PhoneNumber::parse("+14155550100")
                .map_err(|e| fail(format!("phone: {e}")))?,
            agent_id: "agent_bench".into(),
        },
        ..Config::default()
    };
    let quiet = Duration::from_secs(3600);
    let server = Server::builder(config)
        .clock(clock.clone())
        .stores(env.stores.clone())
        .webhook_rate_limit(1_000_000, 1_000_000)
        .poller_config(PollerConfig {
            interval: quiet,
            max_backoff: quiet,
            ..PollerConfig::default()
        })
        .build()
        .await?;
    let listener = server.bind().await?;
    let running = server.spawn(listener)?;
    let url = format!("{}/webhooks/retell", running.url());
    // Let the server's start-up work (the poller's first pass) settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Each call's events: in order, or (reordered) shuffled; some sent twice.
    let template: Value = serde_json::from_str(FIXTURE)?;
    let mut plans: Vec<Vec<(String, Vec<u8>)>> = Vec::with_capacity(n as usize);
    let (mut reordered, mut duplicated) = (0u64, 0u64);
    for c in &calls {
        let mut evs = bodies(&template, c)?;
        if rng.random_bool(reorder_pct / 100.0) {
            let original: Vec<String> = evs.iter().map(|e| e.0.clone()).collect();
            while evs.iter().map(|e| &e.0).eq(original.iter()) {
                evs.shuffle(&mut rng);
            }
            reordered += 1;
        }
        let mut plan = Vec::with_capacity(4);
        for e in evs {
            let twice = rng.random_bool(dup_pct / 100.0);
            plan.push(e.clone());
            if twice {
                plan.push(e);
                duplicated += 1;
            }
        }
        plans.push(plan);
    }
    let total: usize = plans.iter().map(Vec::len).sum();
    note(format!(
        "webhooks: posting {total} signed events, {concurrency} at a time"
    ));

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let plans = Arc::new(plans);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (http, url, plans, next) = (http.clone(), url.clone(), plans.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut labels: std::collections::HashMap<String, u64> = Default::default();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(plan) = plans.get(i) else { break };
                for (_, body) in plan {
                    let sig = sign_payload(body, API_KEY, Utc::now().timestamp_millis());
                    let t = Instant::now();
                    let resp = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header(SIGNATURE_HEADER, sig)
                        .body(body.clone())
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status().is_success() => {
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                            for l in v["results"].as_array().into_iter().flatten() {
                                *labels
                                    .entry(l.as_str().unwrap_or("?").to_owned())
                                    .or_default() += 1;
                            }
                        }
                        _ => failures += 1,
                    }
                }
            }
            (latencies, failures, labels)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failures = 0u64;
    let mut labels: std::collections::HashMap<String, u64> = Default::default();
    for w in workers {
        let (l, f, lab) = w.await?;
        latencies.extend(l);
        failures += f;
        for (k, v) in lab {
            *labels.entry(k).or_default() += v;
        }
    }
    let secs = started.elapsed().as_secs_f64();

    // Every call must have ended up completed with its analysis.
    let mut right = 0u64;
    let mut wrong = Vec::new();
    for c in &calls {
        match env.stores.calls.get(c.id).await? {
            Some(s)
                if s.status == CallStatus::Completed
                    && s.analysis.is_some()
                    && s.started_at.is_some()
                    && s.ended_at.is_some()
                    && s.provider_call_id.as_deref() == Some(provider_id(c).as_str()) =>
            {
                right += 1
            }
            other => {
                if wrong.len() < 5 {
                    wrong.push(json!({
                        "call": c.id.to_string(),
                        "status": other.as_ref().map(|s| s.status.as_str()),
                        "analysis": other.as_ref().map(|s| s.analysis.is_some()),
                    }));
                }
            }
        }
    }
    running.shutdown().await?;
    emit(
        "webhooks",
        backend.name(),
        json!({
            "calls": n,
            "events": total,
            "events_per_call": ["call_started", "call_ended", "call_analyzed"],
            "duplicated_events": duplicated,
            "reordered_calls": reordered,
            "concurrency": concurrency,
            "server": "callcat-server in this process (axum, loopback), Retell verifier",
        }),
        json!({
            "events_per_s": r3(total as f64 / secs),
            "seconds": r3(secs),
            "send_to_2xx_ms": summary(&mut latencies),
            "http_failures": failures,
            "results": labels,
            "calls_right": right,
            "calls_wrong": n - right,
            "wrong_examples": wrong,
            "all_final_states_right": right == n && failures == 0,
        }),
    );
    env.close().await
}
