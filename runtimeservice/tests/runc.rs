//! The runc-compatible runtime driver against the real runc: a container
//! from a busybox rootfs goes through create, start, state, kill and delete.

use std::path::Path;
use std::time::Duration;

use gantry_runtimeservice::error::Error;
use gantry_runtimeservice::oci::{CliRuntime, ContainerIo, OciRuntime};
use oci_spec::runtime::Spec;

fn runc() -> Option<std::path::PathBuf> {
    ["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

fn bundle(dir: &Path, args: &[&str]) {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    for d in ["proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap();
    process.set_terminal(Some(false));
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    spec.set_process(Some(process));
    spec.set_hostname(Some("runc-test".into()));
    spec.save(dir.join("config.json")).unwrap();
}

#[tokio::test]
async fn lifecycle_with_real_runc() {
    let Some(bin) = runc() else {
        panic!("runc is not installed: apt-get install runc");
    };
    assert!(rustix_root(), "this test drives runc and needs root");
    let dir = tempfile::tempdir().unwrap();
    let rt = CliRuntime {
        name: "runc".into(),
        binary: bin,
        args: vec![],
        root: dir.path().join("state"),
        systemd_cgroup: false,
        exec_helper: None,
        metrics: Default::default(),
    };
    let b = dir.path().join("bundle");
    bundle(&b, &["/bin/busybox", "sleep", "30"]);
    let id = format!("gantry-test-{}", std::process::id());
    rt.create(&id, &b, &b.join("pid"), ContainerIo::null())
        .await
        .unwrap();
    let s = rt.state(&id).await.unwrap();
    assert_eq!(s.status, "created");
    let pid: i32 = std::fs::read_to_string(b.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(s.pid, pid);
    rt.start(&id).await.unwrap();
    assert_eq!(rt.state(&id).await.unwrap().status, "running");
    rt.kill(&id, 9, false).await.unwrap();
    let mut status = String::new();
    for _ in 0..100 {
        status = rt.state(&id).await.unwrap().status;
        if status == "stopped" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "stopped");
    rt.delete(&id, false).await.unwrap();
    rt.delete(&id, false).await.unwrap();
    assert!(matches!(rt.state(&id).await, Err(Error::NotFound(_))));

    // A command missing from the image fails at create, with runc's reason.
    let b2 = dir.path().join("bundle2");
    bundle(&b2, &["/bin/does-not-exist"]);
    let id2 = format!("{id}-2");
    let e = rt
        .create(&id2, &b2, &b2.join("pid"), ContainerIo::null())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("does-not-exist") || e.to_string().contains("no such file"),
        "{e}"
    );
    rt.delete(&id2, true).await.unwrap();
}

fn rustix_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
