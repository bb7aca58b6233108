//! The WebSocket transports (`crictl --transport websocket`, and
//! kubelet's newer clients):
//! - remotecommand over `v5.channel.k8s.io` / `v4.channel.k8s.io` (and the
//!   older channel protocols): binary messages whose first byte is the
//!   channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize); in v5 the
//!   message `[255, ch]` closes channel `ch` (the client's stdin EOF);
//! - port forward tunnelled as SPDY inside binary messages
//!   (`SPDY/3.1+portforward.k8s.io`, what client-go's WebSocket dialer
//!   uses), served by the same SPDY code;
//! - port forward over `v4.channel.k8s.io` with `?port=` query
//!   parameters: channels `2i` (data) and `2i+1` (error) for the i-th port,
//!   each opened by the server with the port as two little-endian bytes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, Instrument, Span};

use super::remotecommand::{self, Outcome, SessionIo};
use super::{reply, Pending, StreamingServer};

const REMOTECOMMAND: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
const PORTFORWARD: &[&str] = &[SPDY_TUNNEL, "v4.channel.k8s.io", "portforward.k8s.io"];

const CLOSE_CHANNEL: u8 = 255;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

pub fn upgrade(
    server: Arc<StreamingServer>,
    req: Request<Incoming>,
    pending: Pending,
    span: Span,
) -> Response<Full<Bytes>> {
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
    else {
        return reply(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let offered: Vec<String> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .collect();
    let supported = match pending {
        Pending::PortForward(_) => PORTFORWARD,
        _ => REMOTECOMMAND,
    };
    let Some(protocol) = offered
        .iter()
        .find(|o| supported.contains(&o.as_str()))
        .cloned()
    else {
        return reply(
            StatusCode::BAD_REQUEST,
            &format!("none of the offered subprotocols {offered:?} is supported: {supported:?}\n"),
        );
    };
    let ports: Vec<u16> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("port="))
        .filter_map(|p| p.parse().ok())
        .collect();
    // The connection's slot lives as long as the session.
    let slot = req.extensions().get::<super::ConnectionSlot>().cloned();
    let on_upgrade = hyper::upgrade::on(req);
    let chosen = protocol.clone();
    tokio::spawn(
        async move {
            let _slot = slot;
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let _session = server.sessions.open(pending.kind());
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            match pending {
                Pending::PortForward(req) if chosen == SPDY_TUNNEL => {
                    let conn = super::spdy::Connection::serve(WsIo::new(ws));
                    super::portforward::serve_spdy(server, conn, req).await;
                }
                Pending::PortForward(req) => port_forward_channels(server, ws, req, ports).await,
                other => remotecommand_ws(server, ws, other, &chosen).await,
            }
        }
        .instrument(span),
    );
    let mut r = reply(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.insert(hyper::header::CONNECTION, super::hv("Upgrade"));
    h.insert(hyper::header::UPGRADE, super::hv("websocket"));
    h.insert(
        "Sec-WebSocket-Accept",
        super::hv(&tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key)),
    );
    h.insert("Sec-WebSocket-Protocol", super::hv(&protocol));
    r
}

/// One writer task owns the socket's sink; everything else queues frames.
fn split(
    ws: Ws,
) -> (
    mpsc::Sender<Message>,
    futures_util::stream::SplitStream<Ws>,
    watch::Receiver<bool>,
) {
    let (mut sink, stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(32);
    let (closed_tx, closed_rx) = watch::channel(false);
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let is_close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || is_close {
                break;
            }
        }
        let _ = sink.close().await;
        let _ = closed_tx.send(true);
    });
    (tx, stream, closed_rx)
}

/// Clients take only a normal closure as the end of their streams.
fn normal_close() -> Message {
    Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    }))
}

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut m = Vec::with_capacity(1 + data.len());
    m.push(channel);
    m.extend_from_slice(data);
    Message::Binary(m.into())
}

async fn remotecommand_ws(server: Arc<StreamingServer>, ws: Ws, pending: Pending, protocol: &str) {
    let (stdin, stdout, stderr, tty) = remotecommand::wanted(&pending);
    let (out, mut incoming, mut writer_closed) = split(ws);
    let (gone_tx, gone_rx) = watch::channel(false);
    let activity = super::Activity::default();
    let mut io = SessionIo::default();
    let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(16);
    let (resize_data_tx, resize_data_rx) = mpsc::channel::<Vec<u8>>(4);
    if stdin {
        io.stdin = Some(in_rx);
    }
    if tty {
        let (tx, rx) = mpsc::channel(4);
        io.resize = Some(rx);
        tokio::spawn(remotecommand::resize_events(resize_data_rx, tx));
    }
    let mut forwards = Vec::new();
    for (wanted, channel, slot) in [(stdout, 1u8, &mut io.stdout), (stderr, 2u8, &mut io.stderr)] {
        if wanted {
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
            *slot = Some(tx);
            let out = out.clone();
            let activity = activity.clone();
            forwards.push(tokio::spawn(async move {
                while let Some(d) = rx.recv().await {
                    activity.touch();
                    if out.send(framed(channel, &d)).await.is_err() {
                        break;
                    }
                }
            }));
        }
    }
    // Reads the client's frames: stdin, resize, close signals.
    let seen = activity.clone();
    let reader = tokio::spawn(async move {
        let mut in_tx = Some(in_tx);
        while let Some(msg) = incoming.next().await {
            seen.touch();
            let data = match msg {
                Ok(Message::Binary(d)) => d.to_vec(),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let Some((&channel, rest)) = data.split_first() else {
                continue;
            };
            tracing::debug!(channel, bytes = rest.len(), "websocket frame");
            match channel {
                0 => {
                    if let Some(tx) = &in_tx {
                        if !rest.is_empty() && tx.send(rest.to_vec()).await.is_err() {
                            in_tx = None;
                        }
                    }
                }
                4 => {
                    let _ = resize_data_tx.send(rest.to_vec()).await;
                }
                CLOSE_CHANNEL if rest.first() == Some(&0) => in_tx = None,
                _ => {}
            }
        }
        let _ = gone_tx.send(true);
    });
    let idle = server.idle_timeout();
    let outcome = tokio::select! {
        o = remotecommand::run(&server, &pending, io, gone_rx) => o,
        _ = writer_closed.wait_for(|c| *c) => Outcome::Error("the client went away".into()),
        _ = activity.expired(idle) => {
            Outcome::Error(format!("the session was idle for {}s", idle.as_secs()))
        }
    };
    for f in forwards {
        let _ = f.await;
    }
    let cmd = match &pending {
        Pending::Exec(r) => r.cmd.clone(),
        _ => Vec::new(),
    };
    let body = outcome.encode(Some(protocol), &cmd);
    if !body.is_empty() {
        let _ = out.send(framed(3, &body)).await;
    }
    let _ = out.send(normal_close()).await;
    reader.abort();
}

/// Port forward with channel framing: each requested port gets a data and
/// an error channel and one connection into the pod.
async fn port_forward_channels(
    server: Arc<StreamingServer>,
    ws: Ws,
    req: gantry_proto::v1::PortForwardRequest,
    ports: Vec<u16>,
) {
    let netns = match server.containers.port_forward_target(&req.pod_sandbox_id) {
        Ok(n) => n,
        Err(e) => {
            debug!(error = %e, "pod not available for port forwarding");
            return;
        }
    };
    let (out, mut incoming, _closed) = split(ws);
    let mut to_pod: Vec<mpsc::Sender<Vec<u8>>> = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let data_ch = (2 * i) as u8;
        let err_ch = data_ch + 1;
        let _ = out.send(framed(data_ch, &port.to_le_bytes())).await;
        let _ = out.send(framed(err_ch, &port.to_le_bytes())).await;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
        to_pod.push(tx);
        let out = out.clone();
        let netns = netns.clone();
        let pod = req.pod_sandbox_id.clone();
        let allowed = req.port.is_empty() || req.port.contains(&(port as i32));
        tokio::spawn(async move {
            let conn = if allowed {
                gantry_runtimeservice::exec::connect_port(netns, port).await
            } else {
                Err(std::io::Error::other("port not requested"))
            };
            let tcp = match conn {
                Ok(t) => t,
                Err(e) => {
                    let msg = format!("error forwarding port {port} to pod {pod}: {e}");
                    let _ = out.send(framed(err_ch, msg.as_bytes())).await;
                    return;
                }
            };
            let (mut rd, mut wr) = tcp.into_split();
            let up = async {
                while let Some(d) = rx.recv().await {
                    if tokio::io::AsyncWriteExt::write_all(&mut wr, &d)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut wr).await;
                std::future::pending::<()>().await
            };
            let down = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match tokio::io::AsyncReadExt::read(&mut rd, &mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if out.send(framed(data_ch, &buf[..n])).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            tokio::select! { _ = up => {}, _ = down => {} }
        });
    }
    while let Some(Ok(msg)) = incoming.next().await {
        let data = match msg {
            Message::Binary(d) => d.to_vec(),
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, rest)) = data.split_first() else {
            continue;
        };
        if channel % 2 == 0 {
            if let Some(tx) = to_pod.get(channel as usize / 2) {
                let _ = tx.send(rest.to_vec()).await;
            }
        }
    }
    let _ = out.send(normal_close()).await;
}

/// A WebSocket seen as a byte stream, for the SPDY tunnel.
pub struct WsIo {
    ws: Ws,
    rbuf: Vec<u8>,
    rpos: usize,
}

impl WsIo {
    fn new(ws: Ws) -> Self {
        WsIo {
            ws,
            rbuf: Vec::new(),
            rpos: 0,
        }
    }
}

impl AsyncRead for WsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if self.rpos < self.rbuf.len() {
                let n = buf.remaining().min(self.rbuf.len() - self.rpos);
                let start = self.rpos;
                buf.put_slice(&self.rbuf[start..start + n]);
                self.rpos += n;
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) | Poll::Ready(Some(Ok(Message::Close(_)))) => {
                    return Poll::Ready(Ok(()))
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(std::io::Error::other(e))),
                Poll::Ready(Some(Ok(Message::Binary(d)))) => {
                    self.rbuf = d.to_vec();
                    self.rpos = 0;
                }
                Poll::Ready(Some(Ok(_))) => continue,
            }
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let ws = Pin::new(&mut self.ws);
        match ws.poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
            Poll::Ready(Ok(())) => {}
        }
        match Pin::new(&mut self.ws).start_send(Message::Binary(data.to_vec().into())) {
            Ok(()) => Poll::Ready(Ok(data.len())),
            Err(e) => Poll::Ready(Err(std::io::Error::other(e))),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_flush(cx)
            .map_err(std::io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_close(cx)
            .map_err(std::io::Error::other)
    }
}
