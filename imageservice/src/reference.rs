//! Image reference parsing and Docker-style normalisation
//! (`busybox` → `docker.io/library/busybox:latest`), plus the rules the CRI
//! needs on top: canonical tag and digest forms, and telling an image ID
//! apart from a name.
//!
//! The grammar (distribution's `reference` package) is checked by hand here:
//! `oci-spec`'s parser compiles a regular expression whose automaton and
//! caches hold about 16 MiB for the life of the process, more than the whole
//! idle daemon.

use crate::error::{Error, Result};

const DEFAULT_REGISTRY: &str = "docker.io";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

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

/// `[a-z0-9]+` separated by `.`, `_`, `__` or runs of `-`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A host name, IPv4 address or `[IPv6]`, with an optional port.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match after {
                    "" => return true,
                    p => (None, p.strip_prefix(':')),
                }
            }
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    match host {
        None => port.is_some(),
        Some(h) => {
            !h.is_empty()
                && h.split('.').all(|label| {
                    let b = label.as_bytes();
                    !b.is_empty()
                        && b[0].is_ascii_alphanumeric()
                        && b[b.len() - 1].is_ascii_alphanumeric()
                        && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
                })
        }
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.trim().is_empty() {
            return Err(invalid("the image name is empty"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "the name contains whitespace or control characters",
            ));
        }
        if is_image_id(input) {
            return Err(invalid("this is an image ID, not a name to pull"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                digest_hex(d)
                    .map_err(|_| invalid("the digest must be sha256:<64 lower-case hex digits>"))?;
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        // A tag is a ':' after the last '/', so a registry port is not one.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (n, t) = rest.split_at(last_slash + i);
                (n, Some(t[1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(invalid(
                    "the tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
                ));
            }
        }
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(invalid("the repository name must be 1 to 255 characters"));
        }
        // Docker's rule: the first component is a registry if it looks like
        // a host (a dot, a port, "localhost", or upper case).
        let (registry, remote) = match name.split_once('/') {
            Some((first, remote))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                if !valid_domain(first) {
                    return Err(invalid("the registry host is not a valid host[:port]"));
                }
                (first.to_string(), remote.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if remote.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository names must be lower case"));
        }
        if !remote.split('/').all(valid_path_component) {
            return Err(invalid("the repository path has an invalid component"));
        }
        let repository = if registry == DEFAULT_REGISTRY && !remote.contains('/') {
            format!("library/{remote}")
        } else {
            remote
        };
        // The limit is on the full name, as written once normalised (what
        // is stored and printed must parse again).
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(invalid("the repository name must be 1 to 255 characters"));
        }
        // By digest alone, no tag; with both, the digest is what is pulled
        // and the tag is kept to list the image under, as docker does.
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
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

    /// Found by `fuzz_image_references`: a 248-character short name was
    /// accepted, but its normalised form (`docker.io/library/…`) is over
    /// the limit and did not parse again.
    #[test]
    fn the_name_limit_holds_for_the_normalised_name() {
        let long = "a".repeat(240);
        let e = ImageRef::parse(&long).unwrap_err();
        assert!(e.to_string().contains("1 to 255"), "{e}");
        let fits = "a".repeat(255 - "docker.io/library/".len());
        let r = ImageRef::parse(&fits).unwrap();
        assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
    }

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
    fn hosts_ports_and_separators() {
        let r = ImageRef::parse("[::1]:5000/a/b:1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("[::1]:5000", "a/b")
        );
        let r = ImageRef::parse("localhost:5000/x").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("localhost:5000", Some("latest"))
        );
        let r = ImageRef::parse("a.b-c.io/x__y/z-w.v--u:1.0_rc").unwrap();
        assert_eq!(r.repository, "x__y/z-w.v--u");
        assert_eq!(r.tag.as_deref(), Some("1.0_rc"));
        let r = ImageRef::parse("registry.k8s.io/e2e-test-images/busybox:1.29-2").unwrap();
        assert_eq!(
            r.tagged().unwrap(),
            "registry.k8s.io/e2e-test-images/busybox:1.29-2"
        );
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
            "x:",
            "a//b",
            "a/-b",
            "host:port:5000/x",
            "reg.io:/x",
            "a/b:-tag",
            &format!("x:{}", "t".repeat(129)),
            " busybox",
            "Busybox",
            "library/UPPER",
            "reg.io/Repo:1",
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
