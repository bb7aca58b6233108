//! The parts of OCI and Docker schema2 manifests, indexes and image configs
//! that a pull needs. The two formats share their JSON shape, so one set of
//! lenient structs reads both; unknown fields are ignored and the raw bytes
//! stay in the content store for anyone who needs the rest.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::registry::{
    MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

#[derive(Debug)]
pub enum Parsed {
    Index(Vec<Descriptor>),
    Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Parses a manifest or index; `content_type` is the registry's header.
pub fn parse(bytes: &[u8], content_type: &str) -> Result<Parsed> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| Error::malformed("manifest", e))?;
    if raw.schema_version == 1 || content_type.contains("distribution.manifest.v1") {
        return Err(Error::Unsupported {
            what: "manifest format".into(),
            value: "Docker schema 1 (deprecated; push the image again with a current tool)".into(),
        });
    }
    let media = if raw.media_type.is_empty() {
        content_type
    } else {
        &raw.media_type
    };
    let is_index = matches!(media, MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST)
        || (media.is_empty() && raw.manifests.is_some());
    if is_index {
        let manifests = raw
            .manifests
            .ok_or_else(|| Error::malformed("image index", "no manifests"))?;
        return Ok(Parsed::Index(manifests));
    }
    if !matches!(
        media,
        MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST | "" | "application/json"
    ) {
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
    for l in &layers {
        if l.media_type.contains("foreign") || l.media_type.contains("nondistributable") {
            return Err(Error::Unsupported {
                what: "layer media type".into(),
                value: l.media_type.clone(),
            });
        }
    }
    Ok(Parsed::Manifest { config, layers })
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
    }
}

/// Picks the index entry for `want`: exact variant first, then one without
/// a variant (amd64 and most others have none).
pub fn choose_platform<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let candidates = || {
        entries.iter().filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
        })
    };
    candidates()
        .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_ref()) == want.variant.as_ref())
        .or_else(|| candidates().find(|d| d.platform.as_ref().is_some_and(|p| p.variant.is_none())))
        .or_else(|| candidates().next())
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

    #[test]
    fn platform_choice_prefers_exact_variant() {
        let json = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
          {"mediaType":"m","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
          {"mediaType":"m","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":1,"platform":{"architecture":"amd64","os":"linux"}},
          {"mediaType":"m","digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":1,"platform":{"architecture":"amd64","os":"windows"}}]}"#;
        let Parsed::Index(entries) = parse(json, "").unwrap() else {
            panic!("not an index")
        };
        let amd = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert!(choose_platform(&entries, &amd)
            .unwrap()
            .digest
            .starts_with("sha256:2"));
        let arm = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        };
        assert!(choose_platform(&entries, &arm)
            .unwrap()
            .digest
            .starts_with("sha256:1"));
        let s390 = Platform {
            architecture: "s390x".into(),
            os: "linux".into(),
            variant: None,
        };
        assert!(choose_platform(&entries, &s390).is_none());
    }

    #[test]
    fn schema1_and_junk_are_refused() {
        assert!(matches!(
            parse(br#"{"schemaVersion":1}"#, ""),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            parse(b"not json", ""),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":2,"layers":[]}"#, MEDIA_OCI_MANIFEST),
            Err(Error::Malformed { .. })
        ));
        let bad_digest =
            br#"{"schemaVersion":2,"config":{"digest":"sha256:zz","size":1},"layers":[]}"#;
        assert!(parse(bad_digest, MEDIA_OCI_MANIFEST).is_err());
    }

    #[test]
    fn users_split_into_uid_or_name() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(user_of("1000"), (Some(1000), String::new()));
        assert_eq!(user_of("1000:50"), (Some(1000), String::new()));
        assert_eq!(user_of("nobody:nogroup"), (None, "nobody".into()));
    }
}
