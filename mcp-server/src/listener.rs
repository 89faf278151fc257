//! Accepting connections, the same for MCP over HTTP and for gRPC, with or without TLS: every
//! wait on a client is timed, and open connections are capped per source address and in all
//! (`server.limits.max_connections_per_source`, `max_connections`; a connection over the cap
//! is closed as it is accepted). A connection must send its first byte (or finish its TLS
//! handshake) within the header timeout, and an HTTP/1 request its headers; HTTP/2 connections
//! are pinged and closed when the peer stops answering. A refused TLS handshake is audited
//! within the source's authentication-failure budget ([`crate::noise::SourceGate`]), whose
//! suppressed refusals a sweeper task writes as one event per source and window. On shutdown,
//! requests in progress get [`DRAIN_TIMEOUT`] to finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use decision_gate_core::identity::PeerCertificate;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use decision_gate_core::access::AccessRefusal;

use crate::admission::Admission;
use crate::caller::Transport;
use crate::handler::Shared;
use crate::tls::{self, TlsSettings};

/// How long requests in progress may run after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle HTTP/2 connection is pinged, and how long the peer has to answer.
const KEEP_ALIVE: Duration = Duration::from_secs(20);

/// What every connection of a listener shares.
#[derive(Clone)]
pub struct Connections {
    /// The application served.
    pub app: Router,
    /// TLS, when this server terminates it.
    pub tls: Option<TlsSettings>,
    /// The first byte (or the TLS handshake) and an HTTP/1 request's headers.
    pub header_timeout: Duration,
    /// The admission of the server, whose failure budget covers TLS handshakes.
    pub admission: Arc<Admission>,
    /// What refusals are audited through.
    pub shared: Arc<Shared>,
    /// `http` or `grpc`.
    pub transport: Transport,
}

/// Serves connections from `listener` until `shutdown` is cancelled, then drains.
///
/// # Errors
/// None today: accept failures are logged and retried; the signature leaves room for a
/// listener that can fail for good.
pub async fn serve(
    listener: TcpListener,
    connections: Connections,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::spawn(
        shutdown
            .child_token()
            .run_until_cancelled_owned(sweep(connections.clone())),
    );
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and similar: pause rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = connections.admission.connection(peer) else {
            let transport = connections.transport.name();
            connections
                .shared
                .metrics
                .refusal(transport, AccessRefusal::Overloaded);
            connections
                .admission
                .sources()
                .refused_connection(peer, transport);
            continue;
        };
        let connections = connections.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Given back when the connection ends, whichever way.
            let _slot = slot;
            // Answers are written whole; waiting for more to coalesce only adds latency.
            let _ = tcp.set_nodelay(true);
            match &connections.tls {
                None => {
                    if first_byte(&tcp, connections.header_timeout).await {
                        connections.run(tcp, peer, None, watcher).await;
                    }
                }
                Some(settings) => {
                    if let Some((stream, certificate)) =
                        connections.handshake(settings, tcp, peer).await
                    {
                        connections.run(stream, peer, certificate, watcher).await;
                    }
                }
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}; closing them");
    }
    Ok(())
}

/// Whether the client sent something within `timeout`: a connection that stays silent is
/// closed rather than held.
async fn first_byte(tcp: &TcpStream, timeout: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(timeout, tcp.peek(&mut byte)).await,
        Ok(Ok(n)) if n > 0
    )
}

impl Connections {
    /// The TLS handshake within the header timeout; a refusal is audited within the source's
    /// failure budget.
    async fn handshake(
        &self,
        settings: &TlsSettings,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<(
        tokio_rustls::server::TlsStream<TcpStream>,
        Option<PeerCertificate>,
    )> {
        let reason =
            match tokio::time::timeout(self.header_timeout, settings.acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let certificate = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(tls::common_name)
                        .map(|common_name| PeerCertificate { common_name });
                    return Some((stream, certificate));
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "the TLS handshake timed out".to_owned(),
            };
        let event = tls::handshake_refused(self.transport, peer, &reason);
        if self
            .admission
            .sources()
            .failed(Some(peer), self.transport.name())
        {
            self.shared.refuse(self.transport, event).await;
        } else {
            self.shared
                .metrics
                .refusal(self.transport.name(), event.refusal);
        }
        None
    }

    /// Serves one connection with hyper (HTTP/1 or HTTP/2, whichever the client speaks), each
    /// request carrying the peer and its verified certificate, until it closes or the
    /// graceful shutdown ends it.
    async fn run<S>(
        &self,
        stream: S,
        peer: SocketAddr,
        certificate: Option<PeerCertificate>,
        watcher: hyper_util::server::graceful::Watcher,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = self.app.clone();
        let service =
            tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                if let Some(c) = &certificate {
                    req.extensions_mut().insert(c.clone());
                }
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE);
        let connection = builder.serve_connection_with_upgrades(
            TokioIo::new(stream),
            TowerToHyperService::new(service),
        );
        if let Err(e) = watcher.watch(connection.into_owned()).await {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }
}

/// Writes the refusals the failure gate counted as one audit event per source and closed
/// window, every window, until the listener stops.
async fn sweep(connections: Connections) {
    let gate = connections.admission.sources();
    let mut tick = tokio::time::interval(gate.window());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for event in gate.drain(Instant::now()) {
            // The refusals were counted in the metrics as they happened.
            if let Err(e) = connections.shared.audit.append_access(&event).await {
                tracing::error!("access event not recorded: {e}");
            }
        }
    }
}
