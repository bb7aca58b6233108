//! [`CliRuntime`]: every runtime with the runc command line (runc, crun,
//! youki, runsc), and how their messages become errors.

use gantry_monitor::runtime_log::{first_paragraph, last_logged_error};

use super::*;

/// A runtime with the runc command line.
#[derive(Debug, Clone)]
pub struct CliRuntime {
    pub name: String,
    pub binary: PathBuf,
    pub args: Vec<String>,
    /// The runtime's own state directory (`--root`), one per handler.
    pub root: PathBuf,
    /// Let systemd manage cgroups (`--systemd-cgroup`, the systemd driver).
    pub systemd_cgroup: bool,
    /// The gantry-exec helper, when exec bypasses the runtime (the
    /// handler's `exec: native`).
    pub exec_helper: Option<PathBuf>,
    /// Where each command's latency and failure are counted.
    pub metrics: crate::metrics::RuntimeMetrics,
}

impl CliRuntime {
    /// gVisor's runsc runs exec'd commands in its own kernel: the PID its
    /// `exec --pid-file` records is its own exec process, which forwards
    /// signals but cannot forward SIGKILL. The command is killed by its
    /// PID inside the sandbox instead (`--internal-pid-file`, `kill --pid`).
    fn sandboxed_exec(&self) -> bool {
        self.binary.file_name().is_some_and(|n| n == "runsc")
    }

    /// Where `exec` records the sandbox-side PID, next to `pid_file`.
    fn internal_pid_file(pid_file: &Path) -> PathBuf {
        let mut p = pid_file.as_os_str().to_owned();
        p.push(".internal");
        PathBuf::from(p)
    }

    /// `exec` and its PID files, up to the container ID.
    fn exec_command(&self, pid_file: &Path) -> Command {
        let mut c = self.command();
        c.arg("exec").arg("--pid-file").arg(pid_file);
        if self.sandboxed_exec() {
            c.arg("--internal-pid-file")
                .arg(Self::internal_pid_file(pid_file));
        }
        c
    }

    /// The exec command for `target`: gantry-exec with the command, or the
    /// runtime's exec up to the container ID (the caller adds the rest).
    /// `tty` is the terminal's first size (columns, rows), if known.
    fn exec_process(
        &self,
        target: &ExecTarget<'_>,
        pid_file: &Path,
        tty: Option<Option<(u16, u16)>>,
        cmd: &[String],
    ) -> Command {
        let Some(helper) = &self.exec_helper else {
            let mut c = self.exec_command(pid_file);
            if tty.is_none() {
                c.arg(target.id).args(cmd);
            }
            return c;
        };
        // Started from the sealed copy, under its own name; a helper that
        // could not be copied here copies itself.
        let mut c = match gantry_monitor::sealed_exe::sealed_path(helper) {
            Ok(sealed) => {
                let mut c = Command::new(sealed);
                c.arg0(helper);
                c
            }
            Err(e) => {
                warn!(helper = %helper.display(), error = %e, "no sealed copy of the exec helper");
                Command::new(helper)
            }
        };
        c.arg("--pid")
            .arg(target.init_pid.to_string())
            .arg("--spec")
            .arg(target.bundle.join("config.json"))
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(size) = tty {
            c.arg("--tty");
            if let Some((w, h)) = size {
                c.arg("--tty-size").arg(format!("{w}x{h}"));
            }
        }
        c.arg("--").args(cmd);
        c.kill_on_drop(true);
        c
    }

    fn exec_binary(&self) -> &Path {
        self.exec_helper.as_deref().unwrap_or(&self.binary)
    }

    /// The arguments every command starts with, before `--root`.
    pub fn global_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.systemd_cgroup {
            args.push("--systemd-cgroup".to_string());
        }
        args.extend(self.args.iter().cloned());
        args
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(self.global_args()).arg("--root").arg(&self.root);
        c.kill_on_drop(true);
        c
    }

    /// Runs a runtime command and turns a failure into an error carrying
    /// what the runtime said.
    async fn run(&self, what: &str, id: &str, cmd: Command) -> Result<Vec<u8>> {
        let started = std::time::Instant::now();
        let result = self.run_unmeasured(what, id, cmd).await;
        // Deleting what is already gone is what delete is for.
        let ok = result.is_ok() || what == "delete" && matches!(result, Err(Error::NotFound(_)));
        self.metrics
            .observe_runtime(&self.name, what, started.elapsed(), ok);
        result
    }

    async fn run_unmeasured(&self, what: &str, id: &str, mut cmd: Command) -> Result<Vec<u8>> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd.output().await.map_err(Error::io(format!(
            "running {} {what} {id}",
            self.binary.display()
        )))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let said = first_paragraph(&String::from_utf8_lossy(&out.stderr));
        Err(classify(&self.name, what, id, &said))
    }
}

/// Maps runtime complaints onto our error kinds.
fn classify(runtime: &str, what: &str, id: &str, said: &str) -> Error {
    let lower = said.to_ascii_lowercase();
    // A runtime without the subcommand answers with its usage (runsc) or a
    // parser error (youki, crun); its text would only bury the point.
    if said.starts_with("Usage:")
        || lower.contains("unrecognized subcommand")
        || lower.contains("unknown command")
    {
        return Error::Unimplemented(format!("runtime {runtime} does not support {what}"));
    }
    if lower.contains("does not exist")
        || lower.contains("not found")
        || lower.contains("no such file") && lower.contains(id)
    {
        Error::NotFound(format!("container {id} in runtime {runtime}"))
    } else if lower.contains("not running")
        || lower.contains("container not running")
        || lower.contains("cannot signal")
        || lower.contains("already")
    {
        Error::FailedPrecondition(format!("{runtime} {what} {id}: {said}"))
    } else {
        Error::Runtime {
            runtime: runtime.to_string(),
            op: what.to_string(),
            id: id.to_string(),
            message: said.to_string(),
        }
    }
}

/// The runtimes of the daemon: each handler's binary on the runc command
/// line.
#[derive(Debug, Default, Clone, Copy)]
pub struct CliRuntimes;

impl RuntimeMaker for CliRuntimes {
    fn make(
        &self,
        config: &crate::RuntimeConfig,
        name: &str,
        h: &crate::RuntimeHandler,
        metrics: &crate::RuntimeMetrics,
    ) -> MadeRuntime {
        let runtime = CliRuntime {
            name: name.to_string(),
            // Looked up in PATH once, not at every runtime call; a missing
            // binary stays as named, to fail when used.
            binary: h.resolve().unwrap_or_else(|| h.path.clone()),
            args: h.args.clone(),
            root: config.state_dir.join("runtime").join(name),
            systemd_cgroup: config.cgroup_driver == crate::CgroupDriver::Systemd,
            exec_helper: (h.exec_mode() == crate::ExecMode::Native
                && !config.exec_helper_path.as_os_str().is_empty())
            .then(|| config.exec_helper_path.clone()),
            metrics: metrics.clone(),
        };
        let recursive_read_only =
            crate::oci::features::recursive_read_only(name, &runtime.binary, &runtime.args);
        let user_namespaces =
            crate::userns::handler_supports(config, name, &runtime.binary, &runtime.args);
        MadeRuntime {
            runtime: std::sync::Arc::new(runtime),
            recursive_read_only,
            user_namespaces,
        }
    }
}

#[async_trait::async_trait]
impl OciRuntime for CliRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn invocation(&self) -> RuntimeInvocation {
        RuntimeInvocation {
            binary: self.binary.clone(),
            root: self.root.clone(),
            global_args: self.global_args(),
        }
    }

    fn native_exec(&self) -> bool {
        self.exec_helper.is_some()
    }

    fn kills_by_cgroup(&self) -> bool {
        // Known by name, not assumed: runsc, Kata and anything unknown
        // may keep a container's processes elsewhere (runsc's run in its
        // sandbox, whose cgroup is the first container's).
        self.binary
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| matches!(n, "runc" | "crun" | "youki"))
    }

    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        io: ContainerIo,
    ) -> Result<()> {
        std::fs::create_dir_all(&self.root)
            .map_err(Error::io(format!("creating {}", self.root.display())))?;
        // The runtime's own messages go to a log file: its stderr is the
        // container's.
        let log = bundle.join("runtime.log");
        let mut cmd = self.command();
        cmd.arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id)
            .stdin(io.stdin)
            .stdout(io.stdout)
            .stderr(io.stderr);
        let started = std::time::Instant::now();
        let status = cmd.status().await;
        let ok = matches!(&status, Ok(s) if s.success());
        self.metrics
            .observe_runtime(&self.name, "create", started.elapsed(), ok);
        let status = status.map_err(Error::io(format!(
            "running {} create {id}",
            self.binary.display()
        )))?;
        if status.success() {
            return Ok(());
        }
        Err(classify(&self.name, "create", id, &last_error(&log)))
    }

    async fn start(&self, id: &str) -> Result<()> {
        let mut c = self.command();
        c.arg("start").arg(id);
        self.run("start", id, c).await.map(drop)
    }

    async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let mut c = self.command();
        c.arg("kill");
        if all {
            c.arg("--all");
        }
        c.arg(id).arg(signal.to_string());
        self.run("kill", id, c).await.map(drop)
    }

    async fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut c = self.command();
        c.arg("delete");
        if force {
            c.arg("--force");
        }
        c.arg(id);
        match self.run("delete", id, c).await {
            Err(Error::NotFound(_)) => Ok(()),
            other => other.map(drop),
        }
    }

    async fn state(&self, id: &str) -> Result<RuntimeState> {
        let mut c = self.command();
        c.arg("state").arg(id);
        let out = self.run("state", id, c).await?;
        serde_json::from_slice(&out).map_err(Error::corrupt(format!(
            "{} state {id}: unreadable output",
            self.name
        )))
    }

    async fn pause(&self, id: &str) -> Result<()> {
        let mut c = self.command();
        c.arg("pause").arg(id);
        self.run("pause", id, c).await.map(drop)
    }

    async fn resume(&self, id: &str) -> Result<()> {
        let mut c = self.command();
        c.arg("resume").arg(id);
        self.run("resume", id, c).await.map(drop)
    }

    async fn update(&self, id: &str, resources_json: &Path) -> Result<()> {
        let mut c = self.command();
        c.arg("update")
            .arg("--resources")
            .arg(resources_json)
            .arg(id);
        self.run("update", id, c).await.map(drop)
    }

    async fn exec_sync(
        &self,
        target: &ExecTarget<'_>,
        cmd: &[String],
        timeout: Option<std::time::Duration>,
        pid_file: &Path,
        max_output: usize,
    ) -> Result<Option<ExecOutput>> {
        let id = target.id;
        let mut c = self.exec_process(target, pid_file, None, cmd);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(Error::io(format!(
            "running {} exec {id}",
            self.exec_binary().display()
        )))?;
        let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(Error::Internal("exec pipes missing".into()));
        };
        let work = async {
            tokio::join!(
                capped(&mut out, max_output),
                capped(&mut err, max_output),
                child.wait()
            )
        };
        let result = match timeout {
            Some(t) => tokio::time::timeout(t, work).await.ok(),
            None => Some(work.await),
        };
        match result {
            Some((stdout, stderr, status)) => {
                let status = status.map_err(Error::io("waiting for exec"))?;
                remove_pid_files(pid_file);
                Ok(Some(ExecOutput {
                    stdout,
                    stderr,
                    exit_code: status.code().unwrap_or(255),
                }))
            }
            None => {
                // The exec'd process belongs to the container, not to us:
                // kill it by the PID the runtime records. Under load the
                // runtime may not have written it yet, so wait a little.
                for _ in 0..100 {
                    if self.kill_exec(id, pid_file).await {
                        break;
                    }
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                // The runtime's exec waits for (and reaps) the killed process;
                // killing the runtime first would leave a zombie for the
                // container's init, which may never reap it.
                if tokio::time::timeout(std::time::Duration::from_secs(5), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
                remove_pid_files(pid_file);
                Ok(None)
            }
        }
    }

    async fn kill_exec(&self, id: &str, pid_file: &Path) -> bool {
        let read_pid = |p: &Path| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                .filter(|p| *p > 0)
        };
        if self.sandboxed_exec() {
            let Some(pid) = read_pid(&Self::internal_pid_file(pid_file)) else {
                return false;
            };
            let mut c = self.command();
            c.arg("kill")
                .arg("--pid")
                .arg(pid.to_string())
                .arg(id)
                .arg(libc::SIGKILL.to_string());
            if let Err(e) = self.run("kill", id, c).await {
                warn!(container = %id, pid, error = %e, "killing an exec'd command");
            }
            return true;
        }
        let Some(pid) = read_pid(pid_file) else {
            return false;
        };
        // SAFETY: signalling the PID the runtime reported for this exec.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        true
    }

    async fn exec_interactive(
        &self,
        target: &ExecTarget<'_>,
        cmd: &[String],
        streams: ExecStreams,
        pid_file: &Path,
        terminal: Option<ExecTerminal<'_>>,
    ) -> Result<tokio::process::Child> {
        let id = target.id;
        // runsc's exec has no --tty and relays no terminal of its own: a
        // terminal comes only over --console-socket, which it honours only
        // with --detach; the runsc this was tried with (release 20221219)
        // re-executes itself for --detach and garbles the arguments on the
        // way (the container ID is lost, its flags end up as the command's).
        if terminal.is_some() && self.sandboxed_exec() {
            return Err(Error::Unimplemented(format!(
                "runtime {}: exec with a terminal is not supported (runsc's exec hands over a terminal only with --detach, which it does not run correctly)",
                self.name
            )));
        }
        let pipe = |wanted: bool| {
            if wanted {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        let size = match &terminal {
            None => None,
            Some(ExecTerminal::Relay { .. }) => Some(None),
            Some(ExecTerminal::Console { size, .. }) => Some(*size),
        };
        let mut c = self.exec_process(target, pid_file, size, cmd);
        match terminal {
            Some(ExecTerminal::Relay {
                follower,
                process_file,
            }) => {
                if self.native_exec() {
                    return Err(Error::Internal(
                        "gantry-exec opens its terminal in the container".into(),
                    ));
                }
                let dup = || {
                    follower
                        .try_clone()
                        .map(Stdio::from)
                        .map_err(Error::io("duplicating the terminal"))
                };
                c.stdin(dup()?).stdout(dup()?).stderr(dup()?);
                // Without --detach the runtime cannot hand the container's
                // terminal over a console socket; it relays it to its own
                // terminal instead, and exits with the command's status.
                c.arg("--tty").arg("--process").arg(process_file).arg(id);
            }
            Some(ExecTerminal::Console { console, .. }) => {
                if !self.native_exec() {
                    return Err(Error::Internal(
                        "only gantry-exec sends a terminal on a socket".into(),
                    ));
                }
                // What the helper says before the terminal exists (it
                // could not join the container) is the session's error.
                c.stdin(Stdio::from(console))
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
            }
            None => {
                c.stdin(pipe(streams.stdin))
                    .stdout(pipe(streams.stdout))
                    .stderr(pipe(streams.stderr));
            }
        }
        // The session decides when the command dies, by its PID.
        c.kill_on_drop(false);
        c.spawn().map_err(Error::io(format!(
            "running {} exec {id}",
            self.exec_binary().display()
        )))
    }
}

/// Removes an exec's PID files (the runtime's and runsc's internal one).
pub(crate) fn remove_pid_files(pid_file: &Path) {
    let _ = std::fs::remove_file(pid_file);
    let _ = std::fs::remove_file(CliRuntime::internal_pid_file(pid_file));
}

/// Reads a stream to its end, keeping at most `max` bytes.
pub(crate) async fn read_capped(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    max: usize,
) -> Vec<u8> {
    capped(r, max).await
}

/// Reads at most `max` bytes of a stream, then drains (and drops) the rest
/// so the writer never blocks.
async fn capped(r: &mut (impl tokio::io::AsyncRead + Unpin), max: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = r.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n.min(room)]);
    }
    buf
}

/// The last error message in a runtime's JSON log, or its first line.
fn last_error(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    last_logged_error(&text)
        .or_else(|| {
            text.lines()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "no message from the runtime".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_messages_map_to_error_kinds() {
        assert!(matches!(
            classify("runc", "state", "abc", "container \"abc\" does not exist"),
            Error::NotFound(_)
        ));
        assert!(matches!(
            classify(
                "runc",
                "start",
                "abc",
                "cannot start a container that has stopped: container not running"
            ),
            Error::FailedPrecondition(_)
        ));
        assert!(matches!(
            classify(
                "runsc",
                "kill",
                "abc",
                "cannot signal container \"abc\" in state created"
            ),
            Error::FailedPrecondition(_)
        ));
        assert!(matches!(
            classify("runc", "start", "abc", "permission denied"),
            Error::Runtime { .. }
        ));
        assert!(matches!(
            classify(
                "runsc",
                "update",
                "abc",
                "Usage: runsc <flags> <subcommand> <subcommand args>\n\nSubcommands:"
            ),
            Error::Unimplemented(_)
        ));
    }

    #[test]
    fn the_json_log_yields_the_error_message() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        std::fs::write(
            &log,
            "{\"level\":\"info\",\"msg\":\"starting\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": executable file not found in $PATH\"}\n",
        )
        .unwrap();
        assert!(last_error(&log).contains("executable file not found"));
        std::fs::write(
            &log,
            "{\"level\":\"ERROR\",\"message\":\"first\"}\n{\"level\":\"ERROR\",\"message\":\"failed to create container: executable '/x' not found\\n\\nStack backtrace:\\n   0: <unknown>\"}\n",
        )
        .unwrap();
        assert_eq!(
            last_error(&log),
            "failed to create container: executable '/x' not found"
        );
        assert_eq!(
            last_error(&d.path().join("missing")),
            "no message from the runtime"
        );
    }

    #[test]
    fn only_runtimes_that_keep_containers_in_their_cgroups_are_killed_there() {
        let rt = |binary: &str| CliRuntime {
            name: "h".into(),
            binary: binary.into(),
            args: Vec::new(),
            root: "/run/x".into(),
            systemd_cgroup: false,
            exec_helper: None,
            metrics: crate::metrics::RuntimeMetrics::new(&prometheus::Registry::new()).unwrap(),
        };
        for b in ["/usr/sbin/runc", "/usr/bin/crun", "/root/.cargo/bin/youki"] {
            assert!(rt(b).kills_by_cgroup(), "{b}");
        }
        for b in [
            "/usr/bin/runsc",
            "/usr/bin/kata-runtime",
            "/opt/runc-wrapper",
        ] {
            assert!(!rt(b).kills_by_cgroup(), "{b}");
        }
    }

    /// Argument building, with /bin/echo standing in for the runtime: the
    /// "state" it prints is the command line, which must not parse.
    #[tokio::test]
    async fn commands_carry_root_and_extra_args() {
        let registry = prometheus::Registry::new();
        let rt = CliRuntime {
            name: "echo".into(),
            binary: "/bin/echo".into(),
            args: vec!["--debug".into()],
            root: "/run/x".into(),
            systemd_cgroup: false,
            exec_helper: None,
            metrics: crate::metrics::RuntimeMetrics::new(&registry).unwrap(),
        };
        let mut c = rt.command();
        c.arg("kill").arg("id1").arg("9");
        let out = rt.run("kill", "id1", c).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out).trim(),
            "--debug --root /run/x kill id1 9"
        );
        assert!(matches!(rt.state("id1").await, Err(Error::Corrupt { .. })));
        let systemd = CliRuntime {
            systemd_cgroup: true,
            ..rt.clone()
        };
        let mut c = systemd.command();
        c.arg("start").arg("id1");
        let out = systemd.run("start", "id1", c).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out).trim(),
            "--systemd-cgroup --debug --root /run/x start id1"
        );
        let failing = CliRuntime {
            binary: "/bin/false".into(),
            ..rt.clone()
        };
        assert!(failing.start("id1").await.is_err());
        // Each command is timed and its failure counted, by handler and op.
        let count = |name: &str, op: &str| {
            crate::metrics::sample(&registry, name, &[("handler", "echo"), ("op", op)])
        };
        assert_eq!(
            count("gantry_runtime_operation_seconds", "start"),
            Some(2.0)
        );
        assert_eq!(count("gantry_runtime_errors_total", "start"), Some(1.0));
        assert_eq!(count("gantry_runtime_errors_total", "kill"), Some(0.0));
        assert_eq!(count("gantry_runtime_errors_total", "state"), Some(0.0));

        // runsc: exec also records the PID inside the sandbox, and a
        // terminal is refused before anything runs.
        let runsc = CliRuntime {
            name: "runsc".into(),
            binary: "/usr/local/bin/runsc".into(),
            ..rt
        };
        let args: Vec<String> = runsc
            .exec_command(Path::new("/x/exec.pid"))
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--debug",
                "--root",
                "/run/x",
                "exec",
                "--pid-file",
                "/x/exec.pid",
                "--internal-pid-file",
                "/x/exec.pid.internal"
            ]
        );
        let (_, follower) = crate::exec::open_pty(true).unwrap();
        let target = ExecTarget {
            id: "id1",
            init_pid: 1,
            bundle: Path::new("/x/bundle"),
        };
        let e = runsc
            .exec_interactive(
                &target,
                &["sh".into()],
                ExecStreams::default(),
                Path::new("/x/exec.pid"),
                Some(ExecTerminal::Relay {
                    follower: &follower,
                    process_file: Path::new("/x/exec.json"),
                }),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unimplemented(_)), "{e}");

        // The native path: gantry-exec with the init, the bundle's spec and
        // the command, never the runtime.
        let native = CliRuntime {
            name: "runc".into(),
            binary: "/usr/bin/runc".into(),
            exec_helper: Some("/opt/gantry/gantry-exec".into()),
            ..runsc
        };
        let c = native.exec_process(
            &ExecTarget {
                init_pid: 4242,
                ..target
            },
            Path::new("/x/exec.pid"),
            Some(Some((80, 24))),
            &["sh".into(), "-c".into(), "true".into()],
        );
        assert_eq!(c.as_std().get_program(), "/opt/gantry/gantry-exec");
        let args: Vec<String> = c
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--pid",
                "4242",
                "--spec",
                "/x/bundle/config.json",
                "--pid-file",
                "/x/exec.pid",
                "--tty",
                "--tty-size",
                "80x24",
                "--",
                "sh",
                "-c",
                "true"
            ]
        );
    }
}
