//! The pod sandbox operations: run, stop, remove, status and list, over the
//! [`PodStore`] records, the pinned namespaces and the [`PodNetwork`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use gantry_cni::netns::{NsKind, PinnedNamespaces, Private};
use gantry_proto::v1 as cri;
use tracing::{info, info_span, warn, Instrument};

use crate::cgroup;
use crate::config::{CgroupDriver, RuntimeConfig, RuntimeHandler};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::metrics::{phase, RuntimeMetrics};
use crate::pod::network::{NetworkExtras, PodNetwork, PodNetworkRequest};
use gantry_common::time::now_nanos;

#[cfg(test)]
mod lifecycle_tests;
pub mod network;
mod pod_cgroup;
mod record;
mod recover;
mod remove;
mod run;
mod sandbox;
mod status;
mod stop;
mod update;

pub use self::record::*;
use self::run::*;

pub struct PodService {
    /// As the daemon started; the handlers in force are in `handlers`.
    pub config: RuntimeConfig,
    /// The runtime handlers new pods may name; a reload replaces them
    /// ([`crate::container::ContainerService::set_handlers`]).
    handlers: RwLock<Arc<BTreeMap<String, RuntimeHandler>>>,
    /// The handlers whose trial container in a pod user namespace worked
    /// ([`crate::userns::trial`]); only their pods may ask for one.
    userns_handlers: RwLock<std::collections::BTreeSet<String>>,
    /// gantry-monitor, which also serves as the init of shared PID namespaces.
    monitor: PathBuf,
    pub store: PodStore,
    pub(crate) network: Arc<dyn PodNetwork>,
    /// Where namespaces are pinned: on tmpfs, so pins vanish with a reboot
    /// just as the namespaces do.
    ns_dir: PathBuf,
    /// Where cgroups, namespaces, mounts and processes are made.
    pub(crate) host: Arc<dyn Host>,
    /// Taken while a pod's cgroup is made, removed or handed over.
    cgroup_handover: tokio::sync::Mutex<()>,
    pub(crate) metrics: RuntimeMetrics,
}

impl PodService {
    pub fn new(
        config: RuntimeConfig,
        network: Arc<dyn PodNetwork>,
        host: Arc<dyn Host>,
        monitor: PathBuf,
    ) -> Result<Self> {
        let store = PodStore::open(&config.root.join("sandboxes"))?;
        let ns_dir = config.state_dir.join("pods");
        std::fs::create_dir_all(&ns_dir)
            .map_err(Error::io(format!("creating {}", ns_dir.display())))?;
        Ok(PodService {
            handlers: RwLock::new(Arc::new(config.runtimes.clone())),
            userns_handlers: Default::default(),
            config,
            monitor,
            store,
            network,
            ns_dir,
            host,
            cgroup_handover: tokio::sync::Mutex::new(()),
            metrics: RuntimeMetrics::default(),
        })
    }

    /// Where pod and container operations are measured (the containers of
    /// these pods report to the same place).
    pub fn with_metrics(mut self, metrics: RuntimeMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Pods by (state, handler), for the metrics.
    pub fn counts(&self) -> std::collections::BTreeMap<(&'static str, String), i64> {
        let mut out = std::collections::BTreeMap::new();
        for r in self.store.list() {
            let state = match r.state {
                PodState::Creating => "creating",
                PodState::Ready => "ready",
                PodState::NotReady => "notready",
            };
            let handler = if r.runtime_handler.is_empty() {
                self.config.default_runtime.clone()
            } else {
                r.runtime_handler
            };
            *out.entry((state, handler)).or_insert(0) += 1;
        }
        out
    }

    /// The runtime handlers in force.
    pub fn handlers(&self) -> Arc<BTreeMap<String, RuntimeHandler>> {
        self.handlers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether pods on handler `name` can have a user namespace of their own.
    pub fn user_namespaces(&self, name: &str) -> bool {
        self.userns_handlers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    pub(crate) fn set_user_namespaces(&self, name: &str, works: bool) {
        let mut set = self
            .userns_handlers
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if works {
            set.insert(name.to_string());
        } else {
            set.remove(name);
        }
    }

    pub(crate) fn set_handlers(&self, handlers: BTreeMap<String, RuntimeHandler>) {
        *self.handlers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(handlers);
    }
}
