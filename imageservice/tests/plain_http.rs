//! A registry that speaks plain HTTP where HTTPS was expected: on loopback
//! gantry falls back to HTTP by itself; anywhere else the error tells the
//! operator what is wrong and which setting to change.

use gantry_imageservice::reference::ImageRef;
use gantry_imageservice::registry::{endpoints_for, resolve_manifest, Endpoint, RegistryClient};
use gantry_imageservice::{Error, ImageConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}"#;

/// A plain-HTTP server on 127.0.0.1 that answers every request with the
/// manifest above; returns its host:port.
async fn plain_http_registry() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let Ok(n) = s.read(&mut buf).await else {
                    return;
                };
                // A TLS ClientHello gets the same HTTP answer a plain
                // registry gives it: that is what confuses the client.
                let _ = n;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{MANIFEST}",
                    MANIFEST.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn loopback_falls_back_to_http_and_elsewhere_the_error_names_the_setting() {
    let addr = plain_http_registry().await;
    let config = ImageConfig::default();
    let client = RegistryClient::new(&config).unwrap();
    let image = ImageRef::parse(&format!("{addr}/team/app:1")).unwrap();

    let endpoints = endpoints_for(&config, &image.registry, None).unwrap();
    let (used, manifest) = resolve_manifest(&client, &endpoints, &image, 1 << 20)
        .await
        .expect("a loopback registry over plain HTTP");
    assert_eq!(used.base, format!("http://{addr}"));
    assert_eq!(manifest.bytes, MANIFEST.as_bytes());

    // The same server as an https endpoint alone, as a non-loopback
    // registry would be tried.
    let https_only = [Endpoint {
        base: format!("https://{addr}"),
        credentials: None,
    }];
    let err = resolve_manifest(&client, &https_only, &image, 1 << 20)
        .await
        .expect_err("https to a plain-HTTP server");
    let text = err.to_string();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(text.contains("answers plain HTTP"), "{text}");
    assert!(
        text.contains(&format!("image.registries.\"{addr}\".insecure: true")),
        "{text}"
    );
}
