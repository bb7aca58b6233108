//! Recursive read-only mounts end to end (KEP-3857): Status reports per
//! handler whether it can make them (runc here: yes; runsc: no), a mount
//! with `recursive_read_only` leaves no writable mount below it in the
//! container, and the combinations the CRI forbids are refused.

use std::path::{Path, PathBuf};

use gantry_e2e::fixture::{create_and_start, remove_pod, BusyboxEnv};
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    ContainerConfig, CreateContainerRequest, ExecSyncRequest, Mount, MountPropagation,
    PodSandboxConfig, StatusRequest,
};
use tonic::transport::Channel;
use tonic::Code;

/// A host directory with a writable tmpfs mounted at `sub/`, unmounted
/// when dropped.
struct Nested {
    dir: tempfile::TempDir,
}

impl Nested {
    fn new() -> Nested {
        let dir = tempfile::tempdir().expect("a temp dir");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("sub/");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "gantry-e2e-rro"])
            .arg(&sub)
            .status()
            .expect("running mount");
        assert!(ok.success(), "mounting a tmpfs on {}", sub.display());
        Nested { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path().join("sub"))
            .status();
    }
}

fn mount(host: &Path, recursive: bool) -> Mount {
    Mount {
        container_path: "/data".into(),
        host_path: host.display().to_string(),
        readonly: true,
        recursive_read_only: recursive,
        ..Default::default()
    }
}

/// Exit code of `sh -c script` in the container.
async fn sh(rt: &mut RuntimeServiceClient<Channel>, id: &str, script: &str) -> i32 {
    rt.exec_sync(ExecSyncRequest {
        container_id: id.into(),
        cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
        timeout: 10,
    })
    .await
    .unwrap_or_else(|e| panic!("ExecSync {id}: {e}"))
    .into_inner()
    .exit_code
}

async fn refused(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    pc: &PodSandboxConfig,
    c: ContainerConfig,
) -> tonic::Status {
    rt.create_container(CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(c),
        sandbox_config: Some(pc.clone()),
    })
    .await
    .expect_err("CreateContainer should refuse this mount")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_read_only_mounts_reach_every_submount() {
    let env = BusyboxEnv::start(
        "rro",
        "runtime:\n  runtimes:\n    runc:\n      path: runc\n    runsc:\n      path: runsc\n",
    )
    .await;
    let mut rt = env.g.runtime().await;
    let status = rt
        .status(StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let rro = |name: &str| {
        status
            .runtime_handlers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.features)
            .map(|f| f.recursive_read_only_mounts)
            .unwrap_or_else(|| panic!("no handler {name:?} in {:?}", status.runtime_handlers))
    };
    // runc 1.1 lists `rro` in `runc features` and the kernel is >= 5.12;
    // runsc has no `features` command.
    assert!(rro("runc"));
    assert!(rro(""), "the default handler is runc");
    assert!(!rro("runsc"));

    let nested = Nested::new();
    let (pod, pc) = env.start_pod(&mut rt, "rro").await;
    let keep = "while true; do sleep 1; done";

    // Plain readonly: the bind is read-only, the tmpfs below it is not.
    let mut c = env.container("ro", keep);
    c.mounts = vec![mount(&nested.path(), false)];
    let ro = create_and_start(&mut rt, &pod, &pc, c).await;
    assert_ne!(sh(&mut rt, &ro, ": > /data/top").await, 0);
    assert_eq!(sh(&mut rt, &ro, ": > /data/sub/from-ro").await, 0);
    assert!(nested.path().join("sub/from-ro").exists());

    // Recursive: nothing below /data is writable.
    let mut c = env.container("rro", keep);
    c.mounts = vec![mount(&nested.path(), true)];
    let rro_id = create_and_start(&mut rt, &pod, &pc, c).await;
    assert_ne!(sh(&mut rt, &rro_id, ": > /data/top").await, 0);
    assert_ne!(sh(&mut rt, &rro_id, ": > /data/sub/from-rro").await, 0);
    assert_eq!(sh(&mut rt, &rro_id, "test -e /data/sub/from-ro").await, 0);
    assert!(!nested.path().join("sub/from-rro").exists());

    // What the CRI forbids: rro without readonly, or with propagation.
    let mut m = mount(&nested.path(), true);
    m.readonly = false;
    let mut c = env.container("rw", keep);
    c.mounts = vec![m];
    let e = refused(&mut rt, &pod, &pc, c).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("readonly"), "{e}");
    for propagation in [
        MountPropagation::PropagationHostToContainer,
        MountPropagation::PropagationBidirectional,
    ] {
        let mut m = mount(&nested.path(), true);
        m.propagation = propagation as i32;
        let mut c = env.container("shared", keep);
        c.mounts = vec![m];
        let e = refused(&mut rt, &pod, &pc, c).await;
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.message().contains("propagation"), "{e}");
    }
    remove_pod(&mut rt, &pod).await;

    // A handler that cannot do it refuses it rather than mounting less.
    let mut runsc_pc = env.pod_config("rro-runsc");
    runsc_pc.metadata.as_mut().expect("metadata").uid = "uid-rro-runsc".into();
    let runsc_pod = rt
        .run_pod_sandbox(gantry_proto::v1::RunPodSandboxRequest {
            config: Some(runsc_pc.clone()),
            runtime_handler: "runsc".into(),
        })
        .await
        .expect("a runsc pod")
        .into_inner()
        .pod_sandbox_id;
    let mut c = env.container("rro", keep);
    c.mounts = vec![mount(&nested.path(), true)];
    let e = refused(&mut rt, &runsc_pod, &runsc_pc, c).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("not supported"), "{e}");
    remove_pod(&mut rt, &runsc_pod).await;
}
