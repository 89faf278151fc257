//! The storage conformance suites, stamped onto both open-source backends.

mod memory {
    use std::sync::Arc;

    use decision_gate_core::MemoryStore;

    async fn fresh() -> Arc<MemoryStore> {
        Arc::new(MemoryStore::default())
    }

    decision_gate_core::scenario_store_conformance!(fresh);
    decision_gate_core::run_store_conformance!(fresh);
    decision_gate_core::schema_registry_conformance!(fresh);
}

mod sqlite {
    use std::sync::Arc;

    use decision_gate_core::SqliteStore;

    /// A store in a fresh file; the directory is leaked for the test's lifetime on purpose, so
    /// the database outlives the factory.
    async fn fresh() -> Arc<SqliteStore> {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        Arc::new(
            SqliteStore::open(dir.join("dg.db"))
                .await
                .expect("open sqlite"),
        )
    }

    decision_gate_core::scenario_store_conformance!(fresh);
    decision_gate_core::run_store_conformance!(fresh);
    decision_gate_core::schema_registry_conformance!(fresh);
}

mod runpack_memory {
    use std::sync::Arc;

    use decision_gate_core::runpack::MemoryRunpackStore;

    async fn fresh() -> Arc<MemoryRunpackStore> {
        Arc::new(MemoryRunpackStore::default())
    }

    decision_gate_core::runpack_store_conformance!(fresh);
}

mod runpack_fs {
    use std::sync::Arc;

    use decision_gate_core::runpack::FsRunpackStore;

    /// A store in a fresh directory, kept for the test's lifetime.
    async fn fresh() -> Arc<FsRunpackStore> {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        Arc::new(FsRunpackStore::open(dir.join("runpacks")).expect("open the store"))
    }

    decision_gate_core::runpack_store_conformance!(fresh);
}
