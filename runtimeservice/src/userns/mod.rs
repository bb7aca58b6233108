//! Pods in a user namespace of their own (`hostUsers: false`, KEP-127),
//! done by gantry itself so that a runtime without idmapped-mount support
//! (runc 1.1) still gets a rootfs and mounts whose owners look right from
//! inside.
//!
//! This module owns: the validation of `NamespaceOption.userns_options`
//! ([`validate`]), creating and pinning a pod's user namespace with the
//! network, IPC and UTS namespaces it owns ([`pin`]), idmapped mounts of a
//! rootfs or a host path through such a namespace ([`idmap`]), and the
//! host probe that decides whether any of this can work here ([`probe`]),
//! and the trial container that decides it per runtime handler ([`trial`]).

pub mod idmap;
pub mod pin;
pub mod probe;
pub mod trial;
pub mod validate;

pub use validate::{from_namespace_options, IdMap, Mappings};

/// Lets the pod's root reach a container's rootfs at `dir` (its parent
/// directory, the bundle): the runtime mounts the rootfs from inside the
/// user namespace, as an unprivileged id of the host, which needs search
/// permission on every directory of the path. Directories that lack it for
/// others get `o+x` only (traversal by name, no listing); their files keep
/// their own modes (records and specs are 0600).
pub fn let_pod_root_through(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for d in dir.ancestors() {
        let meta = std::fs::metadata(d)?;
        let mode = meta.permissions().mode();
        if meta.is_dir() && mode & 0o001 == 0 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode((mode | 0o001) & 0o7777))?;
        }
    }
    Ok(())
}

/// A number for a scratch directory of this process: probes and trials of
/// several handlers run at once.
fn next_scratch() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Whether the handler can run pods in a user namespace of their own: an
/// overlay of idmapped layers works on the state root's filesystem, and a
/// trial container on the handler's runtime is created in such a pod.
pub fn handler_supports(
    config: &crate::RuntimeConfig,
    name: &str,
    binary: &std::path::Path,
    args: &[String],
) -> bool {
    if !rustix::process::geteuid().is_root() {
        return false;
    }
    let Some(root) = config.root.ancestors().find(|p| p.is_dir()) else {
        return false;
    };
    let verdict = probe::idmapped_overlay(root).and_then(|()| trial::run(binary, args, root));
    match verdict {
        Ok(()) => {
            tracing::info!(handler = name, "pods in their own user namespace work");
            true
        }
        Err(why) => {
            tracing::info!(handler = name, reason = %why, "no user namespaces for this handler's pods");
            false
        }
    }
}

/// Mappings of 65536 ids from container id 0, for the unit tests.
#[cfg(test)]
pub(crate) fn test_maps(uid_host: u32, gid_host: u32) -> Mappings {
    let from_zero = |host| IdMap {
        container: 0,
        host,
        len: 65536,
    };
    Mappings {
        uid: from_zero(uid_host),
        gid: from_zero(gid_host),
    }
}

/// Whether the unit tests run as root (mounts and namespaces need it).
#[cfg(test)]
pub(crate) fn test_as_root() -> bool {
    rustix::process::geteuid().is_root()
}
