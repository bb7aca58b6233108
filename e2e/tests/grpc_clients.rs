//! Clients other than grpc-go on the CRI socket: Python's grpcio (gRPC's C
//! core, which sends the socket path as `:authority`) with its default
//! channel options, the standard health service, server reflection, and a
//! raw HTTP/2 client that floods PINGs.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gantry_e2e::fixture::BusyboxEnv;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The CRI definition the Python stubs are generated from.
fn cri_proto() -> PathBuf {
    workspace().join("proto/cri/v1/api.proto")
}

/// A Python with grpcio and grpcio-tools: `$GANTRY_E2E_PYTHON`, else a
/// virtual environment under the target directory, made from PyPI on first
/// use (`.ci/run` makes it up front).
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("GANTRY_E2E_PYTHON") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let venv = target.join("e2e-venv");
    let py = venv.join("bin/python");
    let ready = Command::new(&py)
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("running python3 -m venv");
        assert!(made.success(), "python3 -m venv {} failed", venv.display());
        let pip = Command::new(&py)
            .args(["-m", "pip", "install", "-q", "grpcio", "grpcio-tools"])
            .status()
            .expect("running pip");
        assert!(pip.success(), "pip install grpcio grpcio-tools failed");
    }
    py
}

#[tokio::test]
async fn python_grpcio_runs_a_lifecycle_with_default_channel_options() {
    let env = BusyboxEnv::start("grpc-python", "").await;
    let py = python();
    let stubs = tempfile::tempdir().expect("a stub directory");
    let proto = cri_proto();
    let gen = Command::new(&py)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!(
            "-I{}",
            proto.parent().expect("proto dir").display()
        ))
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .arg(&proto)
        .output()
        .expect("running grpc_tools.protoc");
    assert!(
        gen.status.success(),
        "generating Python stubs from {}: {}",
        proto.display(),
        String::from_utf8_lossy(&gen.stderr)
    );
    let module = proto
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("proto file name")
        .to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/cri_client.py");
    let log_dir = env.logs.path().join("py-pod");
    let run = tokio::task::spawn_blocking({
        let (py, stubs, socket, image) = (
            py.clone(),
            stubs.path().to_path_buf(),
            env.g.socket.clone(),
            env.image.clone(),
        );
        move || {
            Command::new(py)
                .arg(script)
                .arg(stubs)
                .arg(module)
                .arg(socket)
                .arg(image)
                .arg(log_dir)
                .output()
        }
    })
    .await
    .expect("joining the Python client")
    .expect("running the Python client");
    assert!(
        run.status.success(),
        "the Python client failed: {}\ngantry's log:\n{}",
        String::from_utf8_lossy(&run.stderr),
        env.g.log()
    );
    let out: serde_json::Value =
        serde_json::from_slice(&run.stdout).expect("the Python client's JSON");
    assert_eq!(out["runtime_name"], "gantry", "{out}");
    assert_eq!(out["runtime_api_version"], "v1", "{out}");
    assert!(
        out["image_ref"]
            .as_str()
            .is_some_and(|r| r.starts_with("sha256:")),
        "{out}"
    );
    let ctr = out["container_id"].as_str().expect("a container id");
    let pod = out["pod_id"].as_str().expect("a pod id");
    assert!(out["pods_listed"]
        .as_array()
        .is_some_and(|p| p.iter().any(|id| id == pod)));
    assert_eq!(out["state_after_start"], "CONTAINER_RUNNING", "{out}");
    let stats = out["stats"].as_array().expect("stats");
    let mine = stats
        .iter()
        .find(|s| s["id"] == ctr)
        .unwrap_or_else(|| panic!("no stats for {ctr}: {out}"));
    assert!(mine["memory"].as_u64().is_some_and(|m| m > 0), "{out}");
    assert_eq!(out["state_after_stop"], "CONTAINER_EXITED", "{out}");
    assert_eq!(out["containers_left"], 0, "{out}");
    assert_eq!(out["pods_left"], 0, "{out}");
    assert_eq!(out["missing_container"], "NOT_FOUND", "{out}");
    // The daemon noticed the client's authority and read it as localhost.
    assert!(
        env.g.log().contains("no URI authority"),
        "gantry did not log the rewritten authority"
    );
}

#[tokio::test]
async fn health_is_served_and_turns_not_serving_on_shutdown() {
    let mut env = BusyboxEnv::start("grpc-health", "").await;
    let channel = env.g.channel().await.expect("connecting to gantry");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "runtime.v1.RuntimeService", "runtime.v1.ImageService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health check of {service:?}: {e}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("an unknown service has no health");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = health
        .watch(HealthCheckRequest {
            service: "runtime.v1.RuntimeService".into(),
        })
        .await
        .expect("watching health")
        .into_inner();
    let first = watch.next().await.expect("a first status").expect("status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // SIGTERM: the watcher hears NOT_SERVING, its stream ends, and the
    // daemon still exits promptly (the watch does not hold it open).
    let pid = env.g.pid();
    // SAFETY: kill with a PID this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = Vec::new();
        while let Some(Ok(msg)) = watch.next().await {
            seen.push(msg.status);
        }
        seen
    })
    .await
    .expect("the watch stream ends during shutdown");
    assert_eq!(seen, vec![ServingStatus::NotServing as i32]);
    let status = env.g.stop();
    assert!(status.success(), "gantry exited with {status}");
}

#[tokio::test]
async fn reflection_lists_the_cri_services_and_describes_them() {
    let env = BusyboxEnv::start("grpc-reflection", "").await;
    let channel = env.g.channel().await.expect("connecting to gantry");
    let mut client = ServerReflectionClient::new(channel);
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let requests = tokio_stream::iter(vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "runtime.v1.RuntimeService".into(),
        )),
        ask(MessageRequest::FileContainingSymbol(
            "runtime.v1.NoSuchThing".into(),
        )),
    ]);
    let mut replies = client
        .server_reflection_info(requests)
        .await
        .expect("reflection")
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) = replies
        .next()
        .await
        .and_then(|r| r.ok())
        .and_then(|r| r.message_response)
    else {
        panic!("no service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "runtime.v1.RuntimeService",
        "runtime.v1.ImageService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }

    let Some(MessageResponse::FileDescriptorResponse(files)) = replies
        .next()
        .await
        .and_then(|r| r.ok())
        .and_then(|r| r.message_response)
    else {
        panic!("no descriptor for runtime.v1.RuntimeService");
    };
    use prost::Message;
    let described = files.file_descriptor_proto.iter().any(|bytes| {
        prost_types::FileDescriptorProto::decode(bytes.as_slice()).is_ok_and(|f| {
            f.package() == "runtime.v1"
                && f.service.iter().any(|s| {
                    s.name() == "RuntimeService"
                        && s.method.iter().any(|m| m.name() == "RunPodSandbox")
                })
        })
    });
    assert!(described, "the descriptor does not describe RunPodSandbox");

    // tonic's reflection answers an unknown symbol by ending the stream
    // with NOT_FOUND.
    let err = replies
        .next()
        .await
        .expect("an answer for an unknown symbol")
        .expect_err("an unknown symbol is an error");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
}

/// Raw HTTP/2 frame header.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = len[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn a_ping_flood_is_cut_off_and_the_daemon_keeps_serving() {
    let env = BusyboxEnv::start("grpc-flood", "").await;
    let socket = env.g.socket.clone();
    let cut = tokio::task::spawn_blocking(move || {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("connecting");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, 0, &[]));
        for i in 0..500u64 {
            bytes.extend(frame(0x6, 0, 0, &i.to_be_bytes()));
        }
        // The server may close while we are still writing.
        let _ = s.write_all(&bytes);
        // Read until the server closes the connection; count PING acks.
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (true, got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (true, got),
                Err(_) => return (false, got),
            }
        }
    })
    .await
    .expect("joining the flooding client");
    assert!(cut.0, "the flooding connection was not closed");
    // Far fewer acks than pings: the flood was stopped, not served.
    let mut acks = 0;
    let mut b = cut.1.as_slice();
    while b.len() >= 9 {
        let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
        if b[3] == 0x6 && b[4] & 1 == 1 {
            acks += 1;
        }
        b = &b[(9 + len).min(b.len())..];
    }
    assert!(acks < 100, "{acks} PINGs were answered");
    assert!(
        env.g.log().contains("floods PING"),
        "no log line for the flood"
    );
    // Other clients are unaffected.
    let v = env
        .g
        .runtime()
        .await
        .version(gantry_proto::v1::VersionRequest::default())
        .await
        .expect("Version after the flood");
    assert_eq!(v.into_inner().runtime_name, "gantry");
}
