//! Containers end to end on real runc: logs, exit codes, users, read-only
//! rootfs, stop, a daemon SIGKILL with containers running and exiting,
//! container events, and the errors a caller can make.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_e2e::daemon::Gantry;
use gantry_e2e::fixture::{
    all_containers, container_status_verbose, create_and_start, create_container as create,
    memory_limited, pod_status_verbose, remove_pod, run_pod, stop_pod, traces_of, verbose_pid,
    wait_exited, wait_reaped, BusyboxEnv,
};
use gantry_e2e::oci::{ImageSpec, Layer};
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    ContainerConfig, ContainerEventResponse, ContainerEventType, ContainerFilter,
    ContainerMetadata, ContainerState, ContainerStateValue, ContainerStatsRequest,
    ContainerStatusRequest, ExecSyncRequest, GetEventsRequest, ImageSpec as CriImageSpec,
    Int64Value, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    ListContainersRequest, Mount, NamespaceMode, RemoveContainerRequest, ReopenContainerLogRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    UpdateContainerResourcesRequest,
};
use tonic::transport::Channel;
use tonic::Code;

async fn setup() -> BusyboxEnv {
    BusyboxEnv::start("containers", "").await
}

/// The fixture's container, labelled with its name for the label filters.
fn container(env: &BusyboxEnv, name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        labels: [("name".to_string(), name.to_string())].into(),
        ..env.container(name, script)
    }
}

async fn start(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.start_container(StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
}

async fn status(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> gantry_proto::v1::ContainerStatus {
    rt.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

/// The text of a CRI log, as (stream, text) pairs of full lines.
fn log_lines(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let ts = p.next().unwrap();
            assert!(
                ts.ends_with('Z') && ts.contains('T') && ts.len() == 30,
                "timestamp {ts:?}"
            );
            let stream = p.next().unwrap().to_string();
            assert_eq!(p.next(), Some("F"));
            (stream, p.next().unwrap_or("").to_string())
        })
        .collect()
}

/// The texts of a CRI log's full lines, whatever their stream.
fn log_texts(path: &Path) -> Vec<String> {
    log_lines(path).into_iter().map(|(_, t)| t).collect()
}

fn leftovers(g: &Gantry) -> (usize, bool) {
    let dirs = ["containers", "removing"]
        .iter()
        .map(|d| {
            std::fs::read_dir(g.dir.join("root/runtime").join(d))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    (
        dirs,
        mounts.contains(&format!("{}/root/runtime/containers", g.dir.display()))
            || mounts.contains(&format!("{}/root/runtime/removing", g.dir.display())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_exit_codes_users_and_stop() {
    let env = setup().await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "work").await;

    let c1 = create(
        &mut rt,
        &pod,
        &pc,
        container(&env, "c1", "echo out; echo err >&2; hostname; exit 7"),
    )
    .await
    .unwrap();
    assert_eq!(
        status(&mut rt, &c1).await.state,
        ContainerState::ContainerCreated as i32
    );
    start(&mut rt, &c1).await;
    let s = wait_exited(&mut rt, &c1).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (7, "Error"));
    assert!(s.started_at > 0 && s.finished_at >= s.started_at);
    let log = PathBuf::from(&s.log_path);
    assert_eq!(log, env.logs.path().join("work/c1.log"));
    let lines = log_lines(&log);
    assert!(
        lines.contains(&("stdout".into(), "out".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "err".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stdout".into(), "work".into())),
        "hostname from the pod: {lines:?}"
    );

    // run_as_user and a read-only rootfs.
    let mut c2 = container(
        &env,
        "c2",
        "id -u; echo x > /probe || echo readonly; exit 0",
    );
    c2.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            readonly_rootfs: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let c2 = create_and_start(&mut rt, &pod, &pc, c2).await;
    let s = wait_exited(&mut rt, &c2).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
    let texts = log_texts(Path::new(&s.log_path));
    assert_eq!(texts[0], "1000");
    assert!(texts.iter().any(|t| t == "readonly"), "{texts:?}");

    // A process that handles SIGTERM ends with it.
    let graceful = create_and_start(
        &mut rt,
        &pod,
        &pc,
        container(
            &env,
            "graceful",
            "trap 'exit 143' TERM; while true; do sleep 0.1; done",
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    rt.stop_container(StopContainerRequest {
        container_id: graceful.clone(),
        timeout: 10,
    })
    .await
    .unwrap();
    assert_eq!(status(&mut rt, &graceful).await.exit_code, 143);
    rt.remove_container(RemoveContainerRequest {
        container_id: graceful,
    })
    .await
    .unwrap();

    // PID 1 without a SIGTERM handler ignores it: SIGKILL after the grace
    // period. Then stop and remove are idempotent.
    let c3 = create_and_start(&mut rt, &pod, &pc, container(&env, "c3", "exec sleep 1000")).await;
    assert_eq!(
        status(&mut rt, &c3).await.state,
        ContainerState::ContainerRunning as i32
    );
    // The same start again (kubelet's retry of a start whose answer it
    // lost) is answered as the first was; the container runs on.
    rt.start_container(StartContainerRequest {
        container_id: c3.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        status(&mut rt, &c3).await.state,
        ContainerState::ContainerRunning as i32
    );
    let t = std::time::Instant::now();
    rt.stop_container(StopContainerRequest {
        container_id: c3.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "the grace period was honoured"
    );
    let s = status(&mut rt, &c3).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 137);
    rt.stop_container(StopContainerRequest {
        container_id: c3.clone(),
        timeout: 2,
    })
    .await
    .unwrap();
    rt.stop_container(StopContainerRequest {
        container_id: "f".repeat(64),
        timeout: 0,
    })
    .await
    .unwrap();

    // Filters.
    let list = |f: ContainerFilter| ListContainersRequest { filter: Some(f) };
    let all = all_containers(&mut rt).await;
    assert_eq!(all.len(), 3);
    let exited = rt
        .list_containers(list(ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerExited as i32,
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(exited.len(), 3);
    let by_label = rt
        .list_containers(list(ContainerFilter {
            label_selector: [("name".to_string(), "c2".to_string())].into(),
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        by_label.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        vec![c2.clone()]
    );

    for id in [&c1, &c1, &"0".repeat(64)] {
        rt.remove_container(RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .unwrap();
    }
    let e = rt
        .container_status(ContainerStatusRequest {
            container_id: c1.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Removing the pod removes its containers, including a running one.
    create_and_start(&mut rt, &pod, &pc, container(&env, "c4", "exec sleep 1000")).await;
    remove_pod(&mut rt, &pod).await;
    assert!(all_containers(&mut rt).await.is_empty());
    assert_eq!(leftovers(&env.g), (0, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_outlive_a_killed_daemon() {
    let mut env = setup().await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "survivor").await;
    let long = create(
        &mut rt,
        &pod,
        &pc,
        container(&env, "long", "echo started; exec sleep 1000"),
    )
    .await
    .unwrap();
    let short = create(
        &mut rt,
        &pod,
        &pc,
        container(&env, "short", "sleep 2; echo done; exit 5"),
    )
    .await
    .unwrap();
    start(&mut rt, &long).await;
    start(&mut rt, &short).await;
    let pid_before = verbose_pid(&mut rt, &long).await;
    drop(rt);
    env.g.kill();
    // "short" exits while no daemon runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.g.restart().await;
    let mut rt = env.g.runtime().await;
    let s = status(&mut rt, &short).await;
    assert_eq!(
        (s.state, s.exit_code),
        (ContainerState::ContainerExited as i32, 5)
    );
    let texts = log_texts(Path::new(&s.log_path));
    assert_eq!(texts, ["done"]);
    let (l, info) = container_status_verbose(&mut rt, &long).await;
    assert_eq!(l.state, ContainerState::ContainerRunning as i32);
    let pid_after = info["pid"].as_i64().unwrap();
    assert_eq!(pid_before, pid_after);
    assert!(
        Path::new(&format!("/proc/{pid_after}")).exists(),
        "the running container was not disturbed"
    );
    stop_pod(&mut rt, &pod).await;
    assert_eq!(
        status(&mut rt, &long).await.state,
        ContainerState::ContainerExited as i32
    );
    remove_pod(&mut rt, &pod).await;
    assert_eq!(leftovers(&env.g), (0, false), "{}", env.g.log());
    assert!(!Path::new(&format!("/proc/{pid_after}")).exists());
}

/// RemoveContainer returns before the writable layer is gone: a daemon
/// killed right after it finishes the removal at its next start, before it
/// serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_cut_short_by_sigkill_is_finished_at_restart() {
    let mut env = setup().await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "reaped").await;
    // Enough files in the writable layer that removing it takes a while.
    let id = create(
        &mut rt,
        &pod,
        &pc,
        container(
            &env,
            "writer",
            "mkdir /many && cd /many && seq 1 20000 | xargs touch && ls | wc -l",
        ),
    )
    .await
    .unwrap();
    start(&mut rt, &id).await;
    let s = wait_exited(&mut rt, &id).await;
    assert_eq!(s.exit_code, 0, "{:?}", log_texts(Path::new(&s.log_path)));
    assert_eq!(log_texts(Path::new(&s.log_path)), ["20000"]);
    let (paths, mounts) = traces_of(&env.g, &id);
    assert!(!paths.is_empty() && !mounts.is_empty());

    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    env.g.kill();
    let removing = env.g.dir.join("root/runtime/removing").join(&id);
    assert!(
        removing.join("container.json").is_file(),
        "the removal was already finished: nothing left to test"
    );
    assert!(!env.g.dir.join("root/runtime/containers").join(&id).exists());

    env.g.restart().await;
    let (paths, mounts) = traces_of(&env.g, &id);
    assert!(
        paths.is_empty() && mounts.is_empty(),
        "left after the restart: {paths:?}, mounts {mounts:?}\n{}",
        env.g.log()
    );
    let mut rt = env.g.runtime().await;
    let e = rt
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    remove_pod(&mut rt, &pod).await;
    assert_eq!(leftovers(&env.g), (0, false), "{}", env.g.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_leave_nothing() {
    let env = setup().await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "errors").await;

    let e = create(&mut rt, &"a".repeat(64), &pc, container(&env, "x", "true"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let mut missing = container(&env, "x", "true");
    missing.image = Some(CriImageSpec {
        image: "127.0.0.1:1/not/pulled:1".into(),
        ..Default::default()
    });
    assert_eq!(
        create(&mut rt, &pod, &pc, missing)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let mut bad_mount = container(&env, "x", "true");
    bad_mount.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: "/nonexistent/gantry/path".into(),
        ..Default::default()
    }];
    assert_eq!(
        create(&mut rt, &pod, &pc, bad_mount)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let mut no_such_cmd = container(&env, "x", "true");
    no_such_cmd.command = vec!["/bin/does-not-exist".into()];
    let e = create(&mut rt, &pod, &pc, no_such_cmd).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("does-not-exist"), "{e:?}");
    let no_name = ContainerConfig {
        metadata: None,
        ..container(&env, "x", "true")
    };
    assert_eq!(
        create(&mut rt, &pod, &pc, no_name)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let ok = create(&mut rt, &pod, &pc, container(&env, "dup", "true"))
        .await
        .unwrap();
    // The identical request is answered with the container it made;
    // another container under the name is refused.
    assert_eq!(
        create(&mut rt, &pod, &pc, container(&env, "dup", "true"))
            .await
            .unwrap(),
        ok
    );
    assert_eq!(
        create(&mut rt, &pod, &pc, container(&env, "dup", "false"))
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    rt.remove_container(RemoveContainerRequest {
        container_id: ok.clone(),
    })
    .await
    .unwrap();
    wait_reaped(&env.g, &ok).await;
    assert_eq!(
        leftovers(&env.g),
        (0, false),
        "failed creates left state behind"
    );

    stop_pod(&mut rt, &pod).await;
    let e = create(&mut rt, &pod, &pc, container(&env, "late", "true"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = rt
        .start_container(StartContainerRequest {
            container_id: "b".repeat(64),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_stats_updates_and_log_reopening() {
    let env = setup().await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "busy").await;
    let busy = memory_limited(
        container(&env, "spin", "echo first; while true; do :; done"),
        64 << 20,
    );
    let id = create_and_start(&mut rt, &pod, &pc, busy).await;

    let exec = |cmd: &[&str], timeout: i64| ExecSyncRequest {
        container_id: id.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    };
    let r = rt
        .exec_sync(exec(
            &["/bin/sh", "-c", "echo out; echo err >&2; exit 4"],
            10,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 4)
    );
    let t = std::time::Instant::now();
    let e = rt
        .exec_sync(exec(&["/bin/sleep", "60"], 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    // The timed-out process is gone.
    let ps = rt
        .exec_sync(exec(&["/bin/sh", "-c", "cat /proc/[0-9]*/stat"], 10))
        .await
        .unwrap()
        .into_inner();
    // A killed process stays a zombie until the container's PID 1 (a busy
    // loop here) reaps it; it must not be running.
    let stats = String::from_utf8_lossy(&ps.stdout).into_owned();
    assert!(stats.contains("(sh)"), "{stats}");
    assert!(
        !stats
            .lines()
            .any(|l| l.contains("(sleep)") && !l.contains("(sleep) Z")),
        "the timed-out sleep still runs: {stats}"
    );
    assert_eq!(
        rt.exec_sync(exec(&[], 1)).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Stats: a busy container uses CPU and memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s1 = rt
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s2 = rt
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let cpu1 = s1
        .cpu
        .as_ref()
        .unwrap()
        .usage_core_nano_seconds
        .as_ref()
        .unwrap()
        .value;
    let cpu2 = s2.cpu.as_ref().unwrap();
    assert!(cpu1 > 100_000_000, "half a second of spinning: {cpu1}");
    assert!(cpu2.usage_core_nano_seconds.as_ref().unwrap().value > cpu1);
    assert!(
        cpu2.usage_nano_cores.as_ref().unwrap().value > 100_000_000,
        "{cpu2:?}"
    );
    assert!(
        s2.memory
            .as_ref()
            .unwrap()
            .working_set_bytes
            .as_ref()
            .unwrap()
            .value
            > 0
    );
    let listed = rt
        .list_container_stats(gantry_proto::v1::ListContainerStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);

    // The pod's stats come from its cgroup, which holds its containers,
    // and show its network.
    let ps = rt
        .pod_sandbox_stats(gantry_proto::v1::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = ps.linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    assert!(linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value >= cpu1);
    let mem_of = |m: Option<&gantry_proto::v1::MemoryUsage>| {
        m.and_then(|m| m.usage_bytes.as_ref()).map(|v| v.value)
    };
    let pod_mem = mem_of(linux.memory.as_ref()).unwrap();
    let container_mem = mem_of(linux.containers[0].memory.as_ref()).unwrap();
    assert!(
        pod_mem >= container_mem / 2 && container_mem > 0,
        "pod {pod_mem} bytes, its container {container_mem}"
    );
    assert!(linux.process.unwrap().process_count.unwrap().value >= 1);
    let net = linux.network.unwrap();
    assert_eq!(
        net.default_interface.as_ref().map(|i| i.name.as_str()),
        Some("eth0"),
        "{net:?}"
    );
    let listed = rt
        .list_pod_sandbox_stats(gantry_proto::v1::ListPodSandboxStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);

    // UpdateContainerResources changes the cgroup, which is the pod's.
    let cgroup = format!("/sys/fs/cgroup/memory/gantry/{pod}/{id}/memory.limit_in_bytes");
    let read_limit = || {
        std::fs::read_to_string(&cgroup)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if Path::new("/sys/fs/cgroup/memory").is_dir() {
        assert_eq!(read_limit().as_deref(), Some("67108864"));
        rt.update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(read_limit().unwrap(), (96u64 << 20).to_string());
    } else {
        let v2 = format!("/sys/fs/cgroup/gantry/{pod}/{id}/memory.max");
        assert_eq!(
            std::fs::read_to_string(&v2).unwrap().trim(),
            (64u64 << 20).to_string()
        );
    }

    // Log rotation: move the file away, reopen, new output lands anew.
    let log = PathBuf::from(status(&mut rt, &id).await.log_path);
    std::fs::rename(&log, log.with_extension("1")).unwrap();
    rt.reopen_container_log(ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    assert!(
        log.exists(),
        "the new log exists when ReopenContainerLog returns"
    );
    assert!(log_lines(&log.with_extension("1")).contains(&("stdout".into(), "first".into())));

    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let e = rt.exec_sync(exec(&["/bin/true"], 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    remove_pod(&mut rt, &pod).await;
    assert_eq!(leftovers(&env.g), (0, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_killed_container_says_so() {
    let env = setup().await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "oom").await;
    // The string doubles until the 32 MiB limit is hit.
    let hog = memory_limited(
        container(&env, "hog", "a=x; while true; do a=\"$a$a\"; done"),
        32 << 20,
    );
    let id = create_and_start(&mut rt, &pod, &pc, hog).await;
    let s = wait_exited(&mut rt, &id).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "OOMKilled"));
    remove_pod(&mut rt, &pod).await;
    assert_eq!(leftovers(&env.g), (0, false));
}

/// The command names of the processes container `id` sees.
async fn comms_seen_by(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> Vec<String> {
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec![
                "/bin/sh".into(),
                "-c".into(),
                "cat /proc/[0-9]*/comm".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    String::from_utf8_lossy(&r.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_namespace_modes() {
    let env = setup().await;
    let mut rt = env.g.runtime().await;
    let with_pid =
        |mode: NamespaceMode, name: &str| env.pod_config_with(name, |o| o.pid = mode as i32);

    // Shared: one container sees the other's process; a small init is PID 1.
    let pc = with_pid(NamespaceMode::Pod, "shared");
    let pod = run_pod(&mut rt, &pc).await;
    create_and_start(&mut rt, &pod, &pc, container(&env, "a", "exec sleep 1000")).await;
    let b = create_and_start(&mut rt, &pod, &pc, container(&env, "b", "exec sleep 2000")).await;
    let seen = comms_seen_by(&mut rt, &b).await;
    assert_eq!(seen.iter().filter(|c| *c == "sleep").count(), 2, "{seen:?}");
    assert!(
        seen.iter().any(|c| c == "gantry-monitor"),
        "the pod's init is PID 1: {seen:?}"
    );
    let (_, info) = pod_status_verbose(&mut rt, &pod).await;
    let init_pid = info["initPid"].as_i64().unwrap();
    assert!(Path::new(&format!("/proc/{init_pid}")).exists());
    remove_pod(&mut rt, &pod).await;
    assert!(
        !Path::new(&format!("/proc/{init_pid}/cmdline")).exists()
            || !std::fs::read_to_string(format!("/proc/{init_pid}/cmdline"))
                .unwrap_or_default()
                .contains("--pod-init")
    );

    // Private (what kubelet asks for unless shareProcessNamespace): only
    // its own process. (An absent option means POD in CRI, as above.)
    let pc = with_pid(NamespaceMode::Container, "private");
    let pod = run_pod(&mut rt, &pc).await;
    create_and_start(&mut rt, &pod, &pc, container(&env, "a", "exec sleep 1000")).await;
    let b = create_and_start(&mut rt, &pod, &pc, container(&env, "b", "exec sleep 2000")).await;
    let seen = comms_seen_by(&mut rt, &b).await;
    assert_eq!(seen.iter().filter(|c| *c == "sleep").count(), 1, "{seen:?}");
    remove_pod(&mut rt, &pod).await;

    // Host: the daemon itself is visible.
    let pc = with_pid(NamespaceMode::Node, "hostpid");
    let pod = run_pod(&mut rt, &pc).await;
    let a = create_and_start(&mut rt, &pod, &pc, container(&env, "a", "exec sleep 1000")).await;
    let seen = comms_seen_by(&mut rt, &a).await;
    assert!(seen.iter().any(|c| c == "gantry"), "{seen:?}");
    remove_pod(&mut rt, &pod).await;
    assert_eq!(leftovers(&env.g), (0, false));
    assert_eq!(
        std::fs::read_dir(env.g.dir.join("state/pods"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_and_privileges() {
    use gantry_proto::v1::{security_profile::ProfileType, Capability, SecurityProfile};
    let env = setup().await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "secure").await;
    let profile = env.logs.path().join("no-chmod.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","fchmodat","fchmodat2"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let run = |name: &str, script: &str, sc: LinuxContainerSecurityContext| {
        let mut c = container(&env, name, script);
        c.linux = Some(LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        });
        c
    };
    let seccomp_field = "grep Seccomp: /proc/self/status; chmod 600 /etc/group && echo chmod-ok || echo chmod-denied";
    let cases = [
        ("unconfined", None, "Seccomp:\t0", "chmod-ok"),
        (
            "default",
            Some(SecurityProfile {
                profile_type: ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            "Seccomp:\t2",
            "chmod-ok",
        ),
        (
            "localhost",
            Some(SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: profile.display().to_string(),
            }),
            "Seccomp:\t2",
            "chmod-denied",
        ),
    ];
    for (name, seccomp, want_field, want_chmod) in cases {
        let id = create_and_start(
            &mut rt,
            &pod,
            &pc,
            run(
                name,
                seccomp_field,
                LinuxContainerSecurityContext {
                    seccomp,
                    ..Default::default()
                },
            ),
        )
        .await;
        let s = wait_exited(&mut rt, &id).await;
        let texts = log_texts(Path::new(&s.log_path));
        assert!(texts.iter().any(|t| t == want_field), "{name}: {texts:?}");
        assert!(texts.iter().any(|t| t == want_chmod), "{name}: {texts:?}");
    }

    // ALL capabilities (clamped to what the host grants) and privileged
    // containers start; a plain one has no CAP_NET_ADMIN (bit 12).
    let capeff = "grep CapEff: /proc/self/status";
    let all = LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: vec!["ALL".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let privileged = LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    };
    let mut masks = Vec::new();
    for (name, sc) in [
        ("plain", LinuxContainerSecurityContext::default()),
        ("all", all),
        ("privileged", privileged),
    ] {
        let id = create_and_start(&mut rt, &pod, &pc, run(name, capeff, sc)).await;
        let s = wait_exited(&mut rt, &id).await;
        assert_eq!(s.exit_code, 0, "{name}");
        let line = log_texts(Path::new(&s.log_path)).remove(0);
        masks.push(u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).unwrap());
    }
    assert_eq!(
        masks[0] & (1 << 12),
        0,
        "plain containers lack CAP_NET_ADMIN"
    );
    assert_ne!(masks[1] & (1 << 12), 0, "ALL includes CAP_NET_ADMIN");
    assert_ne!(masks[2] & (1 << 21), 0, "privileged includes CAP_SYS_ADMIN");
    remove_pod(&mut rt, &pod).await;
    assert_eq!(leftovers(&env.g), (0, false));
}

/// The cgroup hierarchies of this host: each v1 controller, or the one v2
/// tree (on a hybrid host the v2 tree is `unified`, one of the former).
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

/// The cgroup of `pid` in the memory hierarchy (v1) or the v2 tree.
fn memory_cgroup(pid: i64) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1 = Path::new("/sys/fs/cgroup/memory").is_dir();
    text.lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            let hit = if v1 {
                controllers.split(',').any(|c| c == "memory")
            } else {
                controllers.is_empty()
            };
            hit.then(|| path.to_string())
        })
        .unwrap_or_default()
}

/// Removes a test's own cgroup tree from every hierarchy, deepest first.
fn remove_cgroup_tree(rel: &str) {
    for h in hierarchies() {
        let top = h.join(rel.trim_start_matches('/'));
        let mut dirs = vec![];
        let mut stack = vec![top.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
                dirs.push(d);
            }
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

type Events = tonic::Streaming<ContainerEventResponse>;

async fn subscribe(rt: &mut RuntimeServiceClient<Channel>) -> Events {
    rt.get_container_events(GetEventsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// The next event, as (ID, type), with the whole message.
async fn next_event(events: &mut Events) -> (String, ContainerEventType, ContainerEventResponse) {
    let ev = tokio::time::timeout(Duration::from_secs(30), events.message())
        .await
        .expect("no container event within 30 s")
        .unwrap()
        .expect("the event stream ended");
    (
        ev.container_id.clone(),
        ContainerEventType::try_from(ev.container_event_type).unwrap(),
        ev,
    )
}

/// Events until `until` is seen (inclusive), as (ID, type) pairs.
async fn events_until(
    events: &mut Events,
    until: (&str, ContainerEventType),
) -> Vec<(String, ContainerEventType, ContainerEventResponse)> {
    let mut seen = Vec::new();
    loop {
        let ev = next_event(events).await;
        let done = ev.0 == until.0 && ev.1 == until.1;
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_own_cgroups_their_containers_live_in() {
    let mut env = setup().await;
    let mut rt = env.g.runtime().await;
    let mem = if Path::new("/sys/fs/cgroup/memory").is_dir() {
        PathBuf::from("/sys/fs/cgroup/memory")
    } else {
        PathBuf::from("/sys/fs/cgroup")
    };
    let test_root = format!("/gantry-e2e-{}", std::process::id());

    // No cgroup_parent, a shared PID namespace: the pod's init is in the
    // pod's cgroup, the container below it.
    let mut shared = env.pod_config("cg-shared");
    if let Some(l) = shared.linux.as_mut() {
        l.security_context = None;
    }
    let pod = run_pod(&mut rt, &shared).await;
    let pod_dir = mem.join(format!("gantry/{pod}"));
    assert!(pod_dir.is_dir(), "{} missing", pod_dir.display());
    let (_, info) = pod_status_verbose(&mut rt, &pod).await;
    assert_eq!(info["cgroup"], format!("/gantry/{pod}"));
    let init = info["initPid"].as_i64().unwrap();
    assert!(init > 0);
    let init_cgroup = memory_cgroup(init);
    assert!(
        init_cgroup == format!("/gantry/{pod}") || init_cgroup == format!("/gantry/{pod}/pod-init"),
        "pod init in {init_cgroup}"
    );
    let id = create_and_start(
        &mut rt,
        &pod,
        &shared,
        container(&env, "cg", "exec sleep 1000"),
    )
    .await;
    let cpid = verbose_pid(&mut rt, &id).await;
    assert_eq!(memory_cgroup(cpid), format!("/gantry/{pod}/{id}"));

    // A parent kubelet made (here in the memory hierarchy only) is used and
    // kept; what gantry had to make is removed with the pod.
    let kube = format!("{test_root}/kubepods/podk");
    std::fs::create_dir_all(mem.join(kube.trim_start_matches('/'))).unwrap();
    let mut kpod = env.pod_config("cg-kubelet");
    kpod.linux.as_mut().unwrap().cgroup_parent = kube.clone();
    let kid_pod = run_pod(&mut rt, &kpod).await;
    let kc = create_and_start(
        &mut rt,
        &kid_pod,
        &kpod,
        container(&env, "kc", "exec sleep 1000"),
    )
    .await;
    let kpid = verbose_pid(&mut rt, &kc).await;
    assert_eq!(memory_cgroup(kpid), format!("{kube}/{kc}"));
    let made_by_gantry: Vec<PathBuf> = hierarchies()
        .into_iter()
        .filter(|h| h != &mem)
        .map(|h| h.join(kube.trim_start_matches('/')))
        .collect();
    assert!(made_by_gantry.iter().all(|d| d.is_dir()));

    // Malformed parents are refused before anything is made.
    for bad in ["kubepods/pod1", "/kubepods/../pod1"] {
        let mut p = env.pod_config("cg-bad");
        p.linux.as_mut().unwrap().cgroup_parent = bad.into();
        let e = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(p),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
    }
    // A failure after the cgroup was made takes it away again.
    let failing = format!("{test_root}/failing");
    let mut p = env.pod_config("cg-fail");
    let l = p.linux.as_mut().unwrap();
    l.cgroup_parent = failing.clone();
    l.sysctls = [("net.ipv4.ip_forward".to_string(), "x".to_string())].into();
    let e = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(p),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    for h in hierarchies() {
        let d = h.join(failing.trim_start_matches('/'));
        assert!(!d.exists(), "{} left behind", d.display());
    }

    // A pod whose cgroup vanished while gantry was down is not ready.
    let fragile_cfg = env.pod_config("cg-fragile");
    let fragile = run_pod(&mut rt, &fragile_cfg).await;
    drop(rt);
    env.g.kill();
    for h in hierarchies() {
        let d = h.join(format!("gantry/{fragile}"));
        let _ = std::fs::remove_dir(d.join("pod-init"));
        std::fs::remove_dir(&d).unwrap();
    }
    env.g.restart().await;
    let mut rt = env.g.runtime().await;
    let st = rt
        .pod_sandbox_status(gantry_proto::v1::PodSandboxStatusRequest {
            pod_sandbox_id: fragile.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        st.status.unwrap().state,
        gantry_proto::v1::PodSandboxState::SandboxNotready as i32
    );

    for p in [&pod, &kid_pod, &fragile] {
        for c in [&id, &kc] {
            let _ = rt
                .stop_container(StopContainerRequest {
                    container_id: c.to_string(),
                    timeout: 0,
                })
                .await;
        }
        remove_pod(&mut rt, p).await;
    }
    for h in hierarchies() {
        let d = h.join(format!("gantry/{pod}"));
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(
        made_by_gantry.iter().all(|d| !d.exists()),
        "gantry's own directories of the kubelet parent stayed"
    );
    assert!(
        mem.join(kube.trim_start_matches('/')).is_dir(),
        "kubelet's cgroup was removed"
    );
    remove_cgroup_tree(&test_root);
    assert_eq!(leftovers(&env.g), (0, false), "{}", env.g.log());
}

fn interfaces(proc_net_dev: &str) -> std::collections::BTreeSet<String> {
    proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pods_see_the_host_interfaces() {
    let env = setup().await;
    let mut rt = env.g.runtime().await;
    let run = |rt: &RuntimeServiceClient<Channel>, id: &str, cmd: &[&str]| {
        let req = ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        };
        let mut rt = rt.clone();
        async move {
            let r = rt.exec_sync(req).await.unwrap().into_inner();
            assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
            String::from_utf8_lossy(&r.stdout).into_owned()
        }
    };
    let mut started = vec![];
    for (name, host) in [("hostnet", true), ("podnet", false)] {
        let pc = env.pod_config_with(name, |o| {
            if host {
                o.network = NamespaceMode::Node as i32;
            }
        });
        let pod = run_pod(&mut rt, &pc).await;
        let id =
            create_and_start(&mut rt, &pod, &pc, container(&env, name, "exec sleep 1000")).await;
        started.push((pod, id));
    }
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host_before = interfaces(&std::fs::read_to_string("/proc/self/net/dev").unwrap());
    let in_host_pod = interfaces(&run(&rt, &started[0].1, &["/bin/cat", "/proc/net/dev"]).await);
    let host_after = interfaces(&std::fs::read_to_string("/proc/self/net/dev").unwrap());
    let in_pod = interfaces(&run(&rt, &started[1].1, &["/bin/cat", "/proc/net/dev"]).await);

    // Interfaces present on the host throughout (others' veths may come
    // and go meanwhile) are all seen from the host-network container.
    let stable: Vec<&String> = host_before.intersection(&host_after).collect();
    assert!(stable.contains(&&env.net.bridge), "{stable:?}");
    for i in &stable {
        assert!(in_host_pod.contains(*i), "{i} missing in {in_host_pod:?}");
    }
    assert_eq!(
        run(
            &mut rt,
            &started[0].1,
            &["/bin/busybox", "readlink", "/proc/self/ns/net"]
        )
        .await
        .trim(),
        host_ns.to_string_lossy()
    );
    // The pod-network container sees only its own.
    assert_eq!(
        in_pod,
        ["eth0", "lo"].iter().map(|s| s.to_string()).collect(),
        "{in_pod:?}"
    );
    assert_ne!(
        run(
            &mut rt,
            &started[1].1,
            &["/bin/busybox", "readlink", "/proc/self/ns/net"]
        )
        .await
        .trim(),
        host_ns.to_string_lossy()
    );

    for (pod, _) in started {
        remove_pod(&mut rt, &pod).await;
    }
    assert_eq!(leftovers(&env.g), (0, false), "{}", env.g.log());
}

fn of(
    seen: &[(String, ContainerEventType, ContainerEventResponse)],
    id: &str,
) -> Vec<ContainerEventType> {
    seen.iter().filter(|e| e.0 == id).map(|e| e.1).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_events_follow_the_lifecycle_and_survive_a_restart() {
    use ContainerEventType::*;
    let mut env = setup().await;
    let mut rt = env.g.runtime().await;
    let mut events = subscribe(&mut rt).await;
    let (pod, pc) = env.start_pod(&mut rt, "evented").await;
    let seen = events_until(&mut events, (&pod, ContainerStartedEvent)).await;
    assert_eq!(
        of(&seen, &pod),
        [ContainerCreatedEvent, ContainerStartedEvent]
    );
    assert_eq!(
        seen[0].2.pod_sandbox_status.as_ref().map(|s| s.id.as_str()),
        Some(pod.as_str())
    );

    // One container exits on its own about a second after starting; the
    // other is stopped and removed through the API meanwhile.
    let short = create_and_start(
        &mut rt,
        &pod,
        &pc,
        container(&env, "short", "sleep 1; exit 3"),
    )
    .await;
    let long = create_and_start(
        &mut rt,
        &pod,
        &pc,
        container(&env, "long", "exec sleep 1000"),
    )
    .await;
    rt.stop_container(StopContainerRequest {
        container_id: long.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(RemoveContainerRequest {
        container_id: long.clone(),
    })
    .await
    .unwrap();
    let mut seen = events_until(&mut events, (&long, ContainerDeletedEvent)).await;
    if !of(&seen, &short).contains(&ContainerStoppedEvent) {
        // No call touches "short": only the exit watcher can report it.
        seen.extend(events_until(&mut events, (&short, ContainerStoppedEvent)).await);
    }
    assert_eq!(
        of(&seen, &short),
        [
            ContainerCreatedEvent,
            ContainerStartedEvent,
            ContainerStoppedEvent
        ]
    );
    assert_eq!(
        of(&seen, &long),
        [
            ContainerCreatedEvent,
            ContainerStartedEvent,
            ContainerStoppedEvent,
            ContainerDeletedEvent
        ]
    );
    // The API calls' events come in the order of the calls.
    let api: Vec<(String, ContainerEventType)> = seen
        .iter()
        .filter(|e| !(e.0 == short && e.1 == ContainerStoppedEvent))
        .map(|e| (e.0.clone(), e.1))
        .collect();
    assert_eq!(
        api,
        [
            (short.clone(), ContainerCreatedEvent),
            (short.clone(), ContainerStartedEvent),
            (long.clone(), ContainerCreatedEvent),
            (long.clone(), ContainerStartedEvent),
            (long.clone(), ContainerStoppedEvent),
            (long.clone(), ContainerDeletedEvent),
        ]
    );
    // A STOPPED event carries the container's final status and its pod.
    let stopped = &seen
        .iter()
        .find(|e| e.0 == short && e.1 == ContainerStoppedEvent)
        .unwrap()
        .2;
    assert_eq!(
        stopped.pod_sandbox_status.as_ref().unwrap().id,
        pod,
        "{stopped:?}"
    );
    let st = stopped
        .containers_statuses
        .iter()
        .find(|s| s.id == short)
        .expect("the stopped container's status");
    assert_eq!(
        (st.state, st.exit_code),
        (ContainerState::ContainerExited as i32, 3)
    );
    // Deleted containers are no longer among the pod's.
    let deleted = &seen
        .iter()
        .find(|e| e.0 == long && e.1 == ContainerDeletedEvent)
        .unwrap()
        .2;
    assert!(deleted.containers_statuses.iter().all(|s| s.id != long));

    // A container still running across a daemon crash reports its exit to
    // the next daemon.
    let later = create_and_start(
        &mut rt,
        &pod,
        &pc,
        container(&env, "later", "sleep 3; exit 4"),
    )
    .await;
    drop((rt, events));
    env.g.kill();
    env.g.restart().await;
    let mut rt = env.g.runtime().await;
    let mut events = subscribe(&mut rt).await;
    let seen = events_until(&mut events, (&later, ContainerStoppedEvent)).await;
    assert_eq!(of(&seen, &later), [ContainerStoppedEvent]);

    // Stopping the pod reports the pod; its exited containers are not
    // reported stopped again. Removing it deletes containers, then the pod.
    stop_pod(&mut rt, &pod).await;
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
    let seen = events_until(&mut events, (&pod, ContainerDeletedEvent)).await;
    let kinds: Vec<(String, ContainerEventType)> =
        seen.iter().map(|e| (e.0.clone(), e.1)).collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert_eq!(kinds[0], (pod.clone(), ContainerStoppedEvent));
    let mut deleted: Vec<String> = kinds[1..3]
        .iter()
        .map(|(id, t)| {
            assert_eq!(*t, ContainerDeletedEvent);
            id.clone()
        })
        .collect();
    deleted.sort();
    let mut expected = vec![short.clone(), later.clone()];
    expected.sort();
    assert_eq!(deleted, expected);
    assert_eq!(kinds[3], (pod.clone(), ContainerDeletedEvent));
    assert_eq!(leftovers(&env.g), (0, false), "{}", env.g.log());

    // An open subscription does not hold up a SIGTERM: its stream ends.
    assert!(env.g.stop().success());
    let end = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("the event stream stayed open after shutdown");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_supplemental_groups_reach_the_process() {
    let env = BusyboxEnv::start("devices", "").await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "devices").await;
    let mut c = env.container(
        "dev",
        "id -G; echo data > /dev/gantry-null && echo written; sleep 1000",
    );
    c.devices = vec![gantry_proto::v1::Device {
        container_path: "/dev/gantry-null".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    }];
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            supplemental_groups: vec![5000, 5001],
            ..Default::default()
        }),
        ..Default::default()
    });
    create_and_start(&mut rt, &pod, &pc, c.clone()).await;
    let log = env.logs.path().join("devices/dev.log");
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("written") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(text.contains("1000 5000 5001"), "{text}");
    assert!(text.contains("written"), "{text}");

    // A host path that is not a device is refused, and leaves nothing.
    let mut bad = c;
    bad.metadata = Some(ContainerMetadata {
        name: "bad".into(),
        attempt: 0,
    });
    bad.devices[0].host_path = "/etc/hostname".into();
    let e = create(&mut rt, &pod, &pc, bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    remove_pod(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_volumes_are_writable_and_seeded_from_the_image() {
    // The image holds a file where it declares a volume, and a symlink
    // where it declares another, which must be followed inside the rootfs
    // only.
    let layer = Layer::busybox()
        .dir("data/")
        .file("data/seed.txt", b"from the image\n")
        .symlink("escape", "/etc");
    let spec = ImageSpec::new(vec![layer])
        .label("volumes")
        .volume("/data")
        .volume("/escape")
        .volume("/covered");
    let env = BusyboxEnv::start_with(spec, "").await;
    let (g, logs) = (&env.g, env.logs.path().join("vol"));
    let mut rt = g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "vol").await;
    let host_dir = tempfile::tempdir().unwrap();
    let c = ContainerConfig {
        mounts: vec![Mount {
            container_path: "/covered".into(),
            host_path: host_dir.path().display().to_string(),
            ..Default::default()
        }],
        ..env.container(
            "vol",
            "cat /data/seed.txt; echo new > /data/new.txt && echo wrote; ls /escape | wc -l; sleep 1000",
        )
    };
    let id = create_and_start(&mut rt, &pod, &pc, c).await;
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(logs.join("vol.log")).unwrap_or_default();
        if text.lines().count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
        .collect();
    assert_eq!(lines.first(), Some(&"from the image"), "{text}");
    assert!(lines.contains(&"wrote"), "{text}");
    // The symlinked volume is seeded from the image's /etc (passwd and
    // group), as containerd resolves it, never from the host's.
    assert!(lines.contains(&"2"), "{text}");
    // The volume lives with the container, not in its image layers.
    let vol = g
        .dir
        .join("root/runtime/containers")
        .join(&id)
        .join("volumes");
    let found: Vec<_> = std::fs::read_dir(&vol).unwrap().flatten().collect();
    assert_eq!(
        found.len(),
        2,
        "/data and /escape, not the mounted /covered"
    );
    assert!(found.iter().any(|e| e.path().join("new.txt").is_file()));
    remove_pod(&mut rt, &pod).await;
    assert!(!vol.exists(), "volumes go with the container");
}

/// Whether `pid` is gone (or a zombie nobody waits for any more).
fn gone(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "Z"))
                .unwrap_or(true)
        })
        .unwrap_or(true)
}

/// The cgroup2 `cgroup.kill` of `pid`'s cgroup, where the kernel and the
/// host's cgroup layout have one.
fn cgroup_kill_of(pid: i64) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let root = Path::new("/sys/fs/cgroup");
    let v2 = if root.join("cgroup.controllers").exists() {
        root.to_path_buf()
    } else {
        root.join("unified")
    };
    Some(v2.join(rel.trim_start_matches('/')).join("cgroup.kill")).filter(|p| p.exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_pod_kills_every_process_of_its_running_containers() {
    use ContainerEventType::*;
    let env = setup().await;
    let mut rt = env.g.runtime().await;
    // The host's PID namespace: killing a container's init alone would
    // leave its background child running.
    let pc = env.pod_config_with("stopall", |o| o.pid = NamespaceMode::Node as i32);
    let pod = run_pod(&mut rt, &pc).await;
    let mut running = Vec::new();
    for i in 0..6 {
        let id = create_and_start(
            &mut rt,
            &pod,
            &pc,
            container(&env, &format!("c{i}"), "sleep 1000 & exec sleep 1001"),
        )
        .await;
        running.push(id);
    }
    let idle = create(
        &mut rt,
        &pod,
        &pc,
        container(&env, "idle", "exec sleep 1000"),
    )
    .await
    .unwrap();
    // Each init and its background child.
    let mut pids = Vec::new();
    for id in &running {
        let init = verbose_pid(&mut rt, id).await;
        let children = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"))
            .unwrap_or_default();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut child: Option<i64> = children
            .split_whitespace()
            .next()
            .and_then(|c| c.parse().ok());
        while child.is_none() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            child = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok());
        }
        pids.push((init, child.unwrap_or_else(|| panic!("{id} has no child"))));
    }
    let fast = cgroup_kill_of(pids[0].0).is_some();
    let mut events = subscribe(&mut rt).await;

    stop_pod(&mut rt, &pod).await;
    for (id, (init, child)) in running.iter().zip(&pids) {
        let st = status(&mut rt, id).await;
        assert_eq!(
            (st.state, st.exit_code, st.reason.as_str()),
            (ContainerState::ContainerExited as i32, 137, "Error"),
            "{id}: {st:?}"
        );
        assert!(gone(*init), "{id}'s init {init} lives");
        // The child was SIGKILLed with the init; its reaping may trail.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !gone(*child) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone(*child), "{id}'s child {child} outlived the pod's stop");
    }
    assert_eq!(
        status(&mut rt, &idle).await.state,
        ContainerState::ContainerCreated as i32,
        "a container never started stays created"
    );
    let seen = events_until(&mut events, (&pod, ContainerStoppedEvent)).await;
    let mut stopped: Vec<String> = seen
        .iter()
        .filter(|e| e.0 != pod)
        .map(|e| {
            assert_eq!(e.1, ContainerStoppedEvent, "{}", e.0);
            e.0.clone()
        })
        .collect();
    stopped.sort();
    let mut want = running.clone();
    want.sort();
    assert_eq!(
        stopped, want,
        "one STOPPED per running container, before the pod's"
    );
    // Where the kernel can, no runtime was started to kill them.
    assert_eq!(
        env.g.log().matches("killed through its cgroup").count(),
        if fast { running.len() } else { 0 },
        "fast path expected: {fast}"
    );

    // Again: nothing changes, nothing is reported.
    stop_pod(&mut rt, &pod).await;
    let again = tokio::time::timeout(Duration::from_millis(500), events.message()).await;
    assert!(again.is_err(), "a second stop sent {again:?}");
    remove_pod(&mut rt, &pod).await;
    assert_eq!(leftovers(&env.g), (0, false), "{}", env.g.log());
}
