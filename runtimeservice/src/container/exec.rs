//! ExecSync, Exec, Attach and PortForward: where each one enters the
//! container (the sessions themselves are [`crate::exec`]).

use super::*;

/// A terminal exec through gantry-exec: the helper opens the terminal
/// in the container and sends its master back over a socket pair.
pub(super) async fn native_terminal(
    rt: &Arc<dyn OciRuntime>,
    target: &ExecTarget<'_>,
    cmd: &[String],
    streams: ExecStreams,
    pid_file: PathBuf,
    size: Option<(u16, u16)>,
) -> Result<(OwnedFd, ExecSession)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(Error::io("creating the console socket pair"))?;
    let child = rt
        .exec_interactive(
            target,
            cmd,
            streams,
            &pid_file,
            Some(ExecTerminal::Console {
                console: theirs.into(),
                size,
            }),
        )
        .await?;
    let mut session = ExecSession::new(child, pid_file, rt, target.id);
    let stderr = session.child.stderr.take();
    // Generous: the helper only joins the container and opens a pty,
    // but the machine may be loaded.
    match receive_terminal(ours, Duration::from_secs(60)).await {
        Ok(master) => Ok((master, session)),
        Err(e) => {
            let said = match stderr {
                Some(mut err) => {
                    let read = crate::oci::read_capped(&mut err, 4096);
                    tokio::time::timeout(Duration::from_secs(5), read)
                        .await
                        .unwrap_or_default()
                }
                None => Vec::new(),
            };
            session.kill().await;
            let said = String::from_utf8_lossy(&said);
            let said = said.trim();
            Err(Error::Runtime {
                runtime: "the exec session".into(),
                op: "exec".into(),
                id: target.id.to_string(),
                message: if said.is_empty() {
                    e.to_string()
                } else {
                    said.to_string()
                },
            })
        }
    }
}

/// A terminal exec through the runtime's exec, which relays the
/// command's terminal to a pty of ours; returns its master and the
/// runtime's exec process.
pub(super) async fn relayed_terminal(
    rt: &Arc<dyn OciRuntime>,
    target: &ExecTarget<'_>,
    cmd: &[String],
    streams: ExecStreams,
    pid_file: &Path,
    initial_size: Option<(u16, u16)>,
) -> Result<(OwnedFd, tokio::process::Child)> {
    let (master, follower) = open_pty(true)?;
    if let Some((w, h)) = initial_size {
        Pty::set_size(&master, w, h);
    }
    // The container's own process, with the command, a terminal and
    // its first size, for the runtime to size its own terminal with.
    let process_file = pid_file.with_extension("json");
    let spec: Value = std::fs::read(target.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| Error::Internal(format!("reading the spec of container {}", target.id)))?;
    let mut process = spec.get("process").cloned().unwrap_or_default();
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = Value::Bool(true);
    if let Some((w, h)) = initial_size {
        process["consoleSize"] = serde_json::json!({"height": h, "width": w});
    }
    write_atomic(&process_file, process.to_string().as_bytes())
        .map_err(Error::io("writing the exec process"))?;
    let spawned = rt
        .exec_interactive(
            target,
            cmd,
            streams,
            pid_file,
            Some(ExecTerminal::Relay {
                follower: &follower,
                process_file: &process_file,
            }),
        )
        .await;
    match spawned {
        // Only the exec process holds the follower now (ours drops
        // here), so the terminal reads EOF once it is gone.
        Ok(child) => Ok((master, child)),
        Err(e) => {
            let _ = std::fs::remove_file(&process_file);
            Err(e)
        }
    }
}

impl ContainerService {
    /// Runs a command in a running container; on timeout the process is
    /// killed and the call fails with DeadlineExceeded.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_secs: i64,
    ) -> Result<cri::ExecSyncResponse> {
        let (r, rt, pid_file) = self.exec_target(id, &cmd)?;
        let timeout = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs as u64));
        let bundle = self.cdir(&r.id).join("bundle");
        let target = ExecTarget {
            id: &r.id,
            init_pid: r.pid,
            bundle: &bundle,
        };
        // Kubelet accepts messages up to 16 MiB; keep both streams under it.
        match rt
            .exec_sync(&target, &cmd, timeout, &pid_file, 8 << 20)
            .await?
        {
            Some(out) => Ok(cri::ExecSyncResponse {
                stdout: out.stdout,
                stderr: out.stderr,
                exit_code: out.exit_code,
            }),
            None => Err(Error::DeadlineExceeded(format!(
                "command {cmd:?} in container {} timed out after {timeout_secs}s and was killed",
                r.id
            ))),
        }
    }

    /// What an exec needs: the running container, its runtime, and a fresh
    /// file for the runtime to record the exec'd PID in.
    pub(super) fn exec_target(
        &self,
        id: &str,
        cmd: &[String],
    ) -> Result<(ContainerRecord, Arc<dyn OciRuntime>, PathBuf)> {
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()));
        }
        let r = self.running(id)?;
        let rt = self.runtime(&r.handler)?;
        let pid_file = self
            .cdir(&r.id)
            .join(format!("exec-{}.pid", &new_id()?[..16]));
        Ok((r, rt, pid_file))
    }

    /// Starts a command in a running container for a streaming session.
    pub async fn exec_session(
        &self,
        id: &str,
        cmd: &[String],
        tty: bool,
        streams: ExecStreams,
        initial_size: Option<(u16, u16)>,
    ) -> Result<ExecSession> {
        let (r, rt, pid_file) = self.exec_target(id, cmd)?;
        let bundle = self.cdir(&r.id).join("bundle");
        let target = ExecTarget {
            id: &r.id,
            init_pid: r.pid,
            bundle: &bundle,
        };
        if !tty {
            let mut child = rt
                .exec_interactive(&target, cmd, streams, &pid_file, None)
                .await?;
            return Ok(ExecSession {
                stdin: child.stdin.take().map(|s| Box::new(s) as BoxWriter),
                stdout: child.stdout.take().map(|s| Box::new(s) as BoxReader),
                stderr: child.stderr.take().map(|s| Box::new(s) as BoxReader),
                resize: None,
                child,
                pid_file,
                runtime: rt.clone(),
                container_id: r.id.clone(),
            });
        }
        let (mut session, master, relay) = if rt.native_exec() {
            let (master, session) =
                native_terminal(&rt, &target, cmd, streams, pid_file, initial_size).await?;
            (session, master, 0)
        } else {
            let (master, child) =
                relayed_terminal(&rt, &target, cmd, streams, &pid_file, initial_size).await?;
            // The runtime's exec has a terminal of its own, told of size
            // changes with SIGWINCH.
            let relay = child.id().unwrap_or(0) as i32;
            (ExecSession::new(child, pid_file, &rt, &r.id), master, relay)
        };
        let pty = match Pty::new(master, relay) {
            Ok(p) => p,
            Err(e) => {
                session.kill().await;
                return Err(Error::io("setting up the terminal")(e));
            }
        };
        if streams.stdin {
            session.stdin = Some(Box::new(pty.writer()));
        }
        session.stdout = Some(Box::new(pty.reader()));
        session.resize = Some(pty);
        Ok(session)
    }

    /// Connects to a running container's monitor for an attach session;
    /// also says whether the container has a terminal and an open stdin.
    pub async fn attach(&self, id: &str) -> Result<(tokio::net::UnixStream, bool, bool)> {
        let r = self.running(id)?;
        let stream = connect_attach(&self.cdir(&r.id)).await.map_err(|e| {
            Error::FailedPrecondition(format!(
                "container {} cannot be attached to (its monitor does not answer: {e})",
                r.id
            ))
        })?;
        Ok((stream, r.config.tty, r.config.stdin))
    }

    /// The network namespace to port-forward into, for a ready pod.
    pub fn port_forward_target(&self, pod_id: &str) -> Result<Option<PathBuf>> {
        let pod = self.pods.store.find(pod_id)?;
        if pod.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        Ok(pod.netns.clone())
    }
}
