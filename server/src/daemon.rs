//! Runs the daemon: takes the instance lock, opens the stores, serves CRI on
//! the unix socket and metrics on TCP, and shuts down cleanly on SIGTERM or
//! SIGINT.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use gantry_imageservice::{CriImageService, ImageMetrics, ImageStore};
use gantry_proto::v1::image_service_server::ImageServiceServer;
use gantry_proto::v1::runtime_service_server::RuntimeServiceServer;
use gantry_runtimeservice::containers::{ContainerService, ImageLookup, ResolvedImage};
use gantry_runtimeservice::{CniNetwork, CriRuntimeService, PodService};

use crate::streaming::StreamingServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{info, warn};

use crate::config::Config;
use crate::instrument::{InstrumentLayer, RpcMetrics};

/// Kubelet sends messages up to 16 MiB.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Holds the state directory for this process: a second gantry on the same
/// directories would corrupt both.
fn take_lock(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("gantry.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // A gantry killed a moment ago can leave the lock held for a little
    // while after it is gone (the crash test once restarted into that
    // window); a second gantry holds it for good.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                bail!(
                    "another gantry is running with state directory {} (lock {} is held)",
                    dir.display(),
                    path.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // We hold the lock, so whatever socket is there belongs to a dead gantry.
    match std::fs::remove_file(path) {
        Ok(()) => info!(socket = %path.display(), "replaced a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale socket {}", path.display()))
        }
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}

/// The image side's view of the containers' writable layers.
struct ContainerUsage(Arc<ContainerService>);

impl gantry_imageservice::grpc::ContainerFsUsage for ContainerUsage {
    fn container_fs_usage(&self) -> (std::path::PathBuf, u64, u64) {
        self.0.writable_usage()
    }
}

/// The runtime side's view of the image store.
struct StoreImages(Arc<ImageStore>);

impl ImageLookup for StoreImages {
    fn lookup(&self, image: &str) -> Option<ResolvedImage> {
        let img = self.0.resolve(image).ok().flatten()?;
        let snapshots = self.0.snapshot_paths(&img).ok()?;
        let config = self
            .0
            .config_json(&img)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())?;
        Some(ResolvedImage {
            id: img.id.clone(),
            image_ref: img
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| img.id.clone()),
            snapshots,
            config,
        })
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop gantry with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received, shutting down"),
        _ = int.recv() => info!("SIGINT received, shutting down"),
    }
}

/// The native exec helper: configured, or `gantry-exec` next to gantry
/// (where `gantry-monitor` is found too).
pub fn exec_helper_path(config: &Config) -> anyhow::Result<std::path::PathBuf> {
    if !config.runtime.exec_helper_path.as_os_str().is_empty() {
        return Ok(config.runtime.exec_helper_path.clone());
    }
    Ok(std::env::current_exe()
        .context("locating the gantry binary")?
        .with_file_name("gantry-exec"))
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    std::fs::create_dir_all(&config.root)
        .with_context(|| format!("creating {}", config.root.display()))?;
    let _lock = take_lock(&config.state_dir)?;

    let registry = prometheus::Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let rpc_metrics = RpcMetrics::new(&registry)?;
    let image_metrics = ImageMetrics::new(&registry)?;

    let store = Arc::new(ImageStore::open(config.image.clone(), image_metrics)?);
    let mut images = CriImageService::new(store.clone());
    let network = CniNetwork::new(
        &config.cni.conf_dir,
        &config.cni.network_name,
        config.cni.bin_dirs.clone(),
        config.root.join("cni-cache"),
    );
    let monitor = if config.runtime.monitor_path.as_os_str().is_empty() {
        std::env::current_exe()
            .context("locating the gantry binary")?
            .with_file_name("gantry-monitor")
    } else {
        config.runtime.monitor_path.clone()
    };
    let mut runtime_config = config.runtime.clone();
    runtime_config.exec_helper_path = exec_helper_path(&config)?;
    if runtime_config
        .runtimes
        .values()
        .any(|h| h.exec_mode() == gantry_runtimeservice::ExecMode::Native)
        && !runtime_config.exec_helper_path.is_file()
    {
        warn!(helper = %runtime_config.exec_helper_path.display(), "the native exec helper is missing; exec in runc, crun and youki containers will fail (install it, or set exec: runtime on the handlers)");
    }
    if config.runtime.cgroup_driver == gantry_runtimeservice::CgroupDriver::Systemd
        && !gantry_runtimeservice::cgroup::systemd_running()
    {
        warn!("cgroup_driver is systemd but systemd is not running (/run/systemd/system is missing); runc --systemd-cgroup will fail");
    }
    for (name, handler) in &config.runtime.runtimes {
        match handler.resolve() {
            Some(bin) => info!(handler = %name, binary = %bin.display(), "runtime handler"),
            None => {
                warn!(handler = %name, binary = %handler.path.display(), "runtime handler's binary is not installed; pods naming it will be refused")
            }
        }
    }
    let pods = Arc::new(PodService::new(
        runtime_config,
        Arc::new(network),
        monitor.clone(),
    )?);
    pods.recover().await;
    pods.gc_network().await;
    let containers = Arc::new(ContainerService::new(
        pods.clone(),
        Arc::new(StoreImages(store.clone())),
        monitor,
    )?);
    containers.recover().await;
    containers.spawn_exit_watcher()?;
    let events = containers.events.clone();
    let (streaming, stream_listener) =
        StreamingServer::bind(config.streaming.clone(), containers.clone())
            .await
            .with_context(|| format!("binding streaming.address {}", config.streaming.address))?;
    tokio::spawn(streaming.clone().serve(stream_listener));
    images = images.with_container_usage(Arc::new(ContainerUsage(containers.clone())));
    let runtime =
        CriRuntimeService::new(config.runtime.clone(), pods, containers).with_streaming(streaming);

    if !config.metrics_address.is_empty() {
        let listener = crate::metrics_http::bind(&config.metrics_address)
            .await
            .with_context(|| format!("binding metrics_address {}", config.metrics_address))?;
        tokio::spawn(crate::metrics_http::serve(listener, registry.clone()));
    }

    let listener = bind_socket(&config.socket)?;
    info!(socket = %config.socket.display(), version = env!("CARGO_PKG_VERSION"), "gantry serving CRI");
    let result = tonic::transport::Server::builder()
        .layer(InstrumentLayer::new(rpc_metrics))
        .add_service(
            RuntimeServiceServer::new(runtime).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(ImageServiceServer::new(images).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            shutdown_signal().await;
            // Open GetContainerEvents streams would keep the server waiting.
            events.close();
        })
        .await;
    let _ = std::fs::remove_file(&config.socket);
    result.context("gRPC server")?;
    info!("gantry stopped");
    Ok(())
}
