//! A client for OCI distribution registries, written here rather than taken
//! from `oci-client` because the pull path needs three things that crate does
//! not give together: an ordered list of endpoints per host (mirrors, then the
//! upstream host, with per-endpoint plain-HTTP and credentials), manifests read
//! with a hard size cap instead of buffered whole, and blob bodies handed over
//! as a raw stream so the content store can verify and persist them itself.
//!
//! Auth follows the distribution token spec: anonymous first; on a 401 the
//! `WWW-Authenticate` challenge says either Basic (send the credentials) or
//! Bearer (fetch a token from the realm, with the credentials if any, and
//! cache it per endpoint and repository).
//!
//! Credentials go only where they were given for: a registry's own (from
//! the request or its config entry) to that registry, a mirror's own config
//! entry to that mirror and never the image host's, and to a token realm
//! only over https or on the endpoint's own host (a challenge is attacker
//! input: an http realm elsewhere would read them off the wire).
//! Redirects (blob storage) never carry them to another host: reqwest drops
//! the Authorization header when a redirect changes host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use tracing::{debug, warn};

use crate::config::ImageConfig;
use crate::error::{Error, Result};
use crate::mediatype;
use crate::reference::ImageRef;

/// Username and password (or a ready-made token) for one registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// A bearer token the caller already holds (CRI `registry_token`).
    pub registry_token: String,
}

// Credentials never reach logs or error messages.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// From the CRI `AuthConfig`: username/password, or `auth` holding
    /// base64 `user:password`, or a registry token.
    pub fn from_cri(
        username: &str,
        password: &str,
        auth: &str,
        registry_token: &str,
    ) -> Result<Option<Credentials>> {
        if !registry_token.is_empty() {
            return Ok(Some(Credentials {
                registry_token: registry_token.to_string(),
                ..Default::default()
            }));
        }
        if !auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| Error::InvalidArgument("auth is not valid base64".into()))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| Error::InvalidArgument("auth is not UTF-8".into()))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| Error::InvalidArgument("auth must encode user:password".into()))?;
            return Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
                ..Default::default()
            }));
        }
        if !username.is_empty() || !password.is_empty() {
            return Ok(Some(Credentials {
                username: username.to_string(),
                password: password.to_string(),
                ..Default::default()
            }));
        }
        Ok(None)
    }
}

/// One place to fetch a repository from: a mirror or the upstream host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://host[:port][/prefix]`, without a trailing slash.
    pub base: String,
    pub credentials: Option<Credentials>,
}

/// The endpoints to try for a registry host, in order.
pub fn endpoints_for(
    config: &ImageConfig,
    registry: &str,
    request_credentials: Option<&Credentials>,
) -> Result<Vec<Endpoint>> {
    let host_cfg = config.registries.get(registry);
    let host_credentials = host_cfg.and_then(|c| match (&c.username, &c.password) {
        (Some(u), p) => Some(Credentials {
            username: u.clone(),
            password: p.clone().unwrap_or_default(),
            ..Default::default()
        }),
        _ => None,
    });
    let upstream_credentials = request_credentials.cloned().or(host_credentials);
    let mut out = Vec::new();
    for mirror in host_cfg.map(|c| c.mirrors.as_slice()).unwrap_or_default() {
        let base = mirror.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::InvalidArgument(format!(
                "mirror {mirror:?} of {registry} must be an http:// or https:// URL"
            )));
        }
        let mirror_host = base
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        // A mirror is another party: it gets its own configured
        // credentials, never those meant for the image's host.
        let credentials = config.registries.get(mirror_host).and_then(|c| {
            c.username.as_ref().map(|u| Credentials {
                username: u.clone(),
                password: c.password.clone().unwrap_or_default(),
                ..Default::default()
            })
        });
        out.push(Endpoint { base, credentials });
    }
    if !host_cfg.is_some_and(|c| c.skip_upstream) {
        let insecure = host_cfg.is_some_and(|c| c.insecure);
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if insecure { "http" } else { "https" };
        out.push(Endpoint {
            base: format!("{scheme}://{host}"),
            credentials: upstream_credentials.clone(),
        });
        // A registry on this machine is most often a plain-HTTP test or
        // cache registry; Docker and containerd fall back to HTTP for
        // loopback hosts without being told, and so does gantry. Nothing
        // leaves the machine, so the credentials may go along.
        if !insecure && is_loopback_host(host) {
            out.push(Endpoint {
                base: format!("http://{host}"),
                credentials: upstream_credentials,
            });
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "registry {registry} has skip_upstream set and no mirrors"
        )));
    }
    Ok(out)
}

/// `localhost`, `127.0.0.0/8` or `::1`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        // A bare IPv6 address has colons of its own.
        return ip.is_loopback();
    }
    let name = match host.strip_prefix('[') {
        // [::1]:5000
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A send error, with the hint an operator needs when an https endpoint
/// is really a plain-HTTP server (rustls sees HTTP bytes where a TLS record
/// should be).
fn unreachable(endpoint: &Endpoint, e: &reqwest::Error) -> Error {
    let mut reason = error_chain(e);
    if endpoint.base.starts_with("https://") && reason.contains("InvalidContentType") {
        let host = endpoint.base.trim_start_matches("https://");
        let host = host.split('/').next().unwrap_or(host);
        reason = format!(
            "{host} answers plain HTTP, not HTTPS; if that registry is meant to be used without TLS, set image.registries.\"{host}\".insecure: true ({reason})"
        );
    }
    Error::Unreachable {
        endpoint: endpoint.base.clone(),
        reason,
    }
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    expires: Instant,
}

/// The shared HTTP client and token cache.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    /// For non-distributable layers: follows a redirect only to a URL that
    /// the configured prefixes allow too, so an image cannot bounce gantry
    /// to an address it was never allowed to fetch from.
    foreign: reqwest::Client,
    tokens: Arc<Mutex<HashMap<(String, String), CachedToken>>>,
}

/// A manifest or index as the registry returned it.
#[derive(Debug)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

impl RegistryClient {
    pub fn new(config: &ImageConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
            .read_timeout(Duration::from_secs(config.read_timeout_secs.max(1)))
            .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("building the HTTP client: {e}")))?;
        let prefixes = config.foreign_layer_url_prefixes.clone();
        let foreign = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
            .read_timeout(Duration::from_secs(config.read_timeout_secs.max(1)))
            .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                let url = attempt.url().to_string();
                if attempt.previous().len() >= 5 {
                    attempt.error("too many redirects")
                } else if foreign_url_allowed(&prefixes, &url) {
                    attempt.follow()
                } else {
                    attempt.error(format!(
                        "redirected to {url}, outside image.foreign_layer_url_prefixes"
                    ))
                }
            }))
            .build()
            .map_err(|e| Error::Internal(format!("building the HTTP client: {e}")))?;
        Ok(RegistryClient {
            http,
            foreign,
            tokens: Arc::default(),
        })
    }

    /// GET a manifest (by tag or digest) from one endpoint, reading at most
    /// `max_bytes`, and verify it against the digest when asked by digest.
    pub async fn manifest(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        reference: &str,
        max_bytes: u64,
    ) -> Result<FetchedManifest> {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            endpoint.base, repository, reference
        );
        let accept = [
            mediatype::OCI_INDEX,
            mediatype::OCI_MANIFEST,
            mediatype::DOCKER_LIST,
            mediatype::DOCKER_MANIFEST,
        ]
        .join(", ");
        let response = self.get(endpoint, repository, &url, Some(&accept)).await?;
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .unwrap_or_default();
        let bytes = read_capped(response, max_bytes, "manifest").await?;
        let digest = crate::content::sha256_digest(&bytes);
        if reference.contains(':') && reference != digest {
            return Err(Error::DigestMismatch {
                digest: reference.to_string(),
                reason: format!(
                    "{} served a manifest whose digest is {digest}",
                    endpoint.base
                ),
            });
        }
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// GET a blob; the caller streams and verifies the body.
    pub async fn blob(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        digest: &str,
    ) -> Result<Response> {
        let url = format!("{}/v2/{}/blobs/{}", endpoint.base, repository, digest);
        self.get(endpoint, repository, &url, None).await
    }

    /// GET a non-distributable layer from a URL its manifest names. No
    /// registry credentials go there: it is not the registry.
    pub async fn foreign_blob(&self, url: &str) -> Result<Response> {
        let response = self
            .foreign
            .get(url)
            .send()
            .await
            .map_err(|e| Error::Unreachable {
                endpoint: url.to_string(),
                reason: error_chain(&e),
            })?;
        if !response.status().is_success() {
            return Err(Error::RegistryStatus {
                endpoint: url.to_string(),
                status: response.status().as_u16(),
                url: url.to_string(),
            });
        }
        Ok(response)
    }

    /// GET with auth: anonymous or cached token first, then answer the 401
    /// challenge once.
    async fn get(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        url: &str,
        accept: Option<&str>,
    ) -> Result<Response> {
        let key = (endpoint.base.clone(), repository.to_string());
        let mut authorization = self.cached_token(&key);
        if authorization.is_none() {
            if let Some(c) = endpoint
                .credentials
                .as_ref()
                .filter(|c| !c.registry_token.is_empty())
            {
                authorization = Some(format!("Bearer {}", c.registry_token));
            }
        }
        let mut answered_challenge = false;
        loop {
            let mut request = self.http.get(url);
            if let Some(a) = accept {
                request = request.header(ACCEPT, a);
            }
            if let Some(a) = &authorization {
                request = request.header(AUTHORIZATION, a);
            }
            let response = request
                .send()
                .await
                .map_err(|e| unreachable(endpoint, &e))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == StatusCode::UNAUTHORIZED && !answered_challenge {
                answered_challenge = true;
                let challenge = parse_challenge(response.headers());
                authorization = Some(self.answer_challenge(endpoint, &key, challenge).await?);
                continue;
            }
            debug!(url, %status, "registry refused the request");
            return Err(match status {
                StatusCode::NOT_FOUND => Error::NotFoundInRegistry(url.to_string()),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthenticated {
                    endpoint: endpoint.base.clone(),
                    reason: format!("{status} for {url}"),
                },
                _ => Error::RegistryStatus {
                    endpoint: endpoint.base.clone(),
                    status: status.as_u16(),
                    url: url.to_string(),
                },
            });
        }
    }

    fn cached_token(&self, key: &(String, String)) -> Option<String> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match tokens.get(key) {
            Some(t) if t.expires > Instant::now() => Some(t.token.clone()),
            Some(_) => {
                tokens.remove(key);
                None
            }
            None => None,
        }
    }

    async fn answer_challenge(
        &self,
        endpoint: &Endpoint,
        key: &(String, String),
        challenge: Challenge,
    ) -> Result<String> {
        let unauthenticated = |reason: &str| Error::Unauthenticated {
            endpoint: endpoint.base.clone(),
            reason: reason.to_string(),
        };
        let realm_ok = match &challenge {
            Challenge::Bearer { realm, .. } => realm_may_see_credentials(&endpoint.base, realm)?,
            _ => true,
        };
        let basic = endpoint
            .credentials
            .as_ref()
            .filter(|c| !c.username.is_empty() && realm_ok)
            .map(|c| {
                let raw = format!("{}:{}", c.username, c.password);
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )
            });
        match challenge {
            Challenge::Basic => basic.ok_or_else(|| {
                unauthenticated("the registry requires credentials and none were given")
            }),
            Challenge::Bearer { realm, service } => {
                let scope = format!("repository:{}:pull", key.1);
                let mut request = self.http.get(&realm).query(&[("scope", scope.as_str())]);
                if let Some(s) = &service {
                    request = request.query(&[("service", s.as_str())]);
                }
                if let Some(b) = &basic {
                    request = request.header(AUTHORIZATION, b);
                }
                let response = request.send().await.map_err(|e| Error::Unreachable {
                    endpoint: realm.clone(),
                    reason: error_chain(&e),
                })?;
                if !response.status().is_success() {
                    return Err(unauthenticated(&format!(
                        "token service {realm} answered {}",
                        response.status()
                    )));
                }
                let body = read_capped(response, 1 << 20, "token response").await?;
                let token: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|e| Error::malformed("token response", e))?;
                let value = token
                    .token
                    .or(token.access_token)
                    .ok_or_else(|| unauthenticated("token response carries no token"))?;
                // Tokens without a lifetime are good for 60 s per the spec.
                let lifetime = token.expires_in.unwrap_or(60).clamp(10, 3600);
                let header = format!("Bearer {value}");
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(
                        key.clone(),
                        CachedToken {
                            token: header.clone(),
                            expires: Instant::now()
                                + Duration::from_secs(lifetime.saturating_sub(5)),
                        },
                    );
                Ok(header)
            }
            Challenge::None => Err(unauthenticated("401 without a WWW-Authenticate challenge")),
        }
    }
}

/// Whether a non-distributable layer may be fetched from `url`: plain
/// HTTP(S) under one of the configured prefixes.
pub fn foreign_url_allowed(prefixes: &[String], url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && prefixes
            .iter()
            .any(|p| !p.is_empty() && url.starts_with(p.as_str()))
}

/// Whether the credentials of the endpoint at `base` may be sent to the
/// token `realm` its challenge names: over https, or to the endpoint's own
/// host (any port: the same machine). Not an http(s) URL is an error.
fn realm_may_see_credentials(base: &str, realm: &str) -> Result<bool> {
    let bad = |why: &str| Error::Unauthenticated {
        endpoint: base.to_string(),
        reason: format!("token realm {realm:?} {why}"),
    };
    let url = reqwest::Url::parse(realm).map_err(|_| bad("is not a URL"))?;
    let realm_host = url.host_str().ok_or_else(|| bad("has no host"))?;
    match url.scheme() {
        "https" => return Ok(true),
        "http" => {}
        _ => return Err(bad("is not http or https")),
    }
    let same = reqwest::Url::parse(base)
        .ok()
        .and_then(|b| b.host_str().map(|h| h.eq_ignore_ascii_case(realm_host)))
        .unwrap_or(false);
    if !same {
        warn!(
            endpoint = base,
            realm, "not sending credentials to a plain-http token realm on another host"
        );
    }
    Ok(same)
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
    None,
}

fn parse_challenge(headers: &HeaderMap) -> Challenge {
    let Some(value) = headers.get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()) else {
        return Challenge::None;
    };
    parse_challenge_str(value)
}

fn parse_challenge_str(value: &str) -> Challenge {
    let (scheme, params) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Challenge::Basic;
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Challenge::None;
    }
    let mut realm = None;
    let mut service = None;
    for (k, v) in parse_params(params) {
        match k.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(v),
            "service" => service = Some(v),
            _ => {}
        }
    }
    match realm {
        Some(realm) => Challenge::Bearer { realm, service },
        None => Challenge::None,
    }
}

/// `k="v", k2=v2` with commas allowed inside quotes.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_string(), &quoted[end + 1..]),
                None => (quoted.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Reads a whole response body, failing as soon as it passes `max` bytes.
pub async fn read_capped(response: Response, max: u64, what: &str) -> Result<Vec<u8>> {
    if let Some(len) = response.content_length() {
        if len > max {
            return Err(Error::LimitExceeded(format!(
                "{what} is {len} bytes, more than the limit of {max}"
            )));
        }
    }
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::Unreachable {
            endpoint: what.to_string(),
            reason: error_chain(&e),
        })?;
        if out.len() as u64 + chunk.len() as u64 > max {
            return Err(Error::LimitExceeded(format!(
                "{what} is larger than the limit of {max} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Picks the first endpoint that answers for the manifest; later endpoints
/// are tried only for errors another endpoint could fix.
pub async fn resolve_manifest(
    client: &RegistryClient,
    endpoints: &[Endpoint],
    image: &ImageRef,
    max_bytes: u64,
) -> Result<(Endpoint, FetchedManifest)> {
    let mut last_error = None;
    for endpoint in endpoints {
        match client
            .manifest(
                endpoint,
                &image.repository,
                image.manifest_reference(),
                max_bytes,
            )
            .await
        {
            Ok(m) => return Ok((endpoint.clone(), m)),
            Err(e) if e.try_next_endpoint() => {
                warn!(endpoint = %endpoint.base, image = %image, error = %e, "endpoint failed, trying the next");
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(match last_error {
        Some(Error::NotFoundInRegistry(_)) => Error::NotFoundInRegistry(image.to_string()),
        Some(e) => e,
        None => Error::Internal("no registry endpoint to try".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegistryConfig;

    #[test]
    fn loopback_hosts_are_told_apart() {
        for h in [
            "localhost",
            "LOCALHOST:5000",
            "127.0.0.1",
            "127.1.2.3:5000",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "localhost.example",
            "128.0.0.1:5000",
            "10.0.0.1",
            "[::2]:5000",
            "registry.example:5000",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn loopback_registries_fall_back_to_plain_http() {
        let cfg = ImageConfig::default();
        let e = endpoints_for(&cfg, "127.0.0.1:5000", None).unwrap();
        let bases: Vec<_> = e.iter().map(|e| e.base.as_str()).collect();
        assert_eq!(bases, ["https://127.0.0.1:5000", "http://127.0.0.1:5000"]);
        let e = endpoints_for(&cfg, "registry.example", None).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].base, "https://registry.example");
    }

    #[test]
    fn bearer_challenge_is_parsed() {
        let c = parse_challenge_str(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            }
        );
        assert_eq!(
            parse_challenge_str(r#"Basic realm="Registry Realm""#),
            Challenge::Basic
        );
        assert_eq!(parse_challenge_str("Negotiate"), Challenge::None);
        assert_eq!(parse_challenge_str("Bearer service=x"), Challenge::None);
    }

    #[test]
    fn mirrors_come_first_then_upstream() {
        let mut cfg = ImageConfig::default();
        cfg.registries.insert(
            "docker.io".into(),
            RegistryConfig {
                mirrors: vec!["http://127.0.0.1:5000/".into(), "https://m2.example".into()],
                ..Default::default()
            },
        );
        let e = endpoints_for(&cfg, "docker.io", None).unwrap();
        let bases: Vec<_> = e.iter().map(|e| e.base.as_str()).collect();
        assert_eq!(
            bases,
            [
                "http://127.0.0.1:5000",
                "https://m2.example",
                "https://registry-1.docker.io"
            ]
        );

        cfg.registries.get_mut("docker.io").unwrap().skip_upstream = true;
        assert_eq!(endpoints_for(&cfg, "docker.io", None).unwrap().len(), 2);

        cfg.registries.insert(
            "local:5000".into(),
            RegistryConfig {
                insecure: true,
                ..Default::default()
            },
        );
        assert_eq!(
            endpoints_for(&cfg, "local:5000", None).unwrap()[0].base,
            "http://local:5000"
        );

        cfg.registries.insert(
            "nowhere".into(),
            RegistryConfig {
                skip_upstream: true,
                ..Default::default()
            },
        );
        assert!(endpoints_for(&cfg, "nowhere", None).is_err());
        cfg.registries.insert(
            "bad".into(),
            RegistryConfig {
                mirrors: vec!["127.0.0.1:5000".into()],
                ..Default::default()
            },
        );
        assert!(endpoints_for(&cfg, "bad", None).is_err());
    }

    #[test]
    fn a_mirror_gets_only_its_own_credentials() {
        let mut cfg = ImageConfig::default();
        cfg.registries.insert(
            "r.example".into(),
            RegistryConfig {
                mirrors: vec![
                    "https://plain-mirror.example".into(),
                    "https://own-mirror.example:5000/prefix".into(),
                ],
                username: Some("upstream-user".into()),
                password: Some("upstream-pw".into()),
                ..Default::default()
            },
        );
        cfg.registries.insert(
            "own-mirror.example:5000".into(),
            RegistryConfig {
                username: Some("mirror-user".into()),
                password: Some("mirror-pw".into()),
                ..Default::default()
            },
        );
        let request = Credentials {
            username: "request-user".into(),
            password: "request-pw".into(),
            ..Default::default()
        };
        for req in [None, Some(&request)] {
            let e = endpoints_for(&cfg, "r.example", req).unwrap();
            assert_eq!(e.len(), 3);
            assert_eq!(e[0].credentials, None, "{req:?}");
            let own = e[1].credentials.as_ref().unwrap();
            assert_eq!(
                (own.username.as_str(), own.password.as_str()),
                ("mirror-user", "mirror-pw")
            );
            let upstream = e[2].credentials.as_ref().unwrap();
            let want = if req.is_some() {
                "request-user"
            } else {
                "upstream-user"
            };
            assert_eq!(upstream.username, want);
        }
    }

    #[test]
    fn token_realms_see_credentials_only_over_https_or_on_the_same_host() {
        let ok = |base: &str, realm: &str| realm_may_see_credentials(base, realm).unwrap();
        assert!(ok("http://r.example:5000", "https://auth.elsewhere/token"));
        assert!(ok("https://r.example", "https://auth.elsewhere/token"));
        assert!(ok("http://r.example:5000", "http://r.example:5001/token"));
        assert!(ok("https://R.example", "http://r.EXAMPLE/token"));
        assert!(!ok("https://r.example", "http://auth.elsewhere/token"));
        assert!(!ok("http://127.0.0.1:5000", "http://127.0.0.2:5000/token"));
        for bad in [
            "file:///etc/passwd",
            "not a url",
            "ftp://r.example/t",
            "data:,x",
        ] {
            assert!(
                realm_may_see_credentials("https://r.example", bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn request_credentials_beat_configured_ones() {
        let mut cfg = ImageConfig::default();
        cfg.registries.insert(
            "r.example".into(),
            RegistryConfig {
                username: Some("cfg".into()),
                password: Some("pw".into()),
                ..Default::default()
            },
        );
        let e = endpoints_for(&cfg, "r.example", None).unwrap();
        assert_eq!(e[0].credentials.as_ref().unwrap().username, "cfg");
        let req = Credentials {
            username: "req".into(),
            ..Default::default()
        };
        let e = endpoints_for(&cfg, "r.example", Some(&req)).unwrap();
        assert_eq!(e[0].credentials.as_ref().unwrap().username, "req");
    }

    #[test]
    fn foreign_urls_need_a_prefix() {
        let p = vec!["https://layers.example/".to_string(), String::new()];
        assert!(foreign_url_allowed(&p, "https://layers.example/a.tgz"));
        assert!(!foreign_url_allowed(
            &p,
            "https://layers.example.evil/a.tgz"
        ));
        assert!(!foreign_url_allowed(&p, "http://169.254.169.254/"));
        assert!(!foreign_url_allowed(
            &["file:///".into()],
            "file:///etc/passwd"
        ));
        assert!(!foreign_url_allowed(&[], "https://layers.example/a.tgz"));
    }

    #[test]
    fn cri_auth_field_decodes() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        let c = Credentials::from_cri("", "", &auth, "").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "s3cr:et")
        );
        assert!(Credentials::from_cri("", "", "!!", "").is_err());
        assert!(Credentials::from_cri("", "", "", "").unwrap().is_none());
        let dbg = format!(
            "{:?}",
            Credentials::from_cri("u", "hunter2", "", "").unwrap()
        );
        assert!(!dbg.contains("hunter2"));
    }
}
