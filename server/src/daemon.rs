//! Runs the daemon: takes the instance lock, opens the stores, serves CRI on
//! the unix socket and metrics on TCP, reloads its configuration on SIGHUP
//! ([`crate::reload`]), and shuts down cleanly on SIGTERM or SIGINT.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use gantry_imageservice::{CriImageService, ImageMetrics, ImageStore};
use gantry_proto::v1::image_service_server::ImageServiceServer;
use gantry_proto::v1::runtime_service_server::RuntimeServiceServer;
use gantry_runtimeservice::container::{ContainerService, ImageLookup, ResolvedImage};
use gantry_runtimeservice::error::Error as RuntimeError;
use gantry_runtimeservice::{
    CniNetwork, CriRuntimeService, PodService, RuntimeMetrics, StateCollector,
};

use crate::streaming::StreamingServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::config::Config;
use crate::instrument::{InstrumentLayer, RpcMetrics};

/// Kubelet sends messages up to 16 MiB.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

// HTTP/2 limits of the CRI socket, set here rather than left to library
// defaults so that a local client (the socket is root's, but a compromised
// agent is a client too) cannot make the daemon hold unbounded state. Each
// is far above what kubelet needs: it multiplexes every call of a node on
// one connection, with one long-lived GetContainerEvents stream.

/// Streams a connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Request headers per stream, HPACK-decoded (kubelet sends well under 1 KiB).
pub const MAX_HEADER_LIST_BYTES: u32 = 64 << 10;
/// Streams a client may open and reset before the server has seen them
/// (the "rapid reset" attack), and error resets the server sends, before the
/// connection is closed.
const MAX_PENDING_RESETS: usize = 64;
const MAX_LOCAL_ERROR_RESETS: usize = 256;
/// Per-stream and per-connection receive windows: what one client can make
/// the daemon buffer before it reads.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;
/// The server pings a connection idle this long, and drops it if the ping
/// is not answered in time: a client that vanished without closing its end
/// frees its streams. How often a client may ping the server is enforced in
/// [`crate::authority`].
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(120);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// How long open calls may run on after SIGTERM before they are cut.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The gRPC services of the CRI socket, as health checks name them.
const CRI_SERVICES: [&str; 2] = ["runtime.v1.RuntimeService", "runtime.v1.ImageService"];

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

    fn generation(&self) -> u64 {
        self.0.fs_generation()
    }
}

/// The runtime side's view of the image store: containers lease what they
/// use.
struct StoreImages(Arc<ImageStore>);

/// The image store's error as the runtime reports it.
fn runtime_error(e: gantry_imageservice::Error) -> RuntimeError {
    use gantry_imageservice::Error as E;
    match e {
        E::InvalidReference { .. } | E::InvalidArgument(_) => {
            RuntimeError::InvalidArgument(e.to_string())
        }
        E::ImageNotFound(_) => RuntimeError::NotFound(e.to_string()),
        // A full disk stays a full disk (ResourceExhausted), with its cause.
        E::Io { context, source } => RuntimeError::Io {
            context: format!("image store: {context}"),
            source,
        },
        _ => RuntimeError::Host {
            context: "image store".into(),
            source: Box::new(e),
        },
    }
}

#[tonic::async_trait]
impl ImageLookup for StoreImages {
    async fn acquire(
        &self,
        image: &str,
        lease: &str,
        owner: &str,
    ) -> Result<Option<ResolvedImage>, RuntimeError> {
        let Some(img) = self
            .0
            .acquire(lease, owner, image)
            .await
            .map_err(runtime_error)?
        else {
            return Ok(None);
        };
        let image_ref = img
            .repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| img.id.clone());
        if let Some(artifact_type) = &img.artifact_type {
            return Ok(Some(ResolvedImage {
                id: img.id.clone(),
                image_ref,
                snapshots: Vec::new(),
                config: serde_json::Value::Null,
                artifact_type: Some(artifact_type.clone()),
            }));
        }
        let snapshots = self.0.snapshot_paths(&img).map_err(runtime_error)?;
        let config = self.0.config_json(&img).map_err(runtime_error)?;
        let config = serde_json::from_slice(&config).map_err(|e| {
            RuntimeError::FailedPrecondition(format!("the config of image {}: {e}", img.id))
        })?;
        Ok(Some(ResolvedImage {
            id: img.id.clone(),
            image_ref,
            snapshots,
            config,
            artifact_type: None,
        }))
    }

    async fn release(&self, owner: &str) -> Result<(), RuntimeError> {
        self.0
            .release_owner(owner)
            .await
            .map(|_| ())
            .map_err(runtime_error)
    }

    async fn retain(
        &self,
        live: &std::collections::HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        self.0
            .retain_owners(live)
            .await
            .map(|_| ())
            .map_err(runtime_error)
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

/// Creates one of gantry's own directories, or takes group and other
/// access away from one an older gantry left at 0755: below them are
/// records holding Secret values, snapshots and upper directories with
/// setuid binaries and device nodes, and the monitors' sockets. Kubelet
/// runs as root, so nothing else needs to enter them.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    gantry_common::fs::private_dir(dir).with_context(|| format!("creating {}", dir.display()))
}

/// How the daemon was started: its config file (re-read on SIGHUP) and
/// the log filter's setter.
#[derive(Default)]
pub struct Options {
    pub config_path: Option<std::path::PathBuf>,
    pub log_level: Option<crate::reload::LogLevelSetter>,
}

pub async fn run(config: Config, options: Options) -> anyhow::Result<()> {
    // Before anything: SIGHUP's default action would kill the daemon, and
    // `gantry reload` may send it as soon as the pid file exists.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    for dir in [
        &config.state_dir,
        &config.root,
        &config.image.root,
        &config.runtime.root,
    ] {
        private_dir(dir)?;
    }
    let _lock = take_lock(&config.state_dir)?;

    let registry = prometheus::Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let rpc_metrics = RpcMetrics::new(&registry)?;
    let image_metrics = ImageMetrics::new(&registry)?;
    let runtime_metrics = RuntimeMetrics::new(&registry)?;
    registry.register(Box::new(crate::node_metrics::StateRootCollector::new(
        config.root.clone(),
    )))?;
    let reload_metrics = crate::reload::ReloadMetrics::new(&registry)?;

    let store = Arc::new(ImageStore::open(config.image.clone(), image_metrics)?);
    let mut images = CriImageService::new(store.clone());
    let network = CniNetwork::new(
        &config.cni.conf_dir,
        &config.cni.network_name,
        config.cni.bin_dirs.clone(),
        config.root.join("cni-cache"),
    )
    .with_metrics(runtime_metrics.clone());
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
    let pods = Arc::new(
        PodService::new(
            runtime_config,
            Arc::new(network),
            Arc::new(gantry_runtimeservice::RealHost::new()),
            monitor.clone(),
        )?
        .with_metrics(runtime_metrics.clone()),
    );
    pods.recover().await;
    pods.gc_network().await;
    let containers = Arc::new(ContainerService::new(
        pods.clone(),
        Arc::new(StoreImages(store.clone())),
        Arc::new(gantry_runtimeservice::oci::CliRuntimes),
        monitor,
    )?);
    containers.recover().await;
    containers.spawn_exit_watcher()?;
    containers.spawn_stats_sampler();
    let reaps = containers.clone();
    registry.register(Box::new(StateCollector::new(
        pods.clone(),
        containers.clone(),
    )))?;
    let events = containers.events.clone();
    let (streaming, stream_listener) = StreamingServer::bind(
        config.streaming.clone(),
        containers.clone(),
        crate::node_metrics::SessionMetrics::new(&registry)?,
    )
    .await
    .with_context(|| format!("binding streaming.address {}", config.streaming.address))?;
    tokio::spawn(streaming.clone().serve(stream_listener));
    images = images.with_container_usage(Arc::new(ContainerUsage(containers.clone())));
    let reloader = Arc::new(crate::reload::Reloader::new(
        options.config_path,
        config.clone(),
        crate::reload::Targets {
            store: store.clone(),
            containers: containers.clone(),
            streaming: streaming.clone(),
            log_level: options.log_level,
        },
        reload_metrics,
    )?);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            info!("SIGHUP received, reloading the configuration");
            let r = reloader.clone();
            // Reading the file and probing new runtimes block.
            if let Err(e) = tokio::task::spawn_blocking(move || r.reload()).await {
                warn!(error = %e, "the reload task failed");
            }
        }
    });
    let runtime =
        CriRuntimeService::new(config.runtime.clone(), pods, containers).with_streaming(streaming);

    if !config.metrics_address.is_empty() {
        let listener = crate::metrics_http::bind(&config.metrics_address)
            .await
            .with_context(|| format!("binding metrics_address {}", config.metrics_address))?;
        tokio::spawn(crate::metrics_http::serve(listener, registry.clone()));
    }

    // Recovery is done and the stores are open: the runtime is ready, so
    // every service starts SERVING.
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in CRI_SERVICES {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let (reflection_v1, reflection_v1alpha) = crate::reflection::services()?;

    let listener = bind_socket(&config.socket)?;
    crate::reload::write_pid_file(&config.state_dir)?;
    info!(socket = %config.socket.display(), version = env!("CARGO_PKG_VERSION"), "gantry serving CRI");
    let incoming =
        UnixListenerStream::new(listener).map(|conn| conn.map(crate::authority::AuthorityFix::new));
    let draining = Arc::new(tokio::sync::Notify::new());
    let serve = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(InstrumentLayer::new(rpc_metrics))
        .add_service(
            RuntimeServiceServer::new(runtime).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(ImageServiceServer::new(images).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, {
            let draining_signal = draining.clone();
            async move {
                shutdown_signal().await;
                // Health watchers hear NOT_SERVING, then their streams end so
                // that they do not hold the shutdown open.
                let mut health = health;
                for name in CRI_SERVICES.into_iter().chain([""]) {
                    health
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
                for name in CRI_SERVICES.into_iter().chain([""]) {
                    health.clear_service_status(name).await;
                }
                // Open GetContainerEvents streams would keep the server waiting.
                events.close();
                draining_signal.notify_one();
            }
        });
    // A client that keeps a stream open (a reflection or health stream it
    // never half-closes, a hung connection) would otherwise hold the
    // graceful shutdown open for ever.
    let result = tokio::select! {
        r = serve => r,
        _ = async {
            draining.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            warn!(grace = ?SHUTDOWN_GRACE, "clients still had streams open after the shutdown grace period; closing them");
            Ok(())
        }
    };
    // Removals already answered are finished, within the grace period;
    // what is left is durable and finished at the next start.
    if tokio::time::timeout(SHUTDOWN_GRACE, reaps.wait_all_reaped())
        .await
        .is_err()
    {
        warn!(grace = ?SHUTDOWN_GRACE, "removed containers were still being cleaned up; the next start finishes them");
    }
    let _ = std::fs::remove_file(&config.socket);
    crate::reload::remove_pid_file(&config.state_dir);
    result.context("gRPC server")?;
    info!("gantry stopped");
    Ok(())
}
