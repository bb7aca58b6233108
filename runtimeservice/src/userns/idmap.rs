//! Idmapped mounts: a detached copy of a mount (`open_tree` with
//! `OPEN_TREE_CLONE`) gets the pod's user namespace as its idmap
//! (`mount_setattr` with `MOUNT_ATTR_IDMAP`) and is attached where the
//! runtime will bind it from (`move_mount`). Through it, a file owned by
//! uid N on disk shows as the host id container id N maps to, so the pod
//! sees N, and what the pod writes as its N lands on disk as N. No layer,
//! volume or file is ever chowned. A bind mount of an idmapped mount keeps
//! the idmap, which is why a runtime that knows nothing of idmaps (runc
//! 1.1) can be handed these as plain bind mounts.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::CWD;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

use super::Mappings;
use crate::error::{Error, Result};

/// `struct mount_attr` of `<linux/mount.h>` (its first version, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOUNT_ATTR_SIZE_VER0: usize = 32;

/// Gives the detached mount `tree` the idmap of `userns`.
fn set_idmap(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>, recursive: bool) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: mount_setattr(2) reads `size` bytes of `attr`, a live
    // repr(C) struct of exactly that layout; the path is an empty C string
    // and `tree` an open descriptor for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            MOUNT_ATTR_SIZE_VER0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A detached idmapped copy of the mount at `source`.
fn idmapped_tree(source: &Path, userns: BorrowedFd<'_>, recursive: bool) -> Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = rustix::mount::open_tree(CWD, source, flags)
        .map_err(|e| Error::io(format!("cloning the mount of {}", source.display()))(e.into()))?;
    set_idmap(tree.as_fd(), userns, recursive).map_err(|e| {
        Error::io(format!(
            "idmapping {} (its filesystem may not support idmapped mounts)",
            source.display()
        ))(e)
    })?;
    Ok(tree)
}

/// The path through which the mount `tree` (attached nowhere) is reached.
fn via_fd(tree: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", tree.as_raw_fd())
}

/// Mounts on `target` an overlay whose image layers are seen through the
/// idmap of `userns`: overlayfs cannot itself be idmapped, but it takes
/// idmapped lower layers. `lowers` are the image's layer directories,
/// topmost first. The idmapped copies are never attached anywhere: the
/// overlay reaches them through their descriptors and keeps them alive, so
/// its unmount is the only cleanup.
///
/// `upper` and `work` stay plain: overlayfs creates its work directory
/// with the mounter's ids, and host root has no id in the pod's map (the
/// kernel answers EOVERFLOW and mounts the overlay read-only). What the
/// pod writes is therefore stored with its host ids, which only this
/// container's upper layer ever holds. For the same reason the upper
/// directory itself, which is the overlay's root directory, is given the
/// owner the image's root directory shows through the idmap (`maps`, the
/// namespace's own), or the pod's root could not write to `/`.
pub fn overlay(
    lowers: &[&Path],
    upper: &Path,
    work: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
    maps: &Mappings,
) -> Result<()> {
    let Some(top) = lowers.first() else {
        return Err(Error::InvalidArgument(
            "an overlay needs at least one lower layer".into(),
        ));
    };
    for dir in [upper, work] {
        // The legacy option string splits on commas, and overlay on colons.
        let bytes = dir.as_os_str().as_encoded_bytes();
        if bytes.iter().any(|b| matches!(b, b',' | b':' | 0)) {
            return Err(Error::Internal(format!(
                "{} cannot be an overlay option",
                dir.display()
            )));
        }
    }
    let root = std::fs::metadata(top).map_err(Error::io(format!("stat {}", top.display())))?;
    let owner = (maps.uid.to_host(root.uid()), maps.gid.to_host(root.gid()));
    std::os::unix::fs::chown(upper, owner.0, owner.1).map_err(Error::io(format!(
        "giving {} the pod's root",
        upper.display()
    )))?;
    let trees = lowers
        .iter()
        .map(|l| idmapped_tree(l, userns, false))
        .collect::<Result<Vec<_>>>()?;
    let lowerdir: Vec<String> = trees.iter().map(via_fd).collect();
    let mut data = format!("lowerdir={}", lowerdir.join(":")).into_bytes();
    for (key, dir) in [("upperdir", upper), ("workdir", work)] {
        data.extend_from_slice(format!(",{key}=").as_bytes());
        data.extend_from_slice(dir.as_os_str().as_encoded_bytes());
    }
    let data = std::ffi::CString::new(data)
        .map_err(|_| Error::Internal(format!("{} holds a NUL byte", upper.display())))?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        rustix::mount::MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(|e| {
        Error::io(format!(
            "mounting the idmapped overlay on {}",
            target.display()
        ))(e.into())
    })
}

/// Mounts an idmapped copy of `source` (a directory or a file, with its
/// submounts when `recursive`) on `target`, which must exist and be of the
/// same kind. Nothing is mounted when this fails.
pub fn bind(source: &Path, target: &Path, userns: BorrowedFd<'_>, recursive: bool) -> Result<()> {
    let tree = idmapped_tree(source, userns, recursive)?;
    // Dropping `tree` unmounts the detached copy if this fails.
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| {
        Error::io(format!(
            "attaching the idmapped {} at {}",
            source.display(),
            target.display()
        ))(e.into())
    })
}

/// Mounts the idmapped `source` on `target`, creating `target` as an
/// empty file or directory like `source` first.
pub fn bind_creating(source: &Path, target: &Path, userns: BorrowedFd<'_>) -> Result<()> {
    let meta =
        std::fs::metadata(source).map_err(Error::io(format!("stat {}", source.display())))?;
    let created = if meta.is_dir() {
        std::fs::create_dir(target)
    } else {
        std::fs::File::create(target).map(|_| ())
    };
    created.map_err(Error::io(format!("creating {}", target.display())))?;
    if let Err(e) = bind(source, target, userns, meta.is_dir()) {
        let _ = if meta.is_dir() {
            std::fs::remove_dir(target)
        } else {
            std::fs::remove_file(target)
        };
        return Err(e);
    }
    Ok(())
}

/// Detaches an idmapped mount and removes its mount point; a target that
/// is gone or no longer a mount is fine.
pub fn unbind(target: &Path) -> Result<()> {
    match rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => {
            return Err(Error::io(format!("unmounting {}", target.display()))(
                e.into(),
            ))
        }
    }
    let removed = match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => std::fs::remove_dir(target),
        Ok(_) => std::fs::remove_file(target),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    removed.map_err(Error::io(format!("removing {}", target.display())))
}

/// Detaches every idmapped mount made under `dir` (the container's
/// `idmapped/`) and removes what is left. An entry that cannot be
/// unmounted is left in place, never deleted through.
pub fn unbind_all(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut clean = true;
    for e in entries.flatten() {
        if let Err(e) = unbind(&e.path()) {
            tracing::warn!(error = %e, "removing an idmapped mount");
            clean = false;
        }
    }
    if clean {
        let _ = std::fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userns::{pin, Mappings};

    fn maps(host: u32) -> Mappings {
        crate::userns::test_maps(host, host + 100)
    }

    fn root() -> bool {
        crate::userns::test_as_root()
    }

    #[test]
    fn a_host_directory_shows_its_owners_mapped_and_is_undone() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        // tmpfs takes idmaps on every kernel this can run on (6.3+), unlike
        // whatever filesystem the test's temp dir happens to be on.
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        rustix::mount::mount(
            "tmpfs",
            &src,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        std::os::unix::fs::chown(src.join("f"), Some(1000), Some(7)).unwrap();
        std::fs::write(src.join("rootfile"), b"y").unwrap();
        let ns = pin::ephemeral(&maps(4_000_000)).unwrap();
        let target = dir.path().join("mapped");
        let res = bind_creating(&src, &target, ns.as_fd());
        let checked = res.as_ref().map(|_| {
            let f = std::fs::metadata(target.join("f")).unwrap();
            let r = std::fs::metadata(target.join("rootfile")).unwrap();
            (f.uid(), f.gid(), r.uid(), r.gid())
        });
        // The source itself is untouched.
        let orig = std::fs::metadata(src.join("f")).unwrap();
        let undo = unbind(&target);
        rustix::mount::unmount(&src, rustix::mount::UnmountFlags::DETACH).unwrap();
        assert_eq!(
            checked.unwrap(),
            (4_001_000, 4_000_107, 4_000_000, 4_000_100)
        );
        assert_eq!((orig.uid(), orig.gid()), (1000, 7));
        undo.unwrap();
        assert!(!target.exists());
    }

    #[test]
    fn a_single_file_can_be_idmapped() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("t");
        std::fs::create_dir(&mnt).unwrap();
        rustix::mount::mount(
            "tmpfs",
            &mnt,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        std::fs::write(mnt.join("hosts"), b"127.0.0.1 localhost\n").unwrap();
        let ns = pin::ephemeral(&maps(4_100_000)).unwrap();
        let target = dir.path().join("hosts");
        let res = bind_creating(&mnt.join("hosts"), &target, ns.as_fd());
        let seen = res.as_ref().map(|_| {
            let m = std::fs::metadata(&target).unwrap();
            (m.uid(), std::fs::read(&target).unwrap())
        });
        let _ = unbind(&target);
        rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH).unwrap();
        assert_eq!(
            seen.unwrap(),
            (4_100_000, b"127.0.0.1 localhost\n".to_vec())
        );
        assert!(!target.exists());
    }

    #[test]
    fn a_filesystem_without_idmap_support_is_refused_and_leaves_no_mount() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        // procfs does not take idmaps.
        let dir = tempfile::tempdir().unwrap();
        let ns = pin::ephemeral(&maps(4_200_000)).unwrap();
        let target = dir.path().join("proc");
        let e = bind_creating(Path::new("/proc/sys"), &target, ns.as_fd()).unwrap_err();
        assert!(e.to_string().contains("idmapping /proc/sys"), "{e}");
        assert!(!target.exists());
        // A missing source is an error too, and creates nothing.
        assert!(bind_creating(&dir.path().join("nope"), &target, ns.as_fd()).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn an_overlay_refuses_what_its_option_string_cannot_carry() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let m = maps(4_300_000);
        let ns = pin::ephemeral(&m).unwrap();
        let (lower, work, target) = (
            dir.path().join("l"),
            dir.path().join("w"),
            dir.path().join("t"),
        );
        let upper = dir.path().join("u,lowerdir=/");
        for d in [&lower, &work, &target, &upper] {
            std::fs::create_dir(d).unwrap();
        }
        let e = overlay(&[], &upper, &work, &target, ns.as_fd(), &m).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        let e = overlay(&[lower.as_path()], &upper, &work, &target, ns.as_fd(), &m).unwrap_err();
        assert!(e.to_string().contains("cannot be an overlay option"), "{e}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(dir.path().to_str().unwrap()));
    }
}
