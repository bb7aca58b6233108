//! The pod lifecycle against a fake host and network: what each step
//! leaves on the host, and that every failure takes back what was made.

use std::collections::HashMap;

use gantry_proto::v1 as cri;

use crate::error::Error;
use crate::pod::PodState;
use crate::testing::{pod_config, Proc, World};

fn with_sysctls(mut config: cri::PodSandboxConfig) -> cri::PodSandboxConfig {
    let linux = config.linux.get_or_insert_with(Default::default);
    linux.sysctls = HashMap::from([
        ("net.ipv4.ip_forward".to_string(), "1".to_string()),
        ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
    ]);
    config
}

/// Nothing of the pod is left: no record, no pins, no processes, no
/// cgroup, no network attachment, no directories.
fn assert_gone(w: &World, id: &str) {
    assert!(w.pods.store.get(id).is_none(), "record of {id} left");
    assert!(!w.pods.store.pod_dir(id).exists(), "sandbox dir left");
    assert!(!w.pods.ns_dir.join(id).exists(), "namespace dir left");
    {
        let host = w.host.state();
        assert!(host.pins.is_empty(), "pins left: {:?}", host.pins);
        assert!(host.procs.is_empty(), "processes left: {:?}", host.procs);
    }
    assert!(
        w.network.state().attached.is_empty(),
        "still attached: {:?}",
        w.network.state().attached
    );
}

fn cgroup_of(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("kubepods/pod{name}"))
}

fn config(name: &str) -> cri::PodSandboxConfig {
    let mut c = with_sysctls(pod_config(name));
    if let Some(l) = c.linux.as_mut() {
        l.cgroup_parent = format!("/{}", cgroup_of(name).display());
    }
    c
}

#[tokio::test]
async fn run_stop_remove() {
    let w = World::new();
    let id = w.pods.run(config("web"), String::new()).await.unwrap();
    let rec = w.pods.store.get(&id).unwrap();
    assert_eq!(rec.state, PodState::Ready);
    assert_eq!(rec.ips, vec!["10.88.0.1".to_string()]);
    assert_eq!(rec.network.as_deref(), Some("fakenet"));
    let pins = [&rec.netns, &rec.ipc_ns, &rec.uts_ns, &rec.pid_ns];
    for pin in pins {
        let pin = pin.as_ref().expect("a pinned namespace");
        assert!(w.host.state().pins.contains(pin), "{pin:?} not pinned");
    }
    let cgroup = w.host.cgroupfs.join(cgroup_of("web"));
    assert!(cgroup.join(crate::cgroup::V2_INIT_LEAF).is_dir());
    assert_eq!(
        w.host.state().procs.get(&rec.init_pid),
        Some(&Proc::PodInit(id.clone()))
    );
    // The init joined the pod's cgroup; each sysctl went to its namespace.
    assert_eq!(
        w.host.calls_to("enter_cgroup"),
        vec![format!("enter_cgroup /kubepods/podweb {}", rec.init_pid)]
    );
    let sysctls = w.host.state().sysctls.clone();
    assert!(sysctls.contains(&(
        rec.netns.clone().unwrap(),
        "net.ipv4.ip_forward".into(),
        "1".into()
    )));
    assert!(sysctls.contains(&(
        rec.ipc_ns.clone().unwrap(),
        "kernel.shm_rmid_forced".into(),
        "1".into()
    )));
    assert_eq!(
        w.network.state().attached.get(&id),
        rec.netns.as_ref(),
        "attached in the pod's network namespace"
    );
    assert_eq!(
        std::fs::read_to_string(w.pods.store.pod_dir(&id).join("hostname")).unwrap(),
        "web\n"
    );

    assert!(w.pods.stop(&id).await.unwrap(), "a ready pod is stopped");
    let rec = w.pods.store.get(&id).unwrap();
    assert_eq!(rec.state, PodState::NotReady);
    assert!(rec.netns.is_none() && rec.pid_ns.is_none() && rec.init_pid == 0);
    assert!(w.host.state().pins.is_empty());
    assert!(w.host.state().procs.is_empty(), "the init was killed");
    assert!(w.network.state().attached.is_empty());
    // The cgroup stays until the pod is removed.
    assert!(cgroup.is_dir());
    // Stopping again changes nothing and says so.
    assert!(!w.pods.stop(&id).await.unwrap());

    assert_eq!(w.pods.remove(&id).await.unwrap(), (false, true));
    assert!(!cgroup.exists());
    assert_gone(&w, &id);
    assert_eq!(w.pods.remove(&id).await.unwrap(), (false, false));
}

#[tokio::test]
async fn remove_stops_first() {
    let w = World::new();
    let id = w.pods.run(config("web"), String::new()).await.unwrap();
    assert_eq!(w.pods.remove(&id[..8]).await.unwrap(), (true, true));
    assert_gone(&w, &id);
}

/// Runs a pod with `fail` injected and checks the call failed with `code`
/// and left nothing behind.
async fn failed_run_leaves_nothing(w: &World, code: fn(&Error) -> bool) {
    let err = w.pods.run(config("web"), String::new()).await.unwrap_err();
    assert!(code(&err), "unexpected error {err:?}");
    assert!(w.pods.store.list().is_empty(), "a record is left");
    {
        let host = w.host.state();
        assert!(host.pins.is_empty(), "pins left: {:?}", host.pins);
        assert!(host.procs.is_empty(), "processes left: {:?}", host.procs);
    }
    assert!(
        !w.host.cgroupfs.join(cgroup_of("web")).exists(),
        "cgroup left"
    );
    assert!(w.network.state().attached.is_empty(), "still attached");
    assert_eq!(
        std::fs::read_dir(w.pods.ns_dir.as_path()).unwrap().count(),
        0,
        "namespace directories left"
    );
    // The name is free again.
    w.host.state().fail.clear();
    w.network.state().fail_attach = false;
    let id = w.pods.run(config("web"), String::new()).await.unwrap();
    assert_eq!(w.pods.store.get(&id).unwrap().state, PodState::Ready);
}

#[tokio::test]
async fn network_add_failure_rolls_back() {
    let w = World::new();
    w.network.state().fail_attach = true;
    failed_run_leaves_nothing(&w, |e| matches!(e, Error::Network { .. })).await;
    // The half-done ADD was undone with a DEL before the pins went.
    let calls = w.network.state().calls.clone();
    assert!(calls[0].starts_with("attach "), "{calls:?}");
    assert!(calls[1].starts_with("detach fakenet "), "{calls:?}");
}

#[tokio::test]
async fn cgroup_failure_rolls_back() {
    let w = World::new();
    w.host.fail("create_cgroup");
    failed_run_leaves_nothing(&w, |e| e.code() == tonic::Code::Internal).await;
    assert!(
        w.host.calls_to("create_namespaces").len() == 1,
        "only the retry"
    );
}

#[tokio::test]
async fn namespace_failure_rolls_back() {
    let w = World::new();
    w.host.fail("create_namespaces");
    failed_run_leaves_nothing(&w, |e| e.code() == tonic::Code::Internal).await;
    assert_eq!(w.host.calls_to("start_pod_init").len(), 1, "only the retry");
    assert_eq!(w.network.state().calls.len(), 1, "only the retry attached");
}

#[tokio::test]
async fn pod_init_failure_rolls_back() {
    let w = World::new();
    w.host.fail("start_pod_init");
    failed_run_leaves_nothing(&w, |e| e.code() == tonic::Code::Internal).await;
}

#[tokio::test]
async fn pid_pin_failure_kills_the_init() {
    let w = World::new();
    w.host.fail("pin_pid_namespace");
    failed_run_leaves_nothing(&w, |e| e.code() == tonic::Code::Internal).await;
    let kills = w.host.calls_to("kill");
    assert_eq!(kills.len(), 1, "{kills:?}");
    assert!(kills[0].ends_with(&format!(" {}", libc::SIGKILL)));
}

#[tokio::test]
async fn entering_the_cgroup_failure_rolls_back() {
    let w = World::new();
    w.host.fail("enter_cgroup");
    failed_run_leaves_nothing(&w, |e| e.code() == tonic::Code::Internal).await;
}

#[tokio::test]
async fn refused_sysctl_rolls_back() {
    let w = World::new();
    w.host.fail("write_sysctls");
    failed_run_leaves_nothing(&w, |e| matches!(e, Error::InvalidArgument(_))).await;
}

#[tokio::test]
async fn invalid_configs_touch_nothing() {
    let w = World::new();
    let mut bad_sysctl = config("a");
    if let Some(l) = bad_sysctl.linux.as_mut() {
        l.sysctls.insert("kernel.panic".into(), "1".into());
    }
    let mut no_uid = config("b");
    if let Some(m) = no_uid.metadata.as_mut() {
        m.uid.clear();
    }
    let mut bad_dns = config("c");
    bad_dns.dns_config = Some(cri::DnsConfig {
        servers: vec!["not-an-ip".into()],
        ..Default::default()
    });
    let mut bad_parent = config("d");
    if let Some(l) = bad_parent.linux.as_mut() {
        l.cgroup_parent = "../../etc".into();
    }
    for c in [bad_sysctl, no_uid, bad_dns, bad_parent] {
        let err = w.pods.run(c, String::new()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }
    let err = w.pods.run(config("e"), "kata".into()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(w.host.calls().is_empty(), "{:?}", w.host.calls());
    assert!(w.network.state().calls.is_empty());
    assert!(w.pods.store.list().is_empty());
}

#[tokio::test]
async fn a_taken_name_is_refused_and_the_first_pod_kept() {
    let w = World::new();
    let first = w.pods.run(config("web"), String::new()).await.unwrap();
    let calls = w.host.calls().len();
    let err = w.pods.run(config("web"), String::new()).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    assert_eq!(
        w.host.calls().len(),
        calls,
        "the second run touched the host"
    );
    let rec = w.pods.store.get(&first).unwrap();
    assert_eq!(rec.state, PodState::Ready);
    assert!(w.host.state().pins.contains(rec.netns.as_ref().unwrap()));
}

#[tokio::test]
async fn a_failed_network_teardown_keeps_the_pod_for_a_retry() {
    let w = World::new();
    let id = w.pods.run(config("web"), String::new()).await.unwrap();
    w.network.state().fail_detach = true;
    let err = w.pods.stop(&id).await.unwrap_err();
    assert!(matches!(err, Error::NetworkNotReady(_)), "{err:?}");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let rec = w.pods.store.get(&id).unwrap();
    assert_eq!(rec.state, PodState::Ready, "still to be torn down");
    assert_eq!(rec.network.as_deref(), Some("fakenet"));
    let err = w.pods.remove(&id).await.unwrap_err();
    assert!(matches!(err, Error::NetworkNotReady(_)), "{err:?}");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(w.pods.store.get(&id).is_some());

    w.network.state().fail_detach = false;
    assert_eq!(w.pods.remove(&id).await.unwrap(), (true, true));
    assert_gone(&w, &id);
    let detaches = w
        .network
        .state()
        .calls
        .iter()
        .filter(|c| c.starts_with("detach"))
        .count();
    assert_eq!(detaches, 3);
}

#[tokio::test]
async fn host_namespaces_are_not_made() {
    let w = World::new();
    let mut c = pod_config("host");
    c.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ipc: cri::NamespaceMode::Node as i32,
                pid: cri::NamespaceMode::Container as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = w.pods.run(c, String::new()).await.unwrap();
    let rec = w.pods.store.get(&id).unwrap();
    assert!(rec.netns.is_none() && rec.ipc_ns.is_none() && rec.pid_ns.is_none());
    assert!(w.host.calls_to("create_namespaces").is_empty());
    assert!(w.host.calls_to("start_pod_init").is_empty());
    assert!(
        w.network.state().calls.is_empty(),
        "no CNI for host network"
    );
    // gantry's own cgroup for a pod without a parent.
    assert!(w.host.cgroupfs.join("gantry").join(&id).is_dir());
    assert_eq!(w.pods.remove(&id).await.unwrap(), (true, true));
    assert_gone(&w, &id);
}

#[tokio::test]
async fn pods_sharing_a_cgroup_hand_it_to_the_last() {
    let w = World::new();
    let shared = |name: &str| {
        let mut c = config(name);
        if let Some(l) = c.linux.as_mut() {
            l.cgroup_parent = "/kubepods/shared".into();
        }
        c
    };
    let a = w.pods.run(shared("a"), String::new()).await.unwrap();
    let b = w.pods.run(shared("b"), String::new()).await.unwrap();
    let dir = w.host.cgroupfs.join("kubepods/shared");
    assert!(!w.pods.store.get(&a).unwrap().cgroup_created.is_empty());
    assert!(
        w.pods.store.get(&b).unwrap().cgroup_created.is_empty(),
        "b found the cgroup made"
    );
    w.pods.remove(&a).await.unwrap();
    assert!(dir.is_dir(), "removed under b");
    assert!(w.pods.store.get(&b).unwrap().cgroup_created.contains(&dir));
    w.pods.remove(&b).await.unwrap();
    assert!(!dir.exists());
}

#[tokio::test]
async fn recover_rolls_back_an_interrupted_run_and_marks_lost_pods() {
    let w = World::new();
    let cut = w.pods.run(config("cut"), String::new()).await.unwrap();
    let lost = w.pods.run(config("lost"), String::new()).await.unwrap();
    let fine = w.pods.run(config("fine"), String::new()).await.unwrap();
    // A daemon killed mid-run leaves a record in Creating with everything
    // it names; a reboot takes the pins of another pod.
    w.pods
        .store
        .update(&cut, |r| r.state = PodState::Creating)
        .unwrap();
    let lost_net = w.pods.store.get(&lost).unwrap().netns.unwrap();
    w.host.state().pins.remove(&lost_net);

    w.pods.recover().await;
    assert!(w.pods.store.get(&cut).is_none());
    assert!(!w.network.state().attached.contains_key(&cut));
    assert!(!w.host.cgroupfs.join(cgroup_of("cut")).exists());
    assert!(!w
        .host
        .state()
        .procs
        .values()
        .any(|p| *p == Proc::PodInit(cut.clone())));
    assert_eq!(w.pods.store.get(&lost).unwrap().state, PodState::NotReady);
    assert_eq!(w.pods.store.get(&fine).unwrap().state, PodState::Ready);

    // CNI GC frees what belongs to pods no longer attached.
    w.network
        .state()
        .attached
        .insert("gone".into(), "/nowhere".into());
    w.pods.gc_network().await;
    let attached = w.network.state().attached.clone();
    assert!(!attached.contains_key("gone"));
    assert!(attached.contains_key(&fine));
}

#[tokio::test]
async fn pod_resources_reach_the_pod_cgroup_of_a_ready_pod() {
    let w = World::new();
    let id = w.pods.run(config("web"), String::new()).await.unwrap();
    // The controller files a cgroup2 directory has.
    let memory_max = w.host.cgroupfs.join(cgroup_of("web")).join("memory.max");
    std::fs::write(&memory_max, "max").unwrap();
    let memory = cri::LinuxContainerResources {
        memory_limit_in_bytes: 256 << 20,
        ..Default::default()
    };
    w.pods.update_resources(&id, &memory).unwrap();
    assert_eq!(
        std::fs::read_to_string(&memory_max).unwrap(),
        (256u64 << 20).to_string()
    );
    // No cpu controller in this cgroup: refused, naming it.
    let cpu = cri::LinuxContainerResources {
        cpu_quota: 50_000,
        cpu_period: 100_000,
        ..Default::default()
    };
    let err = w.pods.update_resources(&id, &cpu).unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    w.pods.stop(&id).await.unwrap();
    let err = w.pods.update_resources(&id, &memory).unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    let err = w.pods.update_resources("nope", &memory).unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    // A real cgroupfs has no files to remove first.
    std::fs::remove_file(&memory_max).unwrap();
    w.pods.remove(&id).await.unwrap();
    assert_gone(&w, &id);
}
