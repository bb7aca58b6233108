//! The CRI ImageService end to end: a real registry, real images, the real
//! gantry process, driven over its socket.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use gantry_e2e::daemon::Gantry;
use gantry_e2e::oci::{Compression, ImageSpec, Layer, Pusher};
use gantry_e2e::registry::Registry;
use gantry_e2e::{free_port, local_registries, require_host};
use gantry_proto::v1::image_service_client::ImageServiceClient;
use gantry_proto::v1::{
    AuthConfig, Image, ImageFilter, ImageFsInfoRequest, ImageSpec as CriImageSpec,
    ImageStatusRequest, ImageStatusResponse, ListImagesRequest, PullImageRequest,
    PullImageResponse, RemoveImageRequest,
};
use tonic::transport::Channel;
use tonic::Code;

fn spec(name: &str) -> Option<CriImageSpec> {
    Some(CriImageSpec {
        image: name.to_string(),
        ..Default::default()
    })
}

fn pull_req(name: &str) -> PullImageRequest {
    PullImageRequest {
        image: spec(name),
        ..Default::default()
    }
}

fn status_req(name: &str, verbose: bool) -> ImageStatusRequest {
    ImageStatusRequest {
        image: spec(name),
        verbose,
    }
}

/// A pull of `name` with a user name and password.
fn pull_req_as(name: &str, username: &str, password: &str) -> PullImageRequest {
    PullImageRequest {
        auth: Some(AuthConfig {
            username: username.into(),
            password: password.into(),
            ..Default::default()
        }),
        ..pull_req(name)
    }
}

type Images = ImageServiceClient<Channel>;

async fn all_images(images: &mut Images) -> Vec<Image> {
    images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
}

/// Pulls `name`, panicking with the daemon's answer if it fails.
async fn pull(images: &mut Images, name: &str) -> PullImageResponse {
    images
        .pull_image(pull_req(name))
        .await
        .unwrap_or_else(|e| panic!("pulling {name}: {e}"))
        .into_inner()
}

async fn image_status(images: &mut Images, name: &str, verbose: bool) -> ImageStatusResponse {
    images
        .image_status(status_req(name, verbose))
        .await
        .unwrap_or_else(|e| panic!("ImageStatus {name}: {e}"))
        .into_inner()
}

/// Files under the store that are neither committed blobs, snapshots nor
/// records: leftovers of a failed pull.
fn store_entries(g: &Gantry) -> (usize, usize, usize) {
    let root = g.dir.join("root/images");
    let count = |p: PathBuf| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    (
        count(root.join("content/blobs/sha256")),
        count(root.join("snapshots")),
        count(root.join("content/ingest")) + count(root.join("index")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_list_status_remove_and_restart() {
    require_host();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry.addr, None);
    let plain = ImageSpec::new(vec![Layer::busybox()])
        .label("plain")
        .build();
    pusher
        .image("e2e/busybox", &["1.0", "latest", "stable"], &plain)
        .await;
    let user = ImageSpec::new(vec![Layer::busybox()])
        .user("1000")
        .label("user")
        .build();
    pusher.image("e2e/user", &["v1"], &user).await;
    let named = ImageSpec::new(vec![Layer::busybox()])
        .user("appuser:app")
        .label("named")
        .build();
    pusher.image("e2e/named", &["v1"], &named).await;

    let mut g = Gantry::start(&local_registries(&[&registry.addr])).await;
    let mut images = g.images().await;
    let r = &registry.addr;

    // Absent image: an empty answer, not an error.
    let st = image_status(&mut images, &format!("{r}/e2e/busybox:1.0"), false).await;
    assert!(st.image.is_none());

    let pulled = pull(&mut images, &format!("{r}/e2e/busybox:1.0")).await;
    assert_eq!(pulled.image_ref, plain.config_digest);
    // Two more tags of the same image, one by the default tag.
    pull(&mut images, &format!("{r}/e2e/busybox")).await;
    pull(&mut images, &format!("{r}/e2e/busybox:stable")).await;
    // By digest.
    let by_digest = format!("{r}/e2e/busybox@{}", plain.manifest_digest);
    let p = pull(&mut images, &by_digest).await;
    assert_eq!(p.image_ref, plain.config_digest);

    let list = all_images(&mut images).await;
    assert_eq!(
        list.len(),
        1,
        "three tags and a digest are one image: {list:?}"
    );
    let img = &list[0];
    assert_eq!(img.id, plain.config_digest);
    let tags: HashSet<_> = img.repo_tags.iter().cloned().collect();
    let want: HashSet<_> = ["1.0", "latest", "stable"]
        .iter()
        .map(|t| format!("{r}/e2e/busybox:{t}"))
        .collect();
    assert_eq!(tags, want);
    assert_eq!(img.repo_digests, vec![by_digest.clone()]);
    let blob_total: usize = plain.blobs.values().map(|b| b.len()).sum();
    assert_eq!(img.size, (blob_total + plain.manifest.len()) as u64);
    assert!(img.uid.is_none() && img.username.is_empty());

    // Status by tag, by digest, by full ID, by short ID; verbose carries the config.
    for name in [
        format!("{r}/e2e/busybox:stable"),
        by_digest.clone(),
        plain.config_digest.clone(),
        plain.config_digest[7..19].to_string(),
    ] {
        let st = image_status(&mut images, &name, true).await;
        assert_eq!(
            st.image.as_ref().map(|i| i.id.as_str()),
            Some(plain.config_digest.as_str()),
            "status of {name}"
        );
        let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
        assert_eq!(info["imageSpec"]["config"]["Labels"]["gantry.e2e"], "plain");
        assert_eq!(info["manifestDigest"], plain.manifest_digest.as_str());
    }
    let st = image_status(&mut images, &format!("{r}/e2e/busybox:1.0"), false).await;
    assert!(st.info.is_empty(), "info only when verbose");

    // USER 1000 and a named USER.
    pull(&mut images, &format!("{r}/e2e/user:v1")).await;
    pull(&mut images, &format!("{r}/e2e/named:v1")).await;
    let u = image_status(&mut images, &format!("{r}/e2e/user:v1"), false)
        .await
        .image
        .unwrap();
    assert_eq!(u.uid.map(|v| v.value), Some(1000));
    let n = image_status(&mut images, &format!("{r}/e2e/named:v1"), false)
        .await
        .image
        .unwrap();
    assert_eq!((n.uid, n.username.as_str()), (None, "appuser"));

    // The filter picks one image.
    let f = ListImagesRequest {
        filter: Some(ImageFilter {
            image: spec(&format!("{r}/e2e/user:v1")),
        }),
    };
    let filtered = images.list_images(f).await.unwrap().into_inner().images;
    assert_eq!(
        filtered.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        vec![user.config_digest.clone()]
    );
    let f = ListImagesRequest {
        filter: Some(ImageFilter {
            image: spec(&format!("{r}/e2e/absent:v1")),
        }),
    };
    assert!(images
        .list_images(f)
        .await
        .unwrap()
        .into_inner()
        .images
        .is_empty());

    // ImageFsInfo accounts for what was stored.
    let fs = images
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let usage = &fs.image_filesystems[0];
    assert!(
        usage.used_bytes.as_ref().unwrap().value > 2_000_000,
        "{usage:?}"
    );
    assert!(usage.inodes_used.as_ref().unwrap().value > 20, "{usage:?}");
    assert!(usage
        .fs_id
        .as_ref()
        .unwrap()
        .mountpoint
        .ends_with("root/images"));

    // The index survives a restart.
    assert!(g.stop().success());
    g.restart().await;
    let mut images = g.images().await;
    let list = all_images(&mut images).await;
    assert_eq!(list.len(), 3);

    // Remove by tag removes the image with all its names; removing again is fine.
    images
        .remove_image(RemoveImageRequest {
            image: spec(&format!("{r}/e2e/busybox:latest")),
        })
        .await
        .unwrap();
    images
        .remove_image(RemoveImageRequest {
            image: spec(&format!("{r}/e2e/busybox:latest")),
        })
        .await
        .unwrap();
    assert!(image_status(&mut images, &by_digest, false)
        .await
        .image
        .is_none());
    // By digest and by ID.
    images
        .remove_image(RemoveImageRequest {
            image: spec(&user.config_digest),
        })
        .await
        .unwrap();
    let named_digest = format!("{r}/e2e/named@{}", named.manifest_digest);
    images
        .remove_image(RemoveImageRequest {
            image: spec(&named_digest),
        })
        .await
        .unwrap();
    assert!(all_images(&mut images).await.is_empty());
    // Nothing is left: no blob, no snapshot, no record.
    assert_eq!(
        store_entries(&g),
        (0, 0, 0),
        "store not empty after removing every image"
    );
    let fs2 = images
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        fs2.image_filesystems[0].used_bytes.as_ref().unwrap().value
            < usage.used_bytes.as_ref().unwrap().value
    );

    // Metrics counted the calls by code, and the pull bytes.
    let m = g.metrics().await;
    assert!(
        m.contains(r#"gantry_cri_requests_total{code="OK",method="RemoveImage"} 4"#),
        "{m}"
    );
    assert!(
        m.contains("gantry_cri_request_duration_seconds_bucket{method=\"ListImages\""),
        "{m}"
    );
    assert!(m.contains("gantry_image_store_bytes"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_formats_and_platforms() {
    require_host();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry.addr, None);
    // Layer 2 deletes a file, replaces another, and makes a directory opaque.
    let base = Layer::busybox()
        .dir("data/")
        .file("data/keep", b"kept")
        .file("data/delete-me", b"doomed")
        .file("data/replace", b"old")
        .dir("opaque/")
        .file("opaque/old-a", b"a")
        .file("opaque/old-b", b"b");
    let top = Layer::new()
        .dir("data/")
        .file("data/.wh.delete-me", b"")
        .file("data/replace", b"new")
        .dir("opaque/")
        .file("opaque/.wh..wh..opq", b"")
        .file("opaque/fresh", b"f")
        .hardlink("data/replace-link", "data/replace");
    let mut multi = ImageSpec::new(vec![base, top]).label("multi");
    multi.layers[1].1 = Compression::Zstd;
    let multi = multi.build();
    pusher.image("e2e/multi", &["v1"], &multi).await;

    let mut plain_tar =
        ImageSpec::new(vec![Layer::new().file("hello", b"uncompressed")]).label("tar");
    plain_tar.layers[0].1 = Compression::None;
    let plain_tar = plain_tar.build();
    pusher.image("e2e/tar", &["v1"], &plain_tar).await;
    let mut docker = ImageSpec::new(vec![Layer::new().file("hello", b"docker")]).label("docker");
    docker.docker = true;
    let docker = docker.build();
    pusher.image("e2e/docker", &["v1"], &docker).await;

    let amd = ImageSpec::new(vec![Layer::new().file("arch", b"amd64")])
        .label("amd64")
        .build();
    let mut arm = ImageSpec::new(vec![Layer::new().file("arch", b"arm64")]).label("arm64");
    arm.arch = "arm64".into();
    let arm = arm.build();
    let index_digest = pusher
        .index("e2e/multiarch", "v1", &[("arm64", &arm), ("amd64", &amd)])
        .await;
    let s390 = pusher.index("e2e/s390", "v1", &[("s390x", &arm)]).await;
    let _ = s390;

    let g = Gantry::start(&local_registries(&[&registry.addr])).await;
    let mut images = g.images().await;
    let r = &registry.addr;

    pull(&mut images, &format!("{r}/e2e/multi:v1")).await;
    let st = image_status(&mut images, &format!("{r}/e2e/multi:v1"), true).await;
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    let snaps: Vec<PathBuf> = info["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| PathBuf::from(s.as_str().unwrap()))
        .collect();
    assert_eq!(snaps.len(), 2);
    // The top layer holds overlay whiteouts.
    let wh = std::fs::symlink_metadata(snaps[1].join("data/delete-me")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is a 0/0 char device"
    );
    assert_eq!(
        std::fs::metadata(snaps[0].join("bin/busybox"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::metadata(snaps[1].join("data/replace-link"))
            .unwrap()
            .nlink(),
        2
    );

    // Stacked with overlayfs, the layers give the image's file system.
    let mnt = tempfile::tempdir().unwrap();
    let lower = format!("{}:{}", snaps[1].display(), snaps[0].display());
    let status = std::process::Command::new("mount")
        .args([
            "-t",
            "overlay",
            "overlay",
            "-o",
            &format!("lowerdir={lower}"),
        ])
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(status.success(), "mounting the snapshots as overlay");
    // Unmounts even if an assertion below fails.
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let m = mnt.path();
    let _unmount = Unmount(m);
    let mut names: Vec<String> = std::fs::read_dir(m.join("opaque"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let view = (
        m.join("data/delete-me").exists(),
        std::fs::read(m.join("data/replace")).unwrap(),
        std::fs::read(m.join("data/keep")).unwrap(),
        names,
        m.join("bin/busybox").is_file(),
    );
    assert_eq!(
        view,
        (
            false,
            b"new".to_vec(),
            b"kept".to_vec(),
            vec!["fresh".to_string()],
            true
        )
    );

    // Uncompressed and Docker schema2 images.
    pull(&mut images, &format!("{r}/e2e/tar:v1")).await;
    pull(&mut images, &format!("{r}/e2e/docker:v1")).await;
    let d = image_status(&mut images, &format!("{r}/e2e/docker:v1"), false).await;
    assert_eq!(d.image.unwrap().id, docker.config_digest);

    // The index resolves to this host's platform; the repo digest is the index's.
    let p = pull(&mut images, &format!("{r}/e2e/multiarch:v1")).await;
    assert_eq!(p.image_ref, amd.config_digest);
    let st = image_status(&mut images, &p.image_ref, false)
        .await
        .image
        .unwrap();
    assert_eq!(
        st.repo_digests,
        vec![format!("{r}/e2e/multiarch@{index_digest}")]
    );
    // An index without this platform is a clear error.
    let e = images
        .pull_image(pull_req(&format!("{r}/e2e/s390:v1")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("platform"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_and_docker_hub_names() {
    require_host();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry.addr, None);
    let img = ImageSpec::new(vec![Layer::busybox()]).label("hub").build();
    pusher.image("library/busybox", &["latest"], &img).await;
    pusher.image("team/tool", &["2"], &img).await;
    let dead = free_port();
    // The first mirror is down; the second serves; the hosts themselves are
    // never contacted.
    let cfg = format!(
        "image:\n  registries:\n    docker.io:\n      mirrors: [\"http://127.0.0.1:{dead}\", \"http://{a}\"]\n      skip_upstream: true\n    registry.example.test:\n      mirrors: [\"http://{a}\"]\n      skip_upstream: true\n",
        a = registry.addr
    );
    let g = Gantry::start(&cfg).await;
    let mut images = g.images().await;
    let p = pull(&mut images, "busybox").await;
    assert_eq!(p.image_ref, img.config_digest);
    pull(&mut images, "registry.example.test/team/tool:2").await;
    let st = image_status(&mut images, "docker.io/library/busybox:latest", false).await;
    let st = st.image.expect("normalised name finds the image");
    let tags: HashSet<_> = st.repo_tags.iter().cloned().collect();
    assert_eq!(
        tags,
        [
            "docker.io/library/busybox:latest",
            "registry.example.test/team/tool:2"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    );
    // Short forms resolve the same way.
    assert!(image_status(&mut images, "busybox:latest", false)
        .await
        .image
        .is_some());
    assert!(
        g.log().contains(&format!("127.0.0.1:{dead}")),
        "the dead mirror was tried first"
    );
    // A repository no endpoint has.
    let e = images
        .pull_image(pull_req("docker.io/library/absent:1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_auth() {
    require_host();
    let registry = Registry::start_with_auth("alice", "wonderland").await;
    let pusher = Pusher::new(&registry.addr, Some(("alice", "wonderland")));
    let img = ImageSpec::new(vec![Layer::busybox()])
        .label("private")
        .build();
    pusher.image("private/app", &["v1"], &img).await;
    let r = &registry.addr;
    let g = Gantry::start(&local_registries(&[r.as_str()])).await;
    let mut images = g.images().await;
    let name = format!("{r}/private/app:v1");

    let e = images.pull_image(pull_req(&name)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let wrong = pull_req_as(&name, "alice", "guess");
    let e = images.pull_image(wrong).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(
        !e.message().contains("guess"),
        "credentials leak into errors: {e:?}"
    );
    assert_eq!(store_entries(&g), (0, 0, 0));

    let right = pull_req_as(&name, "alice", "wonderland");
    assert_eq!(
        images
            .pull_image(right)
            .await
            .unwrap()
            .into_inner()
            .image_ref,
        img.config_digest
    );
    images
        .remove_image(RemoveImageRequest { image: spec(&name) })
        .await
        .unwrap();
    // The `auth` field form (base64 user:password).
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode("alice:wonderland");
    let via_auth = PullImageRequest {
        image: spec(&name),
        auth: Some(AuthConfig {
            auth: encoded,
            ..Default::default()
        }),
        ..Default::default()
    };
    images.pull_image(via_auth).await.unwrap();
    drop(images);
    drop(g);

    // Credentials from the config file.
    let g = Gantry::start(&format!(
        "{}      username: alice\n      password: wonderland\n",
        local_registries(&[r])
    ))
    .await;
    let mut images = g.images().await;
    pull(&mut images, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_content_is_refused_and_leaves_nothing() {
    require_host();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry.addr, None);
    let r = registry.addr.clone();

    // A blob whose bytes in the registry no longer match its digest.
    let corrupt = ImageSpec::new(vec![Layer::new().file("f", &[7u8; 4096])])
        .label("corrupt")
        .build();
    pusher.image("e2e/corrupt", &["v1"], &corrupt).await;
    let data = registry.blob_data_path(&corrupt.layer_digests[0]);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    // Layers that try to leave their directory.
    let traversal = ImageSpec::new(vec![Layer::new().file("../../escaped", b"x")])
        .label("dotdot")
        .build();
    pusher.image("e2e/traversal", &["v1"], &traversal).await;
    let symlink = ImageSpec::new(vec![Layer::new()
        .symlink("link", "/tmp")
        .file("link/escaped", b"x")])
    .label("sym")
    .build();
    pusher.image("e2e/symlink", &["v1"], &symlink).await;
    let hardlink = ImageSpec::new(vec![Layer::new().hardlink("h", "../../../etc/passwd")])
        .label("hard")
        .build();
    pusher.image("e2e/hardlink", &["v1"], &hardlink).await;
    let absolute = ImageSpec::new(vec![Layer::new().file("/abs-escaped", b"x")])
        .label("abs")
        .build();
    pusher.image("e2e/absolute", &["v1"], &absolute).await;

    // A config that lies about the number of layers.
    let good = ImageSpec::new(vec![Layer::new().file("a", b"a")])
        .label("good")
        .build();
    pusher.image("e2e/good", &["v1"], &good).await;
    let bogus_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": good.config_digest, "size": good.config.len()},
        "layers": [],
    }))
    .unwrap();
    pusher
        .manifest(
            "e2e/good",
            "bogus",
            "application/vnd.oci.image.manifest.v1+json",
            &bogus_manifest,
        )
        .await;

    // Many files, a bomb, a huge manifest: for the limits below.
    let mut many = Layer::new();
    for i in 0..50 {
        many = many.file(&format!("f{i}"), b"");
    }
    let many = ImageSpec::new(vec![many]).label("many").build();
    pusher.image("e2e/many", &["v1"], &many).await;
    let bomb = ImageSpec::new(vec![Layer::new().file("zeros", &vec![0u8; 48 << 20])])
        .label("bomb")
        .build();
    pusher.image("e2e/bomb", &["v1"], &bomb).await;
    let deep_path = "d/".repeat(30) + "f";
    let deep = ImageSpec::new(vec![Layer::new().file(&deep_path, b"")])
        .label("deep")
        .build();
    pusher.image("e2e/deep", &["v1"], &deep).await;
    let mut big = Layer::new();
    for i in 0..40 {
        big = big.file(&format!("x{i}"), b"");
    }
    let mut big_layers = Vec::new();
    for i in 0..40 {
        big_layers.push(Layer::new().file(&format!("l{i}"), b""));
    }
    let huge = ImageSpec::new(big_layers).label("huge").build();
    pusher.image("e2e/huge", &["v1"], &huge).await;

    let limits = "  limits:\n    max_entries_per_layer: 20\n    max_path_depth: 16\n    max_compression_ratio: 20\n    ratio_check_after_bytes: 1048576\n    max_manifest_bytes: 4096\n";
    let g = Gantry::start(&format!("{}{limits}", local_registries(&[&r]))).await;
    let mut images = g.images().await;

    let e = images
        .pull_image(pull_req(&format!("{r}/e2e/corrupt:v1")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains(&corrupt.layer_digests[0]), "{e:?}");

    for repo in ["traversal", "symlink", "hardlink", "absolute"] {
        let e = images
            .pull_image(pull_req(&format!("{r}/e2e/{repo}:v1")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{repo}: {e:?}");
        assert!(e.message().contains("rejected"), "{repo}: {e:?}");
    }
    for escaped in ["/escaped", "/tmp/escaped", "/abs-escaped"] {
        assert!(
            !std::path::Path::new(escaped).exists(),
            "{escaped} was written"
        );
    }
    assert!(!g.dir.join("escaped").exists() && !g.dir.join("root/escaped").exists());

    let e = images
        .pull_image(pull_req(&format!("{r}/e2e/good:bogus")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    for (repo, code) in [
        ("many", Code::ResourceExhausted),
        ("bomb", Code::ResourceExhausted),
        ("deep", Code::FailedPrecondition),
        ("huge", Code::ResourceExhausted),
    ] {
        let e = images
            .pull_image(pull_req(&format!("{r}/e2e/{repo}:v1")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{repo}: {e:?}");
    }
    // None of that left an image, a snapshot or a partial file behind
    // (blobs that verified may stay for a retry; GC takes them with images).
    assert!(all_images(&mut images).await.is_empty());
    let (_, snapshots, leftovers) = store_entries(&g);
    assert_eq!((snapshots, leftovers), (0, 0));
    let snapdir = g.dir.join("root/images/snapshots");
    assert_eq!(std::fs::read_dir(&snapdir).unwrap().count(), 0);

    // The good image still pulls after all that.
    pull(&mut images, &format!("{r}/e2e/good:v1")).await;

    // Names and endpoints that are wrong.
    for (name, code) in [
        ("", Code::InvalidArgument),
        ("library/UPPER", Code::InvalidArgument),
        ("127.0.0.1:5000/Mixed/Case:1", Code::InvalidArgument),
        ("bad name", Code::InvalidArgument),
        ("x@sha256:1234", Code::InvalidArgument),
        (
            &format!("127.0.0.1:{}/nobody/home:1", free_port()) as &str,
            Code::Unavailable,
        ),
        (&format!("{r}/e2e/absent:v1"), Code::NotFound),
        (
            &format!("{r}/e2e/good@sha256:{}", "0".repeat(64)),
            Code::NotFound,
        ),
    ] {
        let e = images.pull_image(pull_req(name)).await.unwrap_err();
        assert_eq!(e.code(), code, "{name:?}: {e:?}");
    }
    let e = images
        .image_status(ImageStatusRequest {
            image: None,
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    images
        .remove_image(RemoveImageRequest {
            image: spec("never/pulled:1"),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_download_each_blob_once() {
    require_host();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry.addr, None);
    let mut big = vec![0u8; 8 << 20];
    rand::Rng::fill(&mut rand::rng(), &mut big[..]);
    let shared = Layer::busybox().file("big", &big);
    let a = ImageSpec::new(vec![shared.clone(), Layer::new().file("a", b"a")])
        .label("a")
        .build();
    let b = ImageSpec::new(vec![shared, Layer::new().file("b", b"b")])
        .label("b")
        .build();
    pusher.image("e2e/a", &["v1"], &a).await;
    pusher.image("e2e/b", &["v1"], &b).await;
    let r = registry.addr.clone();
    let g = Gantry::start(&local_registries(&[r.as_str()])).await;

    let mut tasks = Vec::new();
    for i in 0..6 {
        let mut images = g.images().await;
        let name = format!("{r}/e2e/{}:v1", if i % 2 == 0 { "a" } else { "b" });
        tasks.push(tokio::spawn(async move {
            images
                .pull_image(pull_req(&name))
                .await
                .map(|r| r.into_inner().image_ref)
        }));
    }
    let mut refs = HashSet::new();
    for t in tasks {
        refs.insert(t.await.unwrap().unwrap());
    }
    assert_eq!(
        refs,
        [a.config_digest.clone(), b.config_digest.clone()]
            .into_iter()
            .collect()
    );

    // Every distinct blob crossed the wire once: the shared layer, the two
    // small layers and two configs. (Manifests are not counted as blobs.)
    let mut unique: HashSet<&String> = a.blobs.keys().collect();
    unique.extend(b.blobs.keys());
    let want: usize = unique
        .iter()
        .map(|d| a.blobs.get(*d).or(b.blobs.get(*d)).unwrap().len())
        .sum();
    let m = g.metrics().await;
    let got: u64 = m
        .lines()
        .find(|l| l.starts_with("gantry_image_pull_bytes_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(got, want as u64, "bytes downloaded for 6 concurrent pulls");
    assert_eq!(
        std::fs::read_dir(g.dir.join("root/images/snapshots"))
            .unwrap()
            .count(),
        3
    );
    assert!(
        g.log().contains("blob downloaded"),
        "pull progress is logged"
    );
}
