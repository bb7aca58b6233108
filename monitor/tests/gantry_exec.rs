//! The gantry-exec binary on its own, with this test process standing in
//! for a container's init: it shares all our namespaces and cgroups, so
//! nothing is joined and what is tested is the process the helper builds
//! (user, groups, capabilities, rlimits, umask, oomScoreAdj, env, cwd,
//! no_new_privs, seccomp), its PID file, exit statuses and signal
//! forwarding. Needs root, like the daemon.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Helper {
    dir: tempfile::TempDir,
}

impl Helper {
    fn new(spec: serde_json::Value) -> Helper {
        assert!(
            rustix::process::geteuid().is_root(),
            "gantry-exec sets users and capabilities: run as root"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        Helper { dir }
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("exec.pid")
    }

    fn command(&self, cmd: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_gantry-exec"));
        c.arg("--pid")
            .arg(std::process::id().to_string())
            .arg("--spec")
            .arg(self.dir.path().join("config.json"))
            .arg("--pid-file")
            .arg(self.pid_file())
            .arg("--")
            .args(cmd);
        c
    }

    fn run(&self, cmd: &[&str]) -> Output {
        self.command(cmd).stdin(Stdio::null()).output().unwrap()
    }

    fn sh(&self, script: &str) -> String {
        let o = self.run(&["sh", "-c", script]);
        assert!(
            o.status.success(),
            "{script}: {:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

fn status_line(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn the_process_is_built_from_the_spec() {
    // The seccomp rule never matches anything the script does: the point is
    // that a filter is in force.
    let h = Helper::new(serde_json::json!({
        "process": {
            "cwd": "/tmp",
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "FOO=bar baz"],
            "user": {"uid": 1000, "gid": 1001, "additionalGids": [5000, 5001], "umask": 23},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}],
            "oomScoreAdj": 321,
            "noNewPrivileges": true,
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_KILL"],
                "effective": ["CAP_CHOWN"],
                "permitted": ["CAP_CHOWN"],
                "inheritable": ["CAP_CHOWN"],
                "ambient": ["CAP_CHOWN"]
            }
        },
        "linux": {"seccomp": {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                          "args": [{"index": 1, "value": 1, "op": "SCMP_CMP_EQ"}]}]
        }}
    }));
    let out = h.sh(
        "echo \"$FOO|$HOME\"; pwd; id -u; id -g; id -G; ulimit -n; ulimit -Hn; umask; \
         cat /proc/self/oom_score_adj; cat /proc/self/status",
    );
    let mut lines = out.lines();
    // No passwd entry for uid 1000 here: HOME is /, as runc makes it.
    let home = if std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(':').nth(2) == Some("1000"))
    {
        None
    } else {
        Some("bar baz|/")
    };
    let first = lines.next().unwrap();
    if let Some(want) = home {
        assert_eq!(first, want);
    } else {
        assert!(first.starts_with("bar baz|"), "{first}");
    }
    assert_eq!(lines.next(), Some("/tmp"));
    assert_eq!(lines.next(), Some("1000"));
    assert_eq!(lines.next(), Some("1001"));
    assert_eq!(lines.next(), Some("1001 5000 5001"));
    assert_eq!(lines.next(), Some("123"));
    assert_eq!(lines.next(), Some("456"));
    assert_eq!(lines.next(), Some("0027"));
    assert_eq!(lines.next(), Some("321"));
    let status: String = lines.collect::<Vec<_>>().join("\n");
    // CAP_CHOWN is bit 0, CAP_KILL bit 5; the ambient CAP_CHOWN survives
    // execve as a non-root user.
    assert_eq!(status_line(&status, "CapBnd"), "0000000000000021");
    assert_eq!(status_line(&status, "CapAmb"), "0000000000000001");
    assert_eq!(status_line(&status, "CapEff"), "0000000000000001");
    assert_eq!(status_line(&status, "NoNewPrivs"), "1");
    assert_eq!(status_line(&status, "Seccomp"), "2");
}

#[test]
fn exit_statuses_pid_file_and_signals_pass_through() {
    let h = Helper::new(serde_json::json!({
        "process": {"cwd": "/", "env": ["PATH=/usr/bin:/bin"], "user": {"uid": 0, "gid": 0}}
    }));
    assert_eq!(h.run(&["sh", "-c", "exit 3"]).status.code(), Some(3));
    // A command killed by a signal: 128 + the signal, as runc reports it.
    assert_eq!(
        h.run(&["sh", "-c", "kill -KILL $$"]).status.code(),
        Some(137)
    );
    // The PID file names the command itself while it runs, and is gone
    // once it has been reaped.
    let pid_file = h.pid_file();
    let out = h.sh(&format!("cat {}; echo \" $$\"", pid_file.display()));
    let (recorded, own) = out.split_once(' ').unwrap();
    assert_eq!(recorded.trim(), own.trim());
    assert!(!pid_file.exists());

    let o = h.run(&["no-such-command", "arg"]);
    assert_eq!(o.status.code(), Some(255));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("\"no-such-command\": executable file not found in $PATH"),
        "{err}"
    );

    // SIGTERM to the helper reaches the command.
    let mut child = h
        .command(&[
            "sh",
            "-c",
            "trap 'exit 9' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(9));

    // Bad invocations and specs fail before anything runs.
    let bad = Helper::new(serde_json::json!({
        "process": {"rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]}
    }));
    let o = bad.run(&["true"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&o.stderr).contains("RLIMIT_BOGUS"));
    // A PID whose cgroup is not the container's (a reused PID) is refused.
    let stranger = Helper::new(serde_json::json!({
        "process": {"cwd": "/", "env": ["PATH=/usr/bin:/bin"]},
        "linux": {"cgroupsPath": "/gantry/no-such-pod/no-such-container"}
    }));
    let o = stranger.run(&["true"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not the container's init"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_gantry-exec"))
        .arg("--pid")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(255));
    assert!(!Path::new(&bad.pid_file()).exists());
}

/// Reads a terminal's master until `want` shows up (or the terminal hangs
/// up), returning everything read.
fn read_until(master: &mut std::fs::File, want: &str) -> String {
    use std::io::Read;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(want) {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn a_terminal_exec_gets_its_own_terminal_and_nothing_else() {
    use std::io::Write;
    use std::os::fd::{AsRawFd, OwnedFd};
    let h = Helper::new(serde_json::json!({
        "process": {"cwd": "/", "env": ["PATH=/usr/bin:/bin"], "user": {"uid": 1000, "gid": 1001}}
    }));
    // A descriptor the helper inherits open across execve: the command
    // must not get it.
    let leak = std::fs::File::open("/dev/null").unwrap();
    rustix::io::fcntl_setfd(&leak, rustix::io::FdFlags::empty()).unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let script = "tty; stty size; stat -c 'owner %u' $(tty); ls -m /proc/$$/fd; \
                  echo ready; read x; echo got $x; sleep 100";
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry-exec"));
    child
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg("--spec")
        .arg(h.dir.path().join("config.json"))
        .arg("--pid-file")
        .arg(h.pid_file())
        .args(["--tty", "--tty-size", "91x27", "--", "sh", "-c", script])
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The helper inherits SIGINT ignored, as from a daemon started in a
    // background shell: the command must still start with the default,
    // or ^C below would do nothing.
    // SAFETY: between fork and exec, one async-signal-safe call.
    unsafe {
        use std::os::unix::process::CommandExt;
        child.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = child.spawn().unwrap();
    drop(leak);
    let master = gantry_monitor::wire::recv_fd(&ours).unwrap();
    drop(ours);
    rustix::io::ioctl_fionbio(&master, false).unwrap();
    let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let mut master = std::fs::File::from(master);
    let out = read_until(&mut master, "ready");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], name.to_str().unwrap(), "{out}");
    assert_eq!(lines[1], "27 91", "{out}");
    assert_eq!(lines[2], "owner 1000", "{out}");
    // The shell's own descriptors (a command substitution would add its
    // pipe), the leaked one not among them.
    assert_eq!(lines[3], "0, 1, 2", "{out}");

    // The helper runs from a sealed copy of itself.
    let exe = std::fs::File::open(format!("/proc/{}/exe", child.id())).unwrap();
    assert!(
        gantry_monitor::sealed_exe::is_sealed(&exe),
        "{:?}",
        std::fs::read_link(format!("/proc/{}/exe", child.id()))
    );
    assert!(std::fs::read_link(format!("/proc/{}/exe", child.id()))
        .unwrap()
        .to_string_lossy()
        .starts_with("/memfd:gantry-exec"));

    // Line editing and signals come from the terminal: the line arrives
    // once complete, and ^C interrupts the foreground `sleep`.
    master.write_all(b"hello\n").unwrap();
    let out = read_until(&mut master, "got hello");
    assert!(out.contains("got hello"), "{out}");
    // The shell forks `sleep` some time after "got" is out, longer on a
    // loaded machine: ^C is typed again until it lands, as a user would.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        master.write_all(&[0x03]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "^C never interrupted the command"
        );
    };
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(master.as_raw_fd() > 2);

    // A helper that cannot start the command closes the socket without
    // sending a terminal, and says why on stderr.
    let stranger = Helper::new(serde_json::json!({
        "process": {"cwd": "/", "env": ["PATH=/usr/bin:/bin"]},
        "linux": {"cgroupsPath": "/gantry/no-such-pod/no-such-container"}
    }));
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_gantry-exec"))
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg("--spec")
        .arg(stranger.dir.path().join("config.json"))
        .arg("--pid-file")
        .arg(stranger.pid_file())
        .args(["--tty", "--", "true"])
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(255));
    assert!(gantry_monitor::wire::recv_fd(&ours).is_err());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not the container's init"));
}
