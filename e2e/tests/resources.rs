//! What ContainerStatus says about a container's limits and identity, and
//! that it matches what the process really got: resources as created and
//! as updated (also before the container starts), and the uid, gid and
//! supplemental groups kubelet shows in the pod's status.

use gantry_e2e::fixture::{
    container_status_verbose as status, create_and_start, remove_pod, run_pod, BusyboxEnv,
};
use gantry_proto::v1::{
    CreateContainerRequest, Int64Value, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, StartContainerRequest, StatusRequest, SupplementalGroupsPolicy,
    UpdateContainerResourcesRequest,
};

fn memory_limit(resources: &Option<gantry_proto::v1::ContainerResources>) -> i64 {
    resources
        .as_ref()
        .and_then(|r| r.linux.as_ref())
        .map(|l| l.memory_limit_in_bytes)
        .unwrap_or(0)
}

/// The memory limit the kernel enforces on `pid`, from its memory cgroup.
fn enforced_memory_limit(pid: i64) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cgroups.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let file = if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
        } else if controllers.is_empty() && !std::path::Path::new("/sys/fs/cgroup/memory").exists()
        {
            format!("/sys/fs/cgroup{path}/memory.max")
        } else {
            continue;
        };
        return std::fs::read_to_string(file).ok()?.trim().parse().ok();
    }
    None
}

/// `Gid:` (real) and `Groups:` of a process, from /proc.
fn process_groups(pid: i64) -> (i64, Vec<i64>) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .map(|n| n.parse::<i64>().unwrap())
            .collect::<Vec<_>>()
    };
    (field("Gid:")[0], field("Groups:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_resources_and_the_identity_the_process_has() {
    let env = BusyboxEnv::start("resources", "").await;
    let mut rt = env.g.runtime().await;

    let status_features = rt
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .features
        .unwrap();
    assert!(status_features.supplemental_groups_policy);

    let pc = env.pod_config("resources");
    let pod = run_pod(&mut rt, &pc).await;

    // A created container takes an update, and starts with it.
    let mut c = env.container("limited", "exec sleep 1000");
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 512,
            ..Default::default()
        }),
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            run_as_group: Some(Int64Value { value: 3000 }),
            supplemental_groups: vec![5001, 5000],
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
            ..Default::default()
        }),
    });
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c),
            sandbox_config: Some(pc.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let (s, _) = status(&mut rt, &id).await;
    assert_eq!(memory_limit(&s.resources), 64 << 20);
    let updated = LinuxContainerResources {
        memory_limit_in_bytes: 80 << 20,
        cpu_shares: 256,
        ..Default::default()
    };
    rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(updated.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let (s, info) = status(&mut rt, &id).await;
    let pid = info["pid"].as_i64().unwrap();
    assert_eq!(enforced_memory_limit(pid), Some(80 << 20));
    let linux = s.resources.as_ref().unwrap().linux.as_ref().unwrap();
    assert_eq!(linux.memory_limit_in_bytes, 80 << 20);
    assert_eq!(linux.cpu_shares, 256);

    // And a running one takes the next, which status then reports.
    rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            ..updated
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(enforced_memory_limit(pid), Some(96 << 20));
    let (s, _) = status(&mut rt, &id).await;
    assert_eq!(memory_limit(&s.resources), 96 << 20);

    // The identity reported is the one the process runs with: the primary
    // group leads the supplemental ones, and Strict left out the image's.
    let user = s.user.unwrap().linux.unwrap();
    assert_eq!((user.uid, user.gid), (1000, 3000));
    assert_eq!(user.supplemental_groups, vec![3000, 5000, 5001]);
    let (gid, mut groups) = process_groups(pid);
    groups.sort_unstable();
    assert_eq!(gid, user.gid);
    assert_eq!(groups, vec![3000, 5000, 5001]);

    // Without a security context: root, and the groups the image's
    // /etc/group gives root (Merge, the default).
    let plain = create_and_start(
        &mut rt,
        &pod,
        &pc,
        env.container("plain", "exec sleep 1000"),
    )
    .await;
    let (s, info) = status(&mut rt, &plain).await;
    let user = s.user.unwrap().linux.unwrap();
    assert_eq!((user.uid, user.gid), (0, 0));
    assert_eq!(user.supplemental_groups.first(), Some(&0));
    let (_, mut groups) = process_groups(info["pid"].as_i64().unwrap());
    let mut reported = user.supplemental_groups.clone();
    groups.sort_unstable();
    reported.sort_unstable();
    assert_eq!(groups, reported);
    assert!(s.resources.is_none(), "none asked for, none reported");

    // An unknown container is NotFound for updates too.
    let e = rt
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: "no-such-container".into(),
            linux: Some(LinuxContainerResources::default()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    remove_pod(&mut rt, &pod).await;
}
