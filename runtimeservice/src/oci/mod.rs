//! OCI runtimes behind one small trait. runc, crun, youki and gVisor's
//! runsc share the runc command line, so one implementation, [`CliRuntime`],
//! drives them all; each configured handler is an instance with its own
//! binary, extra arguments and state root. The trait is what the container
//! code uses, so it can be tested with a double.
//!
//! Exec is the exception to "everything goes through the runtime": for a
//! handler with `exec: native` the exec calls start gantry-exec (see
//! `gantry_monitor::nsexec`), which joins the container directly and records the
//! command's PID in the same file `<runtime> exec --pid-file` would, so
//! killing and waiting work the same on both paths.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use tokio::process::Command;
use tracing::warn;

use crate::error::{Error, Result};

/// `<runtime> state` output.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RuntimeState {
    pub id: String,
    /// created, running, paused or stopped.
    pub status: String,
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub bundle: String,
}

/// Where the container's standard streams go when it is created.
#[derive(Debug)]
pub struct ContainerIo {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl ContainerIo {
    pub fn null() -> Self {
        ContainerIo {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        }
    }
}

#[async_trait::async_trait]
pub trait OciRuntime: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// How a container's monitor runs this runtime (`run --detach` happens
    /// in the monitor, not here).
    fn invocation(&self) -> RuntimeInvocation;
    /// Whether exec starts gantry-exec rather than the runtime's own exec:
    /// a terminal exec then gets its terminal over a console socket.
    fn native_exec(&self) -> bool;
    /// Whether every process of a container runs on the host in the
    /// container's own cgroup (its `linux.cgroupsPath`), so that killing
    /// that cgroup ends the container as `kill --all SIGKILL` would. Not so
    /// for runtimes that run containers inside a sandbox of their own.
    fn kills_by_cgroup(&self) -> bool;
    /// Creates the container from `bundle`; its init's PID goes to `pid_file`.
    async fn create(&self, id: &str, bundle: &Path, pid_file: &Path, io: ContainerIo)
        -> Result<()>;
    async fn start(&self, id: &str) -> Result<()>;
    /// Signals the container's init (or every process, with `all`).
    async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()>;
    /// Deletes the container; `force` kills it first if it still runs.
    async fn delete(&self, id: &str, force: bool) -> Result<()>;
    /// The runtime's view of the container, or `NotFound`.
    async fn state(&self, id: &str) -> Result<RuntimeState>;
    async fn pause(&self, id: &str) -> Result<()>;
    async fn resume(&self, id: &str) -> Result<()>;
    /// Applies new resources (an OCI `LinuxResources` JSON file).
    async fn update(&self, id: &str, resources_json: &Path) -> Result<()>;
    /// Runs a command in the running container and collects its output
    /// (each stream capped at `max_output` bytes). On timeout the process is
    /// killed and `Ok(None)` returned.
    async fn exec_sync(
        &self,
        target: &ExecTarget<'_>,
        cmd: &[String],
        timeout: Option<std::time::Duration>,
        pid_file: &Path,
        max_output: usize,
    ) -> Result<Option<ExecOutput>>;
    /// Kills a command started by `exec_sync` or `exec_interactive` with
    /// `pid_file`; false while the runtime has not recorded it yet.
    async fn kill_exec(&self, id: &str, pid_file: &Path) -> bool;
    /// Starts a command in the running container for an interactive
    /// session and returns the runtime's exec process, which exits with the
    /// command's status. With a `terminal` (the follower side of a pty) the
    /// command gets a terminal of its own, which the runtime relays to this
    /// one; otherwise the command's streams are the returned child's pipes
    /// (or /dev/null where not wanted).
    async fn exec_interactive(
        &self,
        target: &ExecTarget<'_>,
        cmd: &[String],
        streams: ExecStreams,
        pid_file: &Path,
        terminal: Option<ExecTerminal<'_>>,
    ) -> Result<tokio::process::Child>;
}

/// What the monitor needs to run a runtime itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInvocation {
    pub binary: PathBuf,
    /// The runtime's own state directory (`--root`).
    pub root: PathBuf,
    /// Arguments every command starts with, before `--root`.
    pub global_args: Vec<String>,
}

/// Makes the runtime of each configured handler. The daemon's is
/// [`CliRuntimes`]; tests give the services runtimes that touch nothing.
pub trait RuntimeMaker: Send + Sync + 'static {
    /// Handler `name`'s runtime and what it can do (finding out may run
    /// the runtime).
    fn make(
        &self,
        config: &crate::RuntimeConfig,
        name: &str,
        handler: &crate::RuntimeHandler,
        metrics: &crate::RuntimeMetrics,
    ) -> MadeRuntime;
}

/// A handler's runtime, as [`RuntimeMaker::make`] made it.
pub struct MadeRuntime {
    pub runtime: std::sync::Arc<dyn OciRuntime>,
    /// It honours `Mount.recursive_read_only`.
    pub recursive_read_only: bool,
    /// Pods in a user namespace of their own run on it (a trial container
    /// worked).
    pub user_namespaces: bool,
}

/// The container an exec runs in: its ID for the runtime, and for the
/// native path its init and bundle (whose `config.json` has the process
/// settings the command inherits).
#[derive(Debug, Clone, Copy)]
pub struct ExecTarget<'a> {
    pub id: &'a str,
    pub init_pid: i32,
    pub bundle: &'a Path,
}

/// How an exec gets its terminal.
#[derive(Debug)]
pub enum ExecTerminal<'a> {
    /// The runtime's exec relays the command's terminal to `follower`, the
    /// follower side of a pty of ours. It needs an OCI process file (the
    /// container's process with the command, `terminal` and the initial
    /// `consoleSize`) so the command starts at the right size.
    Relay {
        follower: &'a std::os::fd::OwnedFd,
        process_file: &'a Path,
    },
    /// gantry-exec opens the command's terminal inside the container, at
    /// `size` (columns, rows), and sends its master on `console`, our end's
    /// peer in a socket pair.
    Console {
        console: std::os::fd::OwnedFd,
        size: Option<(u16, u16)>,
    },
}

/// Which of an interactive exec's streams are wanted.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecStreams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

mod cli;
pub mod features;
pub mod spec;

pub use cli::*;
