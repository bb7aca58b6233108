//! A small client for gantry's streaming server, as kubelet and crictl use
//! it: the HTTP upgrade, then SPDY/3.1 streams (framed by the server's own
//! codec) or WebSocket channels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gantry::streaming::spdy::{Codec, Frame, FLAG_FIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// `host:port` and path of a streaming URL.
fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

/// A connection to the streaming server: plain TCP or TLS.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// The status line and headers of an upgrade answer, and the connection.
pub struct Upgraded {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub stream: Option<Box<dyn Io>>,
}

/// Sends a SPDY upgrade request offering `protocols`.
pub async fn spdy_upgrade(url: &str, protocols: &[&str]) -> Upgraded {
    spdy_upgrade_with(url, protocols, None).await
}

/// Connects to `url`; an `https` URL is spoken over TLS trusting only
/// `ca_pem`.
pub async fn connect(url: &str, ca_pem: Option<&[u8]>) -> Box<dyn Io> {
    let (host, _) = split_url(url);
    let s = TcpStream::connect(&host)
        .await
        .expect("connect to the streaming server");
    // As Go's clients (kubelet, crictl) do: small frames go out at once.
    let _ = s.set_nodelay(true);
    if !url.starts_with("https://") {
        return Box::new(s);
    }
    use rustls_pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.expect("a CA for https")) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(
        host.rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&host)
            .to_string(),
    )
    .unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, s)
        .await
        .expect("TLS handshake with the streaming server");
    Box::new(tls)
}

pub async fn spdy_upgrade_with(url: &str, protocols: &[&str], ca_pem: Option<&[u8]>) -> Upgraded {
    let (host, path) = split_url(url);
    let mut s = connect(url, ca_pem).await;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if status == 101 {
        return Upgraded {
            status,
            headers,
            body: String::new(),
            stream: Some(s),
        };
    }
    let mut body = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut body)).await;
    Upgraded {
        status,
        headers,
        body,
        stream: None,
    }
}

/// What the client sees on a SPDY connection.
#[derive(Debug)]
pub enum Event {
    Reply(u32),
    Data(u32, Vec<u8>),
    Fin(u32),
    Reset(u32),
    GoAway,
    Closed,
}

/// The client end of a SPDY connection.
pub struct SpdyClient {
    codec: Arc<Mutex<Codec>>,
    wr: tokio::io::WriteHalf<Box<dyn Io>>,
    pub events: mpsc::UnboundedReceiver<Event>,
    next_id: u32,
}

impl SpdyClient {
    pub fn new(stream: Box<dyn Io>) -> SpdyClient {
        let (mut rd, wr) = tokio::io::split(stream);
        let codec = Arc::new(Mutex::new(Codec::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        let c = codec.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                loop {
                    let f = c.lock().unwrap().decode(&mut buf);
                    let ev = match f {
                        Ok(Some(Frame::SynReply { stream_id, .. })) => Event::Reply(stream_id),
                        Ok(Some(Frame::Data {
                            stream_id,
                            flags,
                            data,
                        })) => {
                            if !data.is_empty() {
                                let _ = tx.send(Event::Data(stream_id, data));
                            }
                            if flags & FLAG_FIN == 0 {
                                continue;
                            }
                            Event::Fin(stream_id)
                        }
                        Ok(Some(Frame::RstStream { stream_id, .. })) => Event::Reset(stream_id),
                        Ok(Some(Frame::GoAway { .. })) => Event::GoAway,
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(e) => panic!("bad frame from the server: {e}"),
                    };
                    let _ = tx.send(ev);
                }
                match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Event::Closed);
                        return;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        SpdyClient {
            codec,
            wr,
            events: rx,
            next_id: 1,
        }
    }

    async fn write(&mut self, f: Frame) {
        let bytes = self.codec.lock().unwrap().encode(&f).unwrap();
        // A server that already closed is the test's business to notice.
        let _ = self.wr.write_all(&bytes).await;
    }

    /// Opens a stream with `headers`; returns its id.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.write(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            flags: 0,
            headers,
        })
        .await;
        id
    }

    pub async fn send(&mut self, id: u32, data: &[u8]) {
        self.write(Frame::Data {
            stream_id: id,
            flags: 0,
            data: data.to_vec(),
        })
        .await;
    }

    pub async fn finish(&mut self, id: u32) {
        self.write(Frame::Data {
            stream_id: id,
            flags: FLAG_FIN,
            data: Vec::new(),
        })
        .await;
    }

    /// Drops the connection without a goodbye, as a client that dies does.
    pub async fn abort(mut self) {
        let _ = self.wr.shutdown().await;
    }

    /// Collects data per stream until the connection ends (or `within`
    /// passes).
    pub async fn collect(&mut self, within: Duration) -> HashMap<u32, Vec<u8>> {
        let mut out: HashMap<u32, Vec<u8>> = HashMap::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Data(id, d))) => out.entry(id).or_default().extend(d),
                Ok(Some(Event::GoAway | Event::Closed)) | Ok(None) | Err(_) => return out,
                Ok(Some(_)) => {}
            }
        }
    }

    /// Waits for data on `id` containing `needle`; returns what arrived.
    pub async fn wait_for(&mut self, id: u32, needle: &str, within: Duration) -> String {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if String::from_utf8_lossy(&seen).contains(needle) {
                return String::from_utf8_lossy(&seen).to_string();
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Data(sid, d))) if sid == id => seen.extend(d),
                Ok(Some(Event::GoAway | Event::Closed)) | Ok(None) | Err(_) => {
                    return String::from_utf8_lossy(&seen).to_string()
                }
                Ok(Some(_)) => {}
            }
        }
    }
}

/// What an exec or attach session produced.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// The error stream: a `Status` JSON for v4 and later.
    pub error: String,
}

impl Output {
    /// The exit code the error stream reports (0 for success).
    pub fn exit_code(&self) -> Option<i32> {
        let v: serde_json::Value = serde_json::from_str(&self.error).ok()?;
        if v["status"] == "Success" {
            return Some(0);
        }
        v["details"]["causes"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "ExitCode")?["message"]
            .as_str()?
            .parse()
            .ok()
    }
}

/// Options of a remote command session, as the client asks for them.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub stdin: Option<Vec<u8>>,
    /// Keep stdin open (send no EOF) after the data.
    pub keep_stdin_open: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub resize: Option<(u16, u16)>,
}

/// Runs a whole exec or attach over SPDY with `v4.channel.k8s.io`.
pub async fn spdy_session(url: &str, s: &Session, within: Duration) -> Output {
    spdy_session_with(url, s, within, None).await
}

pub async fn spdy_session_with(
    url: &str,
    s: &Session,
    within: Duration,
    ca_pem: Option<&[u8]>,
) -> Output {
    let up = spdy_upgrade_with(url, &["v4.channel.k8s.io"], ca_pem).await;
    assert_eq!(up.status, 101, "upgrade refused: {}", up.body);
    assert_eq!(
        up.headers
            .get("x-stream-protocol-version")
            .map(String::as_str),
        Some("v4.channel.k8s.io")
    );
    let mut c = SpdyClient::new(up.stream.unwrap());
    let err = c.open(&[("streamType", "error")]).await;
    let stdin = match s.stdin {
        Some(_) => Some(c.open(&[("streamType", "stdin")]).await),
        None => None,
    };
    let out = if s.stdout {
        Some(c.open(&[("streamType", "stdout")]).await)
    } else {
        None
    };
    let errs = if s.stderr {
        Some(c.open(&[("streamType", "stderr")]).await)
    } else {
        None
    };
    if s.tty {
        let r = c.open(&[("streamType", "resize")]).await;
        if let Some((w, h)) = s.resize {
            c.send(r, format!("{{\"Width\":{w},\"Height\":{h}}}\n").as_bytes())
                .await;
        }
    }
    if let (Some(id), Some(data)) = (stdin, &s.stdin) {
        if !data.is_empty() {
            c.send(id, data).await;
        }
        if !s.keep_stdin_open {
            c.finish(id).await;
        }
    }
    let got = c.collect(within).await;
    let text = |id: Option<u32>| {
        id.and_then(|i| got.get(&i))
            .map(|d| String::from_utf8_lossy(d).to_string())
            .unwrap_or_default()
    };
    Output {
        stdout: text(out),
        stderr: text(errs),
        error: text(Some(err)),
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens a WebSocket to `url` offering `protocols`; returns the socket and
/// the protocol the server chose, or the HTTP status of a refusal.
pub async fn ws_connect(url: &str, protocols: &[&str]) -> Result<(Ws, String), u16> {
    let (host, _) = split_url(url);
    let stream = TcpStream::connect(&host).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let mut req = format!("ws://{}", url.strip_prefix("http://").unwrap_or(url))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        protocols.join(", ").parse().unwrap(),
    );
    match tokio_tungstenite::client_async(req, stream).await {
        Ok((ws, resp)) => {
            let chosen = resp
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            Ok((ws, chosen))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("websocket handshake: {e}"),
    }
}

/// Runs a whole exec or attach over WebSocket `v5.channel.k8s.io`.
pub async fn ws_session(url: &str, s: &Session, within: Duration) -> Output {
    let (mut ws, chosen) = ws_connect(url, &["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .await
        .expect("websocket upgrade");
    assert_eq!(chosen, "v5.channel.k8s.io");
    if let Some((w, h)) = s.resize {
        let mut m = vec![4u8];
        m.extend(format!("{{\"Width\":{w},\"Height\":{h}}}").as_bytes());
        ws.send(Message::Binary(m.into())).await.unwrap();
    }
    if let Some(data) = &s.stdin {
        if !data.is_empty() {
            let mut m = vec![0u8];
            m.extend_from_slice(data);
            ws.send(Message::Binary(m.into())).await.unwrap();
        }
        if !s.keep_stdin_open {
            ws.send(Message::Binary(vec![255u8, 0].into()))
                .await
                .unwrap();
        }
    }
    let mut out = Output::default();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
        let Message::Binary(d) = m else {
            if matches!(m, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Some((&ch, rest)) = d.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(rest);
        match ch {
            1 => out.stdout.push_str(&text),
            2 => out.stderr.push_str(&text),
            3 => out.error.push_str(&text),
            _ => {}
        }
    }
    out
}

/// What one forwarded connection produced.
#[derive(Debug, Default)]
pub struct Forwarded {
    /// Bytes the pod sent back.
    pub bytes: u64,
    /// The first of them, up to the `keep` asked for.
    pub head: Vec<u8>,
    /// What the error stream said.
    pub error: String,
    /// Both the data and the error stream were finished by the server
    /// (rather than the connection breaking or the time running out).
    pub finished: bool,
}

/// One connection forwarded over SPDY to `port`: sends `request`, then
/// counts what the pod answers until the server finishes both streams.
pub async fn port_forward(
    url: &str,
    port: u16,
    request: &[u8],
    keep: usize,
    within: Duration,
) -> Forwarded {
    let up = spdy_upgrade(url, &["portforward.k8s.io"]).await;
    assert_eq!(up.status, 101, "upgrade refused: {}", up.body);
    let mut c = SpdyClient::new(up.stream.unwrap());
    let port = port.to_string();
    let err = c
        .open(&[("streamType", "error"), ("port", &port), ("requestID", "0")])
        .await;
    c.finish(err).await;
    let data = c
        .open(&[("streamType", "data"), ("port", &port), ("requestID", "0")])
        .await;
    c.send(data, request).await;
    let mut out = Forwarded::default();
    let mut error = Vec::new();
    let (mut data_done, mut err_done) = (false, false);
    let deadline = tokio::time::Instant::now() + within;
    while !(data_done && err_done) {
        match tokio::time::timeout_at(deadline, c.events.recv()).await {
            Ok(Some(Event::Data(id, d))) if id == data => {
                out.bytes += d.len() as u64;
                let room = keep.saturating_sub(out.head.len());
                out.head.extend_from_slice(&d[..room.min(d.len())]);
            }
            Ok(Some(Event::Data(id, d))) if id == err => error.extend(d),
            Ok(Some(Event::Fin(id))) if id == data => data_done = true,
            Ok(Some(Event::Fin(id))) if id == err => err_done = true,
            Ok(Some(Event::GoAway | Event::Closed)) | Ok(None) | Err(_) => break,
            Ok(Some(_)) => {}
        }
    }
    out.finished = data_done && err_done;
    out.error = String::from_utf8_lossy(&error).to_string();
    out
}
