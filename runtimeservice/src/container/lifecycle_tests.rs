//! The container lifecycle against a fake host, runtime and image store:
//! what each step leaves behind, and that every failure takes back what
//! was made (rootfs mount, image lease, runtime state, record, directory).

use std::sync::Arc;
use std::time::Duration;

use gantry_proto::v1 as cri;

use super::{ContainerService, ContainerState};
use crate::error::Error;
use crate::host::Host;
use crate::testing::{container_config, pod_config, World};

/// A world with one ready pod, and the container service on it.
async fn world() -> (World, Arc<ContainerService>, String) {
    let w = World::new();
    let pod = w.pods.run(pod_config("web"), String::new()).await.unwrap();
    let svc = Arc::new(w.containers());
    (w, svc, pod)
}

fn cdir(w: &World, id: &str) -> std::path::PathBuf {
    w.pods.config.root.join("containers").join(id)
}

fn removing(w: &World, id: &str) -> std::path::PathBuf {
    w.pods.config.root.join("removing").join(id)
}

/// Nothing of the container is left once its reap is over: record,
/// directory, mount, lease, monitor.
async fn assert_gone(w: &World, svc: &ContainerService, id: &str) {
    svc.reaper.wait_all().await;
    assert!(svc.resolve(id).unwrap().is_none(), "record of {id} left");
    assert!(!cdir(w, id).exists(), "directory left");
    assert!(!removing(w, id).exists(), "directory left to reap");
    let host = w.host.state();
    assert!(
        !host.mounts.iter().any(|m| m.starts_with(cdir(w, id))),
        "mounts left: {:?}",
        host.mounts
    );
    assert!(
        !host
            .procs
            .values()
            .any(|p| matches!(p, crate::testing::Proc::Monitor(c) | crate::testing::Proc::Init(c) if c == id)),
        "processes left: {:?}",
        host.procs
    );
    drop(host);
    assert!(
        !w.images.holders().contains(&id.to_string()),
        "lease left: {:?}",
        w.images.holders()
    );
}

fn events(svc: &ContainerService) -> tokio::sync::broadcast::Receiver<cri::ContainerEventResponse> {
    svc.events.subscribe()
}

fn drain(
    rx: &mut tokio::sync::broadcast::Receiver<cri::ContainerEventResponse>,
) -> Vec<cri::ContainerEventType> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(cri::ContainerEventType::try_from(e.container_event_type).unwrap());
    }
    out
}

#[tokio::test]
async fn create_start_stop_remove() {
    use cri::ContainerEventType::*;
    let (w, svc, pod) = world().await;
    let mut rx = events(&svc);
    let id = svc.create(&pod, container_config("app")).await.unwrap();
    let rootfs = cdir(&w, &id).join("bundle/rootfs");
    assert!(w.host.state().mounts.contains(&rootfs));
    assert!(
        rootfs.join("bin/app").is_file(),
        "the image's layer is seen"
    );
    assert_eq!(w.images.holders(), vec![id.clone()]);
    let status = svc.status(&id, false).unwrap().status.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerCreated as i32);
    assert!(cdir(&w, &id).join("bundle/config.json").is_file());
    // Nothing runs before StartContainer.
    assert!(w.host.calls_to("run_monitor").is_empty());

    svc.start(&id).await.unwrap();
    let status = svc.status(&id, false).unwrap().status.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    let monitors = w.host.monitors_of(&id);
    assert_eq!(monitors.len(), 1, "one monitor runs the container");
    // Starting twice is refused.
    let err = svc.start(&id).await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");

    svc.stop(&id, 10).await.unwrap();
    let kills = w.host.calls_to("runtime.kill");
    assert_eq!(
        kills,
        vec![format!("runtime.kill {id} {} all=false", libc::SIGTERM)]
    );
    let status = svc.status(&id, false).unwrap().status.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 128 + libc::SIGTERM);
    assert_eq!(status.reason, "Error");
    assert!(w.host.monitors_of(&id).is_empty());

    svc.remove(&id).await.unwrap();
    assert_gone(&w, &svc, &id).await;
    assert_eq!(
        w.host.calls_to("runtime.delete"),
        vec![format!("runtime.delete {id} force=true")]
    );
    assert_eq!(
        drain(&mut rx),
        vec![
            ContainerCreatedEvent,
            ContainerStartedEvent,
            ContainerStoppedEvent,
            ContainerDeletedEvent
        ]
    );
    // Gone is gone, quietly.
    svc.remove(&id).await.unwrap();
    svc.stop(&id, 0).await.unwrap();
}

#[tokio::test]
async fn rootfs_mount_failure_rolls_back() {
    let (w, svc, pod) = world().await;
    let mut rx = events(&svc);
    w.host.fail("mount_overlay");
    let err = svc.create(&pod, container_config("app")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(svc.list(None).is_empty());
    assert!(w.images.holders().is_empty(), "the lease was released");
    assert!(
        std::fs::read_dir(w.pods.config.root.join("containers"))
            .unwrap()
            .next()
            .is_none(),
        "a container directory is left"
    );
    assert!(w.host.state().mounts.is_empty());
    assert!(
        drain(&mut rx).is_empty(),
        "no event for a container never made"
    );
    // The name is free again.
    w.host.state().fail.clear();
    svc.create(&pod, container_config("app")).await.unwrap();
}

#[tokio::test]
async fn a_command_the_image_lacks_rolls_back_after_the_mount() {
    let (w, svc, pod) = world().await;
    let mut config = container_config("app");
    config.command = vec!["/bin/missing".into()];
    let err = svc.create(&pod, config).await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    let rootfs_unmounts = w
        .host
        .calls_to("unmount")
        .into_iter()
        .filter(|c| c.ends_with("/bundle/rootfs"))
        .count();
    assert_eq!(rootfs_unmounts, 1, "{:?}", w.host.calls());
    assert!(w.host.state().mounts.is_empty());
    assert!(w.images.holders().is_empty());
    assert!(svc.list(None).is_empty());
    // The runtime was told to forget it, in case it had seen it.
    assert_eq!(w.host.calls_to("runtime.delete").len(), 1);
}

#[tokio::test]
async fn unknown_images_and_lookup_failures_hold_nothing() {
    let (w, svc, pod) = world().await;
    let mut config = container_config("app");
    config.image = Some(cri::ImageSpec {
        image: "nope".into(),
        ..Default::default()
    });
    let err = svc.create(&pod, config).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    *w.images.fail_acquire.lock().unwrap() = true;
    let err = svc.create(&pod, container_config("app")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(
        w.images.holders().is_empty(),
        "a lease taken was not released"
    );
    assert!(w.host.calls_to("mount_overlay").is_empty());
    assert!(svc.list(None).is_empty());
}

#[tokio::test]
async fn containers_need_a_ready_pod_and_a_free_name() {
    let (w, svc, pod) = world().await;
    let first = svc.create(&pod, container_config("app")).await.unwrap();
    let err = svc.create(&pod, container_config("app")).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    assert_eq!(
        w.images.holders(),
        vec![first.clone()],
        "only the first holds"
    );
    assert_eq!(w.host.state().mounts.len(), 1);

    w.pods.stop(&pod).await.unwrap();
    let err = svc
        .create(&pod, container_config("other"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    let err = svc
        .create("nopod", container_config("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert_eq!(w.images.holders(), vec![first]);
}

#[tokio::test]
async fn a_failed_start_is_an_exit_and_leaves_no_monitor() {
    use cri::ContainerEventType::*;
    let (w, svc, pod) = world().await;
    let id = svc.create(&pod, container_config("app")).await.unwrap();
    let mut rx = events(&svc);
    w.host.fail("run_monitor");
    let err = svc.start(&id).await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    let status = svc.status(&id, false).unwrap().status.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(status.reason, "StartError");
    assert_eq!(status.exit_code, 128);
    assert!(status.message.contains("exec format error"), "{status:?}");
    // What the start may have left is undone: runtime state, monitor files.
    assert_eq!(w.host.calls_to("runtime.delete").len(), 1);
    assert!(!cdir(&w, &id).join("pid").exists());
    assert_eq!(drain(&mut rx), vec![ContainerStoppedEvent]);
    // The rootfs stays for the logs and status until the removal.
    assert!(w.host.state().mounts.len() == 1);
    svc.remove(&id).await.unwrap();
    assert_gone(&w, &svc, &id).await;
}

#[tokio::test]
async fn a_monitor_that_dies_silently_is_an_unknown_exit() {
    let (w, svc, pod) = world().await;
    let id = svc.create(&pod, container_config("app")).await.unwrap();
    svc.start(&id).await.unwrap();
    w.host.crash_monitor(&id);
    svc.stop(&id, 0).await.unwrap();
    let status = svc.status(&id, false).unwrap().status.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 255);
    svc.remove(&id).await.unwrap();
    assert_gone(&w, &svc, &id).await;
}

#[tokio::test]
async fn an_exit_of_its_own_reaches_the_record() {
    use cri::ContainerEventType::*;
    let (w, svc, pod) = world().await;
    svc.spawn_exit_watcher().unwrap();
    let id = svc.create(&pod, container_config("app")).await.unwrap();
    svc.start(&id).await.unwrap();
    let mut rx = events(&svc);
    w.host.exit_container(&id, 0, 0);
    // The watcher hears the exit file written; bounded, not timed.
    let mut status = None;
    for _ in 0..500 {
        let s = svc.status(&id, false).unwrap().status.unwrap();
        if s.state == cri::ContainerState::ContainerExited as i32 {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = status.expect("the exit was never recorded");
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    assert_eq!(drain(&mut rx), vec![ContainerStoppedEvent]);
    // Stopping an exited container signals nothing.
    svc.stop(&id, 10).await.unwrap();
    assert!(w.host.calls_to("runtime.kill").is_empty());
    svc.remove(&id).await.unwrap();
    assert_gone(&w, &svc, &id).await;
}

#[tokio::test]
async fn recover_rolls_back_creates_and_finds_lost_monitors() {
    let (w, svc, pod) = world().await;
    let cut = svc.create(&pod, container_config("cut")).await.unwrap();
    let lost = svc.create(&pod, container_config("lost")).await.unwrap();
    let kept = svc.create(&pod, container_config("kept")).await.unwrap();
    svc.start(&lost).await.unwrap();
    svc.start(&kept).await.unwrap();
    // A daemon killed mid-create, and a monitor that died meanwhile.
    svc.update(&cut, |r| r.state = ContainerState::Creating)
        .unwrap();
    w.host.crash_monitor(&lost);
    drop(svc);

    let svc = w.containers();
    svc.recover().await;
    assert!(svc.resolve(&cut).unwrap().is_none());
    assert!(!cdir(&w, &cut).exists());
    assert!(!w.images.holders().contains(&cut));
    let status = svc.status(&lost, false).unwrap().status.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!((status.exit_code, status.reason.as_str()), (255, "Unknown"));
    let status = svc.status(&kept, false).unwrap().status.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(w.host.state().mounts.len(), 2, "cut's rootfs was unmounted");
    for id in [&lost, &kept] {
        svc.remove(id).await.unwrap();
        assert_gone(&w, &svc, id).await;
    }
}

#[tokio::test]
async fn a_refused_stop_signal_fails_the_stop_and_keeps_the_container() {
    let (w, svc, pod) = world().await;
    let id = svc.create(&pod, container_config("app")).await.unwrap();
    svc.start(&id).await.unwrap();
    w.host.fail("runtime.kill");
    // The runtime is the only way to signal it: no cgroup.kill here.
    w.host.state().no_cgroup_kill = true;
    let err = svc.stop(&id, 10).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    let status = svc.status(&id, false).unwrap().status.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    // Nor can it be removed while it may run.
    assert!(svc.remove(&id).await.is_err());
    assert!(svc.resolve(&id).unwrap().is_some());
    w.host.state().fail.clear();
    svc.remove(&id).await.unwrap();
    assert_gone(&w, &svc, &id).await;
}

#[tokio::test]
async fn a_runtime_that_cannot_delete_does_not_keep_the_container() {
    let (w, svc, pod) = world().await;
    let id = svc.create(&pod, container_config("app")).await.unwrap();
    svc.start(&id).await.unwrap();
    svc.stop(&id, 10).await.unwrap();
    w.host.fail("runtime.delete");
    svc.remove(&id).await.unwrap();
    assert_gone(&w, &svc, &id).await;
}

#[tokio::test]
async fn resources_reach_a_running_container_and_the_spec() {
    let (w, svc, pod) = world().await;
    let id = svc.create(&pod, container_config("app")).await.unwrap();
    let res = cri::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    };
    // A created container gets them in its spec only.
    svc.update_resources(&id, res.clone()).await.unwrap();
    assert!(w.host.calls_to("runtime.update").is_empty());
    let spec = |w: &World| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(cdir(w, &id).join("bundle/config.json")).unwrap())
            .unwrap()
    };
    assert_eq!(spec(&w)["linux"]["resources"]["memory"]["limit"], 64 << 20);

    svc.start(&id).await.unwrap();
    let res = cri::LinuxContainerResources {
        memory_limit_in_bytes: 128 << 20,
        ..Default::default()
    };
    w.host.fail("runtime.update");
    let err = svc.update_resources(&id, res.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert_eq!(
        spec(&w)["linux"]["resources"]["memory"]["limit"],
        64 << 20,
        "the spec changed though the runtime refused"
    );
    w.host.state().fail.clear();
    svc.update_resources(&id, res).await.unwrap();
    assert_eq!(w.host.calls_to("runtime.update").len(), 2);
    assert_eq!(spec(&w)["linux"]["resources"]["memory"]["limit"], 128 << 20);
    svc.remove(&id).await.unwrap();
    assert_gone(&w, &svc, &id).await;
}

fn with_image_volume(sub: &str) -> cri::ContainerConfig {
    let mut config = container_config("app");
    config.mounts = vec![cri::Mount {
        container_path: "/vol".into(),
        image: Some(cri::ImageSpec {
            image: "app".into(),
            ..Default::default()
        }),
        image_sub_path: sub.into(),
        ..Default::default()
    }];
    config
}

fn leases_of(w: &World, id: &str) -> Vec<String> {
    w.images
        .leases
        .lock()
        .unwrap()
        .get(id)
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn image_volumes_are_mounted_held_and_let_go() {
    let (w, svc, pod) = world().await;
    let id = svc.create(&pod, with_image_volume("data")).await.unwrap();
    let base = cdir(&w, &id).join("image-volumes/0");
    let mounts = w.host.state().mounts.clone();
    assert!(mounts.contains(&base.join("image")), "{mounts:?}");
    assert!(mounts.contains(&base.join("sub")), "{mounts:?}");
    assert!(base.join("sub/hello").is_file(), "the sub path was bound");
    assert_eq!(w.host.calls_to("remount_readonly").len(), 1);
    assert_eq!(
        leases_of(&w, &id),
        vec![id.clone(), format!("{id}.image-volume-0")]
    );
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cdir(&w, &id).join("bundle/config.json")).unwrap())
            .unwrap();
    let vol = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/vol")
        .expect("the volume is in the spec");
    assert_eq!(vol["source"], base.join("sub").display().to_string());
    svc.remove(&id).await.unwrap();
    assert_gone(&w, &svc, &id).await;
    assert!(w.host.state().mounts.is_empty());
}

#[tokio::test]
async fn a_failed_image_volume_undoes_every_mount_and_lease() {
    let (w, svc, pod) = world().await;
    w.host.fail("remount_readonly");
    let err = svc
        .create(&pod, with_image_volume("data"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(
        w.host.state().mounts.is_empty(),
        "{:?}",
        w.host.state().mounts
    );
    assert!(w.images.holders().is_empty());
    assert!(svc.list(None).is_empty());
    w.host.state().fail.clear();
    // A sub path the image lacks is the caller's mistake, undone the same.
    let err = svc
        .create(&pod, with_image_volume("missing"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(
        w.host.state().mounts.is_empty(),
        "{:?}",
        w.host.state().mounts
    );
    assert!(w.images.holders().is_empty());
    assert!(svc.list(None).is_empty());
}

/// A pod with `running` started containers and one never started, its
/// event stream subscribed before the stop.
async fn pod_of(
    running: usize,
) -> (
    World,
    Arc<ContainerService>,
    String,
    Vec<String>,
    String,
    tokio::sync::broadcast::Receiver<cri::ContainerEventResponse>,
) {
    let (w, svc, pod) = world().await;
    let mut ids = Vec::new();
    for i in 0..running {
        let id = svc
            .create(&pod, container_config(&format!("c{i}")))
            .await
            .unwrap();
        svc.start(&id).await.unwrap();
        ids.push(id);
    }
    let created = svc.create(&pod, container_config("idle")).await.unwrap();
    let rx = events(&svc);
    (w, svc, pod, ids, created, rx)
}

/// What StopPodSandbox leaves, whichever way the containers were killed:
/// each running one exited by SIGKILL with one STOPPED event, the created
/// one as it was, then the pod's STOPPED; a second stop changes nothing.
async fn assert_pod_stopped(
    w: &World,
    svc: &Arc<ContainerService>,
    pod: &str,
    ids: &[String],
    created: &str,
    rx: &mut tokio::sync::broadcast::Receiver<cri::ContainerEventResponse>,
) {
    use cri::ContainerEventType::*;
    for id in ids {
        let status = svc.status(id, false).unwrap().status.unwrap();
        assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
        assert_eq!(status.exit_code, 128 + libc::SIGKILL);
        assert_eq!(status.reason, "Error");
        assert_eq!(
            status.message,
            format!("killed by signal {}", libc::SIGKILL)
        );
        assert!(w.host.monitors_of(id).is_empty());
    }
    let status = svc.status(created, false).unwrap().status.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerCreated as i32);
    let mut want = vec![ContainerStoppedEvent; ids.len()];
    want.push(ContainerStoppedEvent);
    let mut got = Vec::new();
    while let Ok(e) = rx.try_recv() {
        got.push((
            e.container_id.clone(),
            cri::ContainerEventType::try_from(e.container_event_type).unwrap(),
        ));
    }
    let mut stopped: Vec<String> = got[..got.len() - 1]
        .iter()
        .map(|(c, _)| c.clone())
        .collect();
    stopped.sort();
    let mut expected = ids.to_vec();
    expected.sort();
    assert_eq!(stopped, expected, "one STOPPED per running container");
    assert_eq!(
        got.last().map(|(c, _)| c.as_str()),
        Some(pod),
        "the pod's last"
    );
    assert_eq!(got.into_iter().map(|(_, k)| k).collect::<Vec<_>>(), want);

    let calls = w.host.calls().len();
    w.pods.stop_sandbox(svc, pod).await.unwrap();
    assert!(drain(rx).is_empty(), "a second stop sends nothing");
    let again: Vec<String> = w.host.calls()[calls..]
        .iter()
        .filter(|c| c.starts_with("kill_cgroup") || c.starts_with("runtime.kill"))
        .cloned()
        .collect();
    assert!(again.is_empty(), "a second stop kills nothing: {again:?}");
}

#[tokio::test]
async fn a_pod_stop_kills_its_running_containers_through_their_cgroups() {
    let (w, svc, pod, ids, created, mut rx) = pod_of(3).await;
    w.pods.stop_sandbox(&svc, &pod).await.unwrap();
    // No runtime process: each container's cgroup, with its init.
    assert!(w.host.calls_to("runtime.kill").is_empty());
    let mut killed = w.host.calls_to("kill_cgroup");
    killed.sort();
    assert_eq!(killed.len(), ids.len(), "{killed:?}");
    for id in &ids {
        assert!(
            killed.iter().any(|c| c.contains(&format!("/{id} "))),
            "{id} not killed in its own cgroup: {killed:?}"
        );
    }
    assert_pod_stopped(&w, &svc, &pod, &ids, &created, &mut rx).await;
}

#[tokio::test]
async fn without_cgroup_kill_the_runtime_kills_each_container() {
    let (w, svc, pod, ids, created, mut rx) = pod_of(20).await;
    w.host.state().no_cgroup_kill = true;
    w.pods.stop_sandbox(&svc, &pod).await.unwrap();
    let mut kills = w.host.calls_to("runtime.kill");
    kills.sort();
    let mut want: Vec<String> = ids
        .iter()
        .map(|id| format!("runtime.kill {id} {} all=true", libc::SIGKILL))
        .collect();
    want.sort();
    assert_eq!(kills, want);
    assert_pod_stopped(&w, &svc, &pod, &ids, &created, &mut rx).await;
}

#[tokio::test]
async fn a_failed_cgroup_kill_falls_back_to_the_runtime() {
    let (w, svc, pod, ids, created, mut rx) = pod_of(2).await;
    w.host.fail("kill_cgroup");
    w.pods.stop_sandbox(&svc, &pod).await.unwrap();
    assert_eq!(w.host.calls_to("kill_cgroup").len(), 2);
    assert_eq!(w.host.calls_to("runtime.kill").len(), 2);
    assert_pod_stopped(&w, &svc, &pod, &ids, &created, &mut rx).await;
}

#[tokio::test]
async fn an_init_pid_reused_elsewhere_is_not_killed() {
    // The record's init PID now names another container's process: the
    // cgroup is not this container's init's, so the runtime kills it.
    let (w, svc, pod) = world().await;
    let a = svc.create(&pod, container_config("a")).await.unwrap();
    let b = svc.create(&pod, container_config("b")).await.unwrap();
    svc.start(&a).await.unwrap();
    svc.start(&b).await.unwrap();
    let b_init = svc.records().get(&b).unwrap().pid;
    svc.update(&a, |r| r.pid = b_init).unwrap();
    svc.stop(&a, 0).await.unwrap();
    assert_eq!(
        w.host.calls_to("runtime.kill"),
        vec![format!("runtime.kill {a} {} all=true", libc::SIGKILL)]
    );
    let status = svc.status(&b, false).unwrap().status.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    for id in [&a, &b] {
        svc.remove(id).await.unwrap();
        assert_gone(&w, &svc, id).await;
    }
}

/// A stopped container, with its removal's events from here on.
async fn stopped(
    w: &World,
    svc: &ContainerService,
    pod: &str,
    name: &str,
) -> (
    String,
    tokio::sync::broadcast::Receiver<cri::ContainerEventResponse>,
) {
    let id = svc.create(pod, container_config(name)).await.unwrap();
    svc.start(&id).await.unwrap();
    svc.stop(&id, 10).await.unwrap();
    assert!(w
        .host
        .state()
        .mounts
        .contains(&cdir(w, &id).join("bundle/rootfs")));
    (id, events(svc))
}

#[tokio::test]
async fn remove_returns_before_the_reap() {
    use cri::ContainerEventType::*;
    let (w, svc, pod) = world().await;
    let (id, mut rx) = stopped(&w, &svc, &pod, "app").await;
    svc.remove(&id).await.unwrap();
    // Out of view and durable: no record, nothing under containers/, the
    // event sent; the rest waits for the reaper, which has not run yet (a
    // test's runtime runs it only once the test waits).
    assert!(svc.resolve(&id).unwrap().is_none());
    assert!(svc.list(None).is_empty());
    assert!(!cdir(&w, &id).exists());
    assert_eq!(drain(&mut rx), vec![ContainerDeletedEvent]);
    assert!(svc.reaper.is_pending(&id));
    assert!(removing(&w, &id).join("container.json").is_file());
    assert!(w.host.calls_to("runtime.delete").is_empty());
    assert_eq!(
        w.images.holders(),
        vec![id.clone()],
        "the layers are still mounted"
    );
    // The rootfs mount moved with its directory.
    assert_eq!(w.host.state().mounts.len(), 1);
    assert_gone(&w, &svc, &id).await;
    assert_eq!(
        w.host.calls_to("runtime.delete"),
        vec![format!("runtime.delete {id} force=true")]
    );
    assert!(w.host.state().mounts.is_empty());
    assert!(!svc.reaper.is_pending(&id));
}

#[tokio::test]
async fn removal_while_reaping_is_idempotent_and_frees_the_name() {
    use cri::ContainerEventType::*;
    let (w, svc, pod) = world().await;
    let (id, mut rx) = stopped(&w, &svc, &pod, "app").await;
    svc.remove(&id).await.unwrap();
    assert!(svc.reaper.is_pending(&id));
    svc.remove(&id).await.unwrap();
    svc.stop(&id, 0).await.unwrap();
    assert_eq!(drain(&mut rx), vec![ContainerDeletedEvent], "one DELETED");
    // kubelet makes the next attempt under the same name at once.
    let again = svc.create(&pod, container_config("app")).await.unwrap();
    assert_ne!(again, id);
    assert_gone(&w, &svc, &id).await;
    assert_eq!(w.host.calls_to("runtime.delete").len(), 1);
    assert_eq!(svc.list(None).len(), 1);
    assert_eq!(w.images.holders(), vec![again.clone()]);
    svc.remove(&again).await.unwrap();
    assert_gone(&w, &svc, &again).await;
}

#[test]
fn a_reap_cut_short_is_finished_at_the_next_start() {
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = rt();
    let (w, id) = first.block_on(async {
        let (w, svc, pod) = world().await;
        let (id, _) = stopped(&w, &svc, &pod, "app").await;
        svc.remove(&id).await.unwrap();
        (w, id)
    });
    // The daemon dies between the rename and the reap: its runtime goes
    // with the reap task, never run.
    drop(first);
    assert!(removing(&w, &id).is_dir(), "the reap did not run");
    assert!(w.host.calls_to("runtime.delete").is_empty());
    assert_eq!(w.images.holders(), vec![id.clone()]);

    rt().block_on(async {
        let svc = w.containers();
        assert!(svc.resolve(&id).unwrap().is_none(), "removed stays removed");
        svc.recover().await;
        assert_gone(&w, &svc, &id).await;
        assert_eq!(
            w.host.calls_to("runtime.delete"),
            vec![format!("runtime.delete {id} force=true")]
        );
        assert!(w.host.state().mounts.is_empty());
    });
}

#[tokio::test]
async fn a_rootfs_that_will_not_unmount_keeps_its_leases_and_directory_until_the_next_start() {
    let (w, svc, pod) = world().await;
    let (id, _) = stopped(&w, &svc, &pod, "app").await;
    w.host.fail("unmount");
    svc.remove(&id).await.unwrap();
    svc.reaper.wait_all().await;
    assert!(svc.resolve(&id).unwrap().is_none(), "removed all the same");
    // The image's layers are still mounted under the rootfs: they must
    // not go, and the directory says the reap is still to be done.
    assert_eq!(w.images.holders(), vec![id.clone()]);
    assert!(removing(&w, &id).join("container.json").is_file());
    assert_eq!(
        w.host.state().mounts.len(),
        1,
        "the rootfs is still mounted"
    );

    // The next start finishes it once the mount lets go.
    w.host.state().fail.remove("unmount");
    let restarted = w.containers();
    restarted.recover().await;
    assert_gone(&w, &restarted, &id).await;
}

#[tokio::test]
async fn a_pod_is_removed_only_after_its_containers_are_reaped() {
    let (w, svc, pod) = world().await;
    let (a, _) = stopped(&w, &svc, &pod, "a").await;
    let b = svc.create(&pod, container_config("b")).await.unwrap();
    svc.start(&b).await.unwrap();
    svc.remove(&a).await.unwrap();
    assert!(svc.reaper.is_pending(&a));
    w.pods.remove_sandbox(&svc, &pod).await.unwrap();
    let calls = w.host.calls();
    let last_delete = calls
        .iter()
        .rposition(|c| c.starts_with("runtime.delete "))
        .unwrap();
    let pod_cgroup = calls
        .iter()
        .position(|c| c.starts_with("remove_cgroup_dirs "))
        .unwrap();
    assert!(last_delete < pod_cgroup, "{calls:#?}");
    for id in [&a, &b] {
        assert_gone(&w, &svc, id).await;
    }
}

#[tokio::test]
async fn a_directory_that_cannot_be_moved_out_is_removed_in_place() {
    use cri::ContainerEventType::*;
    let (w, svc, pod) = world().await;
    let (id, mut rx) = stopped(&w, &svc, &pod, "app").await;
    // Something in the way of the rename (a rename across filesystems
    // fails the same way).
    std::fs::create_dir_all(removing(&w, &id).join("in-the-way")).unwrap();
    svc.remove(&id).await.unwrap();
    // Removed before the answer, as before the reaper.
    assert!(!svc.reaper.is_pending(&id));
    assert!(!cdir(&w, &id).exists());
    assert!(w.host.state().mounts.is_empty());
    assert!(w.images.holders().is_empty());
    assert_eq!(drain(&mut rx), vec![ContainerDeletedEvent]);
    std::fs::remove_dir_all(removing(&w, &id)).unwrap();
    assert_gone(&w, &svc, &id).await;
}
