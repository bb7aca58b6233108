//! A real OCI distribution registry (Debian's `docker-registry`) on
//! 127.0.0.1 at a free port, with its storage in a temp dir; optionally
//! behind htpasswd basic auth. Stopped (by PID) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub auth: Option<(String, String)>,
}

impl Registry {
    pub async fn start() -> Registry {
        Self::start_inner(None).await
    }

    /// A registry that wants `user`/`password` (bcrypt htpasswd via `htpasswd`).
    pub async fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::start_inner(Some((user.to_string(), password.to_string()))).await
    }

    async fn start_inner(auth: Option<(String, String)>) -> Registry {
        let dir = tempfile::tempdir().expect("temp dir for the registry");
        let port = crate::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut auth_section = String::new();
        if let Some((user, password)) = &auth {
            let htpasswd = dir.path().join("htpasswd");
            let status = Command::new("htpasswd")
                .args(["-Bbc", &htpasswd.display().to_string(), user, password])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("htpasswd (apache2-utils) must be installed");
            assert!(status.success(), "htpasswd failed");
            auth_section = format!(
                "auth:\n  htpasswd:\n    realm: gantry-e2e\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  redirect:\n    disable: true\nhttp:\n  addr: {addr}\n{auth_section}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("writing registry config");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.path().join("registry.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("starting docker-registry");
        let registry = Registry {
            child,
            addr,
            dir,
            auth,
        };
        registry.wait_up().await;
        registry
    }

    async fn wait_up(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // 200 without auth, 401 with: either way it is serving.
            if let Ok(r) = client.get(format!("http://{}/v2/", self.addr)).send().await {
                if r.status().is_success() || r.status() == reqwest::StatusCode::UNAUTHORIZED {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not come up on {}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where the registry keeps a blob's bytes, for tests that corrupt one.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
