//! A throwaway CNI network for tests: a bridge with a unique name and a
//! random 10.201.x.0/24 subnet, host-local IPAM with its data in a temp dir.
//! Dropping it deletes the bridge and restores `net.ipv4.ip_forward`, which
//! the bridge plugin turns on for gateways.

use std::path::{Path, PathBuf};

pub struct TestNetwork {
    pub name: String,
    pub bridge: String,
    pub subnet_prefix: String,
    pub ipam_dir: PathBuf,
    ip_forward_before: String,
}

impl TestNetwork {
    /// Writes `10-<name>.conflist` into `conf_dir`.
    pub fn create(conf_dir: &Path, ipam_dir: &Path) -> TestNetwork {
        Self::create_with(conf_dir, ipam_dir, serde_json::json!({}), vec![])
    }

    /// Like [`TestNetwork::create`], with capabilities for the bridge
    /// plugin (its IPAM reads them too) and more plugins after portmap.
    pub fn create_with(
        conf_dir: &Path,
        ipam_dir: &Path,
        bridge_capabilities: serde_json::Value,
        more_plugins: Vec<serde_json::Value>,
    ) -> TestNetwork {
        let tag: u32 = rand::random();
        let bridge = format!("gte{:06x}", tag & 0xff_ffff);
        let third = (tag >> 24) as u8;
        let subnet_prefix = format!("10.201.{third}.");
        let name = format!("e2e-{bridge}");
        std::fs::create_dir_all(conf_dir).expect("creating the CNI conf dir");
        let mut conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": format!("{subnet_prefix}0/24")}]],
                        "dataDir": ipam_dir,
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        conf["plugins"][0]["capabilities"] = bridge_capabilities;
        if let Some(plugins) = conf["plugins"].as_array_mut() {
            plugins.extend(more_plugins);
        }
        std::fs::write(
            conf_dir.join(format!("10-{name}.conflist")),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .expect("writing the conflist");
        TestNetwork {
            name,
            bridge,
            subnet_prefix,
            ipam_dir: ipam_dir.to_path_buf(),
            ip_forward_before: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap_or_default(),
        }
    }

    /// Interfaces still attached to the bridge.
    pub fn bridge_ports(&self) -> Vec<String> {
        std::fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// IPs host-local still holds for some container.
    pub fn reservations(&self) -> Vec<String> {
        std::fs::read_dir(self.ipam_dir.join(&self.name))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&self.subnet_prefix))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        if !self.ip_forward_before.is_empty() {
            let _ = std::fs::write(
                "/proc/sys/net/ipv4/ip_forward",
                self.ip_forward_before.trim(),
            );
        }
    }
}

/// The nat-table chains portmap creates on first use. If a test made them,
/// [`HostportChains::drop`] removes them again, with the jumps to them.
pub struct HostportChains {
    existed: bool,
}

fn nat_rules() -> String {
    std::process::Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl HostportChains {
    pub fn snapshot() -> HostportChains {
        HostportChains {
            existed: nat_rules().contains("-N CNI-HOSTPORT-DNAT"),
        }
    }

    /// Per-pod chains portmap still holds (one `CNI-DN-*` per mapped pod).
    pub fn pod_chains() -> usize {
        nat_rules()
            .lines()
            .filter(|l| l.starts_with("-N CNI-DN-"))
            .count()
    }
}

impl Drop for HostportChains {
    fn drop(&mut self) {
        if self.existed {
            return;
        }
        let rules = nat_rules();
        let iptables = |args: &[&str]| {
            let _ = std::process::Command::new("iptables")
                .args(["-w", "-t", "nat"])
                .args(args)
                .status();
        };
        // Jumps from the built-in chains first, then the chains themselves.
        for rule in rules
            .lines()
            .filter(|l| l.starts_with("-A ") && l.contains("-j CNI-HOSTPORT"))
        {
            let spec = split_quoted(rule);
            let mut args = vec!["-D"];
            args.extend(spec.iter().skip(1).map(String::as_str));
            iptables(&args);
        }
        for chain in rules
            .lines()
            .filter_map(|l| l.strip_prefix("-N "))
            .filter(|c| c.starts_with("CNI-HOSTPORT") || c.starts_with("CNI-DN-"))
        {
            iptables(&["-F", chain]);
        }
        for chain in rules
            .lines()
            .filter_map(|l| l.strip_prefix("-N "))
            .filter(|c| c.starts_with("CNI-HOSTPORT") || c.starts_with("CNI-DN-"))
        {
            iptables(&["-X", chain]);
        }
    }
}

/// Splits an `iptables -S` line into words, keeping "quoted phrases" whole.
fn split_quoted(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
