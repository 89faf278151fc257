//! `decision-gate config check`: reads a configuration file the way `serve` does and reports
//! every problem by key path.

use std::path::PathBuf;
use std::process::ExitCode;

use decision_gate_mcp::config::{self, CONFIG_ENV};
use serde_json::json;

use crate::output::{Output, UsageError};

/// The configuration file: `--config`, else `$DECISION_GATE_CONFIG`.
pub(crate) fn file(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
}

/// `decision-gate config check`.
pub(crate) fn check(out: &Output, flag: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let file = file(flag).ok_or_else(|| {
        UsageError(format!(
            "no configuration file: pass --config FILE or set {CONFIG_ENV}"
        ))
    })?;
    match config::load(&file) {
        Ok(loaded) => {
            let providers: Vec<String> = loaded
                .providers
                .contracts()
                .map(|c| c.provider_id.to_string())
                .collect();
            out.document(&json!({"file": file.display().to_string(), "status": "ok", "providers": providers, "config": loaded.config}));
            out.line(format!(
                "{}: ok (providers: {})",
                file.display(),
                providers.join(", ")
            ));
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            let listed: Vec<_> = problems
                .iter()
                .map(|p| json!({"path": p.path, "message": p.message}))
                .collect();
            out.document(
                &json!({"file": file.display().to_string(), "status": "invalid", "errors": listed}),
            );
            for p in &problems {
                out.line(format!("{}: {}: {}", file.display(), p.path, p.message));
            }
            Ok(ExitCode::from(1))
        }
    }
}
