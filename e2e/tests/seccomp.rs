//! RuntimeDefault seccomp end to end: a static probe in a busybox image
//! asks the kernel for each syscall of its table and reports which ones
//! the container's filter let through. The set blocked for a container
//! with the default capabilities is checked exactly, for the container's
//! own process (the filter runc loads) and for an ExecSync into it (the
//! filter gantry-exec loads), and CAP_SYS_ADMIN opens the namespace and
//! mount groups but not the keyrings.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_e2e::fixture::{create_and_start, BusyboxEnv};
use gantry_e2e::oci::{ImageSpec, Layer};
use gantry_e2e::probe::{parse, seccomp_probe};
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::security_profile::ProfileType;
use gantry_proto::v1::{
    Capability, ContainerConfig, ContainerState, ContainerStatusRequest, ExecSyncRequest,
    LinuxContainerConfig, LinuxContainerSecurityContext, SecurityProfile,
};
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

const EPERM: i32 = 1;
const ENOSYS: i32 = 38;

/// What RuntimeDefault refuses a container with the default capabilities.
const BLOCKED: &[&str] = &[
    "clone_newuser",
    "clone_newns",
    "clone_newnet",
    "clone_newpid",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "add_key",
    "request_key",
    "keyctl",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "pidfd_getfd",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "personality_read_implies_exec",
    "personality_addr_no_randomize",
    "reboot",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "iopl",
    "ioperm",
    "open_by_handle_at",
    "name_to_handle_at",
    "quotactl",
    "syslog",
    "sethostname",
    "setdomainname",
    "lookup_dcookie",
    "fanotify_init",
    "io_uring_setup",
    "modify_ldt",
    "uselib",
    "ustat",
    "sysfs",
    "vhangup",
    "mbind",
    "set_mempolicy",
    "get_mempolicy",
    "move_pages",
    "migrate_pages",
    "socket_vsock",
];

/// What it must let through: ordinary work, threads, ptrace (kernel >=
/// 4.8), the safe personalities.
const REACHED: &[&str] = &[
    "clone_thread",
    "clone_process",
    "ptrace",
    "personality_query",
    "personality_linux",
    "personality_linux32",
    "adjtimex",
    "clock_adjtime",
    "chroot",
    "socket_inet",
    "mknodat",
    "getppid",
    "uname",
    "memfd_create",
    "landlock_create_ruleset",
    "pidfd_open",
    "setuid",
    "capset",
    "prctl",
    "getcwd",
];

fn expected_default() -> BTreeMap<String, Option<i32>> {
    let mut m: BTreeMap<String, Option<i32>> = BLOCKED
        .iter()
        .map(|s| (s.to_string(), Some(EPERM)))
        .collect();
    m.extend(REACHED.iter().map(|s| (s.to_string(), None)));
    m.insert("clone3".into(), Some(ENOSYS));
    m
}

fn probe_container(
    env: &BusyboxEnv,
    name: &str,
    command: &[&str],
    add: &[&str],
) -> ContainerConfig {
    ContainerConfig {
        command: command.iter().map(|s| s.to_string()).collect(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                }),
                capabilities: Some(Capability {
                    add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..env.container(name, "")
    }
}

async fn wait_exited(rt: &mut Rt, id: &str) {
    for _ in 0..400 {
        let s = rt
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
            .into_inner()
            .status
            .unwrap_or_else(|| panic!("no status for {id}"));
        if s.state == ContainerState::ContainerExited as i32 {
            assert_eq!(s.exit_code, 0, "the probe failed: {s:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("container {id} did not exit");
}

/// The stdout text of a CRI log file.
fn log_text(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(4, ' ');
            let (_ts, stream, _tag) = (p.next()?, p.next()?, p.next()?);
            (stream == "stdout").then(|| format!("{}\n", p.next().unwrap_or("")))
        })
        .collect()
}

/// Differences between what the probe saw and what was expected, one
/// line each, for a readable failure.
fn diff(got: &BTreeMap<String, Option<i32>>, want: &BTreeMap<String, Option<i32>>) -> String {
    let mut out = String::new();
    for (k, v) in want {
        if got.get(k) != Some(v) {
            out.push_str(&format!("{k}: want {v:?}, got {:?}\n", got.get(k)));
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        out.push_str(&format!("{k}: not expected\n"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_default_blocks_what_reaches_outside_the_container() {
    let probe = seccomp_probe();
    let image = ImageSpec::new(vec![Layer::busybox().exec("probe", &probe)]).label("seccomp");
    let env = BusyboxEnv::start_with(image, "").await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "seccomp").await;
    let want = expected_default();

    // The container's own process, filtered by runc.
    let id = create_and_start(
        &mut rt,
        &pod,
        &pc,
        probe_container(&env, "init", &["/probe"], &[]),
    )
    .await;
    wait_exited(&mut rt, &id).await;
    let log = log_text(&env.logs.path().join("seccomp").join("init.log"));
    // Shown with --nocapture, for side-by-side comparisons with other runtimes.
    println!("{log}");
    let got = parse(&log);
    assert_eq!(got, want, "container process:\n{}", diff(&got, &want));

    // An exec into a running container, filtered by gantry-exec.
    let sleeper = create_and_start(
        &mut rt,
        &pod,
        &pc,
        probe_container(&env, "sleeper", &["/bin/sleep", "1000"], &[]),
    )
    .await;
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec!["/probe".into()],
            timeout: 30,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync: {e}"))
        .into_inner();
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
    let got = parse(&String::from_utf8_lossy(&r.stdout));
    assert_eq!(got, want, "exec:\n{}", diff(&got, &want));

    // CAP_SYS_ADMIN opens namespaces and mounts, not keyrings or kexec.
    let id = create_and_start(
        &mut rt,
        &pod,
        &pc,
        probe_container(&env, "admin", &["/probe"], &["SYS_ADMIN"]),
    )
    .await;
    wait_exited(&mut rt, &id).await;
    let got = parse(&log_text(
        &env.logs.path().join("seccomp").join("admin.log"),
    ));
    for s in [
        "clone_newuser",
        "clone_newns",
        "clone3",
        "unshare",
        "setns",
        "mount",
        "open_tree",
        "fsopen",
        "mount_setattr",
        "bpf",
        "perf_event_open",
        "sethostname",
        "quotactl",
        "name_to_handle_at",
    ] {
        assert_eq!(got.get(s), Some(&None), "{s} with CAP_SYS_ADMIN: {got:?}");
    }
    for s in [
        "add_key",
        "keyctl",
        "request_key",
        "kexec_load",
        "userfaultfd",
        "io_uring_setup",
        "reboot",
        "init_module",
        "pidfd_getfd",
        "personality_read_implies_exec",
    ] {
        assert_eq!(
            got.get(s),
            Some(&Some(EPERM)),
            "{s} with CAP_SYS_ADMIN: {got:?}"
        );
    }
    // Containers outlive the daemon: the pod goes, or its mounts and
    // running containers would stay on the host.
    gantry_e2e::fixture::stop_pod(&mut rt, &pod).await;
    gantry_e2e::fixture::remove_pod(&mut rt, &pod).await;
}
