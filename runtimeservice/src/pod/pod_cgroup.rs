//! The pod's cgroup: made at run, handed over to the containers, removed
//! with the pod.

use super::*;

impl PodService {
    /// Removes the cgroup directories gantry made for the pod.
    ///
    /// Pods given the same cgroup_parent share one cgroup, made by the
    /// first of them: while another pod is in it, its directories are
    /// handed to that pod, and whoever goes last removes them. Decisions
    /// are taken one at a time, on fresh records, and a pod that has
    /// handed over (or removed) its cgroup drops out as an heir, so two
    /// pods going at once cannot hand the directories to each other.
    pub(super) async fn remove_cgroup(&self, rec: &PodRecord) -> Result<()> {
        let _one_at_a_time = self.cgroup_handover.lock().await;
        let rec = self.store.get(&rec.id).unwrap_or_else(|| rec.clone());
        if rec.cgroup_created.is_empty() {
            return Ok(());
        }
        let dirs = rec.cgroup_created.clone();
        let heir = (!rec.cgroup.is_empty())
            .then(|| {
                self.store
                    .list()
                    .into_iter()
                    .find(|p| p.id != rec.id && p.cgroup == rec.cgroup)
            })
            .flatten();
        match heir {
            Some(heir) => {
                self.store.update(&heir.id, |r| {
                    for d in dirs {
                        if !r.cgroup_created.contains(&d) {
                            r.cgroup_created.push(d);
                        }
                    }
                })?;
            }
            None => {
                let host = self.host.clone();
                tokio::task::spawn_blocking(move || host.remove_cgroup_dirs(&dirs))
                    .await
                    .map_err(Error::task("removing the pod cgroup"))?
                    .map_err(|why| Error::Host {
                        context: "removing the pod cgroup".into(),
                        source: why.into(),
                    })?;
            }
        }
        if self.store.get(&rec.id).is_some() {
            self.store.update(&rec.id, |r| {
                r.cgroup_created.clear();
                r.cgroup.clear();
            })?;
        }
        Ok(())
    }

    /// Makes the pod's cgroup (cgroupfs driver only: under systemd the
    /// runtime has systemd make the slice).
    pub(super) async fn create_cgroup(&self, id: &str, parent: &str) -> Result<String> {
        // Not while another pod's cgroup is being removed or handed over:
        // what exists, and who is there to inherit it, must not change
        // half-way.
        let _one_at_a_time = self.cgroup_handover.lock().await;
        let driver = self.config.cgroup_driver;
        let path = cgroup::pod_cgroup(driver, parent, id);
        if driver != CgroupDriver::Cgroupfs {
            self.store.update(id, |r| r.cgroup = path.clone())?;
            return Ok(path);
        }
        // One record write, before any directory is made.
        self.host.create_cgroup(&path, &mut |dirs| {
            self.store
                .update(id, |r| {
                    r.cgroup = path.clone();
                    r.cgroup_created.extend_from_slice(dirs);
                })
                .map(drop)
        })?;
        Ok(path)
    }
}
