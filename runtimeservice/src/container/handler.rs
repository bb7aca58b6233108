//! The runtime handlers containers run on, and their reload.

use super::*;

/// One handler as containers use it: its runtime, and whether it honours
/// `Mount.recursive_read_only` ([`crate::oci::features`]).
pub(super) struct Handler {
    runtime: Arc<dyn OciRuntime>,
    recursive_read_only: bool,
}

impl Handler {
    pub(super) fn new(
        maker: &dyn RuntimeMaker,
        config: &RuntimeConfig,
        name: &str,
        h: &RuntimeHandler,
        metrics: &RuntimeMetrics,
    ) -> Handler {
        let (runtime, recursive_read_only) = maker.make(config, name, h, metrics);
        Handler {
            runtime,
            recursive_read_only,
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
            // Pods get no user namespace of their own yet.
            user_namespaces: false,
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
        for (name, h) in handlers {
            match old.get(name) {
                Some(o) if o == h => continue,
                Some(_) => changes.changed.push(name.clone()),
                None => changes.added.push(name.clone()),
            }
            fresh.push((
                name.clone(),
                Handler::new(&*self.runtime_maker, config, name, h, &self.metrics),
            ));
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
