//! `decision-gate quickstart`: the bundled example end to end on SQLite. The run's gate needs a
//! CI report (read by the `json` provider from the data directory) saying `passed`, and a
//! trigger time after the freeze (the `time` provider). The first trigger holds; once the report
//! passes, the run advances and discloses the release notes; then it completes, is exported as a
//! runpack, and the runpack is verified with every decision replayed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use decision_gate_core::runpack::{DirReader, VerifyOptions};
use decision_gate_core::{
    NamespaceId, NextRequest, RequestContext, StartRequest, TenantId, Timestamp, TriggerResult,
};
use serde_json::json;

use crate::output::Output;
use crate::runpack::{print_report, report_json};
use crate::setup;

const SPEC: &str = include_str!("../../../../examples/scenarios/quickstart.json");

fn describe(result: &TriggerResult) -> String {
    let outcome = serde_json::to_value(&result.decision.outcome).unwrap_or_default();
    let packets: Vec<String> = result
        .packets
        .iter()
        .map(|p| p.envelope.packet_id.to_string())
        .collect();
    format!(
        "{}: {} -> status {}, packets {packets:?}",
        result.decision.decision_id,
        outcome,
        result.status.as_str()
    )
}

pub(crate) async fn run(out: &Output, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let (gate, store) = setup::service(data_dir).await?;
    let ctx = RequestContext::local(TenantId::new(1)?, NamespaceId::new(1)?);
    let report_file = setup::evidence_dir(data_dir).join("ci/report.json");
    std::fs::create_dir_all(report_file.parent().context("report dir")?)?;
    let write_report =
        |status: &str| std::fs::write(&report_file, json!({"status": status}).to_string());

    let defined = gate.define_scenario_json(&ctx, SPEC).await?;
    out.line(format!(
        "defined scenario {} ({}:{})",
        defined.scenario_id, defined.spec_hash.algorithm, defined.spec_hash.value
    ));
    // Each quickstart makes a new run in the same data directory.
    let mut n = 1;
    let run_id = loop {
        let candidate = format!("quickstart-{n}");
        match gate
            .status(&ctx, &defined.scenario_id, &candidate.parse()?)
            .await
        {
            Err(e) if e.kind() == "not_found" => break candidate,
            Err(e) => return Err(e.into()),
            Ok(_) => n += 1,
        }
    };
    let start = StartRequest {
        scenario_id: defined.scenario_id.clone(),
        run_id: run_id.parse()?,
        dispatch_targets: vec![],
        started_at: Timestamp::Logical(0),
    };
    let started = gate.start_run(&ctx, start).await?;
    out.line(format!(
        "started run {run_id} in stage {}",
        started.run.current_stage_id
    ));

    let steps: [(u64, &str); 3] = [(1, "running"), (3, "passed"), (4, "passed")];
    let progress = out.progress(steps.len() as u64 + 2, "quickstart");
    let mut decisions = Vec::new();
    for (time, ci_status) in steps {
        write_report(ci_status)?;
        let next = NextRequest {
            scenario_id: defined.scenario_id.clone(),
            run_id: run_id.parse()?,
            trigger_id: format!("t{time}").parse()?,
            agent_id: "quickstart-agent".into(),
            time: Timestamp::Logical(time),
        };
        let result = gate.next(&ctx, next).await?;
        out.line(format!(
            "time {time}, CI {ci_status}: {}",
            describe(&result)
        ));
        decisions.push(json!({"time": time, "ci": ci_status, "decision": result.decision, "status": result.status}));
        progress.inc(1);
    }

    let export = gate
        .export_runpack(
            &ctx,
            &defined.scenario_id,
            &run_id.parse()?,
            Timestamp::Logical(10),
        )
        .await?;
    let dir = store.runpack_dir(&export.key);
    out.line(format!("exported the runpack to {}", dir.display()));
    progress.inc(1);
    let report = decision_gate_core::runpack::verify(
        &DirReader::new(&dir),
        &VerifyOptions {
            replay: true,
            ..VerifyOptions::default()
        },
    );
    progress.finish_and_clear();
    print_report(out, &dir, &report);
    out.document(&json!({
        "status": if report.passed() { "pass" } else { "fail" },
        "run_id": run_id,
        "decisions": decisions,
        "runpack": dir.display().to_string(),
        "root_hash": export.manifest.integrity.root_hash,
        "verification": report_json(&dir, &report),
    }));
    if report.passed() {
        out.line(format!(
            "verify it yourself: decision-gate runpack verify --replay {}",
            dir.display()
        ));
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
