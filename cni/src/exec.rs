//! Runs CNI plugin chains (ADD, CHECK, DEL, and STATUS and GC for networks
//! of CNI 1.1 or later) the way the spec and libcni do,
//! written here because no maintained Rust CNI client exists: each plugin of
//! a network configuration list gets its own config on stdin (the list's
//! `name` and `cniVersion`, the previous plugin's result as `prevResult`,
//! and `runtimeConfig` for the capabilities it declares) and the `CNI_*`
//! variables on its own `Command`, never in our process environment. ADD
//! results are cached on disk with the configuration they were made with,
//! so DEL works after a daemon restart and after the conf file changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use crate::NetworkConfigList;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("CNI plugin {plugin} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("CNI plugin {plugin} {command} failed: {message}")]
    Plugin {
        plugin: String,
        command: String,
        message: String,
    },
    #[error("CNI plugin {plugin} {command} timed out after {secs} s")]
    Timeout {
        plugin: String,
        command: String,
        secs: u64,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} returned an unreadable result: {reason}")]
    BadResult { plugin: String, reason: String },
}

/// What identifies one attachment of a pod to a network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS` pairs (K8S_POD_NAMESPACE, K8S_POD_NAME, ...).
    pub args: Vec<(String, String)>,
    /// Capability arguments by capability name (`portMappings`, `dns`, ...).
    pub capability_args: BTreeMap<String, Value>,
}

/// An ADD result plus what is needed to undo it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedResult {
    pub network: Value,
    pub attachment: Attachment,
    pub result: Value,
}

impl CachedResult {
    /// The addresses assigned to the pod's interface, as `ip/prefix`.
    pub fn ips(&self) -> Vec<String> {
        ips_of(&self.result, &self.attachment.ifname)
    }
}

/// Addresses on the pod-side interface named `ifname` (or all, if the
/// result names no interfaces).
pub fn ips_of(result: &Value, ifname: &str) -> Vec<String> {
    let interfaces = result
        .get("interfaces")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    let pod_ifaces: Vec<usize> = interfaces
        .iter()
        .enumerate()
        .filter(|(_, i)| {
            i.get("name").and_then(|n| n.as_str()) == Some(ifname)
                && i.get("sandbox")
                    .and_then(|s| s.as_str())
                    .is_some_and(|s| !s.is_empty())
        })
        .map(|(n, _)| n)
        .collect();
    result
        .get("ips")
        .and_then(|v| v.as_array())
        .map(|ips| {
            ips.iter()
                .filter(|ip| match ip.get("interface").and_then(|i| i.as_u64()) {
                    Some(i) => pod_ifaces.is_empty() || pod_ifaces.contains(&(i as usize)),
                    None => true,
                })
                .filter_map(|ip| {
                    ip.get("address")
                        .and_then(|a| a.as_str())
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

pub struct Executor {
    pub bin_dirs: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    pub timeout: Duration,
}

impl Executor {
    fn find(&self, plugin: &str) -> Result<PathBuf, ExecError> {
        if plugin.contains('/') || plugin.is_empty() {
            return Err(ExecError::PluginNotFound {
                plugin: plugin.into(),
                dirs: "(invalid plugin name)".into(),
            });
        }
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| ExecError::PluginNotFound {
                plugin: plugin.into(),
                dirs: self
                    .bin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            })
    }

    fn cache_path(&self, network: &str, a: &Attachment) -> PathBuf {
        self.cache_dir
            .join(format!("{network}-{}-{}.json", a.container_id, a.ifname))
    }

    /// The per-plugin stdin config.
    fn plugin_config(list: &Value, plugin: &Value, prev: Option<&Value>, a: &Attachment) -> Value {
        let mut conf = plugin.clone();
        if let Some(obj) = conf.as_object_mut() {
            obj.insert(
                "name".into(),
                list.get("name").cloned().unwrap_or(Value::Null),
            );
            obj.insert(
                "cniVersion".into(),
                list.get("cniVersion").cloned().unwrap_or(Value::Null),
            );
            if let Some(p) = prev {
                obj.insert("prevResult".into(), p.clone());
            }
            let mut runtime = serde_json::Map::new();
            if let Some(caps) = plugin.get("capabilities").and_then(|c| c.as_object()) {
                for (cap, enabled) in caps {
                    if enabled.as_bool() == Some(true) {
                        if let Some(v) = a.capability_args.get(cap) {
                            runtime.insert(cap.clone(), v.clone());
                        }
                    }
                }
            }
            if !runtime.is_empty() {
                obj.insert("runtimeConfig".into(), Value::Object(runtime));
            }
        }
        conf
    }

    fn plugins(list: &Value) -> Vec<Value> {
        match list.get("plugins").and_then(|p| p.as_array()) {
            Some(p) => p.clone(),
            // A single-plugin .conf is its own plugin.
            None => vec![list.clone()],
        }
    }

    /// Runs one plugin. STATUS and GC concern no attachment, and get no
    /// container variables.
    async fn invoke(
        &self,
        command: &str,
        plugin_conf: &Value,
        a: Option<&Attachment>,
    ) -> Result<Value, ExecError> {
        let plugin = plugin_conf
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_string();
        let bin = self.find(&plugin)?;
        let cni_path = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", cni_path);
        if let Some(a) = a {
            let cni_args = a
                .args
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";");
            cmd.env("CNI_CONTAINERID", &a.container_id)
                .env("CNI_NETNS", &a.netns)
                .env("CNI_IFNAME", &a.ifname)
                .env("CNI_ARGS", cni_args);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ExecError::Io {
                what: format!("running {}", bin.display()),
                source: e,
            })?;
        let input = serde_json::to_vec(plugin_conf).unwrap_or_default();
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&input).await;
        }
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(o) => o.map_err(|e| ExecError::Io {
                what: format!("waiting for {plugin}"),
                source: e,
            })?,
            Err(_) => {
                return Err(ExecError::Timeout {
                    plugin,
                    command: command.into(),
                    secs: self.timeout.as_secs(),
                })
            }
        };
        debug!(plugin, command, status = %output.status, "CNI plugin ran");
        if !output.status.success() {
            let parsed: Option<Value> = serde_json::from_slice(&output.stdout).ok();
            let message = parsed
                .as_ref()
                .and_then(|v| {
                    let msg = v.get("msg").and_then(|m| m.as_str())?;
                    let details = v.get("details").and_then(|d| d.as_str()).unwrap_or("");
                    Some(if details.is_empty() {
                        msg.to_string()
                    } else {
                        format!("{msg}: {details}")
                    })
                })
                .unwrap_or_else(|| {
                    format!(
                        "{} {}",
                        String::from_utf8_lossy(&output.stdout).trim(),
                        String::from_utf8_lossy(&output.stderr).trim()
                    )
                });
            return Err(ExecError::Plugin {
                plugin,
                command: command.into(),
                message,
            });
        }
        if command == "ADD" {
            return serde_json::from_slice(&output.stdout).map_err(|e| ExecError::BadResult {
                plugin,
                reason: e.to_string(),
            });
        }
        Ok(Value::Null)
    }

    /// ADD through the whole chain; the final result is cached.
    pub async fn add(
        &self,
        net: &NetworkConfigList,
        a: &Attachment,
    ) -> Result<CachedResult, ExecError> {
        let list = &net.raw;
        let mut prev: Option<Value> = None;
        for plugin in Self::plugins(list) {
            let conf = Self::plugin_config(list, &plugin, prev.as_ref(), a);
            match self.invoke("ADD", &conf, Some(a)).await {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    // Undo what the earlier plugins did before reporting.
                    let partial = CachedResult {
                        network: list.clone(),
                        attachment: a.clone(),
                        result: prev.clone().unwrap_or(json!({})),
                    };
                    if let Err(del) = self.del_chain(&partial).await {
                        warn!(error = %del, "cleaning up a failed CNI ADD");
                    }
                    return Err(e);
                }
            }
        }
        let cached = CachedResult {
            network: list.clone(),
            attachment: a.clone(),
            result: prev.unwrap_or(json!({})),
        };
        let path = self.cache_path(&net.name, a);
        let bytes = serde_json::to_vec(&cached).unwrap_or_default();
        // The write fsyncs twice: off the async threads.
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || write_atomic(&target, &bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            // Without its cache entry the attachment could never be
            // deleted with its own result: undo it now (a full disk must
            // not leak an address).
            if let Err(del) = self.del_chain(&cached).await {
                warn!(error = %del, "undoing a CNI ADD whose result could not be cached");
            }
            return Err(ExecError::Io {
                what: format!("caching {}", path.display()),
                source: e,
            });
        }
        info!(network = %net.name, container = %a.container_id, ips = ?cached.ips(), "CNI ADD done");
        Ok(cached)
    }

    /// The cached ADD result of an attachment, if any.
    pub fn cached(&self, network: &str, container_id: &str, ifname: &str) -> Option<CachedResult> {
        let probe = Attachment {
            container_id: container_id.into(),
            netns: PathBuf::new(),
            ifname: ifname.into(),
            args: Vec::new(),
            capability_args: BTreeMap::new(),
        };
        let bytes = std::fs::read(self.cache_path(network, &probe)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    async fn del_chain(&self, cached: &CachedResult) -> Result<(), ExecError> {
        let list = &cached.network;
        let mut first_error = None;
        for plugin in Self::plugins(list).iter().rev() {
            let conf = Self::plugin_config(list, plugin, Some(&cached.result), &cached.attachment);
            if let Err(e) = self.invoke("DEL", &conf, Some(&cached.attachment)).await {
                warn!(error = %e, "CNI DEL step failed");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// DEL with the configuration the ADD used; the cache entry goes only
    /// once every plugin succeeded, so a failed DEL can be retried.
    pub async fn del(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), ExecError> {
        let Some(cached) = self.cached(network, container_id, ifname) else {
            return Ok(());
        };
        self.del_chain(&cached).await?;
        let _ = std::fs::remove_file(self.cache_path(network, &cached.attachment));
        info!(network, container = container_id, "CNI DEL done");
        Ok(())
    }

    /// DEL without a cached ADD result: for an ADD that was interrupted
    /// before its result could be cached. Plugins get the current config
    /// and no prevResult, which the spec allows for DEL.
    pub async fn del_uncached(
        &self,
        net: &NetworkConfigList,
        a: &Attachment,
    ) -> Result<(), ExecError> {
        if let Some(cached) = self.cached(&net.name, &a.container_id, &a.ifname) {
            self.del_chain(&cached).await?;
            let _ = std::fs::remove_file(self.cache_path(&net.name, a));
            return Ok(());
        }
        let list = net.raw.clone();
        let plugins = Self::plugins(&list);
        for plugin in plugins.iter().rev() {
            let conf = Self::plugin_config(&list, plugin, None, a);
            if let Err(e) = self.invoke("DEL", &conf, Some(a)).await {
                warn!(error = %e, "CNI DEL of an interrupted ADD failed");
                return Err(e);
            }
        }
        info!(network = %net.name, container = %a.container_id, "CNI DEL of an interrupted ADD done");
        Ok(())
    }

    /// CHECK against the cached result.
    pub async fn check(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), ExecError> {
        let Some(cached) = self.cached(network, container_id, ifname) else {
            return Ok(());
        };
        for plugin in Self::plugins(&cached.network) {
            let conf = Self::plugin_config(
                &cached.network,
                &plugin,
                Some(&cached.result),
                &cached.attachment,
            );
            self.invoke("CHECK", &conf, Some(&cached.attachment))
                .await?;
        }
        Ok(())
    }

    /// The stdin config of a STATUS or GC call: the plugin's own with the
    /// list's name and version, and no runtime config.
    fn bare_config(list: &Value, plugin: &Value) -> Value {
        let mut conf = plugin.clone();
        if let Some(obj) = conf.as_object_mut() {
            for key in ["name", "cniVersion"] {
                obj.insert(key.into(), list.get(key).cloned().unwrap_or(Value::Null));
            }
        }
        conf
    }

    /// STATUS on every plugin of the chain: whether they can take ADDs.
    /// Networks older than CNI 1.1 have no STATUS and count as ready.
    pub async fn status(&self, net: &NetworkConfigList) -> Result<(), ExecError> {
        if !has_status_and_gc(&net.cni_version) {
            return Ok(());
        }
        for plugin in Self::plugins(&net.raw) {
            let conf = Self::bare_config(&net.raw, &plugin);
            self.invoke("STATUS", &conf, None).await?;
        }
        Ok(())
    }

    /// GC on every plugin of the chain, telling them which attachments
    /// (container ID, interface) are still in use, so they free what
    /// belongs to any other; cached results of other attachments of the
    /// network are dropped once every plugin succeeded. Nothing happens
    /// for networks older than CNI 1.1. Must not run alongside an ADD on
    /// the same network: the attachment it makes is not yet valid.
    pub async fn gc(
        &self,
        net: &NetworkConfigList,
        valid: &[(String, String)],
    ) -> Result<(), ExecError> {
        if !has_status_and_gc(&net.cni_version) {
            return Ok(());
        }
        let attachments: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
            .collect();
        let mut first_error = None;
        for plugin in Self::plugins(&net.raw) {
            let mut conf = Self::bare_config(&net.raw, &plugin);
            conf["cni.dev/valid-attachments"] = json!(attachments);
            if let Err(e) = self.invoke("GC", &conf, None).await {
                warn!(network = %net.name, error = %e, "CNI GC step failed");
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let mut dropped = 0;
        for entry in std::fs::read_dir(&self.cache_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            let Some(cached) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<CachedResult>(&b).ok())
            else {
                continue;
            };
            let a = &cached.attachment;
            if cached.network.get("name").and_then(|n| n.as_str()) == Some(net.name.as_str())
                && !valid
                    .iter()
                    .any(|(id, ifname)| *id == a.container_id && *ifname == a.ifname)
                && std::fs::remove_file(&path).is_ok()
            {
                dropped += 1;
            }
        }
        info!(network = %net.name, valid = valid.len(), dropped, "CNI GC done");
        Ok(())
    }
}

/// Whether a config's `cniVersion` is 1.1.0 or later, which brought STATUS
/// and GC.
pub fn has_status_and_gc(version: &str) -> bool {
    let mut parts = version
        .trim()
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (1, 1)
}

/// The cache entry written whole or not at all, in a directory made on
/// first use (the cache is libcni's layout, readable by other CNI tools).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    gantry_common::fs::write_atomic_mode(path, bytes, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_come_from_the_sandbox_interface() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/ns"}],
            "ips": [{"address": "10.1.0.5/16", "interface": 2}, {"address": "10.1.0.1/16", "interface": 0}],
        });
        assert_eq!(ips_of(&r, "eth0"), vec!["10.1.0.5/16".to_string()]);
        assert!(ips_of(&json!({}), "eth0").is_empty());
    }

    #[test]
    fn plugin_config_carries_prev_result_and_capabilities() {
        let list = json!({"cniVersion": "1.0.0", "name": "n", "plugins": []});
        let plugin =
            json!({"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}});
        let mut caps = BTreeMap::new();
        caps.insert(
            "portMappings".to_string(),
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        caps.insert("bandwidth".to_string(), json!({"ingressRate": 1}));
        let a = Attachment {
            container_id: "c".into(),
            netns: "/x".into(),
            ifname: "eth0".into(),
            args: vec![],
            capability_args: caps,
        };
        let prev = json!({"ips": []});
        let c = Executor::plugin_config(&list, &plugin, Some(&prev), &a);
        assert_eq!(c["name"], "n");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["prevResult"], prev);
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(
            c["runtimeConfig"].get("bandwidth").is_none(),
            "only declared capabilities are passed"
        );
    }

    #[tokio::test]
    async fn plugins_run_with_env_and_failures_undo_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = dir.path().join("calls");
        // A fake plugin that records its command and env, and answers ADD.
        let script = format!(
            "#!/bin/sh\ncat > /dev/null\necho \"$0 $CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME $CNI_ARGS\" >> {log}\nif [ \"$CNI_COMMAND\" = ADD ]; then echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.9.0.2/24\"}}]}}'; fi\n",
            log = log.display()
        );
        std::fs::write(bin.join("good"), &script).unwrap();
        std::fs::write(bin.join("bad"), "#!/bin/sh\ncat >/dev/null\necho '{\"code\":7,\"msg\":\"no luck\",\"details\":\"really\"}'\nexit 1\n").unwrap();
        for f in ["good", "bad"] {
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(bin.join(f))
                .status()
                .unwrap();
        }
        let exec = Executor {
            bin_dirs: vec![bin.clone()],
            cache_dir: dir.path().join("cache"),
            timeout: Duration::from_secs(10),
        };
        let a = Attachment {
            container_id: "pod1".into(),
            netns: "/proc/self/ns/net".into(),
            ifname: "eth0".into(),
            args: vec![("K8S_POD_NAME".into(), "web".into())],
            capability_args: BTreeMap::new(),
        };
        let net = NetworkConfigList {
            path: "x".into(),
            name: "n".into(),
            cni_version: "1.0.0".into(),
            plugin_types: vec!["good".into(), "good".into()],
            raw: json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "good"}, {"type": "good"}]}),
        };
        let r = exec.add(&net, &a).await.unwrap();
        assert_eq!(r.ips(), vec!["10.9.0.2/24".to_string()]);
        assert!(exec.cached("n", "pod1", "eth0").is_some());
        exec.check("n", "pod1", "eth0").await.unwrap();
        exec.del("n", "pod1", "eth0").await.unwrap();
        assert!(exec.cached("n", "pod1", "eth0").is_none());
        exec.del("n", "pod1", "eth0").await.unwrap();
        let calls = std::fs::read_to_string(&log).unwrap();
        let commands: Vec<&str> = calls
            .lines()
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(commands, ["ADD", "ADD", "CHECK", "CHECK", "DEL", "DEL"]);
        assert!(calls.contains("pod1 eth0 K8S_POD_NAME=web"));

        // A failing second plugin: the first one's ADD is undone.
        std::fs::write(&log, "").unwrap();
        let mut broken = net.clone();
        broken.raw = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "good"}, {"type": "bad"}]});
        let e = exec.add(&broken, &a).await.unwrap_err();
        assert!(e.to_string().contains("no luck: really"), "{e}");
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            calls
                .lines()
                .map(|l| l.split_whitespace().nth(1).unwrap())
                .collect::<Vec<_>>(),
            ["ADD", "DEL"]
        );
        assert!(exec.cached("n", "pod1", "eth0").is_none());

        // A result that cannot be cached (here the cache directory is a
        // file; in life a full disk): the ADD is undone, nothing is left.
        std::fs::write(&log, "").unwrap();
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, "").unwrap();
        let uncachable = Executor {
            cache_dir: blocked.clone(),
            bin_dirs: exec.bin_dirs.clone(),
            timeout: exec.timeout,
        };
        let e = uncachable.add(&net, &a).await.unwrap_err();
        assert!(matches!(e, ExecError::Io { .. }), "{e}");
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            calls
                .lines()
                .map(|l| l.split_whitespace().nth(1).unwrap())
                .collect::<Vec<_>>(),
            ["ADD", "ADD", "DEL", "DEL"]
        );

        let missing = Executor {
            bin_dirs: vec![dir.path().join("none")],
            ..exec
        };
        assert!(matches!(
            missing.add(&net, &a).await,
            Err(ExecError::PluginNotFound { .. })
        ));
    }

    #[test]
    fn status_and_gc_start_at_cni_1_1() {
        for (v, want) in [
            ("1.1.0", true),
            ("1.2.0", true),
            ("2.0.0", true),
            ("1.0.0", false),
            ("0.4.0", false),
            ("", false),
        ] {
            assert_eq!(has_status_and_gc(v), want, "{v}");
        }
    }

    /// STATUS and GC against a fake plugin that logs its command, its
    /// container variables and its stdin, and fails STATUS while a marker
    /// file exists.
    #[tokio::test]
    async fn status_and_gc_run_each_plugin_without_container_args() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = dir.path().join("calls");
        let broken = dir.path().join("broken");
        let script = format!(
            "#!/bin/sh\nin=$(cat)\necho \"$CNI_COMMAND [${{CNI_CONTAINERID-unset}}] $in\" >> {log}\n\
             if [ \"$CNI_COMMAND\" = STATUS ] && [ -e {broken} ]; then echo '{{\"code\":50,\"msg\":\"plugin down\",\"details\":\"no daemon\"}}'; exit 1; fi\n\
             if [ \"$CNI_COMMAND\" = ADD ]; then echo '{{\"cniVersion\":\"1.1.0\"}}'; fi\n",
            log = log.display(),
            broken = broken.display()
        );
        std::fs::write(bin.join("fake"), script).unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(bin.join("fake"))
            .status()
            .unwrap();
        let exec = Executor {
            bin_dirs: vec![bin],
            cache_dir: dir.path().join("cache"),
            timeout: Duration::from_secs(10),
        };
        let net = |version: &str| NetworkConfigList {
            path: "x".into(),
            name: "n".into(),
            cni_version: version.into(),
            plugin_types: vec!["fake".into(), "fake".into()],
            raw: json!({"cniVersion": version, "name": "n", "plugins": [{"type": "fake", "a": 1}, {"type": "fake", "a": 2}]}),
        };
        let lines = || -> Vec<String> {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        };

        // Before 1.1 neither command exists: nothing runs.
        exec.status(&net("1.0.0")).await.unwrap();
        exec.gc(&net("1.0.0"), &[]).await.unwrap();
        assert!(lines().is_empty());

        exec.status(&net("1.1.0")).await.unwrap();
        let calls = lines();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(calls[0].starts_with("STATUS [unset] "), "{calls:?}");
        assert!(calls[1].contains("\"a\":2") && calls[1].contains("\"cniVersion\":\"1.1.0\""));

        std::fs::write(&broken, "").unwrap();
        let e = exec.status(&net("1.1.0")).await.unwrap_err();
        assert!(e.to_string().contains("plugin down: no daemon"), "{e}");
        std::fs::remove_file(&broken).unwrap();

        // Two attachments cached; GC keeps one of them.
        let a = |id: &str| Attachment {
            container_id: id.into(),
            netns: "/proc/self/ns/net".into(),
            ifname: "eth0".into(),
            args: vec![],
            capability_args: BTreeMap::new(),
        };
        exec.add(&net("1.1.0"), &a("keep")).await.unwrap();
        exec.add(&net("1.1.0"), &a("gone")).await.unwrap();
        std::fs::write(&log, "").unwrap();
        exec.gc(&net("1.1.0"), &[("keep".into(), "eth0".into())])
            .await
            .unwrap();
        let calls = lines();
        assert_eq!(calls.len(), 2, "{calls:?}");
        for c in &calls {
            assert!(c.starts_with("GC [unset] "), "{c}");
            let conf: Value = serde_json::from_str(c.splitn(3, ' ').nth(2).unwrap()).unwrap();
            assert_eq!(
                conf["cni.dev/valid-attachments"],
                json!([{"containerID": "keep", "ifname": "eth0"}])
            );
        }
        assert!(exec.cached("n", "keep", "eth0").is_some());
        assert!(exec.cached("n", "gone", "eth0").is_none());
    }
}
