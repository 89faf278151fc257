//! `decision-gate.toml`: the data directory, the engine settings and which built-in providers
//! are switched on. The file is read from `--config` or `DECISION_GATE_CONFIG`; unknown keys are
//! refused with their path, and relative paths are resolved against the file's directory. The
//! `time` provider is always on; `env`, `json` and `http` are on when their section is present.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use decision_gate_core::EngineConfig;
use decision_gate_core::engine::from_json_value;
use decision_gate_core::providers::{
    EnvConfig, EnvProvider, HttpConfig, HttpProvider, JsonConfig, JsonProvider, TimeConfig,
    TimeProvider,
};
use decision_gate_core::{EvidenceProvider, ProviderRegistry};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::output::{Output, UsageError};

/// The environment variable naming the configuration file.
pub(crate) const CONFIG_ENV: &str = "DECISION_GATE_CONFIG";

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// Where the database, evidence and runpacks live.
    pub(crate) data_dir: Option<PathBuf>,
    /// Engine settings: logic mode, trust, anchors, limits.
    pub(crate) engine: EngineConfig,
    /// Built-in providers.
    pub(crate) providers: Providers,
}

/// Built-in provider sections; a present section switches the provider on.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Providers {
    pub(crate) time: TimeConfig,
    pub(crate) env: Option<EnvConfig>,
    pub(crate) json: Option<JsonConfig>,
    pub(crate) http: Option<HttpConfig>,
}

/// One configuration problem: the key's path and what is wrong.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) path: String,
    pub(crate) message: String,
}

/// Reads and checks a configuration file: every problem, or the config and its providers.
pub(crate) fn load(
    file: &Path,
) -> anyhow::Result<Result<(Config, ProviderRegistry), Vec<Problem>>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(e) => {
            return Ok(Err(vec![Problem {
                path: "$".into(),
                message: e.to_string().trim().to_owned(),
            }]));
        }
    };
    let value = serde_json::to_value(table).context("converting the configuration")?;
    let mut config: Config = match from_json_value(value) {
        Ok(config) => config,
        Err(e) => {
            return Ok(Err(vec![Problem {
                path: e.path,
                message: e.rule,
            }]));
        }
    };
    let base = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    if let Some(dir) = config.data_dir.as_mut() {
        resolve(dir);
    }
    if let Some(json) = config.providers.json.as_mut() {
        resolve(&mut json.root);
    }
    let mut problems = Vec::new();
    let limits = &config.engine.limits;
    for (key, value) in [
        (
            "engine.limits.max_evidence_bytes",
            limits.max_evidence_bytes,
        ),
        ("engine.limits.max_payload_bytes", limits.max_payload_bytes),
        ("engine.limits.max_spec_bytes", limits.max_spec_bytes),
        ("engine.limits.max_schema_bytes", limits.max_schema_bytes),
    ] {
        if value == 0 {
            problems.push(Problem {
                path: key.into(),
                message: "must be at least 1".into(),
            });
        }
    }
    let mut registry = ProviderRegistry::new();
    let mut add = |path: &str, provider: anyhow::Result<Arc<dyn EvidenceProvider>>| match provider {
        Ok(provider) => {
            if let Err(e) = registry.register(provider) {
                problems.push(Problem {
                    path: path.into(),
                    message: e.to_string(),
                });
            }
        }
        Err(e) => problems.push(Problem {
            path: path.into(),
            message: format!("{e:#}"),
        }),
    };
    add(
        "providers.time",
        Ok(Arc::new(TimeProvider::new(config.providers.time.clone()))),
    );
    if let Some(env) = &config.providers.env {
        add("providers.env", Ok(Arc::new(EnvProvider::new(env.clone()))));
    }
    if let Some(json) = &config.providers.json {
        add(
            "providers.json",
            JsonProvider::new(json.clone())
                .map(|p| Arc::new(p) as Arc<dyn EvidenceProvider>)
                .map_err(Into::into),
        );
    }
    if let Some(http) = &config.providers.http {
        add(
            "providers.http",
            HttpProvider::new(http.clone())
                .map(|p| Arc::new(p) as Arc<dyn EvidenceProvider>)
                .map_err(Into::into),
        );
    }
    Ok(if problems.is_empty() {
        Ok((config, registry))
    } else {
        Err(problems)
    })
}

/// `decision-gate config check`.
pub(crate) fn check(out: &Output, file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let file = file
        .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .ok_or_else(|| {
            UsageError(format!(
                "no configuration file: pass --config FILE or set {CONFIG_ENV}"
            ))
        })?;
    match load(&file)? {
        Ok((config, registry)) => {
            let providers: Vec<String> = registry
                .contracts()
                .map(|c| c.provider_id.to_string())
                .collect();
            out.document(&json!({"file": file.display().to_string(), "status": "ok", "providers": providers, "config": config}));
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
