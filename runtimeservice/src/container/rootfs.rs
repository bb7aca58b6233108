//! What is made inside a container's rootfs before it starts: image
//! volumes seeded, mount points created (always through [`crate::container::rootfs_path`]).

use super::*;

/// Whether `pid` is still this container's monitor (PIDs wrap, so the
/// command line must name the container too).
/// Copies what the image holds at `dest` (resolved inside the rootfs) into
/// the volume directory `host`. Symlinks inside are copied as links, never
/// followed; anything but a directory at `dest` is not copied.
pub(super) fn seed_volume(root: &Rootfs, dest: &str, host: &Path) -> Result<()> {
    let dir = match root.open_dir(dest) {
        Ok(Some(fd)) => fd,
        Ok(None) | Err(RootfsError::NotDirectory { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // The handle's /proc link names the directory found inside the rootfs;
    // below it, copy_tree follows nothing.
    let at = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    ));
    copy_tree(&at, host).map_err(Error::io(format!("seeding the volume {dest}")))?;
    let meta = rustix::fs::fstat(&dir)
        .map_err(|e| Error::io(format!("reading the volume {dest}"))(e.into()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(host, std::fs::Permissions::from_mode(meta.st_mode & 0o7777))
        .map_err(Error::io("setting a volume's mode"))?;
    std::os::unix::fs::lchown(host, Some(meta.st_uid), Some(meta.st_gid))
        .map_err(Error::io("setting a volume's owner"))
}

/// Makes the process's working directory and the destinations of its bind
/// mounts inside the rootfs, before any runtime sees them: every runtime
/// then finds them there, made by the one resolver that keeps an image's
/// symlinks inside the rootfs. Destinations below a filesystem the runtime
/// makes itself (`/dev`, `/proc`, `/sys`) are its own business.
pub(super) fn prepare_rootfs_paths(rootfs: &Path, spec: &oci_spec::runtime::Spec) -> Result<()> {
    let root = Rootfs::open(rootfs)?;
    if let Some(p) = spec.process() {
        root.mkdir_all(&p.cwd().display().to_string(), 0o755)?;
    }
    let mounts = spec.mounts().clone().unwrap_or_default();
    let is_bind = |m: &oci_spec::runtime::Mount| {
        m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind")
    };
    let runtime_made: Vec<String> = mounts
        .iter()
        .filter(|m| !is_bind(m))
        .map(|m| m.destination().display().to_string())
        .collect();
    for m in mounts.iter().filter(|m| is_bind(m)) {
        let dest = m.destination().display().to_string();
        if runtime_made
            .iter()
            .any(|r| dest.starts_with(&format!("{}/", r.trim_end_matches('/'))))
        {
            continue;
        }
        // The source is the host's (kubelet's or ours), not the image's.
        let dir = m.source().as_ref().is_some_and(|s| s.is_dir());
        root.ensure_mount_point(&dest, dir)?;
    }
    Ok(())
}

pub(super) fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&src)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)?;
        } else {
            // Devices, sockets and fifos are not copied into volumes.
            continue;
        }
        std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}
