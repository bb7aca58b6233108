//! Crash safety under churn: the daemon is SIGKILLed at random moments
//! while pods and containers are being created, started, stopped and
//! removed concurrently, restarted each time, and at the end everything is
//! removed through the API. Nothing may be left: no monitor, pod init or
//! container process, cgroup, mount (rootfs, namespace pins), veth, IP
//! reservation or state directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_e2e::fixture::{all_containers, all_pods, BusyboxEnv};
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec as CriImageSpec,
    KeyValue, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const MARK: &str = "GANTRY_E2E_CRASH_MARK";

struct Churn {
    image: String,
    cgroup_parent: String,
    mark: String,
}

impl Churn {
    fn pod(&self, name: &str, shared_pid: bool) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "crash".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        pid: if shared_pid {
                            NamespaceMode::Pod
                        } else {
                            NamespaceMode::Container
                        } as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container(&self) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "work".into(),
                attempt: 0,
            }),
            image: Some(CriImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: vec!["/bin/sleep".into(), "1000".into()],
            // Lets the test find this container's processes on the host.
            envs: vec![KeyValue {
                key: MARK.into(),
                value: self.mark.clone().into_bytes(),
            }],
            ..Default::default()
        }
    }
}

/// RunPodSandbox, CreateContainer, StartContainer; the pod's ID once known.
async fn bring_up(
    mut rt: RuntimeServiceClient<Channel>,
    config: PodSandboxConfig,
    container: ContainerConfig,
) -> Option<String> {
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .ok()?
        .into_inner()
        .pod_sandbox_id;
    let Ok(c) = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container),
            sandbox_config: Some(config),
        })
        .await
    else {
        return Some(pod);
    };
    let _ = rt
        .start_container(StartContainerRequest {
            container_id: c.into_inner().container_id,
        })
        .await;
    Some(pod)
}

async fn tear_down(mut rt: RuntimeServiceClient<Channel>, pod: String) -> Result<(), String> {
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .map_err(|e| e.to_string())?;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Processes that belong to this test's daemon: monitors and pod inits
/// (they inherit the daemon's working directory) and containers (marked).
fn our_processes(dir: &Path, mark: &str) -> Vec<(i32, String)> {
    let needle = format!("{MARK}={mark}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            cwd.as_deref() == Some(dir) || env.split(|b| *b == 0).any(|v| v == needle.as_bytes())
        })
        .map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            (pid, String::from_utf8_lossy(&cmd).replace('\0', " "))
        })
        .collect()
}

/// Cgroup directories left under the test's parent, in any hierarchy.
fn our_cgroups(parent: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        for h in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let p = h.path().join(parent.trim_start_matches('/'));
            for c in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                if c.path().is_dir() {
                    found.push(c.path());
                }
            }
        }
    }
    found
}

fn remove_cgroup_parents(parent: &str) {
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        for h in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let p = h.path().join(parent.trim_start_matches('/'));
            for c in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir(c.path());
            }
            let _ = std::fs::remove_dir(&p);
        }
    }
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_churn_leaves_nothing_behind() {
    let BusyboxEnv {
        registry: _registry,
        mut g,
        net,
        image,
        logs: _logs,
    } = BusyboxEnv::start("crash", "").await;
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let churn = Churn {
        image,
        cgroup_parent: format!("/gantry-e2e-crash-{:08x}", rng.random::<u32>()),
        mark: format!("{:016x}", rng.random::<u64>()),
    };

    let mut pods: Vec<String> = Vec::new();
    for round in 0..12 {
        let rt = g.runtime().await;
        let mut ups = tokio::task::JoinSet::new();
        for j in 0..3 {
            let config = churn.pod(&format!("r{round}-{j}"), (round + j) % 2 == 0);
            ups.spawn(bring_up(rt.clone(), config, churn.container()));
        }
        let mut downs = tokio::task::JoinSet::new();
        for pod in pods.drain(..pods.len().min(2)) {
            downs.spawn(tear_down(rt.clone(), pod.clone()));
        }
        let delay = Duration::from_millis(rng.random_range(0..600));
        tokio::time::sleep(delay).await;
        g.kill();
        let mut up = 0;
        while let Some(r) = ups.join_next().await {
            let r = r.unwrap();
            up += r.is_some() as usize;
            pods.extend(r);
        }
        let mut down = 0;
        while let Some(r) = downs.join_next().await {
            down += r.unwrap().is_ok() as usize;
        }
        println!(
            "round {round}: killed after {delay:?}; {up} pods got an ID, {down} teardowns finished"
        );
        drop(rt);
        g.restart().await;
    }

    // The leftover probe does see this daemon's processes.
    let running = our_processes(&g.dir, &churn.mark);
    println!("{} processes before the final cleanup", running.len());
    assert!(
        pods.is_empty() || !running.is_empty(),
        "live pods {pods:?} but no processes found"
    );

    // Every object the daemon still knows is removed through the API
    // (retried: a pod whose network teardown failed asks for it).
    let mut rt = g.runtime().await;
    for _ in 0..3 {
        let items = all_pods(&mut rt).await;
        for p in items {
            let _ = tear_down(rt.clone(), p.id).await;
        }
    }
    for c in all_containers(&mut rt).await {
        let _ = rt
            .remove_container(RemoveContainerRequest { container_id: c.id })
            .await;
    }
    let pods_left = all_pods(&mut rt).await.len();
    let containers_left = all_containers(&mut rt).await.len();
    drop(rt);
    let log = g.log();
    g.stop();
    for what in [
        "rolling back a sandbox",
        "rolling back a container",
        "killing a monitor left",
        "container directory without a record",
        "finishing the removal of a container",
    ] {
        println!("recovery: {:3} x {what:?}", log.matches(what).count());
    }

    // Look for leftovers, clean them up (a failed run must not leak), and
    // only then judge.
    let mut procs = Vec::new();
    for _ in 0..40 {
        procs = our_processes(&g.dir, &churn.mark);
        if procs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = g.dir.display().to_string();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_string)
        .collect();
    let cgroups = our_cgroups(&churn.cgroup_parent);
    let ports = net.bridge_ports();
    let ips = net.reservations();
    let state: Vec<(String, Vec<String>)> = [
        "root/runtime/containers",
        "root/runtime/removing",
        "root/runtime/sandboxes",
        "state/pods",
        "state/runtime/runc",
    ]
    .iter()
    .map(|d| (d.to_string(), entries(&g.dir.join(d))))
    .filter(|(_, e)| !e.is_empty())
    .collect();

    for (pid, _) in &procs {
        // SAFETY: signalling processes this test's daemon started.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    for m in mounts.iter().rev() {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(m)
            .status();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    remove_cgroup_parents(&churn.cgroup_parent);

    assert_eq!((pods_left, containers_left), (0, 0), "objects left");
    assert!(procs.is_empty(), "processes left: {procs:?}\n{log}");
    assert!(mounts.is_empty(), "mounts left: {mounts:?}\n{log}");
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}\n{log}");
    assert!(
        ports.is_empty() && ips.is_empty(),
        "veths {ports:?}, IPs {ips:?} left\n{log}"
    );
    assert!(state.is_empty(), "state left: {state:?}\n{log}");
}
