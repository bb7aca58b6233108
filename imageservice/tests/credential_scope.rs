//! Where registry credentials go, against small in-process fakes on
//! loopback addresses (127.0.0.1 and 127.0.0.2 are different hosts to the
//! client): a token realm over plain HTTP on another host gets none, one on
//! the registry's own host gets them, a blob redirect to another host
//! carries none, and a mirror is never offered the image host's.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use gantry_imageservice::config::RegistryConfig;
use gantry_imageservice::registry::{endpoints_for, Credentials, Endpoint, RegistryClient};
use gantry_imageservice::{Error, ImageConfig};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}"#;
// base64("alice:secret")
const ALICE: &str = "Basic YWxpY2U6c2VjcmV0";

/// What a fake saw: each request's path and Authorization header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

type Handler = Arc<dyn Fn(&str, Option<&str>) -> Response<Full<Bytes>> + Send + Sync>;

fn reply(status: StatusCode, body: &[u8], headers: &[(&str, String)]) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body)));
    *r.status_mut() = status;
    for (k, v) in headers {
        r.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r
}

/// An HTTP server on `ip` answering with `handler`; returns its address
/// and what it saw.
async fn fake(ip: &str, handler: Handler) -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0"))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (handler, log) = (handler.clone(), log.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let path = req.uri().path().to_string();
                    log.lock().unwrap().push((path.clone(), auth.clone()));
                    let r = handler(&path, auth.as_deref());
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A token server that hands out a token to anyone (so the pull works
/// either way, and only the header it saw tells the difference).
async fn token_server(ip: &str) -> (String, Seen) {
    fake(
        ip,
        Arc::new(|_, _| {
            reply(
                StatusCode::OK,
                br#"{"token":"t0k3n","expires_in":300}"#,
                &[],
            )
        }),
    )
    .await
}

/// A registry that wants a bearer token from `realm`.
async fn bearer_registry(realm: String) -> (String, Seen) {
    fake(
        "127.0.0.1",
        Arc::new(move |_, auth| {
            if auth == Some("Bearer t0k3n") {
                reply(
                    StatusCode::OK,
                    MANIFEST,
                    &[(
                        "content-type",
                        "application/vnd.oci.image.manifest.v1+json".into(),
                    )],
                )
            } else {
                reply(
                    StatusCode::UNAUTHORIZED,
                    b"",
                    &[(
                        "www-authenticate",
                        format!(r#"Bearer realm="{realm}",service="fake""#),
                    )],
                )
            }
        }),
    )
    .await
}

fn alice(base: String) -> Endpoint {
    Endpoint {
        base,
        credentials: Some(Credentials {
            username: "alice".into(),
            password: "secret".into(),
            ..Default::default()
        }),
    }
}

fn auths(seen: &Seen) -> Vec<Option<String>> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, a)| a.clone())
        .collect()
}

#[tokio::test]
async fn an_http_realm_on_another_host_gets_no_credentials() {
    let (token_addr, token_seen) = token_server("127.0.0.2").await;
    let (reg, _) = bearer_registry(format!("http://{token_addr}/token")).await;
    let client = RegistryClient::new(&ImageConfig::default()).unwrap();
    let m = client
        .manifest(&alice(format!("http://{reg}")), "team/app", "v1", 1 << 20)
        .await
        .unwrap();
    assert_eq!(m.bytes, MANIFEST);
    assert_eq!(auths(&token_seen), [None], "the realm saw credentials");
}

#[tokio::test]
async fn a_realm_on_the_registry_host_gets_them() {
    let (token_addr, token_seen) = token_server("127.0.0.1").await;
    let (reg, _) = bearer_registry(format!("http://{token_addr}/token")).await;
    let client = RegistryClient::new(&ImageConfig::default()).unwrap();
    client
        .manifest(&alice(format!("http://{reg}")), "team/app", "v1", 1 << 20)
        .await
        .unwrap();
    assert_eq!(auths(&token_seen), [Some(ALICE.to_string())]);
}

#[tokio::test]
async fn a_realm_that_is_not_http_is_refused() {
    let (reg, _) = bearer_registry("file:///etc/shadow".into()).await;
    let client = RegistryClient::new(&ImageConfig::default()).unwrap();
    let e = client
        .manifest(&alice(format!("http://{reg}")), "team/app", "v1", 1 << 20)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    assert!(e.to_string().contains("file:///etc/shadow"), "{e}");
}

#[tokio::test]
async fn a_blob_redirect_to_another_host_carries_no_credentials() {
    let (storage, storage_seen) = fake(
        "127.0.0.2",
        Arc::new(|_, _| reply(StatusCode::OK, b"blob bytes", &[])),
    )
    .await;
    let target = format!("http://{storage}/storage/blob");
    let (reg, reg_seen) = fake(
        "127.0.0.1",
        Arc::new(move |_, auth| {
            if auth == Some(ALICE) {
                reply(
                    StatusCode::TEMPORARY_REDIRECT,
                    b"",
                    &[("location", target.clone())],
                )
            } else {
                reply(
                    StatusCode::UNAUTHORIZED,
                    b"",
                    &[("www-authenticate", r#"Basic realm="fake""#.into())],
                )
            }
        }),
    )
    .await;
    let client = RegistryClient::new(&ImageConfig::default()).unwrap();
    let digest = format!("sha256:{}", "0".repeat(64));
    let r = client
        .blob(&alice(format!("http://{reg}")), "team/app", &digest)
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"blob bytes");
    assert_eq!(auths(&reg_seen), [None, Some(ALICE.to_string())]);
    assert_eq!(
        auths(&storage_seen),
        [None],
        "the redirect carried credentials"
    );
}

#[tokio::test]
async fn a_mirror_is_never_offered_the_image_hosts_credentials() {
    let (mirror, mirror_seen) = fake(
        "127.0.0.1",
        Arc::new(|_, _| {
            reply(
                StatusCode::UNAUTHORIZED,
                b"",
                &[("www-authenticate", r#"Basic realm="mirror""#.into())],
            )
        }),
    )
    .await;
    let mut cfg = ImageConfig::default();
    cfg.registries.insert(
        "private.example".into(),
        RegistryConfig {
            mirrors: vec![format!("http://{mirror}")],
            skip_upstream: true,
            username: Some("alice".into()),
            password: Some("secret".into()),
            ..Default::default()
        },
    );
    let request = Credentials {
        username: "bob".into(),
        password: "hunter2".into(),
        ..Default::default()
    };
    let client = RegistryClient::new(&cfg).unwrap();
    for req in [None, Some(&request)] {
        let endpoints = endpoints_for(&cfg, "private.example", req).unwrap();
        let e = client
            .manifest(&endpoints[0], "team/app", "v1", 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    }
    assert!(
        auths(&mirror_seen).iter().all(Option::is_none),
        "{:?}",
        mirror_seen.lock().unwrap()
    );

    // With an entry of its own, the mirror gets exactly that.
    cfg.registries.insert(
        mirror.clone(),
        RegistryConfig {
            username: Some("mirror-user".into()),
            password: Some("mirror-pw".into()),
            ..Default::default()
        },
    );
    let endpoints = endpoints_for(&cfg, "private.example", Some(&request)).unwrap();
    let _ = client
        .manifest(&endpoints[0], "team/app", "v1", 1 << 20)
        .await;
    let last = auths(&mirror_seen).pop().flatten();
    // base64("mirror-user:mirror-pw")
    assert_eq!(last.as_deref(), Some("Basic bWlycm9yLXVzZXI6bWlycm9yLXB3"));
}
