//! `/metrics` end to end: requests and one simulated call through the example
//! server, then the exposition text read with a Prometheus text-format parser.
//!
//! The metrics recorder is global to the process and shared by every server in
//! it, so the exact values here hold only because this binary has one test
//! (keep it that way, or compare differences).

mod common;

use std::time::Duration;

use common::{TestServer, histogram, metric, series, test_config};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_dials_outcomes_and_active_calls() {
    let s = TestServer::start().await;
    let ada = s.token("ada");
    for _ in 0..2 {
        let (st, _) = s.send(reqwest::Method::GET, "/healthz", None, None).await;
        assert_eq!(st, 200);
    }
    let (st, _) = s
        .get("/api/calls/01a1fd92-5d05-728e-abef-189291294b8d", &ada)
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .send(reqwest::Method::GET, "/no/such/route", None, None)
        .await;
    assert_eq!(st, 404);

    let id = s.create_call(&ada, json!({}), 3).await;
    s.wait_status(&ada, &id, "RINGING").await;
    s.advance(Duration::from_secs(2));
    s.wait_status(&ada, &id, "IN_PROGRESS").await;

    // On the line: the active gauge counts it; no tenant label by default.
    let scrape = s.scrape().await;
    assert_eq!(metric(&scrape, "callcat_active_calls", &[]), 1.0);
    assert!(
        scrape
            .families
            .values()
            .all(|f| f.get_label_names().iter().all(|l| l != "tenant")),
        "tenant names are labels only when enabled"
    );

    s.advance(Duration::from_secs(10));
    s.wait_status(&ada, &id, "COMPLETED").await;
    // The metrics observer follows the update bus on its own task: look until it
    // has seen the end (bounded; the clock does not move meanwhile).
    let mut scrape = s.scrape().await;
    for _ in 0..common::WAIT_ROUNDS {
        if metric(&scrape, "callcat_call_outcomes_total", &[]) > 0.0 {
            break;
        }
        common::pause().await;
        scrape = s.scrape().await;
    }

    assert_eq!(metric(&scrape, "callcat_dials_total", &[]), 1.0);
    assert_eq!(
        metric(
            &scrape,
            "callcat_call_outcomes_total",
            &[("outcome", "answered")]
        ),
        1.0
    );
    assert_eq!(metric(&scrape, "callcat_call_outcomes_total", &[]), 1.0);
    assert_eq!(metric(&scrape, "callcat_active_calls", &[]), 0.0);
    assert_eq!(metric(&scrape, "callcat_bus_lagged_total", &[]), 0.0);
    assert_eq!(metric(&scrape, "callcat_webhook_requests_total", &[]), 0.0);

    // The call was dialed when it was due (the clock stood still): one
    // observation of 0 s, so every bucket holds it.
    let lag = histogram(&scrape, "callcat_dial_lag_seconds");
    assert_eq!(lag.count, Some(1));
    assert_eq!(lag.sum.map(|s| s.as_f64()), Some(0.0));
    let bounds: Vec<f64> = lag.buckets.iter().map(|b| b.upper_bound).collect();
    let mut expected = callcat_server::metrics::LAG_BUCKETS.to_vec();
    expected.push(f64::INFINITY);
    assert_eq!(bounds, expected);
    assert!(
        lag.buckets.iter().all(|b| b.count.as_f64() == 1.0),
        "{lag:?}"
    );

    // HTTP responses by route pattern and status, never by raw path.
    let http = |route: &str, status: &str| {
        metric(
            &scrape,
            "callcat_http_responses_total",
            &[("route", route), ("status", status)],
        )
    };
    assert_eq!(http("/healthz", "200"), 2.0);
    assert_eq!(http("/api/calls", "201"), 1.0);
    assert_eq!(http("/api/calls/{callId}", "404"), 1.0);
    assert!(
        http("/api/calls/{callId}", "200") >= 3.0,
        "the status polls"
    );
    assert_eq!(http("unmatched", "404"), 1.0);
    // Counted after it answered: the earlier scrapes, not this one.
    assert!(http("/metrics", "200") >= 1.0);
    let routes: Vec<String> = series(&scrape, "callcat_http_responses_total", &[])
        .iter()
        .filter_map(|x| {
            x.get_labelset()
                .ok()?
                .get_label_value("route")
                .map(str::to_owned)
        })
        .collect();
    assert!(
        routes
            .iter()
            .all(|r| !r.contains(&id) && !r.contains("01a1fd92")),
        "no raw path is a label: {routes:?}"
    );

    for family in [
        "callcat_dials_total",
        "callcat_call_outcomes_total",
        "callcat_active_calls",
        "callcat_dial_lag_seconds",
        "callcat_http_responses_total",
        "callcat_bus_lagged_total",
    ] {
        let f = scrape
            .families
            .get(family)
            .unwrap_or_else(|| panic!("{family} is missing"));
        assert!(!f.help.is_empty(), "{family} has no HELP");
    }
    s.stop().await;

    // With tenant labels enabled, the active gauge is also given per tenant.
    let mut config = test_config();
    config.metrics_tenant_labels = true;
    let s = TestServer::start_with(config, |b| b.simulator_config(common::short_simulator())).await;
    let ada = s.token("ada");
    let id = s.create_call(&ada, json!({}), 3).await;
    s.wait_status(&ada, &id, "RINGING").await;
    let scrape = s.scrape().await;
    assert_eq!(
        metric(
            &scrape,
            "callcat_active_calls_by_tenant",
            &[("tenant", "acme")]
        ),
        1.0
    );
    assert_eq!(metric(&scrape, "callcat_active_calls", &[]), 1.0);
    s.stop().await;
}
