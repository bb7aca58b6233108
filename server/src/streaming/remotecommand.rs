//! Exec and attach sessions (Kubernetes "remotecommand"), independent of
//! the transport: a session sees the client's stdin and resize events as
//! channels and sends stdout and stderr into channels; the transport
//! ([`serve_spdy`] here, or [`super::ws`]) maps those onto its streams and
//! reports the [`Outcome`] on the error stream in the negotiated
//! protocol's format.

use std::sync::Arc;
use std::time::Duration;

use gantry_monitor::wire::attach_wire;
use gantry_proto::v1 as cri;
use gantry_runtimeservice::oci::ExecStreams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use super::spdy::{Connection, IncomingStream};
use super::{Pending, StreamingServer};

/// Versions of the stream protocol spoken over SPDY, newest first (v5
/// exists only over WebSocket).
pub const PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exit(i32),
    Error(String),
}

impl Outcome {
    /// The error stream's content: a Kubernetes `Status` for v4 and later,
    /// plain text (nothing on success) before.
    pub fn encode(&self, protocol: Option<&str>, cmd: &[String]) -> Vec<u8> {
        let structured = matches!(protocol, Some("v4.channel.k8s.io" | "v5.channel.k8s.io"));
        let status = match self {
            Outcome::Exit(0) => {
                if !structured {
                    return Vec::new();
                }
                serde_json::json!({"metadata": {}, "status": "Success"})
            }
            Outcome::Exit(code) => {
                let message = format!(
                    "command terminated with non-zero exit code: error executing command {cmd:?}, exit code {code}"
                );
                if !structured {
                    return message.into_bytes();
                }
                serde_json::json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": message,
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
                })
            }
            Outcome::Error(msg) => {
                if !structured {
                    return msg.clone().into_bytes();
                }
                serde_json::json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": msg,
                    "reason": "InternalError",
                    "code": 500,
                })
            }
        };
        status.to_string().into_bytes()
    }
}

/// The client's side of a session, as channels.
#[derive(Default)]
pub struct SessionIo {
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    pub stdout: Option<mpsc::Sender<Vec<u8>>>,
    pub stderr: Option<mpsc::Sender<Vec<u8>>>,
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
}

/// Which streams a request asked for.
pub fn wanted(p: &Pending) -> (bool, bool, bool, bool) {
    match p {
        Pending::Exec(r) => (r.stdin, r.stdout, r.stderr && !r.tty, r.tty),
        Pending::Attach(r) => (r.stdin, r.stdout, r.stderr && !r.tty, r.tty),
        Pending::PortForward(_) => (false, false, false, false),
    }
}

pub async fn run(
    server: &StreamingServer,
    pending: &Pending,
    io: SessionIo,
    closed: watch::Receiver<bool>,
) -> Outcome {
    match pending {
        Pending::Exec(r) => run_exec(server, r, io, closed).await,
        Pending::Attach(r) => run_attach(server, r, io, closed).await,
        Pending::PortForward(_) => Outcome::Error("not a remote command".into()),
    }
}

async fn wait_closed(mut closed: watch::Receiver<bool>) {
    let _ = closed.wait_for(|c| *c).await;
}

/// Copies a reader into a channel until either end is done.
async fn pump_out(mut from: impl tokio::io::AsyncRead + Unpin, to: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.send(buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        }
    }
}

async fn run_exec(
    server: &StreamingServer,
    req: &cri::ExecRequest,
    mut io: SessionIo,
    closed: watch::Receiver<bool>,
) -> Outcome {
    let streams = ExecStreams {
        stdin: io.stdin.is_some(),
        stdout: io.stdout.is_some(),
        stderr: io.stderr.is_some(),
    };
    // A terminal's first size comes right after the streams open; waiting
    // briefly for it lets the command start with the right size instead of
    // racing a resize.
    let mut initial_size = None;
    if let Some(rx) = io.resize.as_mut() {
        if let Ok(Some(size)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            initial_size = Some(size);
        }
    }
    let mut session = match server
        .containers
        .exec_session(&req.container_id, &req.cmd, req.tty, streams, initial_size)
        .await
    {
        Ok(s) => s,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    info!(cmd = ?req.cmd, tty = req.tty, "exec session started");
    let mut tasks = Vec::new();
    if let (Some(mut rx), Some(mut w)) = (io.stdin.take(), session.stdin.take()) {
        tasks.push(tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                if w.write_all(&d).await.is_err() {
                    return;
                }
            }
            // The client's EOF reaches the process.
            let _ = w.shutdown().await;
        }));
    }
    if let (Some(mut rx), Some(r)) = (io.resize.take(), session.resize.clone()) {
        tasks.push(tokio::spawn(async move {
            while let Some((w, h)) = rx.recv().await {
                r.resize(w, h);
            }
        }));
    }
    let mut outputs = Vec::new();
    if let (Some(r), Some(tx)) = (session.stdout.take(), io.stdout.take()) {
        outputs.push(tokio::spawn(pump_out(r, tx)));
    }
    if let (Some(r), Some(tx)) = (session.stderr.take(), io.stderr.take()) {
        outputs.push(tokio::spawn(pump_out(r, tx)));
    }
    let outcome = tokio::select! {
        code = session.wait() => {
            // Output the command wrote before it ended still goes out; a
            // descendant holding the pipes open does not keep us waiting.
            let drain = futures_util::future::join_all(outputs.iter_mut());
            let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
            match code {
                Ok(c) => Outcome::Exit(c),
                Err(e) => Outcome::Error(format!("waiting for the command: {e}")),
            }
        }
        _ = wait_closed(closed) => {
            debug!("client went away; killing the exec'd command");
            session.kill().await;
            Outcome::Error("the client went away".into())
        }
    };
    for t in tasks.into_iter().chain(outputs) {
        t.abort();
    }
    info!(?outcome, "exec session ended");
    outcome
}

async fn run_attach(
    server: &StreamingServer,
    req: &cri::AttachRequest,
    mut io: SessionIo,
    closed: watch::Receiver<bool>,
) -> Outcome {
    let (sock, tty, _has_stdin) = match server.containers.attach(&req.container_id).await {
        Ok(s) => s,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let (mut rd, wr) = sock.into_split();
    let (to_monitor, mut frames) = mpsc::channel::<Vec<u8>>(32);
    let writer = tokio::spawn(async move {
        let mut wr = wr;
        while let Some(f) = frames.recv().await {
            if wr.write_all(&f).await.is_err() {
                break;
            }
        }
    });
    let stdout = io.stdout.take();
    let stderr = io.stderr.take();
    let reader = async move {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            for (kind, data) in attach_wire::decode(&mut buf) {
                let to = match kind {
                    attach_wire::STDOUT => stdout.as_ref(),
                    attach_wire::STDERR if !tty => stderr.as_ref(),
                    _ => None,
                };
                if let Some(to) = to {
                    let _ = to.send(data).await;
                }
            }
        }
    };
    let mut resize_task = None;
    if let Some(mut rx) = io.resize.take() {
        let tx = to_monitor.clone();
        resize_task = Some(tokio::spawn(async move {
            while let Some((w, h)) = rx.recv().await {
                let mut p = w.to_be_bytes().to_vec();
                p.extend_from_slice(&h.to_be_bytes());
                if tx
                    .send(attach_wire::encode(attach_wire::RESIZE, &p))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }));
    }
    let stdin = io.stdin.take();
    let input = async move {
        let Some(mut rx) = stdin else {
            return std::future::pending::<()>().await;
        };
        while let Some(d) = rx.recv().await {
            if to_monitor
                .send(attach_wire::encode(attach_wire::STDIN, &d))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = to_monitor
            .send(attach_wire::encode(attach_wire::STDIN_CLOSE, &[]))
            .await;
        // Let the close reach the monitor before the session ends.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    info!(tty, "attach session started");
    tokio::select! {
        // The container ended (its monitor closes every attach).
        _ = reader => {}
        // The client closed its stdin: the session is over, as with
        // kubelet's other runtimes.
        _ = input => {}
        _ = wait_closed(closed) => {}
    }
    writer.abort();
    if let Some(t) = resize_task {
        t.abort();
    }
    info!("attach session ended");
    Outcome::Exit(0)
}

/// Serves one exec or attach over SPDY: waits for the client's streams,
/// runs the session, reports its outcome and closes the connection.
pub async fn serve_spdy(
    server: Arc<StreamingServer>,
    mut conn: Connection,
    pending: Pending,
    protocol: Option<&str>,
) {
    let (stdin, stdout, stderr, tty) = wanted(&pending);
    let resize_supported = !matches!(
        protocol,
        None | Some("v2.channel.k8s.io" | "channel.k8s.io")
    );
    let mut error: Option<IncomingStream> = None;
    let mut s_in: Option<IncomingStream> = None;
    let mut s_out: Option<IncomingStream> = None;
    let mut s_err: Option<IncomingStream> = None;
    let mut s_resize: Option<IncomingStream> = None;
    let complete = |e: &Option<IncomingStream>,
                    i: &Option<IncomingStream>,
                    o: &Option<IncomingStream>,
                    r: &Option<IncomingStream>,
                    z: &Option<IncomingStream>| {
        e.is_some()
            && (!stdin || i.is_some())
            && (!stdout || o.is_some())
            && (!stderr || r.is_some())
            && (!(tty && resize_supported) || z.is_some())
    };
    let deadline = tokio::time::sleep(server.creation_timeout());
    tokio::pin!(deadline);
    while !complete(&error, &s_in, &s_out, &s_err, &s_resize) {
        tokio::select! {
            s = conn.streams.recv() => {
                let Some(s) = s else { return };
                match s.header("streamtype").unwrap_or_default() {
                    "error" => error = Some(s),
                    "stdin" => s_in = Some(s),
                    "stdout" => s_out = Some(s),
                    "stderr" => s_err = Some(s),
                    "resize" => s_resize = Some(s),
                    other => {
                        debug!(stream_type = other, "unexpected stream type; resetting it");
                        s.writer.reset().await;
                    }
                }
            }
            _ = &mut deadline => {
                debug!("the client did not open its streams in time");
                if let Some(e) = &error {
                    let _ = e.writer.send(Outcome::Error("timed out waiting for the client's streams".into()).encode(protocol, &[])).await;
                }
                conn.close().await;
                return;
            }
        }
    }
    let mut io = SessionIo::default();
    let mut forwards = Vec::new();
    if let Some(s) = s_in.take() {
        io.stdin = Some(s.data);
    }
    for (stream, slot) in [
        (s_out.take(), &mut io.stdout),
        (s_err.take(), &mut io.stderr),
    ] {
        if let Some(s) = stream {
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
            *slot = Some(tx);
            let w = s.writer.clone();
            forwards.push(tokio::spawn(async move {
                while let Some(d) = rx.recv().await {
                    if w.send(d).await.is_err() {
                        break;
                    }
                }
                w.finish().await;
            }));
        }
    }
    if let Some(s) = s_resize.take() {
        let (tx, rx) = mpsc::channel(4);
        io.resize = Some(rx);
        tokio::spawn(resize_events(s.data, tx));
    }
    let idle = server.idle_timeout();
    let outcome = tokio::select! {
        o = run(&server, &pending, io, conn.closed.clone()) => o,
        _ = conn.activity.expired(idle) => {
            debug!(idle_secs = idle.as_secs(), "closing an idle session");
            Outcome::Error(format!("the session was idle for {}s", idle.as_secs()))
        }
    };
    // Output is flushed and its streams finished before the status goes out.
    for f in forwards {
        let _ = f.await;
    }
    let cmd = match &pending {
        Pending::Exec(r) => r.cmd.clone(),
        _ => Vec::new(),
    };
    if let Some(e) = error {
        let body = outcome.encode(protocol, &cmd);
        if !body.is_empty() {
            let _ = e.writer.send(body).await;
        }
        e.writer.finish().await;
    }
    conn.close().await;
}

/// Decodes the resize stream: JSON objects `{"Width":w,"Height":h}`, one
/// after another.
pub async fn resize_events(mut data: mpsc::Receiver<Vec<u8>>, tx: mpsc::Sender<(u16, u16)>) {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u16,
        #[serde(rename = "Height")]
        height: u16,
    }
    let mut buf = Vec::new();
    while let Some(d) = data.recv().await {
        buf.extend_from_slice(&d);
        let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<Size>();
        let mut used = 0;
        loop {
            match stream.next() {
                Some(Ok(s)) => {
                    if tx.send((s.width, s.height)).await.is_err() {
                        return;
                    }
                    used = stream.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => return,
                None => break,
            }
        }
        buf.drain(..used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_encoded_per_protocol() {
        let v4 = Some("v4.channel.k8s.io");
        let ok: serde_json::Value =
            serde_json::from_slice(&Outcome::Exit(0).encode(v4, &[])).unwrap();
        assert_eq!(ok["status"], "Success");
        let bad: serde_json::Value =
            serde_json::from_slice(&Outcome::Exit(3).encode(v4, &["false".into()])).unwrap();
        assert_eq!(bad["status"], "Failure");
        assert_eq!(bad["reason"], "NonZeroExitCode");
        assert_eq!(bad["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(bad["details"]["causes"][0]["message"], "3");
        assert!(Outcome::Exit(0)
            .encode(Some("v2.channel.k8s.io"), &[])
            .is_empty());
        let old = String::from_utf8(Outcome::Exit(3).encode(None, &[])).unwrap();
        assert!(old.contains("exit code 3"), "{old}");
    }

    #[tokio::test]
    async fn resize_events_split_across_frames_are_decoded() {
        let (data_tx, data_rx) = mpsc::channel(4);
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(resize_events(data_rx, tx));
        data_tx.send(br#"{"Width":80,"Hei"#.to_vec()).await.unwrap();
        data_tx
            .send(b"ght\":24}\n{\"Width\":100,\"Height\":40}\n".to_vec())
            .await
            .unwrap();
        assert_eq!(rx.recv().await, Some((80, 24)));
        assert_eq!(rx.recv().await, Some((100, 40)));
    }
}
