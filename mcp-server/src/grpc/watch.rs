//! `WatchRun`: a server stream of a run's decisions. Opening the watch is a status read
//! (authorized and audited by the service, counted and its refused arguments audited like any
//! call); each batch the run appends is then sent as it comes, and the stream ends when the run
//! has finished, the client leaves or the server shuts down. Streams are bounded
//! (`server.limits.watch`): in number on the server and per principal, and in time — a stream
//! with nothing to send for the idle timeout, or open for the lifetime limit, ends with
//! `DEADLINE_EXCEEDED`, and the client reopens it after the last decision it saw.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use decision_gate_core::{Action, NamespaceId, RunId, ScenarioId, TenantId};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::{GrpcApi, convert, pb, status};
use crate::caller::{Caller, Transport};
use crate::config::WatchLimits;
use crate::error::ToolError;
use crate::slots::{Slot, SlotRefusal, Slots};

/// The open streams and their bounds.
#[derive(Clone, Debug)]
pub(super) struct Watches {
    slots: Arc<Slots>,
    idle: Duration,
    lifetime: Duration,
}

impl Watches {
    pub(super) fn new(limits: &WatchLimits) -> Self {
        Self {
            slots: Slots::new(limits.max_per_principal, limits.max_streams),
            idle: Duration::from_millis(limits.idle_timeout_ms),
            lifetime: Duration::from_millis(limits.max_lifetime_ms),
        }
    }

    /// A stream slot for `caller`, or the refusal naming the bound reached.
    fn open(&self, caller: &Caller) -> Result<Slot, ToolError> {
        self.slots
            .take(&caller.principal.budget_key())
            .map_err(|refusal| match refusal {
                SlotRefusal::Key(limit) => ToolError::rate_limited(format!(
                    "this principal already has {limit} WatchRun streams open \
                     (server.limits.watch.max_per_principal)"
                )),
                SlotRefusal::Total(limit) => ToolError::overloaded(format!(
                    "{limit} WatchRun streams are open on this server \
                     (server.limits.watch.max_streams)"
                )),
            })
    }
}

/// The stream of decisions.
pub type DecisionStream = Pin<Box<dyn Stream<Item = Result<pb::Decision, Status>> + Send>>;

fn field<T, E: std::fmt::Display>(value: Result<T, E>, name: &str) -> Result<T, ToolError> {
    value.map_err(|e| ToolError::invalid_arguments(name, e))
}

pub(super) async fn watch(
    api: &GrpcApi,
    request: Request<pb::WatchRunRequest>,
) -> Result<Response<DecisionStream>, Status> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("request reached the service unauthenticated"))?;
    let started = Instant::now();
    let r = request.into_inner();
    let gate = api.gate();
    let opened = async {
        let slot = api.watches().open(&caller)?;
        let scenario_id = field(ScenarioId::new(r.scenario_id), "scenario_id")?;
        let run_id = field(RunId::new(r.run_id), "run_id")?;
        let ctx = caller.context(
            field(TenantId::new(r.tenant_id), "tenant_id")?,
            field(NamespaceId::new(r.namespace_id), "namespace_id")?,
            None,
        );
        gate.watch_run(&ctx, &scenario_id, &run_id, r.after_seq)
            .await
            .map(|watch| (watch, slot))
            .map_err(ToolError::from)
    }
    .await;
    // Opening a watch is a status read: it counts and is audited like one.
    api.shared()
        .record(
            Transport::Grpc,
            &caller,
            Action::ScenarioStatus,
            opened.as_ref().err(),
            started,
        )
        .await;
    let (mut watch, slot) = opened.map_err(status::tool_error)?;
    let shutdown = api.shutdown();
    let (idle, lifetime) = (api.watches().idle, api.watches().lifetime);
    let stream = async_stream_of(move |tx| async move {
        // Held until the stream ends, whichever way.
        let _slot = slot;
        let ends = tokio::time::Instant::now() + lifetime;
        loop {
            // A client that went away, a server shutting down, an idle or an old stream ends
            // the watch even while the run is idle.
            let next = tokio::select! {
                () = tx.closed() => return,
                () = shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable("the server is shutting down"))).await;
                    return;
                }
                () = tokio::time::sleep_until(ends) => {
                    let message = format!(
                        "the stream reached its lifetime of {} ms \
                         (server.limits.watch.max_lifetime_ms); reopen it after the last decision seen",
                        lifetime.as_millis()
                    );
                    let _ = tx.send(Err(Status::deadline_exceeded(message))).await;
                    return;
                }
                next = tokio::time::timeout(idle, gate.next_decisions(&mut watch)) => match next {
                    Ok(next) => next,
                    Err(_) => {
                        let message = format!(
                            "no decision for {} ms (server.limits.watch.idle_timeout_ms); \
                             reopen the stream after the last decision seen",
                            idle.as_millis()
                        );
                        let _ = tx.send(Err(Status::deadline_exceeded(message))).await;
                        return;
                    }
                },
            };
            match next {
                Ok(Some(decisions)) => {
                    for d in decisions {
                        if tx.send(Ok(convert::decision(d))).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(status::tool_error(ToolError::from(e)))).await;
                    return;
                }
            }
        }
    });
    Ok(Response::new(stream))
}

/// A stream fed by a task, which stops when the client goes away (the receiver is dropped).
fn async_stream_of<F, Fut>(produce: F) -> DecisionStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::Decision, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
