//! The conformance suites, stamped onto the open-source implementations of every seam.

mod memory {
    use std::sync::Arc;

    use decision_gate_core::MemoryStore;

    async fn fresh() -> Arc<MemoryStore> {
        Arc::new(MemoryStore::default())
    }

    decision_gate_core::scenario_store_conformance!(fresh);
    decision_gate_core::run_store_conformance!(fresh);
    decision_gate_core::schema_registry_conformance!(fresh);

    /// The memory store keeps no ledger: the service hands its effects to the meter and sink.
    async fn effects_fixture() -> decision_gate_core::conformance::EffectsFixture<MemoryStore> {
        decision_gate_core::conformance::EffectsFixture {
            store: fresh().await,
            ledger: None,
        }
    }

    decision_gate_core::effects_conformance!(effects_fixture);
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

    /// The SQLite store keeps no ledger (ADR 0003): the service hands its effects to the meter
    /// and sink.
    async fn effects_fixture() -> decision_gate_core::conformance::EffectsFixture<SqliteStore> {
        decision_gate_core::conformance::EffectsFixture {
            store: fresh().await,
            ledger: None,
        }
    }

    decision_gate_core::effects_conformance!(effects_fixture);
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

    /// A stored file's location names it below the store's directory, never by the host's
    /// absolute path (callers see it in `runpack_export`).
    #[tokio::test]
    async fn locations_are_relative_to_the_data_directory() {
        use decision_gate_core::store::{RunpackKey, RunpackStore as _};
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FsRunpackStore::open(dir.path().join("runpacks")).expect("open");
        let key = RunpackKey {
            run: decision_gate_core::run::RunKey {
                tenant_id: decision_gate_core::TenantId::new(1).expect("tenant"),
                namespace_id: decision_gate_core::NamespaceId::new(2).expect("namespace"),
                run_id: "r".parse().expect("run id"),
            },
            export_id: "e".into(),
        };
        let location = store
            .put_file(&key, "manifest.json", b"{}")
            .await
            .expect("put");
        assert!(location.starts_with("runpacks/"), "{location}");
        assert!(location.ends_with("/manifest.json"), "{location}");
        assert!(
            !location.contains(&*dir.path().to_string_lossy()),
            "{location}"
        );
    }
}

mod scope_authorizer {
    use std::sync::Arc;

    use decision_gate_core::access::{Resource, ScopeAuthorizer};
    use decision_gate_core::conformance::{AuthorizerFixture, AuthzRequest};
    use decision_gate_core::{Action, NamespaceId, RequestContext, TenantId};

    /// A caller scoped to tenant 1, namespace 1 (or, with `namespace_scoped` false, to the
    /// whole tenant) that may read runs and ask for the next decision, acting in `t` / `ns`.
    fn agent(t: u64, ns: u64, namespace_scoped: bool) -> RequestContext {
        let mut ctx = RequestContext::local(
            TenantId::new(t).expect("tenant"),
            NamespaceId::new(ns).expect("namespace"),
        );
        ctx.principal.subject = "agent".into();
        ctx.principal.tenant_id = Some(TenantId::new(1).expect("tenant"));
        ctx.principal.namespace_id =
            namespace_scoped.then(|| NamespaceId::new(1).expect("namespace"));
        ctx.principal.actions = Some([Action::ScenarioStatus, Action::ScenarioNext].into());
        ctx
    }

    async fn fixture() -> AuthorizerFixture {
        let run = Resource::new("run", "r");
        let scenario = Resource::new("scenario", "s");
        let ask =
            |ctx, action, resource: &Resource| AuthzRequest::new(ctx, action, resource.clone());
        AuthorizerFixture {
            authorizer: Arc::new(ScopeAuthorizer),
            allowed: vec![
                ask(agent(1, 1, true), Action::ScenarioNext, &run),
                ask(agent(1, 1, true), Action::ScenarioStatus, &run),
                ask(agent(1, 2, false), Action::ScenarioNext, &run),
            ],
            out_of_scope: vec![
                ask(agent(2, 1, true), Action::ScenarioNext, &run),
                ask(agent(1, 2, true), Action::ScenarioStatus, &run),
                ask(agent(3, 2, false), Action::ScenarioNext, &scenario),
            ],
            denied: vec![
                ask(agent(1, 1, true), Action::ScenarioDefine, &scenario),
                ask(agent(1, 1, true), Action::ScenarioTrigger, &run),
                ask(agent(1, 2, false), Action::RunpackExport, &run),
            ],
            // It decides from the principal alone: nothing it could fail to read.
            undecidable: None,
        }
    }

    decision_gate_core::authorizer_conformance!(fixture);
}

mod usage_memory {
    use std::sync::Arc;

    use decision_gate_core::access::InMemoryUsageMeter;
    use decision_gate_core::conformance::UsageFixture;

    /// A fresh meter, read through its own totals. It has no quotas and decides from memory
    /// alone, so the quota and fail-closed parts of the suite have nothing to run on.
    async fn fixture() -> UsageFixture {
        let meter = Arc::new(InMemoryUsageMeter::default());
        UsageFixture {
            meter: meter.clone(),
            probe: meter,
            quota: None,
            undecidable: None,
        }
    }

    decision_gate_core::usage_meter_conformance!(fixture);
}

mod audit_memory {
    use std::sync::Arc;

    use decision_gate_core::access::InMemoryAuditSink;
    use decision_gate_core::conformance::AuditFixture;

    async fn fixture() -> AuditFixture {
        let sink = Arc::new(InMemoryAuditSink::default());
        AuditFixture {
            sink: sink.clone(),
            probe: sink,
        }
    }

    decision_gate_core::audit_sink_conformance!(fixture);
}

mod audit_json_lines {
    use std::sync::Arc;

    use decision_gate_core::access::JsonLinesAuditSink;
    use decision_gate_core::conformance::AuditFixture;

    /// A sink on a fresh file (its directory kept for the test's lifetime), read back from the
    /// file.
    async fn fixture() -> AuditFixture {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let sink = Arc::new(JsonLinesAuditSink::open(dir.join("audit.jsonl")).expect("open"));
        AuditFixture {
            sink: sink.clone(),
            probe: sink,
        }
    }

    decision_gate_core::audit_sink_conformance!(fixture);
}
