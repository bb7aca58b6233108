//! The metrics an SRE alerts on, end to end: a lifecycle that gives every
//! documented metric a reason to move (a pull and a repull, a pod through
//! CNI ADD and DEL, containers that complete, fail, are OOM-killed and log
//! past their cap, exec and attach sessions), then `/metrics` is held to
//! `deploy/metrics.md` both ways: every documented metric is exported with
//! its type and labels (and moved, unless the doc says it may stay at
//! zero), and every `gantry_` metric exported is documented. The queries
//! of the dashboard and alert rules in `deploy/` find their metrics in the
//! same scrape.

use std::collections::BTreeSet;
use std::time::Duration;

use gantry_e2e::fixture::{
    create_and_start, memory_limited, pull_request, remove_pod, wait_exited, BusyboxEnv,
};
use gantry_e2e::prom::{deploy_queries, documented, metric_names, Scrape};
use gantry_e2e::stream::{self, Session, SpdyClient};
use gantry_proto::v1::{AttachRequest, ExecRequest, ImageFsInfoRequest};

const DOC: &str = include_str!("../../deploy/metrics.md");
const T: Duration = Duration::from_secs(30);
/// The node's log cap in this test; the chatty container writes more.
const LOG_CAP: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_exported_and_moves() {
    let env = BusyboxEnv::start(
        "metrics",
        &format!("runtime:\n  log_max_bytes: {LOG_CAP}\n"),
    )
    .await;
    // The fixture pulled once; again, every layer is reused.
    env.g
        .images()
        .await
        .pull_image(pull_request(&env.image))
        .await
        .expect("pulling the image again");
    // As kubelet does every few seconds: the store's size is measured.
    env.g
        .images()
        .await
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo");
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "lifecycle").await;
    let mut ids = Vec::new();
    for (name, script, reason) in [
        ("ok", "true", "Completed"),
        ("fail", "exit 1", "Error"),
        // The string doubles until the 32 MiB limit is hit.
        ("hog", "a=x; while true; do a=\"$a$a\"; done", "OOMKilled"),
        // About 10 MiB of CRI log lines against a 1 MiB cap.
        (
            "chatty",
            "yes 0123456789abcdef | head -c 3000000",
            "Completed",
        ),
    ] {
        let mut c = env.container(name, script);
        if name == "hog" {
            c = memory_limited(c, 32 << 20);
        }
        ids.push((create_and_start(&mut rt, &pod, &pc, c).await, reason));
    }
    for (id, reason) in &ids {
        let s = wait_exited(&mut rt, id).await;
        assert_eq!(s.reason, *reason, "{s:?}");
    }
    let sleeper = create_and_start(&mut rt, &pod, &pc, env.container("sleeper", "sleep 300")).await;

    let url = rt
        .exec(ExecRequest {
            container_id: sleeper.clone(),
            cmd: vec!["echo".into(), "hi".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .expect("Exec")
        .into_inner()
        .url;
    let out = stream::spdy_session(
        &url,
        &Session {
            stdout: true,
            ..Default::default()
        },
        T,
    )
    .await;
    assert_eq!(out.stdout, "hi\n");

    // An attach held open while /metrics is read.
    let url = rt
        .attach(AttachRequest {
            container_id: sleeper.clone(),
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .expect("Attach")
        .into_inner()
        .url;
    let up = stream::spdy_upgrade(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 101, "{}", up.body);
    let mut attach = SpdyClient::new(up.stream.expect("the upgraded connection"));
    for kind in ["error", "stdout", "stderr"] {
        attach.open(&[("streamType", kind)]).await;
    }
    let mut during = Scrape::default();
    for _ in 0..100 {
        during = Scrape::parse(&env.g.metrics().await);
        if during.sum("gantry_streaming_sessions", &[("kind", "attach")]) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        during.sum("gantry_streaming_sessions", &[("kind", "attach")]),
        1.0,
        "the open attach session is counted"
    );
    attach.abort().await;

    // Exits by reason, container and pod states, live monitors.
    for (reason, at_least) in [("Completed", 2.0), ("Error", 1.0), ("OOMKilled", 1.0)] {
        let n = during.sum("gantry_container_exits_total", &[("reason", reason)]);
        assert!(n >= at_least, "{reason}: {n}");
    }
    let state = |s: &Scrape, m: &str, st: &str| s.sum(m, &[("state", st), ("handler", "runc")]);
    assert_eq!(state(&during, "gantry_pods", "ready"), 1.0);
    assert_eq!(state(&during, "gantry_containers", "running"), 1.0);
    assert_eq!(state(&during, "gantry_containers", "exited"), 4.0);
    assert_eq!(during.sum("gantry_monitors_alive", &[]), 1.0);
    assert!(during.sum("gantry_image_layers_total", &[("result", "reused")]) >= 1.0);
    // The chatty container's log stayed under its cap; what did not fit
    // was counted.
    let chatty_log = env.logs.path().join("lifecycle/chatty.log");
    let size = std::fs::metadata(&chatty_log)
        .expect("the chatty log")
        .len();
    assert!(size <= LOG_CAP, "the log grew to {size} bytes");
    let dropped = during.sum("gantry_container_log_dropped_bytes_total", &[]);
    assert!(dropped > 3_000_000.0, "dropped {dropped}");

    remove_pod(&mut rt, &pod).await;
    let after = Scrape::parse(&env.g.metrics().await);
    for p in [
        "cgroup",
        "namespaces",
        "cni_add",
        "runtime_create",
        "runtime_start",
    ] {
        assert!(
            after.sum("gantry_pod_start_phase_seconds", &[("phase", p)]) >= 1.0,
            "phase {p} was not measured"
        );
    }
    for op in ["ADD", "DEL"] {
        assert!(
            after.sum("gantry_cni_operation_seconds", &[("op", op)]) >= 1.0,
            "CNI {op} was not measured"
        );
    }
    assert!(
        after.sum(
            "gantry_runtime_operation_seconds",
            &[("handler", "runc"), ("op", "run")]
        ) >= 5.0
    );
    assert_eq!(state(&after, "gantry_pods", "ready"), 0.0);
    assert_eq!(
        after.sum("gantry_container_log_dropped_bytes_total", &[]),
        dropped,
        "a removed container's dropped bytes stay counted"
    );

    // The doc and the scrape, both ways.
    let docs = documented(DOC);
    assert!(docs.len() >= 20, "the metrics table did not parse");
    let mut problems = Vec::new();
    for d in &docs {
        match after.types.get(&d.name) {
            None => problems.push(format!("{} is documented but not exported", d.name)),
            Some(t) if *t != d.kind => {
                problems.push(format!("{} is a {t}, documented as a {}", d.name, d.kind))
            }
            Some(_) => {}
        }
        let series = after
            .samples
            .iter()
            .filter(|s| after.family_of(&s.name) == d.name);
        let mut labels: BTreeSet<&str> = BTreeSet::new();
        for s in series {
            labels.extend(s.labels.keys().map(String::as_str).filter(|l| *l != "le"));
        }
        let want: BTreeSet<&str> = d.labels.iter().map(String::as_str).collect();
        if labels != want && after.types.contains_key(&d.name) {
            problems.push(format!(
                "{} has labels {labels:?}, documented as {want:?}",
                d.name
            ));
        }
        let moved = [&during, &after]
            .iter()
            .any(|s| s.values(&d.name, &[]).iter().any(|v| *v > 0.0));
        if d.moves && !moved {
            problems.push(format!("{} did not move in the lifecycle", d.name));
        }
    }
    let names: BTreeSet<&str> = docs.iter().map(|d| d.name.as_str()).collect();
    for family in after.types.keys().chain(during.types.keys()) {
        if family.starts_with("gantry_") && !names.contains(family.as_str()) {
            problems.push(format!("{family} is exported but not in deploy/metrics.md"));
        }
    }
    // What the dashboard and the alert rules query, against the scrape
    // itself (tests/deploy_queries.rs holds them to the doc).
    for (source, expr) in deploy_queries() {
        for name in metric_names(&expr) {
            if name != "up" && !after.types.contains_key(after.family_of(&name)) {
                problems.push(format!("{source}: {name} is not in the scrape"));
            }
        }
    }
    problems.dedup();
    assert!(problems.is_empty(), "{problems:#?}");
}
