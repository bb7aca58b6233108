//! The bug-report commands end to end: `gantry state` lists the pod, the
//! container (its pid, its live monitor, its rootfs mount) and the image
//! with the IDs the CRI reports, with the daemon running and stopped; and
//! `gantry check --json` parses and holds the expected checks.

use gantry_e2e::fixture::{
    container_status_verbose, create_and_start, remove_pod, stop_pod, BusyboxEnv,
};
use gantry_proto::v1::{ImageSpec as CriImageSpec, ImageStatusRequest};
use serde_json::Value;

fn json_of(out: &std::process::Output, what: &str) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what} is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn find<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {list:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_lists_what_the_daemon_holds_running_or_stopped() {
    let mut env = BusyboxEnv::start("state", "").await;
    let mut rt = env.g.runtime().await;
    let (pod, pod_config) = env.start_pod(&mut rt, "state-pod").await;
    let ctr = create_and_start(
        &mut rt,
        &pod,
        &pod_config,
        env.container("sleeper", "sleep 600"),
    )
    .await;
    let (_, info) = container_status_verbose(&mut rt, &ctr).await;
    let image_id = env
        .g
        .images()
        .await
        .image_status(ImageStatusRequest {
            image: Some(CriImageSpec {
                image: env.image.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .expect("the pulled image")
        .id;

    let check = |state: &Value, daemon_pid: Option<u32>| {
        assert_eq!(
            state["daemon"]["running"],
            daemon_pid.is_some(),
            "{state:#}"
        );
        if let Some(pid) = daemon_pid {
            assert_eq!(state["daemon"]["pid"], pid);
        }
        let p = find(&state["pods"], &pod);
        assert_eq!(p["name"], "state-pod");
        assert_eq!(p["state"], "Ready");
        assert_eq!(p["containers"], serde_json::json!([ctr]));
        assert!(
            !p["mounts"].as_array().unwrap().is_empty(),
            "no namespace pin listed for the pod: {p:#}"
        );
        let c = find(&state["containers"], &ctr);
        assert_eq!(c["pod_id"], pod);
        assert_eq!(c["pod_known"], true);
        assert_eq!(c["name"], "sleeper");
        assert_eq!(c["state"], "Running");
        assert_eq!(c["pid"], info["pid"]);
        assert_eq!(c["pid_alive"], true);
        assert_eq!(c["monitor_pid"], info["monitorPid"]);
        assert_eq!(c["monitor_alive"], true, "{c:#}");
        assert_eq!(c["image_id"], image_id);
        assert!(
            c["mounts"].as_array().unwrap().iter().any(|m| m
                .as_str()
                .unwrap()
                .ends_with(&format!("{ctr}/bundle/rootfs"))),
            "the rootfs mount is not listed: {c:#}"
        );
        let i = find(&state["images"], &image_id);
        assert!(i["size"].as_u64().unwrap() > 0);
        let layers = i["layers"].as_array().unwrap();
        assert!(!layers.is_empty());
        assert!(layers.iter().all(|l| l["unpacked"] == true), "{i:#}");
        assert_eq!(state["problems"], serde_json::json!([]));
    };

    let running = json_of(&env.g.cli(&["state"]), "gantry state");
    check(&running, Some(env.g.pid()));
    let table = env.g.cli(&["state", "--table"]);
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout);
    for id in [&pod, &ctr] {
        assert!(table.contains(&id[..13]), "{id} not in\n{table}");
    }

    // With the daemon stopped: the records, and the monitor that outlives it.
    env.g.stop();
    let stopped = json_of(&env.g.cli(&["state"]), "gantry state (daemon stopped)");
    check(&stopped, None);

    env.g.restart().await;
    let mut rt = env.g.runtime().await;
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
    let after = json_of(&env.g.cli(&["state"]), "gantry state (pod removed)");
    assert_eq!(after["pods"], serde_json::json!([]));
    assert_eq!(after["containers"], serde_json::json!([]));
}

#[test]
fn check_json_parses_and_names_the_checks() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gantry.yaml");
    std::fs::write(
        &config,
        format!(
            "root: {0}/root\nstate_dir: {0}/state\nsocket: {0}/state/g.sock\ncni:\n  conf_dir: {0}/cni\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(gantry_e2e::daemon::gantry_bin())
        .arg("--config")
        .arg(&config)
        .args(["check", "--json"])
        .output()
        .unwrap();
    let report = json_of(&out, "gantry check --json");
    let checks = report["checks"].as_array().expect("a checks list");
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for want in [
        "root",
        "overlayfs",
        "namespaces",
        "cgroups",
        "cgroup driver",
        "runtime",
        "exec helper",
        "cni config",
    ] {
        assert!(names.contains(&want), "{want} missing: {report:#}");
    }
    for c in checks {
        assert!(c["ok"].is_boolean() && c["detail"].is_string(), "{c}");
    }
    // The empty CNI directory fails that check, so the whole report fails,
    // and the exit code says so.
    let cni = checks.iter().find(|c| c["name"] == "cni config").unwrap();
    assert_eq!(cni["ok"], false, "{cni}");
    assert_eq!(report["ok"], false);
    assert!(!out.status.success());
    let all_ok = checks.iter().all(|c| c["ok"] == true);
    assert_eq!(report["ok"], all_ok);
}
