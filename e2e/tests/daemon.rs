//! The daemon as an operator meets it: its socket, its lock, its
//! subcommands, the runtime RPCs it answers and the ones it does not yet.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;

use gantry_e2e::daemon::{gantry_bin, Gantry};
use gantry_e2e::require_host;
use gantry_proto::v1::{
    AttachRequest, CgroupDriver, CheckpointContainerRequest, LinuxPodSandboxConfig, NetworkConfig,
    PodSandboxConfig, PodSandboxMetadata, RunPodSandboxRequest, RuntimeConfig,
    RuntimeConfigRequest, StatusRequest, UpdateRuntimeConfigRequest, VersionRequest,
};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_lock_and_runtime_rpcs() {
    require_host();
    let mut g = Gantry::start("runtime:\n  cgroup_driver: systemd\n").await;
    let meta = std::fs::symlink_metadata(&g.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // A second daemon on the same state directory is refused.
    let out = Command::new(gantry_bin())
        .arg("--config")
        .arg(&g.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another gantry is running"),
        "{out:?}"
    );

    let mut rt = g.runtime().await;
    let v = rt
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("gantry", "v1")
    );
    let st = rt
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = st.status.unwrap().conditions;
    let ready = conds.iter().find(|c| c.r#type == "RuntimeReady").unwrap();
    assert!(ready.status);
    let net = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    assert!(
        !net.status && net.reason == "NetworkPluginNotReady",
        "{net:?}"
    );
    assert!(st.runtime_handlers.iter().any(|h| h.name == "runc"));
    assert!(st.info["config"].contains("systemd"));
    let rc = rt
        .runtime_config(RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        CgroupDriver::Systemd as i32
    );
    // Under the systemd driver cgroup_parent is a slice name; paths are
    // refused before anything else is looked at.
    for bad in ["/kubepods/besteffort/pod1", "kubepods-besteffort-pod1"] {
        let e = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(PodSandboxConfig {
                    metadata: Some(PodSandboxMetadata {
                        name: "slice".into(),
                        uid: "uid-slice".into(),
                        namespace: "e2e".into(),
                        attempt: 0,
                    }),
                    linux: Some(LinuxPodSandboxConfig {
                        cgroup_parent: bad.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().contains("cgroup_parent"), "{e:?}");
    }

    // What is not built yet says so by name.
    let e = rt
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert!(e.code() == Code::Unimplemented && e.message().contains("CheckpointContainer"));

    // The node's pod CIDRs are checked, and kept for Status.
    let cidr = |pod_cidr: &str| UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: pod_cidr.into(),
            }),
        }),
    };
    let e = rt
        .update_runtime_config(cidr("10.244.0.0/24,not-a-cidr"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    rt.update_runtime_config(cidr("10.244.3.0/24, fd00:10:244:3::/64"))
        .await
        .unwrap();
    let info = rt
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner()
        .info;
    assert_eq!(
        info.get("podCIDRs").map(String::as_str),
        Some("10.244.3.0/24,fd00:10:244:3::/64")
    );

    // A streaming request that asks for no stream is refused before a URL
    // is minted.
    let e = rt.attach(AttachRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let m = g.metrics().await;
    assert!(
        m.contains(
            r#"gantry_cri_requests_total{code="Unimplemented",method="CheckpointContainer"} 1"#
        ),
        "{m}"
    );
    assert!(m.contains("process_resident_memory_bytes"), "{m}");

    // SIGTERM: a clean exit that removes the socket; a SIGKILLed daemon's
    // stale socket is replaced at the next start.
    assert!(g.stop().success());
    assert!(!g.socket.exists());
    g.restart().await;
    g.kill();
    assert!(g.socket.exists(), "a killed daemon leaves its socket");
    g.restart().await;
    let mut rt = g.runtime().await;
    rt.version(VersionRequest::default()).await.unwrap();
    assert!(g.log().contains("replaced a stale socket"));
}

#[test]
fn config_and_check_subcommands() {
    let out = Command::new(gantry_bin()).arg("config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("socket: /run/gantry/gantry.sock")
            && text.contains("max_concurrent_downloads: 3"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "image:\n  max_concurent_downloads: 2\n").unwrap();
    let out = Command::new(gantry_bin())
        .arg("--config")
        .arg(&bad)
        .arg("config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("max_concurent_downloads"),
        "{out:?}"
    );

    // check reports one line per item and fails on what is missing.
    let cfg = dir.path().join("check.yaml");
    std::fs::write(
        &cfg,
        format!(
            "runtime:\n  runtimes:\n    runc:\n      path: runc\n    ghost:\n      path: /nonexistent/ghost-runtime\ncni:\n  conf_dir: {}\n",
            dir.path().join("no-cni").display()
        ),
    )
    .unwrap();
    let out = Command::new(gantry_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("overlay")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("ghost")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("cni config")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("cgroup driver")),
        "{text}"
    );

    // The systemd driver needs systemd running; this host has none.
    std::fs::write(&cfg, "runtime:\n  cgroup_driver: systemd\n").unwrap();
    let out = Command::new(gantry_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("cgroup driver"))
        .unwrap_or_default();
    if std::path::Path::new("/run/systemd/system").is_dir() {
        assert!(
            line.starts_with("ok") && line.contains("--systemd-cgroup"),
            "{text}"
        );
    } else {
        assert!(
            line.starts_with("FAIL") && line.contains("systemd is not running"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_plain_off_a_terminal_and_json_on_request() {
    require_host();
    // stderr is a file here, as under systemd with a log file: no colour
    // (the harness does not set NO_COLOR; gantry decides by itself).
    let mut g = Gantry::start("").await;
    g.runtime()
        .await
        .version(VersionRequest::default())
        .await
        .unwrap();
    g.stop();
    let text = g.log();
    assert!(text.contains("gantry serving CRI"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "ANSI escapes in a log file:\n{text}"
    );

    let mut g = Gantry::start("log_format: json\n").await;
    g.runtime()
        .await
        .version(VersionRequest::default())
        .await
        .unwrap();
    g.stop();
    let log = g.log();
    let mut serving = false;
    let mut spans = false;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        serving |= v["message"] == "gantry serving CRI";
        // Request lines carry their span's fields (the method here).
        spans |= v["span"]["method"] == "Version";
    }
    assert!(serving, "no startup line in:\n{log}");
    assert!(spans, "no request line with its span in:\n{log}");

    // A format gantry does not know is refused before it starts.
    let out = Command::new(gantry_bin())
        .args(["--config", "/dev/stdin", "config"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"log_format: xml\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("xml"), "{err}");
}

#[test]
fn version_names_the_commit_and_the_cri() {
    let out = Command::new(gantry_bin())
        // Even with a config that does not parse.
        .args(["--config", "/nonexistent/gantry.yaml", "version"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("gantry {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("Kubernetes 1.36"), "{text}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    if head.status.success() {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(
            text.contains(&format!("commit: {head}")),
            "{text} (HEAD {head})"
        );
    } else {
        assert!(text.contains("commit: unknown"), "{text}");
    }
}

#[test]
fn the_default_network_is_installed_only_where_there_is_none() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cni-default.sh");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("net.d");
    let run = || {
        let out = Command::new(&script).arg(&conf).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    run();
    let installed = std::fs::read_to_string(conf.join("10-gantry.conflist")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&installed).unwrap();
    assert_eq!(v["plugins"][0]["type"], "bridge");

    // An operator's network, even one sorting after ours, is never joined
    // by gantry's.
    let dir2 = tempfile::tempdir().unwrap();
    let conf = dir2.path().to_path_buf();
    std::fs::write(conf.join("99-operator.conflist"), "{\"name\":\"op\"}").unwrap();
    let out = Command::new(&script).arg(&conf).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let names: Vec<_> = std::fs::read_dir(&conf)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("99-operator.conflist")]
    );
}
