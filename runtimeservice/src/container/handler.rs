//! The runtime handlers containers run on, and their reload.

use super::*;

/// One handler as containers use it: its command line, and whether it
/// honours `Mount.recursive_read_only` ([`crate::oci::features`]).
pub(super) struct Handler {
    runtime: CliRuntime,
    recursive_read_only: bool,
    /// Whether a trial container in a pod user namespace worked.
    pub(super) user_namespaces: bool,
}

impl Handler {
    pub(super) fn new(
        config: &RuntimeConfig,
        name: &str,
        h: &RuntimeHandler,
        metrics: &RuntimeMetrics,
    ) -> Handler {
        let runtime = CliRuntime {
            name: name.to_string(),
            // Looked up in PATH once, not at every runtime call; a missing
            // binary stays as named, to fail when used.
            binary: h.resolve().unwrap_or_else(|| h.path.clone()),
            args: h.args.clone(),
            root: config.state_dir.join("runtime").join(name),
            systemd_cgroup: config.cgroup_driver == crate::CgroupDriver::Systemd,
            exec_helper: (h.exec_mode() == crate::ExecMode::Native
                && !config.exec_helper_path.as_os_str().is_empty())
            .then(|| config.exec_helper_path.clone()),
            metrics: metrics.clone(),
        };
        let recursive_read_only =
            crate::oci::features::recursive_read_only(name, &runtime.binary, &runtime.args);
        let user_namespaces = user_namespaces(config, name, &runtime);
        Handler {
            runtime,
            recursive_read_only,
            user_namespaces,
        }
    }
}

/// [`Handler::new`] for each of `handlers`, each on a thread of its own.
pub(super) fn new_all<'a>(
    config: &RuntimeConfig,
    handlers: impl Iterator<Item = (&'a String, &'a RuntimeHandler)>,
    metrics: &RuntimeMetrics,
) -> BTreeMap<String, Handler> {
    std::thread::scope(|s| {
        let jobs: Vec<_> = handlers
            .map(|(name, h)| {
                (
                    name.clone(),
                    s.spawn(move || Handler::new(config, name, h, metrics)),
                )
            })
            .collect();
        jobs.into_iter()
            .map(|(name, job)| {
                let handler = job
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (name, handler)
            })
            .collect()
    })
}

/// Whether the handler can run pods in a user namespace of their own: an
/// overlay of idmapped layers works on the state root's filesystem, and a
/// trial container on the handler's runtime is created in such a pod.
fn user_namespaces(config: &RuntimeConfig, name: &str, runtime: &CliRuntime) -> bool {
    if !rustix::process::geteuid().is_root() {
        return false;
    }
    let Some(root) = config.root.ancestors().find(|p| p.is_dir()) else {
        return false;
    };
    let verdict = crate::userns::probe::idmapped_overlay(root)
        .and_then(|()| crate::userns::trial::run(&runtime.binary, &runtime.args, root));
    match verdict {
        Ok(()) => {
            info!(handler = name, "pods in their own user namespace work");
            true
        }
        Err(why) => {
            info!(handler = name, reason = %why, "no user namespaces for this handler's pods");
            false
        }
    }
}

/// What [`ContainerService::set_handlers`] changed, by handler name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HandlerChanges {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl ContainerService {
    /// What a handler (by name; empty for the default) can do, for
    /// `Status`.
    pub fn handler_features(&self, handler: &str) -> cri::RuntimeHandlerFeatures {
        let name = if handler.is_empty() {
            &self.default_runtime
        } else {
            handler
        };
        cri::RuntimeHandlerFeatures {
            recursive_read_only_mounts: self
                .read_runtimes()
                .get(name)
                .is_some_and(|h| h.recursive_read_only),
            user_namespaces: self
                .read_runtimes()
                .get(name)
                .is_some_and(|h| h.user_namespaces),
        }
    }

    pub(super) fn read_runtimes(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Handler>> {
        self.runtimes.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn runtime(&self, handler: &str) -> Result<CliRuntime> {
        let name = if handler.is_empty() {
            &self.default_runtime
        } else {
            handler
        };
        self.read_runtimes()
            .get(name)
            .map(|h| h.runtime.clone())
            .ok_or_else(|| {
                Error::InvalidArgument(format!("runtime handler {name:?} is not configured"))
            })
    }

    /// Puts a reloaded set of runtime handlers in force: added and changed
    /// ones serve new pods (and the next runtime call of existing
    /// containers on a changed one); removed ones are refused to new pods
    /// but kept for the containers of pods that run on them. The default
    /// handler and the other runtime settings are not reloadable.
    pub fn set_handlers(&self, handlers: &BTreeMap<String, RuntimeHandler>) -> HandlerChanges {
        let config = &self.pods.config;
        let old = self.pods.handlers();
        let mut changes = HandlerChanges::default();
        // Probing a runtime's features runs it: done before the lock.
        let mut fresh = Vec::new();
        let mut todo = Vec::new();
        for (name, h) in handlers {
            match old.get(name) {
                Some(o) if o == h => continue,
                Some(_) => changes.changed.push(name.clone()),
                None => changes.added.push(name.clone()),
            }
            todo.push((name, h));
        }
        for (name, handler) in new_all(config, todo.into_iter(), &self.metrics) {
            self.pods
                .set_user_namespaces(&name, handler.user_namespaces);
            fresh.push((name, handler));
        }
        changes.removed = old
            .keys()
            .filter(|n| !handlers.contains_key(*n))
            .cloned()
            .collect();
        self.runtimes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(fresh);
        self.pods.set_handlers(handlers.clone());
        changes
    }
}
