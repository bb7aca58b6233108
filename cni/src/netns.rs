//! Pod namespaces pinned by bind mounts instead of by a process: a
//! short-lived thread unshares the network, IPC and UTS namespaces, sets the
//! hostname and brings up loopback inside them, and bind-mounts its
//! `/proc/thread-self/ns/*` files onto files in the pod's directory. The
//! thread then exits; the mounts keep the namespaces alive, so an idle pod
//! costs no process at all. `setns` and `unshare` change only the calling
//! thread, which is why all of this runs on a dedicated OS thread and never
//! on an async worker.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::thread::{LinkNameSpaceType, UnshareFlags};

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("namespace thread panicked")]
    Panicked,
}

fn sys(what: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> NsError {
    let what = what.into();
    move |e| NsError::Sys {
        what,
        source: e.into(),
    }
}

/// Which namespaces a pod gets of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Private {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

/// The pinned namespace files of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

/// Creates and pins the namespaces `which` asks for under `dir`. On error
/// nothing stays mounted.
pub fn create(dir: &Path, which: Private, hostname: &str) -> Result<PinnedNamespaces, NsError> {
    let dir = dir.to_path_buf();
    let hostname = hostname.to_string();
    let handle = std::thread::Builder::new()
        .name("gantry-netns".into())
        .spawn(move || create_on_this_thread(&dir, which, &hostname))
        .map_err(|e| NsError::Sys {
            what: "spawning the namespace thread".into(),
            source: e,
        })?;
    handle.join().map_err(|_| NsError::Panicked)?
}

fn create_on_this_thread(
    dir: &Path,
    which: Private,
    hostname: &str,
) -> Result<PinnedNamespaces, NsError> {
    let mut flags = UnshareFlags::empty();
    if which.net {
        flags |= UnshareFlags::NEWNET;
    }
    if which.ipc {
        flags |= UnshareFlags::NEWIPC;
    }
    if which.uts {
        flags |= UnshareFlags::NEWUTS;
    }
    // SAFETY: FILES is not among the flags; this thread shares no fd table
    // change with others, and it exits right after.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(sys("unshare"))?;
    if which.uts && !hostname.is_empty() {
        rustix::system::sethostname(hostname.as_bytes()).map_err(sys("sethostname"))?;
    }
    if which.net {
        loopback_up()?;
    }
    let mut pinned = PinnedNamespaces {
        net: None,
        ipc: None,
        uts: None,
    };
    let result = (|| {
        for (want, kind, slot) in [
            (which.net, "net", &mut pinned.net),
            (which.ipc, "ipc", &mut pinned.ipc),
            (which.uts, "uts", &mut pinned.uts),
        ] {
            if !want {
                continue;
            }
            let target = dir.join(kind);
            File::create(&target).map_err(|e| NsError::Sys {
                what: format!("creating {}", target.display()),
                source: e,
            })?;
            rustix::mount::mount_bind(format!("/proc/thread-self/ns/{kind}").as_str(), &target)
                .map_err(sys(format!(
                    "pinning the {kind} namespace at {}",
                    target.display()
                )))?;
            *slot = Some(target);
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(pinned),
        Err(e) => {
            remove(&pinned);
            Err(e)
        }
    }
}

/// Sets `lo` up with an ioctl on a socket of the current network namespace.
pub fn loopback_up() -> Result<(), NsError> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq we own; the fd is
    // closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(NsError::Sys {
                what: "socket for loopback".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(NsError::Sys {
                what: "bringing up lo".into(),
                source: err,
            });
        }
    }
    Ok(())
}

/// Unmounts and deletes pinned namespace files; missing ones are fine.
pub fn remove(pinned: &PinnedNamespaces) {
    for p in [&pinned.net, &pinned.ipc, &pinned.uts]
        .into_iter()
        .flatten()
    {
        let _ = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_file(p);
    }
}

/// Whether `path` is still a pinned namespace (a bind mount of nsfs).
pub fn is_pinned(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    // f_type is i64 here but narrower on some targets.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::statfs(path)
        .map(|s| s.f_type as i64 == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Kinds of namespace a thread can join with [`run_in_ns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsKind {
    Net,
    Ipc,
    Uts,
}

/// Runs `f` on a thread that has joined the network namespace at `netns`.
pub fn run_in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NsError> {
    run_in_ns(netns, NsKind::Net, f)
}

/// Runs `f` once inside each network namespace of `paths`, all on one fresh
/// thread that joins them in turn: a poll over every pod costs one thread,
/// not one per pod. A namespace that cannot be entered answers its error
/// and the others still run; the thread ends with the last, so no thread
/// is ever left in a pod's namespace.
pub fn for_each_netns<T: Send + 'static>(
    paths: Vec<PathBuf>,
    f: impl Fn(&Path) -> T + Send + 'static,
) -> Result<Vec<Result<T, NsError>>, NsError> {
    std::thread::Builder::new()
        .name("gantry-netns".into())
        .spawn(move || {
            paths
                .iter()
                .map(|path| {
                    let file = File::open(path).map_err(|e| NsError::Sys {
                        what: format!("opening {}", path.display()),
                        source: e,
                    })?;
                    rustix::thread::move_into_link_name_space(
                        file.as_fd(),
                        Some(LinkNameSpaceType::Network),
                    )
                    .map_err(sys(format!("entering {}", path.display())))?;
                    Ok(f(path))
                })
                .collect()
        })
        .map_err(|e| NsError::Sys {
            what: "starting a namespace thread".into(),
            source: e,
        })?
        .join()
        .map_err(|_| NsError::Panicked)
}

/// Runs `f` on a fresh thread that has joined the namespace pinned at `path`.
pub fn run_in_ns<T: Send + 'static>(
    path: &Path,
    kind: NsKind,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NsError> {
    let path = path.to_path_buf();
    let ns_type = match kind {
        NsKind::Net => LinkNameSpaceType::Network,
        NsKind::Ipc => LinkNameSpaceType::InterProcessCommunication,
        NsKind::Uts => LinkNameSpaceType::HostNameAndNISDomainName,
    };
    std::thread::spawn(move || {
        let file = File::open(&path).map_err(|e| NsError::Sys {
            what: format!("opening {}", path.display()),
            source: e,
        })?;
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(ns_type))
            .map_err(sys(format!("entering {}", path.display())))?;
        Ok(f())
    })
    .join()
    .map_err(|_| NsError::Panicked)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_pinned_usable_and_removed() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pinned = create(
            dir.path(),
            Private {
                net: true,
                ipc: true,
                uts: true,
            },
            "pod-host",
        )
        .unwrap();
        let net = pinned.net.clone().unwrap();
        assert!(is_pinned(&net) && is_pinned(pinned.uts.as_ref().unwrap()));
        // Inside: only loopback, and it is up.
        let (ifaces, lo_flags) = run_in_netns(&net, || {
            let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
            let names: Vec<String> = dev
                .lines()
                .skip(2)
                .map(|l| l.split(':').next().unwrap().trim().to_string())
                .collect();
            // /proc/net/dev lists lo with traffic counters; ask the kernel
            // for its flags through a socket in this namespace instead.
            let up = std::process::Command::new("ip")
                .args(["-o", "link", "show", "lo"])
                .output();
            (
                names,
                up.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default(),
            )
        })
        .unwrap();
        assert_eq!(ifaces, vec!["lo".to_string()]);
        assert!(lo_flags.contains("LOOPBACK,UP"), "lo is not up: {lo_flags}");
        let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
        let pod_ns = run_in_netns(&net, || {
            std::fs::read_link("/proc/thread-self/ns/net").unwrap()
        })
        .unwrap();
        assert_ne!(host_ns, pod_ns);
        remove(&pinned);
        assert!(!net.exists());
        remove(&pinned);
    }

    #[test]
    fn one_thread_visits_each_namespace() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let net_only = Private {
            net: true,
            ipc: false,
            uts: false,
        };
        let pinned: Vec<PinnedNamespaces> = dirs
            .iter()
            .map(|d| create(d.path(), net_only, "h").unwrap())
            .collect();
        let a = pinned[0].net.clone().unwrap();
        let b = pinned[1].net.clone().unwrap();
        let missing = dirs[0].path().join("no-such-netns");
        let seen = for_each_netns(vec![a.clone(), missing, b.clone(), a.clone()], |_| {
            (
                std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
                std::thread::current().id(),
            )
        })
        .unwrap();
        for p in &pinned {
            remove(p);
        }
        assert_eq!(seen.len(), 4);
        assert!(seen[1].is_err(), "a missing namespace is an error");
        let ok: Vec<_> = [&seen[0], &seen[2], &seen[3]]
            .iter()
            .map(|r| r.as_ref().unwrap().clone())
            .collect();
        // Each answer comes from inside its own namespace, all on one
        // thread that is not this one.
        assert_ne!(ok[0].0, ok[1].0);
        assert_eq!(ok[0].0, ok[2].0);
        assert_ne!(ok[0].0, std::fs::read_link("/proc/self/ns/net").unwrap());
        assert!(ok.iter().all(|(_, t)| *t == ok[0].1));
        assert_ne!(ok[0].1, std::thread::current().id());
    }
}
