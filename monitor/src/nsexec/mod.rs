//! The native exec path: what `gantry-exec` does to run a command inside a
//! running namespace-based container (runc, crun, youki) without starting
//! the OCI runtime.
//!
//! This module owns everything between "here is the container's init PID
//! and the OCI spec gantry generated for it" and `execve` of the command:
//! opening and joining the init's namespaces, joining its cgroups, applying
//! the spec's `process` (user, groups, capabilities, rlimits, umask,
//! oomScoreAdj, no-new-privileges, LSM label, seccomp), resolving the
//! command in the container's `PATH`, recording the command's host PID and
//! relaying its exit status and the signals the helper receives.
//!
//! The namespace entry is written by hand: the crates that enter
//! namespaces do so for containers they create themselves, and none of
//! them joins an existing container that another runtime set up. Joining
//! has ordering rules that shape the code:
//!
//! * every `/proc/<init>/ns/*` link is opened before the first `setns`, so
//!   the later opens cannot resolve inside a namespace already joined;
//! * the PID namespace only applies to children: the helper joins it and
//!   forks, and the child is the command;
//! * the child joins the container's cgroups while it still sees the
//!   host's cgroup mounts and before it enters the container's cgroup
//!   namespace; the helper itself never joins them, so it does not count
//!   against the container's limits (pids.max in particular);
//! * the mount namespace is joined last, because it changes what every
//!   later path means.
//!
//! The helper is single-threaded (no runtime, no thread is ever spawned),
//! which `setns` into a mount or user namespace requires, and which makes
//! ordinary code (allocation included) safe after `fork`.
//!
//! Nothing of the host may be reachable from the container through the
//! child while it is still the helper:
//!
//! * the helper makes itself non-dumpable before it opens or joins any
//!   namespace, so the container's processes cannot ptrace it or open its
//!   `/proc/<pid>/` files (its memory, its descriptors) without
//!   `CAP_SYS_PTRACE`; `execve` of the command makes it dumpable again;
//! * it runs from a sealed memfd copy of itself (see [`crate::sealed_exe`]),
//!   so even a container with `CAP_SYS_PTRACE` that opens
//!   `/proc/<pid>/exe` holds a file nobody can write;
//! * the `/proc` files it writes (oom_score_adj, LSM labels) are written
//!   before the mount namespace is joined, through a descriptor checked to
//!   be on a real procfs;
//! * every descriptor above the standard three is close-on-exec before
//!   `execve`, whatever the daemon or a library left open.
//!
//! A terminal exec (`--tty`) gets its terminal as `runc exec -t` does: the
//! child opens the pseudo-terminal from the container's own `/dev/ptmx`
//! once it is in the container's mount namespace, so `tty` names a
//! `/dev/pts/N` that exists there; it sends the master to the daemon over
//! the socket it was given as standard input, makes the follower its
//! controlling terminal in a new session and hands it to the command as
//! its standard streams.

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use rustix::thread::LinkNameSpaceType;
use serde::Deserialize;

/// What can go wrong before the command runs.
mod cgroups;
mod command;
mod security;
mod spec;

pub use self::{cgroups::*, command::*, security::*, spec::*};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid spec: {0}")]
    Spec(String),
    /// The PID no longer belongs to the container (its init exited and the
    /// number was reused).
    #[error("process {pid} is not the container's init (its cgroup is not {cgroups_path})")]
    NotTheInit { pid: i32, cgroups_path: String },
    #[error("seccomp: {0}")]
    Seccomp(String),
    #[error("capabilities: {0}")]
    Caps(String),
    /// The command itself cannot be run; the message names it.
    #[error("exec {cmd:?}: {reason}")]
    Command { cmd: String, reason: String },
}

type Result<T> = std::result::Result<T, ExecError>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ExecError {
    let what = what.into();
    move |source| ExecError::Io { what, source }
}

fn errno_err(what: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> ExecError {
    let what = what.into();
    move |e| ExecError::Io {
        what,
        source: io::Error::from(e),
    }
}

/// One exec, as the daemon asks for it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The container's init, on the host.
    pub init_pid: i32,
    /// The container's `config.json`.
    pub spec: PathBuf,
    /// Where the command's host PID goes.
    pub pid_file: PathBuf,
    /// The command gets a terminal of the container's; standard input is
    /// the unix socket its master is sent on.
    pub tty: bool,
    /// The terminal's first size, columns and rows.
    pub tty_size: Option<(u16, u16)>,
    pub args: Vec<String>,
}

/// `COLSxROWS`, both non-zero.
fn parse_size(s: &str) -> Option<(u16, u16)> {
    let (w, h) = s.split_once('x')?;
    let (w, h) = (w.parse::<u16>().ok()?, h.parse::<u16>().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

impl Request {
    /// `--pid N --spec PATH --pid-file PATH [--tty [--tty-size COLSxROWS]] -- CMD...`
    pub fn parse(mut args: impl Iterator<Item = std::ffi::OsString>) -> Result<Request> {
        let usage = |m: &str| {
            ExecError::Spec(format!("usage: gantry-exec --pid N --spec CONFIG.JSON --pid-file PATH [--tty [--tty-size COLSxROWS]] -- CMD...: {m}"))
        };
        let (mut pid, mut spec, mut pid_file, mut tty) = (None, None, None, false);
        let mut tty_size = None;
        let mut cmd = Vec::new();
        while let Some(a) = args.next() {
            match a.to_str() {
                Some("--pid") => {
                    pid = args
                        .next()
                        .and_then(|p| p.to_str().and_then(|p| p.parse::<i32>().ok()))
                        .filter(|p| *p > 0)
                }
                Some("--spec") => spec = args.next().map(PathBuf::from),
                Some("--pid-file") => pid_file = args.next().map(PathBuf::from),
                Some("--tty") => tty = true,
                Some("--tty-size") => {
                    let size = args.next().and_then(|a| a.to_str().and_then(parse_size));
                    tty_size = Some(size.ok_or_else(|| usage("--tty-size is not COLSxROWS"))?);
                }
                Some("--") => {
                    for c in args.by_ref() {
                        cmd.push(
                            c.into_string()
                                .map_err(|_| usage("the command is not UTF-8"))?,
                        );
                    }
                }
                _ => return Err(usage(&format!("unexpected {a:?}"))),
            }
        }
        if cmd.is_empty() {
            return Err(usage("no command"));
        }
        Ok(Request {
            init_pid: pid.ok_or_else(|| usage("--pid is missing or not a PID"))?,
            spec: spec.ok_or_else(|| usage("--spec is missing"))?,
            pid_file: pid_file.ok_or_else(|| usage("--pid-file is missing"))?,
            tty,
            tty_size,
            args: cmd,
        })
    }
}

/// The namespaces an exec may join, in the order the command joins them
/// (PID aside: the helper joins it before forking). User first, so the
/// others are joined with the capabilities it grants; mount last.
const NAMESPACES: [(&str, LinkNameSpaceType); 7] = [
    ("pid", LinkNameSpaceType::ProcessID),
    ("user", LinkNameSpaceType::User),
    ("ipc", LinkNameSpaceType::InterProcessCommunication),
    ("uts", LinkNameSpaceType::HostNameAndNISDomainName),
    ("net", LinkNameSpaceType::Network),
    ("cgroup", LinkNameSpaceType::ControlGroup),
    ("mnt", LinkNameSpaceType::Mount),
];

struct Namespace {
    kind: LinkNameSpaceType,
    name: &'static str,
    fd: OwnedFd,
}

/// Opens the init's namespaces that differ from ours: a host-network or
/// host-PID container shares ours, and joining one's own namespace is
/// pointless (and for the user namespace, refused).
fn open_namespaces(init: i32) -> Result<Vec<Namespace>> {
    let mut out = Vec::new();
    for (name, kind) in NAMESPACES {
        let path = format!("/proc/{init}/ns/{name}");
        let theirs = match std::fs::File::open(&path) {
            Ok(f) => f,
            // A kernel without this namespace type.
            Err(e) if e.kind() == io::ErrorKind::NotFound && name != "mnt" && name != "pid" => {
                if Path::new(&format!("/proc/{init}")).exists() {
                    continue;
                }
                return Err(io_err(format!("opening {path}"))(e));
            }
            Err(e) => return Err(io_err(format!("opening {path}"))(e)),
        };
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}"))
            .map_err(io_err(format!("reading /proc/self/ns/{name}")))?;
        let their_meta = theirs
            .metadata()
            .map_err(io_err(format!("reading {path}")))?;
        if (their_meta.dev(), their_meta.ino()) == (ours.dev(), ours.ino()) {
            continue;
        }
        out.push(Namespace {
            kind,
            name,
            fd: theirs.into(),
        });
    }
    Ok(out)
}

fn join(ns: &Namespace) -> Result<()> {
    rustix::thread::move_into_link_name_space(ns.fd.as_fd(), Some(ns.kind)).map_err(errno_err(
        format!("joining the container's {} namespace", ns.name),
    ))
}

/// Checks what can be checked before anything is joined, so a bad spec
/// fails in the helper rather than half-way into the container; returns
/// the compiled seccomp filter, which the child inherits.
fn prepare(spec: &Spec) -> Result<Option<ScmpFilterContext>> {
    for r in &spec.process.rlimits {
        if rlimit_resource(&r.kind).is_none() {
            return Err(ExecError::Spec(format!("unknown rlimit {:?}", r.kind)));
        }
    }
    spec.linux.seccomp.as_ref().map(compile_seccomp).transpose()
}

/// The signals the helper passes on to the command.
const FORWARDED: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn signal_set(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; sigaddset only
    // writes into it, with valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Writes the PID through a temporary file so the daemon never reads a
/// partial one.
fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, pid.to_string()).map_err(io_err(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io_err(format!("writing {}", path.display())))
}

/// Runs the exec: joins the container, starts the command, records its
/// PID, relays signals to it and returns its exit status (128 + signal
/// for a killed command).
pub fn run(req: &Request) -> Result<i32> {
    // Before any namespace of the container is opened, and inherited by
    // the child until it executes the command.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(errno_err("making the helper non-dumpable"))?;
    let spec = load_spec(&req.spec)?;
    let filter = prepare(&spec)?;
    let namespaces = open_namespaces(req.init_pid)?;
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", req.init_pid))
        .map_err(io_err(format!("reading /proc/{}/cgroup", req.init_pid)))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("reading /proc/self/mountinfo"))?;
    // Read after the namespaces were opened: a match means they were the
    // container's, not those of a process that reused the PID.
    if !in_cgroups_path(&proc_cgroup, &spec.linux.cgroups_path) {
        return Err(ExecError::NotTheInit {
            pid: req.init_pid,
            cgroups_path: spec.linux.cgroups_path.clone(),
        });
    }
    let cgroups = cgroup_dirs(&proc_cgroup, &mountinfo);
    if cgroups.is_empty() {
        return Err(ExecError::Spec(format!(
            "no cgroup of process {} is mounted here",
            req.init_pid
        )));
    }
    if let Some(pid_ns) = namespaces
        .iter()
        .find(|n| n.kind == LinkNameSpaceType::ProcessID)
    {
        join(pid_ns)?;
    }
    let mut blocked = FORWARDED.to_vec();
    blocked.push(libc::SIGCHLD);
    let set = signal_set(&blocked);
    let mut old = signal_set(&[]);
    // SAFETY: both sets are initialised; blocking before the fork means a
    // signal that arrives in between stays pending for the loop below.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) } != 0 {
        return Err(io_err("blocking signals")(io::Error::last_os_error()));
    }
    // Flushed now so the child does not write our buffered output again.
    let _ = io::stdout().flush();
    // SAFETY: the helper is single-threaded (see the module doc), so the
    // child is a full copy in a consistent state and may run any code.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io_err("forking")(io::Error::last_os_error()));
    }
    if child == 0 {
        // SAFETY: restoring the mask saved above.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        let e = command(req, &spec, filter.as_ref(), &namespaces, &cgroups);
        let _ = writeln!(io::stderr(), "gantry-exec: {e}");
        // SAFETY: ends the child without running the parent's exit
        // handlers or flushing buffers that belong to the parent.
        unsafe { libc::_exit(255) };
    }
    drop(namespaces);
    let recorded = write_pid_file(&req.pid_file, child);
    if let Err(e) = &recorded {
        // Without the PID the daemon cannot kill the command: do not run
        // it unaccounted for.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child, libc::SIGKILL) };
        let _ = writeln!(io::stderr(), "gantry-exec: {e}");
    }
    if req.tty {
        // The daemon must see the console socket close when the child
        // dies before sending a terminal, not when the helper exits.
        if let Ok(null) = std::fs::File::open("/dev/null") {
            // SAFETY: dup2 onto standard input, which the helper no longer
            // uses.
            unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) };
        }
    }
    let status = wait_forwarding(child, &set);
    // The PID may be reused once reaped.
    let _ = std::fs::remove_file(&req.pid_file);
    recorded?;
    status
}

/// Waits for the command, passing the forwarded signals on to it.
fn wait_forwarding(child: i32, set: &libc::sigset_t) -> Result<i32> {
    loop {
        let mut status = 0;
        // SAFETY: polling our own child; status is a valid out pointer.
        let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if r == child {
            if libc::WIFEXITED(status) {
                return Ok(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return Ok(128 + libc::WTERMSIG(status));
            }
            continue;
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(io_err("waiting for the command")(e));
        }
        // SAFETY: `set` is initialised; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
        if FORWARDED.contains(&sig) {
            // SAFETY: passing a signal on to our own child.
            unsafe { libc::kill(child, sig) };
        }
    }
}

/// The child: becomes the command, or returns why it could not.
fn command(
    req: &Request,
    spec: &Spec,
    filter: Option<&ScmpFilterContext>,
    namespaces: &[Namespace],
    cgroups: &[PathBuf],
) -> ExecError {
    match enter_and_exec(req, spec, filter, namespaces, cgroups) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

fn enter_and_exec(
    req: &Request,
    spec: &Spec,
    filter: Option<&ScmpFilterContext>,
    namespaces: &[Namespace],
    cgroups: &[PathBuf],
) -> Result<Never> {
    let p = &spec.process;
    join_cgroups(cgroups)?;
    // Our /proc is still the host's: what is written there cannot be
    // redirected by the container's mounts. Both settings are the
    // thread's own and survive setns and execve.
    let apparmor_dir = Path::new("/proc/thread-self/attr/apparmor").is_dir();
    for (path, value) in lsm_exec_writes(p, apparmor_dir) {
        write_proc(&path, value.as_bytes())?;
    }
    if let Some(adj) = p.oom_score_adj {
        write_proc(
            Path::new("/proc/self/oom_score_adj"),
            adj.to_string().as_bytes(),
        )?;
    }
    for ns in namespaces
        .iter()
        .filter(|n| n.kind != LinkNameSpaceType::ProcessID)
    {
        join(ns)?;
    }
    if req.tty {
        take_terminal(req.tty_size, p.user.uid)?;
    }
    // From here on, our own descriptors (and any the daemon leaked to us)
    // go no further than execve; a failure is still reported on stderr.
    cloexec_from(3)?;
    for r in &p.rlimits {
        let Some(res) = rlimit_resource(&r.kind) else {
            return Err(ExecError::Spec(format!("unknown rlimit {:?}", r.kind)));
        };
        let limit = |v: u64| (v != u64::MAX).then_some(v);
        rustix::process::setrlimit(
            res,
            rustix::process::Rlimit {
                current: limit(r.soft),
                maximum: limit(r.hard),
            },
        )
        .map_err(errno_err(format!("setting {}", r.kind)))?;
    }
    let passwd = read_passwd();
    let env = environment(&p.env, p.user.uid, passwd.as_deref());
    let cwd = if p.cwd.is_empty() { "/" } else { &p.cwd };
    // As root first; a directory only the container's user may enter is
    // tried again once we are that user.
    let cwd_done = rustix::process::chdir(cwd).is_ok();
    let program = resolve_command(&req.args[0], &env)?;
    let umask = p.user.umask.unwrap_or(0o022);
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(umask));
    if !p.no_new_privileges {
        // Without no_new_privs, loading a filter takes CAP_SYS_ADMIN, which
        // the capabilities below may drop.
        if let Some(f) = filter {
            f.load().map_err(seccomp_err("loading the filter"))?;
        }
    }
    if let Some(c) = &p.capabilities {
        let keep = cap_set(&c.bounding);
        let last = last_cap();
        for cap in caps::all() {
            if cap.index() <= last && !keep.contains(&cap) {
                caps::drop(None, caps::CapSet::Bounding, cap)
                    .map_err(caps_err("dropping from the bounding set"))?;
            }
        }
    }
    // Permitted capabilities survive the switch to a non-root user only
    // with keep-caps; they are trimmed to the spec's right after.
    rustix::thread::set_keep_capabilities(true).map_err(errno_err("keeping capabilities"))?;
    let gids: Vec<rustix::process::Gid> = p
        .user
        .additional_gids
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    rustix::thread::set_thread_groups(&gids).map_err(errno_err("setting groups"))?;
    let gid = rustix::process::Gid::from_raw(p.user.gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid)
        .map_err(errno_err(format!("setting gid {}", p.user.gid)))?;
    let uid = rustix::process::Uid::from_raw(p.user.uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid)
        .map_err(errno_err(format!("setting uid {}", p.user.uid)))?;
    rustix::thread::set_keep_capabilities(false).map_err(errno_err("keeping capabilities"))?;
    if !cwd_done {
        rustix::process::chdir(cwd).map_err(errno_err(format!("entering {cwd}")))?;
    }
    if let Some(c) = &p.capabilities {
        // Each capset must leave effective within permitted, and a new
        // inheritable set within the old permitted one: shrink permitted
        // last.
        caps::set(None, caps::CapSet::Effective, &cap_set(&c.effective))
            .map_err(caps_err("setting the effective set"))?;
        caps::set(None, caps::CapSet::Inheritable, &cap_set(&c.inheritable))
            .map_err(caps_err("setting the inheritable set"))?;
        caps::set(None, caps::CapSet::Permitted, &cap_set(&c.permitted))
            .map_err(caps_err("setting the permitted set"))?;
        caps::set(None, caps::CapSet::Ambient, &cap_set(&c.ambient))
            .map_err(caps_err("setting the ambient set"))?;
    }
    if p.no_new_privileges {
        rustix::thread::set_no_new_privs(true).map_err(errno_err("setting no_new_privs"))?;
        if let Some(f) = filter {
            f.load().map_err(seccomp_err("loading the filter"))?;
        }
    }
    exec(&program, &req.args, &env)
}

/// Writes `value` to a /proc file after checking, on the open descriptor,
/// that it is on a real procfs: a write meant for /proc must not land on
/// whatever was mounted over it (runc's CVE-2019-16884).
fn write_proc(path: &Path, value: &[u8]) -> Result<()> {
    use rustix::fs::{Mode, OFlags};
    let what = || format!("writing {}", path.display());
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(errno_err(what()))?;
    let fs = rustix::fs::fstatfs(&fd).map_err(errno_err(what()))?;
    if fs.f_type != rustix::fs::PROC_SUPER_MAGIC {
        return Err(ExecError::Io {
            what: what(),
            source: io::Error::other("not on procfs"),
        });
    }
    let n = rustix::io::write(&fd, value).map_err(errno_err(what()))?;
    if n != value.len() {
        return Err(ExecError::Io {
            what: what(),
            source: io::Error::from(io::ErrorKind::WriteZero),
        });
    }
    Ok(())
}

/// The character device of `/dev/ptmx` (and of a devpts `ptmx` node).
const PTMX_MAJOR: u32 = 5;
const PTMX_MINOR: u32 = 2;

/// Opens a pseudo-terminal in the container's devpts (we are in its mount
/// namespace), sends its master on standard input (the daemon's console
/// socket) and makes the follower our controlling terminal in a new
/// session, owned by the command's user, and our standard streams.
fn take_terminal(size: Option<(u16, u16)>, uid: u32) -> Result<()> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::OpenptFlags;
    let fail = |what: &'static str| errno_err(format!("{what} in the container"));
    // The container owns its /dev: whatever `/dev/ptmx` leads to must be
    // a multiplexer, proved by its device number and by the kernel
    // handing out a follower for it.
    let master = rustix::fs::open(
        "/dev/ptmx",
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(fail("opening /dev/ptmx"))?;
    let st = rustix::fs::fstat(&master).map_err(fail("inspecting /dev/ptmx"))?;
    let rdev = st.st_rdev;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::CharacterDevice
        || rustix::fs::major(rdev) != PTMX_MAJOR
        || rustix::fs::minor(rdev) != PTMX_MINOR
    {
        return Err(ExecError::Io {
            what: "opening /dev/ptmx in the container".into(),
            source: io::Error::other("it is not the pseudo-terminal multiplexer"),
        });
    }
    rustix::pty::unlockpt(&master).map_err(fail("unlocking the pseudo-terminal"))?;
    // The follower of this very master, not a path the container could
    // swap in the meantime.
    let follower = rustix::pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .map_err(fail("opening the pseudo-terminal's follower"))?;
    rustix::fs::fchown(&follower, Some(rustix::process::Uid::from_raw(uid)), None)
        .map_err(fail("giving the terminal to the user"))?;
    if let Some((cols, rows)) = size {
        let ws = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&master, ws).map_err(fail("sizing the terminal"))?;
    }
    send_fd(rustix::stdio::stdin(), &master)
        .map_err(io_err("sending the terminal to the daemon"))?;
    drop(master);
    rustix::process::setsid().map_err(errno_err("starting a session"))?;
    rustix::process::ioctl_tiocsctty(&follower).map_err(errno_err("taking the terminal"))?;
    for target in 0..3 {
        // SAFETY: dup2 of an open descriptor onto a standard one; the
        // socket it replaces on 0 is ours to close.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&follower), target) } < 0 {
            return Err(io_err("handing the terminal to the command")(
                io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Sends one descriptor with `SCM_RIGHTS` on a connected unix socket.
pub fn send_fd(sock: impl AsFd, fd: impl AsFd) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds = [fd.as_fd()];
    if !cmsg.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor"));
    }
    rustix::net::sendmsg(
        sock,
        &[io::IoSlice::new(b"t")],
        &mut cmsg,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// Marks every descriptor from `first` on close-on-exec: the command gets
/// its standard streams and nothing else we hold.
fn cloexec_from(first: u32) -> Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on
    // descriptors; it closes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: one descriptor at a time, up to the limit on
    // their number.
    let max = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20)
        .min(1 << 20) as i32;
    for fd in first as i32..max {
        // SAFETY: F_GETFD/F_SETFD on a number that may not be open fails
        // harmlessly with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

fn cstring(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| ExecError::Spec(format!("{s:?} contains a NUL byte")))
}

fn exec(program: &Path, args: &[String], env: &[String]) -> Result<Never> {
    let prog = cstring(program.as_os_str())?;
    let argv = args
        .iter()
        .map(|a| cstring(OsStr::new(a)))
        .collect::<Result<Vec<_>>>()?;
    let envp = env
        .iter()
        .map(|e| cstring(OsStr::new(e)))
        .collect::<Result<Vec<_>>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // The command starts as a fresh process: every signal at its default
    // and none blocked. Ignored signals and the mask survive execve, and
    // what the helper inherited is not the command's business: Rust
    // ignores SIGPIPE, and a daemon started from a background shell
    // ignores SIGINT, which would leave ^C in `crictl exec -it` dead.
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring a default disposition has no memory effects;
        // the signals glibc keeps for itself refuse it with EINVAL, which
        // changes nothing.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let none = signal_set(&[]);
    // SAFETY: an initialised, empty set.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) };
    // SAFETY: every pointer is to a NUL-terminated string that outlives the
    // call, and both arrays end with a null pointer.
    unsafe { libc::execve(prog.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    let e = io::Error::last_os_error();
    Err(ExecError::Command {
        cmd: args.first().cloned().unwrap_or_default(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let args = |s: &[&str]| s.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let r = Request::parse(
            args(&[
                "--pid",
                "42",
                "--spec",
                "/b/config.json",
                "--pid-file",
                "/c/e.pid",
                "--tty",
                "--tty-size",
                "120x40",
                "--",
                "sh",
                "-c",
                "--pid",
            ])
            .into_iter(),
        )
        .unwrap();
        assert_eq!(r.init_pid, 42);
        assert!(r.tty);
        assert_eq!(r.tty_size, Some((120, 40)));
        assert_eq!(r.args, ["sh", "-c", "--pid"]);
        for bad in [
            &["--pid", "x", "--spec", "s", "--pid-file", "p", "--", "sh"][..],
            &["--pid", "1", "--spec", "s", "--pid-file", "p", "--"],
            &["--pid", "1", "--pid-file", "p", "--", "sh"],
            &["--bogus"],
            &[
                "--pid",
                "1",
                "--spec",
                "s",
                "--pid-file",
                "p",
                "--tty-size",
                "0x5",
                "--",
                "sh",
            ],
            &[
                "--pid",
                "1",
                "--spec",
                "s",
                "--pid-file",
                "p",
                "--tty-size",
                "80",
                "--",
                "sh",
            ],
        ] {
            assert!(Request::parse(args(bad).into_iter()).is_err(), "{bad:?}");
        }
    }
}
