//! ImageFsInfo's container filesystems (CRI 1.31+, read by kubelet's
//! eviction manager): what containers write to their writable layer shows
//! up there, and goes away with the container.

use std::time::{Duration, Instant};

use gantry_e2e::fixture::{create_and_start, remove_pod, wait_reaped, BusyboxEnv};
use gantry_proto::v1::image_service_client::ImageServiceClient;
use gantry_proto::v1::{
    ContainerState, ContainerStatusRequest, FilesystemUsage, ImageFsInfoRequest,
    RemoveContainerRequest,
};
use tonic::transport::Channel;

async fn fs_info(images: &mut ImageServiceClient<Channel>) -> (FilesystemUsage, FilesystemUsage) {
    let r = images
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner();
    assert_eq!(r.image_filesystems.len(), 1, "{r:?}");
    assert_eq!(r.container_filesystems.len(), 1, "{r:?}");
    (
        r.image_filesystems[0].clone(),
        r.container_filesystems[0].clone(),
    )
}

fn used(u: &FilesystemUsage) -> u64 {
    u.used_bytes.as_ref().map(|v| v.value).expect("used_bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_filesystems_count_the_writable_layers() {
    let env = BusyboxEnv::start("image-fs", "").await;
    let mut images = env.g.images().await;
    let mut rt = env.g.runtime().await;

    let (image_fs, before) = fs_info(&mut images).await;
    let mountpoint = |u: &FilesystemUsage| u.fs_id.as_ref().expect("fs_id").mountpoint.clone();
    assert!(
        mountpoint(&before).starts_with(&env.g.dir.display().to_string()),
        "{before:?}"
    );
    assert_ne!(mountpoint(&before), mountpoint(&image_fs));
    assert!(before.inodes_used.is_some());

    const WRITTEN: u64 = 8 << 20;
    let (pod, pc) = env.start_pod(&mut rt, "image-fs").await;
    let id = create_and_start(
        &mut rt,
        &pod,
        &pc,
        env.container(
            "writer",
            "/bin/busybox dd if=/dev/urandom of=/big bs=1048576 count=8",
        ),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = rt
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("a status");
        if s.state == ContainerState::ContainerExited as i32 {
            assert_eq!(s.exit_code, 0, "{s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the writer never exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, during) = fs_info(&mut images).await;
    assert!(
        used(&during) >= used(&before) + WRITTEN,
        "{} before, {} after writing {WRITTEN}",
        used(&before),
        used(&during)
    );

    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("RemoveContainer");
    wait_reaped(&env.g, &id).await;
    let (_, after) = fs_info(&mut images).await;
    assert!(
        used(&after) < used(&before) + WRITTEN,
        "{} still used after removing the writer",
        used(&after)
    );
    remove_pod(&mut rt, &pod).await;
}
