//! The composition root of the open-source server, and the only one of this binary: a checked
//! configuration becomes a server on SQLite (or memory) and the filesystem, with the JSON-lines
//! audit trail and the authentication `server.auth` describes.

use std::sync::Arc;

use decision_gate_core::access::JsonLinesAuditSink;
use decision_gate_core::runpack::{FsRunpackStore, MemoryRunpackStore};
use decision_gate_core::{MemoryStore, SqliteStore};
use decision_gate_mcp::config::StoreKind;
use decision_gate_mcp::{DataDir, Loaded, ServeError, Server, auth};

fn storage(what: impl std::fmt::Display) -> impl FnOnce(String) -> ServeError {
    let what = what.to_string();
    move |message| ServeError::Storage { what, message }
}

/// Opens the stores (under `data_dir`, created if missing, unless the configuration keeps them
/// in memory) and the audit file (`server.audit.path`, else under `data_dir`), and builds the
/// server.
///
/// # Errors
/// [`ServeError::Storage`] when the directory, database, runpack store or audit file cannot be
/// opened.
pub(crate) async fn open(loaded: Loaded, data_dir: &DataDir) -> Result<Server, ServeError> {
    decision_gate_core::at_rest::create_private_dir_all(data_dir.path())
        .map_err(|e| e.to_string())
        .map_err(storage(data_dir.path().display()))?;
    let config = &loaded.config;
    let audit_path = config
        .server
        .audit
        .path
        .clone()
        .unwrap_or_else(|| data_dir.audit());
    let audit = Arc::new(
        JsonLinesAuditSink::open(&audit_path)
            .map_err(|e| e.to_string())
            .map_err(storage(audit_path.display()))?,
    );
    let authenticate = auth::from_config(&config.server.auth);
    let store = config.store.clone();
    let builder = Server::builder(loaded)
        .audit_sink(audit.clone())
        .authenticate(authenticate)
        .digest_key_file(data_dir)?;
    let builder = match store.kind {
        StoreKind::Sqlite => {
            // The store writes the audit events of its run writes to the same file, in the
            // same group commit (ADR 0012).
            let store = SqliteStore::open_with_trail(
                data_dir.database(),
                store.sqlite().group_commit,
                audit,
            )
            .await
            .map_err(|e| e.to_string())
            .map_err(storage(data_dir.database().display()))?;
            let runpacks = FsRunpackStore::open(data_dir.runpacks())
                .map_err(|e| e.to_string())
                .map_err(storage(data_dir.runpacks().display()))?;
            builder
                .store(Arc::new(store))
                .runpack_store(Arc::new(runpacks))
        }
        StoreKind::Memory => builder
            .store(Arc::new(MemoryStore::default()))
            .runpack_store(Arc::new(MemoryRunpackStore::default())),
    };
    builder.build()
}
