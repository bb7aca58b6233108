//! How pods get (and give back) their network: a small trait, so the pod
//! logic is tested without root, and its CNI implementation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_cni::exec::{Attachment, Executor};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// What the network side needs to know about a pod.
#[derive(Debug, Clone)]
pub struct PodNetworkRequest {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub netns: PathBuf,
    /// (container port, host port, protocol, host IP)
    pub port_mappings: Vec<(i32, i32, String, String)>,
    pub dns: Option<(Vec<String>, Vec<String>, Vec<String>)>,
}

/// The outcome of attaching a pod: which network, and its addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct Attached {
    pub network: String,
    pub ips: Vec<String>,
}

#[async_trait::async_trait]
pub trait PodNetwork: Send + Sync + 'static {
    /// `Ok(())` when pods can be attached, or (reason, message) if not.
    fn ready(&self) -> std::result::Result<(), (String, String)>;
    /// The network new pods would join now, if one is configured.
    fn current_name(&self) -> Option<String>;
    async fn attach(&self, req: &PodNetworkRequest) -> Result<Attached>;
    /// Detach; nothing to do is success (idempotent). `netns` is where the
    /// pod's namespace was, for a detach whose attach never finished.
    async fn detach(&self, network: &str, id: &str, netns: Option<&Path>) -> Result<()>;
}

pub struct CniNetwork {
    pub conf_dir: PathBuf,
    pub network_name: String,
    pub executor: Executor,
}

impl CniNetwork {
    pub fn new(
        conf_dir: &Path,
        network_name: &str,
        bin_dirs: Vec<PathBuf>,
        cache_dir: PathBuf,
    ) -> Self {
        CniNetwork {
            conf_dir: conf_dir.to_path_buf(),
            network_name: network_name.to_string(),
            executor: Executor {
                bin_dirs,
                cache_dir,
                timeout: Duration::from_secs(60),
            },
        }
    }

    /// Reads the conf dir on every call, so a config added or changed later
    /// is used without a restart.
    fn current(&self) -> std::result::Result<gantry_cni::NetworkConfigList, gantry_cni::Error> {
        let want = (!self.network_name.is_empty()).then_some(self.network_name.as_str());
        gantry_cni::default_network(&self.conf_dir, want)
    }
}

const IFNAME: &str = "eth0";

#[async_trait::async_trait]
impl PodNetwork for CniNetwork {
    fn ready(&self) -> std::result::Result<(), (String, String)> {
        let net = self.current().map_err(|e| {
            (
                "NetworkPluginNotReady".to_string(),
                format!("cni config not loaded: {e}"),
            )
        })?;
        for t in &net.plugin_types {
            if !self.executor.bin_dirs.iter().any(|d| d.join(t).is_file()) {
                return Err((
                    "NetworkPluginNotReady".to_string(),
                    format!("cni plugin {t} of network {} not found", net.name),
                ));
            }
        }
        Ok(())
    }

    fn current_name(&self) -> Option<String> {
        self.current().ok().map(|n| n.name)
    }

    async fn attach(&self, req: &PodNetworkRequest) -> Result<Attached> {
        let net = self
            .current()
            .map_err(|e| Error::Network(format!("cni config not loaded: {e}")))?;
        let mut caps = BTreeMap::new();
        if !req.port_mappings.is_empty() {
            let pm: Vec<Value> = req
                .port_mappings
                .iter()
                .map(|(c, h, proto, ip)| {
                    let mut m = json!({"containerPort": c, "hostPort": h, "protocol": proto});
                    if !ip.is_empty() {
                        m["hostIP"] = json!(ip);
                    }
                    m
                })
                .collect();
            caps.insert("portMappings".to_string(), Value::Array(pm));
        }
        if let Some((servers, searches, options)) = &req.dns {
            caps.insert(
                "dns".to_string(),
                json!({"servers": servers, "searches": searches, "options": options}),
            );
        }
        let a = Attachment {
            container_id: req.id.clone(),
            netns: req.netns.clone(),
            ifname: IFNAME.into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), req.namespace.clone()),
                ("K8S_POD_NAME".into(), req.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), req.id.clone()),
                ("K8S_POD_UID".into(), req.uid.clone()),
            ],
            capability_args: caps,
        };
        let r = self
            .executor
            .add(&net, &a)
            .await
            .map_err(|e| Error::Network(e.to_string()))?;
        Ok(Attached {
            network: net.name.clone(),
            ips: r.ips(),
        })
    }

    async fn detach(&self, network: &str, id: &str, netns: Option<&Path>) -> Result<()> {
        if self.executor.cached(network, id, IFNAME).is_some() {
            return self
                .executor
                .del(network, id, IFNAME)
                .await
                .map_err(|e| Error::Network(e.to_string()));
        }
        // No cached result: the ADD may have been cut short after a plugin
        // reserved something. DEL with the config of that network, if it is
        // still the one configured.
        match self.current() {
            Ok(net) if net.name == network => {
                let a = Attachment {
                    container_id: id.to_string(),
                    netns: netns.map(Path::to_path_buf).unwrap_or_default(),
                    ifname: IFNAME.into(),
                    args: vec![
                        ("IgnoreUnknown".into(), "1".into()),
                        ("K8S_POD_INFRA_CONTAINER_ID".into(), id.into()),
                    ],
                    capability_args: BTreeMap::new(),
                };
                self.executor
                    .del_uncached(&net, &a)
                    .await
                    .map_err(|e| Error::Network(e.to_string()))
            }
            _ => Ok(()),
        }
    }
}
