//! StopPodSandbox and RemovePodSandbox as a whole: the pod's containers
//! first (in parallel, bounded), then the pod itself, with the sandbox
//! events kubelet's evented PLEG expects. The pod-only steps are
//! [`PodService::stop`] (`stop.rs`) and [`PodService::remove`]
//! (`remove.rs`).

use super::*;
use crate::container::ContainerService;

/// Runtime processes one pod's stop or removal starts at the same time:
/// enough to keep both cores busy, few enough not to swamp the node. A
/// container killed through its cgroup needs none.
const POD_STOP_PARALLEL: usize = 16;

impl PodService {
    /// StopPodSandbox: stops every container of the pod (with no grace
    /// period, as the CRI asks), then the pod. Idempotent.
    pub async fn stop_sandbox(&self, containers: &Arc<ContainerService>, id: &str) -> Result<()> {
        let Some(full) = self.store.resolve(id)? else {
            return Ok(());
        };
        stop_containers(containers, &full).await?;
        if self.stop(&full).await? {
            containers.emit_pod_event(&full, cri::ContainerEventType::ContainerStoppedEvent);
        }
        Ok(())
    }

    /// RemovePodSandbox: removes every container of the pod, then the pod
    /// (stopping it first if needed). Idempotent.
    pub async fn remove_sandbox(&self, containers: &Arc<ContainerService>, id: &str) -> Result<()> {
        let Some(full) = self.store.resolve(id)? else {
            return Ok(());
        };
        remove_containers(containers, &full).await?;
        // The containers' cgroups sit in the pod's, and their idmapped
        // binds on its volumes: the pod goes only after they have.
        containers.wait_reaped(&full).await;
        containers.forget_pod(&full);
        let (stopped, removed) = self.remove(&full).await?;
        if stopped {
            containers.emit_pod_event(&full, cri::ContainerEventType::ContainerStoppedEvent);
        }
        if removed {
            containers.emit_pod_event(&full, cri::ContainerEventType::ContainerDeletedEvent);
        }
        Ok(())
    }
}

/// Stops every container of a pod with no grace period: all killed and
/// their exits waited for together, at most `POD_STOP_PARALLEL` runtime
/// processes at a time for those the runtime has to kill.
async fn stop_containers(containers: &Arc<ContainerService>, pod_id: &str) -> Result<()> {
    each_container(containers, pod_id, "stopping", |c, id, slots| async move {
        c.stop_with(&id, 0, Some(&slots)).await
    })
    .await
}

/// Removes every container of a pod, `POD_STOP_PARALLEL` at a time (a
/// container still running is stopped by its runtime first).
async fn remove_containers(containers: &Arc<ContainerService>, pod_id: &str) -> Result<()> {
    each_container(containers, pod_id, "removing", |c, id, slots| async move {
        let _slot = slots
            .acquire_owned()
            .await
            .map_err(|e| Error::Internal(format!("waiting to remove a container: {e}")))?;
        c.remove(&id).await
    })
    .await
}

/// Runs `step` on each container of the pod, each in a task of its own,
/// sharing `POD_STOP_PARALLEL` slots: every step writes and syncs the
/// container's record (its exit, its move out of view), which in one task
/// would happen one container after another. The first failure is
/// returned once all have been tried.
async fn each_container<F, Fut>(
    containers: &Arc<ContainerService>,
    pod_id: &str,
    what: &'static str,
    step: F,
) -> Result<()>
where
    F: Fn(Arc<ContainerService>, String, Arc<tokio::sync::Semaphore>) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(POD_STOP_PARALLEL));
    let tasks: Vec<_> = containers
        .in_pod(pod_id)
        .into_iter()
        .map(|id| {
            let span = info_span!("container", container = %id);
            tokio::spawn(step(containers.clone(), id, slots.clone()).instrument(span))
        })
        .collect();
    let mut first = Ok(());
    for t in tasks {
        let result = t
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("{what} a container: {e}"))));
        if first.is_ok() {
            first = result;
        }
    }
    first
}
