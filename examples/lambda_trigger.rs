//! A serverless trigger, in the shape of seeds 000 and 003 (EventBridge → Lambda,
//! pg_cron → edge function), built on `Scheduler::tick` and `Scheduler::dispatch`.
//!
//! `handle` is what a Lambda (or any function runtime) would call with the
//! trigger's JSON payload: `{"callId": "..."}` dispatches that call if it is still
//! due and claimable (a duplicated trigger does nothing), `{}` claims and dials
//! everything due now. `main` runs it against in-memory storage and the simulator:
//!
//! ```sh
//! cargo run --example lambda_trigger
//! ```

use std::sync::Arc;

use callcat::{
    CallService, CallTemplate, InMemoryCallStore, NewCall, Owner, PhoneNumber, Scheduler,
    Simulator, SimulatorConfig, SystemClock, Wakeup,
};

/// The function body: one trigger payload in, a JSON report out.
async fn handle(
    scheduler: &Scheduler,
    payload: &serde_json::Value,
) -> callcat::Result<serde_json::Value> {
    match payload.get("callId").and_then(|v| v.as_str()) {
        Some(id) => {
            let result = scheduler.dispatch(id.parse()?).await?;
            Ok(serde_json::json!({ "callId": id, "result": format!("{result:?}") }))
        }
        None => {
            let report = scheduler.tick().await?;
            Ok(serde_json::json!({
                "claimed": report.claimed,
                "dialed": report.dialed,
                "deferred": report.deferred,
                "retrying": report.retrying,
                "failed": report.failed,
                "expired": report.expired,
            }))
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> callcat::Result<()> {
    let clock = Arc::new(SystemClock);
    let store = Arc::new(InMemoryCallStore::new());
    let provider = Arc::new(Simulator::new(clock.clone(), SimulatorConfig::default()));
    let scheduler = Scheduler::builder()
        .store(store.clone())
        .provider(provider)
        .clock(clock.clone())
        .build()?;
    let service = CallService::new(store, clock, Wakeup::new());

    let number = PhoneNumber::parse("+14155552671")
        .map_err(|e| callcat::Error::validation("phoneNumber", e.to_string()))?;
    let owner = Owner::new("acme", "user-1");
    let a = service
        .create(
            &owner,
            NewCall::new(CallTemplate::new(
                "Ada",
                number.clone(),
                "Reminder",
                "Remind Ada of her appointment.",
            )),
        )
        .await?
        .into_call();
    let b = service
        .create(
            &Owner::new("acme", "user-2"),
            NewCall::new(CallTemplate::new("Bob", number, "Reminder", "Remind Bob.")),
        )
        .await?
        .into_call();

    // EventBridge may deliver the same event twice: the second dispatch is a no-op.
    let trigger = serde_json::json!({ "callId": a.id.to_string() });
    println!("{}", handle(&scheduler, &trigger).await?);
    println!("{}", handle(&scheduler, &trigger).await?);
    // A cron-style sweep picks up everything else that is due.
    println!("{}", handle(&scheduler, &serde_json::json!({})).await?);
    println!("call {} and call {} were each dialed once", a.id, b.id);
    Ok(())
}
