//! Calls whose callers give up: kubelet's deadline passes or the client
//! hangs up part-way through RunPodSandbox, CreateContainer and
//! StartContainer. The daemon finishes (or rolls back) each, and the retry
//! kubelet makes gets the object the cut call made instead of a name that
//! stays taken.

use std::process::Command;
use std::time::Duration;

use gantry_e2e::daemon::Gantry;
use gantry_e2e::fixture::{all_containers, all_pods, named_pod_config, remove_pod, BusyboxEnv};
use gantry_e2e::require_host;
use gantry_proto::v1::{
    ContainerConfig, ContainerState, CreateContainerRequest, PodSandboxConfig, PodSandboxState,
    RunPodSandboxRequest, StartContainerRequest,
};
use tonic::{Code, Request};

/// Sends a request with a deadline, and drops the call at that deadline
/// too, so the daemon sees the cut whichever side notices first.
async fn cut<T, F, Fut>(after: Duration, msg: T, call: F) -> Result<Fut::Output, ()>
where
    F: FnOnce(Request<T>) -> Fut,
    Fut: std::future::Future,
{
    let mut req = Request::new(msg);
    req.set_timeout(after);
    tokio::time::timeout(after, call(req)).await.map_err(|_| ())
}

/// A CNI plugin whose ADD takes `slow_file`'s seconds and logs when it
/// starts and when it is done, and whose DEL logs too.
fn slow_plugin(bin: &std::path::Path, log: &std::path::Path) {
    std::fs::create_dir_all(bin).unwrap();
    let script = format!(
        "#!/bin/sh\ncat >/dev/null\n\
         case \"$CNI_COMMAND\" in\n\
         ADD) echo \"ADD $CNI_CONTAINERID\" >> {log}; sleep 2; echo \"ADD-DONE $CNI_CONTAINERID\" >> {log};\n\
              echo \"{{\\\"cniVersion\\\":\\\"1.0.0\\\",\\\"interfaces\\\":[{{\\\"name\\\":\\\"eth0\\\",\\\"sandbox\\\":\\\"$CNI_NETNS\\\"}}],\\\"ips\\\":[{{\\\"address\\\":\\\"10.250.1.7/24\\\",\\\"interface\\\":0}}]}}\" ;;\n\
         DEL) echo \"DEL $CNI_CONTAINERID\" >> {log} ;;\n\
         VERSION) echo '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\"]}}' ;;\n\
         esac\n",
        log = log.display()
    );
    let path = bin.join("slownet");
    std::fs::write(&path, script).unwrap();
    assert!(Command::new("chmod")
        .arg("+x")
        .arg(&path)
        .status()
        .unwrap()
        .success());
}

fn run_req(config: &PodSandboxConfig) -> RunPodSandboxRequest {
    RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_cut_in_the_middle_of_cni_add_is_finished_and_handed_to_the_retry() {
    require_host();
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    let log = tmp.path().join("calls");
    slow_plugin(&bin, &log);
    let g = Gantry::start(&format!("  bin_dirs: [{}]\n", bin.display())).await;
    std::fs::create_dir_all(g.dir.join("cni")).unwrap();
    std::fs::write(
        g.dir.join("cni/10-slow.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "slow", "plugins": [{"type": "slownet"}]}"#,
    )
    .unwrap();
    let mut rt = g.runtime().await;
    let config = named_pod_config("cut-pod");

    // The plugin needs 2 s; the caller gives up after 0.5 s.
    let mut client = rt.clone();
    let first = cut(
        Duration::from_millis(500),
        run_req(&config),
        |r| async move { client.run_pod_sandbox(r).await },
    )
    .await;
    match first {
        Err(()) => {}
        Ok(Err(s)) => assert!(
            matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{s:?}"
        ),
        Ok(Ok(r)) => panic!("RunPodSandbox beat a 2 s plugin: {r:?}"),
    }
    // Kubelet's retry comes while the first attempt still runs.
    let id = rt
        .run_pod_sandbox(run_req(&config))
        .await
        .unwrap_or_else(|e| panic!("the retry: {e}"))
        .into_inner()
        .pod_sandbox_id;
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [format!("ADD {id}"), format!("ADD-DONE {id}")],
        "one ADD, not killed, no DEL, nothing for a second pod"
    );
    let pods = all_pods(&mut rt).await;
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].id, id);
    assert_eq!(pods[0].state, PodSandboxState::SandboxReady as i32);

    // The same request once more is answered with the same pod; another
    // request for the name is refused.
    let again = rt
        .run_pod_sandbox(run_req(&config))
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    assert_eq!(again, id);
    let mut other = config.clone();
    other.labels.insert("changed".into(), "yes".into());
    let refused = rt.run_pod_sandbox(run_req(&other)).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert_eq!(all_pods(&mut rt).await.len(), 1);

    remove_pod(&mut rt, &id).await;
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains(&format!("DEL {id}")), "{calls}");
    assert!(all_pods(&mut rt).await.is_empty());
}

/// Cuts at several points: before the pod is made, while its namespaces
/// and network are set up, and (with a long deadline) not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_and_containers_cut_at_any_point_are_made_once_and_leave_nothing() {
    let env = BusyboxEnv::start("cancel", "").await;
    let mut rt = env.g.runtime().await;
    let cuts = [1u64, 20, 60, 150, 400, 5000];

    let mut pods = Vec::new();
    for (i, ms) in cuts.iter().enumerate() {
        let config = env.pod_config(&format!("cut{i}"));
        let mut client = rt.clone();
        let first = cut(
            Duration::from_millis(*ms),
            run_req(&config),
            |r| async move { client.run_pod_sandbox(r).await },
        )
        .await;
        let first_id = match first {
            Ok(Ok(r)) => Some(r.into_inner().pod_sandbox_id),
            _ => None,
        };
        let id = rt
            .run_pod_sandbox(run_req(&config))
            .await
            .map(|r| r.into_inner().pod_sandbox_id);
        // Whether or not the first call got its answer, the retry gets the
        // same pod.
        let id = match (first_id, id) {
            (Some(first), Ok(id)) if first == id => id,
            (None, Ok(id)) => id,
            (first, retry) => panic!("cut after {ms} ms: first {first:?}, retry {retry:?}"),
        };
        pods.push((id, config));
    }
    let listed = all_pods(&mut rt).await;
    assert_eq!(listed.len(), cuts.len(), "one pod per name: {listed:?}");
    assert!(listed
        .iter()
        .all(|p| p.state == PodSandboxState::SandboxReady as i32));

    let (pod, pod_config) = &pods[0];
    let create = |name: &str| CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(ContainerConfig {
            ..env.container(name, "sleep 1000")
        }),
        sandbox_config: Some(pod_config.clone()),
    };
    let mut made = Vec::new();
    for (i, ms) in cuts.iter().enumerate() {
        let req = create(&format!("c{i}"));
        let mut client = rt.clone();
        let r = req.clone();
        let first = cut(Duration::from_millis(*ms), r, |r| async move {
            client.create_container(r).await
        })
        .await;
        let first_id = match first {
            Ok(Ok(r)) => Some(r.into_inner().container_id),
            _ => None,
        };
        let retry = rt
            .create_container(req)
            .await
            .map(|r| r.into_inner().container_id);
        let id = match (first_id, retry) {
            (Some(first), Ok(id)) if first == id => id,
            (None, Ok(id)) => id,
            (first, retry) => panic!("create cut after {ms} ms: first {first:?}, retry {retry:?}"),
        };
        made.push(id);
    }
    let in_pod = all_containers(&mut rt).await;
    assert_eq!(
        in_pod.len(),
        cuts.len(),
        "one container per name: {in_pod:?}"
    );

    for (id, ms) in made.iter().zip(cuts) {
        let mut client = rt.clone();
        let req = StartContainerRequest {
            container_id: id.clone(),
        };
        let first = cut(Duration::from_millis(ms), req.clone(), |r| async move {
            client.start_container(r).await
        })
        .await;
        let _ = first;
        rt.start_container(req)
            .await
            .unwrap_or_else(|e| panic!("the retry of a start cut after {ms} ms: {e}"));
    }
    let states: Vec<i32> = all_containers(&mut rt)
        .await
        .into_iter()
        .map(|c| c.state)
        .collect();
    assert!(
        states
            .iter()
            .all(|s| *s == ContainerState::ContainerRunning as i32),
        "{states:?}"
    );

    for (id, _) in &pods {
        remove_pod(&mut rt, id).await;
    }
    assert!(all_pods(&mut rt).await.is_empty());
    assert!(all_containers(&mut rt).await.is_empty());
    assert!(
        env.net.reservations().is_empty(),
        "addresses outlived their pods: {:?}",
        env.net.reservations()
    );
    assert_no_leftovers(&env.g);
}

fn assert_no_leftovers(g: &Gantry) {
    let root = g.dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let held: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
    assert!(held.is_empty(), "mounts outlived their objects: {held:#?}");
    for dir in ["state/pods", "root/sandboxes", "root/containers"] {
        let left: Vec<_> = std::fs::read_dir(g.dir.join(dir))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{dir} still holds {left:?}");
    }
}
