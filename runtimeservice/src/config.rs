//! The runtime service's part of gantry's YAML configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Where pod and container state lives; set by the daemon from its own
    /// root.
    #[serde(skip)]
    pub root: PathBuf,
    /// Runtime state on tmpfs (pinned namespaces); set by the daemon.
    #[serde(skip)]
    pub state_dir: PathBuf,
    pub cgroup_driver: CgroupDriver,
    /// The handler used when a pod names none.
    pub default_runtime: String,
    /// OCI runtime handlers by name, as `RuntimeClass` handlers refer to them.
    pub runtimes: BTreeMap<String, RuntimeHandler>,
    /// The container monitor binary; empty means `gantry-monitor` next to
    /// the gantry binary.
    pub monitor_path: PathBuf,
    /// The native exec helper; empty means `gantry-exec` next to the gantry
    /// binary.
    pub exec_helper_path: PathBuf,
    /// The most bytes one container log file may hold; at the cap the
    /// container's monitor drops output (counting it) until the log is
    /// rotated. 0: no cap. Pods may lower it with the
    /// `gantry.dev/log-max-bytes` annotation.
    pub log_max_bytes: u64,
    /// Seconds between background samples of every ready pod's and
    /// container's usage, which ListPodSandboxStats and ListContainerStats
    /// answer from (each stat carries the time it was read). 0: those calls
    /// read everything themselves.
    pub stats_collection_period: u64,
}

/// How a handler runs ExecSync and streaming Exec.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExecMode {
    /// gantry-exec joins the container's namespaces and cgroups itself:
    /// for runtimes whose containers are plain namespaces (runc, crun,
    /// youki), and much cheaper than starting the runtime.
    Native,
    /// `<runtime> exec`: for runtimes whose processes live elsewhere
    /// (gVisor's user-space kernel, VMs).
    Runtime,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeHandler {
    /// The OCI runtime binary (`runc`, `/usr/bin/runsc`, ...).
    pub path: PathBuf,
    /// Extra arguments put before every runtime command.
    pub args: Vec<String>,
    /// How exec runs; unset means native for runc, crun and youki binaries
    /// and the runtime's own exec for anything else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecMode>,
}

impl RuntimeHandler {
    /// The binary this handler runs: `path` itself when it names a
    /// directory, else the first match in `PATH`; `None` when absent, which
    /// the daemon tolerates (the handler is only unusable).
    pub fn resolve(&self) -> Option<PathBuf> {
        let bin = &self.path;
        if bin.is_absolute() || bin.components().count() > 1 {
            return bin.is_file().then(|| bin.clone());
        }
        let path = std::env::var_os("PATH").unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        std::env::split_paths(&path)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    }
}

impl RuntimeHandler {
    /// The exec mode in effect: the configured one, else by binary name.
    pub fn exec_mode(&self) -> ExecMode {
        self.exec.unwrap_or_else(|| {
            let native = self
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| matches!(n, "runc" | "crun" | "youki"));
            if native {
                ExecMode::Native
            } else {
                ExecMode::Runtime
            }
        })
    }

    /// runsc's processes run in its user-space kernel, out of reach of the
    /// host's setns.
    fn sandboxed(&self) -> bool {
        self.path.file_name().is_some_and(|n| n == "runsc")
    }
}

impl Default for RuntimeHandler {
    fn default() -> Self {
        RuntimeHandler {
            path: PathBuf::from("runc"),
            args: Vec::new(),
            exec: None,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let mut runtimes = BTreeMap::new();
        runtimes.insert("runc".to_string(), RuntimeHandler::default());
        RuntimeConfig {
            root: PathBuf::from("/var/lib/gantry/runtime"),
            state_dir: PathBuf::from("/run/gantry"),
            cgroup_driver: CgroupDriver::Cgroupfs,
            default_runtime: "runc".to_string(),
            runtimes,
            monitor_path: PathBuf::new(),
            exec_helper_path: PathBuf::new(),
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            stats_collection_period: DEFAULT_STATS_COLLECTION_PERIOD,
        }
    }
}

/// Ten times kubelet's default `containerLogMaxSize` (10Mi): kubelet keeps
/// rotating at its own size, and the cap only stops a container that
/// writes faster than kubelet's rotation (every 10 s) keeps up with.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 100 << 20;

/// kubelet's own stats period (and cAdvisor's housekeeping interval in
/// kubelet): kubelet never sees a sample older than the one it would have
/// taken itself.
pub const DEFAULT_STATS_COLLECTION_PERIOD: u64 = 10;

/// A day: a longer period would answer with figures too old to mean
/// anything, and is surely a typo for 0.
const MAX_STATS_COLLECTION_PERIOD: u64 = 86_400;

impl RuntimeConfig {
    /// Checks what serde cannot: the default handler must exist.
    pub fn validate(&self) -> Result<(), String> {
        if self.log_max_bytes != 0 && self.log_max_bytes < gantry_monitor::crilog::MIN_LOG_CAP {
            return Err(format!(
                "log_max_bytes {} is below the smallest cap, {} (0 means no cap)",
                self.log_max_bytes,
                gantry_monitor::crilog::MIN_LOG_CAP
            ));
        }
        if self.stats_collection_period > MAX_STATS_COLLECTION_PERIOD {
            return Err(format!(
                "stats_collection_period {} is over a day ({MAX_STATS_COLLECTION_PERIOD} s); 0 turns sampling off",
                self.stats_collection_period
            ));
        }
        if !self.runtimes.contains_key(&self.default_runtime) {
            return Err(format!(
                "default_runtime {:?} is not among the configured runtimes ({})",
                self.default_runtime,
                self.runtimes.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        for (name, h) in &self.runtimes {
            if h.sandboxed() && h.exec_mode() == ExecMode::Native {
                return Err(format!(
                    "runtimes.{name}: exec: native cannot reach runsc's processes (they run in gVisor's kernel); use exec: runtime"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_mode_defaults_by_binary() {
        let h = |path: &str, exec: Option<ExecMode>| RuntimeHandler {
            path: path.into(),
            args: vec![],
            exec,
        };
        for native in ["runc", "/usr/bin/crun", "/root/.cargo/bin/youki"] {
            assert_eq!(h(native, None).exec_mode(), ExecMode::Native, "{native}");
        }
        for runtime in ["runsc", "/opt/kata/bin/kata-runtime", "runc-wrapper"] {
            assert_eq!(h(runtime, None).exec_mode(), ExecMode::Runtime, "{runtime}");
        }
        assert_eq!(
            h("runc", Some(ExecMode::Runtime)).exec_mode(),
            ExecMode::Runtime
        );
        let parsed: RuntimeHandler =
            serde_json::from_str(r#"{"path": "youki", "exec": "runtime"}"#).unwrap();
        assert_eq!(parsed.exec_mode(), ExecMode::Runtime);

        let mut c = RuntimeConfig::default();
        c.runtimes
            .insert("gvisor".into(), h("/usr/bin/runsc", Some(ExecMode::Native)));
        assert!(c.validate().unwrap_err().contains("gvisor"));
        c.runtimes
            .insert("gvisor".into(), h("/usr/bin/runsc", None));
        assert!(c.validate().is_ok());
    }
}
