//! Image reference parsing and Docker-style normalisation
//! (`busybox` → `docker.io/library/busybox:latest`).
//!
//! Parsing itself is `oci-spec`'s; this module adds the rules the CRI needs on
//! top: what a canonical tag or digest reference looks like, and how to tell an
//! image ID apart from a name.

use oci_spec::distribution::Reference;

use crate::error::{Error, Result};

/// A parsed, normalised image name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host as the user names it (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidReference {
            reference: input.to_string(),
            reason,
        };
        if input.trim().is_empty() {
            return Err(invalid("the image name is empty".into()));
        }
        if input != input.trim() || input.chars().any(|c| c.is_whitespace()) {
            return Err(invalid("the name contains whitespace".into()));
        }
        if is_image_id(input) {
            return Err(invalid("this is an image ID, not a name to pull".into()));
        }
        let parsed: Reference = input.parse().map_err(|e| invalid(format!("{e}")))?;
        // Docker refuses upper case in repository paths; the parser above
        // would take such a first component for a registry host.
        let name_part = input.split(['@']).next().unwrap_or(input);
        let path_part = name_part
            .split_once('/')
            .map(|(_, p)| p)
            .unwrap_or(name_part);
        if path_part.chars().any(|c| c.is_ascii_uppercase())
            || parsed.repository().chars().any(|c| c.is_ascii_uppercase())
        {
            return Err(invalid("repository names must be lower case".into()));
        }
        // A name with both tag and digest pulls by digest; the tag is kept so
        // the image can be listed under it, as docker and containerd do.
        Ok(ImageRef {
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
            tag: if parsed.digest().is_some() && !has_explicit_tag(input) {
                None
            } else {
                parsed.tag().map(str::to_string)
            },
            digest: parsed.digest().map(str::to_string),
        })
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, if the reference names a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{}", self.name(), t))
    }

    /// `registry/repository@digest` for a given manifest digest.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{}", self.name(), digest)
    }

    /// What to ask the registry for: the digest if there is one, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn has_explicit_tag(input: &str) -> bool {
    let name = input.split('@').next().unwrap_or(input);
    let last = name.rsplit('/').next().unwrap_or(name);
    last.contains(':')
}

/// A full image ID (`sha256:<64 hex>`) or its bare 64-hex form.
pub fn is_image_id(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    hex.len() == 64 && is_lower_hex(hex)
}

pub(crate) fn is_lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a `sha256:<hex>` digest and returns its hex part.
pub fn digest_hex(digest: &str) -> Result<&str> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && is_lower_hex(hex) => Ok(hex),
        Some(("sha256", _)) => Err(Error::malformed(
            "digest",
            format!("{digest:?} is not a sha256 digest"),
        )),
        Some((algo, _)) => Err(Error::Unsupported {
            what: "digest algorithm".into(),
            value: algo.into(),
        }),
        None => Err(Error::malformed(
            "digest",
            format!("{digest:?} has no algorithm"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_normalise_like_docker() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.tagged().unwrap(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("foo/bar:1").unwrap();
        assert_eq!(r.tagged().unwrap(), "docker.io/foo/bar:1");
        let r = ImageRef::parse("127.0.0.1:5000/x/y:v2").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "x/y");
        assert_eq!(r.manifest_reference(), "v2");
        let r = ImageRef::parse("localhost/img").unwrap();
        assert_eq!(r.registry, "localhost");
    }

    #[test]
    fn digests_win_over_tags_and_keep_the_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(r.with_digest(&d), format!("docker.io/library/busybox@{d}"));
        let r = ImageRef::parse(&format!("busybox:1.0@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.manifest_reference(), d);
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in [
            "",
            " busybox",
            "Busybox",
            "a b",
            "busybox@sha256:12",
            "x:y:z",
            &format!("sha256:{}", "b".repeat(64)),
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn digest_hex_checks_algorithm_and_length() {
        let hex = "c".repeat(64);
        assert_eq!(digest_hex(&format!("sha256:{hex}")).unwrap(), hex);
        assert!(digest_hex("sha256:abc").is_err());
        assert!(digest_hex(&format!("sha512:{hex}")).is_err());
        assert!(digest_hex("nocolon").is_err());
        assert!(digest_hex(&format!("sha256:{}", "C".repeat(64))).is_err());
    }
}
