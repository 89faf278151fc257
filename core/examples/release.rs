//! Runs the bundled release scenario end to end on the embedded SQLite store and prints every
//! decision: a hold while the build is unknown, an advance once it passed (disclosing the
//! release-notes packet), then completion.
//!
//! ```text
//! cargo run -p decision-gate-core --example release [DATA_DIR]
//! ```
//!
//! The database lives in `DATA_DIR` (default `./dg-data`); each invocation starts a new run in it.

use std::error::Error;
use std::sync::Arc;

use decision_gate_core::{
    DecisionGate, InMemoryEvidence, NamespaceId, NextRequest, RequestContext, SqliteStore,
    StartRequest, TenantId, Timestamp,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let data_dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "dg-data".to_owned());
    std::fs::create_dir_all(&data_dir)?;
    let db = std::path::Path::new(&data_dir).join("decision-gate.db");
    let store = Arc::new(SqliteStore::open(&db).await?);

    // The host program knows whether the build passed; it answers through this provider.
    let ci = Arc::new(InMemoryEvidence::new("ci".parse()?, ["build".parse()?]));
    let gate = DecisionGate::builder()
        .provider(ci.clone())?
        .store(store.clone())
        .build();
    let ctx = RequestContext::local(TenantId::new(1)?, NamespaceId::new(1)?);

    let defined = gate
        .define_scenario_json(&ctx, include_str!("../../examples/scenarios/release.json"))
        .await?;
    println!(
        "scenario {} spec {}:{}",
        defined.scenario_id, defined.spec_hash.algorithm, defined.spec_hash.value
    );

    let run_id = format!("run-{}", next_run_number(&gate, &ctx).await?);
    let start = StartRequest {
        scenario_id: "release".parse()?,
        run_id: run_id.parse()?,
        dispatch_targets: vec![],
        started_at: Timestamp::Logical(0),
    };
    let started = gate.start_run(&ctx, start).await?;
    println!("{run_id}: start in {}", started.run.current_stage_id);

    for (time, build) in [(1, None), (2, Some("passed")), (3, None)] {
        if let Some(status) = build {
            println!("{run_id}: the CI reports build {status}");
            ci.set_json(&"build".parse()?, serde_json::json!(status));
        }
        let next = NextRequest {
            scenario_id: "release".parse()?,
            run_id: run_id.parse()?,
            trigger_id: format!("t{time}").parse()?,
            agent_id: "release-agent".into(),
            time: Timestamp::Logical(time),
        };
        let result = gate.next(&ctx, next).await?;
        let packets: Vec<String> = result
            .packets
            .iter()
            .map(|p| p.envelope.packet_id.to_string())
            .collect();
        println!(
            "{run_id}: {} -> {} (status {}, packets {packets:?})",
            result.decision.decision_id,
            serde_json::to_string(&result.decision.outcome)?,
            result.status.as_str()
        );
    }
    println!("journal stored in {}", db.display());
    store.close().await;
    Ok(())
}

/// The next unused run number in this data directory.
async fn next_run_number(gate: &DecisionGate, ctx: &RequestContext) -> Result<u64, Box<dyn Error>> {
    let mut n = 1;
    loop {
        match gate
            .status(ctx, &"release".parse()?, &format!("run-{n}").parse()?)
            .await
        {
            Err(e) if e.kind() == "not_found" => return Ok(n),
            Err(e) => return Err(e.into()),
            Ok(_) => n += 1,
        }
    }
}
