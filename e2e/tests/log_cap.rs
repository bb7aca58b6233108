//! Container log caps end to end: a container writing far more than the
//! node's `runtime.log_max_bytes` keeps running while its log stops at the
//! cap (whole CRI lines, and one saying why), the dropped bytes are
//! counted, and kubelet's rotation (rename, ReopenContainerLog) starts a
//! new file that takes output again. A pod's annotation can lower the cap
//! but not raise it, and a full disk under the log only drops output.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_e2e::fixture::{create_and_start, remove_pod, run_pod, wait_exited, BusyboxEnv};
use gantry_e2e::prom::Scrape;
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    ContainerStatusRequest, ExecSyncRequest, ReopenContainerLogRequest, RunPodSandboxRequest,
};
use tonic::transport::Channel;

const CAP: u64 = 1 << 20;
const ANNOTATION: &str = "gantry.dev/log-max-bytes";
/// About 10 MiB of CRI log lines, 17 bytes of output each (ending on a
/// whole line).
const FLOOD: &str = "yes 0123456789abcdef | head -c 2999990";

async fn setup() -> BusyboxEnv {
    BusyboxEnv::start("log-cap", &format!("runtime:\n  log_max_bytes: {CAP}\n")).await
}

async fn exec_ok(rt: &mut RuntimeServiceClient<Channel>, id: &str, script: &str) -> bool {
    rt.exec_sync(ExecSyncRequest {
        container_id: id.into(),
        cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
        timeout: 10,
    })
    .await
    .map(|r| r.into_inner().exit_code == 0)
    .unwrap_or(false)
}

async fn log_path(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> PathBuf {
    rt.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("ContainerStatus")
    .into_inner()
    .status
    .expect("a status")
    .log_path
    .into()
}

/// Checks every line of a CRI log is whole; returns the lines.
fn cri_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "a line was cut");
    text.lines()
        .map(|l| {
            let p: Vec<&str> = l.splitn(4, ' ').collect();
            assert!(
                p.len() == 4
                    && p[0].ends_with('Z')
                    && ["stdout", "stderr"].contains(&p[1])
                    && ["F", "P"].contains(&p[2]),
                "not a CRI log line: {l:?}"
            );
            l.to_string()
        })
        .collect()
}

async fn dropped(env: &BusyboxEnv) -> f64 {
    Scrape::parse(&env.g.metrics().await).sum("gantry_container_log_dropped_bytes_total", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_container_is_capped_counted_and_rotated() {
    let env = setup().await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "chatty").await;
    let script = format!(
        "{FLOOD}; touch /tmp/wrote; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo after rotation; sleep 300"
    );
    let id = create_and_start(&mut rt, &pod, &pc, env.container("chatty", &script)).await;
    // Past the cap the container runs on: its output is drained, not
    // blocked.
    let mut wrote = false;
    for _ in 0..300 {
        if exec_ok(&mut rt, &id, "test -e /tmp/wrote").await {
            wrote = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(wrote, "the container did not get past its flood of output");
    let log = log_path(&mut rt, &id).await;
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size <= CAP && size > CAP - 64 * 1024, "{size} bytes");
    let lines = cri_lines(&log);
    let notices: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("reached its size cap"))
        .collect();
    assert_eq!(notices.len(), 1, "one line says why output stops");
    assert_eq!(lines.last(), notices.first().copied());
    // The monitor reports its count at most once a second.
    let mut counted = 0.0;
    for _ in 0..50 {
        counted = dropped(&env).await;
        if counted > 3_000_000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(counted > 3_000_000.0, "{counted} bytes counted as dropped");

    // Kubelet's rotation: rename, reopen; the new file takes output.
    let rotated = log.with_file_name("chatty.log.20261203-120000");
    std::fs::rename(&log, &rotated).unwrap();
    rt.reopen_container_log(ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .expect("ReopenContainerLog");
    assert!(exec_ok(&mut rt, &id, "touch /tmp/go").await);
    let mut fresh = Vec::new();
    for _ in 0..100 {
        fresh = cri_lines(&log);
        if !fresh.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert!(fresh[0].ends_with(" stdout F after rotation"), "{fresh:?}");
    assert_eq!(std::fs::metadata(&rotated).unwrap().len(), size);
    assert_eq!(dropped(&env).await, counted, "nothing more was dropped");
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_can_lower_its_log_cap_but_not_raise_it() {
    let env = setup().await;
    let mut rt = env.g.runtime().await;
    let mut pods = Vec::new();
    for (name, ask, limit) in [("lower", "100Ki", 100 << 10), ("higher", "10Gi", CAP)] {
        let mut pc = env.pod_config(name);
        pc.annotations.insert(ANNOTATION.into(), ask.into());
        let pod = run_pod(&mut rt, &pc).await;
        let id = create_and_start(&mut rt, &pod, &pc, env.container(name, FLOOD)).await;
        let s = wait_exited(&mut rt, &id).await;
        assert_eq!(s.exit_code, 0, "{s:?}");
        let size = std::fs::metadata(&s.log_path).unwrap().len();
        assert!(size <= limit && size > limit / 2, "{name}: {size} bytes");
        cri_lines(Path::new(&s.log_path));
        pods.push(pod);
    }
    for bad in ["1k", "0", "lots"] {
        let mut pc = env.pod_config("bad");
        pc.annotations.insert(ANNOTATION.into(), bad.into());
        let e = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}: {e}");
    }
    for pod in pods {
        remove_pod(&mut rt, &pod).await;
    }
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&at).unwrap();
        let opts = std::ffi::CString::new(format!("size={size}")).unwrap();
        rustix_mount(&at, &opts);
        Tmpfs(at)
    }
}

fn rustix_mount(at: &Path, opts: &std::ffi::CStr) {
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mounting a new tmpfs on a directory of the test's own.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    assert_eq!(r, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: unmounting what `mount` mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_log_drops_output_and_the_container_runs_on() {
    let env = setup().await;
    let mut rt = env.g.runtime().await;
    let disk = Tmpfs::mount(env.logs.path().join("tiny"), "256k");
    let mut pc = env.pod_config("full");
    pc.log_directory = disk.0.join("full").display().to_string();
    let pod = run_pod(&mut rt, &pc).await;
    let id = create_and_start(
        &mut rt,
        &pod,
        &pc,
        env.container("full", &format!("{FLOOD}; echo done >/tmp/done")),
    )
    .await;
    let s = wait_exited(&mut rt, &id).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");
    let size = std::fs::metadata(&s.log_path).unwrap().len();
    assert!(size <= 256 << 10, "{size}");
    let mut counted = 0.0;
    for _ in 0..50 {
        counted = dropped(&env).await;
        if counted > 3_000_000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(counted > 3_000_000.0, "{counted} bytes counted as dropped");
    remove_pod(&mut rt, &pod).await;
    drop(disk);
}
