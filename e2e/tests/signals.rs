//! Stop signals end to end on real runc (CRI 1.33): StopContainer sends
//! the container config's stop signal, else the image's STOPSIGNAL, else
//! SIGTERM, and ContainerStatus reports the one in effect.

use std::time::{Duration, Instant};

use gantry_e2e::fixture::{create_and_start, remove_pod, BusyboxEnv};
use gantry_e2e::oci::{ImageSpec, Layer, Pusher};
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    ContainerConfig, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ImageSpec as CriImageSpec, PullImageRequest, Signal,
    StopContainerRequest,
};
use tonic::transport::Channel;
use tonic::Code;

/// Exits with a code naming the signal it got; PID 1 ignores signals it
/// has no handler for, so any other signal leads to SIGKILL (137).
const TRAPS: &str = "trap 'exit 41' USR1; trap 'exit 43' TERM; trap 'exit 44' QUIT; \
    trap 'exit 45' 37; : > /tmp/ready; while true; do sleep 0.1; done";

async fn status(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerStatus {
    rt.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
    .into_inner()
    .status
    .expect("a status")
}

/// Waits until the script's traps are installed, and checks that its
/// process blocks no signal.
async fn wait_ready(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = rt
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: vec!["/bin/cat".into(), "/tmp/ready".into()],
                timeout: 5,
            })
            .await
            .unwrap_or_else(|e| panic!("ExecSync {id}: {e}"))
            .into_inner();
        if r.exit_code == 0 {
            let st = rt
                .exec_sync(ExecSyncRequest {
                    container_id: id.into(),
                    cmd: vec!["/bin/cat".into(), "/proc/1/status".into()],
                    timeout: 5,
                })
                .await
                .unwrap()
                .into_inner();
            // Nothing the daemon or the monitor blocks may reach the
            // container: a blocked stop signal would never arrive.
            let text = String::from_utf8_lossy(&st.stdout).to_string();
            let blocked = text.lines().find_map(|l| l.strip_prefix("SigBlk:"));
            assert_eq!(blocked.map(str::trim), Some("0000000000000000"), "{text}");
            return;
        }
        assert!(Instant::now() < deadline, "{id} never got ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops `id` with a grace period long enough for any trap; returns its
/// exit code.
async fn stop(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> i32 {
    wait_ready(rt, id).await;
    rt.stop_container(StopContainerRequest {
        container_id: id.into(),
        timeout: 20,
    })
    .await
    .unwrap_or_else(|e| panic!("StopContainer {id}: {e}"));
    let s = status(rt, id).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    s.exit_code
}

fn with_image(mut c: ContainerConfig, image: &str) -> ContainerConfig {
    c.image = Some(CriImageSpec {
        image: image.into(),
        ..Default::default()
    });
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_signals_come_from_the_config_the_image_or_default_to_sigterm() {
    let env = BusyboxEnv::start_with(
        ImageSpec::new(vec![Layer::busybox()])
            .label("signals")
            .stop_signal("SIGUSR1"),
        "",
    )
    .await;
    // Two more images in the same registry: one without STOPSIGNAL, one
    // whose STOPSIGNAL names no signal.
    let pusher = Pusher::new(&env.registry.addr, None);
    let plain = format!("{}/e2e/plain:1", env.registry.addr);
    let bogus = format!("{}/e2e/bogus:1", env.registry.addr);
    pusher
        .image(
            "e2e/plain",
            &["1"],
            &ImageSpec::new(vec![Layer::busybox()])
                .label("plain")
                .build(),
        )
        .await;
    pusher
        .image(
            "e2e/bogus",
            &["1"],
            &ImageSpec::new(vec![Layer::busybox()])
                .label("bogus")
                .stop_signal("SIGNOPE")
                .build(),
        )
        .await;
    let mut images = env.g.images().await;
    for image in [&plain, &bogus] {
        images
            .pull_image(PullImageRequest {
                image: Some(CriImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("pulling {image}: {e}"));
    }
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "signals").await;

    // The image's STOPSIGNAL, when the config leaves the choice open.
    let from_image = create_and_start(&mut rt, &pod, &pc, env.container("image", TRAPS)).await;
    assert_eq!(
        status(&mut rt, &from_image).await.stop_signal(),
        Signal::Sigusr1
    );
    assert_eq!(stop(&mut rt, &from_image).await, 41);
    assert_eq!(
        status(&mut rt, &from_image).await.stop_signal(),
        Signal::Sigusr1
    );

    // The config's signal wins over the image's, real-time ones included
    // (SIGRTMIN+3 is signal 37 in user space).
    for (name, signal, code) in [
        ("quit", Signal::Sigquit, 44),
        ("rt", Signal::Sigrtminplus3, 45),
    ] {
        let mut c = env.container(name, TRAPS);
        c.stop_signal = signal as i32;
        let id = create_and_start(&mut rt, &pod, &pc, c).await;
        assert_eq!(status(&mut rt, &id).await.stop_signal(), signal);
        assert_eq!(stop(&mut rt, &id).await, code, "{name}");
    }

    // Neither says: SIGTERM, and the status says so.
    let plain_id = create_and_start(
        &mut rt,
        &pod,
        &pc,
        with_image(env.container("plain", TRAPS), &plain),
    )
    .await;
    assert_eq!(
        status(&mut rt, &plain_id).await.stop_signal(),
        Signal::Sigterm
    );
    assert_eq!(stop(&mut rt, &plain_id).await, 43);

    // What cannot be sent is refused at create time.
    let create = |c: ContainerConfig| CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(c),
        sandbox_config: Some(pc.clone()),
    };
    let e = rt
        .create_container(create(with_image(env.container("bogus", TRAPS), &bogus)))
        .await
        .expect_err("an image STOPSIGNAL that is no signal");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("SIGNOPE"), "{e}");
    // The config's signal overrides even a bad image's.
    let mut c = with_image(env.container("bogus-ok", TRAPS), &bogus);
    c.stop_signal = Signal::Sigterm as i32;
    let ok = create_and_start(&mut rt, &pod, &pc, c).await;
    assert_eq!(stop(&mut rt, &ok).await, 43);
    let mut c = env.container("unknown", TRAPS);
    c.stop_signal = 66;
    let e = rt
        .create_container(create(c))
        .await
        .expect_err("a stop_signal outside the enum");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");

    remove_pod(&mut rt, &pod).await;
}
