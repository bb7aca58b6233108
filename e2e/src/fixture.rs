//! The world most end-to-end tests start from: a local registry holding a
//! busybox image, gantry set up to pull from it (plus the YAML a test
//! adds), a throwaway CNI network, the image already pulled, and a
//! directory for pod logs. Also the CRI calls the tests make over and
//! over, which panic with the daemon's answer when it refuses.

use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    Container, ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus,
    ContainerStatusRequest, CreateContainerRequest, ImageSpec as CriImageSpec,
    LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListContainersRequest, ListPodSandboxRequest, NamespaceMode,
    NamespaceOption, PodSandbox, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatus,
    PodSandboxStatusRequest, PullImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::Channel;

use crate::daemon::Gantry;
use crate::net::TestNetwork;
use crate::oci::{ImageSpec, Layer, Pusher};
use crate::registry::Registry;
use crate::{local_registries, require_host};

pub struct BusyboxEnv {
    pub registry: Registry,
    pub g: Gantry,
    pub net: TestNetwork,
    /// The pulled busybox image's reference.
    pub image: String,
    pub logs: tempfile::TempDir,
}

impl BusyboxEnv {
    /// `label` makes the image (and its ID) the test's own.
    pub async fn start(label: &str, extra_yaml: &str) -> BusyboxEnv {
        Self::start_with(
            ImageSpec::new(vec![Layer::busybox()]).label(label),
            extra_yaml,
        )
        .await
    }

    /// The same with an image of the test's making (busybox plus more).
    pub async fn start_with(spec: ImageSpec, extra_yaml: &str) -> BusyboxEnv {
        require_host();
        let registry = Registry::start().await;
        let img = spec.build();
        Pusher::new(&registry.addr, None)
            .image("e2e/busybox", &["1"], &img)
            .await;
        let image = format!("{}/e2e/busybox:1", registry.addr);
        let g = Gantry::start(&format!(
            "{}{extra_yaml}",
            local_registries(&[&registry.addr])
        ))
        .await;
        let net = TestNetwork::create(&g.dir.join("cni"), &g.dir.join("ipam"));
        g.images()
            .await
            .pull_image(PullImageRequest {
                image: Some(CriImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("pulling the test image");
        BusyboxEnv {
            registry,
            g,
            net,
            image,
            logs: tempfile::tempdir().expect("a log directory"),
        }
    }

    /// A pod as kubelet asks for one (each container its own PID
    /// namespace), logging under `logs/<name>`.
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        logged_pod_config(self.logs.path(), name)
    }

    /// Runs a pod of [`Self::pod_config`]; returns its ID, and the config
    /// that CreateContainer wants again.
    pub async fn start_pod(
        &self,
        rt: &mut RuntimeServiceClient<Channel>,
        name: &str,
    ) -> (String, PodSandboxConfig) {
        let config = self.pod_config(name);
        (run_pod(rt, &config).await, config)
    }

    /// [`Self::pod_config`] with its namespace options changed by `f`
    /// (host network, a shared PID namespace, ...).
    pub fn pod_config_with(
        &self,
        name: &str,
        f: impl FnOnce(&mut NamespaceOption),
    ) -> PodSandboxConfig {
        let mut pc = self.pod_config(name);
        if let Some(opts) = pc
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            f(opts);
        }
        pc
    }

    /// A busybox container running `script` with `sh -c`.
    pub fn container(&self, name: &str, script: &str) -> ContainerConfig {
        busybox_container(&self.image, name, script)
    }
}

/// A busybox container of `image` running `script` with `sh -c`, logging
/// to `<name>.log`.
pub fn busybox_container(image: &str, name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(CriImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

/// A pod as kubelet asks for one (each container its own PID namespace),
/// logging under `<logs>/<name>`.
pub fn logged_pod_config(logs: &std::path::Path, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        log_directory: logs.join(name).display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..named_pod_config(name)
    }
}

/// A pod config that only names the pod: its metadata (in namespace
/// `e2e`) and hostname.
pub fn named_pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "e2e".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        ..Default::default()
    }
}

/// Creates `config` in `pod` and starts it, panicking with the daemon's
/// answer on failure; returns the container's ID.
pub async fn create_and_start(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}"))
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer {id}: {e}"));
    id
}

/// CreateContainer of `c` in `pod`: the container's ID, or the daemon's
/// refusal for a test to look at.
pub async fn create_container(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    pod_cfg: &PodSandboxConfig,
    c: ContainerConfig,
) -> Result<String, tonic::Status> {
    rt.create_container(CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(c),
        sandbox_config: Some(pod_cfg.clone()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

/// Runs a pod with `config` on the default runtime handler; returns its ID.
pub async fn run_pod(rt: &mut RuntimeServiceClient<Channel>, config: &PodSandboxConfig) -> String {
    rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"))
    .into_inner()
    .pod_sandbox_id
}

/// A container's status asked for verbosely: the status, and the `info`
/// JSON the runtime adds to it.
pub async fn container_status_verbose(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> (ContainerStatus, serde_json::Value) {
    let r = rt
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
        .into_inner();
    let info = serde_json::from_str(&r.info["info"])
        .unwrap_or_else(|e| panic!("the verbose info of {id}: {e}"));
    (r.status.expect("a container status"), info)
}

/// The host PID of a started container's process, from its verbose status.
pub async fn verbose_pid(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> i64 {
    let (_, info) = container_status_verbose(rt, id).await;
    info["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid in the verbose info of {id}: {info}"))
}

/// A pod's status asked for verbosely: the status, and the `info` JSON the
/// runtime adds to it.
pub async fn pod_status_verbose(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
) -> (PodSandboxStatus, serde_json::Value) {
    let r = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: true,
        })
        .await
        .unwrap_or_else(|e| panic!("PodSandboxStatus {pod}: {e}"))
        .into_inner();
    let info = serde_json::from_str(&r.info["info"])
        .unwrap_or_else(|e| panic!("the verbose info of pod {pod}: {e}"));
    (r.status.expect("a pod status"), info)
}

/// Stops a pod, panicking with the daemon's answer on failure.
pub async fn stop_pod(rt: &mut RuntimeServiceClient<Channel>, pod: &str) {
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("StopPodSandbox {pod}: {e}"));
}

/// Removes a pod (and so its containers), panicking with the daemon's
/// answer on failure.
pub async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, pod: &str) {
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox {pod}: {e}"));
}

/// Every container the daemon knows, unfiltered.
pub async fn all_containers(rt: &mut RuntimeServiceClient<Channel>) -> Vec<Container> {
    rt.list_containers(ListContainersRequest::default())
        .await
        .unwrap_or_else(|e| panic!("ListContainers: {e}"))
        .into_inner()
        .containers
}

/// Every pod the daemon knows, unfiltered.
pub async fn all_pods(rt: &mut RuntimeServiceClient<Channel>) -> Vec<PodSandbox> {
    rt.list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap_or_else(|e| panic!("ListPodSandbox: {e}"))
        .into_inner()
        .items
}

/// A PullImageRequest for `name`, without credentials.
pub fn pull_request(name: &str) -> PullImageRequest {
    PullImageRequest {
        image: Some(CriImageSpec {
            image: name.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the image store holds on disk, by directory: committed blobs,
/// finished snapshots, snapshots being unpacked, partial downloads, image
/// records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCounts {
    pub blobs: usize,
    pub snapshots: usize,
    pub unpacking: usize,
    pub ingest: usize,
    pub records: usize,
}

pub fn store_counts(g: &Gantry) -> StoreCounts {
    let root = g.dir.join("root/images");
    let count = |p: std::path::PathBuf| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    let unpacking = std::fs::read_dir(root.join("snapshots"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
                .count()
        })
        .unwrap_or(0);
    StoreCounts {
        blobs: count(root.join("content/blobs/sha256")),
        snapshots: count(root.join("snapshots")) - unpacking,
        unpacking,
        ingest: count(root.join("content/ingest")),
        records: count(root.join("index")),
    }
}

/// `c` with its memory limited to `bytes`.
pub fn memory_limited(c: ContainerConfig, bytes: i64) -> ContainerConfig {
    ContainerConfig {
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: bytes,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..c
    }
}

/// Paths under gantry's directories named after `id`, and mount points
/// whose path names it: what is left of a container or pod.
pub fn traces_of(g: &Gantry, id: &str) -> (Vec<std::path::PathBuf>, Vec<String>) {
    fn walk(dir: &std::path::Path, id: &str, found: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().contains(id) {
                found.push(path.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, id, found);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&g.dir, id, &mut paths);
    let under = g.dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| m.starts_with(&under) && m.contains(id))
        })
        .map(str::to_string)
        .collect();
    (paths, mounts)
}

/// Waits (up to 30 s) until gantry has finished removing container `id`
/// (RemoveContainer leaves its writable layer, bundle, mounts and image
/// leases to a background reaper), then checks that nothing of it is left
/// on disk or mounted.
pub async fn wait_reaped(g: &Gantry, id: &str) {
    let removing = g.dir.join("root/runtime/removing").join(id);
    for _ in 0..600 {
        if !removing.exists() {
            let (paths, mounts) = traces_of(g, id);
            assert!(
                paths.is_empty() && mounts.is_empty(),
                "container {id} reaped, but left {paths:?} and mounts {mounts:?}"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("container {id} was not reaped within 30 s");
}

/// Waits (up to 30 s) for container `id` to exit; returns its status.
pub async fn wait_exited(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerStatus {
    for _ in 0..600 {
        let s = rt
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
            .into_inner()
            .status
            .unwrap_or_else(|| panic!("no status for {id}"));
        if s.state == ContainerState::ContainerExited as i32 {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("container {id} did not exit");
}

/// The binary of a required runtime: in PATH, or where `cargo install`
/// puts it.
pub fn require_runtime(name: &str, install: &str) -> std::path::PathBuf {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(std::path::PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(std::path::PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed (not in PATH nor ~/.cargo/bin): {install}, or run .ci/run once"))
}
