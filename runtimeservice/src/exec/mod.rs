//! Live I/O with containers and pods, for the streaming server: exec
//! sessions with piped stdio or a terminal, the wire format between the
//! daemon and a container's monitor for attach, terminals received over a
//! console socket, and TCP connections opened inside a pod's network
//! namespace for port forwarding.
//!
//! The streaming protocols themselves (SPDY, WebSocket) live in the
//! daemon; this module hands them plain async readers and writers.

use std::io;
use std::os::fd::OwnedFd;

use gantry_monitor::wire::recv_fd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Error, Result};

pub type BoxReader = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// Applies terminal size changes to a session's terminal.
pub trait Resize: Send + Sync {
    fn resize(&self, width: u16, height: u16);
}

/// A command running in a container, with whichever streams were asked for.
pub struct ExecSession {
    pub stdin: Option<BoxWriter>,
    pub stdout: Option<BoxReader>,
    pub stderr: Option<BoxReader>,
    pub resize: Option<Arc<dyn Resize>>,
    /// The runtime's `exec` process, or gantry-exec for the native path:
    /// either exits with the command's status.
    pub(crate) child: tokio::process::Child,
    pub(crate) pid_file: PathBuf,
    /// The runtime and container, to kill the command where it runs.
    pub(crate) runtime: Arc<dyn crate::oci::OciRuntime>,
    pub(crate) container_id: String,
}

impl ExecSession {
    /// A session on the exec process `child`, with no streams yet.
    pub(crate) fn new(
        child: tokio::process::Child,
        pid_file: PathBuf,
        runtime: &Arc<dyn crate::oci::OciRuntime>,
        container_id: &str,
    ) -> ExecSession {
        ExecSession {
            stdin: None,
            stdout: None,
            stderr: None,
            resize: None,
            child,
            pid_file,
            runtime: runtime.clone(),
            container_id: container_id.to_string(),
        }
    }

    /// Waits for the command to end and returns its exit code.
    pub async fn wait(&mut self) -> io::Result<i32> {
        let status = self.child.wait().await?;
        use std::os::unix::process::ExitStatusExt;
        Ok(status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(255))
    }

    /// Kills the command (not only the runtime's exec process, which would
    /// leave the command running in the container) and reaps the runtime.
    pub async fn kill(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        for _ in 0..40 {
            if self
                .runtime
                .kill_exec(&self.container_id, &self.pid_file)
                .await
            {
                break;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        // The process file of a terminal exec, read by the runtime at start.
        let _ = std::fs::remove_file(self.pid_file.with_extension("json"));
        // A session abandoned mid-way (its connection timed out, its task
        // was cancelled) must not leave the command running: it is killed
        // where it runs, on a task since that takes the runtime's word.
        if let (Ok(None), Ok(rt)) = (self.child.try_wait(), tokio::runtime::Handle::try_current()) {
            let runtime = self.runtime.clone();
            let id = self.container_id.clone();
            let pid_file = self.pid_file.clone();
            rt.spawn(async move {
                runtime.kill_exec(&id, &pid_file).await;
                crate::oci::remove_pid_files(&pid_file);
            });
            return;
        }
        crate::oci::remove_pid_files(&self.pid_file);
    }
}

/// A new pseudo-terminal: the leader side and the follower side. `raw`
/// when a runtime relays it to a terminal of its own; a follower that
/// becomes the command's terminal keeps a fresh terminal's modes (echo,
/// CRLF output), as the runtime's own terminal would have.
pub fn open_pty(raw: bool) -> Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::OpenptFlags;
    let fail = |what: &str| {
        let what = what.to_string();
        move |e: rustix::io::Errno| Error::io(what)(io::Error::from(e))
    };
    let leader =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .map_err(fail("opening a pseudo-terminal"))?;
    rustix::pty::grantpt(&leader).map_err(fail("granting the pseudo-terminal"))?;
    rustix::pty::unlockpt(&leader).map_err(fail("unlocking the pseudo-terminal"))?;
    let name =
        rustix::pty::ptsname(&leader, Vec::new()).map_err(fail("naming the pseudo-terminal"))?;
    let follower = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(fail("opening the pseudo-terminal's follower"))?;
    if !raw {
        return Ok((leader, follower));
    }
    // Raw from the start: the runtime relays bytes both ways and sets raw
    // mode itself, but input arriving before that must not be echoed or
    // translated.
    let mut t = rustix::termios::tcgetattr(&follower).map_err(fail("reading terminal modes"))?;
    t.make_raw();
    rustix::termios::tcsetattr(&follower, rustix::termios::OptionalActions::Now, &t)
        .map_err(fail("setting terminal modes"))?;
    Ok((leader, follower))
}

/// The leader side of a pseudo-terminal, shared by a reader and a writer.
/// `relay` is the process relaying it to the command's own terminal (the
/// runtime's exec), told of size changes with SIGWINCH; 0 for none, when
/// the follower is the command's terminal: the kernel then signals the
/// command's foreground process group itself on TIOCSWINSZ.
pub struct Pty {
    fd: AsyncFd<OwnedFd>,
    relay: i32,
}

impl Pty {
    pub fn new(fd: OwnedFd, relay: i32) -> io::Result<Arc<Self>> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open
        // and unchanged for its whole life.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Arc::new(Pty { fd, relay }))
    }

    pub fn reader(self: &Arc<Self>) -> PtyReader {
        PtyReader(self.clone())
    }

    pub fn writer(self: &Arc<Self>) -> PtyWriter {
        PtyWriter(self.clone())
    }
}

impl Pty {
    /// Sets the size without telling anyone: before the relay starts.
    pub fn set_size(fd: &OwnedFd, width: u16, height: u16) {
        let size = rustix::termios::Winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let _ = rustix::termios::tcsetwinsize(fd, size);
    }
}

impl Resize for Pty {
    fn resize(&self, width: u16, height: u16) {
        let size = rustix::termios::Winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let _ = rustix::termios::tcsetwinsize(self.fd.get_ref(), size);
        // Only a relay needs telling: its own terminal is another one.
        if let Some(pid) = rustix::process::Pid::from_raw(self.relay) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::WINCH);
        }
    }
}

pub struct PtyReader(Arc<Pty>);
pub struct PtyWriter(Arc<Pty>);

impl AsyncRead for PtyReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut *unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The last holder of the terminal's other side is gone.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A terminal has no half-close; an EOF is the VEOF character, which
        // the line discipline turns into a zero-length read for the
        // process (what `cat` needs to exit).
        let eof = [0x04u8];
        let _ = rustix::io::write(self.0.fd.get_ref(), &eof);
        Poll::Ready(Ok(()))
    }
}

/// Waits for the terminal gantry-exec sends on our end of its console
/// socket pair. Fails if the helper's side closes first (it could not
/// join the container; its stderr says why) or nothing comes in `limit`.
pub async fn receive_terminal(
    sock: std::os::unix::net::UnixStream,
    limit: Duration,
) -> io::Result<OwnedFd> {
    sock.set_nonblocking(true)?;
    let sock = tokio::net::UnixStream::from_std(sock)?;
    let wait = async {
        loop {
            sock.readable().await?;
            match sock.try_io(tokio::io::Interest::READABLE, || recv_fd(&sock)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    };
    tokio::time::timeout(limit, wait).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no terminal within {limit:?}"),
        )
    })?
}

/// Connects to a monitor's attach socket. The path may be too long for
/// `sun_path`, so it is reached through a descriptor of its directory.
pub async fn connect_attach(dir: &Path) -> io::Result<tokio::net::UnixStream> {
    let d = std::fs::File::open(dir)?;
    let path = format!(
        "/proc/self/fd/{}/attach.sock",
        std::os::fd::AsRawFd::as_raw_fd(&d)
    );
    let s = tokio::net::UnixStream::connect(&path).await;
    drop(d);
    s
}

/// Opens a TCP connection to `port` on 127.0.0.1 inside the network
/// namespace pinned at `netns` (or the host's, for host-network pods).
/// Connecting from a thread that joined the namespace yields a socket that
/// stays in it, so the copying happens on ordinary tokio tasks.
pub async fn connect_port(netns: Option<PathBuf>, port: u16) -> io::Result<tokio::net::TcpStream> {
    let connect = move || {
        std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], port).into(),
            Duration::from_secs(10),
        )
    };
    let stream = match netns {
        Some(ns) => tokio::task::spawn_blocking(move || {
            gantry_cni::netns::run_in_netns(&ns, connect)
                .map_err(|e| io::Error::other(e.to_string()))?
        })
        .await
        .map_err(io::Error::other)??,
        None => tokio::task::spawn_blocking(connect)
            .await
            .map_err(io::Error::other)??,
    };
    stream.set_nonblocking(true)?;
    let _ = stream.set_nodelay(true);
    tokio::net::TcpStream::from_std(stream)
}
