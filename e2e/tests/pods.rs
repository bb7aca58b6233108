//! Pod sandboxes end to end: real namespaces, the Debian CNI plugins on a
//! throwaway bridge, the real gantry process.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;

use gantry_e2e::daemon::Gantry;
use gantry_e2e::fixture::{
    all_pods, named_pod_config, pod_status_verbose, remove_pod, run_pod, stop_pod,
};
use gantry_e2e::net::TestNetwork;
use gantry_e2e::require_host;
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxFilter, PodSandboxState,
    PodSandboxStateValue, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    RuntimeCondition, StatusRequest,
};
use tonic::transport::Channel;
use tonic::Code;

fn pod(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        labels: [
            ("app".to_string(), name.to_string()),
            ("suite".to_string(), "pods".to_string()),
        ]
        .into(),
        ..named_pod_config(name)
    }
}

fn run_req(config: PodSandboxConfig) -> RunPodSandboxRequest {
    RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    }
}

async fn start(net_dir: &std::path::Path) -> (Gantry, TestNetwork) {
    let g = Gantry::start("").await;
    let net = TestNetwork::create(&g.dir.join("cni"), &net_dir.join("ipam"));
    (g, net)
}

async fn network_condition(rt: &mut RuntimeServiceClient<Channel>) -> RuntimeCondition {
    rt.status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap()
}

/// How many entries the daemon's directory `rel` holds.
fn entries(g: &Gantry, rel: &str) -> usize {
    std::fs::read_dir(g.dir.join(rel)).unwrap().count()
}

fn nsenter(args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .args(args)
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "nsenter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_addresses_talk_and_leave_nothing_behind() {
    require_host();
    let tmp = tempfile::tempdir().unwrap();
    let (mut g, net) = start(tmp.path()).await;
    let mut rt = g.runtime().await;

    let ready = network_condition(&mut rt).await;
    assert!(ready.status, "{ready:?}");

    let mut a = pod("alpha");
    a.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["e2e.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    a.linux = Some(LinuxPodSandboxConfig {
        sysctls: [("net.core.somaxconn".to_string(), "1234".to_string())].into(),
        ..Default::default()
    });
    let a_id = run_pod(&mut rt, &a).await;
    let b_id = run_pod(&mut rt, &pod("beta")).await;
    assert_eq!(a_id.len(), 64);

    let (sa, ia) = pod_status_verbose(&mut rt, &a_id).await;
    let (sb, ib) = pod_status_verbose(&mut rt, &b_id).await;
    let (a_ip, b_ip) = {
        assert_eq!(sa.state, PodSandboxState::SandboxReady as i32);
        assert_eq!(sa.labels["app"], "alpha");
        assert!(sa.created_at > 0);
        (
            sa.network.as_ref().unwrap().ip.clone(),
            sb.network.as_ref().unwrap().ip.clone(),
        )
    };
    assert!(
        a_ip.starts_with(&net.subnet_prefix) && b_ip.starts_with(&net.subnet_prefix),
        "{a_ip} {b_ip}"
    );
    assert_ne!(a_ip, b_ip);
    let a_netns = PathBuf::from(ia["netns"].as_str().unwrap());
    let a_uts = ia["utsNamespace"].as_str().unwrap().to_string();
    let b_netns = ib["netns"].as_str().unwrap().to_string();

    // Inside pod A: its hostname, its sysctl, its resolv.conf; and B answers.
    assert_eq!(
        nsenter(&[&format!("--uts={a_uts}"), "hostname"]).trim(),
        "alpha"
    );
    assert_eq!(
        nsenter(&[
            &format!("--net={}", a_netns.display()),
            "cat",
            "/proc/sys/net/core/somaxconn"
        ])
        .trim(),
        "1234"
    );
    let resolv =
        std::fs::read_to_string(PathBuf::from(ia["podDir"].as_str().unwrap()).join("resolv.conf"))
            .unwrap();
    assert_eq!(
        resolv,
        "nameserver 10.96.0.10\nsearch e2e.svc.cluster.local\noptions ndots:5\n"
    );
    nsenter(&[
        &format!("--net={}", a_netns.display()),
        "/bin/busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        &b_ip,
    ]);
    nsenter(&[
        &format!("--net={b_netns}"),
        "/bin/busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        &a_ip,
    ]);
    assert_eq!(net.bridge_ports().len(), 2);
    assert_eq!(net.reservations().len(), 2);

    // A host-network pod: no namespace, no address of its own.
    let mut h = pod("hostnet");
    h.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                ipc: NamespaceMode::Node as i32,
                pid: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let h_id = run_pod(&mut rt, &h).await;
    let (sh, ih) = pod_status_verbose(&mut rt, &h_id).await;
    assert_eq!(sh.network.as_ref().unwrap().ip, "");
    assert!(ih["netns"].is_null());
    let opts = sh.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(opts.network, NamespaceMode::Node as i32);

    // Filters: label, state, ID prefix.
    let list = |f: PodSandboxFilter| ListPodSandboxRequest { filter: Some(f) };
    let all = all_pods(&mut rt).await;
    assert_eq!(all.len(), 3);
    let by_label = rt
        .list_pod_sandbox(list(PodSandboxFilter {
            label_selector: [("app".to_string(), "beta".to_string())].into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(
        by_label.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        vec![b_id.clone()]
    );
    let by_prefix = rt
        .list_pod_sandbox(list(PodSandboxFilter {
            id: a_id[..12].to_string(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(by_prefix.len(), 1);

    // Bad input, and nothing left of it.
    let e = rt.run_pod_sandbox(run_req(pod("alpha"))).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let e = rt
        .run_pod_sandbox(run_req(PodSandboxConfig::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod("gamma")),
            runtime_handler: "no-such-handler".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    for (k, v) in [("kernel.panic", "1"), ("net.core.somaxconn\n", "1")] {
        let mut bad = pod("delta");
        bad.linux = Some(LinuxPodSandboxConfig {
            sysctls: [(k.to_string(), v.to_string())].into(),
            ..Default::default()
        });
        let e = rt.run_pod_sandbox(run_req(bad)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{k}: {e:?}");
    }
    // A sysctl that passes validation but the kernel refuses: rolled back.
    let mut refused = pod("epsilon");
    refused.linux = Some(LinuxPodSandboxConfig {
        sysctls: [("net.ipv4.no_such_knob".to_string(), "1".to_string())].into(),
        ..Default::default()
    });
    assert!(rt.run_pod_sandbox(run_req(refused)).await.is_err());
    assert_eq!(all_pods(&mut rt).await.len(), 3);
    assert_eq!(net.reservations().len(), 2);
    assert_eq!(
        entries(&g, "state/pods"),
        2,
        "only alpha and beta hold namespaces"
    );

    // Pods survive a restart of the daemon, still ready.
    assert!(g.stop().success());
    g.restart().await;
    let mut rt = g.runtime().await;
    let (sb, _) = pod_status_verbose(&mut rt, &b_id).await;
    assert_eq!(sb.state, PodSandboxState::SandboxReady as i32);

    // Stop: network gone, namespaces released; twice is fine.
    stop_pod(&mut rt, &a_id).await;
    stop_pod(&mut rt, &a_id).await;
    let (sa, _) = pod_status_verbose(&mut rt, &a_id).await;
    assert_eq!(sa.state, PodSandboxState::SandboxNotready as i32);
    assert!(!a_netns.exists());
    assert_eq!(net.bridge_ports().len(), 1);
    assert_eq!(net.reservations().len(), 1);
    let not_ready = rt
        .list_pod_sandbox(list(PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxNotready as i32,
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(not_ready.len(), 1);

    // Remove (B without stopping it first); removing again, and unknown IDs, are fine.
    for id in [&a_id, &b_id, &h_id, &a_id, &"0".repeat(64)] {
        remove_pod(&mut rt, id).await;
    }
    stop_pod(&mut rt, &"f".repeat(64)).await;
    let e = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: a_id.clone(),
            verbose: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        net.bridge_ports().is_empty(),
        "veths left: {:?}",
        net.bridge_ports()
    );
    assert!(
        net.reservations().is_empty(),
        "IPs left: {:?}",
        net.reservations()
    );
    assert_eq!(entries(&g, "state/pods"), 0);
    assert_eq!(entries(&g, "root/runtime/sandboxes"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pods_and_a_crash_mid_start() {
    require_host();
    let tmp = tempfile::tempdir().unwrap();
    let (mut g, net) = start(tmp.path()).await;

    // 20 pods at once: distinct addresses.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut rt = g.runtime().await;
        tasks.push(tokio::spawn(async move {
            rt.run_pod_sandbox(run_req(pod(&format!("p{i}"))))
                .await
                .map(|r| r.into_inner().pod_sandbox_id)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().expect("a concurrent RunPodSandbox failed"));
    }
    let mut rt = g.runtime().await;
    let mut ips = HashSet::new();
    for id in &ids {
        let s = rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        ips.insert(s.status.unwrap().network.unwrap().ip);
    }
    assert_eq!(ips.len(), 20, "addresses: {ips:?}");
    assert_eq!(net.reservations().len(), 20);

    // SIGKILL while more pods are starting; after a restart every pod is
    // either listed or fully rolled back, and removing the listed ones
    // leaves nothing.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut rt = g.runtime().await;
        tasks.push(tokio::spawn(async move {
            rt.run_pod_sandbox(run_req(pod(&format!("k{i}")))).await
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    g.kill();
    for t in tasks {
        let _ = t.await;
    }
    g.restart().await;
    let mut rt = g.runtime().await;
    let listed = all_pods(&mut rt).await;
    assert!(listed.len() >= 20, "the 20 ready pods are still there");
    let listed_ids: HashMap<String, String> = listed
        .iter()
        .map(|p| (p.id.clone(), p.metadata.as_ref().unwrap().name.clone()))
        .collect();
    assert_eq!(
        net.reservations().len(),
        listed.len(),
        "every reservation belongs to a listed pod"
    );
    for id in listed_ids.keys() {
        remove_pod(&mut rt, id).await;
    }
    assert!(all_pods(&mut rt).await.is_empty());
    assert!(
        net.reservations().is_empty(),
        "IPs left: {:?}",
        net.reservations()
    );
    assert!(
        net.bridge_ports().is_empty(),
        "veths left: {:?}",
        net.bridge_ports()
    );
    assert_eq!(entries(&g, "state/pods"), 0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&g.dir.display().to_string()),
        "namespace mounts left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_or_missing_network_config() {
    require_host();
    let g = Gantry::start("").await;
    let mut rt = g.runtime().await;
    let cond = network_condition(&mut rt).await;
    assert!(!cond.status && cond.reason == "NetworkPluginNotReady");
    let e = rt
        .run_pod_sandbox(run_req(pod("lonely")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    std::fs::create_dir_all(g.dir.join("cni")).unwrap();
    std::fs::write(
        g.dir.join("cni/10-broken.conflist"),
        "{\"cniVersion\": \"1.0.0\", \"name\": \"x\", \"plugins\": [",
    )
    .unwrap();
    let cond = network_condition(&mut rt).await;
    assert!(
        !cond.status && cond.message.contains("10-broken.conflist"),
        "{cond:?}"
    );
    let e = rt
        .run_pod_sandbox(run_req(pod("lonely")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(all_pods(&mut rt).await.is_empty());
    assert_eq!(entries(&g, "state/pods"), 0);
    assert_eq!(entries(&g, "root/runtime/sandboxes"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_port_reaches_a_listener_in_the_pod() {
    require_host();
    let chains = gantry_e2e::net::HostportChains::snapshot();
    let tmp = tempfile::tempdir().unwrap();
    let (g, net) = start(tmp.path()).await;
    let mut rt = g.runtime().await;
    let host_port = gantry_e2e::free_port();
    let mut web = pod("web");
    web.port_mappings = vec![gantry_proto::v1::PortMapping {
        protocol: gantry_proto::v1::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let id = run_pod(&mut rt, &web).await;
    let (st, info) = pod_status_verbose(&mut rt, &id).await;
    let pod_ip = st.network.as_ref().unwrap().ip.clone();
    let netns = info["netns"].as_str().unwrap().to_string();
    assert_eq!(gantry_e2e::net::HostportChains::pod_chains(), 1);

    // busybox httpd inside the pod's network namespace.
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from the pod\n").unwrap();
    // Ended (by its PID) even if an assertion fails.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let httpd = Kill(
        Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["/bin/busybox", "httpd", "-f", "-p", "8080", "-h"])
            .arg(&www)
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(3))
        .build()
        .unwrap();
    let gateway = format!("{}1", net.subnet_prefix);
    let mut last = String::new();
    for _ in 0..50 {
        match client
            .get(format!("http://{gateway}:{host_port}/index.html"))
            .send()
            .await
        {
            Ok(r) => {
                last = r.text().await.unwrap_or_default();
                break;
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        last, "hello from the pod\n",
        "through the host port on the bridge address"
    );
    let direct = client
        .get(format!("http://{pod_ip}:8080/index.html"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(direct, "hello from the pod\n");
    drop(httpd);

    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    assert_eq!(
        gantry_e2e::net::HostportChains::pod_chains(),
        0,
        "the pod's DNAT chain is gone"
    );
    assert!(net.reservations().is_empty());
    drop(chains);
}

fn tc_qdiscs(dev: Option<&str>) -> String {
    let mut cmd = Command::new("tc");
    cmd.args(["qdisc", "show"]);
    if let Some(d) = dev {
        cmd.args(["dev", d]);
    }
    let out = cmd.output().expect("tc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_ips_and_mac_annotations_reach_the_plugins() {
    require_host();
    let tmp = tempfile::tempdir().unwrap();
    let g = Gantry::start("").await;
    let net = TestNetwork::create_with(
        &g.dir.join("cni"),
        &tmp.path().join("ipam"),
        serde_json::json!({"ips": true}),
        vec![
            serde_json::json!({"type": "tuning", "capabilities": {"mac": true}}),
            serde_json::json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
        ],
    );
    let mut rt = g.runtime().await;

    // Malformed annotations are refused before anything exists.
    for (k, v) in [
        ("kubernetes.io/ingress-bandwidth", "lots"),
        ("kubernetes.io/egress-bandwidth", "10"),
        ("gantry.dev/ips", "10.1.0.7"),
        ("gantry.dev/mac", "0a:58"),
    ] {
        let mut p = pod("shaped");
        p.annotations = [(k.to_string(), v.to_string())].into();
        let e = rt.run_pod_sandbox(run_req(p)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{k}={v}: {e:?}");
    }
    assert!(net.bridge_ports().is_empty());
    assert_eq!(entries(&g, "root/runtime/sandboxes"), 0);

    let want_ip = format!("{}77", net.subnet_prefix);
    let mac = "0a:58:0a:c9:4d:4d";
    let mut p = pod("shaped");
    p.annotations = [
        ("kubernetes.io/ingress-bandwidth", "1M"),
        ("kubernetes.io/egress-bandwidth", "2M"),
        ("gantry.dev/ips", &format!("{want_ip}/24") as &str),
        ("gantry.dev/mac", mac),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let id = run_pod(&mut rt, &p).await;
    let (st, info) = pod_status_verbose(&mut rt, &id).await;
    assert_eq!(
        st.network.as_ref().unwrap().ip,
        want_ip,
        "the ips capability chose the address"
    );
    let netns = info["netns"].as_str().unwrap().to_string();
    let link = nsenter(&[&format!("--net={netns}"), "ip", "link", "show", "eth0"]);
    assert!(link.contains(&format!("link/ether {mac}")), "{link}");

    // Ingress is shaped on the host end of the veth, egress on an ifb.
    let ports = net.bridge_ports();
    assert_eq!(ports.len(), 1, "{ports:?}");
    let veth = ports[0].clone();
    let on_veth = tc_qdiscs(Some(&veth));
    assert!(
        on_veth.contains("qdisc tbf") && on_veth.contains("rate 1Mbit"),
        "{veth}: {on_veth}"
    );
    let all = tc_qdiscs(None);
    let ifb = all
        .lines()
        .find(|l| l.contains("qdisc tbf") && l.contains("rate 2Mbit"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "dev").nth(1))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no egress tbf: {all}"));
    assert!(std::path::Path::new("/sys/class/net").join(&ifb).exists());

    remove_pod(&mut rt, &id).await;
    for dev in [&veth, &ifb] {
        assert!(
            !std::path::Path::new("/sys/class/net").join(dev).exists(),
            "{dev} outlived the pod"
        );
    }
    assert!(
        !tc_qdiscs(None).contains(&format!("dev {ifb} ")),
        "the egress qdisc outlived the pod"
    );
    assert!(net.reservations().is_empty());
}

/// A CNI 1.1 network whose only plugin is a script: it logs every call
/// with its stdin, fails STATUS while a marker file exists, and answers ADD
/// with a made-up address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_1_1_status_and_gc_with_a_fake_plugin() {
    require_host();
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = tmp.path().join("calls");
    let broken = tmp.path().join("broken");
    std::fs::write(
        bin.join("fakenet"),
        format!(
            "#!/bin/sh\nin=$(cat)\necho \"$CNI_COMMAND $in\" >> {log}\n\
             case \"$CNI_COMMAND\" in\n\
             STATUS) if [ -e {broken} ]; then echo '{{\"cniVersion\":\"1.1.0\",\"code\":50,\"msg\":\"fake fabric unreachable\"}}'; exit 1; fi ;;\n\
             ADD) echo \"{{\\\"cniVersion\\\":\\\"1.1.0\\\",\\\"interfaces\\\":[{{\\\"name\\\":\\\"eth0\\\",\\\"sandbox\\\":\\\"$CNI_NETNS\\\"}}],\\\"ips\\\":[{{\\\"address\\\":\\\"10.250.0.5/24\\\",\\\"interface\\\":0}}]}}\" ;;\n\
             VERSION) echo '{{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"1.0.0\",\"1.1.0\"]}}' ;;\n\
             esac\n",
            log = log.display(),
            broken = broken.display()
        ),
    )
    .unwrap();
    assert!(Command::new("chmod")
        .arg("+x")
        .arg(bin.join("fakenet"))
        .status()
        .unwrap()
        .success());
    let mut g = Gantry::start(&format!("  bin_dirs: [{}]\n", bin.display())).await;
    std::fs::create_dir_all(g.dir.join("cni")).unwrap();
    std::fs::write(
        g.dir.join("cni/10-fake.conflist"),
        r#"{"cniVersion": "1.1.0", "name": "fake", "plugins": [{"type": "fakenet"}]}"#,
    )
    .unwrap();
    let calls = |cmd: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{cmd} ")))
            .map(|j| serde_json::from_str(j).unwrap())
            .collect()
    };
    let mut rt = g.runtime().await;

    let cond = network_condition(&mut rt).await;
    assert!(cond.status, "{cond:?}");
    assert!(!calls("STATUS").is_empty(), "STATUS was asked");
    std::fs::write(&broken, "").unwrap();
    let cond = network_condition(&mut rt).await;
    assert!(
        !cond.status
            && cond.reason == "NetworkPluginNotReady"
            && cond.message.contains("fake fabric unreachable"),
        "{cond:?}"
    );
    std::fs::remove_file(&broken).unwrap();
    assert!(network_condition(&mut rt).await.status);

    // Two pods, one stopped: after a restart GC is told only of the other,
    // and the stale cached result of a pod gantry never knew goes.
    let keep = run_pod(&mut rt, &pod("keep")).await;
    let stopped = run_pod(&mut rt, &pod("stopped")).await;
    let st = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: keep.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.status.unwrap().network.unwrap().ip, "10.250.0.5");
    stop_pod(&mut rt, &stopped).await;
    let cache = g.dir.join("root/cni-cache");
    let keep_cache = cache.join(format!("fake-{keep}-eth0.json"));
    assert!(keep_cache.exists());
    let stale = cache.join("fake-stale0-eth0.json");
    let mut planted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&keep_cache).unwrap()).unwrap();
    planted["attachment"]["container_id"] = "stale0".into();
    std::fs::write(&stale, serde_json::to_vec(&planted).unwrap()).unwrap();
    assert!(calls("GC").is_empty(), "{:?}", calls("GC"));
    drop(rt);
    g.stop();
    g.restart().await;
    let gc = calls("GC");
    assert_eq!(gc.len(), 1, "{gc:?}");
    assert_eq!(
        gc[0]["cni.dev/valid-attachments"],
        serde_json::json!([{"containerID": keep, "ifname": "eth0"}])
    );
    assert_eq!(gc[0]["name"], "fake");
    assert!(!stale.exists(), "the stale cached result was dropped");
    assert!(keep_cache.exists());

    // A 1.0.0 network gets neither STATUS nor GC.
    std::fs::write(
        g.dir.join("cni/10-fake.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "fake", "plugins": [{"type": "fakenet"}]}"#,
    )
    .unwrap();
    let before = calls("STATUS").len();
    let mut rt = g.runtime().await;
    assert!(network_condition(&mut rt).await.status);
    assert_eq!(calls("STATUS").len(), before);

    for id in [keep, stopped] {
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap();
    }
    assert_eq!(calls("DEL").len(), 2, "one DEL per attached pod");
}
