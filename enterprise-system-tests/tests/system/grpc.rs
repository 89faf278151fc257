//! The enterprise server serves the same service over gRPC, on the same Postgres journal and
//! with the same tenant isolation: a tenant's principal reaches another tenant's run through no
//! gRPC method either.

use decision_gate_system_tests::grpc_pb::{self as pb, decision_gate_client::DecisionGateClient};
use serde_json::json;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::isolation::{TOKEN_A, TOKEN_B, auth};
use crate::support::{
    ConfigDir, Enterprise, PgServer, ScratchDb, block_on, config, cycle, migrate_and_provision, ok,
    start_args,
};

pub(crate) type Interceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>>;

pub(crate) async fn client(
    server: &Enterprise,
    token: &'static str,
) -> DecisionGateClient<InterceptedService<Channel, Interceptor>> {
    let channel = Channel::from_shared(format!("http://{}", server.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let bearer: Interceptor = Box::new(move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        Ok(r)
    });
    DecisionGateClient::with_interceptor(channel, bearer)
}

fn next(tenant: u64, trigger: &str, at: u64) -> pb::NextRequest {
    pb::NextRequest {
        scenario_id: "cycle".into(),
        tenant_id: tenant,
        namespace_id: 1,
        run_id: "run-b".into(),
        trigger_id: trigger.into(),
        agent_id: "agent".into(),
        time: Some(pb::Timestamp {
            kind: Some(pb::timestamp::Kind::Logical(at)),
        }),
        ..Default::default()
    }
}

fn status(tenant: u64) -> pb::GetRunStatusRequest {
    pb::GetRunStatusRequest {
        scenario_id: "cycle".into(),
        tenant_id: tenant,
        namespace_id: 1,
        run_id: "run-b".into(),
        correlation_id: None,
    }
}

#[test]
fn grpc_drives_runs_on_postgres_and_keeps_tenants_apart() {
    let pg = PgServer::shared();
    let db = ScratchDb::create(&pg);
    let dir = ConfigDir::new(&config(&db, "", &auth()));
    migrate_and_provision(&dir);
    let server = Enterprise::start(&dir);

    // Tenant B defines and starts over MCP, then decides over gRPC.
    let mut spec = cycle();
    spec["default_tenant_id"] = json!(2);
    ok(&server.call(Some(TOKEN_B), "scenario_define", json!({ "spec": spec })));
    ok(&server.call(Some(TOKEN_B), "scenario_start", start_args(2, "run-b")));
    block_on(async {
        let mut b = client(&server, TOKEN_B).await;
        let decided = b
            .next(next(2, "next-1", 1))
            .await
            .expect("next")
            .into_inner();
        let decision = decided.decision.expect("decision");
        assert_eq!(decision.trigger_id, "next-1");
        assert_eq!(decision.seq, 2);
        let seen = b
            .get_run_status(status(2))
            .await
            .expect("status")
            .into_inner();
        assert_eq!(seen.revision, 2);

        // Tenant A reaches none of it, naming tenant B or its own tenant, and writes nothing.
        let mut a = client(&server, TOKEN_A).await;
        for tenant in [2, 1] {
            let refused = a.get_run_status(status(tenant)).await.expect_err("status");
            assert_eq!(
                refused.code(),
                Code::NotFound,
                "tenant {tenant}: {refused:?}"
            );
            let refused = a.next(next(tenant, "next-a", 2)).await.expect_err("next");
            assert_eq!(
                refused.code(),
                Code::NotFound,
                "tenant {tenant}: {refused:?}"
            );
        }
        let unchanged = b
            .get_run_status(status(2))
            .await
            .expect("status")
            .into_inner();
        assert_eq!(unchanged.revision, 2, "tenant A's calls wrote nothing");

        // Health probes carry no credentials and see the server ready on Postgres.
        let channel = Channel::from_shared(format!("http://{}", server.grpc))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let answer = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: "decision_gate.v1.DecisionGate".into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            answer.status,
            i32::from(tonic_health::pb::health_check_response::ServingStatus::Serving)
        );
    });

    // The decision made over gRPC is in the journal MCP reads: the same Postgres rows.
    let seen = server.call(
        Some(TOKEN_B),
        "scenario_status",
        json!({ "scenario_id": "cycle", "request": { "run_id": "run-b", "tenant_id": 2,
                "namespace_id": 1, "requested_at": { "kind": "logical", "value": 3 } } }),
    );
    assert_eq!(ok(&seen)["last_decision"]["trigger_id"], json!("next-1"));
    assert_eq!(
        db.strings("SELECT count(*)::text FROM run_entries WHERE tenant_id = 2"),
        vec!["2".to_owned()]
    );
}
