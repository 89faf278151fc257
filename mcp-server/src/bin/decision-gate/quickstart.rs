//! `decision-gate quickstart`: the bundled example end to end through the MCP server, on
//! SQLite. The server runs in this process and an MCP client talks to it over an in-memory
//! pipe with the same protocol an agent uses on stdio. The run's gate needs a CI report (read by
//! the `json` provider from the data directory) saying `passed`, and a trigger time after the
//! freeze (the `time` provider). The first trigger holds; once the report passes, the run
//! advances and discloses the release notes; then it completes, is exported as a runpack, and the
//! runpack is verified with every decision replayed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use decision_gate_core::run::RunKey;
use decision_gate_core::runpack::{DirReader, VerifyOptions};
use decision_gate_core::store::RunpackKey;
use decision_gate_core::{NamespaceId, TenantId};
use decision_gate_mcp::caller::Transport;
use decision_gate_mcp::handler::McpHandler;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};

use crate::output::Output;
use crate::runpack::{print_report, report_json};
use crate::setup;

const SPEC: &str = include_str!("../../../../examples/scenarios/quickstart.json");

type Client = RunningService<RoleClient, ()>;

/// Calls a tool; a tool error becomes an error naming its kind.
async fn call(client: &Client, tool: &str, arguments: Value) -> anyhow::Result<Value> {
    let Value::Object(arguments) = arguments else {
        return Err(anyhow!("{tool}: arguments must be an object"));
    };
    let result = client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .with_context(|| format!("calling {tool}"))?;
    let value = result.structured_content.unwrap_or(Value::Null);
    if result.is_error == Some(true) {
        return Err(anyhow!("{tool}: {}", value["error"]["message"]));
    }
    Ok(value)
}

fn describe(result: &Value) -> String {
    let packets: Vec<&str> = result["packets"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["envelope"]["packet_id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{}: {} -> status {}, packets {packets:?}",
        result["decision"]["decision_id"].as_str().unwrap_or("-"),
        result["decision"]["outcome"],
        result["status"].as_str().unwrap_or("-")
    )
}

/// The quickstart's server in this process, and a client connected to it over an in-memory
/// pipe.
async fn start(data_dir: &Path) -> anyhow::Result<Client> {
    let server = setup::server(data_dir, None).await?;
    let handler = McpHandler::new(server.shared().clone(), Transport::Stdio);
    let (client_end, server_end) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        match handler.serve(tokio::io::split(server_end)).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => tracing::error!("quickstart server: {e}"),
        }
    });
    Ok(().serve(tokio::io::split(client_end)).await?)
}

pub(crate) async fn run(out: &Output, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let client = start(data_dir).await?;
    let report_file = setup::evidence_dir(data_dir).join("ci/report.json");
    std::fs::create_dir_all(report_file.parent().context("report dir")?)?;
    let write_report =
        |status: &str| std::fs::write(&report_file, json!({"status": status}).to_string());

    let spec: Value = serde_json::from_str(SPEC)?;
    let defined = call(&client, "scenario_define", json!({ "spec": spec })).await?;
    let scenario = defined["scenario_id"]
        .as_str()
        .unwrap_or("quickstart")
        .to_owned();
    out.line(format!(
        "defined scenario {scenario} ({}:{}) through the MCP server",
        defined["spec_hash"]["algorithm"].as_str().unwrap_or("-"),
        defined["spec_hash"]["value"].as_str().unwrap_or("-")
    ));
    let scope = |run_id: &str| json!({ "run_id": run_id, "tenant_id": 1, "namespace_id": 1 });
    // Each quickstart makes a new run in the same data directory.
    let mut n = 1;
    let run_id = loop {
        let candidate = format!("quickstart-{n}");
        let status = call(
            &client,
            "scenario_status",
            json!({ "scenario_id": scenario, "request": scope(&candidate) }),
        )
        .await;
        match status {
            Err(e) if e.to_string().contains("not found") => break candidate,
            Err(e) => return Err(e),
            Ok(_) => n += 1,
        }
    };
    let started = call(
        &client,
        "scenario_start",
        json!({
            "scenario_id": scenario,
            "run_config": { "tenant_id": 1, "namespace_id": 1, "run_id": run_id },
            "started_at": { "kind": "logical", "value": 0 },
        }),
    )
    .await?;
    out.line(format!(
        "started run {run_id} in stage {}",
        started["current_stage_id"].as_str().unwrap_or("-")
    ));

    let steps: [(u64, &str); 3] = [(1, "running"), (3, "passed"), (4, "passed")];
    let progress = out.progress(steps.len() as u64 + 2, "quickstart");
    let mut decisions = Vec::new();
    for (time, ci_status) in steps {
        write_report(ci_status)?;
        let mut request = scope(&run_id);
        request["trigger_id"] = json!(format!("t{time}"));
        request["agent_id"] = json!("quickstart-agent");
        request["time"] = json!({ "kind": "logical", "value": time });
        let result = call(
            &client,
            "scenario_next",
            json!({ "scenario_id": scenario, "request": request }),
        )
        .await?;
        out.line(format!(
            "time {time}, CI {ci_status}: {}",
            describe(&result)
        ));
        decisions.push(json!({"time": time, "ci": ci_status, "decision": result["decision"], "status": result["status"]}));
        progress.inc(1);
    }

    let export = call(
        &client,
        "runpack_export",
        json!({
            "tenant_id": 1, "namespace_id": 1, "scenario_id": scenario, "run_id": run_id,
            "generated_at": { "kind": "logical", "value": 10 },
        }),
    )
    .await?;
    let export_id = export["export_id"]
        .as_str()
        .context("the export has no id")?;
    let key = RunpackKey {
        run: RunKey {
            tenant_id: TenantId::DEFAULT,
            namespace_id: NamespaceId::DEFAULT,
            run_id: run_id.parse()?,
        },
        export_id: export_id.to_owned(),
    };
    let dir = setup::runpack_dir(data_dir, &key)?;
    out.line(format!("exported the runpack to {}", dir.display()));
    progress.inc(1);
    // Verified offline from the files, replaying every decision, as anyone holding them can.
    let report = decision_gate_core::runpack::verify(
        &DirReader::new(&dir),
        &VerifyOptions {
            replay: true,
            ..VerifyOptions::default()
        },
    );
    progress.finish_and_clear();
    client.cancel().await.ok();
    print_report(out, &dir, &report);
    out.document(&json!({
        "status": if report.passed() { "pass" } else { "fail" },
        "run_id": run_id,
        "decisions": decisions,
        "runpack": dir.display().to_string(),
        "root_hash": export["manifest"]["integrity"]["root_hash"],
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
