//! What the commands that work on a data directory open: the server's composition root
//! (`compose::open`) with the defaults plus a `json` provider reading `<data-dir>/evidence`,
//! and a registry of every built-in provider for validating specs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use decision_gate_core::ProviderRegistry;
use decision_gate_core::providers::{
    EnvConfig, EnvProvider, HttpConfig, HttpProvider, JsonConfig, JsonProvider, TimeConfig,
    TimeProvider,
};
use decision_gate_core::runpack::{FsRunpackStore, SigningKey};
use decision_gate_core::store::RunpackKey;
use decision_gate_mcp::{DataDir, Server, config};

/// Files the `json` provider reads, under the data directory.
pub(crate) fn evidence_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("evidence")
}

/// The directory a stored runpack lives in.
pub(crate) fn runpack_dir(data_dir: &Path, key: &RunpackKey) -> anyhow::Result<PathBuf> {
    Ok(FsRunpackStore::open(DataDir::new(data_dir).runpacks())?.runpack_dir(key))
}

/// A registry of every built-in provider, for validating specs; the `json` provider reads under
/// `json_root`.
pub(crate) fn builtin_providers(json_root: &Path) -> anyhow::Result<ProviderRegistry> {
    let mut registry = ProviderRegistry::new();
    registry.register(Arc::new(TimeProvider::new(TimeConfig::default())))?;
    registry.register(Arc::new(EnvProvider::new(EnvConfig::default())))?;
    registry.register(Arc::new(JsonProvider::new(JsonConfig {
        root: json_root.to_path_buf(),
        root_id: "evidence".into(),
        max_bytes: 1024 * 1024,
        allow_yaml: true,
    })?))?;
    registry.register(Arc::new(HttpProvider::new(HttpConfig::default())?))?;
    Ok(registry)
}

/// The server over a data directory (created if missing), not yet serving; `signer` signs the
/// runpacks it exports.
pub(crate) async fn server(data_dir: &Path, signer: Option<SigningKey>) -> anyhow::Result<Server> {
    let evidence = evidence_dir(data_dir);
    std::fs::create_dir_all(&evidence)
        .with_context(|| format!("creating {}", evidence.display()))?;
    // The root is relative to the data directory, the base `parse` resolves it against: a
    // relative data directory joined here as well would be joined twice.
    let text = "[providers.env]\n[providers.json]\nroot = \"evidence\"\nroot_id = \"evidence\"\n";
    let mut loaded = config::parse(text, data_dir).map_err(|problems| {
        anyhow!(
            "data directory configuration: {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    loaded.runpack_signer = signer;
    Ok(crate::compose::open(loaded, &DataDir::new(data_dir)).await?)
}
