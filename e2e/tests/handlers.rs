//! Runtime handlers end to end: pods whose `runtime_handler` names youki
//! or gVisor's runsc really run under that runtime (logs, ExecSync, stop,
//! remove), and a handler whose binary is missing is refused clearly.
//!
//! youki and runsc are required, not optional: CI installs them, and a
//! missing one fails here with the way to install it.

use std::path::Path;
use std::time::Duration;

use gantry_e2e::fixture::{all_containers, remove_pod, require_runtime, stop_pod, BusyboxEnv};
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    ContainerMetadata, ContainerState, ContainerStatsRequest, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, LinuxContainerResources, PodSandboxStatusRequest,
    RemoveContainerRequest, RunPodSandboxRequest, StartContainerRequest, StatusRequest,
    StopContainerRequest, StopPodSandboxRequest, UpdateContainerResourcesRequest,
};
use tonic::transport::Channel;
use tonic::Code;

type Env = BusyboxEnv;

async fn state_of(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> i32 {
    rt.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
    .into_inner()
    .status
    .map(|s| s.state)
    .unwrap_or_else(|| panic!("no status for {id}"))
}

async fn setup(runtimes_yaml: &str) -> Env {
    BusyboxEnv::start(
        "handlers",
        &format!("runtime:\n  runtimes:\n{runtimes_yaml}"),
    )
    .await
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

/// The container's CRI log as text lines.
fn log_texts(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect()
}

async fn exec(rt: &mut RuntimeServiceClient<Channel>, id: &str, cmd: &[&str]) -> (i32, String) {
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        })
        .await
        .unwrap_or_else(|e| panic!("exec {cmd:?} in {id}: {e}"))
        .into_inner();
    let stdout = String::from_utf8_lossy(&r.stdout).trim().to_string();
    if r.exit_code >= 126 {
        panic!(
            "exec {cmd:?} in {id} could not run ({}): {stdout} {}",
            r.exit_code,
            String::from_utf8_lossy(&r.stderr)
        );
    }
    (r.exit_code, stdout)
}

/// Processes whose command line mentions `needle` (a container ID: the
/// runtime's helpers and the monitor all carry it).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{}: {cmd}", name.to_string_lossy()));
            }
        }
    }
    found
}

/// What the runtime of `handler`, as `binary`, says about container `id`
/// in gantry's state root for that handler: `Some(state JSON)` or `None`
/// when the command fails.
fn runtime_state(env: &Env, binary: &Path, handler: &str, id: &str) -> Option<serde_json::Value> {
    let out = std::process::Command::new(binary)
        .arg("--root")
        .arg(env.g.dir.join("state/runtime").join(handler))
        .arg("state")
        .arg(id)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// One pod on `handler`: a container that logs and keeps running, probed
/// with ExecSync, across a daemon kill, then stopped and removed with the
/// pod. `check` gets the container's ID and the release `uname -r`
/// reports inside it, to check against what the runtime should show.
async fn run_one(env: &mut Env, handler: &str, check: impl AsyncFnOnce(&Env, &str, &str)) {
    let mut rt = env.g.runtime().await;
    let pc = env.pod_config(handler);
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox on {handler}: {e}\n{}", env.g.log()))
        .into_inner()
        .pod_sandbox_id;
    let script = "echo started; uname -r; echo oops >&2; exec sleep 1000";
    let config = env.container("probe", script);
    let second = env.container("left-running", script);
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(pc.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer on {handler}: {e}\n{}", env.g.log()))
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer on {handler}: {e}\n{}", env.g.log()));

    let log = env.logs.path().join(handler).join("probe.log");
    let mut texts = Vec::new();
    for _ in 0..200 {
        texts = log_texts(&log);
        if texts.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        texts.first().map(String::as_str),
        Some("started"),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t == "oops"),
        "stderr logged: {texts:?}"
    );
    assert_eq!(
        state_of(&mut rt, &id).await,
        ContainerState::ContainerRunning as i32
    );

    let (code, release) = exec(&mut rt, &id, &["busybox", "uname", "-r"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        texts.get(1),
        Some(&release),
        "the init and an exec see one kernel"
    );
    // The container is on the pod's network: its address is there.
    let ip = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    assert!(!ip.is_empty(), "the pod has an address");
    let (_, addrs) = exec(&mut rt, &id, &["busybox", "ip", "-o", "addr"]).await;
    assert!(
        addrs.contains(&format!("inet {ip}/")),
        "pod address {ip} inside: {addrs}"
    );
    let (code, _) = exec(&mut rt, &id, &["sh", "-c", "exit 3"]).await;
    assert_eq!(code, 3, "ExecSync returns the command's status");
    // A timed-out exec is killed inside the container, whatever the
    // runtime's exec process is on the host.
    let t = std::time::Instant::now();
    let e = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["busybox".into(), "sleep".into(), "61".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let mut stats = String::new();
    for _ in 0..50 {
        (_, stats) = exec(&mut rt, &id, &["sh", "-c", "cat /proc/[0-9]*/stat"]).await;
        // Run as `busybox`, the timed-out command is told from the init
        // (`sleep`); a zombie waiting for the init to reap it is dead.
        if !stats
            .lines()
            .any(|l| l.contains("(busybox)") && !l.contains("(busybox) Z"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !stats
            .lines()
            .any(|l| l.contains("(busybox)") && !l.contains("(busybox) Z")),
        "the timed-out exec still runs: {stats}"
    );
    // The runtime put the container in the cgroup gantry chose: its
    // memory is counted there (gVisor's sandbox and gofer included).
    let stats = rt
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("ContainerStats on {handler}: {e}"))
        .into_inner()
        .stats
        .unwrap_or_default();
    let memory = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|b| b.value)
        .unwrap_or_default();
    assert!(memory > 0, "memory of the container's cgroup: {memory}");
    check(env, &id, &release).await;

    // The container outlives a killed daemon: its monitor holds it, and the
    // restarted daemon finds it running and can still exec in it.
    drop(rt);
    env.g.kill();
    env.g.restart().await;
    let mut rt = env.g.runtime().await;
    assert_eq!(
        state_of(&mut rt, &id).await,
        ContainerState::ContainerRunning as i32
    );
    assert_eq!(
        exec(&mut rt, &id, &["echo", "still here"]).await,
        (0, "still here".to_string())
    );

    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 2,
    })
    .await
    .unwrap_or_else(|e| panic!("StopContainer on {handler}: {e}\n{}", env.g.log()));
    let status = rt
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, ContainerState::ContainerExited as i32);
    // Ended by a signal: under runc and youki the kernel spares a PID 1
    // without a SIGTERM handler, so SIGKILL (137) after the grace period;
    // gVisor's kernel lets SIGTERM (143) through.
    assert!(
        [137, 143].contains(&status.exit_code),
        "exit code {}",
        status.exit_code
    );
    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemoveContainer on {handler}: {e}\n{}", env.g.log()));
    // A command that is not there: the runtime's own message reaches the
    // caller, without what youki prints after it (a backtrace).
    let mut broken = second.clone();
    broken.metadata = Some(ContainerMetadata {
        name: "broken".into(),
        attempt: 0,
    });
    broken.command = vec!["/nonexistent-cmd".into()];
    let failed = match rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(broken),
            sandbox_config: Some(pc.clone()),
        })
        .await
    {
        Err(e) => e,
        Ok(r) => {
            let id = r.into_inner().container_id;
            let e = rt
                .start_container(StartContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .expect_err("a missing command starts");
            rt.remove_container(RemoveContainerRequest { container_id: id })
                .await
                .unwrap();
            e
        }
    };
    assert!(
        failed.message().contains("nonexistent-cmd") && !failed.message().contains("backtrace"),
        "{handler}: {}",
        failed.message()
    );
    // A container still running when its pod goes is killed and deleted
    // by the runtime too.
    let second = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(second),
            sandbox_config: Some(pc),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer on {handler}: {e}\n{}", env.g.log()))
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: second.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer on {handler}: {e}\n{}", env.g.log()));
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StopPodSandbox on {handler}: {e}\n{}", env.g.log()));
    remove_pod(&mut rt, &pod).await;
    assert!(all_containers(&mut rt).await.is_empty());
    let root = env.g.dir.join("state/runtime").join(handler);
    let left: Vec<_> = std::fs::read_dir(&root)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    for id in [&id, &second] {
        assert!(
            !left
                .iter()
                .any(|n| n.to_string_lossy().contains(id.as_str())),
            "{handler} state left in {}: {left:?}",
            root.display()
        );
        let procs = processes_mentioning(id);
        assert!(procs.is_empty(), "processes left: {procs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runsc_pod_runs_in_gvisor() {
    let runsc = require_runtime("runsc", "apt-get install runsc");
    let mut env = setup(&format!(
        "    runsc:\n      path: {}\n      args: [--network=host]\n",
        runsc.display()
    ))
    .await;
    run_one(
        &mut env,
        "runsc",
        async |env: &Env, id: &str, release: &str| {
            // gVisor's own kernel answers, not the host's.
            assert_ne!(release, host_release(), "uname -r inside runsc");
            let state = runtime_state(env, &runsc, "runsc", id)
                .unwrap_or_else(|| panic!("runsc does not know container {id}"));
            assert_eq!(state["status"], "running", "{state}");
            let mut rt = env.g.runtime().await;
            let (_, dmesg) = exec(&mut rt, id, &["busybox", "dmesg"]).await;
            assert!(dmesg.contains("gVisor"), "dmesg inside runsc: {dmesg}");
            // runsc has no `update`: a clear refusal, not its usage text.
            let e = rt
                .update_container_resources(UpdateContainerResourcesRequest {
                    container_id: id.into(),
                    linux: Some(LinuxContainerResources {
                        cpu_shares: 512,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unimplemented, "{e}");
            assert!(!e.message().contains("Usage:"), "{}", e.message());
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_youki_pod_runs_under_youki() {
    let youki = require_runtime("youki", "cargo install youki --features v1");
    let mut env = setup(&format!(
        "    youki:\n      path: {}\n      args: []\n",
        youki.display()
    ))
    .await;
    run_one(
        &mut env,
        "youki",
        async |env: &Env, id: &str, release: &str| {
            // youki shares the host's kernel; what proves youki made the
            // container is that youki, and not runc, can read its state.
            assert_eq!(release, host_release());
            let state = runtime_state(env, &youki, "youki", id)
                .unwrap_or_else(|| panic!("youki does not know container {id}\n{}", env.g.log()));
            assert_eq!(state["status"], "running", "{state}");
            assert!(
                runtime_state(env, Path::new("runc"), "youki", id).is_none(),
                "runc reads the container's state: runc made it"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_without_its_binary_is_refused() {
    let env = setup("    ghost:\n      path: /nonexistent/ghost-runtime\n      args: []\n").await;
    let mut rt = env.g.runtime().await;
    // Configured, so listed; it is the pod that cannot use it.
    let handlers: Vec<String> = rt
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .runtime_handlers
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert!(handlers.contains(&"ghost".to_string()), "{handlers:?}");
    let e = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(env.pod_config("ghost")),
            runtime_handler: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(
        e.message().contains("/nonexistent/ghost-runtime"),
        "{}",
        e.message()
    );
    let e = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(env.pod_config("nobody")),
            runtime_handler: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    // The default handler still works beside the broken one.
    let fine = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(env.pod_config("fine")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    remove_pod(&mut rt, &fine).await;
}

/// A daemon killed in the middle of StartContainer, after the runtime ran
/// the container but before the start was recorded: on restart the
/// container is created again (its process, monitor and runtime state
/// gone), and it can be started, then removed without leftovers. The
/// handler is runc behind a script that holds `run` open on a gate file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_cut_short_is_undone_and_can_be_retried() {
    let runc = require_runtime("runc", "apt-get install runc");
    let scripts = tempfile::tempdir().unwrap();
    let gate = scripts.path().join("gate");
    let wrapper = scripts.path().join("gated-runc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n{runc} \"$@\"\nrc=$?\ncase \" $* \" in *\" run \"*) while [ -e {gate} ]; do sleep 0.05; done;; esac\nexit $rc\n",
            runc = runc.display(),
            gate = gate.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut env = setup(&format!("    gated:\n      path: {}\n", wrapper.display())).await;
    let mut rt = env.g.runtime().await;
    let pc = env.pod_config("gated");
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: "gated".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", env.g.log()))
        .into_inner()
        .pod_sandbox_id;
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(env.container("held", "echo ran; exec sleep 1000")),
            sandbox_config: Some(pc.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", env.g.log()))
        .into_inner()
        .container_id;
    std::fs::write(&gate, b"").unwrap();
    let mut starting = env.g.runtime().await;
    let start_id = id.clone();
    let call = tokio::spawn(async move {
        starting
            .start_container(StartContainerRequest {
                container_id: start_id,
            })
            .await
    });
    // The runtime has run the container once its PID file is written.
    let pid_file = env
        .g
        .dir
        .join("root/runtime/containers")
        .join(&id)
        .join("pid");
    let mut first_pid = 0;
    for _ in 0..200 {
        if let Some(p) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            first_pid = p;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(first_pid > 0, "the runtime never ran the container");
    assert!(Path::new(&format!("/proc/{first_pid}")).exists());
    drop(rt);
    env.g.kill();
    let _ = call.await;
    env.g.restart().await;
    let mut rt = env.g.runtime().await;
    assert_eq!(
        state_of(&mut rt, &id).await,
        ContainerState::ContainerCreated as i32
    );
    let mut gone = false;
    for _ in 0..100 {
        // The killed process may linger as a zombie of PID 1 here.
        let st = std::fs::read_to_string(format!("/proc/{first_pid}/stat")).unwrap_or_default();
        if st.is_empty() || st.contains(") Z ") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the interrupted start's container still runs");
    assert!(
        runtime_state(&env, &runc, "gated", &id).is_none(),
        "the runtime still knows the container"
    );
    std::fs::remove_file(&gate).unwrap();
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer after the restart: {e}\n{}", env.g.log()));
    assert_eq!(
        state_of(&mut rt, &id).await,
        ContainerState::ContainerRunning as i32
    );
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
    let left: Vec<_> = std::fs::read_dir(env.g.dir.join("root/runtime/containers"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}\n{}", env.g.log());
}
