//! A node at its busiest: many pods started at once while images that
//! share layers are pulled side by side. Nothing deadlocks, every pod gets
//! an address of its own, and a layer several pulls want is downloaded
//! once.

use std::collections::HashSet;
use std::time::Duration;

use gantry_e2e::daemon::Gantry;
use gantry_e2e::fixture::{all_pods, named_pod_config, pull_request};
use gantry_e2e::net::TestNetwork;
use gantry_e2e::oci::{ImageSpec, Layer};
use gantry_e2e::static_http::StaticHttp;
use gantry_e2e::{local_registries, require_host};
use gantry_proto::v1::{PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest};

const PODS: usize = 50;
const IMAGES: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_pods_and_ten_pulls_sharing_layers_at_once() {
    require_host();
    let web = StaticHttp::start().await;
    // Two layers every image has (busybox, and a second shared one), and
    // one of its own.
    let shared = Layer::new().file("shared/data", &[7u8; 64 * 1024]);
    let mut shared_digests = Vec::new();
    let mut own_digests = Vec::new();
    for i in 0..IMAGES {
        let img = ImageSpec::new(vec![
            Layer::busybox(),
            shared.clone(),
            Layer::new().file(&format!("own/{i}"), format!("image {i}").as_bytes()),
        ])
        .label(&format!("concurrency-{i}"))
        .build();
        if i == 0 {
            shared_digests = img.layer_digests[..2].to_vec();
        } else {
            assert_eq!(
                img.layer_digests[..2],
                shared_digests[..],
                "the fixture must make identical shared layers"
            );
        }
        own_digests.push(img.layer_digests[2].clone());
        web.image(&format!("e2e/c{i}"), "1", &img);
    }
    let g = Gantry::start(&local_registries(&[&web.addr])).await;
    let net = TestNetwork::create(&g.dir.join("cni"), &g.dir.join("ipam"));

    let mut tasks = Vec::new();
    for i in 0..IMAGES {
        let mut images = g.images().await;
        let name = format!("{}/e2e/c{i}:1", web.addr);
        tasks.push(tokio::spawn(async move {
            images
                .pull_image(pull_request(&name))
                .await
                .map(|_| format!("pulled {name}"))
                .map_err(|e| format!("pulling {name}: {e}"))
        }));
    }
    for i in 0..PODS {
        let mut rt = g.runtime().await;
        tasks.push(tokio::spawn(async move {
            rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(named_pod_config(&format!("busy{i}"))),
                runtime_handler: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
            .map_err(|e| format!("RunPodSandbox busy{i}: {e}"))
        }));
    }
    // A guard against a deadlock hanging the suite, not a speed target.
    let results = tokio::time::timeout(
        Duration::from_secs(300),
        futures_util::future::join_all(tasks),
    )
    .await
    .unwrap_or_else(|_| panic!("calls still hang after 5 minutes; log:\n{}", g.log()));
    let mut pods = Vec::new();
    for r in results {
        match r.expect("a task panicked") {
            Ok(s) if s.starts_with("pulled ") => {}
            Ok(id) => pods.push(id),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(pods.len(), PODS);

    for digest in &shared_digests {
        let fetched: usize = (0..IMAGES)
            .map(|i| web.hits(&format!("/v2/e2e/c{i}/blobs/{digest}")))
            .sum();
        assert_eq!(
            fetched, 1,
            "shared layer {digest} downloaded {fetched} times"
        );
    }
    for (i, digest) in own_digests.iter().enumerate() {
        assert_eq!(web.hits(&format!("/v2/e2e/c{i}/blobs/{digest}")), 1);
    }

    let mut rt = g.runtime().await;
    let mut ips = HashSet::new();
    for id in &pods {
        let ip = rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        assert!(ip.starts_with(&net.subnet_prefix), "pod {id}: ip {ip:?}");
        assert!(ips.insert(ip.clone()), "{ip} given twice");
    }

    let mut removals = Vec::new();
    for id in pods {
        let mut rt = rt.clone();
        removals.push(tokio::spawn(async move {
            rt.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .map_err(|e| format!("RemovePodSandbox {id}: {e}"))
        }));
    }
    for r in futures_util::future::join_all(removals).await {
        if let Err(e) = r.expect("a task panicked") {
            panic!("{e}");
        }
    }
    assert!(all_pods(&mut rt).await.is_empty());
    assert!(
        net.reservations().is_empty(),
        "addresses outlived their pods: {:?}",
        net.reservations()
    );
}
