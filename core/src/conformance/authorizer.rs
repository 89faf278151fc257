//! [`Authorizer`] contract checks.
//!
//! What an authorizer grants depends on its policy, so the suite cannot invent requests it
//! should allow or deny: the factory supplies them in an [`AuthorizerFixture`], built from the
//! implementation's own policy (principal scopes and allowed actions for [`ScopeAuthorizer`],
//! roles and bindings for an RBAC authorizer).
//!
//! [`ScopeAuthorizer`]: crate::access::ScopeAuthorizer

use std::sync::Arc;

use crate::access::{Action, Authorizer, AuthzError, RequestContext, Resource};

/// One question put to an authorizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzRequest {
    /// Who asks, in which tenant and namespace.
    pub ctx: RequestContext,
    /// What it wants to do.
    pub action: Action,
    /// On what.
    pub resource: Resource,
}

impl AuthzRequest {
    /// A request of `ctx` to perform `action` on `resource`.
    #[must_use]
    pub fn new(ctx: RequestContext, action: Action, resource: Resource) -> Self {
        Self {
            ctx,
            action,
            resource,
        }
    }

    /// The same request for another action.
    #[must_use]
    pub fn with_action(&self, action: Action) -> Self {
        Self {
            action,
            ..self.clone()
        }
    }

    async fn ask(&self, authorizer: &dyn Authorizer) -> Result<(), AuthzError> {
        authorizer
            .authorize(&self.ctx, self.action, &self.resource)
            .await
    }
}

impl std::fmt::Display for AuthzRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in {}/{}: {} on {}",
            self.ctx.principal.subject,
            self.ctx.tenant_id,
            self.ctx.namespace_id,
            self.action.name(),
            self.resource
        )
    }
}

/// An authorizer and the requests its policy answers, for the suite.
///
/// Every list must be non-empty except where noted; the suite refuses an empty one rather than
/// pass without checking anything.
pub struct AuthorizerFixture {
    /// The authorizer under test.
    pub authorizer: Arc<dyn Authorizer>,
    /// Requests the policy allows.
    pub allowed: Vec<AuthzRequest>,
    /// Requests the policy must answer as if the resource were missing: an allowed request's
    /// principal acting in another tenant, and in another namespace of its tenant; for an
    /// authorizer that knows which tenants exist, a request in a deleted one. Every action on
    /// them must be `OutOfScope` (contract 1).
    pub out_of_scope: Vec<AuthzRequest>,
    /// Requests inside the principal's scope that the policy does not permit (contract 2).
    pub denied: Vec<AuthzRequest>,
    /// The same kind of authorizer, unable to decide (its policy store down, its policy
    /// unreadable), if the implementation can be put in that state; every `allowed` request is
    /// put to it (contract 3). `None` for an authorizer that decides from the request alone
    /// (the open-source [`ScopeAuthorizer`](crate::access::ScopeAuthorizer) reads only the
    /// principal, so it cannot be undecidable): contract 3 is then vacuous and left to the
    /// implementation's own tests, if it has anything to lose.
    pub undecidable: Option<Arc<dyn Authorizer>>,
}

fn non_empty<'a>(list: &'a [AuthzRequest], name: &str) -> &'a [AuthzRequest] {
    assert!(
        !list.is_empty(),
        "fixture: `{name}` is empty, so the clause would check nothing"
    );
    list
}

/// Clause 1: whatever the action, a request outside the principal's scope is `OutOfScope`,
/// never an allow, and never `Denied` (which would tell the caller the resource is in a scope
/// it can reach).
pub async fn out_of_scope_is_indistinguishable_from_missing(fixture: AuthorizerFixture) {
    let authorizer = fixture.authorizer.as_ref();
    for request in non_empty(&fixture.out_of_scope, "out_of_scope") {
        for action in Action::ALL {
            let request = request.with_action(action);
            assert_eq!(
                request.ask(authorizer).await,
                Err(AuthzError::OutOfScope),
                "clause 1: a request outside the principal's scope is OutOfScope ({request})"
            );
        }
    }
}

/// Clause 2: inside the scope, a request the policy does not permit is `Denied`, while the
/// permitted ones are allowed.
pub async fn missing_permission_is_denied(fixture: AuthorizerFixture) {
    let authorizer = fixture.authorizer.as_ref();
    for request in non_empty(&fixture.allowed, "allowed") {
        assert_eq!(
            request.ask(authorizer).await,
            Ok(()),
            "fixture: the policy refuses a request given as allowed ({request})"
        );
    }
    for request in non_empty(&fixture.denied, "denied") {
        let answer = request.ask(authorizer).await;
        assert!(
            matches!(answer, Err(AuthzError::Denied(_))),
            "clause 2: a missing permission inside the scope is Denied ({request}): {answer:?}"
        );
    }
}

/// Clause 3: an authorizer that cannot decide answers `Unavailable`, for requests its policy
/// would allow: never an allow, and never a `Denied` or `OutOfScope` the caller would take for
/// a final answer. Vacuous when the fixture has no undecidable authorizer.
pub async fn undecidable_fails_closed(fixture: AuthorizerFixture) {
    let Some(undecidable) = fixture.undecidable else {
        return;
    };
    for request in non_empty(&fixture.allowed, "allowed") {
        let answer = request.ask(undecidable.as_ref()).await;
        assert!(
            matches!(answer, Err(AuthzError::Unavailable(_))),
            "clause 3: an authorizer that cannot decide answers Unavailable ({request}): {answer:?}"
        );
    }
}

/// Clause 4: the same request gets the same answer, asked again in turn or concurrently.
pub async fn answers_are_stable(fixture: AuthorizerFixture) {
    let requests: Vec<AuthzRequest> = [
        non_empty(&fixture.allowed, "allowed"),
        non_empty(&fixture.out_of_scope, "out_of_scope"),
        non_empty(&fixture.denied, "denied"),
    ]
    .concat();
    let first =
        futures::future::join_all(requests.iter().map(|r| r.ask(fixture.authorizer.as_ref())))
            .await;
    for round in 0..3 {
        let tasks: Vec<_> = requests
            .iter()
            .map(|request| {
                let authorizer = fixture.authorizer.clone();
                let request = request.clone();
                tokio::spawn(async move { request.ask(authorizer.as_ref()).await })
            })
            .collect();
        for ((request, before), task) in requests.iter().zip(&first).zip(tasks) {
            let again = task.await.expect("authorize task");
            assert_eq!(
                again.as_ref().map_err(std::mem::discriminant),
                before.as_ref().map_err(std::mem::discriminant),
                "clause 4: asked again (round {round}), {request} got {again:?} after {before:?}"
            );
        }
    }
}

/// Stamps the `Authorizer` suite onto `$factory`, an async fn returning an
/// [`AuthorizerFixture`](crate::conformance::AuthorizerFixture):
///
/// ```text
/// async fn fixture() -> AuthorizerFixture { /* the authorizer and requests its policy answers */ }
/// decision_gate_core::authorizer_conformance!(fixture);
/// ```
#[macro_export]
macro_rules! authorizer_conformance {
    ($factory:path) => {
        $crate::__fixture_tests!(
            $factory,
            authorizer,
            out_of_scope_is_indistinguishable_from_missing,
            missing_permission_is_denied,
            undecidable_fails_closed,
            answers_are_stable
        );
    };
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::access::ScopeAuthorizer;
    use crate::ids::{NamespaceId, TenantId};

    fn ctx(t: u64, ns: u64) -> RequestContext {
        let mut ctx =
            RequestContext::local(TenantId::new(t).unwrap(), NamespaceId::new(ns).unwrap());
        ctx.principal.subject = "agent".into();
        ctx.principal.tenant_id = Some(TenantId::new(1).unwrap());
        ctx.principal.namespace_id = Some(NamespaceId::new(1).unwrap());
        ctx.principal.actions = Some([Action::ScenarioNext].into());
        ctx
    }

    fn fixture(authorizer: Arc<dyn Authorizer>) -> AuthorizerFixture {
        let run = Resource::new("run", "r");
        AuthorizerFixture {
            authorizer,
            allowed: vec![AuthzRequest::new(
                ctx(1, 1),
                Action::ScenarioNext,
                run.clone(),
            )],
            out_of_scope: vec![AuthzRequest::new(
                ctx(2, 1),
                Action::ScenarioNext,
                run.clone(),
            )],
            denied: vec![AuthzRequest::new(ctx(1, 1), Action::ScenarioDefine, run)],
            undecidable: None,
        }
    }

    /// Says `Denied` where the scope says `OutOfScope`: the caller learns the resource exists.
    struct Leaky;

    #[async_trait]
    impl Authorizer for Leaky {
        async fn authorize(
            &self,
            ctx: &RequestContext,
            action: Action,
            resource: &Resource,
        ) -> Result<(), AuthzError> {
            match ScopeAuthorizer.authorize(ctx, action, resource).await {
                Err(AuthzError::OutOfScope) => Err(AuthzError::Denied("elsewhere".into())),
                answer => answer,
            }
        }
    }

    /// Allows everything when its policy store is down.
    struct FailsOpen;

    #[async_trait]
    impl Authorizer for FailsOpen {
        async fn authorize(
            &self,
            _ctx: &RequestContext,
            _action: Action,
            _resource: &Resource,
        ) -> Result<(), AuthzError> {
            Ok(())
        }
    }

    /// Answers differently each time it is asked.
    #[derive(Default)]
    struct Fickle(std::sync::atomic::AtomicU64);

    #[async_trait]
    impl Authorizer for Fickle {
        async fn authorize(
            &self,
            ctx: &RequestContext,
            action: Action,
            resource: &Resource,
        ) -> Result<(), AuthzError> {
            let asked = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match ScopeAuthorizer.authorize(ctx, action, resource).await {
                Err(AuthzError::Denied(_)) if asked > 4 => Ok(()),
                answer => answer,
            }
        }
    }

    #[tokio::test]
    async fn the_scope_authorizer_passes() {
        out_of_scope_is_indistinguishable_from_missing(fixture(Arc::new(ScopeAuthorizer))).await;
        missing_permission_is_denied(fixture(Arc::new(ScopeAuthorizer))).await;
        answers_are_stable(fixture(Arc::new(ScopeAuthorizer))).await;
        let mut closed = fixture(Arc::new(ScopeAuthorizer));
        closed.undecidable = Some(Arc::new(Unavailable));
        undecidable_fails_closed(closed).await;
    }

    struct Unavailable;

    #[async_trait]
    impl Authorizer for Unavailable {
        async fn authorize(
            &self,
            _ctx: &RequestContext,
            _action: Action,
            _resource: &Resource,
        ) -> Result<(), AuthzError> {
            Err(AuthzError::Unavailable("policy store down".into()))
        }
    }

    #[tokio::test]
    #[should_panic(expected = "clause 1")]
    async fn clause_1_catches_an_authorizer_that_reveals_other_scopes() {
        out_of_scope_is_indistinguishable_from_missing(fixture(Arc::new(Leaky))).await;
    }

    #[tokio::test]
    #[should_panic(expected = "clause 2")]
    async fn clause_2_catches_an_authorizer_that_allows_everything() {
        missing_permission_is_denied(fixture(Arc::new(FailsOpen))).await;
    }

    #[tokio::test]
    #[should_panic(expected = "clause 3")]
    async fn clause_3_catches_an_authorizer_that_fails_open() {
        let mut f = fixture(Arc::new(ScopeAuthorizer));
        f.undecidable = Some(Arc::new(FailsOpen));
        undecidable_fails_closed(f).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "clause 4")]
    async fn clause_4_catches_an_authorizer_that_changes_its_mind() {
        answers_are_stable(fixture(Arc::new(Fickle::default()))).await;
    }

    #[tokio::test]
    #[should_panic(expected = "fixture: `denied` is empty")]
    async fn an_empty_fixture_list_is_refused() {
        let mut f = fixture(Arc::new(ScopeAuthorizer));
        f.denied.clear();
        missing_permission_is_denied(f).await;
    }
}
