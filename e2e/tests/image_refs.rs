//! What containers hold of images: a container keeps its image's layers
//! from create to remove, across RemoveImage and daemon restarts, and an
//! image pulled again shares them; image volumes (`Mount.image`) mount an
//! image read-only, whole or one directory of it, and hold it the same way.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use gantry_e2e::daemon::Gantry;
use gantry_e2e::fixture::{
    create_and_start, pull_request, remove_pod, store_counts, wait_reaped, BusyboxEnv, StoreCounts,
};
use gantry_e2e::oci::{ImageSpec, Layer, Pusher};
use gantry_proto::v1::image_service_client::ImageServiceClient;
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    ContainerConfig, CreateContainerRequest, ExecSyncRequest, ImageFsInfoRequest,
    ImageSpec as CriImageSpec, ImageStatusRequest, ListImagesRequest, Mount, PodSandboxConfig,
    RemoveContainerRequest, RemoveImageRequest,
};
use tonic::transport::Channel;
use tonic::Code;

fn spec(image: &str) -> Option<CriImageSpec> {
    Some(CriImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// Every entry under `dir` with its inode: a blob downloaded again or a
/// snapshot unpacked again gets a new one.
fn inodes(dir: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let ino = e.metadata().map(|m| m.ino()).unwrap_or(0);
                    (e.file_name().to_string_lossy().into_owned(), ino)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn images_root(g: &Gantry) -> PathBuf {
    g.dir.join("root/images")
}

fn leases(g: &Gantry) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(images_root(g).join("leases"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn exec(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    script: &str,
) -> (i32, String, String) {
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: 20,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync {script:?} in {id}: {e}"))
        .into_inner();
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

async fn image_present(images: &mut ImageServiceClient<Channel>, name: &str) -> bool {
    let status = images
        .image_status(ImageStatusRequest {
            image: spec(name),
            verbose: false,
        })
        .await
        .unwrap_or_else(|e| panic!("ImageStatus {name}: {e}"))
        .into_inner();
    let listed = images
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images
        .iter()
        .any(|i| i.repo_tags.iter().any(|t| t == name));
    assert_eq!(status.image.is_some(), listed, "{name}: {status:?}");
    listed
}

async fn image_fs_used(images: &mut ImageServiceClient<Channel>) -> u64 {
    images
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner()
        .image_filesystems[0]
        .used_bytes
        .as_ref()
        .expect("used_bytes")
        .value
}

async fn remove_image(images: &mut ImageServiceClient<Channel>, name: &str) {
    images
        .remove_image(RemoveImageRequest { image: spec(name) })
        .await
        .unwrap_or_else(|e| panic!("RemoveImage {name}: {e}"));
}

async fn remove_container(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.remove_container(RemoveContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}"));
}

/// Lines of /proc/self/mountinfo whose mount point is below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix)))
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_containers_image_outlives_its_removal() {
    let mut env = BusyboxEnv::start_with(
        ImageSpec::new(vec![
            Layer::busybox(),
            Layer::new()
                .dir("data/")
                .file("data/lower", b"from a lower layer"),
        ])
        .label("image-refs"),
        "",
    )
    .await;
    let mut images = env.g.images().await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "image-refs").await;
    let first =
        create_and_start(&mut rt, &pod, &pc, env.container("first", "exec sleep 600")).await;
    assert_eq!(leases(&env.g), vec![format!("{first}.json")]);

    let root = images_root(&env.g);
    let snapshots = inodes(&root.join("snapshots"));
    let blobs = inodes(&root.join("content/blobs/sha256"));
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    let held = store_counts(&env.g);
    let used_before = image_fs_used(&mut images).await;

    remove_image(&mut images, &env.image).await;
    assert!(!image_present(&mut images, &env.image).await);
    // The name went, the content stayed, and ImageFsInfo still counts it
    // (only the image's small index record went).
    assert_eq!(store_counts(&env.g), StoreCounts { records: 0, ..held });
    let used_after = image_fs_used(&mut images).await;
    assert!(
        used_after + (64 << 10) >= used_before,
        "{used_before} bytes before RemoveImage, {used_after} after"
    );
    assert_eq!(
        exec(&mut rt, &first, "cat /data/lower").await,
        (0, "from a lower layer".into(), String::new())
    );

    // The lease is on disk: a restart keeps it, and the content with it.
    env.g.stop();
    env.g.restart().await;
    let mut images = env.g.images().await;
    let mut rt = env.g.runtime().await;
    assert_eq!(leases(&env.g), vec![format!("{first}.json")]);
    assert_eq!(inodes(&root.join("snapshots")), snapshots);
    assert!(!image_present(&mut images, &env.image).await);
    assert_eq!(exec(&mut rt, &first, "cat /data/lower").await.0, 0);

    // Pulled again: nothing is downloaded or unpacked again, and a second
    // container runs on the very same layers.
    images
        .pull_image(pull_request(&env.image))
        .await
        .expect("pulling the image again");
    assert!(image_present(&mut images, &env.image).await);
    assert_eq!(inodes(&root.join("snapshots")), snapshots);
    assert_eq!(inodes(&root.join("content/blobs/sha256")), blobs);
    let second = create_and_start(
        &mut rt,
        &pod,
        &pc,
        env.container("second", "exec sleep 600"),
    )
    .await;
    assert_eq!(
        exec(&mut rt, &second, "cat /data/lower").await,
        (0, "from a lower layer".into(), String::new())
    );
    assert_eq!(inodes(&root.join("snapshots")), snapshots);

    // Removed again: each container keeps it until it goes itself.
    remove_image(&mut images, &env.image).await;
    remove_container(&mut rt, &first).await;
    wait_reaped(&env.g, &first).await;
    assert_eq!(leases(&env.g), vec![format!("{second}.json")]);
    assert_eq!(inodes(&root.join("snapshots")), snapshots);
    assert_eq!(exec(&mut rt, &second, "cat /data/lower").await.0, 0);
    remove_container(&mut rt, &second).await;
    wait_reaped(&env.g, &second).await;
    assert!(leases(&env.g).is_empty());
    assert_eq!(
        store_counts(&env.g),
        StoreCounts {
            blobs: 0,
            snapshots: 0,
            unpacking: 0,
            ingest: 0,
            records: 0,
        }
    );
    assert!(image_fs_used(&mut images).await < used_after);
    remove_pod(&mut rt, &pod).await;
}

/// At start the leases are made to match the containers: those of
/// containers removed while the daemon was down go, with what they held,
/// and a container without one (made before leases existed) gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_reconciled_with_the_containers_at_start() {
    let mut env = BusyboxEnv::start("image-refs-stale", "").await;
    let mut images = env.g.images().await;
    remove_image(&mut images, &env.image).await;
    assert_eq!(store_counts(&env.g).snapshots, 0);

    images
        .pull_image(pull_request(&env.image))
        .await
        .expect("pulling the image again");
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "image-refs-stale").await;
    let mut create = async |name: &str| {
        rt.create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(env.container(name, "exec sleep 600")),
            sandbox_config: Some(pc.clone()),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id
    };
    let vanished = create("vanished").await;
    let old = create("old").await;
    assert_eq!(leases(&env.g).len(), 2);

    // A crash that took one container's record but not its lease, and a
    // container from before leases.
    env.g.kill();
    let cdir = env.g.dir.join("root/runtime/containers").join(&vanished);
    let _ = unmount_detached(&cdir.join("bundle/rootfs"));
    std::fs::remove_dir_all(&cdir).expect("removing the container's directory");
    std::fs::remove_file(
        images_root(&env.g)
            .join("leases")
            .join(format!("{old}.json")),
    )
    .expect("removing a lease");
    env.g.restart().await;
    assert_eq!(leases(&env.g), vec![format!("{old}.json")]);

    let mut images = env.g.images().await;
    let mut rt = env.g.runtime().await;
    remove_image(&mut images, &env.image).await;
    assert_eq!(
        store_counts(&env.g).snapshots,
        1,
        "the old container's layer"
    );
    remove_container(&mut rt, &old).await;
    wait_reaped(&env.g, &old).await;
    assert!(leases(&env.g).is_empty(), "{:?}", leases(&env.g));
    assert_eq!(store_counts(&env.g).snapshots, 0);
    remove_pod(&mut rt, &pod).await;
}

fn unmount_detached(p: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())?;
    // SAFETY: umount2 on a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn image_mount(path: &str, image: &str, sub: &str) -> Mount {
    Mount {
        container_path: path.into(),
        image: spec(image),
        image_sub_path: sub.into(),
        readonly: true,
        ..Default::default()
    }
}

async fn create_err(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    pc: &PodSandboxConfig,
    config: ContainerConfig,
) -> tonic::Status {
    rt.create_container(CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: Some(pc.clone()),
    })
    .await
    .expect_err("CreateContainer should fail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_volumes_mount_images_read_only() {
    let mut env = BusyboxEnv::start("image-volumes", "").await;
    // The image to mount: two layers, a directory to mount alone, and
    // symlinks that would lead out of the image if they were followed on
    // the host.
    let data = ImageSpec::new(vec![
        Layer::new()
            .dir("data/")
            .file("data/hello", b"hello from the image")
            .dir("data/sub/")
            .file("data/sub/inner", b"inner"),
        Layer::new()
            .dir("data/")
            .file("data/second", b"upper layer")
            .symlink("out-abs", "/etc")
            .symlink("out-rel", "../../../../../../etc")
            .symlink("in", "data/sub"),
    ])
    .label("image-volume-data")
    .build();
    Pusher::new(&env.registry.addr, None)
        .image("e2e/data", &["1"], &data)
        .await;
    let data_ref = format!("{}/e2e/data:1", env.registry.addr);
    let mut images = env.g.images().await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "image-volumes").await;
    let containers = env.g.dir.join("root/runtime/containers");

    // Not pulled yet: a clear refusal, nothing left behind.
    let mut c = env.container("early", "exec sleep 600");
    c.mounts = vec![image_mount("/whole", &data_ref, "")];
    let e = create_err(&mut rt, &pod, &pc, c).await;
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("pulled first"), "{e:?}");
    assert!(e.message().contains(&data_ref), "{e:?}");
    assert!(mounts_under(&containers).is_empty());
    assert!(leases(&env.g).is_empty(), "{:?}", leases(&env.g));

    images
        .pull_image(pull_request(&data_ref))
        .await
        .expect("pulling the data image");

    // Sub paths that do not name a directory inside the image.
    for sub in [
        "nope",
        "data/hello",
        "../etc",
        "/etc",
        "out-abs/passwd",
        "out-rel",
        "out-abs",
    ] {
        let mut c = env.container("bad-sub", "exec sleep 600");
        c.mounts = vec![image_mount("/part", &data_ref, sub)];
        let e = create_err(&mut rt, &pod, &pc, c).await;
        assert_eq!(e.code(), Code::InvalidArgument, "{sub:?}: {e:?}");
        assert!(e.message().contains("image_sub_path"), "{sub:?}: {e:?}");
        assert!(
            mounts_under(&containers).is_empty(),
            "{sub:?} left mounts: {:?}",
            mounts_under(&containers)
        );
        assert!(leases(&env.g).is_empty(), "{sub:?}: {:?}", leases(&env.g));
    }

    let mut c = env.container("reader", "exec sleep 600");
    c.mounts = vec![
        image_mount("/whole", &data_ref, ""),
        image_mount("/part", &data_ref, "data/sub"),
        image_mount("/linked", &data_ref, "in"),
    ];
    let id = create_and_start(&mut rt, &pod, &pc, c).await;
    assert_eq!(
        exec(&mut rt, &id, "cat /whole/data/hello /whole/data/second").await,
        (0, "hello from the imageupper layer".into(), String::new())
    );
    assert_eq!(
        exec(&mut rt, &id, "ls /part; cat /linked/inner").await,
        (0, "inner\ninner".into(), String::new())
    );
    for dir in ["/whole", "/whole/data", "/part", "/linked"] {
        let (code, _, err) = exec(&mut rt, &id, &format!("echo x > {dir}/new")).await;
        assert_ne!(code, 0, "{dir} is writable");
        assert!(err.contains("Read-only file system"), "{dir}: {err}");
    }
    let cdir = containers.join(&id);
    assert_eq!(mounts_under(&cdir.join("image-volumes")).len(), 5);
    assert_eq!(
        leases(&env.g).len(),
        4,
        "the container's image and three volumes: {:?}",
        leases(&env.g)
    );

    // Removing the mounted image takes its name only.
    remove_image(&mut images, &data_ref).await;
    assert!(!image_present(&mut images, &data_ref).await);
    let snapshots = images_root(&env.g).join("snapshots");
    let snapshot = |d: &str| snapshots.join(d.trim_start_matches("sha256:"));
    assert!(data.diff_ids.iter().all(|d| snapshot(d).is_dir()));
    assert_eq!(exec(&mut rt, &id, "cat /whole/data/hello").await.0, 0);

    // A restart finds the volumes and their leases as they were.
    env.g.stop();
    env.g.restart().await;
    let mut images = env.g.images().await;
    let mut rt = env.g.runtime().await;
    assert_eq!(leases(&env.g).len(), 4, "{:?}", leases(&env.g));
    assert_eq!(mounts_under(&cdir.join("image-volumes")).len(), 5);
    assert!(data.diff_ids.iter().all(|d| snapshot(d).is_dir()));
    assert_eq!(exec(&mut rt, &id, "cat /part/inner").await.1, "inner");

    // Removing the container unmounts everything and frees the image.
    remove_container(&mut rt, &id).await;
    wait_reaped(&env.g, &id).await;
    assert!(
        mounts_under(&containers).is_empty(),
        "{:?}",
        mounts_under(&containers)
    );
    assert!(leases(&env.g).is_empty(), "{:?}", leases(&env.g));
    assert!(data.diff_ids.iter().all(|d| !snapshot(d).exists()));
    assert!(image_present(&mut images, &env.image).await);
    remove_pod(&mut rt, &pod).await;
}

/// A store damaged behind gantry's back (snapshots or blobs deleted) never
/// reports an image present that cannot run: it is rebuilt from its blobs,
/// or reported absent so that kubelet pulls it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_images_are_rebuilt_or_reported_absent() {
    let mut env = BusyboxEnv::start("image-refs-damage", "").await;
    let root = images_root(&env.g);
    let snapshot = || {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("snapshots"))
            .expect("the snapshots directory")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(v.len() <= 1, "{v:?}");
        v.pop()
    };
    let layer = snapshot().expect("the busybox layer's snapshot");
    let layer_blob = || {
        // The one blob that is neither JSON config nor manifest.
        std::fs::read_dir(root.join("content/blobs/sha256"))
            .expect("the blobs directory")
            .flatten()
            .map(|e| e.path())
            .find(|p| std::fs::read(p).is_ok_and(|b| b.first() != Some(&b'{')))
    };
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "image-refs-damage").await;

    // At start: a lost snapshot is unpacked again from its blob.
    env.g.stop();
    std::fs::remove_dir_all(&layer).expect("removing the snapshot");
    env.g.restart().await;
    let mut images = env.g.images().await;
    let mut rt = env.g.runtime().await;
    assert!(layer.join("bin/busybox").is_file(), "not rebuilt at start");
    let id = create_and_start(
        &mut rt,
        &pod,
        &pc,
        env.container("after-restart", "exec sleep 600"),
    )
    .await;
    assert_eq!(exec(&mut rt, &id, "echo ok").await.1, "ok\n");
    remove_container(&mut rt, &id).await;
    wait_reaped(&env.g, &id).await;

    // While running: the same when a container is created.
    std::fs::remove_dir_all(&layer).expect("removing the snapshot");
    let id = create_and_start(
        &mut rt,
        &pod,
        &pc,
        env.container("rebuilt", "exec sleep 600"),
    )
    .await;
    assert!(layer.join("bin/busybox").is_file());
    remove_container(&mut rt, &id).await;
    wait_reaped(&env.g, &id).await;

    // Snapshot and blob gone: absent, so pulled again, then it runs.
    std::fs::remove_dir_all(&layer).expect("removing the snapshot");
    std::fs::remove_file(layer_blob().expect("the layer's blob")).expect("removing the blob");
    assert!(!image_present(&mut images, &env.image).await);
    let e = create_err(
        &mut rt,
        &pod,
        &pc,
        env.container("absent", "exec sleep 600"),
    )
    .await;
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    images
        .pull_image(pull_request(&env.image))
        .await
        .expect("pulling the image again");
    assert!(image_present(&mut images, &env.image).await);
    let id = create_and_start(
        &mut rt,
        &pod,
        &pc,
        env.container("pulled-again", "exec sleep 600"),
    )
    .await;
    remove_container(&mut rt, &id).await;
    wait_reaped(&env.g, &id).await;

    // The same found at start.
    env.g.stop();
    std::fs::remove_dir_all(&layer).expect("removing the snapshot");
    std::fs::remove_file(layer_blob().expect("the layer's blob")).expect("removing the blob");
    env.g.restart().await;
    let mut images = env.g.images().await;
    let mut rt = env.g.runtime().await;
    assert!(!image_present(&mut images, &env.image).await);
    assert_eq!(store_counts(&env.g).blobs, 0, "the rest was collected");
    remove_pod(&mut rt, &pod).await;
}
