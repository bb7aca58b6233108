//! The streaming server: the HTTP endpoint behind the URLs that the Exec,
//! Attach and PortForward RPCs return. Each URL carries only a random
//! single-use token that expires if unused; the request it stands for
//! stays here. The client's upgrade request picks the protocol: SPDY/3.1
//! ([`spdy`]) or WebSocket ([`ws`]), with the Kubernetes stream protocol
//! versions negotiated on top ([`remotecommand`] for exec and attach,
//! [`portforward`]).

pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod ws;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_proto::v1 as cri;
use gantry_runtimeservice::container::ContainerService;
use gantry_runtimeservice::grpc::StreamUrls;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, info_span, Instrument};

use crate::node_metrics::SessionMetrics;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamingConfig {
    /// host:port; port 0 takes a free port at start.
    pub address: String,
    pub token_ttl_secs: u64,
    pub stream_idle_timeout_secs: u64,
    pub stream_creation_timeout_secs: u64,
    /// How long a new connection has to deliver its request headers (its
    /// TLS handshake included) before it is closed.
    pub header_read_timeout_secs: u64,
    /// Connections open at once, sessions included; more are refused.
    pub max_connections: usize,
    /// PEM certificate chain and key; both set means HTTPS.
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl StreamingConfig {
    /// The TLS acceptor the config asks for, if any.
    pub fn tls(&self) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        match (self.tls_cert_file.is_empty(), self.tls_key_file.is_empty()) {
            (true, true) => return Ok(None),
            (false, false) => {}
            _ => anyhow::bail!("streaming.tls_cert_file and tls_key_file go together"),
        }
        let certs = CertificateDer::pem_file_iter(&self.tls_cert_file)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", self.tls_cert_file))?;
        if certs.is_empty() {
            anyhow::bail!("{} holds no certificate", self.tls_cert_file);
        }
        let key = PrivateKeyDer::from_pem_file(&self.tls_key_file)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", self.tls_key_file))?;
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        // Upgrades need HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

/// When a connection last carried anything, for the idle timeout.
#[derive(Clone)]
pub struct Activity {
    base: Instant,
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            base: Instant::now(),
            last_ms: Arc::default(),
        }
    }
}

impl Activity {
    pub fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }

    /// Resolves once nothing moved for `limit`. It sleeps until the
    /// earliest moment that could be true, not on a fixed tick.
    pub async fn expired(&self, limit: Duration) {
        loop {
            let idle = self.idle();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// What a token stands for.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec(cri::ExecRequest),
    Attach(cri::AttachRequest),
    PortForward(cri::PortForwardRequest),
}

impl Pending {
    fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

/// A connection's share of `max_connections`: taken at accept, carried
/// into the upgraded session (through the request's extensions), given
/// back when the last of them ends.
#[derive(Clone)]
pub(crate) struct ConnectionSlot {
    _permit: Arc<OwnedSemaphorePermit>,
}

/// The reloadable settings, in seconds: read afresh by each new token and
/// connection, so a reload never waits for running sessions.
struct Timeouts {
    token_ttl: AtomicU64,
    idle: AtomicU64,
    creation: AtomicU64,
    header_read: AtomicU64,
}

impl Timeouts {
    fn set(&self, c: &StreamingConfig) {
        self.token_ttl.store(c.token_ttl_secs, Ordering::Relaxed);
        self.idle
            .store(c.stream_idle_timeout_secs, Ordering::Relaxed);
        self.creation
            .store(c.stream_creation_timeout_secs, Ordering::Relaxed);
        self.header_read
            .store(c.header_read_timeout_secs, Ordering::Relaxed);
    }

    fn get(v: &AtomicU64) -> Duration {
        Duration::from_secs(v.load(Ordering::Relaxed).max(1))
    }
}

pub struct StreamingServer {
    base_url: String,
    slots: Arc<Semaphore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    timeouts: Timeouts,
    tokens: Mutex<HashMap<String, (Pending, Instant)>>,
    pub(crate) containers: Arc<ContainerService>,
    pub(crate) sessions: SessionMetrics,
}

impl StreamingServer {
    /// Binds the configured address; the URLs use the address actually
    /// bound.
    pub async fn bind(
        config: StreamingConfig,
        containers: Arc<ContainerService>,
        sessions: SessionMetrics,
    ) -> anyhow::Result<(Arc<Self>, TcpListener)> {
        let addr: SocketAddr = config.address.parse()?;
        let tls = config.tls()?;
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        info!(address = %local, scheme, "streaming server listening");
        Ok((
            Arc::new(StreamingServer {
                base_url: format!("{scheme}://{local}"),
                slots: Arc::new(Semaphore::new(config.max_connections)),
                tls,
                timeouts: Timeouts {
                    token_ttl: AtomicU64::new(config.token_ttl_secs),
                    idle: AtomicU64::new(config.stream_idle_timeout_secs),
                    creation: AtomicU64::new(config.stream_creation_timeout_secs),
                    header_read: AtomicU64::new(config.header_read_timeout_secs),
                },
                tokens: Mutex::new(HashMap::new()),
                containers,
                sessions,
            }),
            listener,
        ))
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Pending, Instant)>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mint(&self, pending: Pending) -> Result<String, tonic::Status> {
        let token = gantry_runtimeservice::pod::new_id()
            .map_err(|e| tonic::Status::internal(format!("minting a token: {e}")))?;
        let kind = pending.kind();
        let now = Instant::now();
        let mut tokens = self.tokens();
        // Unused tokens are dropped as new ones are minted: no timer needed.
        tokens.retain(|_, (_, expires)| *expires > now);
        let ttl = Timeouts::get(&self.timeouts.token_ttl);
        tokens.insert(token.clone(), (pending, now + ttl));
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }

    /// Takes a token's request: once only, and only before it expires.
    fn redeem(&self, kind: &str, token: &str) -> Option<Pending> {
        let mut tokens = self.tokens();
        let (pending, expires) = tokens.remove(token)?;
        (expires > Instant::now() && pending.kind() == kind).then_some(pending)
    }

    pub(crate) fn creation_timeout(&self) -> Duration {
        Timeouts::get(&self.timeouts.creation)
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        Timeouts::get(&self.timeouts.idle)
    }

    fn header_read_timeout(&self) -> Duration {
        Timeouts::get(&self.timeouts.header_read)
    }

    /// Puts reloaded timeouts in force for the tokens and connections that
    /// come from now on: the token TTL, the header read, stream creation
    /// and idle timeouts. The address, TLS files and connection cap need a
    /// restart.
    pub fn set_timeouts(&self, config: &StreamingConfig) {
        self.timeouts.set(config);
    }

    /// Accepts connections while slots are free. A connection over the cap
    /// is answered 503 (plain HTTP, if the socket takes it at once) and
    /// closed, so that clients without a token cannot hold the daemon's
    /// descriptors.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                if self.tls.is_none() {
                    let _ = stream.try_write(BUSY);
                }
                debug!(%peer, "streaming connection refused: max_connections reached");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let me = self.clone();
            let slot = ConnectionSlot {
                _permit: Arc::new(permit),
            };
            tokio::spawn(me.connection(stream, slot));
        }
    }

    /// Serves one connection: the handshake and the request headers must
    /// arrive within the header timeout; once the request is in, it runs
    /// for as long as its session does. One request per connection (see
    /// [`reply`]): a streaming client upgrades or goes.
    async fn connection(self: Arc<Self>, stream: TcpStream, slot: ConnectionSlot) {
        let deadline = tokio::time::Instant::now() + self.header_read_timeout();
        let got_request = Arc::new(Notify::new());
        let me = self.clone();
        let seen = got_request.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            seen.notify_one();
            req.extensions_mut().insert(slot.clone());
            let me = me.clone();
            async move { Ok::<_, Infallible>(me.handle(req)) }
        });
        let http = hyper::server::conn::http1::Builder::new();
        let served = match self.tls.clone() {
            None => {
                let conn = http
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                until_request(conn, &got_request, deadline).await
            }
            Some(acceptor) => {
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let conn = http
                            .serve_connection(TokioIo::new(tls), service)
                            .with_upgrades();
                        until_request(conn, &got_request, deadline).await
                    }
                    Ok(Err(e)) => {
                        debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!("streaming connection closed: no TLS handshake in time");
                        return;
                    }
                }
            }
        };
        if let Err(e) = served {
            debug!(error = %e, "streaming connection ended with an error");
        }
    }

    fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().trim_matches('/').to_string();
        let mut parts = path.splitn(2, '/');
        let (kind, token) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        // Nothing about the request is told to a caller without a valid
        // token: every miss looks the same.
        let Some(pending) = self.redeem(kind, token) else {
            return reply(StatusCode::NOT_FOUND, "not found\n");
        };
        let header = |name: &str| -> Vec<String> {
            req.headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect()
        };
        let upgrade = header("upgrade")
            .first()
            .map(|u| u.to_ascii_lowercase())
            .unwrap_or_default();
        let span = match &pending {
            Pending::Exec(r) => info_span!("exec", container_id = %r.container_id),
            Pending::Attach(r) => info_span!("attach", container_id = %r.container_id),
            Pending::PortForward(r) => info_span!("portforward", pod_id = %r.pod_sandbox_id),
        };
        if upgrade == "spdy/3.1" {
            let offered = header("x-stream-protocol-version");
            let supported: &[&str] = match pending {
                Pending::PortForward(_) => portforward::PROTOCOLS,
                _ => remotecommand::PROTOCOLS,
            };
            let chosen = match negotiate(&offered, supported) {
                Ok(p) => p,
                Err(msg) => return reply(StatusCode::FORBIDDEN, &msg),
            };
            let slot = req.extensions().get::<ConnectionSlot>().cloned();
            let on_upgrade = hyper::upgrade::on(req);
            let protocol = chosen.clone();
            tokio::spawn(
                async move {
                    let _slot = slot;
                    match on_upgrade.await {
                        Ok(upgraded) => {
                            let _session = self.sessions.open(pending.kind());
                            let conn = spdy::Connection::serve(TokioIo::new(upgraded));
                            self.run_spdy(conn, pending, &protocol).await;
                        }
                        Err(e) => debug!(error = %e, "SPDY upgrade failed"),
                    }
                }
                .instrument(span),
            );
            let mut r = reply(StatusCode::SWITCHING_PROTOCOLS, "");
            let h = r.headers_mut();
            h.insert(hyper::header::CONNECTION, hv("Upgrade"));
            h.insert(hyper::header::UPGRADE, hv("SPDY/3.1"));
            if let Some(p) = chosen {
                h.insert("X-Stream-Protocol-Version", hv(&p));
            }
            return r;
        }
        if upgrade == "websocket" {
            return ws::upgrade(self, req, pending, span);
        }
        reply(
            StatusCode::BAD_REQUEST,
            "an upgrade to SPDY/3.1 or websocket is required\n",
        )
    }

    async fn run_spdy(
        self: Arc<Self>,
        conn: spdy::Connection,
        pending: Pending,
        protocol: &Option<String>,
    ) {
        match pending {
            Pending::PortForward(req) => portforward::serve_spdy(self, conn, req).await,
            other => remotecommand::serve_spdy(self, conn, other, protocol.as_deref()).await,
        }
    }
}

impl StreamUrls for StreamingServer {
    fn exec(&self, req: cri::ExecRequest) -> Result<String, tonic::Status> {
        self.mint(Pending::Exec(req))
    }

    fn attach(&self, req: cri::AttachRequest) -> Result<String, tonic::Status> {
        self.mint(Pending::Attach(req))
    }

    fn port_forward(&self, req: cri::PortForwardRequest) -> Result<String, tonic::Status> {
        self.mint(Pending::PortForward(req))
    }
}

/// Picks the first protocol the client offers that we support; a client
/// that offers none gets the protocol's oldest form (`None`).
/// What a connection over the cap reads before it is closed.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// Runs `conn`, dropping it (which closes the socket) if no request has
/// come in by `deadline`.
async fn until_request<F>(
    conn: F,
    got_request: &Notify,
    deadline: tokio::time::Instant,
) -> Result<(), hyper::Error>
where
    F: std::future::Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    tokio::select! {
        r = &mut conn => return r,
        _ = got_request.notified() => {}
        _ = tokio::time::sleep_until(deadline) => {
            debug!("streaming connection closed: no request headers in time");
            return Ok(());
        }
    }
    conn.await
}

fn negotiate(offered: &[String], supported: &[&str]) -> Result<Option<String>, String> {
    if offered.is_empty() {
        return Ok(None);
    }
    offered
        .iter()
        .find(|o| supported.contains(&o.as_str()))
        .map(|o| Some(o.clone()))
        .ok_or_else(|| {
            format!(
                "none of the offered protocols {offered:?} is supported; supported: {supported:?}\n"
            )
        })
}

fn hv(s: &str) -> hyper::header::HeaderValue {
    hyper::header::HeaderValue::from_str(s)
        .unwrap_or_else(|_| hyper::header::HeaderValue::from_static(""))
}

/// A response that ends its connection: every request either upgrades
/// (whose answer replaces the `Connection` header) or is the last one, so
/// no kept-alive connection idles past the header timeout.
pub(crate) fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(hyper::header::CONNECTION, hv("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_clients_order() {
        let offered = vec!["v9.channel.k8s.io".to_string(), "v4.channel.k8s.io".into()];
        assert_eq!(
            negotiate(&offered, remotecommand::PROTOCOLS)
                .unwrap()
                .as_deref(),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(negotiate(&[], remotecommand::PROTOCOLS).unwrap(), None);
        assert!(negotiate(&["v9".to_string()], remotecommand::PROTOCOLS).is_err());
    }
}
