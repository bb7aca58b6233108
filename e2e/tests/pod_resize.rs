//! UpdatePodSandboxResources end to end (CRI 1.33, in-place pod resize):
//! the pod's new totals land in its cgroup, and what cannot be applied is
//! refused with a code that says why.

use std::path::{Path, PathBuf};

use gantry_e2e::fixture::{create_and_start, remove_pod, stop_pod, verbose_pid, BusyboxEnv};
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{HugepageLimit, LinuxContainerResources, UpdatePodSandboxResourcesRequest};
use tonic::transport::Channel;
use tonic::Code;

/// The pod's cgroup (relative to the hierarchy roots), as the parent of
/// its container's memory cgroup.
fn pod_cgroup(pid: i64) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("/proc/pid/cgroup");
    let container = text
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        })
        .expect("a v1 memory cgroup (this test reads v1 files)");
    Path::new(&container)
        .parent()
        .expect("a parent")
        .display()
        .to_string()
}

fn read(hierarchy: &str, cgroup: &str, file: &str) -> String {
    let p: PathBuf = Path::new("/sys/fs/cgroup")
        .join(hierarchy)
        .join(cgroup.trim_start_matches('/'))
        .join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

async fn update(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    resources: Option<LinuxContainerResources>,
) -> Result<(), tonic::Status> {
    rt.update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod.into(),
        overhead: Some(LinuxContainerResources {
            cpu_shares: 2,
            ..Default::default()
        }),
        resources,
    })
    .await
    .map(drop)
}

fn resources(shares: i64, quota: i64, memory: i64) -> LinuxContainerResources {
    LinuxContainerResources {
        cpu_shares: shares,
        cpu_period: 100_000,
        cpu_quota: quota,
        memory_limit_in_bytes: memory,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_resizes_reach_the_pod_cgroup() {
    let env = BusyboxEnv::start("pod-resize", "").await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "resize").await;
    let id = create_and_start(&mut rt, &pod, &pc, env.container("c", "exec sleep 1000")).await;
    let cgroup = pod_cgroup(verbose_pid(&mut rt, &id).await);

    update(&mut rt, &pod, Some(resources(256, 30_000, 96 << 20)))
        .await
        .expect("UpdatePodSandboxResources");
    assert_eq!(read("cpu", &cgroup, "cpu.shares"), "256");
    assert_eq!(read("cpu", &cgroup, "cpu.cfs_period_us"), "100000");
    assert_eq!(read("cpu", &cgroup, "cpu.cfs_quota_us"), "30000");
    assert_eq!(
        read("memory", &cgroup, "memory.limit_in_bytes"),
        (96u64 << 20).to_string()
    );

    // A second resize replaces the first; no quota means unlimited.
    update(&mut rt, &pod, Some(resources(1024, 0, 128 << 20)))
        .await
        .expect("a second resize");
    assert_eq!(read("cpu", &cgroup, "cpu.shares"), "1024");
    assert_eq!(read("cpu", &cgroup, "cpu.cfs_quota_us"), "-1");
    assert_eq!(
        read("memory", &cgroup, "memory.limit_in_bytes"),
        (128u64 << 20).to_string()
    );

    // What cannot be applied says so, and changes nothing.
    let mut huge = resources(512, 10_000, 64 << 20);
    huge.hugepage_limits = vec![HugepageLimit {
        page_size: "2MB".into(),
        limit: 2 << 20,
    }];
    let e = update(&mut rt, &pod, Some(huge))
        .await
        .expect_err("hugepages");
    assert_eq!(e.code(), Code::Unimplemented, "{e}");
    assert!(e.message().contains("hugepage_limits"), "{e}");
    assert_eq!(read("cpu", &cgroup, "cpu.shares"), "1024");
    let e = update(&mut rt, &pod, None).await.expect_err("no resources");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = update(&mut rt, "no-such-pod", Some(resources(2, 0, 0)))
        .await
        .expect_err("unknown pod");
    assert_eq!(e.code(), Code::NotFound, "{e}");

    stop_pod(&mut rt, &pod).await;
    let e = update(&mut rt, &pod, Some(resources(2, 0, 0)))
        .await
        .expect_err("a stopped pod");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    remove_pod(&mut rt, &pod).await;
}
