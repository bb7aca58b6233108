//! Image volumes (KEP-4639): a CRI `Mount` with `image` set mounts that
//! image, read-only, at `container_path`: all of it, or only the directory
//! `image_sub_path` inside it.
//!
//! Each volume is a read-only overlay of the image's layer snapshots (no
//! upper directory, so nothing can be written through it) mounted at
//! `<container dir>/image-volumes/<n>/image`; a sub path is resolved inside
//! that view by [`crate::container::rootfs_path`] (an image's symlinks never lead out
//! of it) and bind-mounted, read-only, at `<n>/sub`. The runtime then binds
//! one of those into the container. The container holds a lease on the
//! image from create to remove, so removing the image meanwhile takes its
//! name only. Everything here is unmounted when the container goes, when
//! its create fails, and at start for directories no record claims.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use gantry_proto::v1 as cri;
use tracing::{info, warn};

use crate::container::rootfs_path::{Rootfs, RootfsError};
use crate::container::ImageLookup;
use crate::error::{Error, Result};
use crate::host::Host;

const DIR: &str = "image-volumes";

/// Whether the mount asks for an image rather than a host path.
pub fn is_image_mount(m: &cri::Mount) -> bool {
    m.image.as_ref().is_some_and(|i| !i.image.is_empty())
}

/// The lease a container holds on the image of its `index`th mount.
fn lease_id(container: &str, index: usize) -> String {
    format!("{container}.image-volume-{index}")
}

/// Checks `image_sub_path` as the API defines it: a relative path that
/// stays below the image's root.
fn check_sub_path(m: &cri::Mount) -> Result<()> {
    let sub = &m.image_sub_path;
    if sub.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "mount {:?}: image_sub_path {sub:?} {why}",
            m.container_path
        )))
    };
    if sub.contains('\0') {
        return bad("contains a NUL byte");
    }
    for c in Path::new(sub).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return bad("must be relative"),
            Component::ParentDir => return bad("must not contain '..'"),
        }
    }
    Ok(())
}

/// Mounts every image volume of `mounts` under `cdir`, holding each image
/// for container `id`. Returns the host source of each, by its index in
/// `mounts`. On failure what was mounted stays for the caller's rollback
/// ([`unmount_all`] and the release of the container's leases).
pub async fn mount_all(
    host: &dyn Host,
    images: &dyn ImageLookup,
    id: &str,
    cdir: &Path,
    mounts: &[cri::Mount],
) -> Result<BTreeMap<usize, PathBuf>> {
    let mut out = BTreeMap::new();
    for (i, m) in mounts.iter().enumerate() {
        if !is_image_mount(m) {
            continue;
        }
        let source = mount_one(host, images, id, cdir, i, m).await?;
        out.insert(i, source);
    }
    Ok(out)
}

async fn mount_one(
    host: &dyn Host,
    images: &dyn ImageLookup,
    id: &str,
    cdir: &Path,
    index: usize,
    m: &cri::Mount,
) -> Result<PathBuf> {
    let name = m.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
    let dest = &m.container_path;
    if !m.host_path.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "mount {dest:?} names both an image ({name:?}) and host_path {:?}",
            m.host_path
        )));
    }
    check_sub_path(m)?;
    let image = images
        .acquire(name, &lease_id(id, index), id)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "image {name:?} of the image volume at {dest:?} (it must be pulled first)"
            ))
        })?;
    if let Some(artifact_type) = &image.artifact_type {
        return Err(Error::FailedPrecondition(format!(
            "image volume {dest:?}: {name:?} is an OCI artifact ({artifact_type}); only \
             container images can be mounted"
        )));
    }
    if image.snapshots.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "image volume {dest:?}: image {} has no layers",
            image.id
        )));
    }
    let base = cdir.join(DIR).join(index.to_string());
    let view = base.join("image");
    // Overlay wants two lower layers when it has no upper one: an empty
    // directory at the bottom makes one-layer images mount too.
    let empty = base.join("empty");
    for d in [&view, &empty] {
        std::fs::create_dir_all(d).map_err(Error::io(format!("creating {}", d.display())))?;
    }
    let lower: Vec<PathBuf> = image
        .snapshots
        .iter()
        .rev()
        .chain(std::iter::once(&empty))
        .cloned()
        .collect();
    host.mount_overlay_readonly(&lower, &view)
        .map_err(Error::io(format!(
            "mounting image volume {dest:?} ({name})"
        )))?;
    info!(container = %id, image = %image.id, destination = %dest, "image volume mounted");
    if m.image_sub_path.is_empty() {
        return Ok(view);
    }
    let sub = &m.image_sub_path;
    let dir = match Rootfs::open(&view)?.open_dir(sub) {
        Ok(Some(fd)) => fd,
        Ok(None) => {
            return Err(Error::InvalidArgument(format!(
                "mount {dest:?}: image_sub_path {sub:?} does not exist in image {name:?}"
            )))
        }
        Err(e @ RootfsError::NotDirectory { .. })
        | Err(e @ RootfsError::DanglingSymlink { .. }) => {
            return Err(Error::InvalidArgument(format!(
                "mount {dest:?}: image_sub_path {sub:?} of image {name:?}: {e}"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let target = base.join("sub");
    std::fs::create_dir_all(&target)
        .map_err(Error::io(format!("creating {}", target.display())))?;
    // The handle's /proc link is the directory found inside the image; the
    // kernel binds that very directory, whatever its path says.
    let at = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    host.bind(&at, &target).map_err(Error::io(format!(
        "binding image_sub_path {sub:?} of image volume {dest:?}"
    )))?;
    host.remount_readonly(&target).map_err(Error::io(format!(
        "making image_sub_path {sub:?} of image volume {dest:?} read-only"
    )))?;
    Ok(target)
}

/// Unmounts every image volume under the container directory `cdir`
/// (those a crash or failed create left too). Detached, so that a mount
/// still busy cannot keep the directory from going.
pub fn unmount_all(host: &dyn Host, cdir: &Path) {
    let Ok(entries) = std::fs::read_dir(cdir.join(DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        for part in ["sub", "image"] {
            let path = entry.path().join(part);
            match host.unmount(&path) {
                Ok(()) => {}
                // Not a mount point (never mounted), or not there.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {}
                Err(e) => warn!(path = %path.display(), error = %e, "unmounting an image volume"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(sub: &str) -> cri::Mount {
        cri::Mount {
            container_path: "/v".into(),
            image: Some(cri::ImageSpec {
                image: "img".into(),
                ..Default::default()
            }),
            image_sub_path: sub.into(),
            ..Default::default()
        }
    }

    #[test]
    fn sub_paths_stay_below_the_image_root() {
        for ok in ["", "a", "a/b", "./a", "a/./b/"] {
            check_sub_path(&mount(ok)).unwrap();
        }
        for bad in ["/etc", "..", "a/../..", "a/..", "a\0b"] {
            assert!(
                matches!(check_sub_path(&mount(bad)), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        assert!(is_image_mount(&mount("")));
        assert!(!is_image_mount(&cri::Mount {
            image: Some(cri::ImageSpec::default()),
            ..Default::default()
        }));
    }
}
