//! How pods get (and give back) their network: a small trait, so the pod
//! logic is tested without root, and its CNI implementation, with the
//! capability arguments it hands to plugins that declare them.
//!
//! Capability arguments and where they come from:
//! - `portMappings`, `dns`: the sandbox config.
//! - `bandwidth`: the pod annotations `kubernetes.io/ingress-bandwidth` and
//!   `kubernetes.io/egress-bandwidth`, Kubernetes quantities read as bits
//!   per second (`1M` is 1 000 000 bit/s, `10Mi` 10 485 760), between 1k
//!   and 1P as kubelet allows; the burst is left practically unlimited.
//! - `ips`: the pod annotation `gantry.dev/ips`, a comma-separated list of
//!   addresses with prefix (`10.1.0.7/24,fd00::7/64`).
//! - `mac`: the pod annotation `gantry.dev/mac` (`0a:58:0a:01:00:07`).
//!
//! Kubernetes defines no annotation for `ips` and `mac` (kubelet never
//! took them up, and neither containerd nor CRI-O reads one for the
//! default network), so these two keys are gantry's own. Malformed values
//! are refused with InvalidArgument before anything is created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_cni::exec::{Attachment, Executor};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::metrics::RuntimeMetrics;

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
    pub extras: NetworkExtras,
}

pub const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
pub const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";
pub const IPS_ANNOTATION: &str = "gantry.dev/ips";
pub const MAC_ANNOTATION: &str = "gantry.dev/mac";

/// The bounds kubelet puts on bandwidth annotations, in bits per second.
const MIN_BANDWIDTH: u64 = 1_000;
const MAX_BANDWIDTH: u64 = 1_000_000_000_000_000;
/// Burst for shaped directions: as good as unlimited, so only the rate
/// limits (what containerd and CRI-O do too).
const BURST_BITS: u64 = i32::MAX as u64;

/// Capability arguments taken from the pod's annotations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkExtras {
    /// Bits per second towards the pod and from it.
    pub ingress_bps: Option<u64>,
    pub egress_bps: Option<u64>,
    pub ips: Vec<String>,
    pub mac: Option<String>,
}

impl NetworkExtras {
    /// Reads and checks the annotations (see the module documentation).
    pub fn from_annotations(
        annotations: &std::collections::HashMap<String, String>,
    ) -> Result<Self> {
        let bandwidth = |key: &str| -> Result<Option<u64>> {
            let Some(v) = annotations.get(key) else {
                return Ok(None);
            };
            let bits = parse_quantity(v)
                .map_err(|why| Error::InvalidArgument(format!("annotation {key}={v:?}: {why}")))?;
            if !(MIN_BANDWIDTH..=MAX_BANDWIDTH).contains(&bits) {
                return Err(Error::InvalidArgument(format!(
                    "annotation {key}={v:?}: must be between 1k and 1P bits per second"
                )));
            }
            Ok(Some(bits))
        };
        let mut ips = Vec::new();
        if let Some(v) = annotations.get(IPS_ANNOTATION) {
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !is_cidr(item) {
                    return Err(Error::InvalidArgument(format!(
                        "annotation {IPS_ANNOTATION}: {item:?} is not an address with a prefix length"
                    )));
                }
                ips.push(item.to_string());
            }
        }
        let mac = match annotations.get(MAC_ANNOTATION) {
            None => None,
            Some(v) => {
                let octets: Vec<&str> = v.split(':').collect();
                if octets.len() != 6
                    || !octets
                        .iter()
                        .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    return Err(Error::InvalidArgument(format!(
                        "annotation {MAC_ANNOTATION}={v:?} is not a MAC address"
                    )));
                }
                Some(v.to_ascii_lowercase())
            }
        };
        Ok(NetworkExtras {
            ingress_bps: bandwidth(INGRESS_BANDWIDTH)?,
            egress_bps: bandwidth(EGRESS_BANDWIDTH)?,
            ips,
            mac,
        })
    }

    /// The capability arguments these make, by capability name.
    fn capability_args(&self) -> BTreeMap<String, Value> {
        let mut caps = BTreeMap::new();
        if self.ingress_bps.is_some() || self.egress_bps.is_some() {
            let mut bw = serde_json::Map::new();
            if let Some(r) = self.ingress_bps {
                bw.insert("ingressRate".into(), json!(r));
                bw.insert("ingressBurst".into(), json!(BURST_BITS));
            }
            if let Some(r) = self.egress_bps {
                bw.insert("egressRate".into(), json!(r));
                bw.insert("egressBurst".into(), json!(BURST_BITS));
            }
            caps.insert("bandwidth".into(), Value::Object(bw));
        }
        if !self.ips.is_empty() {
            caps.insert("ips".into(), json!(self.ips));
        }
        if let Some(mac) = &self.mac {
            caps.insert("mac".into(), json!(mac));
        }
        caps
    }
}

/// Whether `s` is an address with a prefix length (`10.1.0.7/24`,
/// `fd00::/64`).
pub fn is_cidr(s: &str) -> bool {
    s.split_once('/').is_some_and(|(addr, prefix)| {
        match (addr.parse::<std::net::IpAddr>(), prefix.parse::<u8>()) {
            (Ok(std::net::IpAddr::V4(_)), Ok(p)) => p <= 32,
            (Ok(std::net::IpAddr::V6(_)), Ok(p)) => p <= 128,
            _ => false,
        }
    })
}

/// A Kubernetes resource quantity as a whole number, rounded up as
/// Kubernetes does: `1.5k`, `10Mi`, `2e3`, `500m`.
pub fn parse_quantity(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let number = number.strip_prefix('+').unwrap_or(number);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("not a quantity".into());
    }
    // value = mantissa * base^exp / 10^frac_digits
    let (base, exp): (u128, i32) = match suffix {
        "" => (10, 0),
        "m" => (10, -3),
        "k" => (10, 3),
        "M" => (10, 6),
        "G" => (10, 9),
        "T" => (10, 12),
        "P" => (10, 15),
        "E" => (10, 18),
        "Ki" => (2, 10),
        "Mi" => (2, 20),
        "Gi" => (2, 30),
        "Ti" => (2, 40),
        "Pi" => (2, 50),
        "Ei" => (2, 60),
        e if e.starts_with(['e', 'E']) => {
            let n: i32 = e[1..]
                .parse()
                .map_err(|_| format!("unknown suffix {suffix:?}"))?;
            if !(-30..=30).contains(&n) {
                return Err("exponent out of range".into());
            }
            (10, n)
        }
        _ => return Err(format!("unknown suffix {suffix:?}")),
    };
    if int.len() + frac.len() > 30 {
        return Err("too many digits".into());
    }
    let mantissa: u128 = format!("{int}{frac}")
        .parse()
        .map_err(|_| "not a quantity".to_string())?;
    let mut num = mantissa;
    let mut den: u128 = 10u128.pow(frac.len() as u32);
    let scale = base
        .checked_pow(exp.unsigned_abs())
        .ok_or("quantity too large")?;
    if exp >= 0 {
        num = num.checked_mul(scale).ok_or("quantity too large")?;
    } else {
        den = den.checked_mul(scale).ok_or("quantity too large")?;
    }
    let value = num.div_ceil(den);
    u64::try_from(value).map_err(|_| "quantity too large".to_string())
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
    async fn ready(&self) -> std::result::Result<(), (String, String)>;
    /// The network new pods would join now, if one is configured.
    fn current_name(&self) -> Option<String>;
    async fn attach(&self, req: &PodNetworkRequest) -> Result<Attached>;
    /// Detach; nothing to do is success (idempotent). `netns` is where the
    /// pod's namespace was, for a detach whose attach never finished.
    async fn detach(&self, network: &str, id: &str, netns: Option<&Path>) -> Result<()>;
    /// Lets the network free whatever belongs to pods other than `live`
    /// (pod IDs attached to the current network). Must not run alongside
    /// an attach.
    async fn gc(&self, live: &[String]) -> Result<()>;
}

pub struct CniNetwork {
    pub conf_dir: PathBuf,
    pub network_name: String,
    pub executor: Executor,
    metrics: RuntimeMetrics,
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
            metrics: RuntimeMetrics::default(),
        }
    }

    /// Where CNI operations are timed and their failures counted.
    pub fn with_metrics(mut self, metrics: RuntimeMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs one CNI operation on `network`, measured.
    async fn measured<T, E>(
        &self,
        op: &str,
        network: &str,
        f: impl std::future::Future<Output = std::result::Result<T, E>>,
    ) -> std::result::Result<T, E> {
        let started = std::time::Instant::now();
        let r = f.await;
        self.metrics
            .observe_cni(op, network, started.elapsed(), r.is_ok());
        r
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
    /// The config loads, every plugin is installed and, for CNI 1.1
    /// networks, every plugin's STATUS succeeds.
    async fn ready(&self) -> std::result::Result<(), (String, String)> {
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
        self.measured("STATUS", &net.name, self.executor.status(&net))
            .await
            .map_err(|e| ("NetworkPluginNotReady".to_string(), e.to_string()))
    }

    async fn gc(&self, live: &[String]) -> Result<()> {
        let Ok(net) = self.current() else {
            return Ok(());
        };
        let valid: Vec<(String, String)> = live
            .iter()
            .map(|id| (id.clone(), IFNAME.to_string()))
            .collect();
        self.measured("GC", &net.name, self.executor.gc(&net, &valid))
            .await
            .map_err(Error::network("CNI GC"))
    }

    fn current_name(&self) -> Option<String> {
        self.current().ok().map(|n| n.name)
    }

    async fn attach(&self, req: &PodNetworkRequest) -> Result<Attached> {
        let net = self
            .current()
            .map_err(Error::network("the CNI config is not loaded"))?;
        let mut caps = req.extras.capability_args();
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
            .measured("ADD", &net.name, self.executor.add(&net, &a))
            .await
            .map_err(Error::network(format!("CNI ADD to {}", net.name)))?;
        Ok(Attached {
            network: net.name.clone(),
            ips: r.ips(),
        })
    }

    async fn detach(&self, network: &str, id: &str, netns: Option<&Path>) -> Result<()> {
        if self.executor.cached(network, id, IFNAME).is_some() {
            return self
                .measured("DEL", network, self.executor.del(network, id, IFNAME))
                .await
                .map_err(Error::network(format!("CNI DEL from {network}")));
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
                self.measured("DEL", network, self.executor.del_uncached(&net, &a))
                    .await
                    .map_err(Error::network(format!("CNI DEL from {network}")))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn quantities_parse_as_kubernetes_reads_them() {
        for (q, want) in [
            ("1M", 1_000_000),
            ("10Mi", 10_485_760),
            ("1k", 1_000),
            ("1.5k", 1_500),
            ("1Ki", 1_024),
            ("2e3", 2_000),
            ("1E", 1_000_000_000_000_000_000),
            ("500m", 1),
            ("1500m", 2),
            ("100", 100),
            ("0.5Gi", 536_870_912),
            ("+3", 3),
        ] {
            assert_eq!(parse_quantity(q), Ok(want), "{q}");
        }
        for bad in [
            "", "M", "1MB", "1 M", "-1M", "1.2.3", "abc", "1e99", "100Ei", "1x",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn annotations_become_capability_args() {
        let e = NetworkExtras::from_annotations(&annotations(&[
            (INGRESS_BANDWIDTH, "1M"),
            (EGRESS_BANDWIDTH, "10Mi"),
            (IPS_ANNOTATION, "10.1.0.7/24, fd00::7/64"),
            (MAC_ANNOTATION, "0A:58:0a:01:00:07"),
            ("other", "x"),
        ]))
        .unwrap();
        let caps = e.capability_args();
        assert_eq!(
            caps["bandwidth"],
            json!({"ingressRate": 1_000_000, "ingressBurst": BURST_BITS,
                   "egressRate": 10_485_760, "egressBurst": BURST_BITS})
        );
        assert_eq!(caps["ips"], json!(["10.1.0.7/24", "fd00::7/64"]));
        assert_eq!(caps["mac"], json!("0a:58:0a:01:00:07"));

        let only_egress =
            NetworkExtras::from_annotations(&annotations(&[(EGRESS_BANDWIDTH, "2M")])).unwrap();
        assert_eq!(
            only_egress.capability_args()["bandwidth"],
            json!({"egressRate": 2_000_000, "egressBurst": BURST_BITS})
        );
        assert!(NetworkExtras::from_annotations(&HashMap::new())
            .unwrap()
            .capability_args()
            .is_empty());

        for (k, v) in [
            (INGRESS_BANDWIDTH, "fast"),
            (EGRESS_BANDWIDTH, "10"),
            (INGRESS_BANDWIDTH, "2P"),
            (IPS_ANNOTATION, "10.1.0.7"),
            (IPS_ANNOTATION, "10.1.0.7/33"),
            (IPS_ANNOTATION, "host/24"),
            (MAC_ANNOTATION, "0a:58:0a:01:00"),
            (MAC_ANNOTATION, "zz:58:0a:01:00:07"),
        ] {
            let r = NetworkExtras::from_annotations(&annotations(&[(k, v)]));
            assert!(
                matches!(r, Err(Error::InvalidArgument(_))),
                "{k}={v} gave {r:?}"
            );
        }
    }
}
