//! `decision-gate scenario validate`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use decision_gate_core::engine::{Limits, parse_json, validate_spec};
use decision_gate_core::spec::ScenarioSpec;
use serde_json::json;

use crate::output::Output;
use crate::setup::builtin_providers;

pub(crate) fn validate(out: &Output, file: &Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let limits = Limits::default();
    // The json provider's contract does not depend on its root; the spec's directory stands in.
    let registry = builtin_providers(
        file.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    let errors = match parse_json::<ScenarioSpec>(&text, limits.max_spec_bytes) {
        Err(e) => vec![e],
        Ok(spec) => validate_spec(&spec, None, Some(&registry), &limits),
    };
    out.document(&json!({
        "file": file.display().to_string(),
        "status": if errors.is_empty() { "valid" } else { "invalid" },
        "errors": errors.iter().map(|e| json!({"path": e.path, "rule": e.rule})).collect::<Vec<_>>(),
    }));
    if errors.is_empty() {
        out.line(format!("{}: valid", file.display()));
        return Ok(ExitCode::SUCCESS);
    }
    for e in &errors {
        out.line(format!("{}: {}: {}", file.display(), e.path, e.rule));
    }
    Ok(ExitCode::from(1))
}
