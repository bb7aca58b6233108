//! The parts of OCI and Docker schema2 manifests, indexes and image configs
//! that a pull needs. The two formats share their JSON shape, so one set of
//! lenient structs reads both; unknown fields are ignored and the raw bytes
//! stay in the content store for anyone who needs the rest.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::mediatype::{self, DOCKER_REFERENCE_TYPE};

/// How many indexes a pull goes through to reach a manifest (an index
/// may point to another index).
pub const MAX_INDEX_DEPTH: usize = 4;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Where a non-distributable layer can be fetched from.
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(rename = "os.version", default)]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default)]
    pub os_features: Vec<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(rename = "artifactType", default)]
    artifact_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// A single-platform manifest: an image, or an artifact when its config
/// is not an image config.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// Set for artifacts: the manifest's `artifactType`, else its config
    /// media type. Artifact layers are stored, never unpacked.
    pub artifact_type: Option<String>,
}

#[derive(Debug)]
pub enum Parsed {
    Index(Vec<Descriptor>),
    Manifest(Box<Manifest>),
}

/// Parses a manifest or index; `content_type` is the registry's header.
pub fn parse(bytes: &[u8], content_type: &str) -> Result<Parsed> {
    if mediatype::is_schema1(content_type) {
        return Err(Error::Schema1);
    }
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| Error::malformed("manifest", e))?;
    if raw.schema_version == 1 || mediatype::is_schema1(&raw.media_type) {
        return Err(Error::Schema1);
    }
    let media = if raw.media_type.is_empty() {
        content_type
    } else {
        &raw.media_type
    };
    let is_index = mediatype::is_index(media) || (media.is_empty() && raw.manifests.is_some());
    if is_index {
        let manifests = raw
            .manifests
            .ok_or_else(|| Error::malformed("image index", "no manifests"))?;
        for d in &manifests {
            crate::reference::digest_hex(&d.digest)?;
        }
        return Ok(Parsed::Index(manifests));
    }
    if !(mediatype::is_manifest(media) || matches!(media, "" | "application/json")) {
        return Err(Error::Unsupported {
            what: "manifest media type".into(),
            value: media.to_string(),
        });
    }
    let config = raw
        .config
        .ok_or_else(|| Error::malformed("manifest", "no config descriptor"))?;
    let layers = raw
        .layers
        .ok_or_else(|| Error::malformed("manifest", "no layers"))?;
    for d in std::iter::once(&config).chain(&layers) {
        crate::reference::digest_hex(&d.digest)?;
    }
    if config.media_type.is_empty() {
        return Err(Error::malformed(
            "manifest",
            "the config descriptor has no mediaType",
        ));
    }
    if !mediatype::is_image_config(&config.media_type) {
        let artifact_type = raw
            .artifact_type
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| config.media_type.clone());
        return Ok(Parsed::Manifest(Box::new(Manifest {
            config,
            layers,
            artifact_type: Some(artifact_type),
        })));
    }
    // An image's layers are unpacked, so each must be a type whose
    // compression is known; anything else is refused before any download.
    for l in &layers {
        if mediatype::layer_type(&l.media_type).is_none() {
            return Err(Error::Unsupported {
                what: format!("media type of layer {}", l.digest),
                value: format!("{:?}", l.media_type),
            });
        }
    }
    Ok(Parsed::Manifest(Box::new(Manifest {
        config,
        layers,
        artifact_type: None,
    })))
}

/// The host's platform in OCI terms.
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        other => (other, None),
    };
    Platform {
        architecture: architecture.into(),
        os: "linux".into(),
        variant: variant.map(Into::into),
        ..Default::default()
    }
}

/// Whether an index entry is something to run: attestations and other
/// non-runnable entries (buildkit's `unknown/unknown` platform, the
/// `vnd.docker.reference.type` annotation, artifact media types) are not.
pub fn is_runnable_entry(d: &Descriptor) -> bool {
    let document = mediatype::is_manifest(&d.media_type)
        || mediatype::is_index(&d.media_type)
        || d.media_type.is_empty();
    let unknown_platform = d
        .platform
        .as_ref()
        .is_some_and(|p| p.os == "unknown" || p.architecture == "unknown");
    document && !unknown_platform && !d.annotations.contains_key(DOCKER_REFERENCE_TYPE)
}

/// The canonical OS name, as containerd's platform package spells it.
fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    if os == "macos" {
        "darwin".into()
    } else {
        os
    }
}

/// The canonical architecture and variant: aliases folded (`x86_64`,
/// `aarch64`, `armhf`) and the default variant of each architecture
/// written as none (`arm64/v8`, `amd64/v1`), except 32-bit arm whose
/// default is `v7`.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "i386" | "386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".into(),
                _ => variant,
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), v)
        }
        _ => (arch, variant),
    }
}

/// The architectures and variants a host can run, best first, the way
/// containerd's `platforms.Only` orders them: a variant runs the older
/// variants of its architecture (amd64/v3 runs v2 and v1, arm64/v8.2 runs
/// v8.1 and v8, arm64/v9.x runs v8.(x+5) and below), amd64 also runs 386,
/// and arm64 also runs 32-bit arm from v8 down to v5.
fn compatible(arch: &str, variant: &str) -> Vec<(String, String)> {
    let (arch, variant) = normalize_arch(arch, variant);
    let mut out = vec![(arch.clone(), variant.clone())];
    let number = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
    match arch.as_str() {
        "amd64" => {
            if let Some(n) = number(&variant).filter(|n| *n > 1) {
                for lower in (1..n).rev() {
                    out.push(normalize_arch("amd64", &format!("v{lower}")));
                }
            }
            out.push(("386".into(), String::new()));
        }
        "arm" => {
            if let Some(n) = number(&variant).filter(|n| *n > 5) {
                for lower in (5..n).rev() {
                    out.push(("arm".into(), format!("v{lower}")));
                }
            }
        }
        "arm64" => {
            let full = if variant.is_empty() { "v8" } else { &variant };
            let (major, minor) = match full.split_once('.') {
                Some((ma, mi)) => (number(ma), mi.parse::<u32>().ok()),
                None => (number(full), Some(0)),
            };
            if let (Some(mut major), Some(mut minor)) = (major, minor) {
                if major == 9 {
                    for m in (0..minor).rev() {
                        out.push(normalize_arch("arm64", &arm64_variant(9, m)));
                    }
                    // v9.0 branched off v8.5: v9.x runs what v8.(x+5) runs.
                    minor = (minor + 5).min(9);
                    major = 8;
                    out.push(normalize_arch("arm64", &arm64_variant(8, minor)));
                }
                if major == 8 {
                    for m in (0..minor).rev() {
                        out.push(normalize_arch("arm64", &arm64_variant(8, m)));
                    }
                }
            }
            for lower in (5..=8).rev() {
                out.push(("arm".into(), format!("v{lower}")));
            }
        }
        _ => {}
    }
    out.dedup();
    out
}

fn arm64_variant(major: u32, minor: u32) -> String {
    if minor == 0 {
        format!("v{major}")
    } else {
        format!("v{major}.{minor}")
    }
}

/// Whether an entry's `os.version` suits the host's: only compared when
/// both sides name one (Windows builds), by major.minor.build.
fn os_version_matches(host: Option<&str>, entry: Option<&str>) -> bool {
    match (
        host.filter(|v| !v.is_empty()),
        entry.filter(|v| !v.is_empty()),
    ) {
        (Some(h), Some(e)) => {
            let build = |v: &str| v.split('.').take(3).collect::<Vec<_>>().join(".");
            build(h) == build(e)
        }
        _ => true,
    }
}

/// Picks the index entry for `want`, the way containerd's platform matcher
/// does: only runnable entries; the best compatible architecture/variant
/// first (see [`compatible`]), then index order; an entry's `os.features`
/// must all be features the host has, and `os.version` must agree when
/// both name one. Entries without a platform come last.
pub fn choose_platform<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let os = normalize_os(&want.os);
    let runnable = || entries.iter().filter(|d| is_runnable_entry(d));
    for (arch, variant) in compatible(&want.architecture, want.variant.as_deref().unwrap_or("")) {
        let found = runnable().find(|d| {
            let Some(p) = &d.platform else { return false };
            normalize_os(&p.os) == os
                && normalize_arch(&p.architecture, p.variant.as_deref().unwrap_or(""))
                    == (arch.clone(), variant.clone())
                && os_version_matches(want.os_version.as_deref(), p.os_version.as_deref())
                && p.os_features.iter().all(|f| want.os_features.contains(f))
        });
        if found.is_some() {
            return found;
        }
    }
    runnable().find(|d| d.platform.is_none())
}

/// The platforms an index offers to run, for error messages.
pub fn offered_platforms(entries: &[Descriptor]) -> String {
    let list: Vec<String> = entries
        .iter()
        .filter(|d| is_runnable_entry(d))
        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// What gantry reads from an image config.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ImageConfigFile {
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RunConfig {
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

pub fn parse_config(bytes: &[u8]) -> Result<ImageConfigFile> {
    let cfg: ImageConfigFile =
        serde_json::from_slice(bytes).map_err(|e| Error::malformed("image config", e))?;
    for d in &cfg.rootfs.diff_ids {
        crate::reference::digest_hex(d)?;
    }
    Ok(cfg)
}

/// CRI's view of an image's USER: a numeric uid, or a name to resolve later.
pub fn user_of(user: &str) -> (Option<i64>, String) {
    let user = user.split(':').next().unwrap_or("");
    if user.is_empty() {
        return (None, String::new());
    }
    match user.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mediatype::{OCI_INDEX, OCI_MANIFEST};

    fn entry(n: u8, platform: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": format!("sha256:{}", format!("{n:x}").repeat(64)),
            "size": 1,
            "platform": platform,
        })
    }

    fn index(entries: Vec<serde_json::Value>) -> Vec<Descriptor> {
        let json =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        match parse(&serde_json::to_vec(&json).unwrap(), "").unwrap() {
            Parsed::Index(e) => e,
            Parsed::Manifest(_) => panic!("not an index"),
        }
    }

    fn plat(spec: &str) -> Platform {
        let mut parts = spec.split('/');
        Platform {
            os: parts.next().unwrap().into(),
            architecture: parts.next().unwrap().into(),
            variant: parts.next().map(Into::into),
            ..Default::default()
        }
    }

    /// The digest's first hex digit of the entry chosen for `want`.
    fn chosen(entries: &[Descriptor], want: Platform) -> Option<char> {
        choose_platform(entries, &want).map(|d| d.digest.chars().nth(7).unwrap())
    }

    #[test]
    fn platform_choice_prefers_exact_variant() {
        let entries = index(vec![
            entry(
                1,
                serde_json::json!({"architecture":"arm64","os":"linux","variant":"v8"}),
            ),
            entry(2, serde_json::json!({"architecture":"amd64","os":"linux"})),
            entry(
                3,
                serde_json::json!({"architecture":"amd64","os":"windows"}),
            ),
        ]);
        assert_eq!(chosen(&entries, plat("linux/amd64")), Some('2'));
        // arm64 and arm64/v8 are the same platform, whichever side names v8.
        assert_eq!(chosen(&entries, plat("linux/arm64/v8")), Some('1'));
        assert_eq!(chosen(&entries, plat("linux/arm64")), Some('1'));
        assert_eq!(chosen(&entries, plat("linux/aarch64")), Some('1'));
        assert_eq!(chosen(&entries, plat("linux/s390x")), None);
    }

    #[test]
    fn attestations_and_artifacts_are_never_chosen() {
        let mut attestation = entry(
            1,
            serde_json::json!({"architecture":"unknown","os":"unknown"}),
        );
        attestation["annotations"] = serde_json::json!({
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": "sha256:2222222222222222222222222222222222222222222222222222222222222222",
        });
        // An annotated entry that claims the host's platform is skipped too.
        let mut disguised = entry(4, serde_json::json!({"architecture":"amd64","os":"linux"}));
        disguised["annotations"] =
            serde_json::json!({"vnd.docker.reference.type": "attestation-manifest"});
        let mut artifact = entry(5, serde_json::json!({"architecture":"amd64","os":"linux"}));
        artifact["mediaType"] = "application/vnd.acme.sbom.v1+json".into();
        let entries = index(vec![
            attestation,
            disguised,
            artifact,
            entry(2, serde_json::json!({"architecture":"amd64","os":"linux"})),
        ]);
        assert_eq!(chosen(&entries, plat("linux/amd64")), Some('2'));
        assert_eq!(offered_platforms(&entries), "linux/amd64");
        let only_attestation = index(vec![entry(
            1,
            serde_json::json!({"architecture":"unknown","os":"unknown"}),
        )]);
        assert_eq!(chosen(&only_attestation, plat("linux/amd64")), None);
    }

    #[test]
    fn older_variants_run_where_containerd_runs_them() {
        let entries = index(vec![
            entry(
                1,
                serde_json::json!({"architecture":"arm","os":"linux","variant":"v6"}),
            ),
            entry(2, serde_json::json!({"architecture":"386","os":"linux"})),
            entry(
                3,
                serde_json::json!({"architecture":"arm64","os":"linux","variant":"v8.1"}),
            ),
            entry(
                4,
                serde_json::json!({"architecture":"amd64","os":"linux","variant":"v2"}),
            ),
        ]);
        // arm/v7 runs v6; arm/v5 does not.
        assert_eq!(chosen(&entries, plat("linux/arm/v7")), Some('1'));
        assert_eq!(chosen(&entries, plat("linux/arm/v5")), None);
        // amd64 (v1) falls back to 386; amd64/v3 takes v2 first.
        assert_eq!(chosen(&entries, plat("linux/amd64")), Some('2'));
        assert_eq!(chosen(&entries, plat("linux/amd64/v3")), Some('4'));
        // arm64/v8.2 runs v8.1; plain arm64 (v8.0) does not, but runs arm/v6.
        assert_eq!(chosen(&entries, plat("linux/arm64/v8.2")), Some('3'));
        assert_eq!(chosen(&entries, plat("linux/arm64")), Some('1'));
        // arm64/v9.0 runs what v8.5 runs.
        assert_eq!(chosen(&entries, plat("linux/arm64/v9")), Some('3'));
        // The exact variant wins over index order.
        let exact = index(vec![
            entry(
                1,
                serde_json::json!({"architecture":"arm","os":"linux","variant":"v6"}),
            ),
            entry(
                2,
                serde_json::json!({"architecture":"arm","os":"linux","variant":"v7"}),
            ),
            entry(3, serde_json::json!({"architecture":"arm","os":"linux"})),
        ]);
        // arm without a variant is arm/v7: the first v7 entry in order.
        assert_eq!(chosen(&exact, plat("linux/arm/v7")), Some('2'));
    }

    #[test]
    fn os_version_and_features_must_suit_the_host() {
        let entries = index(vec![
            entry(
                1,
                serde_json::json!({"architecture":"amd64","os":"windows","os.version":"10.0.17763.1234"}),
            ),
            entry(
                2,
                serde_json::json!({"architecture":"amd64","os":"windows","os.version":"10.0.20348.1"}),
            ),
            entry(
                3,
                serde_json::json!({"architecture":"amd64","os":"linux","os.features":["sse4"]}),
            ),
            entry(
                4,
                serde_json::json!({"architecture":"amd64","os":"linux","os.version":"5.10"}),
            ),
        ]);
        let mut win = plat("windows/amd64");
        win.os_version = Some("10.0.20348.2000".into());
        assert_eq!(chosen(&entries, win), Some('2'));
        // A host without the feature skips the entry that needs it; a Linux
        // host names no os.version, so an entry's is not compared.
        assert_eq!(chosen(&entries, plat("linux/amd64")), Some('4'));
        let mut featured = plat("linux/amd64");
        featured.os_features = vec!["sse4".into()];
        assert_eq!(chosen(&entries, featured), Some('3'));
    }

    #[test]
    fn entries_without_platform_come_last() {
        let mut bare = entry(1, serde_json::Value::Null);
        bare.as_object_mut().unwrap().remove("platform");
        let entries = index(vec![
            bare,
            entry(2, serde_json::json!({"architecture":"amd64","os":"linux"})),
        ]);
        assert_eq!(chosen(&entries, plat("linux/amd64")), Some('2'));
        assert_eq!(chosen(&entries, plat("linux/s390x")), Some('1'));
    }

    fn manifest(config_type: &str, layer_type: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config_type, "digest": format!("sha256:{}", "a".repeat(64)), "size": 2},
            "layers": [{"mediaType": layer_type, "digest": format!("sha256:{}", "b".repeat(64)), "size": 3}],
        }))
        .unwrap()
    }

    #[test]
    fn layer_and_config_types_decide_what_a_manifest_is() {
        let image = manifest(
            crate::mediatype::OCI_CONFIG,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        );
        let Parsed::Manifest(m) = parse(&image, "").unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(m.artifact_type, None);

        let evil = manifest(
            crate::mediatype::OCI_CONFIG,
            "application/vnd.acme.unknown.layer.v1+evil",
        );
        let err = parse(&evil, "").unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        assert!(err
            .to_string()
            .contains("application/vnd.acme.unknown.layer.v1+evil"));

        // An artifact's layers are any type: they are stored, not unpacked.
        let artifact = manifest(
            "application/vnd.acme.config.v1+json",
            "application/x-anything",
        );
        let Parsed::Manifest(m) = parse(&artifact, "").unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.acme.config.v1+json")
        );
        let mut typed: serde_json::Value = serde_json::from_slice(&manifest(
            "application/vnd.oci.empty.v1+json",
            "application/x-anything",
        ))
        .unwrap();
        typed["artifactType"] = "application/vnd.acme.bundle".into();
        let Parsed::Manifest(m) = parse(&serde_json::to_vec(&typed).unwrap(), "").unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.acme.bundle")
        );

        let no_config_type = manifest("", "application/vnd.oci.image.layer.v1.tar");
        assert!(matches!(
            parse(&no_config_type, ""),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn schema1_and_junk_are_refused() {
        assert!(matches!(
            parse(br#"{"schemaVersion":1}"#, ""),
            Err(Error::Schema1)
        ));
        // By the registry's content type, whatever the body.
        assert!(matches!(
            parse(b"not json", crate::mediatype::DOCKER_SCHEMA1_SIGNED),
            Err(Error::Schema1)
        ));
        assert!(Error::Schema1.to_string().contains("rebuil"));
        assert!(matches!(
            parse(b"not json", ""),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":2,"layers":[]}"#, OCI_MANIFEST),
            Err(Error::Malformed { .. })
        ));
        let bad_digest =
            br#"{"schemaVersion":2,"config":{"digest":"sha256:zz","size":1},"layers":[]}"#;
        assert!(parse(bad_digest, OCI_MANIFEST).is_err());
    }

    #[test]
    fn users_split_into_uid_or_name() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(user_of("1000"), (Some(1000), String::new()));
        assert_eq!(user_of("1000:50"), (Some(1000), String::new()));
        assert_eq!(user_of("nobody:nogroup"), (None, "nobody".into()));
    }
}
