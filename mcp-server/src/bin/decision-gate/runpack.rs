//! `decision-gate runpack export | verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use decision_gate_core::runpack::{self, DirReader, VerifyOptions, VerifyReport};
use decision_gate_core::{NamespaceId, RequestContext, TenantId, Timestamp};
use serde_json::json;

use decision_gate_mcp::{Loaded, config};

use crate::output::{Output, UsageError};
use crate::setup;

/// The `[runpacks]` settings of the configuration file, if one is named.
fn runpacks_config(flag: Option<PathBuf>) -> anyhow::Result<Option<Loaded>> {
    let Some(file) = crate::config::file(flag) else {
        return Ok(None);
    };
    config::load(&file).map(Some).map_err(|problems| {
        UsageError(format!("{}: {}", file.display(), config::joined(&problems))).into()
    })
}

pub(crate) async fn export(
    out: &Output,
    data_dir: &Path,
    (tenant, namespace): (u64, u64),
    (scenario, run): (&str, &str),
    generated_at: Option<i64>,
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let signer = runpacks_config(config)?.and_then(|loaded| loaded.runpack_signer);
    let server = setup::server(data_dir, signer).await?;
    let gate = &server.shared().gate;
    let usage =
        |e: decision_gate_core::ids::IdError, flag: &str| UsageError(format!("{flag}: {e}"));
    let ctx = RequestContext::local(
        TenantId::new(tenant).map_err(|e| usage(e, "--tenant"))?,
        NamespaceId::new(namespace).map_err(|e| usage(e, "--namespace"))?,
    );
    // The export time is recorded, never decided on, so the CLI may read the clock for it.
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    let generated_at = Timestamp::UnixMillis(match generated_at {
        Some(ms) => ms,
        None => now()?,
    });
    let export = gate
        .export_runpack(&ctx, &scenario.parse()?, &run.parse()?, generated_at, None)
        .await?;
    let dir = setup::runpack_dir(data_dir, &export.key)?;
    out.document(&json!({"status": "exported", "dir": dir.display().to_string(), "manifest": export.manifest}));
    out.line(format!("exported run {run} to {}", dir.display()));
    out.line(format!(
        "root hash {}:{}",
        export.manifest.hash_algorithm, export.manifest.integrity.root_hash.value
    ));
    Ok(ExitCode::SUCCESS)
}

/// Verifies a runpack directory and reports; the exit code says whether it passed.
pub(crate) fn verify(
    out: &Output,
    dir: &Path,
    replay: bool,
    trusted_keys: &[String],
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let mut trusted_keys = trusted_keys
        .iter()
        .map(|hex_key| {
            let bytes: [u8; 32] = hex::decode(hex_key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| UsageError("--trusted-key must be 64 hex digits".into()))?;
            ed25519_key(&bytes)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(loaded) = runpacks_config(config)? {
        trusted_keys.extend(loaded.runpack_verify.trusted_keys);
    }
    let progress = out.progress(1, "verifying");
    let report = runpack::verify(
        &DirReader::new(dir),
        &VerifyOptions {
            replay,
            trusted_keys,
        },
    );
    progress.finish_and_clear();
    out.document(&report_json(dir, &report));
    print_report(out, dir, &report);
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn ed25519_key(bytes: &[u8; 32]) -> anyhow::Result<runpack::VerifyingKey> {
    runpack::VerifyingKey::from_bytes(bytes)
        .context("--trusted-key is not a valid ed25519 public key")
}

/// A verification report as JSON.
pub(crate) fn report_json(dir: &Path, report: &VerifyReport) -> serde_json::Value {
    json!({
        "dir": dir.display().to_string(),
        "status": if report.passed() { "pass" } else { "fail" },
        "checked_files": report.checked_files,
        "replayed": report.replayed,
        "failures": report.failures,
    })
}

/// A verification report as text lines.
pub(crate) fn print_report(out: &Output, dir: &Path, report: &VerifyReport) {
    let how = if report.replayed {
        ", every decision replayed"
    } else {
        ""
    };
    if report.passed() {
        out.line(format!(
            "PASS {}: {} files verified{how}",
            dir.display(),
            report.checked_files
        ));
    } else {
        out.line(format!(
            "FAIL {}: {} failed checks",
            dir.display(),
            report.failures.len()
        ));
        for failure in &report.failures {
            out.line(format!("  {failure}"));
        }
    }
}
