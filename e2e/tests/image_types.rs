//! Every kind of image a registry serves, pulled by the real daemon: layer
//! media types and compressions, indexes with attestations and nesting,
//! pulls by digest, non-distributable layers, Docker schema 1, OCI
//! artifacts, and what a failed or killed pull leaves in the store.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gantry_e2e::daemon::Gantry;
use gantry_e2e::fixture::{
    create_and_start, pull_request, remove_pod, stop_pod, store_counts, BusyboxEnv, StoreCounts,
};
use gantry_e2e::oci::{
    artifact, attestation, attestation_entry, compress, layer_media, BuiltImage, Compression,
    ImageSpec, Layer, Pusher, OCI_INDEX,
};
use gantry_e2e::registry::Registry;
use gantry_e2e::static_http::{Route, StaticHttp};
use gantry_e2e::{local_registries, require_host};
use gantry_proto::v1::image_service_client::ImageServiceClient;
use gantry_proto::v1::{
    CreateContainerRequest, Image, ImageFsInfoRequest, ImageSpec as CriImageSpec,
    ImageStatusRequest, ListImagesRequest, RemoveImageRequest,
};
use serde_json::json;
use tonic::transport::Channel;
use tonic::Code;

type Images = ImageServiceClient<Channel>;

const EMPTY: StoreCounts = StoreCounts {
    blobs: 0,
    snapshots: 0,
    unpacking: 0,
    ingest: 0,
    records: 0,
};

fn cri_spec(name: &str) -> Option<CriImageSpec> {
    Some(CriImageSpec {
        image: name.into(),
        ..Default::default()
    })
}

async fn pull(images: &mut Images, name: &str) -> String {
    images
        .pull_image(pull_request(name))
        .await
        .unwrap_or_else(|e| panic!("pulling {name}: {e}"))
        .into_inner()
        .image_ref
}

async fn pull_err(images: &mut Images, name: &str) -> tonic::Status {
    match images.pull_image(pull_request(name)).await {
        Ok(r) => panic!("pulling {name} succeeded: {:?}", r.into_inner()),
        Err(e) => e,
    }
}

/// The image and the verbose `info` JSON ImageStatus gives for `name`.
async fn status(images: &mut Images, name: &str) -> (Image, serde_json::Value) {
    let r = images
        .image_status(ImageStatusRequest {
            image: cri_spec(name),
            verbose: true,
        })
        .await
        .unwrap_or_else(|e| panic!("ImageStatus {name}: {e}"))
        .into_inner();
    let image = r
        .image
        .unwrap_or_else(|| panic!("ImageStatus {name}: no image"));
    let info = serde_json::from_str(&r.info["info"]).expect("verbose info JSON");
    (image, info)
}

async fn used_bytes(images: &mut Images) -> u64 {
    images
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner()
        .image_filesystems[0]
        .used_bytes
        .as_ref()
        .map(|v| v.value)
        .unwrap_or(0)
}

/// A metric's value from the Prometheus text, by its full series name.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn snapshot_dirs(info: &serde_json::Value) -> Vec<PathBuf> {
    info["snapshots"]
        .as_array()
        .expect("snapshots in the verbose info")
        .iter()
        .map(|s| PathBuf::from(s.as_str().expect("a snapshot path")))
        .collect()
}

/// Waits until the store settles at `want` (a failed pull's abandoned
/// unpack finishes on its own thread), then checks it stays there.
async fn store_settles_at(g: &Gantry, want: StoreCounts) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while store_counts(g) != want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store_counts(g), want);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store_counts(g), want, "something was committed late");
}

const EVIL_TYPE: &str = "application/vnd.acme.unknown.layer.v1+evil";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_unpack_as_their_media_type_says() {
    require_host();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry.addr, None);
    let r = registry.addr.clone();

    let mut cases = Vec::new();
    for docker in [false, true] {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let family = if docker { "docker" } else { "oci" };
            let content = format!("{family} {c:?}");
            let mut spec = ImageSpec::new(vec![Layer::new().file("hello", content.as_bytes())])
                .label(&content);
            spec.layers[0].1 = c;
            spec.docker = docker;
            let img = spec.build();
            let repo = format!("e2e/{family}-{c:?}").to_lowercase();
            pusher.image(&repo, &["v1"], &img).await;
            cases.push((
                format!("{r}/{repo}:v1"),
                img,
                content,
                layer_media(c, docker),
            ));
        }
    }
    // gzip bytes under the uncompressed OCI type: taken at its word, it is
    // not a tar, and no sniffing rescues it.
    let mut mislabeled = ImageSpec::new(vec![Layer::new().file("hello", b"x")]).label("mis");
    mislabeled.layers[0].1 = Compression::Gzip;
    let mislabeled = mislabeled
        .build()
        .layer_media_type(0, "application/vnd.oci.image.layer.v1.tar");
    pusher.image("e2e/mislabeled", &["v1"], &mislabeled).await;
    // A valid tar.gz under a type nobody defines.
    let evil = ImageSpec::new(vec![Layer::new().file("hello", b"evil")])
        .label("evil")
        .build()
        .layer_media_type(0, EVIL_TYPE);
    pusher.image("e2e/evil", &["v1"], &evil).await;

    let g = Gantry::start(&local_registries(&[&r])).await;
    let mut images = g.images().await;

    let before = used_bytes(&mut images).await;
    let e = pull_err(&mut images, &format!("{r}/e2e/evil:v1")).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(EVIL_TYPE), "{e:?}");
    // Refused from the manifest: not even the config was downloaded.
    let m = g.metrics().await;
    assert_eq!(
        metric(&m, "gantry_image_pull_bytes_total"),
        Some(0.0),
        "{m}"
    );
    let e = pull_err(&mut images, &format!("{r}/e2e/mislabeled:v1")).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // Neither failure left anything, and ImageFsInfo says so.
    assert_eq!(store_counts(&g), EMPTY);
    assert!(used_bytes(&mut images).await <= before + 16384);

    for (name, img, content, media_type) in &cases {
        assert_eq!(&pull(&mut images, name).await, &img.config_digest, "{name}");
        let (_, info) = status(&mut images, name).await;
        assert_eq!(info["layers"][0]["mediaType"], *media_type, "{name}");
        let snaps = snapshot_dirs(&info);
        assert_eq!(
            std::fs::read_to_string(snaps[0].join("hello")).unwrap(),
            *content,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_attestations_nesting_and_digests() {
    require_host();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry.addr, None);
    let r = registry.addr.clone();
    let linux = |arch: &str| json!({"architecture": arch, "os": "linux"});
    let arm64 = json!({"architecture": "arm64", "os": "linux", "variant": "v8"});

    // An index as buildkit pushes it, attestations first; one attestation
    // even claims this host's platform and is skipped by its annotation.
    let amd = ImageSpec::new(vec![Layer::new().file("arch", b"amd64")])
        .label("att-amd")
        .build();
    let mut arm = ImageSpec::new(vec![Layer::new().file("arch", b"arm64")]).label("att-arm");
    arm.arch = "arm64".into();
    let arm = arm.build();
    let (att_amd, att_arm) = (attestation(&amd), attestation(&arm));
    for img in [&amd, &arm, &att_amd, &att_arm] {
        pusher.untagged("e2e/attested", img).await;
    }
    let mut disguised = attestation_entry(&att_amd, &amd);
    disguised["platform"] = linux("amd64");
    let (_, index_digest) = pusher
        .raw_index(
            "e2e/attested",
            "v1",
            vec![
                disguised,
                attestation_entry(&att_amd, &amd),
                arm.index_entry(arm64.clone()),
                attestation_entry(&att_arm, &arm),
                amd.index_entry(linux("amd64")),
            ],
        )
        .await;
    // Only attestations and another platform: nothing to run here.
    pusher
        .raw_index(
            "e2e/attested",
            "armonly",
            vec![
                attestation_entry(&att_arm, &arm),
                arm.index_entry(arm64.clone()),
            ],
        )
        .await;

    // One image pulled only by its index digest, one first by its
    // platform manifest's digest.
    let by_index = ImageSpec::new(vec![Layer::new().file("f", b"by-index")])
        .label("by-index")
        .build();
    pusher.untagged("e2e/byindex", &by_index).await;
    let idx = vec![by_index.index_entry(linux("amd64"))];
    let (_, by_index_digest) = pusher.raw_index("e2e/byindex", "v1", idx).await;
    let by_manifest = ImageSpec::new(vec![Layer::new().file("f", b"by-manifest")])
        .label("by-manifest")
        .build();
    pusher.untagged("e2e/bymanifest", &by_manifest).await;
    let idx = vec![by_manifest.index_entry(linux("amd64"))];
    let (_, by_manifest_index) = pusher.raw_index("e2e/bymanifest", "v1", idx).await;

    // Indexes of indexes: 4 levels are followed, 5 are not.
    let deep = ImageSpec::new(vec![Layer::new().file("f", b"deep")])
        .label("deep")
        .build();
    pusher.untagged("e2e/nested", &deep).await;
    let mut inner = deep.index_entry(linux("amd64"));
    for level in 1..=5 {
        let (bytes, d) = pusher
            .raw_index("e2e/nested", &format!("level{level}"), vec![inner])
            .await;
        inner = json!({"mediaType": OCI_INDEX, "digest": d, "size": bytes.len()});
    }

    let g = Gantry::start(&local_registries(&[&r])).await;
    let mut images = g.images().await;

    let tagged = format!("{r}/e2e/attested:v1");
    assert_eq!(pull(&mut images, &tagged).await, amd.config_digest);
    // The index, the amd64 manifest, its config and layer: no attestation.
    assert_eq!(store_counts(&g).blobs, 4);
    assert_eq!(store_counts(&g).snapshots, 1);
    let (img, _) = status(&mut images, &tagged).await;
    assert_eq!(
        img.repo_digests,
        vec![format!("{r}/e2e/attested@{index_digest}")]
    );
    // Asked for by the platform manifest's digest, the same image answers
    // with the digest asked for first.
    let platform_ref = format!("{r}/e2e/attested@{}", amd.manifest_digest);
    let (img, info) = status(&mut images, &platform_ref).await;
    assert_eq!(img.id, amd.config_digest);
    assert_eq!(img.repo_digests[0], platform_ref);
    assert_eq!(info["manifestDigest"], amd.manifest_digest.as_str());
    assert_eq!(info["targetDigest"], index_digest.as_str());

    let e = pull_err(&mut images, &format!("{r}/e2e/attested:armonly")).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("linux/amd64") && e.message().contains("linux/arm64/v8"),
        "{e:?}"
    );

    let index_ref = format!("{r}/e2e/byindex@{by_index_digest}");
    assert_eq!(pull(&mut images, &index_ref).await, by_index.config_digest);
    let (img, info) = status(&mut images, &index_ref).await;
    assert_eq!(img.repo_digests, vec![index_ref.clone()]);
    assert!(img.repo_tags.is_empty());
    assert_eq!(info["manifestDigest"], by_index.manifest_digest.as_str());

    let manifest_ref = format!("{r}/e2e/bymanifest@{}", by_manifest.manifest_digest);
    assert_eq!(
        pull(&mut images, &manifest_ref).await,
        by_manifest.config_digest
    );
    let (img, _) = status(&mut images, &manifest_ref).await;
    assert_eq!(img.repo_digests, vec![manifest_ref.clone()]);
    // Pulled again through its index, it keeps both digests, and status
    // reports whichever was asked for first.
    let via_index = format!("{r}/e2e/bymanifest@{by_manifest_index}");
    assert_eq!(
        pull(&mut images, &via_index).await,
        by_manifest.config_digest
    );
    for asked in [&manifest_ref, &via_index] {
        let (img, _) = status(&mut images, asked).await;
        assert_eq!(img.repo_digests.len(), 2, "{img:?}");
        assert_eq!(&img.repo_digests[0], asked);
    }
    // Another repository's digest does not find it.
    let other_repo = images
        .image_status(ImageStatusRequest {
            image: cri_spec(&format!(
                "{r}/e2e/elsewhere@{}",
                by_manifest.manifest_digest
            )),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(other_repo.image.is_none());

    for level in ["level3", "level4"] {
        assert_eq!(
            pull(&mut images, &format!("{r}/e2e/nested:{level}")).await,
            deep.config_digest
        );
    }
    let e = pull_err(&mut images, &format!("{r}/e2e/nested:level5")).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("nested"), "{e:?}");
}

/// A one-layer image whose layer is non-distributable at `url`: the
/// registry gets the manifest and config only; returns the layer too.
fn foreign_image(label: &str, docker: bool, url: &str) -> (BuiltImage, Vec<u8>) {
    let mut spec =
        ImageSpec::new(vec![Layer::new().file("foreign", label.as_bytes())]).label(label);
    spec.docker = docker;
    let mut img = spec.build();
    let media_type = if docker {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    } else {
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    };
    let layer = img
        .blobs
        .remove(&img.layer_digests[0])
        .expect("the layer blob");
    let img = img.edit_manifest(|m| {
        m["layers"][0]["mediaType"] = json!(media_type);
        m["layers"][0]["urls"] = json!([url]);
    });
    (img, layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_layers_and_schema1() {
    require_host();
    // docker-registry 2.8 will not take a manifest whose layer it does not
    // hold, so the test's own server is the registry here.
    let web = StaticHttp::start().await;
    let w = web.addr.clone();
    let r = w.clone();

    let (oci, oci_layer) = foreign_image("oci-foreign", false, &format!("http://{w}/foreign/oci"));
    web.route("/foreign/oci", "application/octet-stream", &oci_layer);
    web.image("e2e/foreign", "oci", &oci);
    let (docker, docker_layer) = foreign_image(
        "docker-foreign",
        true,
        &format!("http://{w}/foreign/docker"),
    );
    web.route("/foreign/docker", "application/octet-stream", &docker_layer);
    web.image("e2e/foreign", "docker", &docker);
    // Served where no prefix allows, and served with the wrong bytes.
    let (outside, outside_layer) =
        foreign_image("outside", false, &format!("http://{w}/elsewhere/layer"));
    web.route(
        "/elsewhere/layer",
        "application/octet-stream",
        &outside_layer,
    );
    web.image("e2e/foreign", "outside", &outside);
    let (tampered, _) = foreign_image("tampered", false, &format!("http://{w}/foreign/tampered"));
    let swapped = compress(
        &Layer::new().file("foreign", b"swapped").tar(),
        Compression::Gzip,
    );
    web.route("/foreign/tampered", "application/octet-stream", &swapped);
    web.image("e2e/foreign", "tampered", &tampered);
    // Allowed at first, then bounced to where no prefix allows.
    let (bounced, _) = foreign_image("bounced", false, &format!("http://{w}/foreign/bounce"));
    web.route_with(
        "/foreign/bounce",
        Route {
            redirect_to: Some(format!("http://{w}/elsewhere/layer")),
            ..Route::new("", b"")
        },
    );
    web.image("e2e/foreign", "bounced", &bounced);

    // Docker schema 1, signed and not, as an old registry serves it.
    let schema1 = serde_json::to_vec(&json!({
        "schemaVersion": 1, "name": "e2e/old", "tag": "v1", "architecture": "amd64",
        "fsLayers": [{"blobSum": format!("sha256:{}", "a".repeat(64))}],
        "history": [{"v1Compatibility": "{\"id\":\"x\"}"}],
        "signatures": [{"header": {"alg": "ES256"}, "signature": "c2ln", "protected": "e30"}],
    }))
    .unwrap();
    web.route(
        "/v2/e2e/old/manifests/signed",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        &schema1,
    );
    web.route("/v2/e2e/old/manifests/plain", "application/json", &schema1);

    // No prefix configured: refused before anything is fetched from the URL.
    let mut g = Gantry::start(&local_registries(&[&w])).await;
    let mut images = g.images().await;
    for tag in ["oci", "docker"] {
        let e = pull_err(&mut images, &format!("{r}/e2e/foreign:{tag}")).await;
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains("foreign_layer_url_prefixes")
                && e.message().contains("non-distributable"),
            "{e:?}"
        );
    }
    assert_eq!(web.hits("/foreign/oci") + web.hits("/foreign/docker"), 0);
    for tag in ["signed", "plain"] {
        let e = pull_err(&mut images, &format!("{w}/e2e/old:{tag}")).await;
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains("schema 1") && e.message().contains("rebuild"),
            "{e:?}"
        );
    }
    assert_eq!(store_counts(&g).blobs, 0);
    drop(images);
    g.stop();

    let cfg = format!(
        "{}  foreign_layer_url_prefixes: [\"http://{w}/foreign/\"]\n",
        local_registries(&[&w])
    );
    let g = Gantry::start(&cfg).await;
    let mut images = g.images().await;
    for (tag, img, label) in [
        ("oci", &oci, "oci-foreign"),
        ("docker", &docker, "docker-foreign"),
    ] {
        let name = format!("{r}/e2e/foreign:{tag}");
        assert_eq!(pull(&mut images, &name).await, img.config_digest);
        let (_, info) = status(&mut images, &name).await;
        let snaps = snapshot_dirs(&info);
        assert_eq!(
            std::fs::read_to_string(snaps[0].join("foreign")).unwrap(),
            label
        );
    }
    assert_eq!(
        (web.hits("/foreign/oci"), web.hits("/foreign/docker")),
        (1, 1)
    );
    let e = pull_err(&mut images, &format!("{r}/e2e/foreign:outside")).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("/elsewhere/layer"), "{e:?}");
    assert_eq!(web.hits("/elsewhere/layer"), 0);
    let e = pull_err(&mut images, &format!("{r}/e2e/foreign:bounced")).await;
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message()
            .contains("outside image.foreign_layer_url_prefixes"),
        "{e:?}"
    );
    assert_eq!(
        (web.hits("/foreign/bounce"), web.hits("/elsewhere/layer")),
        (1, 0)
    );
    let e = pull_err(&mut images, &format!("{r}/e2e/foreign:tampered")).await;
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert_eq!(web.hits("/foreign/tampered"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_pulled_and_listed_but_not_run() {
    let env = BusyboxEnv::start("artifacts", "").await;
    let pusher = Pusher::new(&env.registry.addr, None);
    let r = env.registry.addr.clone();
    const BUNDLE: &str = "application/vnd.gantry.e2e.bundle.v1";
    const DATA: &str = "application/vnd.gantry.e2e.data.v1";
    const CONFIG: &str = "application/vnd.gantry.e2e.config.v1+json";
    let one = artifact(BUNDLE, &[(DATA, b"payload one")]);
    let two = artifact(BUNDLE, &[(DATA, b"payload two")]);
    pusher.image("e2e/bundle", &["one"], &one).await;
    pusher.image("e2e/bundle", &["two"], &two).await;
    // No artifactType: the config's own type says it is not an image.
    let typed = ImageSpec::new(vec![Layer::new().file("f", b"x")])
        .label("typed")
        .build()
        .edit_manifest(|m| m["config"]["mediaType"] = json!(CONFIG));
    pusher.image("e2e/typed", &["v1"], &typed).await;

    let mut images = env.g.images().await;
    let before = store_counts(&env.g);
    for (name, art) in [
        ("bundle:one", &one),
        ("bundle:two", &two),
        ("typed:v1", &typed),
    ] {
        // Artifacts often share one empty config, so the manifest names them.
        assert_eq!(
            pull(&mut images, &format!("{r}/e2e/{name}")).await,
            art.manifest_digest,
            "{name}"
        );
    }
    // Nothing was unpacked; the blobs are stored as they came.
    assert_eq!(store_counts(&env.g).snapshots, before.snapshots);
    let blob = |d: &str| {
        env.g
            .dir
            .join("root/images/content/blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    assert_eq!(
        std::fs::read(blob(&one.layer_digests[0])).unwrap(),
        b"payload one"
    );

    let list = images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(list.len(), 4, "{list:?}");
    let kind = |id: &str| {
        list.iter()
            .find(|i| i.id == id)
            .and_then(|i| i.spec.as_ref())
            .and_then(|s| s.annotations.get("gantry.dev/artifact-type").cloned())
    };
    assert_eq!(kind(&one.manifest_digest).as_deref(), Some(BUNDLE));
    assert_eq!(kind(&two.manifest_digest).as_deref(), Some(BUNDLE));
    assert_eq!(kind(&typed.manifest_digest).as_deref(), Some(CONFIG));
    let busybox = list
        .iter()
        .find(|i| i.repo_tags.contains(&env.image))
        .expect("busybox listed");
    assert!(kind(&busybox.id).is_none());
    let (_, info) = status(&mut images, &format!("{r}/e2e/bundle:one")).await;
    assert_eq!(info["artifactType"], BUNDLE);
    assert_eq!(info["layers"][0]["mediaType"], DATA);

    let mut rt = env.g.runtime().await;
    let (pod, pod_config) = env.start_pod(&mut rt, "artifact-pod").await;
    let mut config = env.container("from-artifact", "true");
    config.image = cri_spec(&format!("{r}/e2e/bundle:one"));
    let e = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("artifact"), "{e:?}");
    // The same pod takes a real image.
    create_and_start(&mut rt, &pod, &pod_config, env.container("real", "sleep 1")).await;

    // Removing one artifact keeps the config the other still shares.
    images
        .remove_image(RemoveImageRequest {
            image: cri_spec(&format!("{r}/e2e/bundle:one")),
        })
        .await
        .unwrap();
    assert!(!blob(&one.layer_digests[0]).exists());
    assert!(blob(&two.layer_digests[0]).exists());
    assert!(blob(&two.config_digest).exists());
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_layer_leaves_no_orphans() {
    require_host();
    let web = StaticHttp::start().await;
    let w = web.addr.clone();
    // Layer 3 is big, so it is still unpacking (on a blocking thread the
    // failed pull cannot stop) when layer 2, held back until then, is
    // refused at its first entry.
    let mut third = Layer::new();
    for i in 0..8 {
        let mut noise = vec![0u8; 4 << 20];
        rand::Rng::fill(&mut rand::rng(), &mut noise[..]);
        third = third.file(&format!("third{i}"), &noise);
    }
    let second = Layer::new().file("../escape", b"x");
    let mut spec = ImageSpec::new(vec![Layer::busybox(), second, third]).label("rejected");
    spec.layers[2].1 = Compression::None;
    let img = spec.build();
    web.image("e2e/rejected", "v1", &img);
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let held = &img.layer_digests[1];
    web.route_with(
        &format!("/v2/e2e/rejected/blobs/{held}"),
        Route {
            hold: Some(gate.clone()),
            ..Route::new("application/octet-stream", &img.blobs[held])
        },
    );
    let good = ImageSpec::new(vec![Layer::busybox(), Layer::new().file("ok", b"ok")])
        .label("rejected")
        .build();
    web.image("e2e/good", "v1", &good);

    let g = Gantry::start(&local_registries(&[&w])).await;
    let mut images = g.images().await;
    let before = used_bytes(&mut images).await;
    let name = format!("{w}/e2e/rejected:v1");
    let mut puller = images.clone();
    let pulling = tokio::spawn(async move { puller.pull_image(pull_request(&name)).await });
    let unpacking = format!(".tmp-{}", img.diff_ids[2].trim_start_matches("sha256:"));
    let snapshots = g.dir.join("root/images/snapshots");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_dir(&snapshots)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&unpacking))
        })
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "layer 3 never started unpacking");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gate.add_permits(1);
    let e = pulling.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("../escape"), "{e:?}");
    // Layer 3's unpack finishes after the pull failed, and must not commit.
    store_settles_at(&g, EMPTY).await;
    assert!(used_bytes(&mut images).await <= before + 16384);

    // The shared busybox layer unpacks again for an image that is fine.
    assert_eq!(
        pull(&mut images, &format!("{w}/e2e/good:v1")).await,
        good.config_digest
    );
    assert_eq!(store_counts(&g).snapshots, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_a_killed_pull_are_collected_at_start() {
    require_host();
    let web = StaticHttp::start().await;
    let w = web.addr.clone();
    let mut tail = vec![0u8; 256 << 10];
    rand::Rng::fill(&mut rand::rng(), &mut tail[..]);
    let img = ImageSpec::new(vec![
        Layer::busybox(),
        Layer::new().file("second", b"2"),
        Layer::new().file("tail", &tail),
    ])
    .label("killed")
    .build();
    web.image("e2e/killed", "v1", &img);
    // The last layer stops after 4 KiB and never finishes.
    let stalled = &img.layer_digests[2];
    web.route_with(
        &format!("/v2/e2e/killed/blobs/{stalled}"),
        Route {
            stall_after: Some(4096),
            ..Route::new("application/octet-stream", &img.blobs[stalled])
        },
    );

    let mut g = Gantry::start(&local_registries(&[&w])).await;
    let mut images = g.images().await;
    let name = format!("{w}/e2e/killed:v1");
    let pulling = tokio::spawn(async move { images.pull_image(pull_request(&name)).await });
    // The stalled layer unpacks as it downloads: half a blob in ingest/,
    // half a snapshot under its temp name.
    let midway = StoreCounts {
        blobs: 4,
        snapshots: 2,
        unpacking: 1,
        ingest: 1,
        records: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while store_counts(&g) != midway {
        assert!(
            Instant::now() < deadline,
            "the pull never got midway: {:?}",
            store_counts(&g)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    g.kill();
    assert!(pulling.await.unwrap().is_err());

    g.restart().await;
    assert_eq!(store_counts(&g), EMPTY);
    assert!(
        g.log()
            .contains("removed orphans of interrupted pulls from the image store"),
        "{}",
        g.log()
    );
    let m = g.metrics().await;
    for (kind, n) in [("blob", 4.0), ("snapshot", 2.0), ("partial", 2.0)] {
        let series = format!("gantry_image_orphans_removed_total{{kind=\"{kind}\"}}");
        assert_eq!(metric(&m, &series), Some(n), "{kind}: {m}");
    }
    let mut images = g.images().await;
    assert!(images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .is_empty());
}
