//! CRI metrics end to end: `ListMetricDescriptors` and
//! `ListPodSandboxMetrics` (and its streaming form) as kubelet's CRI
//! metrics collector reads them, for a pod whose container holds memory,
//! burns CPU, writes to its writable layer and pings the pod network's
//! gateway through eth0.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gantry_e2e::fixture::{create_and_start, remove_pod, BusyboxEnv};
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    CreateContainerRequest, ListMetricDescriptorsRequest, ListPodSandboxMetricsRequest, Metric,
    MetricDescriptor, MetricType, PodSandboxMetrics, StreamPodSandboxMetricsRequest,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const HELD: u64 = 48 << 20;

async fn pod_metrics(rt: &mut RuntimeServiceClient<Channel>) -> Vec<PodSandboxMetrics> {
    rt.list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap_or_else(|e| panic!("ListPodSandboxMetrics: {e}"))
        .into_inner()
        .pod_metrics
}

/// The value of the one sample of `name` whose labels include `with`.
fn value(
    metrics: &[Metric],
    descs: &HashMap<String, MetricDescriptor>,
    name: &str,
    with: &[(&str, &str)],
) -> Option<u64> {
    let d = &descs[name];
    let hits: Vec<&Metric> = metrics
        .iter()
        .filter(|m| m.name == name)
        .filter(|m| {
            with.iter().all(|(k, v)| {
                d.label_keys
                    .iter()
                    .position(|x| x == k)
                    .is_some_and(|i| m.label_values[i] == *v)
            })
        })
        .collect();
    assert!(
        hits.len() <= 1,
        "{name} {with:?} is sampled twice: {hits:?}"
    );
    hits.first()
        .map(|m| m.value.as_ref().expect("a value").value)
}

/// Every sample names a described family and carries exactly its labels.
fn check_against(
    descs: &HashMap<String, MetricDescriptor>,
    metrics: &[Metric],
    base: &[(&str, &str)],
) {
    assert!(!metrics.is_empty());
    for m in metrics {
        let d = descs
            .get(&m.name)
            .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(
            m.label_values.len(),
            d.label_keys.len(),
            "{}: {:?} against {:?}",
            m.name,
            m.label_values,
            d.label_keys
        );
        assert!(m.timestamp > 0, "{} has no timestamp", m.name);
        for (k, v) in base {
            let i = d.label_keys.iter().position(|x| x == k).unwrap();
            assert_eq!(&m.label_values[i], v, "{} label {k}", m.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_container_metrics_follow_the_workload() {
    let env = BusyboxEnv::start("cri-metrics", "").await;
    let mut rt = env.g.runtime().await;

    let descs: HashMap<String, MetricDescriptor> = rt
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_fs_usage_bytes",
        "container_processes",
    ] {
        assert!(descs.contains_key(name), "{name} is not described");
    }
    assert_eq!(
        descs["container_network_transmit_bytes_total"]
            .label_keys
            .last()
            .map(String::as_str),
        Some("interface")
    );
    assert!(pod_metrics(&mut rt).await.is_empty());

    let (pod, pc) = env.start_pod(&mut rt, "metered").await;
    let gateway = format!("{}1", env.net.subnet_prefix);
    // dd holds its 48 MiB buffer while blocked on a pipe nobody reads; the
    // loop is about two seconds of CPU time; ping crosses eth0.
    let script = format!(
        "dd if=/dev/zero bs={HELD} count=1 2>/dev/null | sleep 100000 &
         head -c 2097152 /dev/zero > /written
         i=0; while [ $i -lt 1500000 ]; do i=$((i+1)); done
         ping -c 3 -s 1000 -W 2 {gateway} >/dev/null 2>&1
         echo done; exec sleep 100000"
    );
    let id = create_and_start(&mut rt, &pod, &pc, env.container("work", &script)).await;
    // A container not started and a pod without containers.
    let created = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(env.container("idle", "sleep 1")),
            sandbox_config: Some(pc.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let (empty_pod, _) = env.start_pod(&mut rt, "empty").await;

    // Poll as kubelet would until the work shows.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (all, ours) = loop {
        let all = pod_metrics(&mut rt).await;
        let ours = all
            .iter()
            .find(|p| p.pod_sandbox_id == pod)
            .expect("the running pod is listed")
            .clone();
        let c = ours.container_metrics.iter().find(|c| c.container_id == id);
        let cpu = c.and_then(|c| {
            value(
                &c.metrics,
                &descs,
                "container_cpu_usage_seconds_total",
                &[("cpu", "total")],
            )
        });
        let tx = value(
            &ours.metrics,
            &descs,
            "container_network_transmit_bytes_total",
            &[("interface", "eth0")],
        );
        if cpu.unwrap_or(0) >= 1 && tx.unwrap_or(0) > 3000 {
            break (all, ours);
        }
        assert!(
            Instant::now() < deadline,
            "the work never showed: cpu {cpu:?}, eth0 tx {tx:?}; {ours:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut ids: Vec<&str> = all.iter().map(|p| p.pod_sandbox_id.as_str()).collect();
    ids.sort();
    let mut want = vec![pod.as_str(), empty_pod.as_str()];
    want.sort();
    assert_eq!(ids, want);

    // Only the running container has series.
    assert_eq!(
        ours.container_metrics.len(),
        1,
        "{:?}",
        ours.container_metrics
    );
    let c = &ours.container_metrics[0];
    assert_eq!(c.container_id, id);
    assert_ne!(c.container_id, created);
    check_against(
        &descs,
        &c.metrics,
        &[
            ("container", "work"),
            ("name", &id),
            ("image", &env.image),
            ("namespace", "e2e"),
            ("pod", "metered"),
        ],
    );
    let cgroup_label = &c.metrics[0].label_values[1];
    assert!(cgroup_label.ends_with(&id), "id label {cgroup_label}");
    let get = |name: &str| value(&c.metrics, &descs, name, &[]).unwrap_or_else(|| panic!("{name}"));
    let ws = get("container_memory_working_set_bytes");
    assert!(ws > HELD, "working set {ws} with {HELD} held");
    assert!(get("container_memory_usage_bytes") >= ws);
    assert!(get("container_memory_rss") >= HELD);
    let user = get("container_cpu_user_seconds_total");
    let system = get("container_cpu_system_seconds_total");
    let total = value(
        &c.metrics,
        &descs,
        "container_cpu_usage_seconds_total",
        &[("cpu", "total")],
    )
    .unwrap();
    // Each is rounded down to whole seconds on its own.
    assert!(
        user + system <= total + 1 && total <= user + system + 2,
        "{user}+{system} vs {total}"
    );
    assert_eq!(get("container_oom_events_total"), 0);
    assert_eq!(
        get("container_spec_memory_limit_bytes"),
        0,
        "no limit was set"
    );
    // sh (or the sleep it became), the held dd and its sleep.
    assert!(get("container_processes") >= 3);
    assert!(get("container_threads") >= get("container_processes"));
    assert!(get("container_file_descriptors") >= 3);
    assert!(value(&c.metrics, &descs, "container_sockets", &[]).is_some());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let started = get("container_start_time_seconds");
    assert!(
        started <= now && started + 600 > now,
        "started {started}, now {now}"
    );
    assert!(get("container_last_seen") + 60 > now);
    let fs = c
        .metrics
        .iter()
        .find(|m| m.name == "container_fs_usage_bytes")
        .expect("the writable layer is measured");
    assert!(fs.value.as_ref().unwrap().value >= 2 << 20, "{fs:?}");
    let device = fs.label_values.last().unwrap().clone();
    let limit = value(
        &c.metrics,
        &descs,
        "container_fs_limit_bytes",
        &[("device", &device)],
    )
    .unwrap();
    assert!(limit > fs.value.as_ref().unwrap().value);

    // The pod: its cgroup holds the container, its namespace eth0.
    check_against(
        &descs,
        &ours.metrics,
        &[
            ("container", ""),
            ("name", &pod),
            ("namespace", "e2e"),
            ("pod", "metered"),
        ],
    );
    let pget = |name: &str, with: &[(&str, &str)]| {
        value(&ours.metrics, &descs, name, with).unwrap_or_else(|| panic!("pod {name}"))
    };
    assert!(pget("container_memory_working_set_bytes", &[]) >= ws - (1 << 20));
    assert!(pget("container_cpu_usage_seconds_total", &[("cpu", "total")]) >= total);
    assert!(pget("container_processes", &[]) >= 3);
    let eth0 = [("interface", "eth0")];
    for name in [
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_network_receive_packets_total",
        "container_network_transmit_packets_total",
    ] {
        assert!(pget(name, &eth0) > 0, "{name}");
    }
    assert!(pget("container_network_receive_bytes_total", &eth0) > 3000);
    assert!(
        value(
            &ours.metrics,
            &descs,
            "container_network_receive_bytes_total",
            &[("interface", "lo")]
        )
        .is_none(),
        "loopback is left out"
    );
    assert!(ours
        .metrics
        .iter()
        .all(|m| descs[&m.name].label_keys.iter().all(|k| k != "device")));
    let empty = all.iter().find(|p| p.pod_sandbox_id == empty_pod).unwrap();
    assert!(empty.container_metrics.is_empty());
    assert!(value(
        &empty.metrics,
        &descs,
        "container_network_transmit_bytes_total",
        &eth0
    )
    .is_some());

    // Counters only grow; the streaming form answers the same pods.
    let later = pod_metrics(&mut rt).await;
    let again = later.iter().find(|p| p.pod_sandbox_id == pod).unwrap();
    for m in ours.metrics.iter().chain(&c.metrics) {
        if m.metric_type != MetricType::Counter as i32 {
            continue;
        }
        let all_later: Vec<&Metric> = again
            .metrics
            .iter()
            .chain(again.container_metrics.iter().flat_map(|c| &c.metrics))
            .filter(|x| x.name == m.name && x.label_values == m.label_values)
            .collect();
        assert_eq!(all_later.len(), 1, "{} {:?}", m.name, m.label_values);
        assert!(
            all_later[0].value.as_ref().unwrap().value >= m.value.as_ref().unwrap().value,
            "{} went down",
            m.name
        );
    }
    let mut streamed = Vec::new();
    let mut s = rt
        .stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner();
    while let Some(msg) = s.next().await {
        streamed.extend(
            msg.unwrap()
                .pod_sandbox_metrics
                .into_iter()
                .map(|p| (p.pod_sandbox_id, p.container_metrics.len())),
        );
    }
    streamed.sort();
    let mut listed: Vec<(String, usize)> = later
        .iter()
        .map(|p| (p.pod_sandbox_id.clone(), p.container_metrics.len()))
        .collect();
    listed.sort();
    assert_eq!(streamed, listed);

    // A removed pod is gone from the list.
    remove_pod(&mut rt, &pod).await;
    let left: Vec<String> = pod_metrics(&mut rt)
        .await
        .into_iter()
        .map(|p| p.pod_sandbox_id)
        .collect();
    assert_eq!(left, vec![empty_pod.clone()]);
    remove_pod(&mut rt, &empty_pod).await;
    assert!(pod_metrics(&mut rt).await.is_empty());
}
