//! RemovePodSandbox.

use super::*;

impl PodService {
    /// Removes the pod and all its state, stopping it first if needed. The
    /// answers say whether this call stopped it and whether it removed it.
    pub async fn remove(&self, id: &str) -> Result<(bool, bool)> {
        let Some(id) = self.resolve(id)? else {
            return Ok((false, false));
        };
        let stopped = self.stop(&id).await?;
        let _guard = self.store.lock(&id).await;
        let Some(rec) = self.store.get(&id) else {
            return Ok((stopped, false));
        };
        self.remove_cgroup(&rec).await?;
        self.store.remove(&id)?;
        info!(pod = %id, "pod sandbox removed");
        Ok((stopped, true))
    }
}
