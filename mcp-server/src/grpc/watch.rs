//! `WatchRun`: a server stream of a run's decisions. Opening the watch is a status read
//! (authorized and audited by the service, counted and its refused arguments audited like any
//! call); each batch the run appends is then sent as it comes, and the stream ends when the run
//! has finished, the client leaves or the server shuts down.

use std::pin::Pin;
use std::time::Instant;

use decision_gate_core::{Action, NamespaceId, RunId, ScenarioId, TenantId};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::{GrpcApi, convert, pb, status};
use crate::caller::{Caller, Transport};
use crate::error::ToolError;

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
        let scenario_id = field(ScenarioId::new(r.scenario_id), "scenario_id")?;
        let run_id = field(RunId::new(r.run_id), "run_id")?;
        let ctx = caller.context(
            field(TenantId::new(r.tenant_id), "tenant_id")?,
            field(NamespaceId::new(r.namespace_id), "namespace_id")?,
            None,
        );
        gate.watch_run(&ctx, &scenario_id, &run_id, r.after_seq)
            .await
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
    let mut watch = opened.map_err(status::tool_error)?;
    let shutdown = api.shutdown();
    let stream = async_stream_of(move |tx| async move {
        loop {
            // A client that went away, or a server shutting down, ends the watch even while
            // the run is idle.
            let next = tokio::select! {
                () = tx.closed() => return,
                () = shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable("the server is shutting down"))).await;
                    return;
                }
                next = gate.next_decisions(&mut watch) => next,
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
