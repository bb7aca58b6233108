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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeHandler {
    /// The OCI runtime binary (`runc`, `/usr/bin/runsc`, ...).
    pub path: PathBuf,
    /// Extra arguments put before every runtime command.
    pub args: Vec<String>,
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

impl Default for RuntimeHandler {
    fn default() -> Self {
        RuntimeHandler {
            path: PathBuf::from("runc"),
            args: Vec::new(),
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
        }
    }
}

impl RuntimeConfig {
    /// Checks what serde cannot: the default handler must exist.
    pub fn validate(&self) -> Result<(), String> {
        if !self.runtimes.contains_key(&self.default_runtime) {
            return Err(format!(
                "default_runtime {:?} is not among the configured runtimes ({})",
                self.default_runtime,
                self.runtimes.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(())
    }
}
