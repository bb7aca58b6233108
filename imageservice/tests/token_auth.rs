//! The bearer-token flow against a small in-process registry that speaks
//! the distribution token protocol: a 401 challenge naming a realm, a token
//! endpoint that wants basic credentials, and a manifest only served with
//! the token. (Debian's docker-registry cannot issue tokens on its own, so
//! the e2e suite covers basic auth and this covers bearer.)

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gantry_imageservice::registry::{Credentials, Endpoint, RegistryClient};
use gantry_imageservice::{Error, ImageConfig};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}"#;
// base64("alice:secret")
const GOOD_BASIC: &str = "Basic YWxpY2U6c2VjcmV0";

async fn serve(token_calls: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let realm = format!("http://{addr}/token");
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let realm = realm.clone();
            let token_calls = token_calls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let realm = realm.clone();
                    let token_calls = token_calls.clone();
                    async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let path = req.uri().path().to_string();
                        let query = req.uri().query().unwrap_or("").to_string();
                        let reply = |status: StatusCode, body: &[u8]| {
                            let mut r = Response::new(Full::new(Bytes::copy_from_slice(body)));
                            *r.status_mut() = status;
                            r
                        };
                        let r = if path == "/token" {
                            token_calls.fetch_add(1, Ordering::SeqCst);
                            if auth == GOOD_BASIC
                                && query.contains("scope=repository%3Ateam%2Fapp%3Apull")
                                && query.contains("service=test-registry")
                            {
                                reply(StatusCode::OK, br#"{"token":"t0k3n","expires_in":300}"#)
                            } else {
                                reply(StatusCode::UNAUTHORIZED, b"bad credentials")
                            }
                        } else if auth == "Bearer t0k3n" {
                            let mut r = reply(StatusCode::OK, MANIFEST);
                            r.headers_mut().insert(
                                "content-type",
                                "application/vnd.oci.image.manifest.v1+json"
                                    .parse()
                                    .unwrap(),
                            );
                            r
                        } else {
                            let mut r = reply(StatusCode::UNAUTHORIZED, b"");
                            let challenge = format!(
                                r#"Bearer realm="{realm}",service="test-registry",scope="repository:team/app:pull""#
                            );
                            r.headers_mut()
                                .insert("www-authenticate", challenge.parse().unwrap());
                            r
                        };
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn bearer_tokens_are_fetched_with_credentials_and_cached() {
    let calls = Arc::new(AtomicUsize::new(0));
    let addr = serve(calls.clone()).await;
    let client = RegistryClient::new(&ImageConfig::default()).unwrap();
    let endpoint = Endpoint {
        base: format!("http://{addr}"),
        credentials: Some(Credentials {
            username: "alice".into(),
            password: "secret".into(),
            ..Default::default()
        }),
    };
    let m = client
        .manifest(&endpoint, "team/app", "v1", 1 << 20)
        .await
        .unwrap();
    assert_eq!(m.bytes, MANIFEST);
    assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
    // The token is reused for the next request.
    client
        .manifest(&endpoint, "team/app", "v1", 1 << 20)
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Wrong password: the token service refuses, and the error says so.
    let bad = Endpoint {
        base: format!("http://{addr}"),
        credentials: Some(Credentials {
            username: "alice".into(),
            password: "nope".into(),
            ..Default::default()
        }),
    };
    let fresh = RegistryClient::new(&ImageConfig::default()).unwrap();
    let e = fresh
        .manifest(&bad, "team/app", "v1", 1 << 20)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    assert!(!e.to_string().contains("nope"));

    // A token handed over by the caller (CRI registry_token) is used as is.
    let with_token = Endpoint {
        base: format!("http://{addr}"),
        credentials: Some(Credentials {
            registry_token: "t0k3n".into(),
            ..Default::default()
        }),
    };
    let before = calls.load(Ordering::SeqCst);
    fresh
        .manifest(&with_token, "team/app", "v1", 1 << 20)
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), before);

    // The manifest cap holds.
    let e = client
        .manifest(&endpoint, "team/app", "v1", 16)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::LimitExceeded(_)), "{e:?}");
}
