//! Configuration reload without a restart: on SIGHUP the daemon re-reads its
//! config file, validates it as at start, and puts the reloadable part in
//! force through the services' setters; what needs a restart is reported.
//! Also the daemon's pid file, the reload status file `gantry reload` waits
//! on, and the reload metrics.
//!
//! Files in the state directory: `gantry.pid` (written once the SIGHUP
//! handler is installed, removed at shutdown) and `reload.json` (the last
//! reload's outcome with a generation counter, rewritten atomically).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use gantry_imageservice::ImageStore;
use gantry_runtimeservice::container::ContainerService;
use prometheus::{Gauge, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::streaming::StreamingServer;

pub const PID_FILE: &str = "gantry.pid";
pub const STATUS_FILE: &str = "reload.json";

/// `gantry_config_reloads_total{result}` and the time of the last applied
/// reload.
#[derive(Clone)]
pub struct ReloadMetrics {
    reloads: IntCounterVec,
    last_success: Gauge,
}

impl ReloadMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "gantry_config_reloads_total",
                "Configuration reloads (SIGHUP), by result: applied or refused",
            ),
            &["result"],
        )?;
        let last_success = Gauge::new(
            "gantry_config_last_reload_success_timestamp_seconds",
            "Unix time of the last applied configuration reload (the start, before any)",
        )?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        // Both results show from the start, so that a rate() over them works
        // before the first reload.
        reloads.with_label_values(&["applied"]);
        reloads.with_label_values(&["refused"]);
        last_success.set(unix_now() as f64);
        Ok(ReloadMetrics {
            reloads,
            last_success,
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The outcome of the last reload, as `reload.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReloadStatus {
    /// The daemon that wrote it.
    pub pid: u32,
    /// 0 at start, then one more per reload.
    pub generation: u64,
    /// "start", "applied" or "refused".
    pub result: String,
    /// Why a reload was refused (naming the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The reloadable keys that changed and are now in force.
    #[serde(default)]
    pub applied: Vec<String>,
    /// Keys that changed in the file but keep their running value until a
    /// restart.
    #[serde(default)]
    pub restart_needed: Vec<String>,
    pub unix_time: u64,
}

/// Sets the log filter in force; `Err` says why it cannot.
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The running configuration and the setters that change it.
pub struct Reloader {
    /// The file the daemon was started with; none means the built-in
    /// defaults, which a reload re-reads to no effect.
    path: Option<PathBuf>,
    /// What is in force: the file's reloadable keys as of the last applied
    /// reload, the rest as at start.
    running: Mutex<Config>,
    store: Arc<ImageStore>,
    containers: Arc<ContainerService>,
    streaming: Arc<StreamingServer>,
    log_level: Option<LogLevelSetter>,
    metrics: ReloadMetrics,
    generation: Mutex<u64>,
    status_path: PathBuf,
}

/// Everything a reload changes, handed to [`Reloader::new`].
pub struct Targets {
    pub store: Arc<ImageStore>,
    pub containers: Arc<ContainerService>,
    pub streaming: Arc<StreamingServer>,
    pub log_level: Option<LogLevelSetter>,
}

impl Reloader {
    /// Writes the initial status (generation 0) so that `gantry reload`
    /// has a generation to wait past.
    pub fn new(
        path: Option<PathBuf>,
        running: Config,
        targets: Targets,
        metrics: ReloadMetrics,
    ) -> anyhow::Result<Reloader> {
        let status_path = running.state_dir.join(STATUS_FILE);
        let r = Reloader {
            path,
            running: Mutex::new(running),
            store: targets.store,
            containers: targets.containers,
            streaming: targets.streaming,
            log_level: targets.log_level,
            metrics,
            generation: Mutex::new(0),
            status_path,
        };
        r.write_status(&ReloadStatus {
            pid: std::process::id(),
            generation: 0,
            result: "start".into(),
            error: None,
            applied: Vec::new(),
            restart_needed: Vec::new(),
            unix_time: unix_now(),
        })?;
        Ok(r)
    }

    fn write_status(&self, status: &ReloadStatus) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(status)?;
        write_atomic(&self.status_path, &json)
    }

    /// Re-reads and applies the config file; never fails the daemon. Calls
    /// run one at a time (the generation lock is held throughout); the
    /// services' setters swap their settings in without waiting for
    /// running calls.
    pub fn reload(&self) -> ReloadStatus {
        let mut generation = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        *generation += 1;
        let path_text = self
            .path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(built-in defaults)".into());
        let mut status = ReloadStatus {
            pid: std::process::id(),
            generation: *generation,
            result: String::new(),
            error: None,
            applied: Vec::new(),
            restart_needed: Vec::new(),
            unix_time: unix_now(),
        };
        match self.apply() {
            Ok((applied, restart_needed)) => {
                for key in &restart_needed {
                    warn!(config = %path_text, key, "{key} changed; restart needed (the running value stays)");
                }
                info!(config = %path_text, generation = *generation, changed = ?applied, "configuration reloaded");
                self.metrics.reloads.with_label_values(&["applied"]).inc();
                self.metrics.last_success.set(unix_now() as f64);
                status.result = "applied".into();
                status.applied = applied;
                status.restart_needed = restart_needed;
            }
            Err(e) => {
                let reason = format!("{e:#}");
                error!(config = %path_text, generation = *generation, error = %reason, "configuration reload refused; the running configuration stays");
                self.metrics.reloads.with_label_values(&["refused"]).inc();
                status.result = "refused".into();
                status.error = Some(reason);
            }
        }
        if let Err(e) = self.write_status(&status) {
            warn!(error = %format!("{e:#}"), "writing the reload status");
        }
        status
    }

    /// Validates the whole file, then applies: returns the reloadable keys
    /// that changed and the restart-only keys that differ.
    fn apply(&self) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let new = Config::load(self.path.as_deref())?;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let effective = running.with_reloadable_from(&new);
        // The running default handler must survive the new handler set
        // (the file's own default_runtime needs a restart to take over).
        effective
            .runtime
            .validate()
            .map_err(|e| anyhow::anyhow!("runtime.runtimes: {e} (runtime.default_runtime keeps its running value until a restart)"))?;
        let applied = running.reloadable_changes(&new);
        let restart_needed = running
            .restart_needed(&new)
            .into_iter()
            .map(String::from)
            .collect();
        // The one step that can fail for reasons the file does not show
        // (building the HTTP clients) goes first, before anything changed.
        if running.image != effective.image {
            self.store
                .set_config(effective.image.clone())
                .context("image")?;
        }
        if running.log_level != effective.log_level {
            match &self.log_level {
                _ if std::env::var_os("RUST_LOG").is_some() => {
                    warn!("log_level changed, but RUST_LOG overrides it; unset RUST_LOG and restart to use it")
                }
                // Validated with the file; only a logger gone away fails.
                Some(set) => {
                    if let Err(e) = set(&effective.log_level) {
                        warn!(error = %e, "log_level could not be changed");
                    }
                }
                None => {}
            }
        }
        if running.runtime.runtimes != effective.runtime.runtimes {
            let changes = self.containers.set_handlers(&effective.runtime.runtimes);
            info!(added = ?changes.added, changed = ?changes.changed, removed = ?changes.removed, "runtime handlers reloaded (removed ones stay for the pods running on them)");
        }
        if running.streaming != effective.streaming {
            self.streaming.set_timeouts(&effective.streaming);
        }
        *running = effective;
        Ok((applied, restart_needed))
    }
}

/// Temp file, fsync, rename: readers see the old or the new file whole.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    gantry_common::fs::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes the pid file; removed by [`remove_pid_file`] at shutdown.
pub fn write_pid_file(state_dir: &Path) -> anyhow::Result<()> {
    write_atomic(
        &state_dir.join(PID_FILE),
        format!("{}\n", std::process::id()).as_bytes(),
    )
}

pub fn remove_pid_file(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(PID_FILE));
}

/// The pid of the gantry running on `state_dir`: its pid file, trusted only
/// while the instance lock is held (a stale file of a killed gantry may
/// name a pid since reused).
pub fn running_pid(state_dir: &Path) -> anyhow::Result<u32> {
    let pid_path = state_dir.join(PID_FILE);
    let text = match std::fs::read_to_string(&pid_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "gantry is not running on state directory {} (no {})",
                state_dir.display(),
                pid_path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", pid_path.display())),
    };
    let pid: u32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a pid", pid_path.display()))?;
    if pid == 0 || pid > i32::MAX as u32 {
        bail!("{} holds no valid pid ({pid})", pid_path.display());
    }
    let lock_path = state_dir.join("gantry.lock");
    let lock = std::fs::File::open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockShared) {
        // Nobody holds it: the pid file is stale (closing the file drops
        // the lock we just took).
        Ok(()) => bail!(
            "gantry is not running on state directory {} ({} is stale)",
            state_dir.display(),
            pid_path.display()
        ),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(pid),
        Err(e) => Err(e).with_context(|| format!("testing the lock {}", lock_path.display())),
    }
}

pub fn read_status(state_dir: &Path) -> Option<ReloadStatus> {
    let bytes = std::fs::read(state_dir.join(STATUS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `gantry reload`: sends SIGHUP to the daemon running on `state_dir` and
/// waits for the status it writes for that reload.
pub fn request_reload(state_dir: &Path, timeout: Duration) -> anyhow::Result<ReloadStatus> {
    let pid = running_pid(state_dir)?;
    let before = read_status(state_dir)
        .filter(|s| s.pid == pid)
        .map(|s| s.generation)
        .with_context(|| {
            format!(
                "gantry (pid {pid}) has not written {} yet; is it still starting?",
                state_dir.join(STATUS_FILE).display()
            )
        })?;
    let target =
        rustix::process::Pid::from_raw(pid as i32).with_context(|| format!("invalid pid {pid}"))?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP)
        .with_context(|| format!("sending SIGHUP to gantry (pid {pid})"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = read_status(state_dir) {
            if s.pid == pid && s.generation > before {
                return Ok(s);
            }
        }
        if Instant::now() > deadline {
            bail!("gantry (pid {pid}) did not report the reload within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_metrics_are_registered_with_both_results() {
        let registry = Registry::new();
        let m = ReloadMetrics::new(&registry).unwrap();
        m.reloads.with_label_values(&["refused"]).inc();
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert!(names.contains(&"gantry_config_reloads_total".to_string()));
        assert!(names.contains(&"gantry_config_last_reload_success_timestamp_seconds".to_string()));
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains("gantry_config_reloads_total{result=\"applied\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("gantry_config_reloads_total{result=\"refused\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn running_pid_trusts_the_pid_file_only_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let err = running_pid(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not running"), "{err}");
        write_pid_file(dir.path()).unwrap();
        let lock_path = dir.path().join("gantry.lock");
        let lock = std::fs::File::create(&lock_path).unwrap();
        let err = running_pid(dir.path()).unwrap_err().to_string();
        assert!(err.contains("stale"), "{err}");
        // flock locks belong to the open file description: another open of
        // the same file contends with this one, as the daemon's would.
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
        assert_eq!(running_pid(dir.path()).unwrap(), std::process::id());
        std::fs::write(dir.path().join(PID_FILE), "garbage").unwrap();
        assert!(running_pid(dir.path()).is_err());
        remove_pid_file(dir.path());
        assert!(!dir.path().join(PID_FILE).exists());
    }
}
