//! `gantry-monitor`: the per-container monitor. It runs the container
//! through the OCI runtime (`run --detach`: created and started in one
//! runtime invocation, when `StartContainer` asks), owns the container's stdout and stderr and
//! writes them to the CRI log file, reaps the container's init (as child
//! subreaper) and records its exit in a file. It is not a child of the
//! daemon (it detaches at once), so the daemon can be killed, upgraded and
//! restarted without touching the container.
//!
//! It is single-threaded, uses no async runtime, and sleeps in one `poll`
//! on the container's output, a signalfd and its attach socket: no
//! periodic wake-ups. SIGUSR1 reopens the log file (`ReopenContainerLog`).
//!
//! Attach: the monitor listens on `attach.sock` next to the exit file.
//! Every connected client gets a copy of the container's output and may
//! write to its stdin (kept open here for containers configured with
//! `stdin`) and resize its terminal (containers with `tty`, whose master
//! the runtime hands over on a console socket), in the frames of
//! `gantry_monitor::wire::attach_wire`. A client that cannot
//! keep up is dropped: the container's output never waits for it.
//!
//! Protocol with the daemon: one line on stdout, `ok <monitor pid>
//! <container pid>` once the container runs, or `error <message>`.
//!
//! `gantry-monitor --pod-init <pod id>` is the other mode: the PID 1 of a
//! pod whose containers share one PID namespace. It only reaps orphans,
//! sleeping in `sigwaitinfo`; its line is `ok <its pid>`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::os::unix::net::{UnixListener, UnixStream};

use gantry_common::exit::ContainerExit;
use gantry_monitor::crilog::{CappedLog, LineSplitter};
use gantry_monitor::runtime_log::last_logged_error;
use gantry_monitor::wire::{attach_wire, recv_fd};

struct Args {
    id: String,
    bundle: PathBuf,
    runtime: PathBuf,
    runtime_root: PathBuf,
    runtime_args: Vec<String>,
    log_path: PathBuf,
    /// The trusted directory the log path lies below (the pod's log
    /// directory); below it no symlink is followed.
    log_dir: Option<PathBuf>,
    exit_file: PathBuf,
    pid_file: PathBuf,
    tty: bool,
    /// `Some(once)` when the container's stdin is kept open for attach.
    stdin: Option<bool>,
    /// The most bytes one log file may hold; 0 for no cap.
    log_max_bytes: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut flags = std::collections::HashMap::new();
    let mut runtime_args = Vec::new();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runtime-arg" => runtime_args.push(value),
            "--id" | "--bundle" | "--runtime" | "--runtime-root" | "--log-path" | "--log-dir"
            | "--exit-file" | "--pid-file" | "--tty" | "--stdin" | "--log-max-bytes" => {
                flags.insert(flag, value);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let mut need = |name: &str| {
        flags
            .remove(name)
            .ok_or_else(|| format!("{name} is required"))
    };
    Ok(Args {
        id: need("--id")?,
        bundle: need("--bundle")?.into(),
        runtime: need("--runtime")?.into(),
        runtime_root: need("--runtime-root")?.into(),
        runtime_args,
        log_path: need("--log-path")?.into(),
        exit_file: need("--exit-file")?.into(),
        pid_file: need("--pid-file")?.into(),
        log_dir: flags.remove("--log-dir").map(PathBuf::from),
        tty: flags.remove("--tty").as_deref() == Some("true"),
        stdin: match flags.remove("--stdin").as_deref() {
            Some("once") => Some(true),
            Some(_) => Some(false),
            None => None,
        },
        log_max_bytes: match flags.remove("--log-max-bytes") {
            Some(v) => v
                .parse()
                .map_err(|_| format!("--log-max-bytes {v:?} is not a byte count"))?,
            None => 0,
        },
    })
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// The log file and the bytes it already holds.
fn open_sized_log(args: &Args) -> std::io::Result<(File, u64)> {
    let f = open_log(args)?;
    let size = f.metadata()?.len();
    Ok((f, size))
}

/// Dropped log bytes reach the daemon through a file next to the exit
/// file, rewritten at most this often (and at exit).
const DROPPED_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What of the dropped-bytes count the daemon has been told.
struct DroppedReport {
    state_dir: PathBuf,
    reported: u64,
    at: std::time::Instant,
}

impl DroppedReport {
    /// Writes the count if it changed and the last write is old enough (or
    /// `now_anyway`); returns how long until it may be written, if a
    /// change is still unwritten.
    fn update(&mut self, dropped: u64, now_anyway: bool) -> Option<std::time::Duration> {
        if dropped == self.reported {
            return None;
        }
        let since = self.at.elapsed();
        if !now_anyway && since < DROPPED_REPORT_INTERVAL {
            return Some(DROPPED_REPORT_INTERVAL - since);
        }
        self.at = std::time::Instant::now();
        match gantry_monitor::crilog::write_dropped(&self.state_dir, dropped) {
            Ok(()) => {
                self.reported = dropped;
                None
            }
            // The state directory's disk may be the full one: try again
            // later.
            Err(_) => Some(DROPPED_REPORT_INTERVAL),
        }
    }
}

fn open_log(args: &Args) -> std::io::Result<File> {
    let path = &args.log_path;
    let (dir, rel) = match &args.log_dir {
        Some(d) if path.starts_with(d) => (d.as_path(), path.strip_prefix(d).unwrap_or(path)),
        _ => (
            path.parent().unwrap_or(Path::new("/")),
            Path::new(path.file_name().unwrap_or_default()),
        ),
    };
    gantry_monitor::crilog::open_log(dir, rel)
}

/// A new 0700 directory with a random name in the temp directory.
fn private_temp_dir() -> std::io::Result<PathBuf> {
    let template = std::env::temp_dir().join("gantry-mon-XXXXXX");
    let mut bytes = std::ffi::CString::new(template.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?
        .into_bytes_with_nul();
    // SAFETY: mkdtemp rewrites the XXXXXX of a NUL-terminated buffer we
    // own, and creates the directory with mode 0700.
    if unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) }.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    bytes.pop();
    Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

fn remove_console_socket(path: &Path) {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

fn set_nonblocking(fd: impl std::os::fd::AsFd) {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    if let Ok(flags) = fcntl_getfl(&fd) {
        let _ = fcntl_setfl(&fd, flags | OFlags::NONBLOCK);
    }
}

/// The container's standard streams when the runtime runs it.
struct RunIo {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    console_socket: Option<PathBuf>,
}

fn stdio(fd: Option<OwnedFd>) -> Stdio {
    fd.map(Stdio::from).unwrap_or(Stdio::null())
}

/// Creates and starts the container and returns its init's PID.
fn run(args: &Args, io: RunIo) -> Result<i32, String> {
    let log = args.bundle.join("runtime.log");
    let mut cmd = Command::new(&args.runtime);
    cmd.args(&args.runtime_args)
        .arg("--root")
        .arg(&args.runtime_root)
        .arg("--log")
        .arg(&log)
        .arg("--log-format")
        .arg("json")
        .arg("run")
        .arg("--detach")
        .arg("--bundle")
        .arg(&args.bundle)
        .arg("--pid-file")
        .arg(&args.pid_file);
    if let Some(sock) = &io.console_socket {
        cmd.arg("--console-socket").arg(sock);
    }
    // The monitor blocks SIGCHLD and SIGUSR1 for its signalfd. A blocked
    // mask survives exec, through the runtime, into the container's
    // process, which would then never see SIGUSR1 (a stop signal images
    // ask for): the runtime starts with nothing blocked. Ignored signals
    // survive exec the same way (a daemon started from a background shell
    // ignores SIGINT), so every disposition goes back to its default too.
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe calls on a local set.
    unsafe {
        cmd.pre_exec(|| {
            for sig in 1..libc::SIGRTMAX() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    // glibc's own signals refuse this with EINVAL: no change.
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd
        .arg(&args.id)
        .stdin(stdio(io.stdin))
        .stdout(stdio(io.stdout))
        .stderr(stdio(io.stderr))
        .status()
        .map_err(|e| format!("running {}: {e}", args.runtime.display()))?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let msg = last_logged_error(&text)
            .unwrap_or_else(|| format!("{} run exited with {status}", args.runtime.display()));
        return Err(msg);
    }
    std::fs::read_to_string(&args.pid_file)
        .map_err(|e| format!("reading {}: {e}", args.pid_file.display()))?
        .trim()
        .parse()
        .map_err(|e| format!("bad pid file: {e}"))
}

/// The shared PID namespace's init: unshare, fork, and as PID 1 reap
/// whatever is reparented to us until killed. A pod with a user namespace
/// of its own (`userns`, its pin) gets a PID namespace that namespace
/// owns, so that its containers' root can mount `/proc` in it.
fn pod_init(userns: Option<String>) -> ! {
    if let Some(path) = userns {
        let joined = std::fs::File::open(&path).and_then(|f| {
            // SAFETY: single-threaded, as setns(CLONE_NEWUSER) requires;
            // the descriptor is open for the call.
            match unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWUSER) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
        if let Err(e) = joined {
            println!("error joining the user namespace {path}: {e}");
            std::process::exit(1);
        }
    }
    // SAFETY: single-threaded; unshare(CLONE_NEWPID) affects our children.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        println!("error unshare: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    // SAFETY: single-threaded fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        println!("error fork: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    if pid > 0 {
        println!("ok {pid}");
        let _ = std::io::stdout().flush();
        std::process::exit(0);
    }
    close_inherited(&[]);
    // SAFETY: plain syscalls on our own process; the set is ours.
    unsafe {
        libc::setsid();
        if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
            for fd in 0..3 {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigwaitinfo(&set, &mut info);
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
        }
    }
}

fn main() {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("--pod-init") {
        let rest: Vec<String> = argv.collect();
        let userns = rest
            .iter()
            .position(|a| a == "--userns")
            .and_then(|i| rest.get(i + 1).cloned());
        pod_init(userns);
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            println!("error {e}");
            std::process::exit(2);
        }
    };
    let (report_r, report_w) = match pipe() {
        Ok(p) => p,
        Err(e) => {
            println!("error pipe: {e}");
            std::process::exit(1);
        }
    };
    // SAFETY: single-threaded here; the child only continues this program.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        println!("error fork: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    if pid > 0 {
        // The first process relays the monitor's report and exits, so the
        // monitor is adopted by init and never is the daemon's child.
        drop(report_w);
        let mut line = String::new();
        let _ = File::from(report_r).read_to_string(&mut line);
        let line = if line.is_empty() {
            "error monitor died before reporting\n".to_string()
        } else {
            line
        };
        print!("{line}");
        let _ = std::io::stdout().flush();
        if let Some(child) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::waitpid(Some(child), rustix::process::WaitOptions::NOHANG);
        }
        std::process::exit(if line.starts_with("ok ") { 0 } else { 1 });
    }
    drop(report_r);
    let mut report = File::from(report_w);
    let code = match monitor(&args, &mut report) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(report, "error {e}");
            eprintln!("gantry-monitor {}: {e}", args.id);
            1
        }
    };
    std::process::exit(code);
}

/// Closes every descriptor above stderr except `keep`: whatever the
/// daemon leaked into us must not be held open for the container's life.
fn close_inherited(keep: &[RawFd]) {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing descriptors this process does not use.
            unsafe { libc::close(fd) };
        }
    }
}

fn monitor(args: &Args, report: &mut File) -> Result<(), String> {
    close_inherited(&[report.as_raw_fd()]);
    // Before the container runs: a log path that cannot be opened safely
    // fails the start with nothing to undo.
    let (file, size) =
        open_sized_log(args).map_err(|e| format!("opening {}: {e}", args.log_path.display()))?;
    let mut log = CappedLog::new(file, size, args.log_max_bytes);
    // A session of its own, so the daemon's terminal signals never reach
    // it; the subreaper of the container's orphans, so it can reap them.
    let _ = rustix::process::setsid();
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    // SIGCHLD and SIGUSR1 arrive through a signalfd, handled in the loop
    // (rustix has no signalfd).
    // SAFETY: the set is a local, initialised by sigemptyset before use;
    // blocking signals and making a signalfd affect only this process, and
    // the fd returned is new and owned by nobody else.
    let sigfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(format!("signalfd: {}", std::io::Error::last_os_error()));
        }
        OwnedFd::from_raw_fd(fd)
    };
    // The container's streams: pipes, or a terminal the runtime creates
    // and hands over on a console socket.
    let mut sources: Vec<(Option<OwnedFd>, LineSplitter, u8)> = Vec::new();
    let mut stdin_w: Option<OwnedFd> = None;
    let mut io = RunIo {
        stdin: None,
        stdout: None,
        stderr: None,
        console_socket: None,
    };
    let console = if args.tty {
        // A directory only we can enter, under a name nobody can guess:
        // whoever connects first to a console socket receives nothing, but
        // could make the runtime's hand-over fail. The path must stay short
        // (sockaddr_un), so it is not in the container's state directory.
        let dir = private_temp_dir().map_err(|e| format!("console socket directory: {e}"))?;
        let path = dir.join("console.sock");
        let l = UnixListener::bind(&path).map_err(|e| format!("console socket: {e}"))?;
        io.console_socket = Some(path.clone());
        Some((l, path))
    } else {
        let (out_r, out_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let (err_r, err_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        io.stdout = Some(out_w);
        io.stderr = Some(err_w);
        sources.push((
            Some(out_r),
            LineSplitter::new("stdout"),
            attach_wire::STDOUT,
        ));
        sources.push((
            Some(err_r),
            LineSplitter::new("stderr"),
            attach_wire::STDERR,
        ));
        if args.stdin.is_some() {
            let (in_r, in_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
            io.stdin = Some(in_r);
            stdin_w = Some(in_w);
        }
        None
    };
    let created = run(args, io);
    let cpid = match (created, console) {
        (Err(e), Some((_, path))) => {
            remove_console_socket(&path);
            return Err(e);
        }
        (Err(e), None) => return Err(e),
        (Ok(pid), None) => pid,
        (Ok(pid), Some((l, path))) => {
            remove_console_socket(&path);
            // The runtime sent the terminal before its run returned.
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            let (conn, _) = l
                .accept()
                .map_err(|e| format!("the runtime sent no terminal: {e}"))?;
            let master = recv_fd(&conn).map_err(|e| format!("receiving the terminal: {e}"))?;
            if args.stdin.is_some() {
                stdin_w = Some(master.try_clone().map_err(|e| e.to_string())?);
            }
            sources.push((
                Some(master),
                LineSplitter::new("stdout"),
                attach_wire::STDOUT,
            ));
            pid
        }
    };
    // Writes to a closed pipe or a vanished client must fail, not kill us.
    // Set only now: the runtime and the container were started with the
    // default disposition, which they inherit.
    // SAFETY: changing our own signal disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if let Some(w) = &stdin_w {
        set_nonblocking(w);
    }
    for (fd, _, _) in &sources {
        if let Some(f) = fd {
            set_nonblocking(f);
        }
    }
    let state_dir = args
        .exit_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let attach = bind_attach(&state_dir).map_err(|e| format!("attach socket: {e}"))?;

    writeln!(report, "ok {} {cpid}", std::process::id()).map_err(|e| format!("reporting: {e}"))?;
    drop(std::mem::replace(
        report,
        File::open("/dev/null").map_err(|e| e.to_string())?,
    ));
    // Nothing of ours stays on the daemon's pipes; our own complaints go
    // next to the exit file.
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        let errlog = args.exit_file.with_file_name("monitor.log");
        let err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(errlog)
            .unwrap_or(null.try_clone().map_err(|e| e.to_string())?);
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&err);
    }

    // Setting up (running the runtime above all) dirtied heap pages that
    // are free now; a monitor lives as long as its container, one per
    // container, so give them back before settling down.
    // SAFETY: malloc_trim only releases memory malloc no longer uses.
    unsafe { libc::malloc_trim(0) };
    let mut clients: Vec<Client> = Vec::new();
    let mut pending_stdin: Vec<u8> = Vec::new();
    let mut close_stdin_when_flushed = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut exit_status: Option<i32> = None;
    let mut dropped_report = DroppedReport {
        state_dir: state_dir.clone(),
        reported: 0,
        at: std::time::Instant::now()
            .checked_sub(DROPPED_REPORT_INTERVAL)
            .unwrap_or_else(std::time::Instant::now),
    };
    // No wake-ups of our own, but for a dropped-bytes count not yet told.
    let mut wake_in: Option<std::time::Duration> = None;
    while exit_status.is_none() {
        let mut pfds: Vec<libc::pollfd> = vec![pollfd(sigfd.as_raw_fd(), libc::POLLIN)];
        for (fd, _, _) in &sources {
            pfds.push(pollfd(
                fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
                libc::POLLIN,
            ));
        }
        let base = pfds.len();
        pfds.push(pollfd(attach.as_raw_fd(), libc::POLLIN));
        let stdin_fd = match &stdin_w {
            Some(w) if !pending_stdin.is_empty() => w.as_raw_fd(),
            _ => -1,
        };
        pfds.push(pollfd(stdin_fd, libc::POLLOUT));
        for c in &clients {
            pfds.push(pollfd(c.sock.as_raw_fd(), libc::POLLIN));
        }
        let timeout = wake_in.map_or(-1, |d| d.as_millis().clamp(1, 1000) as libc::c_int);
        // SAFETY: pfds is a valid array of pollfd for the duration of the
        // call, and its length is passed with it.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        for (i, (fd, splitter, kind)) in sources.iter_mut().enumerate() {
            if pfds[i + 1].revents == 0 {
                continue;
            }
            let Some(f) = fd.as_ref() else { continue };
            match rustix::io::read(f, &mut buf) {
                Ok(n) if n > 0 => {
                    let data = &buf[..n];
                    let _ = splitter.feed(&mut log, data);
                    broadcast(&mut clients, *kind, data);
                }
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                // End of stream, or the pipe is gone.
                Ok(_) | Err(_) => {
                    let _ = splitter.finish(&mut log);
                    *fd = None;
                }
            }
        }
        if pfds[base + 1].revents != 0 {
            flush_stdin(&mut stdin_w, &mut pending_stdin);
        }
        let mut gone = Vec::new();
        // Only the clients that were polled; output broadcast above may
        // already have dropped some, so match them by descriptor.
        let polled = &pfds[base + 2..];
        for (i, c) in clients.iter_mut().enumerate() {
            let fd = c.sock.as_raw_fd();
            if !polled.iter().any(|p| p.fd == fd && p.revents != 0) {
                continue;
            }
            match c.sock.read(&mut buf) {
                Ok(0) => gone.push(i),
                Ok(n) => {
                    c.inbuf.extend_from_slice(&buf[..n]);
                    for (kind, payload) in attach_wire::decode(&mut c.inbuf) {
                        match kind {
                            attach_wire::STDIN if stdin_w.is_some() => {
                                pending_stdin.extend_from_slice(&payload)
                            }
                            attach_wire::STDIN_CLOSE if args.stdin == Some(true) => {
                                close_stdin_when_flushed = true;
                            }
                            attach_wire::RESIZE if args.tty && payload.len() == 4 => {
                                if let Some((Some(master), _, _)) = sources.first() {
                                    resize(
                                        master,
                                        u16::from_be_bytes([payload[0], payload[1]]),
                                        u16::from_be_bytes([payload[2], payload[3]]),
                                    );
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => gone.push(i),
            }
        }
        for i in gone.into_iter().rev() {
            clients.remove(i);
            // With `stdin_once`, the first attach session's end closes stdin.
            if args.stdin == Some(true) {
                close_stdin_when_flushed = true;
            }
        }
        if pfds[base].revents != 0 {
            if let Ok((sock, _)) = attach.accept() {
                let _ = sock.set_nonblocking(true);
                set_send_buffer(&sock);
                clients.push(Client {
                    sock,
                    inbuf: Vec::new(),
                });
            }
        }
        if !pending_stdin.is_empty() {
            flush_stdin(&mut stdin_w, &mut pending_stdin);
        }
        if close_stdin_when_flushed && pending_stdin.is_empty() && stdin_w.is_some() {
            if args.tty {
                // A terminal has no half-close: send the EOF character.
                if let Some(w) = &stdin_w {
                    let _ = rustix::io::write(w, &[4u8]);
                }
            }
            stdin_w = None;
        }
        if pfds[0].revents != 0 {
            let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
            let whole = rustix::io::read(&sigfd, &mut info).is_ok_and(|n| n == info.len());
            // The record starts with the signal number (ssi_signo, a u32).
            let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
            if whole && signo == libc::SIGUSR1 as u32 {
                // Kubelet renamed the file and the daemon made a new
                // one: write there, under a fresh cap. One that cannot
                // be opened leaves the old file in use.
                match open_sized_log(args) {
                    Ok((f, size)) => log.reopen(f, size),
                    Err(e) => eprintln!("reopening {}: {e}", args.log_path.display()),
                }
            }
            // Reap everything that exited; signals coalesce.
            while let Ok(Some((pid, status))) =
                rustix::process::wait(rustix::process::WaitOptions::NOHANG)
            {
                if pid.as_raw_nonzero().get() == cpid {
                    exit_status = Some(status.as_raw());
                }
            }
        }
        wake_in = dropped_report.update(log.dropped(), false);
    }
    // The init is gone; whatever its descendants still write is drained
    // without waiting for them.
    for (fd, splitter, kind) in sources.iter_mut() {
        if let Some(f) = fd.take() {
            loop {
                let r = match rustix::io::read(&f, &mut buf) {
                    Ok(n) if n > 0 => n,
                    _ => break,
                };
                let data = &buf[..r as usize];
                let _ = splitter.feed(&mut log, data);
                broadcast(&mut clients, *kind, data);
            }
        }
        let _ = splitter.finish(&mut log);
    }
    let _ = std::fs::remove_file(state_dir.join("attach.sock"));
    drop(clients);
    let _ = log.get_ref().sync_all();
    // Before the exit file: once the daemon sees the exit, the count is
    // final.
    dropped_report.update(log.dropped(), true);
    ContainerExit::from_wait_status(exit_status.unwrap_or(255 << 8))
        .write_file(&args.exit_file)
        .map_err(|e| format!("writing the exit file: {e}"))
}

struct Client {
    sock: UnixStream,
    inbuf: Vec<u8>,
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Sends output to every attached client; one that would block is
/// dropped, so a stalled client never stalls the container.
fn broadcast(clients: &mut Vec<Client>, kind: u8, data: &[u8]) {
    if clients.is_empty() {
        return;
    }
    let frame = attach_wire::encode(kind, data);
    clients.retain_mut(|c| c.sock.write_all(&frame).is_ok());
}

fn flush_stdin(stdin_w: &mut Option<OwnedFd>, pending: &mut Vec<u8>) {
    let Some(w) = stdin_w.as_ref() else {
        pending.clear();
        return;
    };
    while !pending.is_empty() {
        match rustix::io::write(w, pending) {
            Ok(n) if n > 0 => {
                pending.drain(..n);
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return,
            _ => {
                // The container closed its stdin.
                *stdin_w = None;
                pending.clear();
                return;
            }
        }
    }
}

fn resize(master: &OwnedFd, width: u16, height: u16) {
    let size = rustix::termios::Winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let _ = rustix::termios::tcsetwinsize(master, size);
}

fn set_send_buffer(sock: &UnixStream) {
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(sock, 4 << 20);
}

/// Binds `attach.sock` in `dir`, through a descriptor of the directory
/// because the full path may not fit in `sun_path`.
fn bind_attach(dir: &Path) -> std::io::Result<UnixListener> {
    let d = File::open(dir)?;
    let path = format!("/proc/self/fd/{}/attach.sock", d.as_raw_fd());
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path)?;
    l.set_nonblocking(true)?;
    Ok(l)
}
