//! The runtime handlers containers run on, and their reload.

use super::*;

/// One handler as containers use it: its runtime, and whether it honours
/// `Mount.recursive_read_only` ([`crate::oci::features`]).
pub(super) struct Handler {
    runtime: Arc<dyn OciRuntime>,
    recursive_read_only: bool,
    /// Whether a trial container in a pod user namespace worked.
    pub(super) user_namespaces: bool,
}

impl Handler {
    pub(super) fn new(
        maker: &dyn RuntimeMaker,
        config: &RuntimeConfig,
        name: &str,
        h: &RuntimeHandler,
        metrics: &RuntimeMetrics,
    ) -> Handler {
        let made = maker.make(config, name, h, metrics);
        let (runtime, recursive_read_only, user_namespaces) =
            (made.runtime, made.recursive_read_only, made.user_namespaces);
        Handler {
            runtime,
            recursive_read_only,
            user_namespaces,
        }
    }
}

/// [`Handler::new`] for each of `handlers`, each on a thread of its own.
pub(super) fn new_all<'a>(
    maker: &dyn RuntimeMaker,
    config: &RuntimeConfig,
    handlers: impl Iterator<Item = (&'a String, &'a RuntimeHandler)>,
    metrics: &RuntimeMetrics,
) -> BTreeMap<String, Handler> {
    std::thread::scope(|s| {
        let jobs: Vec<_> = handlers
            .map(|(name, h)| {
                (
                    name.clone(),
                    s.spawn(move || Handler::new(maker, config, name, h, metrics)),
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

    pub(super) fn runtime(&self, handler: &str) -> Result<Arc<dyn OciRuntime>> {
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
        for (name, handler) in new_all(
            &*self.runtime_maker,
            config,
            todo.into_iter(),
            &self.metrics,
        ) {
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
