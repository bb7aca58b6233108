//! Configuration reload without a restart, as an operator does it: edit the
//! config file, run `gantry reload`. A new log level, registry mirror and
//! runtime handler take effect; an invalid file is refused with the key
//! named and the old configuration keeps serving; a changed socket is
//! reported as needing a restart; a removed handler is refused to new pods
//! while the pod running on it can still be stopped and removed.

use std::time::Duration;

use gantry_e2e::fixture::{create_and_start, remove_pod, stop_pod, BusyboxEnv};
use gantry_e2e::oci::{ImageSpec, Layer, Pusher};
use gantry_e2e::registry::Registry;
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    ExecSyncRequest, ImageSpec as CriImageSpec, ListImagesRequest, PullImageRequest,
    RunPodSandboxRequest, StatusRequest,
};
use tonic::transport::Channel;
use tonic::Code;

/// `gantry reload`: (success, stdout and stderr).
fn reload(env: &BusyboxEnv) -> (bool, String) {
    let out = env.g.cli(&["reload", "--timeout", "60"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn run_pod_on(
    rt: &mut RuntimeServiceClient<Channel>,
    env: &BusyboxEnv,
    name: &str,
    handler: &str,
) -> Result<String, tonic::Status> {
    rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(env.pod_config(name)),
        runtime_handler: handler.into(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

async fn handlers(rt: &mut RuntimeServiceClient<Channel>) -> Vec<String> {
    rt.status(StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner()
        .runtime_handlers
        .into_iter()
        .map(|h| h.name)
        .collect()
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_refuses_and_reports() {
    let env = BusyboxEnv::start(
        "reload",
        "log_level: info\nruntime:\n  runtimes:\n    runc:\n      path: runc\n",
    )
    .await;
    let mut rt = env.g.runtime().await;
    let mut images = env.g.images().await;
    let original = std::fs::read_to_string(&env.g.config_path).unwrap();

    // A second registry, to serve as the mirror of a registry host that
    // does not exist (a dead loopback port).
    let mirror = Registry::start().await;
    let mirrored = ImageSpec::new(vec![Layer::busybox()])
        .label("reload-mirror")
        .build();
    Pusher::new(&mirror.addr, None)
        .image("e2e/mirrored", &["1"], &mirrored)
        .await;
    let dead = format!("127.0.0.1:{}", gantry_e2e::free_port());
    let via_mirror = format!("{dead}/e2e/mirrored:1");
    let pull = |image: String| PullImageRequest {
        image: Some(CriImageSpec {
            image,
            ..Default::default()
        }),
        ..Default::default()
    };
    images
        .pull_image(pull(via_mirror.clone()))
        .await
        .expect_err("no mirror configured yet");
    let err = run_pod_on(&mut rt, &env, "reload-early", "runc2")
        .await
        .expect_err("runc2 is not configured yet");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    // Read-only calls log at debug only: nothing at info.
    images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap();
    let debug_lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("ListImages") && l.contains("request done"))
            .count()
    };
    assert_eq!(debug_lines(&env.g.log()), 0);

    // 1. Log level, a mirror and a handler.
    let good = original
        .replace("log_level: info", "log_level: debug")
        .replacen(
            "  registries:\n",
            &format!(
                "  registries:\n    \"{dead}\":\n      mirrors: [\"http://{}\"]\n      skip_upstream: true\n",
                mirror.addr
            ),
            1,
        )
        .replacen(
            "  runtimes:\n",
            "  runtimes:\n    runc2:\n      path: runc\n",
            1,
        );
    std::fs::write(&env.g.config_path, &good).unwrap();
    let (ok, out) = reload(&env);
    assert!(ok, "reload: {out}\nlog:\n{}", env.g.log());
    assert!(out.contains("reload applied"), "{out}");
    for key in ["log_level", "image.registries", "runtime.runtimes"] {
        assert!(out.contains(key), "{key} not reported applied: {out}");
    }
    images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        debug_lines(&env.g.log()) > 0,
        "log_level debug not in force; log:\n{}",
        env.g.log()
    );
    images
        .pull_image(pull(via_mirror.clone()))
        .await
        .unwrap_or_else(|e| panic!("pull through the reloaded mirror: {e}"));
    assert!(handlers(&mut rt).await.contains(&"runc2".to_string()));
    let pod = run_pod_on(&mut rt, &env, "reload-runc2", "runc2")
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox on the reloaded handler: {e}"));
    let pod_config = env.pod_config("reload-runc2");
    let ctr = create_and_start(
        &mut rt,
        &pod,
        &pod_config,
        env.container("sleeper", "sleep 600"),
    )
    .await;

    // 2. An invalid value: refused, the key named, the old config serves.
    let bad = good.replacen("image:\n", "image:\n  max_concurrent_downloads: lots\n", 1);
    std::fs::write(&env.g.config_path, &bad).unwrap();
    let (ok, out) = reload(&env);
    assert!(!ok, "an invalid config was accepted: {out}");
    assert!(out.contains("reload refused"), "{out}");
    assert!(out.contains("image.max_concurrent_downloads"), "{out}");
    let log = env.g.log();
    assert!(
        log.lines()
            .any(|l| l.contains("reload refused") && l.contains("image.max_concurrent_downloads")),
        "no log line names the key:\n{log}"
    );
    images
        .remove_image(gantry_proto::v1::RemoveImageRequest {
            image: Some(CriImageSpec {
                image: via_mirror.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    images
        .pull_image(pull(via_mirror.clone()))
        .await
        .unwrap_or_else(|e| panic!("the mirror went with a refused reload: {e}"));
    assert!(handlers(&mut rt).await.contains(&"runc2".to_string()));

    // 3. The socket cannot move without a restart: reported, not applied.
    let moved = good.replace("state/gantry.sock", "state/moved.sock");
    assert_ne!(moved, good);
    std::fs::write(&env.g.config_path, &moved).unwrap();
    let (ok, out) = reload(&env);
    assert!(ok, "{out}");
    assert!(out.contains("socket changed; restart needed"), "{out}");
    assert!(
        env.g.log().contains("socket changed; restart needed"),
        "not logged:\n{}",
        env.g.log()
    );
    assert!(env.g.socket.exists());
    assert!(!env.g.dir.join("state/moved.sock").exists());
    rt.status(StatusRequest { verbose: false })
        .await
        .expect("still serving on the old socket");

    // 4. runc2 removed while its pod runs: the pod keeps working and can be
    // stopped and removed; a new pod on it is refused as unknown.
    let without = good.replace("    runc2:\n      path: runc\n", "");
    std::fs::write(&env.g.config_path, &without).unwrap();
    let (ok, out) = reload(&env);
    assert!(ok, "{out}");
    assert!(!out.contains("restart needed"), "{out}");
    assert!(!handlers(&mut rt).await.contains(&"runc2".to_string()));
    let err = run_pod_on(&mut rt, &env, "reload-late", "runc2")
        .await
        .expect_err("a removed handler took a new pod");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("not configured"), "{err}");
    let exec = rt
        .exec_sync(ExecSyncRequest {
            container_id: ctr.clone(),
            cmd: vec!["echo".into(), "alive".into()],
            timeout: 10,
        })
        .await
        .expect("ExecSync in the pod of the removed handler")
        .into_inner();
    assert_eq!(exec.exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), "alive");
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;

    let metrics = env.g.metrics().await;
    assert_eq!(
        metric(&metrics, "gantry_config_reloads_total{result=\"applied\"}"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "gantry_config_reloads_total{result=\"refused\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert!(metric(
        &metrics,
        "gantry_config_last_reload_success_timestamp_seconds"
    )
    .is_some_and(|t| t > 1.0e9));
}

/// `gantry reload` with no daemon says so and fails.
#[test]
fn reload_without_a_daemon_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gantry.yaml");
    std::fs::write(
        &config,
        format!("state_dir: {}\n", dir.path().join("state").display()),
    )
    .unwrap();
    let out = std::process::Command::new(gantry_e2e::daemon::gantry_bin())
        .arg("--config")
        .arg(&config)
        .arg("reload")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not running"), "{err}");
}
