//! gantry's configuration: YAML, with `deploy/gantry.yaml` embedded as the
//! defaults so the daemon runs with no file at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use gantry_imageservice::ImageConfig;
use gantry_runtimeservice::RuntimeConfig;
use serde::{Deserialize, Serialize};

/// The documented default configuration, compiled in.
pub const DEFAULT_YAML: &str = include_str!("../../deploy/gantry.yaml");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub log_level: String,
    pub log_format: LogFormat,
    pub metrics_address: String,
    pub streaming: crate::streaming::StreamingConfig,
    pub image: ImageConfig,
    pub runtime: RuntimeConfig,
    pub cni: CniConfig,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event; coloured only on a terminal.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    pub network_name: String,
}

/// Overlays `over` onto `base` key by key, so a user file names only what it
/// changes.
fn merge(base: &mut serde_yaml::Value, over: serde_yaml::Value) {
    match (base, over) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

impl Config {
    /// The defaults, overlaid with the YAML text of a config file if any.
    pub fn from_yaml(user: Option<&str>) -> anyhow::Result<Config> {
        let mut value: serde_yaml::Value =
            serde_yaml::from_str(DEFAULT_YAML).context("built-in default config")?;
        if let Some(text) = user {
            let over: serde_yaml::Value = serde_yaml::from_str(text)?;
            match over {
                serde_yaml::Value::Null => {}
                serde_yaml::Value::Mapping(_) => merge(&mut value, over),
                _ => bail!("the config file must be a YAML mapping"),
            }
        }
        // The error names the key (`image.limits.max_layers: invalid
        // type ...`): a reload refused for a typo must say where it is.
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                anyhow::anyhow!("{inner}")
            } else {
                anyhow::anyhow!("{path}: {inner}")
            }
        })?;
        config.image.root = config.root.join("images");
        config.runtime.root = config.root.join("runtime");
        config.runtime.state_dir = config.state_dir.clone();
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        match path {
            None => Self::from_yaml(None),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                Self::from_yaml(Some(&text))
                    .with_context(|| format!("invalid config {}", p.display()))
            }
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !self.root.is_absolute() || !self.state_dir.is_absolute() || !self.socket.is_absolute() {
            bail!("root, state_dir and socket must be absolute paths");
        }
        // Checked rather than falling back to `info`: a reload that
        // silently changed the log level to something else would mislead.
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .with_context(|| format!("log_level {:?} is not a valid filter", self.log_level))?;
        if !self.metrics_address.is_empty() {
            self.metrics_address
                .parse::<SocketAddr>()
                .with_context(|| {
                    format!(
                        "metrics_address {:?} is not host:port",
                        self.metrics_address
                    )
                })?;
        }
        self.streaming
            .address
            .parse::<SocketAddr>()
            .with_context(|| {
                format!(
                    "streaming.address {:?} is not host:port",
                    self.streaming.address
                )
            })?;
        if self.streaming.tls_cert_file.is_empty() != self.streaming.tls_key_file.is_empty() {
            bail!("streaming.tls_cert_file and streaming.tls_key_file must be set together");
        }
        if self.streaming.token_ttl_secs == 0 {
            bail!("streaming.token_ttl_secs must be at least 1");
        }
        if self.streaming.header_read_timeout_secs == 0 {
            bail!("streaming.header_read_timeout_secs must be at least 1");
        }
        if self.streaming.max_connections == 0 {
            bail!("streaming.max_connections must be at least 1");
        }
        if self.image.max_concurrent_downloads == 0 {
            bail!("image.max_concurrent_downloads must be at least 1");
        }
        for (host, r) in &self.image.registries {
            for m in &r.mirrors {
                if !(m.starts_with("http://") || m.starts_with("https://")) {
                    bail!("mirror {m:?} of registry {host} must be an http:// or https:// URL");
                }
            }
        }
        self.runtime.validate().map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// The state directory a config file names, read leniently: `gantry
    /// reload` must find the daemon even when the file it is about to have
    /// the daemon reload is invalid (the daemon then reports why).
    pub fn state_dir_of(path: Option<&Path>) -> PathBuf {
        let named = path
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_yaml::from_str::<serde_yaml::Value>(&t).ok())
            .and_then(|v| {
                v.get("state_dir")
                    .and_then(|d| d.as_str())
                    .map(PathBuf::from)
            })
            .filter(|d| d.is_absolute());
        named.unwrap_or_else(|| {
            Self::from_yaml(None)
                .map(|c| c.state_dir)
                .unwrap_or_else(|_| PathBuf::from("/run/gantry"))
        })
    }

    /// The keys that differ between `self` (running) and `new` and that a
    /// reload cannot change: the daemon must restart for them.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (self, new);
        let mut keys = Vec::new();
        let mut check = |key, differs: bool| {
            if differs {
                keys.push(key);
            }
        };
        check("root", a.root != b.root);
        check("state_dir", a.state_dir != b.state_dir);
        check("socket", a.socket != b.socket);
        check("log_format", a.log_format != b.log_format);
        check("metrics_address", a.metrics_address != b.metrics_address);
        check(
            "streaming.address",
            a.streaming.address != b.streaming.address,
        );
        check(
            "streaming.max_connections",
            a.streaming.max_connections != b.streaming.max_connections,
        );
        check(
            "streaming.tls_cert_file",
            a.streaming.tls_cert_file != b.streaming.tls_cert_file,
        );
        check(
            "streaming.tls_key_file",
            a.streaming.tls_key_file != b.streaming.tls_key_file,
        );
        check(
            "runtime.cgroup_driver",
            a.runtime.cgroup_driver != b.runtime.cgroup_driver,
        );
        check(
            "runtime.default_runtime",
            a.runtime.default_runtime != b.runtime.default_runtime,
        );
        check(
            "runtime.monitor_path",
            a.runtime.monitor_path != b.runtime.monitor_path,
        );
        check(
            "runtime.exec_helper_path",
            a.runtime.exec_helper_path != b.runtime.exec_helper_path,
        );
        check(
            "runtime.log_max_bytes",
            a.runtime.log_max_bytes != b.runtime.log_max_bytes,
        );
        check(
            "runtime.stats_collection_period",
            a.runtime.stats_collection_period != b.runtime.stats_collection_period,
        );
        check("cni", a.cni != b.cni);
        keys
    }

    /// `self` with what a reload can change taken from `new`: the log
    /// level, the image settings (registries, mirrors, credentials, limits,
    /// timeouts), the runtime handlers and the streaming timeouts. The rest
    /// keeps its running value until a restart.
    pub fn with_reloadable_from(&self, new: &Config) -> Config {
        let mut c = self.clone();
        c.log_level = new.log_level.clone();
        c.image = ImageConfig {
            root: self.image.root.clone(),
            ..new.image.clone()
        };
        c.runtime.runtimes = new.runtime.runtimes.clone();
        c.streaming.token_ttl_secs = new.streaming.token_ttl_secs;
        c.streaming.stream_idle_timeout_secs = new.streaming.stream_idle_timeout_secs;
        c.streaming.stream_creation_timeout_secs = new.streaming.stream_creation_timeout_secs;
        c.streaming.header_read_timeout_secs = new.streaming.header_read_timeout_secs;
        c
    }

    /// The reloadable keys that differ between `self` and `new`.
    pub fn reloadable_changes(&self, new: &Config) -> Vec<String> {
        let (a, b) = (self, new);
        let mut keys = Vec::new();
        if a.log_level != b.log_level {
            keys.push("log_level".to_string());
        }
        let image_keys = [
            (
                "image.max_concurrent_downloads",
                a.image.max_concurrent_downloads != b.image.max_concurrent_downloads,
            ),
            (
                "image.connect_timeout_secs",
                a.image.connect_timeout_secs != b.image.connect_timeout_secs,
            ),
            (
                "image.read_timeout_secs",
                a.image.read_timeout_secs != b.image.read_timeout_secs,
            ),
            ("image.registries", a.image.registries != b.image.registries),
            (
                "image.foreign_layer_url_prefixes",
                a.image.foreign_layer_url_prefixes != b.image.foreign_layer_url_prefixes,
            ),
            ("image.limits", a.image.limits != b.image.limits),
            ("runtime.runtimes", a.runtime.runtimes != b.runtime.runtimes),
            (
                "streaming.token_ttl_secs",
                a.streaming.token_ttl_secs != b.streaming.token_ttl_secs,
            ),
            (
                "streaming.stream_idle_timeout_secs",
                a.streaming.stream_idle_timeout_secs != b.streaming.stream_idle_timeout_secs,
            ),
            (
                "streaming.stream_creation_timeout_secs",
                a.streaming.stream_creation_timeout_secs
                    != b.streaming.stream_creation_timeout_secs,
            ),
            (
                "streaming.header_read_timeout_secs",
                a.streaming.header_read_timeout_secs != b.streaming.header_read_timeout_secs,
            ),
        ];
        keys.extend(
            image_keys
                .into_iter()
                .filter(|(_, differs)| *differs)
                .map(|(k, _)| k.to_string()),
        );
        keys
    }

    pub fn to_yaml(&self) -> anyhow::Result<String> {
        Ok(serde_yaml::to_string(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        for (bad, key) in [
            (
                "image:\n  max_concurrent_downloads: lots",
                "image.max_concurrent_downloads",
            ),
            (
                "image:\n  limits:\n    max_layers: -1",
                "image.limits.max_layers",
            ),
            (
                "streaming:\n  token_ttl_secs: soon",
                "streaming.token_ttl_secs",
            ),
            ("log_level: \"gantry=loud\"", "log_level"),
            (
                "image:\n  max_concurrent_downloads: 0",
                "image.max_concurrent_downloads",
            ),
            ("image:\n  limits:\n    max_layerz: 1", "max_layerz"),
        ] {
            let err = format!("{:#}", Config::from_yaml(Some(bad)).unwrap_err());
            assert!(err.contains(key), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_reload_takes_only_the_reloadable_keys() {
        let running = Config::from_yaml(None).unwrap();
        let new = Config::from_yaml(Some(
            "socket: /run/other.sock\nlog_level: debug\nimage:\n  registries:\n    docker.io:\n      mirrors: [\"http://127.0.0.1:5000\"]\nruntime:\n  stats_collection_period: 5\n  runtimes:\n    runc: {path: runc}\n    youki: {path: youki}\nstreaming:\n  token_ttl_secs: 5\n  max_connections: 3\n",
        ))
        .unwrap();
        assert_eq!(
            running.restart_needed(&new),
            [
                "socket",
                "streaming.max_connections",
                "runtime.stats_collection_period"
            ]
        );
        assert_eq!(
            running.reloadable_changes(&new),
            [
                "log_level",
                "image.registries",
                "runtime.runtimes",
                "streaming.token_ttl_secs"
            ]
        );
        let effective = running.with_reloadable_from(&new);
        assert_eq!(effective.socket, running.socket);
        assert_eq!(effective.streaming.max_connections, 256);
        assert_eq!(effective.streaming.token_ttl_secs, 5);
        assert_eq!(effective.log_level, "debug");
        assert_eq!(effective.image.registries, new.image.registries);
        assert!(effective.runtime.runtimes.contains_key("youki"));
        // Nothing left to apply, but the socket still differs.
        assert!(effective.reloadable_changes(&new).is_empty());
        assert_eq!(effective.restart_needed(&new), running.restart_needed(&new));
    }

    #[test]
    fn state_dir_of_reads_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.yaml");
        std::fs::write(
            &file,
            "state_dir: /run/elsewhere\nimage:\n  max_concurrent_downloads: lots\n",
        )
        .unwrap();
        assert_eq!(
            Config::state_dir_of(Some(&file)),
            PathBuf::from("/run/elsewhere")
        );
        std::fs::write(&file, "state_dir: relative\n").unwrap();
        assert_eq!(
            Config::state_dir_of(Some(&file)),
            PathBuf::from("/run/gantry")
        );
        assert_eq!(Config::state_dir_of(None), PathBuf::from("/run/gantry"));
    }

    #[test]
    fn embedded_defaults_match_the_code_defaults() {
        let c = Config::from_yaml(None).unwrap();
        let image = ImageConfig {
            root: PathBuf::from("/var/lib/gantry/images"),
            ..Default::default()
        };
        assert_eq!(c.image, image);
        let runtime = RuntimeConfig {
            root: PathBuf::from("/var/lib/gantry/runtime"),
            state_dir: PathBuf::from("/run/gantry"),
            ..Default::default()
        };
        assert_eq!(c.runtime, runtime);
        assert_eq!(c.socket, PathBuf::from("/run/gantry/gantry.sock"));
    }

    #[test]
    fn a_user_file_changes_only_what_it_names() {
        let c = Config::from_yaml(Some(
            "root: /tmp/g\nimage:\n  registries:\n    docker.io:\n      mirrors: [\"http://127.0.0.1:5000\"]\n      skip_upstream: true\n  limits:\n    max_layers: 3\n",
        ))
        .unwrap();
        assert_eq!(c.image.root, PathBuf::from("/tmp/g/images"));
        assert_eq!(c.image.limits.max_layers, 3);
        assert_eq!(c.image.limits.max_path_depth, 256);
        assert!(c.image.registries["docker.io"].skip_upstream);
        assert_eq!(c.metrics_address, "127.0.0.1:9480");
        // What `gantry config` prints loads back to the same config.
        let again = Config::from_yaml(Some(&c.to_yaml().unwrap())).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            "nonsense_key: 1",
            "image:\n  limits:\n    max_layerz: 1",
            "root: relative/path",
            "metrics_address: nowhere",
            "streaming:\n  address: nowhere",
            "streaming:\n  tls_cert_file: /etc/cert.pem",
            "streaming:\n  max_connections: 0",
            "streaming:\n  header_read_timeout_secs: 0",
            "image:\n  registries:\n    docker.io:\n      mirrors: [\"127.0.0.1:5000\"]",
            "runtime:\n  default_runtime: crun",
            "runtime:\n  log_max_bytes: 1000",
            "log_format: xml",
            "log_level: \"gantry=loud\"",
            "- a list",
        ] {
            assert!(
                Config::from_yaml(Some(bad)).is_err(),
                "{bad:?} was accepted"
            );
        }
    }
}
