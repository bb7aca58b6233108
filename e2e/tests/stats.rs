//! The list stats calls against real cgroups and a real pod network, with
//! the background sampler on a one-second period: the answers come from
//! the latest pass (the same figures with the same timestamps until the
//! next), the sampler keeps passing (CPU counters move between passes),
//! and what changed since a pass (a new container, a stopped one) is read
//! by the call itself.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gantry_e2e::fixture::{create_and_start, remove_pod, BusyboxEnv};
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    ContainerStats, ContainerStatsFilter, ListContainerStatsRequest, ListPodSandboxStatsRequest,
    PodSandboxStats, StopContainerRequest,
};
use tonic::transport::Channel;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// Per container: (CPU timestamp, cumulative CPU ns).
async fn listed(
    rt: &mut RuntimeServiceClient<Channel>,
    filter: Option<ContainerStatsFilter>,
) -> HashMap<String, (i64, u64)> {
    let stats: Vec<ContainerStats> = rt
        .list_container_stats(ListContainerStatsRequest { filter })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats;
    stats
        .into_iter()
        .map(|s| {
            let id = s.attributes.map(|a| a.id).unwrap_or_default();
            let cpu = s.cpu.unwrap_or_default();
            let used = cpu.usage_core_nano_seconds.map(|v| v.value).unwrap_or(0);
            (id, (cpu.timestamp, used))
        })
        .collect()
}

async fn pod_stats(rt: &mut RuntimeServiceClient<Channel>) -> Vec<PodSandboxStats> {
    rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
        .await
        .expect("ListPodSandboxStats")
        .into_inner()
        .stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_stats_come_from_the_sampler_and_what_changed_is_read_by_the_call() {
    let env = BusyboxEnv::start("stats", "runtime:\n  stats_collection_period: 1\n").await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "stats").await;
    let spin = create_and_start(
        &mut rt,
        &pod,
        &pc,
        env.container("spin", "while true; do :; done"),
    )
    .await;
    let idle = create_and_start(&mut rt, &pod, &pc, env.container("idle", "sleep 3600")).await;

    // Polled ten times a second for three seconds: answers repeat (the same
    // pass) and move on (later passes), and each is at most two periods old.
    let mut seen: Vec<(i64, u64)> = Vec::new();
    let mut repeated = 0;
    for _ in 0..30 {
        let asked = now_ns();
        let all = listed(&mut rt, None).await;
        assert_eq!(all.len(), 2, "{all:?}");
        let (at, used) = all[&spin];
        assert!(at <= now_ns(), "a timestamp in the future: {at}");
        assert!(
            asked - at < 2_000_000_000,
            "a sample {} ms old",
            (asked - at) / 1_000_000
        );
        if seen.last() == Some(&(at, used)) {
            repeated += 1;
        }
        seen.push((at, used));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(repeated >= 10, "answers read afresh each time: {seen:?}");
    let (first, last) = (seen[0], seen[seen.len() - 1]);
    assert!(
        last.0 > first.0 && last.1 > first.1,
        "the sampler keeps sampling: {seen:?}"
    );

    // A container started after the last pass is read by the call.
    let late = create_and_start(&mut rt, &pod, &pc, env.container("late", "sleep 3600")).await;
    let started = now_ns();
    let only = listed(
        &mut rt,
        Some(ContainerStatsFilter {
            id: late.clone(),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(only.keys().collect::<Vec<_>>(), vec![&late]);
    assert!(only[&late].0 >= started, "read by the call, not sampled");

    // So is a container stopped since: it no longer runs, so no CPU.
    rt.stop_container(StopContainerRequest {
        container_id: spin.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    let stopped = now_ns();
    let all = listed(&mut rt, None).await;
    assert_eq!(all.len(), 3);
    assert!(all[&spin].0 >= stopped, "{:?}", all[&spin]);
    assert_eq!(all[&spin].1, 0, "a stopped container's CPU is not read");
    assert!(all.contains_key(&idle));

    // The pod's stats: read by the call now that its containers changed,
    // then from the sampler again, with its network either way.
    let mut sampled_again = false;
    for _ in 0..40 {
        let stats = pod_stats(&mut rt).await;
        assert_eq!(stats.len(), 1);
        let linux = stats[0].linux.clone().expect("linux stats");
        assert_eq!(linux.containers.len(), 3);
        let net = linux.network.expect("network stats");
        assert_eq!(
            net.default_interface.map(|i| i.name).as_deref(),
            Some("eth0")
        );
        let at = linux.cpu.map(|c| c.timestamp).unwrap_or_default();
        let again = pod_stats(&mut rt).await;
        let at2 = again[0]
            .linux
            .as_ref()
            .and_then(|l| l.cpu.as_ref())
            .map(|c| c.timestamp)
            .unwrap_or_default();
        if at2 == at && at > stopped {
            sampled_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sampled_again,
        "a pass after the stop answers the pod's stats"
    );
    remove_pod(&mut rt, &pod).await;
}
