//! gantry's CNI client. No maintained Rust libcni exists, so it is written
//! here: network configuration loading (the default network is the first
//! valid `.conflist`, `.conf` or `.json` file in lexical order, as libcni
//! picks it), plugin execution with a result cache ([`exec`]), and pod
//! namespaces pinned without a process ([`netns`]).

pub mod exec;
pub mod netns;

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("no network configuration found in {0}")]
    NoConfig(PathBuf),
}

/// A loaded network configuration list (a single `.conf` becomes a list of
/// one plugin).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub plugin_types: Vec<String>,
    pub raw: serde_json::Value,
}

#[derive(Deserialize)]
struct RawPlugin {
    #[serde(rename = "type")]
    plugin_type: Option<String>,
}

#[derive(Deserialize)]
struct RawConf {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    plugins: Option<Vec<RawPlugin>>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
}

/// Parses one configuration file.
pub fn load_file(path: &Path) -> Result<NetworkConfigList, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |reason: String| Error::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let raw: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let conf: RawConf = serde_json::from_value(raw.clone()).map_err(|e| invalid(e.to_string()))?;
    let name = conf
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("missing network name".into()))?;
    let cni_version = conf.cni_version.unwrap_or_default();
    let is_list =
        path.extension().and_then(|e| e.to_str()) == Some("conflist") || conf.plugins.is_some();
    let plugin_types = if is_list {
        let plugins = conf
            .plugins
            .ok_or_else(|| invalid("a .conflist needs a plugins array".into()))?;
        if plugins.is_empty() {
            return Err(invalid("the plugins array is empty".into()));
        }
        plugins
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                p.plugin_type
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| invalid(format!("plugin {i} has no type")))
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![conf
            .plugin_type
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("missing plugin type".into()))?]
    };
    Ok(NetworkConfigList {
        path: path.to_path_buf(),
        name,
        cni_version,
        plugin_types,
        raw,
    })
}

/// The default network: the first valid file in lexical order, or the one
/// named `want`.
pub fn default_network(dir: &Path, want: Option<&str>) -> Result<NetworkConfigList, Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    let mut last_error = None;
    for f in files {
        match load_file(&f) {
            Ok(c) if want.is_none_or(|w| w == c.name) => return Ok(c),
            Ok(_) => {}
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::NoConfig(dir.to_path_buf())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_valid_file_in_lexical_order_wins() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("10-broken.conflist"), "{").unwrap();
        std::fs::write(
            d.path().join("20-net.conflist"),
            r#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("30-single.conf"),
            r#"{"cniVersion":"0.4.0","name":"single","type":"bridge"}"#,
        )
        .unwrap();
        let n = default_network(d.path(), None).unwrap();
        assert_eq!(n.name, "net");
        assert_eq!(n.plugin_types, ["bridge", "portmap"]);
        assert_eq!(
            default_network(d.path(), Some("single"))
                .unwrap()
                .plugin_types,
            ["bridge"]
        );
        assert!(default_network(d.path(), Some("nope")).is_err());
    }

    #[test]
    fn invalid_configs_say_why() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.conflist");
        std::fs::write(&p, r#"{"cniVersion":"1.0.0","name":"x","plugins":[]}"#).unwrap();
        assert!(load_file(&p).unwrap_err().to_string().contains("empty"));
        std::fs::write(
            &p,
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        assert!(load_file(&p).unwrap_err().to_string().contains("name"));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            default_network(empty.path(), None),
            Err(Error::NoConfig(_))
        ));
    }
}
