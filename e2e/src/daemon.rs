//! Starts the real `gantry` binary with a config of the test's making and
//! connects CRI clients to its socket. Stopped with SIGTERM (then SIGKILL)
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gantry_proto::v1::image_service_client::ImageServiceClient;
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// The gantry binary: `$GANTRY_BIN`, else the workspace's debug or release
/// build (the README's test command builds it first).
pub fn gantry_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GANTRY_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("gantry");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "no gantry binary under {}: run `cargo build --workspace --bins` first",
        target.display()
    );
}

pub struct Gantry {
    child: Option<Child>,
    /// The binary this daemon runs (the workspace build unless a test
    /// chose another, such as the packaged one).
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub metrics_addr: String,
    pub config_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Gantry {
    /// Starts gantry in a fresh temp dir; `extra_yaml` is appended to the
    /// generated config (root, state_dir, socket, metrics_address).
    pub async fn start(extra_yaml: &str) -> Gantry {
        let tmp = tempfile::tempdir().expect("temp dir for gantry");
        let dir = tmp.path().to_path_buf();
        let mut g = Self::start_in(&dir, extra_yaml).await;
        g._tmp = Some(tmp);
        g
    }

    /// Starts gantry on an existing dir (to restart on the same state).
    pub async fn start_in(dir: &Path, extra_yaml: &str) -> Gantry {
        let socket = dir.join("state/gantry.sock");
        let metrics_addr = format!("127.0.0.1:{}", crate::free_port());
        // Tests log at debug unless they choose otherwise.
        let log_level = if extra_yaml.contains("log_level:") {
            ""
        } else {
            "log_level: debug\n"
        };
        let config = format!(
            "root: {}\nstate_dir: {}\nsocket: {}\nmetrics_address: {metrics_addr}\n{log_level}cni:\n  conf_dir: {}\n{extra_yaml}",
            dir.join("root").display(),
            dir.join("state").display(),
            socket.display(),
            dir.join("cni").display(),
        );
        Self::launch(gantry_bin(), dir, &config, socket, metrics_addr).await
    }

    /// Starts `bin` on `dir` with `config` (whole: nothing is added), which
    /// must name `socket` and `metrics_addr`.
    pub async fn launch(
        bin: PathBuf,
        dir: &Path,
        config: &str,
        socket: PathBuf,
        metrics_addr: String,
    ) -> Gantry {
        let config_path = dir.join("gantry.yaml");
        std::fs::write(&config_path, config).expect("writing gantry config");
        let child = Self::spawn(&bin, dir, &config_path);
        let mut g = Gantry {
            child: Some(child),
            bin,
            dir: dir.to_path_buf(),
            socket,
            metrics_addr,
            config_path,
            _tmp: None,
        };
        g.wait_ready().await;
        g
    }

    fn spawn(bin: &Path, dir: &Path, config: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("gantry.log"))
            .expect("gantry log file");
        Command::new(bin)
            .arg("--config")
            .arg(config)
            // Monitors and pod inits inherit it, which tells a test's
            // processes apart from those of other daemons on the host.
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting gantry")
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("gantry exited early with {status}; log:\n{}", self.log());
            }
            if self.socket.exists() {
                if let Ok(mut rt) = self.try_runtime().await {
                    if rt
                        .version(gantry_proto::v1::VersionRequest::default())
                        .await
                        .is_ok()
                    {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "gantry did not come up; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gantry.log")).unwrap_or_default()
    }

    /// A tonic channel over the socket, for clients of other services.
    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        let socket = self.socket.clone();
        Endpoint::try_from("http://[::]:50051")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
    }

    async fn try_runtime(&self) -> Result<RuntimeServiceClient<Channel>, tonic::transport::Error> {
        Ok(RuntimeServiceClient::new(self.channel().await?))
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await.expect("connecting to gantry"))
            .max_decoding_message_size(16 << 20)
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.try_runtime().await.expect("connecting to gantry")
    }

    /// The Prometheus text from /metrics.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("gantry is running");
        // SAFETY: kill on the PID of a child we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("waiting for gantry") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gantry did not stop on SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a `gantry` subcommand with this daemon's config file, as an
    /// operator would (`gantry --config FILE reload`).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running gantry {args:?}: {e}"))
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts gantry again on the same directory and config.
    pub async fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "stop or kill gantry before restarting it"
        );
        self.child = Some(Self::spawn(&self.bin, &self.dir, &self.config_path));
        self.wait_ready().await;
    }

    /// Resident memory of the gantry process in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// The peak resident memory of the gantry process so far (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmHWM:")
    }

    /// Whether the gantry process is still running (not exited, not
    /// killed by the OOM killer).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

impl Drop for Gantry {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}
