//! A configuration put in force with `ImageStore::set_config` (the daemon's
//! reload) steers the next pull: a mirror added for a registry is where
//! the pull goes, and the store stays where it is.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gantry_imageservice::{ImageConfig, ImageMetrics, ImageStore, RegistryConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain-HTTP server on 127.0.0.1 that counts requests and answers 404
/// to each; returns its host:port and the counter.
async fn counting_registry() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                if matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn a_reloaded_mirror_takes_the_next_pull() {
    let (upstream, upstream_hits) = counting_registry().await;
    let (mirror, mirror_hits) = counting_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ImageConfig {
        root: dir.path().join("images"),
        ..Default::default()
    };
    let metrics = ImageMetrics::new(&prometheus::Registry::new()).unwrap();
    let store = ImageStore::open(config.clone(), metrics).unwrap();
    let image = format!("{upstream}/team/app:1");

    assert!(store.pull(&image, None).await.is_err());
    assert!(upstream_hits.load(Ordering::SeqCst) > 0);
    assert_eq!(mirror_hits.load(Ordering::SeqCst), 0);

    let mut registries = BTreeMap::new();
    registries.insert(
        upstream.clone(),
        RegistryConfig {
            mirrors: vec![format!("http://{mirror}")],
            skip_upstream: true,
            ..Default::default()
        },
    );
    let reloaded = ImageConfig {
        // Not reloadable: ignored.
        root: dir.path().join("elsewhere"),
        registries,
        ..config
    };
    store.set_config(reloaded.clone()).unwrap();
    assert_eq!(store.root(), dir.path().join("images"));
    assert_eq!(store.config().registries, reloaded.registries);

    let before = upstream_hits.load(Ordering::SeqCst);
    assert!(store.pull(&image, None).await.is_err());
    assert!(
        mirror_hits.load(Ordering::SeqCst) > 0,
        "the mirror was not asked"
    );
    assert_eq!(
        upstream_hits.load(Ordering::SeqCst),
        before,
        "skip_upstream was not honoured after the reload"
    );
}
