//! `gantry-monitor`: the per-container monitor. It creates the container
//! through the OCI runtime, owns the container's stdout and stderr and
//! writes them to the CRI log file, reaps the container's init (as child
//! subreaper) and records its exit in a file. It is not a child of the
//! daemon (it detaches at once), so the daemon can be killed, upgraded and
//! restarted without touching the container.
//!
//! It is single-threaded, uses no async runtime, and sleeps in one `poll`
//! on the two pipes and a signalfd: no periodic wake-ups. SIGUSR1 reopens
//! the log file (`ReopenContainerLog`).
//!
//! Protocol with the daemon: one line on stdout, `ok <monitor pid>
//! <container pid>` once the container is created, or `error <message>`.
//!
//! `gantry-monitor --pod-init <pod id>` is the other mode: the PID 1 of a
//! pod whose containers share one PID namespace. It only reaps orphans,
//! sleeping in `sigwaitinfo`; its line is `ok <its pid>`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gantry_runtimeservice::crilog::LineSplitter;

struct Args {
    id: String,
    bundle: PathBuf,
    runtime: PathBuf,
    runtime_root: PathBuf,
    runtime_args: Vec<String>,
    log_path: PathBuf,
    exit_file: PathBuf,
    pid_file: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut flags = std::collections::HashMap::new();
    let mut runtime_args = Vec::new();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runtime-arg" => runtime_args.push(value),
            "--id" | "--bundle" | "--runtime" | "--runtime-root" | "--log-path" | "--exit-file"
            | "--pid-file" => {
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
    })
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn write_exit(path: &Path, status: i32) -> std::io::Result<()> {
    let (code, signal) = if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), 0)
    } else if libc::WIFSIGNALED(status) {
        (128 + libc::WTERMSIG(status), libc::WTERMSIG(status))
    } else {
        (255, 0)
    };
    let body = format!(
        "{{\"exit_code\":{code},\"signal\":{signal},\"finished_at\":{}}}\n",
        now_nanos()
    );
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(body.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// Creates the container and returns its init's PID.
fn create(args: &Args, out_w: OwnedFd, err_w: OwnedFd) -> Result<i32, String> {
    let log = args.bundle.join("runtime.log");
    let status = Command::new(&args.runtime)
        .args(&args.runtime_args)
        .arg("--root")
        .arg(&args.runtime_root)
        .arg("--log")
        .arg(&log)
        .arg("--log-format")
        .arg("json")
        .arg("create")
        .arg("--bundle")
        .arg(&args.bundle)
        .arg("--pid-file")
        .arg(&args.pid_file)
        .arg(&args.id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .status()
        .map_err(|e| format!("running {}: {e}", args.runtime.display()))?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let msg = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("level").and_then(|l| l.as_str()) == Some("error"))
            .filter_map(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
            .next_back()
            .unwrap_or_else(|| format!("{} create exited with {status}", args.runtime.display()));
        return Err(msg);
    }
    std::fs::read_to_string(&args.pid_file)
        .map_err(|e| format!("reading {}: {e}", args.pid_file.display()))?
        .trim()
        .parse()
        .map_err(|e| format!("bad pid file: {e}"))
}

/// The shared PID namespace's init: unshare, fork, and as PID 1 reap
/// whatever is reparented to us until killed.
fn pod_init() -> ! {
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
        pod_init();
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
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
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
    // SAFETY: setsid/prctl/sigprocmask/signalfd on our own process.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let (out_r, out_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
    // SIGCHLD and SIGUSR1 arrive through a signalfd, handled in the loop.
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
    let cpid = create(args, out_w, err_w)?;
    let mut log = open_log(&args.log_path)
        .map_err(|e| format!("opening {}: {e}", args.log_path.display()))?;
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
        // SAFETY: dup2 onto our standard fds.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(err.as_raw_fd(), 2);
        }
    }

    let mut streams = [
        (Some(out_r), LineSplitter::new("stdout")),
        (Some(err_r), LineSplitter::new("stderr")),
    ];
    let mut buf = vec![0u8; 64 * 1024];
    let mut exit_status: Option<i32> = None;
    while exit_status.is_none() {
        let mut pfds: Vec<libc::pollfd> = vec![libc::pollfd {
            fd: sigfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for (fd, _) in &streams {
            pfds.push(libc::pollfd {
                fd: fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: pfds is a valid array for the duration of the call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        for (i, (fd, splitter)) in streams.iter_mut().enumerate() {
            if pfds[i + 1].revents == 0 {
                continue;
            }
            let Some(f) = fd.as_ref() else { continue };
            // SAFETY: reading into our buffer from an fd we own.
            let r = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r > 0 {
                let _ = splitter.feed(&mut log, &buf[..r as usize]);
            } else if r == 0 || pfds[i + 1].revents & (libc::POLLHUP | libc::POLLERR) != 0 && r < 0
            {
                let _ = splitter.finish(&mut log);
                *fd = None;
            }
        }
        if pfds[0].revents != 0 {
            let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
            // SAFETY: reading one siginfo record.
            let r = unsafe { libc::read(sigfd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) };
            if r as usize == info.len() {
                // SAFETY: the kernel wrote a whole signalfd_siginfo.
                let si: libc::signalfd_siginfo =
                    unsafe { std::ptr::read_unaligned(info.as_ptr().cast()) };
                if si.ssi_signo == libc::SIGUSR1 as u32 {
                    if let Ok(l) = open_log(&args.log_path) {
                        log = l;
                    }
                }
            }
            // Reap everything that exited; signals coalesce.
            loop {
                let mut status = 0;
                // SAFETY: waitpid on any child of ours.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if pid == cpid {
                    exit_status = Some(status);
                }
            }
        }
    }
    // The init is gone; whatever its descendants still write is drained
    // without waiting for them.
    for (fd, splitter) in streams.iter_mut() {
        if let Some(f) = fd.take() {
            set_nonblocking(f.as_raw_fd());
            loop {
                // SAFETY: as above.
                let r = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if r <= 0 {
                    break;
                }
                let _ = splitter.feed(&mut log, &buf[..r as usize]);
            }
        }
        let _ = splitter.finish(&mut log);
    }
    let _ = log.sync_all();
    write_exit(&args.exit_file, exit_status.unwrap_or(255 << 8))
        .map_err(|e| format!("writing the exit file: {e}"))
}
