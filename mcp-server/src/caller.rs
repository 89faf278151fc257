//! Who is calling, over what: established by the transport before any tool runs.

use std::net::SocketAddr;

use decision_gate_core::ids::CorrelationId;
use decision_gate_core::{NamespaceId, Principal, RequestContext, TenantId};

/// The transport a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Newline-delimited JSON-RPC on stdin/stdout.
    Stdio,
    /// Streamable HTTP.
    Http,
    /// The gRPC API.
    Grpc,
}

impl Transport {
    /// The label used in audit events and metrics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

/// An authenticated caller and the ids of its request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who, with its scope.
    pub principal: Principal,
    /// Over what.
    pub transport: Transport,
    /// From where, on network transports.
    pub peer: Option<SocketAddr>,
    /// The transport's request id.
    pub request_id: Option<String>,
    /// The caller's (validated) correlation id.
    pub correlation_id: Option<CorrelationId>,
    /// The client's (validated) idempotency key.
    pub idempotency_key: Option<String>,
}

impl Caller {
    /// The local stdio caller: unrestricted.
    #[must_use]
    pub fn stdio() -> Self {
        Self {
            principal: Principal {
                subject: "stdio".to_owned(),
                ..Principal::local()
            },
            transport: Transport::Stdio,
            peer: None,
            request_id: None,
            correlation_id: None,
            idempotency_key: None,
        }
    }

    /// The service context for a call acting in `tenant_id` / `namespace_id`; a correlation id
    /// in the arguments wins over the transport's.
    #[must_use]
    pub fn context(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        correlation_id: Option<CorrelationId>,
    ) -> RequestContext {
        RequestContext {
            principal: self.principal.clone(),
            tenant_id,
            namespace_id,
            request_id: self.request_id.clone(),
            correlation_id: correlation_id.or_else(|| self.correlation_id.clone()),
            idempotency_key: self.idempotency_key.clone(),
            transport: self.transport.name(),
        }
    }

    /// The context for tools that name no tenant (the provider tools): the principal's own
    /// scope, else tenant 1 / namespace 1.
    #[must_use]
    pub fn home_context(&self) -> RequestContext {
        let tenant = self.principal.tenant_id.unwrap_or(TenantId::DEFAULT);
        let namespace = self.principal.namespace_id.unwrap_or(NamespaceId::DEFAULT);
        self.context(tenant, namespace, None)
    }
}
