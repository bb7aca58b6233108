//! A pod's user namespace, created by a short-lived child process and kept
//! by bind mounts of its namespace files, like the pod's other namespaces.
//!
//! A multi-threaded process cannot `unshare(CLONE_NEWUSER)`, so the daemon
//! clones a child straight into the new namespaces. The child does nothing
//! but wait on a pipe; the parent writes its `uid_map`/`gid_map`, pins
//! `/proc/<child>/ns/*`, then closes the pipe and reaps it. The network,
//! IPC and UTS namespaces are created by the same clone so that they belong
//! to the pod's user namespace: its root can then mount `/sys`, `/proc` and
//! mqueue in them, which runc does for every container.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use gantry_cni::netns::{PinnedNamespaces, Private};

use super::Mappings;
use crate::error::{Error, Result};

/// The pinned namespaces of a pod with its own user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedUserns {
    pub user: PathBuf,
    /// The namespaces of `Private` the user namespace owns.
    pub others: PinnedNamespaces,
}

/// A child process in fresh namespaces, alive until dropped: dropping it
/// closes the pipe the child waits on and reaps it.
struct NsChild {
    pid: libc::pid_t,
    release: Option<OwnedFd>,
    /// The child's stack and its two pipe ends, in memory it shares with
    /// us: freed only once it has been reaped (fields drop after `drop`).
    _stack: Vec<u8>,
    _fds: Box<[libc::c_int; 2]>,
}

/// Large enough for a close, a read and a return (glibc's clone then
/// calls exit).
const CHILD_STACK: usize = 64 * 1024;

/// The child: let go of every descriptor but its read end, wait for the
/// write end to close, exit.
///
/// Every other descriptor goes, not just its own write end: a child cloned
/// while another pod's pin was being made holds a copy of that pin's write
/// end, and two such children would wait for each other for ever (seen
/// when two pods were pinned at once).
extern "C" fn wait_for_release(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the parent's boxed pair of descriptors, alive
    // until this child is reaped. Only close_range, close and read are
    // called: no allocation, no lock, nothing that touches the memory it
    // shares with the daemon but its own stack; the descriptors it closes
    // are its own copies (no CLONE_FILES). An interrupted read just ends the
    // wait early, and the parent's next step on /proc/<pid> fails cleanly.
    unsafe {
        let fds = &*(arg as *const [libc::c_int; 2]);
        let keep = fds[0] as libc::c_uint;
        let below = keep == 0 || libc::syscall(libc::SYS_close_range, 0u32, keep - 1, 0u32) == 0;
        let above = libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0u32) == 0;
        if !(below && above) {
            // A kernel without close_range (before 5.9): at least our own
            // write end.
            libc::close(fds[1]);
        }
        let mut b = 0u8;
        libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
    }
    0
}

impl NsChild {
    fn spawn(private: Private) -> Result<Self> {
        let mut flags = libc::CLONE_NEWUSER;
        if private.net {
            flags |= libc::CLONE_NEWNET;
        }
        if private.ipc {
            flags |= libc::CLONE_NEWIPC;
        }
        if private.uts {
            flags |= libc::CLONE_NEWUTS;
        }
        let (read, write) =
            std::io::pipe().map_err(Error::io("pipe for the user namespace child"))?;
        let mut fds = Box::new([read.as_raw_fd(), write.as_raw_fd()]);
        let mut stack = vec![0u8; CHILD_STACK];
        // SAFETY: CLONE_VM spares copying the daemon's address space (a
        // plain fork of a large daemon costs tens of milliseconds); the
        // child runs `wait_for_release` on its own stack, the top of
        // `stack` (16-byte aligned), which outlives it, and shares nothing
        // else it could disturb (no CLONE_FILES, CLONE_FS or CLONE_SIGHAND).
        let pid = unsafe {
            let top = stack.as_mut_ptr().add(CHILD_STACK);
            let top = top.sub(top as usize % 16);
            libc::clone(
                wait_for_release,
                top.cast(),
                flags | libc::CLONE_VM | libc::SIGCHLD,
                (&mut *fds as *mut [libc::c_int; 2]).cast(),
            )
        };
        if pid < 0 {
            return Err(Error::io("cloning into a new user namespace")(
                std::io::Error::last_os_error(),
            ));
        }
        drop(read);
        Ok(NsChild {
            pid,
            release: Some(OwnedFd::from(write)),
            _stack: stack,
            _fds: fds,
        })
    }

    fn write_maps(&self, maps: &Mappings) -> Result<()> {
        for (file, m) in [("uid_map", maps.uid), ("gid_map", maps.gid)] {
            let path = format!("/proc/{}/{file}", self.pid);
            std::fs::write(&path, m.map_line()).map_err(Error::io(format!("writing {path}")))?;
        }
        Ok(())
    }

    fn ns_path(&self, kind: &str) -> String {
        format!("/proc/{}/ns/{kind}", self.pid)
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        self.release.take();
        let mut status = 0;
        // SAFETY: waits for our own child; EINTR is retried, ECHILD (someone
        // else reaped it) ends the loop.
        while unsafe { libc::waitpid(self.pid, &mut status, 0) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}

fn pin(source: &str, target: &Path) -> Result<()> {
    File::create(target).map_err(Error::io(format!("creating {}", target.display())))?;
    if let Err(e) = rustix::mount::mount_bind(source, target) {
        let _ = std::fs::remove_file(target);
        return Err(Error::io(format!(
            "pinning {source} at {}",
            target.display()
        ))(e.into()));
    }
    Ok(())
}

fn unpin(path: &Path) {
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_file(path);
}

/// Creates the pod's user namespace with `maps`, and the namespaces of
/// `private` owned by it, pinned as `user`, `net`, `ipc`, `uts` under
/// `dir`. On error nothing stays mounted or created.
pub fn create(dir: &Path, maps: &Mappings, private: Private) -> Result<PinnedUserns> {
    let child = NsChild::spawn(private)?;
    child.write_maps(maps)?;
    let mut pinned = PinnedUserns {
        user: dir.join("user"),
        others: PinnedNamespaces {
            net: None,
            ipc: None,
            uts: None,
        },
    };
    pin(&child.ns_path("user"), &pinned.user)?;
    let rest = (|| {
        for (want, kind, slot) in [
            (private.net, "net", &mut pinned.others.net),
            (private.ipc, "ipc", &mut pinned.others.ipc),
            (private.uts, "uts", &mut pinned.others.uts),
        ] {
            if want {
                let target = dir.join(kind);
                pin(&child.ns_path(kind), &target)?;
                *slot = Some(target);
            }
        }
        Ok(())
    })();
    drop(child);
    if let Err(e) = rest {
        remove(&pinned);
        return Err(e);
    }
    Ok(pinned)
}

/// [`create`] for a pod: its hostname is set in the new UTS namespace
/// (empty keeps the node's) and loopback is brought up in the new network
/// namespace, by a thread that joins them (the daemon's root holds every
/// capability over namespaces its child user namespace owns).
pub fn create_for_pod(
    dir: &Path,
    maps: &Mappings,
    private: Private,
    hostname: &str,
) -> Result<PinnedUserns> {
    let pinned = create(dir, maps, private)?;
    let setup = || -> Result<()> {
        let fail = |what: &str| {
            let what = what.to_string();
            move |e: gantry_cni::netns::NsError| Error::Internal(format!("{what}: {e}"))
        };
        if let (Some(uts), false) = (&pinned.others.uts, hostname.is_empty()) {
            let name = hostname.to_string();
            gantry_cni::netns::run_in_ns(uts, gantry_cni::netns::NsKind::Uts, move || {
                rustix::system::sethostname(name.as_bytes())
            })
            .map_err(fail("joining the pod's UTS namespace"))?
            .map_err(|e| Error::io("sethostname")(e.into()))?;
        }
        if let Some(net) = &pinned.others.net {
            gantry_cni::netns::run_in_netns(net, gantry_cni::netns::loopback_up)
                .map_err(fail("joining the pod's network namespace"))?
                .map_err(fail("bringing up lo"))?;
        }
        Ok(())
    };
    match setup() {
        Ok(()) => Ok(pinned),
        Err(e) => {
            remove(&pinned);
            Err(e)
        }
    }
}

/// Unmounts and deletes the pins; missing ones are fine.
pub fn remove(pinned: &PinnedUserns) {
    gantry_cni::netns::remove(&pinned.others);
    unpin(&pinned.user);
}

/// A user namespace with `maps` held only by the returned descriptor: what
/// an idmapped mount of a volume with its own mappings needs. The mount
/// keeps the namespace; the descriptor can be closed right after.
pub fn ephemeral(maps: &Mappings) -> Result<OwnedFd> {
    let child = NsChild::spawn(Private {
        net: false,
        ipc: false,
        uts: false,
    })?;
    child.write_maps(maps)?;
    let path = child.ns_path("user");
    let f = File::open(&path).map_err(Error::io(format!("opening {path}")))?;
    Ok(OwnedFd::from(f))
}

/// Opens a pinned user namespace for `setns` or `mount_setattr`.
pub fn open(user: &Path) -> Result<OwnedFd> {
    let f = File::open(user).map_err(Error::io(format!("opening {}", user.display())))?;
    Ok(OwnedFd::from(f))
}

/// Reads back `uid_map` and `gid_map` of the user namespace at `user`, as
/// seen from the daemon's namespace: what a status or a restart trusts
/// rather than a record.
pub fn read_maps(user: &Path) -> Result<String> {
    // A namespace's maps are only visible through a process in it, so a
    // child joins it just long enough to be read.
    let fd = open(user)?;
    let raw = fd.as_raw_fd();
    let (read, write) = std::io::pipe().map_err(Error::io("pipe for the user namespace reader"))?;
    let (rfd, wfd) = (read.as_raw_fd(), write.as_raw_fd());
    // SAFETY: a raw clone without CLONE_VM behaves like fork: the child
    // gets a copy of this thread only, and calls nothing but setns, close,
    // read and _exit (async-signal-safe syscalls, no allocation, no locks).
    // Not time-critical, so the copy of the address space is acceptable.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            libc::close(wfd);
            if libc::setns(raw, libc::CLONE_NEWUSER) != 0 {
                libc::_exit(1);
            }
            let mut b = 0u8;
            while libc::read(rfd, (&mut b as *mut u8).cast(), 1) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
            libc::_exit(0);
        }
    }
    if pid < 0 {
        return Err(Error::io("forking the user namespace reader")(
            std::io::Error::last_os_error(),
        ));
    }
    drop(read);
    let child = NsChild {
        pid: pid as libc::pid_t,
        release: Some(OwnedFd::from(write)),
        _stack: Vec::new(),
        _fds: Box::new([rfd, wfd]),
    };
    // The child may not have joined yet: wait until its user namespace is
    // the pinned one (or it died trying).
    let want = rustix::fs::fstat(&fd)
        .map_err(|e| Error::io("stat of the pinned user namespace")(e.into()))?;
    let mine = format!("/proc/{}/ns/user", child.pid);
    for _ in 0..2000 {
        match rustix::fs::stat(mine.as_str()) {
            Ok(st) if st.st_ino == want.st_ino && st.st_dev == want.st_dev => {
                let uid = std::fs::read_to_string(format!("/proc/{}/uid_map", child.pid));
                let gid = std::fs::read_to_string(format!("/proc/{}/gid_map", child.pid));
                return match (uid, gid) {
                    (Ok(u), Ok(g)) => Ok(format!("{u}{g}")),
                    (Err(e), _) | (_, Err(e)) => Err(Error::io("reading the maps")(e)),
                };
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_micros(50)),
            Err(e) => return Err(Error::io("the user namespace reader exited")(e.into())),
        }
    }
    Err(Error::Internal(
        "the user namespace reader never joined the namespace".into(),
    ))
}

#[cfg(test)]
mod tests {
    use std::os::fd::FromRawFd;

    use super::*;
    use crate::userns::IdMap;

    fn maps(host: u32) -> Mappings {
        crate::userns::test_maps(host, host + 65536)
    }

    fn root() -> bool {
        crate::userns::test_as_root()
    }

    fn ns_ino(p: &Path) -> u64 {
        rustix::fs::stat(p).unwrap().st_ino
    }

    #[test]
    fn pinned_user_namespace_owns_the_pods_namespaces_and_keeps_its_maps() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let m = maps(3_000_000);
        let all = Private {
            net: true,
            ipc: true,
            uts: true,
        };
        let p = create(dir.path(), &m, all).unwrap();
        assert!(gantry_cni::netns::is_pinned(&p.user));
        for ns in [&p.others.net, &p.others.ipc, &p.others.uts] {
            let ns = ns.as_ref().unwrap();
            assert!(gantry_cni::netns::is_pinned(ns));
            // NS_GET_USERNS answers the owning user namespace.
            let f = File::open(ns).unwrap();
            // SAFETY: ioctl on a file we own, answering a new fd.
            let owner = unsafe { libc::ioctl(f.as_raw_fd(), 0xb701) };
            assert!(owner >= 0, "{}", std::io::Error::last_os_error());
            // SAFETY: the ioctl returned a fresh descriptor we now own.
            let owner = unsafe { OwnedFd::from_raw_fd(owner) };
            let st = rustix::fs::fstat(&owner).unwrap();
            assert_eq!(
                st.st_ino,
                ns_ino(&p.user),
                "{ns:?} is owned by the pod's user namespace"
            );
        }
        assert_ne!(ns_ino(&p.user), ns_ino(Path::new("/proc/self/ns/user")));
        let seen = read_maps(&p.user).unwrap();
        let fields: Vec<Vec<&str>> = seen
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            fields,
            vec![vec!["0", "3000000", "65536"], vec!["0", "3065536", "65536"]]
        );
        remove(&p);
        assert!(!p.user.exists() && !p.others.net.as_ref().unwrap().exists());
        // Nothing of ours stays in the mount table.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(dir.path().to_str().unwrap()));
    }

    /// Children cloned at the same moment hold copies of each other's
    /// pipes unless each lets go of everything but its own: then every
    /// create waited for the other for ever.
    #[test]
    fn pods_pinned_at_the_same_time_do_not_wait_for_each_other() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for i in 0..8u32 {
            let (dir, done) = (dir.path().join(i.to_string()), done_tx.clone());
            std::thread::spawn(move || {
                std::fs::create_dir(&dir).unwrap();
                let none = Private {
                    net: false,
                    ipc: false,
                    uts: false,
                };
                for _ in 0..10 {
                    let p = create(&dir, &maps(3_500_000 + i * 65536), none).unwrap();
                    remove(&p);
                }
                let _ = done.send(());
            });
        }
        for _ in 0..8 {
            done_rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("a pin waited for another pod's child");
        }
    }

    #[test]
    fn only_the_user_namespace_when_nothing_else_is_private() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let none = Private {
            net: false,
            ipc: false,
            uts: false,
        };
        let p = create(dir.path(), &maps(3_200_000), none).unwrap();
        assert!(p.others.net.is_none() && !dir.path().join("net").exists());
        remove(&p);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_failed_create_leaves_nothing_and_no_child() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // The kernel refuses a map whose host range overflows; the request
        // validation never lets one through, so this forces the late error.
        let bad = Mappings {
            uid: IdMap {
                container: 0,
                host: u32::MAX - 1,
                len: 65536,
            },
            gid: IdMap {
                container: 0,
                host: 65536,
                len: 65536,
            },
        };
        let all = Private {
            net: true,
            ipc: true,
            uts: true,
        };
        assert!(create(dir.path(), &bad, all).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // The pin target is a directory: mounting the ns file fails after
        // the user namespace was pinned, and that pin is undone too.
        std::fs::create_dir(dir.path().join("ipc")).unwrap();
        assert!(create(dir.path(), &maps(3_300_000), all).is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("ipc")]);
    }

    #[test]
    fn an_ephemeral_namespace_lives_as_long_as_its_descriptor() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let fd = ephemeral(&maps(3_400_000)).unwrap();
        let st = rustix::fs::fstat(&fd).unwrap();
        assert_ne!(st.st_ino, ns_ino(Path::new("/proc/self/ns/user")));
    }
}
