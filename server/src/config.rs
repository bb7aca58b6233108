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
        let mut config: Config = serde_yaml::from_value(value)?;
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

    pub fn to_yaml(&self) -> anyhow::Result<String> {
        Ok(serde_yaml::to_string(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "- a list",
        ] {
            assert!(
                Config::from_yaml(Some(bad)).is_err(),
                "{bad:?} was accepted"
            );
        }
    }
}
