//! A node whose disk is full: gantry's root on a small tmpfs made by the
//! test. Pulls and creates that run out of space fail with
//! `ResourceExhausted`, leave no partial blob, snapshot or record, and work
//! again once there is room.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use gantry_e2e::daemon::Gantry;
use gantry_e2e::fixture::{all_containers, pull_request, remove_pod, run_pod, store_counts};
use gantry_e2e::net::TestNetwork;
use gantry_e2e::oci::{ImageSpec, Layer};
use gantry_e2e::static_http::StaticHttp;
use gantry_e2e::{local_registries, require_host};
use gantry_proto::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec as CriImageSpec,
    ImageStatusRequest, PodSandboxConfig, StartContainerRequest,
};
use tonic::Code;

/// A tmpfs of `size` mounted for the test, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs at {}", at.display());
        SmallFs(at.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "resizing the tmpfs");
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![1u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::fill(&mut v[..]);
    v
}

fn container(image: &str, name: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(CriImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), "sleep 1000".into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_root_fails_cleanly_and_recovers() {
    require_host();
    let web = StaticHttp::start().await;
    let small = ImageSpec::new(vec![Layer::busybox()])
        .label("full-disk-small")
        .build();
    web.image("e2e/small", "1", &small);
    // Random bytes do not compress: 48 MiB to download, 48 MiB unpacked.
    let big = ImageSpec::new(vec![
        Layer::busybox(),
        Layer::new().file("big", &random(48 << 20)),
    ])
    .label("full-disk-big")
    .build();
    web.image("e2e/big", "1", &big);
    let small_ref = format!("{}/e2e/small:1", web.addr);
    let big_ref = format!("{}/e2e/big:1", web.addr);

    // The daemon's whole directory is small, its log file (stderr) too: a
    // log line that cannot be written must not take the daemon down.
    let tmp = tempfile::tempdir().unwrap();
    let fs = SmallFs::mount(&tmp.path().join("node"), "40m");
    let mut g = Gantry::start_in(&fs.0, &local_registries(&[&web.addr])).await;
    let net = TestNetwork::create(&g.dir.join("cni"), &tmp.path().join("ipam"));
    let mut images = g.images().await;
    let mut rt = g.runtime().await;

    images.pull_image(pull_request(&small_ref)).await.unwrap();
    let before = store_counts(&g);

    let err = images.pull_image(pull_request(&big_ref)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("No space left"),
        "the message names the cause: {}",
        err.message()
    );
    let after = store_counts(&g);
    assert_eq!(after, before, "a failed pull leaves nothing behind");
    let status = images
        .image_status(ImageStatusRequest {
            image: Some(CriImageSpec {
                image: big_ref.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none(), "{status:?}");

    // A pod fits; then the disk fills and its container cannot be made.
    let pod_config = PodSandboxConfig {
        log_directory: g.dir.join("logs").display().to_string(),
        ..gantry_e2e::fixture::named_pod_config("full")
    };
    let pod = run_pod(&mut rt, &pod_config).await;
    let filler = fs.fill();
    let create = |name: &str, image: &str| CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(container(image, name)),
        sandbox_config: Some(pod_config.clone()),
    };
    let err = rt
        .create_container(create("c", &small_ref))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::ResourceExhausted,
        "{err:?}; log:\n{}",
        g.log()
    );
    assert!(all_containers(&mut rt).await.is_empty());
    let left: Vec<_> = std::fs::read_dir(g.dir.join("root/containers"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a failed create left {left:?}");

    // Room again: everything works, the same names included.
    std::fs::remove_file(&filler).unwrap();
    fs.resize("160m");
    images.pull_image(pull_request(&big_ref)).await.unwrap();
    for (name, image) in [("c", &small_ref), ("b", &big_ref)] {
        let id = rt
            .create_container(create(name, image))
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {name} once there is room: {e}"))
            .into_inner()
            .container_id;
        rt.start_container(StartContainerRequest { container_id: id })
            .await
            .unwrap();
    }
    assert_eq!(all_containers(&mut rt).await.len(), 2);

    remove_pod(&mut rt, &pod).await;
    drop(rt);
    drop(images);
    g.stop();
    drop(net);
}
