//! Exec, attach and port forward end to end: the RPCs mint URLs, and a
//! client speaking SPDY/3.1 and WebSocket (as kubelet and crictl do) drives
//! real containers on runc through gantry's streaming server.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gantry_e2e::fixture::{create_and_start, remove_pod, BusyboxEnv};
use gantry_e2e::require_host;
use gantry_e2e::stream::{self, Session, SpdyClient};
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    AttachRequest, ExecRequest, ExecSyncRequest, PodSandboxStatusRequest, PortForwardRequest,
    StopContainerRequest,
};
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::Channel;
use tonic::Code;

const T: Duration = Duration::from_secs(20);

type Env = BusyboxEnv;

async fn setup(extra_yaml: &str) -> Env {
    BusyboxEnv::start("streaming", extra_yaml).await
}

/// A ready pod with one container that sleeps; returns the pod's and the
/// container's IDs.
async fn pod_with_box(
    env: &Env,
    rt: &mut RuntimeServiceClient<Channel>,
    name: &str,
) -> (String, String) {
    let (pod_id, pod_cfg) = env.start_pod(rt, name).await;
    let id = create_and_start(rt, &pod_id, &pod_cfg, env.container("box", "sleep 1000")).await;
    (pod_id, id)
}

async fn exec_url(rt: &mut RuntimeServiceClient<Channel>, req: ExecRequest) -> String {
    rt.exec(req).await.unwrap().into_inner().url
}

/// The streaming URL of an attach to `id`'s output (stderr apart unless
/// on a terminal), and its stdin if asked.
async fn attach_url(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    stdin: bool,
    tty: bool,
) -> String {
    rt.attach(AttachRequest {
        container_id: id.into(),
        stdin,
        stdout: true,
        stderr: !tty,
        tty,
    })
    .await
    .unwrap()
    .into_inner()
    .url
}

fn exec_req(id: &str, cmd: &[&str], s: &Session) -> ExecRequest {
    ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|c| c.to_string()).collect(),
        tty: s.tty,
        stdin: s.stdin.is_some(),
        stdout: s.stdout,
        stderr: s.stderr,
    }
}

async fn ps(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> String {
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec![
                "busybox".into(),
                "ps".into(),
                "-o".into(),
                "pid,stat,args".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    String::from_utf8_lossy(&r.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_spdy_and_websocket() {
    let env = setup("streaming:\n  token_ttl_secs: 2\n").await;
    let mut rt = env.g.runtime().await;
    let (pod_id, id) = pod_with_box(&env, &mut rt, "exec").await;

    let out_only = Session {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    for ws in [false, true] {
        let session = |url: String, s: Session| async move {
            if ws {
                stream::ws_session(&url, &s, T).await
            } else {
                stream::spdy_session(&url, &s, T).await
            }
        };
        // stdout and a zero exit.
        let url = exec_url(&mut rt, exec_req(&id, &["echo", "hi"], &out_only)).await;
        let o = session(url, out_only.clone()).await;
        assert_eq!(
            (o.stdout.as_str(), o.exit_code()),
            ("hi\n", Some(0)),
            "ws={ws} {o:?}"
        );

        // stderr kept apart, and a non-zero exit code in the Status.
        let cmd = ["sh", "-c", "echo out; echo err >&2; exit 3"];
        let url = exec_url(&mut rt, exec_req(&id, &cmd, &out_only)).await;
        let o = session(url, out_only.clone()).await;
        assert_eq!(o.stdout, "out\n", "ws={ws} {o:?}");
        assert_eq!(o.stderr, "err\n", "ws={ws} {o:?}");
        assert_eq!(o.exit_code(), Some(3), "ws={ws} {o:?}");
        assert!(o.error.contains("NonZeroExitCode"), "{o:?}");

        // stdin reaches the process, and its EOF ends `cat`.
        let s = Session {
            stdin: Some(b"hello through stdin\n".to_vec()),
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let url = exec_url(&mut rt, exec_req(&id, &["cat"], &s)).await;
        let o = session(url, s).await;
        assert_eq!(o.stdout, "hello through stdin\n", "ws={ws} {o:?}");
        assert_eq!(o.exit_code(), Some(0), "ws={ws} {o:?}");

        // A terminal of the size the client asked for. (runc relays the
        // command's terminal and may translate a newline written before it
        // set the relay up twice: CR CR LF, which a terminal shows alike.)
        let (w, h) = if ws { (101, 31) } else { (120, 40) };
        let s = Session {
            stdin: Some(Vec::new()),
            keep_stdin_open: true,
            stdout: true,
            tty: true,
            resize: Some((w, h)),
            ..Default::default()
        };
        let url = exec_url(&mut rt, exec_req(&id, &["busybox", "stty", "size"], &s)).await;
        let o = session(url, s).await;
        assert_eq!(o.stdout.trim_end(), format!("{h} {w}"), "ws={ws} {o:?}");
        assert!(
            o.stdout.ends_with("\r\n"),
            "a terminal ends lines with CRLF: {o:?}"
        );
        assert_eq!(o.exit_code(), Some(0));
    }

    // Tokens: single use, expiring, bound to their verb; misses are 404s
    // that say nothing.
    let url = exec_url(&mut rt, exec_req(&id, &["true"], &out_only)).await;
    let o = stream::spdy_session(&url, &out_only, T).await;
    assert_eq!(o.exit_code(), Some(0));
    let again = stream::spdy_upgrade(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(again.status, 404, "a token works once");
    assert!(!again.body.contains(&id), "{}", again.body);
    let url = exec_url(&mut rt, exec_req(&id, &["true"], &out_only)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        stream::spdy_upgrade(&url, &["v4.channel.k8s.io"])
            .await
            .status,
        404,
        "an unused token expires"
    );
    let url = exec_url(&mut rt, exec_req(&id, &["true"], &out_only)).await;
    let wrong_verb = url.replace("/exec/", "/attach/");
    assert_eq!(
        stream::spdy_upgrade(&wrong_verb, &["v4.channel.k8s.io"])
            .await
            .status,
        404
    );
    let url = exec_url(&mut rt, exec_req(&id, &["true"], &out_only)).await;
    let refused = stream::spdy_upgrade(&url, &["v9.channel.k8s.io"]).await;
    assert_eq!(refused.status, 403, "an unknown protocol is refused");

    // A client that goes away takes its command with it: killed and
    // reaped, no zombie left in the container.
    let s = Session {
        stdout: true,
        ..Default::default()
    };
    let url = exec_url(&mut rt, exec_req(&id, &["sleep", "4242"], &s)).await;
    let up = stream::spdy_upgrade(&url, &["v4.channel.k8s.io"]).await;
    let mut c = SpdyClient::new(up.stream.unwrap());
    c.open(&[("streamType", "error")]).await;
    c.open(&[("streamType", "stdout")]).await;
    let mut seen = false;
    for _ in 0..50 {
        if ps(&mut rt, &id).await.contains("sleep 4242") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the exec'd command runs");
    c.abort().await;
    let mut gone = false;
    for _ in 0..100 {
        let p = ps(&mut rt, &id).await;
        if !p.contains("4242") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "the command outlived its client: {}",
        ps(&mut rt, &id).await
    );

    // Many sessions at once, and no descriptor left behind by them.
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", env.g.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = fds();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let word = format!("session-{i}");
        let url = exec_url(&mut rt, exec_req(&id, &["echo", &word], &out_only)).await;
        let s = out_only.clone();
        tasks.push(tokio::spawn(async move {
            let o = stream::spdy_session(&url, &s, Duration::from_secs(60)).await;
            (word, o)
        }));
    }
    for t in tasks {
        let (word, o) = t.await.unwrap();
        assert_eq!(o.stdout, format!("{word}\n"), "{o:?}");
        assert_eq!(o.exit_code(), Some(0));
    }
    let mut after = fds();
    for _ in 0..50 {
        if after <= before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = fds();
    }
    assert!(
        after <= before + 2,
        "descriptors leaked: {before} before, {after} after"
    );

    // Bad input.
    let e = rt.exec(exec_req(&id, &[], &out_only)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = rt
        .exec(exec_req("nonexistent", &["true"], &out_only))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let mut tty_err = exec_req(&id, &["true"], &out_only);
    tty_err.tty = true;
    assert_eq!(
        rt.exec(tty_err).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let nothing = Session::default();
    assert_eq!(
        rt.exec(exec_req(&id, &["true"], &nothing))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let e = rt
        .exec(exec_req(&id, &["true"], &out_only))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = rt
        .attach(AttachRequest {
            container_id: id.clone(),
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    remove_pod(&mut rt, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_to_running_containers() {
    let env = setup("").await;
    let mut rt = env.g.runtime().await;
    let (pod_id, pod_cfg) = env.start_pod(&mut rt, "attach").await;

    // A container that prints on its own: two clients at once both see it,
    // and the log file keeps getting every line.
    let ticker = create_and_start(
        &mut rt,
        &pod_id,
        &pod_cfg,
        env.container(
            "ticker",
            "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
        ),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let url = attach_url(&mut rt, &ticker, false, false).await;
        let up = stream::spdy_upgrade(&url, &["v4.channel.k8s.io"]).await;
        assert_eq!(up.status, 101);
        let mut c = SpdyClient::new(up.stream.unwrap());
        c.open(&[("streamType", "error")]).await;
        let out = c.open(&[("streamType", "stdout")]).await;
        c.open(&[("streamType", "stderr")]).await;
        clients.push((c, out));
    }
    for (c, out) in clients.iter_mut() {
        let seen = c.wait_for(*out, "tick", T).await;
        assert!(seen.contains("tick"), "{seen:?}");
    }
    drop(clients);
    let log = env.logs.path().join("attach/ticker.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let ticks: Vec<u32> = text
        .lines()
        .filter_map(|l| l.rsplit_once("tick ").and_then(|(_, n)| n.parse().ok()))
        .collect();
    assert!(ticks.len() >= 2, "{text}");
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "attaching must not lose or reorder log lines: {ticks:?}"
    );
    assert!(text.lines().all(|l| l.contains(" stdout F ")), "{text}");

    // A shell on stdin: what the client types runs, and closing the
    // client's stdin ends the session.
    let mut shell = env.container("shell", "");
    shell.command = vec!["/bin/sh".into()];
    shell.stdin = true;
    let shell = create_and_start(&mut rt, &pod_id, &pod_cfg, shell).await;
    let url = attach_url(&mut rt, &shell, true, false).await;
    let up = stream::spdy_upgrade(&url, &["v4.channel.k8s.io"]).await;
    let mut c = SpdyClient::new(up.stream.unwrap());
    let err = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let out = c.open(&[("streamType", "stdout")]).await;
    c.open(&[("streamType", "stderr")]).await;
    c.send(stdin, b"echo hello from attach\n").await;
    let seen = c.wait_for(out, "hello from attach", T).await;
    assert!(seen.contains("hello from attach"), "{seen:?}");
    c.finish(stdin).await;
    let rest = c.collect(T).await;
    let status =
        String::from_utf8_lossy(rest.get(&err).map(Vec::as_slice).unwrap_or_default()).to_string();
    assert!(status.contains("Success"), "{status:?}");

    // A container with a terminal: attach over WebSocket, resize, type.
    let mut term = env.container("term", "");
    term.command = vec!["/bin/sh".into()];
    term.stdin = true;
    term.tty = true;
    let term = create_and_start(&mut rt, &pod_id, &pod_cfg, term).await;
    let url = attach_url(&mut rt, &term, true, true).await;
    let (mut ws, proto) = stream::ws_connect(&url, &["v5.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(proto, "v5.channel.k8s.io");
    let mut resize = vec![4u8];
    resize.extend(br#"{"Width":77,"Height":22}"#);
    ws.send(Message::Binary(resize.into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut line = vec![0u8];
    line.extend(b"busybox stty size\n");
    ws.send(Message::Binary(line.into())).await.unwrap();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + T;
    while !seen.contains("22 77") {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(d)))) if d.first() == Some(&1) => {
                seen.push_str(&String::from_utf8_lossy(&d[1..]))
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    assert!(seen.contains("22 77"), "{seen:?}");
    let _ = ws.close(None).await;

    remove_pod(&mut rt, &pod_id).await;
}

/// One forwarded connection: what the pod answered and what the error
/// stream said; the server must finish both streams.
async fn forward_once(url: &str, port: u16, request: &[u8]) -> (String, String) {
    let f = stream::port_forward(url, port, request, 1 << 20, T).await;
    assert!(f.finished, "port forward hung or broke: {f:?}");
    (String::from_utf8_lossy(&f.head).to_string(), f.error)
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_into_a_pod() {
    let env = setup("").await;
    let mut rt = env.g.runtime().await;
    let (pod_id, pod_cfg) = env.start_pod(&mut rt, "pf").await;
    // One server on every address, one only on the pod's loopback.
    let script = "mkdir -p /www && echo served-by-the-pod > /www/index.html && \
                  busybox httpd -p 8080 -h /www && busybox httpd -p 127.0.0.1:8081 -h /www && \
                  sleep 1000";
    let id = create_and_start(&mut rt, &pod_id, &pod_cfg, env.container("web", script)).await;
    let ip = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .network
        .unwrap()
        .ip;
    // The listener is the pod's own: reachable on its IP from the host.
    let mut up = false;
    for _ in 0..50 {
        if std::net::TcpStream::connect((ip.as_str(), 8080)).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "httpd in the pod never listened on {ip}:8080");
    let _ = id;

    let pf = |ports: Vec<i32>| PortForwardRequest {
        pod_sandbox_id: pod_id.clone(),
        port: ports,
    };
    let request = b"GET /index.html HTTP/1.0\r\n\r\n";
    for port in [8080u16, 8081] {
        let url = rt.port_forward(pf(vec![])).await.unwrap().into_inner().url;
        let (data, err) = forward_once(&url, port, request).await;
        assert!(data.contains("served-by-the-pod"), "port {port}: {data:?}");
        assert!(err.is_empty(), "{err}");
    }
    // Nobody listens: the error stream says so, and nothing hangs.
    let url = rt.port_forward(pf(vec![])).await.unwrap().into_inner().url;
    let (data, err) = forward_once(&url, 9, request).await;
    assert!(data.is_empty());
    assert!(err.contains("port 9"), "{err:?}");

    // WebSocket channel framing: the port comes in the query.
    let url = rt
        .port_forward(pf(vec![8081]))
        .await
        .unwrap()
        .into_inner()
        .url;
    let (mut ws, proto) = stream::ws_connect(&format!("{url}?port=8081"), &["v4.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(proto, "v4.channel.k8s.io");
    let mut req = vec![0u8];
    req.extend_from_slice(request);
    ws.send(Message::Binary(req.into())).await.unwrap();
    let mut body = Vec::new();
    let mut port_frames = 0;
    let deadline = tokio::time::Instant::now() + T;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
        match m {
            Message::Binary(d) if d.len() == 3 && d[1..] == 8081u16.to_le_bytes() => {
                port_frames += 1
            }
            Message::Binary(d) if d.first() == Some(&0) => body.extend_from_slice(&d[1..]),
            Message::Close(_) => break,
            _ => {}
        }
        if String::from_utf8_lossy(&body).contains("served-by-the-pod") {
            break;
        }
    }
    assert_eq!(port_frames, 2, "each channel opens with its port");
    assert!(String::from_utf8_lossy(&body).contains("served-by-the-pod"));

    // Bad input.
    let e = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: "nonexistent".into(),
            port: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = rt.port_forward(pf(vec![70000])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    remove_pod(&mut rt, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_streaming_server_speaks_tls_when_configured() {
    require_host();
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    // A throwaway CA, and a certificate for 127.0.0.1 signed by it.
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=gantry-e2e-ca",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
    let env = setup(&format!(
        "streaming:\n  tls_cert_file: {}\n  tls_key_file: {}\n",
        cert.display(),
        key.display()
    ))
    .await;
    let mut rt = env.g.runtime().await;
    let (pod_id, id) = pod_with_box(&env, &mut rt, "tls").await;
    let s = Session {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let url = exec_url(&mut rt, exec_req(&id, &["echo", "over tls"], &s)).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let o = stream::spdy_session_with(&url, &s, T, Some(&ca)).await;
    assert_eq!(o.stdout, "over tls\n", "{o:?}");
    assert_eq!(o.exit_code(), Some(0));

    // Plain HTTP to the TLS port gets no upgrade.
    let url = exec_url(&mut rt, exec_req(&id, &["true"], &s)).await;
    let plain = url.replacen("https://", "http://", 1);
    let up = stream::spdy_upgrade(&plain, &["v4.channel.k8s.io"]).await;
    assert_ne!(up.status, 101);

    remove_pod(&mut rt, &pod_id).await;
}

/// Reads until the server closes the connection (or `within` passes);
/// returns what it sent and whether it closed.
async fn read_to_close(s: &mut tokio::net::TcpStream, within: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_time_out_and_excess_ones_are_refused() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    require_host();
    let addr = format!("127.0.0.1:{}", gantry_e2e::free_port());
    let g = gantry_e2e::daemon::Gantry::start(&format!(
        "streaming:\n  address: {addr}\n  header_read_timeout_secs: 2\n  max_connections: 2\n"
    ))
    .await;

    // Two connections take both slots: one silent, one that sends half
    // a request head and stalls (a slowloris).
    let opened = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /exec/sometoken HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Give the daemon a moment to accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A third is refused at once, while the others still hold their slots.
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let (text, closed) = read_to_close(&mut third, Duration::from_secs(1)).await;
    assert!(closed, "the connection over the cap was left open");
    assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");

    // Both stalled ones are closed by the header timeout, not before it.
    for (name, s) in [("silent", &mut silent), ("slow", &mut slow)] {
        let (text, closed) = read_to_close(s, Duration::from_secs(15)).await;
        assert!(closed, "the {name} connection was never closed");
        assert!(text.is_empty(), "{name}: {text:?}");
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "closed after {waited:?}, before the 2 s header timeout"
    );

    // Their slots are free again: a whole request is served (a token that
    // does not exist is a plain 404).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(&addr).await.unwrap();
    again
        .write_all(b"GET /exec/sometoken HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (text, closed) = read_to_close(&mut again, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 404"), "{text:?}");
    assert!(closed, "one request per connection");
    // The daemon says why it closed them.
    let log = g.log();
    assert!(log.contains("max_connections reached"), "{log}");
    assert!(log.contains("no request headers in time"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_session_holds_its_connection_slot() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let env = setup("streaming:\n  max_connections: 1\n").await;
    let mut rt = env.g.runtime().await;
    let (pod, id) = pod_with_box(&env, &mut rt, "slots").await;
    let out_only = Session {
        stdout: true,
        ..Default::default()
    };
    let url = exec_url(&mut rt, exec_req(&id, &["sleep", "3"], &out_only)).await;
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let session = stream::spdy_upgrade(&url, &["v4.channel.k8s.io"]).await;

    // The upgraded session is the one connection allowed.
    let mut other = TcpStream::connect(&addr).await.unwrap();
    let (text, closed) = read_to_close(&mut other, Duration::from_secs(5)).await;
    assert!(closed && text.starts_with("HTTP/1.1 503"), "{text:?}");

    // Once it ends, the slot is free again.
    drop(session);
    let mut served = String::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /exec/none HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        served = read_to_close(&mut s, Duration::from_secs(5)).await.0;
        if served.starts_with("HTTP/1.1 404") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served.starts_with("HTTP/1.1 404"), "{served:?}");
    // Its container would outlive the daemon (monitors do).
    remove_pod(&mut rt, &pod).await;
}
