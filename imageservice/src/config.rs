//! The image service's part of gantry's YAML configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// Where blobs, layer snapshots and the image index live; set by the
    /// daemon from its own root, not configured on its own.
    #[serde(skip)]
    pub root: PathBuf,
    /// Layers downloaded (and unpacked) at the same time for one pull.
    pub max_concurrent_downloads: usize,
    /// Seconds allowed to open a TCP connection to a registry.
    pub connect_timeout_secs: u64,
    /// Seconds a registry may stay silent mid-transfer before the pull fails.
    pub read_timeout_secs: u64,
    /// Per-registry settings, keyed by the host as it appears in image names
    /// (`docker.io`, `registry.k8s.io`, `127.0.0.1:5000`).
    pub registries: BTreeMap<String, RegistryConfig>,
    /// URL prefixes (`https://go.microsoft.com/`) from which the
    /// non-distributable ("foreign") layers an image names by URL may be
    /// downloaded. Empty: such images are refused, as a layer from an
    /// arbitrary URL in a hostile manifest would let it make gantry fetch
    /// anything. Their bytes are still checked against the layer digest.
    pub foreign_layer_url_prefixes: Vec<String>,
    pub limits: Limits,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            root: PathBuf::from("/var/lib/gantry/images"),
            max_concurrent_downloads: 3,
            connect_timeout_secs: 10,
            read_timeout_secs: 60,
            registries: BTreeMap::new(),
            foreign_layer_url_prefixes: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// How to reach one registry host: mirrors first, in order, then the host
/// itself unless `skip_upstream` is set (containerd's hosts.toml semantics).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Mirror endpoints as URLs (`http://127.0.0.1:5000`, `https://mirror.example`).
    /// Requests go to `<endpoint>/v2/<repository>/...`.
    pub mirrors: Vec<String>,
    /// Talk plain HTTP to the host itself instead of HTTPS.
    pub insecure: bool,
    /// Never contact the host itself, only its mirrors.
    pub skip_upstream: bool,
    /// Credentials for this host (used when the pull request carries none).
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Bounds that keep a hostile or broken image from exhausting memory, disk
/// or time while it is fetched and unpacked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_manifest_bytes: u64,
    pub max_config_bytes: u64,
    pub max_layers: usize,
    /// Compressed size of one layer as the manifest declares it.
    pub max_layer_bytes: u64,
    /// Uncompressed bytes one layer may expand to.
    pub max_unpacked_layer_bytes: u64,
    /// Uncompressed/compressed ratio allowed once a layer has expanded past
    /// `ratio_check_after_bytes` (catches decompression bombs early).
    pub max_compression_ratio: u64,
    pub ratio_check_after_bytes: u64,
    pub max_entries_per_layer: u64,
    pub max_path_depth: usize,
    pub max_path_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 << 20,
            max_config_bytes: 8 << 20,
            max_layers: 256,
            max_layer_bytes: 16 << 30,
            max_unpacked_layer_bytes: 64 << 30,
            max_compression_ratio: 200,
            ratio_check_after_bytes: 256 << 20,
            max_entries_per_layer: 1_000_000,
            max_path_depth: 256,
            max_path_bytes: 4096,
        }
    }
}
