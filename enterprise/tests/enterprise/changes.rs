//! Replicas follow tenancy and identity changes: `follow_changes` on a real Postgres calls its
//! `forget` when listening starts and again when a change commits (and not for one rolled
//! back).

use std::time::Duration;

use decision_gate_core::TenantId;
use decision_gate_enterprise::changes::follow_changes;
use decision_gate_store_enterprise::{LifecycleState, set_state};
use tokio_util::sync::CancellationToken;

use crate::authorizer::Scratch;

#[tokio::test]
async fn a_committed_change_reaches_every_listener() {
    let (_db, owner) = Scratch::create().await;
    let (tx, mut forgotten) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    tokio::spawn(follow_changes(
        owner.clone(),
        move || {
            let _ = tx.send(());
        },
        shutdown.clone(),
    ));
    let wait = Duration::from_secs(10);
    // Listening starts by forgetting: anything announced before is unknown.
    tokio::time::timeout(wait, forgotten.recv())
        .await
        .expect("listening started")
        .expect("a call");
    let tenant = TenantId::new(1).expect("tenant");
    set_state(&owner, tenant, None, LifecycleState::Suspended)
        .await
        .expect("suspend");
    tokio::time::timeout(wait, forgotten.recv())
        .await
        .expect("the suspension was announced")
        .expect("a call");
    // A state change that is refused (a deleted tenant cannot come back) announces nothing.
    set_state(&owner, tenant, None, LifecycleState::Deleted)
        .await
        .expect("delete");
    tokio::time::timeout(wait, forgotten.recv())
        .await
        .expect("the deletion was announced")
        .expect("a call");
    assert!(
        set_state(&owner, tenant, None, LifecycleState::Active)
            .await
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), forgotten.recv())
            .await
            .is_err(),
        "a refused change announces nothing"
    );
    shutdown.cancel();
}
