//! A container of a pod with its own user namespace: the spec joins the
//! pinned namespace (with its mappings, which runc 1.1 needs to know the
//! host ids of what it creates), and every bind mount is handed to the
//! runtime as an already-idmapped mount under the container's `idmapped/`,
//! so runtimes without idmap support see plain bind mounts.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use oci_spec::runtime::{LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec};

use super::*;
use crate::userns::{idmap, pin, IdMap, Mappings};

/// The pod's pinned user namespace, open, and its mappings.
pub(super) struct PodUserns {
    pub path: PathBuf,
    pub fd: OwnedFd,
    pub maps: Mappings,
}

impl PodUserns {
    /// `None` for a pod in the host's user namespace.
    pub(super) fn of(pod: &crate::pod::PodRecord) -> Result<Option<PodUserns>> {
        match (&pod.user_ns, pod.userns_maps) {
            (Some(path), Some(maps)) => Ok(Some(PodUserns {
                fd: pin::open(path)?,
                path: path.clone(),
                maps,
            })),
            (None, Some(_)) => Err(Error::FailedPrecondition(format!(
                "pod sandbox {} has lost its user namespace",
                pod.id
            ))),
            _ => Ok(None),
        }
    }
}

fn id_mapping(m: IdMap) -> Result<oci_spec::runtime::LinuxIdMapping> {
    LinuxIdMappingBuilder::default()
        .container_id(m.container)
        .host_id(m.host)
        .size(m.len)
        .build()
        .map_err(|e| Error::Internal(e.to_string()))
}

/// A `Mount`'s own mappings (kubelet may set them on volumes), checked
/// like the pod's.
fn mount_maps(m: &cri::Mount) -> Result<Option<Mappings>> {
    if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
        return Ok(None);
    }
    let opts = cri::NamespaceOption {
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: m.uid_mappings.clone(),
            gids: m.gid_mappings.clone(),
        }),
        ..Default::default()
    };
    crate::userns::from_namespace_options(Some(&opts))
        .map_err(|e| Error::InvalidArgument(format!("mount {:?}: {e}", m.container_path)))
}

/// Makes `spec` run in the pod's user namespace and replaces the source of
/// each bind mount by an idmapped copy. Image VOLUME directories
/// (`volumes/` of the container) are left as they are: they were seeded
/// through the idmapped rootfs and already hold host ids.
pub(super) fn apply(
    spec: &mut Spec,
    cdir: &Path,
    config: &cri::ContainerConfig,
    userns: &PodUserns,
) -> Result<()> {
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.retain(|n| n.typ() != LinuxNamespaceType::User);
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .path(userns.path.clone())
            .build()
            .map_err(|e| Error::Internal(e.to_string()))?,
    );
    linux.set_namespaces(Some(namespaces));
    linux.set_uid_mappings(Some(vec![id_mapping(userns.maps.uid)?]));
    linux.set_gid_mappings(Some(vec![id_mapping(userns.maps.gid)?]));
    spec.set_linux(Some(linux));

    let dir = cdir.join("idmapped");
    let seeded = cdir.join("volumes");
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for (i, m) in mounts.iter_mut().enumerate() {
        let is_bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        let Some(source) = m.source().clone() else {
            continue;
        };
        if !is_bind || source.starts_with(&seeded) {
            continue;
        }
        let own = config
            .mounts
            .iter()
            .find(|c| Path::new(&c.container_path) == m.destination())
            .map(mount_maps)
            .transpose()?
            .flatten();
        let ephemeral = own.as_ref().map(pin::ephemeral).transpose()?;
        let fd: BorrowedFd<'_> = match &ephemeral {
            Some(e) => e.as_fd(),
            None => userns.fd.as_fd(),
        };
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let target = dir.join(i.to_string());
        idmap::bind_creating(&source, &target, fd)?;
        m.set_source(Some(target));
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Runs `f` on a thread whose filesystem ids are the pod's root on the
/// host, so that what it creates in the rootfs (mount points, the working
/// directory) lands in the upper layer owned by the pod's root, as the
/// runtime would create it, and not by a host root the pod cannot map.
pub(super) fn as_pod_root<T: Send>(maps: &Mappings, f: impl FnOnce() -> T + Send) -> Result<T> {
    let (uid, gid) = (maps.uid.host, maps.gid.host);
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setfsuid/setfsgid change only this thread's
            // credentials (they are not broadcast to other threads), and
            // the thread ends when `f` returns.
            unsafe {
                libc::setfsgid(gid);
                libc::setfsuid(uid);
            }
            f()
        })
        .join()
        .map_err(|_| Error::Internal("the rootfs preparation thread panicked".into()))
    })
}
