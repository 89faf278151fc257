//! The open-source defaults a data directory gets: SQLite for state, a filesystem runpack
//! store, and the built-in `time`, `env` and `json` providers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use decision_gate_core::providers::{
    EnvConfig, EnvProvider, HttpConfig, HttpProvider, JsonConfig, JsonProvider, TimeConfig,
    TimeProvider,
};
use decision_gate_core::runpack::FsRunpackStore;
use decision_gate_core::{DecisionGate, ProviderRegistry, SqliteStore};

/// Files the `json` provider reads, under the data directory.
pub(crate) fn evidence_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("evidence")
}

/// Runpacks, under the data directory.
pub(crate) fn runpack_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("runpacks")
}

fn json_provider(root: &Path) -> anyhow::Result<JsonProvider> {
    let config = JsonConfig {
        root: root.to_path_buf(),
        root_id: "evidence".into(),
        max_bytes: 1024 * 1024,
        allow_yaml: true,
    };
    Ok(JsonProvider::new(config)?)
}

/// A registry of every built-in provider, for validating specs; the `json` provider reads under
/// `json_root`.
pub(crate) fn builtin_providers(json_root: &Path) -> anyhow::Result<ProviderRegistry> {
    let mut registry = ProviderRegistry::new();
    registry.register(Arc::new(TimeProvider::new(TimeConfig::default())))?;
    registry.register(Arc::new(EnvProvider::new(EnvConfig::default())))?;
    registry.register(Arc::new(json_provider(json_root)?))?;
    registry.register(Arc::new(HttpProvider::new(HttpConfig::default())?))?;
    Ok(registry)
}

/// The service over a data directory, created if missing.
pub(crate) async fn service(
    data_dir: &Path,
) -> anyhow::Result<(DecisionGate, Arc<FsRunpackStore>)> {
    let evidence = evidence_dir(data_dir);
    std::fs::create_dir_all(&evidence)
        .with_context(|| format!("creating {}", evidence.display()))?;
    let store = SqliteStore::open(data_dir.join("decision-gate.db"))
        .await
        .context("opening the SQLite store")?;
    let runpacks = Arc::new(FsRunpackStore::open(runpack_dir(data_dir))?);
    let gate = DecisionGate::builder()
        .provider(Arc::new(TimeProvider::new(TimeConfig::default())))?
        .provider(Arc::new(EnvProvider::new(EnvConfig::default())))?
        .provider(Arc::new(json_provider(&evidence)?))?
        .store(Arc::new(store))
        .runpack_store(runpacks.clone())
        .build();
    Ok((gate, runpacks))
}
