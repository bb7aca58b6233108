//! Pods in their own user namespace (`hostUsers: false`) on the real
//! daemon and runc: root in the pod is the mapped id on the node, image
//! files keep their owners, a host directory shows its owners mapped, a
//! non-root image user works, exec runs inside the namespace, and
//! CAP_SYS_ADMIN in the pod does not reach the node.

use std::os::unix::fs::MetadataExt;

use gantry_e2e::fixture::{
    create_and_start, create_container, remove_pod, require_runtime, verbose_pid, BusyboxEnv,
};
use gantry_e2e::oci::{ImageSpec, Layer};
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    Capability, ContainerStatsRequest, ExecSyncRequest, IdMapping, LinuxContainerConfig,
    LinuxContainerSecurityContext, Mount, NamespaceMode, PodSandboxConfig, PodSandboxStatusRequest,
    RunPodSandboxRequest, RuntimeHandlerFeatures, StatusRequest, UserNamespace,
};
use tonic::transport::Channel;
use tonic::Code;

const HOST: u32 = 2_000_000;

fn mapping(host: u32) -> Vec<IdMapping> {
    vec![IdMapping {
        host_id: host,
        container_id: 0,
        length: 65536,
    }]
}

fn userns_pod(
    env: &BusyboxEnv,
    name: &str,
    mode: NamespaceMode,
    uids: Vec<IdMapping>,
) -> PodSandboxConfig {
    env.pod_config_with(name, |o| {
        o.userns_options = Some(UserNamespace {
            mode: mode as i32,
            uids: uids.clone(),
            gids: uids,
        })
    })
}

async fn exec(rt: &mut RuntimeServiceClient<Channel>, id: &str, script: &str) -> String {
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: 20,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync {script}: {e}"))
        .into_inner();
    format!(
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    )
}

fn host_ids(pid: i64, which: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(which))
        .unwrap_or_else(|| panic!("no {which} in {status}"))
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_in_its_own_user_namespace() {
    let image = ImageSpec::new(vec![
        Layer::busybox(),
        Layer::new()
            .owned_dir("data/", 1234, 4321)
            .owned_file("data/owned", b"image", 1234, 4321),
    ])
    .label("userns");
    let mut env = BusyboxEnv::start_with(image, "").await;
    let mut rt = env.g.runtime().await;

    // Status reports the default handler (runc) as able to.
    let status = rt
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let features: Vec<RuntimeHandlerFeatures> = status
        .runtime_handlers
        .iter()
        .filter_map(|h| h.features)
        .collect();
    assert!(
        features.iter().any(|f| f.user_namespaces),
        "no handler reports user namespaces: {:?}\n{}",
        status.runtime_handlers,
        env.g.log()
    );

    // Refused before anything is made.
    for (mode, uids) in [
        (NamespaceMode::Container, mapping(HOST)),
        (NamespaceMode::Target, mapping(HOST)),
        (NamespaceMode::Node, mapping(HOST)),
        (NamespaceMode::Pod, vec![]),
        (
            NamespaceMode::Pod,
            vec![IdMapping {
                host_id: HOST,
                container_id: 1,
                length: 65536,
            }],
        ),
    ] {
        let bad = userns_pod(&env, "bad", mode, uids);
        let e = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(bad),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{mode:?}: {e}");
    }

    let pc = userns_pod(&env, "userns", NamespaceMode::Pod, mapping(HOST));
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"))
        .into_inner()
        .pod_sandbox_id;
    let st = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let opts = st.linux.unwrap().namespaces.unwrap().options.unwrap();
    let u = opts.userns_options.unwrap();
    assert_eq!(
        (u.mode, u.uids, u.gids),
        (NamespaceMode::Pod as i32, mapping(HOST), mapping(HOST))
    );

    // A host directory of the node's user 1000, and a root-owned host file.
    let vol = tempfile::tempdir().unwrap();
    std::fs::write(vol.path().join("f"), b"vol").unwrap();
    std::os::unix::fs::chown(vol.path().join("f"), Some(1000), Some(1000)).unwrap();
    let mut c = env.container("root", "sleep 3600");
    c.mounts = vec![Mount {
        container_path: "/vol".into(),
        host_path: vol.path().display().to_string(),
        ..Default::default()
    }];
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: vec!["SYS_ADMIN".into(), "MKNOD".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let root = create_and_start(&mut rt, &pod, &pc, c).await;
    let pid = verbose_pid(&mut rt, &root).await;
    assert_eq!(
        host_ids(pid, "Uid:"),
        vec![HOST; 4],
        "root in the pod is {HOST} on the node"
    );
    assert_eq!(host_ids(pid, "Gid:"), vec![HOST; 4]);
    let out = exec(
        &mut rt,
        &root,
        "id -u; id -g; cat /proc/self/uid_map; busybox stat -c %u:%g /data/owned /vol/f /etc/hosts; \
         echo new > /vol/new && echo wrote-volume; echo x > /written && echo wrote-rootfs",
    )
    .await;
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines.first(), Some(&"0"), "{out}");
    assert_eq!(lines.get(1), Some(&"0"), "{out}");
    assert_eq!(
        lines
            .get(2)
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["0", "2000000", "65536"]),
        "{out}"
    );
    assert_eq!(lines.get(3), Some(&"1234:4321"), "image ownership: {out}");
    assert_eq!(
        lines.get(4),
        Some(&"1000:1000"),
        "host ownership mapped: {out}"
    );
    assert_eq!(lines.get(5), Some(&"0:0"), "the pod's own files: {out}");
    assert!(
        lines.contains(&"wrote-volume") && lines.contains(&"wrote-rootfs"),
        "{out}"
    );
    // Through the idmap, what the pod's root wrote is root's on the node.
    assert_eq!(std::fs::metadata(vol.path().join("new")).unwrap().uid(), 0);

    // CAP_SYS_ADMIN in the pod is the pod's: it mounts inside, but makes
    // no device node and cannot touch what the node owns.
    let node_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = exec(
        &mut rt,
        &root,
        "busybox grep CapEff /proc/self/status; busybox mount -t tmpfs none /tmp && echo mounted-inside; \
         busybox mknod /tmp/sda b 8 0 2>/dev/null || echo mknod-refused; \
         busybox hostname changed-inside && echo hostname-inside; \
         echo 1 > /proc/sys/kernel/sysrq 2>/dev/null || echo sysctl-refused",
    )
    .await;
    for want in [
        "mounted-inside",
        "mknod-refused",
        "hostname-inside",
        "sysctl-refused",
    ] {
        assert!(out.lines().any(|l| l.trim() == want), "{want}: {out}");
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        node_hostname
    );

    // Logs and stats work as for any container.
    let talker = create_and_start(
        &mut rt,
        &pod,
        &pc,
        env.container("talker", "echo from-the-userns-pod; sleep 3600"),
    )
    .await;
    let log = std::path::Path::new(&pc.log_directory).join("talker.log");
    let mut logged = String::new();
    for _ in 0..100 {
        logged = std::fs::read_to_string(&log).unwrap_or_default();
        if logged.contains("from-the-userns-pod") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        logged.contains("stdout F from-the-userns-pod"),
        "{logged:?}"
    );
    let stats = rt
        .container_stats(ContainerStatsRequest {
            container_id: talker.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("ContainerStats: {e}"))
        .into_inner()
        .stats
        .unwrap();
    assert!(stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .is_some_and(|w| w.value > 0));

    // A non-root image user.
    let mut c = env.container("app", "sleep 3600");
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: Some(gantry_proto::v1::Int64Value { value: 1000 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let app = create_and_start(&mut rt, &pod, &pc, c).await;
    let app_pid = verbose_pid(&mut rt, &app).await;
    assert_eq!(host_ids(app_pid, "Uid:"), vec![HOST + 1000; 4]);
    let out = exec(
        &mut rt,
        &app,
        "id -u; cat /data/owned; echo x > /data/owned || echo refused",
    )
    .await;
    assert_eq!(out.lines().next(), Some("1000"), "{out}");
    assert!(out.contains("image") && out.contains("refused"), "{out}");

    // An invalid per-mount mapping is the request's fault.
    let mut bad = env.container("badmap", "true");
    bad.mounts = vec![Mount {
        container_path: "/vol".into(),
        host_path: vol.path().display().to_string(),
        uid_mappings: vec![IdMapping {
            host_id: HOST,
            container_id: 0,
            length: 0,
        }],
        gid_mappings: mapping(HOST),
        ..Default::default()
    }];
    let e = create_container(&mut rt, &pod, &pc, bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");

    // A daemon restart (a crash, even) keeps the pod: its containers run
    // on, exec still enters them, and a new container joins the namespace.
    env.g.kill();
    env.g.restart().await;
    let mut rt = env.g.runtime().await;
    assert_eq!(
        host_ids(pid, "Uid:"),
        vec![HOST; 4],
        "the container outlived the daemon"
    );
    assert_eq!(exec(&mut rt, &root, "id -u").await.trim(), "0");
    let after = create_and_start(&mut rt, &pod, &pc, env.container("after", "sleep 3600")).await;
    let after_pid = verbose_pid(&mut rt, &after).await;
    assert_eq!(host_ids(after_pid, "Uid:"), vec![HOST; 4]);
    let ns = |p: i64| std::fs::read_link(format!("/proc/{p}/ns/user")).unwrap();
    assert_eq!(ns(after_pid), ns(pid), "one user namespace per pod");

    // A pod whose containers share a PID namespace: it belongs to the
    // pod's user namespace too, so its containers mount their /proc.
    let shared = env.pod_config_with("shared", |o| {
        o.pid = NamespaceMode::Pod as i32;
        o.userns_options = Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: mapping(HOST + 65536),
            gids: mapping(HOST + 65536),
        })
    });
    let spod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(shared.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox with a shared PID namespace: {e}"))
        .into_inner()
        .pod_sandbox_id;
    let a = create_and_start(&mut rt, &spod, &shared, env.container("a", "sleep 3600")).await;
    let b = create_and_start(&mut rt, &spod, &shared, env.container("b", "sleep 3601")).await;
    let out = exec(
        &mut rt,
        &b,
        "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; id -u",
    )
    .await;
    assert!(
        out.contains("sleep 3600") && out.trim_end().ends_with('0'),
        "{out}"
    );
    let a_pid = verbose_pid(&mut rt, &a).await;
    assert_eq!(host_ids(a_pid, "Uid:"), vec![HOST + 65536; 4]);
    remove_pod(&mut rt, &spod).await;

    remove_pod(&mut rt, &pod).await;
    // Nothing of the pod stays mounted: no idmapped mount, no pin.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = env.g.dir.display().to_string();
    assert!(
        !mounts.lines().any(|l| l.contains(&dir)),
        "left mounted: {}",
        mounts
            .lines()
            .filter(|l| l.contains(&dir))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        std::fs::read_to_string(vol.path().join("f")).unwrap(),
        "vol"
    );
}

/// youki runs such pods too; runsc cannot join a user namespace by path,
/// so its handler reports none and its pods asking for one are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespaces_per_handler() {
    let youki = require_runtime("youki", "cargo install youki --features v1");
    let runsc = require_runtime("runsc", "apt-get install runsc");
    let env = BusyboxEnv::start(
        "userns-handlers",
        &format!(
            "runtime:\n  runtimes:\n    runc:\n      path: runc\n    youki:\n      path: {}\n    runsc:\n      path: {}\n",
            youki.display(),
            runsc.display()
        ),
    )
    .await;
    let mut rt = env.g.runtime().await;
    let status = rt
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let userns = |name: &str| {
        status
            .runtime_handlers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.features)
            .map(|f| f.user_namespaces)
    };
    assert_eq!(
        (userns("runc"), userns("youki"), userns("runsc")),
        (Some(true), Some(true), Some(false)),
        "{:?}",
        status.runtime_handlers
    );

    let pc = userns_pod(&env, "on-runsc", NamespaceMode::Pod, mapping(HOST));
    let e = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc),
            runtime_handler: "runsc".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");

    let pc = userns_pod(&env, "on-youki", NamespaceMode::Pod, mapping(HOST));
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: "youki".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox on youki: {e}"))
        .into_inner()
        .pod_sandbox_id;
    let id = create_and_start(&mut rt, &pod, &pc, env.container("y", "sleep 3600")).await;
    let pid = verbose_pid(&mut rt, &id).await;
    assert_eq!(host_ids(pid, "Uid:"), vec![HOST; 4]);
    let out = exec(&mut rt, &id, "id -u; busybox stat -c %u /bin/busybox").await;
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "0"],
        "{out}"
    );
    remove_pod(&mut rt, &pod).await;
}
