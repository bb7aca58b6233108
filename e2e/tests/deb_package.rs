//! The Debian package end to end, on this machine: built with `cargo deb`
//! from the workspace's debug binaries (no second build), installed with
//! `dpkg -i`, checked with the installed `gantry check`, the installed
//! `/usr/bin/gantry` started with the installed config (private paths
//! swapped in) and one pod run through it, then `dpkg --purge`, after which
//! no file of the package and none of its state may remain.
//!
//! It installs system-wide, so runs of it are serialised by a lock file,
//! and a package left installed by a failed run is purged first. cargo-deb
//! is required (`.ci/run` installs it): a missing one fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use gantry_e2e::daemon::Gantry;
use gantry_e2e::fixture::{
    busybox_container, create_and_start, logged_pod_config, remove_pod, run_pod, stop_pod,
};
use gantry_e2e::net::TestNetwork;
use gantry_e2e::oci::{ImageSpec, Layer, Pusher};
use gantry_e2e::registry::Registry;
use gantry_proto::v1::{ExecSyncRequest, ImageSpec as CriImageSpec, PullImageRequest};

const LOCK: &str = "/run/lock/gantry-deb-e2e.lock";

/// Paths the package or its maintainer scripts may create outside its
/// file list; each must be gone after the purge unless it was there before.
const STATE: [&str; 9] = [
    "/var/lib/gantry",
    "/run/gantry",
    "/var/lib/gantry-deb",
    "/etc/gantry",
    "/etc/cni/net.d/10-gantry.conflist",
    "/etc/crictl.yaml",
    "/etc/cni/net.d",
    "/etc/cni",
    "/etc/systemd/system/multi-user.target.wants/gantry.service",
];

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("$ {cmd:?}\n{text}");
    (out.status.success(), text)
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "gantry"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed"))
}

fn cargo_deb() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for home in ["CARGO_HOME", "HOME"] {
        if let Some(h) = std::env::var_os(home) {
            let h = PathBuf::from(h);
            dirs.push(if home == "HOME" {
                h.join(".cargo/bin")
            } else {
                h.join("bin")
            });
        }
    }
    dirs.into_iter()
        .map(|d| d.join("cargo-deb"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "cargo-deb is not installed: cargo install --locked cargo-deb, or run .ci/run once"
            )
        })
}

/// Purges the package when dropped, so that a failing test leaves the
/// machine as it found it.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if installed() {
            let _ = run(Command::new("dpkg").args(["--purge", "gantry"]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_runs_a_pod_and_purges_clean() {
    gantry_e2e::require_host();
    let lock = std::fs::File::create(LOCK).expect("creating the test's lock file");
    // Blocks until other runs of this test end.
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .expect("locking the test's lock file");
    if installed() {
        println!("a gantry package is installed (a failed run's?): purging it first");
        let (ok, out) = run(Command::new("dpkg").args(["--purge", "gantry"]));
        assert!(ok, "purging the leftover package: {out}");
    }
    let before: Vec<bool> = STATE.iter().map(|p| Path::new(p).exists()).collect();

    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out_dir = tempfile::tempdir().unwrap();
    // The debug binaries the README's test command built: --no-build, and
    // the dev profile, so that no release build is started.
    let (ok, out) = run(Command::new(cargo_deb())
        .current_dir(&workspace)
        .args([
            "deb",
            "-p",
            "gantry",
            "--no-build",
            "--profile",
            "dev",
            "--strip",
            "--fast",
            "-o",
        ])
        .arg(out_dir.path()));
    assert!(ok, "cargo deb: {out}");
    let deb = std::fs::read_dir(out_dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb made no .deb");

    let _purge = Purge;
    let (ok, out) = run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(ok, "dpkg -i: {out}");
    let (_, list) = run(Command::new("dpkg").args(["-L", "gantry"]));
    let files: Vec<PathBuf> = list
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    for want in [
        "/usr/bin/gantry",
        "/usr/bin/gantry-monitor",
        "/usr/bin/gantry-exec",
        "/lib/systemd/system/gantry.service",
        "/etc/gantry/gantry.yaml",
        "/usr/share/gantry/10-gantry.conflist",
        "/usr/share/gantry/crictl.yaml",
        "/usr/share/doc/gantry/README.md",
    ] {
        assert!(
            files.contains(&PathBuf::from(want)),
            "{want} not installed: {list}"
        );
    }
    let (_, conffiles) = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "gantry"]));
    assert!(conffiles.contains("/etc/gantry/gantry.yaml"), "{conffiles}");
    let unit = std::fs::read_to_string("/lib/systemd/system/gantry.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/gantry "), "{unit}");
    // The default network went in only where there was none.
    if !before[6] {
        assert!(Path::new("/etc/cni/net.d/10-gantry.conflist").is_file());
    }

    let (ok, out) =
        run(Command::new("/usr/bin/gantry").args(["--config", "/etc/gantry/gantry.yaml", "check"]));
    assert!(ok, "the installed gantry check failed: {out}");

    // The installed config with this test's own paths, registry and CNI
    // network swapped in, so that nothing clashes with other tests.
    let registry = Registry::start().await;
    let img = ImageSpec::new(vec![Layer::busybox()])
        .label("deb-package")
        .build();
    Pusher::new(&registry.addr, None)
        .image("e2e/busybox", &["1"], &img)
        .await;
    let image = format!("{}/e2e/busybox:1", registry.addr);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("state/gantry.sock");
    let metrics_addr = format!("127.0.0.1:{}", gantry_e2e::free_port());
    let installed_yaml = std::fs::read_to_string("/etc/gantry/gantry.yaml").unwrap();
    let mut config = installed_yaml.clone();
    for (from, to) in [
        (
            "root: /var/lib/gantry\n".to_string(),
            format!("root: {}\n", dir.path().join("root").display()),
        ),
        (
            "state_dir: /run/gantry\n".to_string(),
            format!("state_dir: {}\n", dir.path().join("state").display()),
        ),
        (
            "socket: /run/gantry/gantry.sock\n".to_string(),
            format!("socket: {}\n", socket.display()),
        ),
        (
            "metrics_address: 127.0.0.1:9480\n".to_string(),
            format!("metrics_address: {metrics_addr}\n"),
        ),
        (
            "  conf_dir: /etc/cni/net.d\n".to_string(),
            format!("  conf_dir: {}\n", dir.path().join("cni").display()),
        ),
        (
            "  registries: {}\n".to_string(),
            format!(
                "  registries:\n    \"{}\":\n      insecure: true\n",
                registry.addr
            ),
        ),
    ] {
        assert!(
            config.contains(&from),
            "the installed config lacks {from:?}"
        );
        config = config.replacen(&from, &to, 1);
    }
    let net = TestNetwork::create(&dir.path().join("cni"), &dir.path().join("ipam"));
    let mut g = Gantry::launch(
        PathBuf::from("/usr/bin/gantry"),
        dir.path(),
        &config,
        socket,
        metrics_addr,
    )
    .await;
    g.images()
        .await
        .pull_image(PullImageRequest {
            image: Some(CriImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("pull through the installed gantry: {e}"));
    let mut rt = g.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pod_config = logged_pod_config(logs.path(), "deb-pod");
    let pod = run_pod(&mut rt, &pod_config).await;
    let ctr = create_and_start(
        &mut rt,
        &pod,
        &pod_config,
        busybox_container(&image, "deb", "sleep 600"),
    )
    .await;
    let exec = rt
        .exec_sync(ExecSyncRequest {
            container_id: ctr,
            cmd: vec!["echo".into(), "packaged".into()],
            timeout: 10,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync through the installed gantry-exec: {e}"))
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), "packaged");
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
    drop(rt);
    assert!(
        g.stop().success(),
        "gantry did not stop cleanly:\n{}",
        g.log()
    );
    drop(net);

    let (ok, out) = run(Command::new("dpkg").args(["--purge", "gantry"]));
    assert!(ok, "dpkg --purge: {out}");
    assert!(!installed(), "still installed after the purge");
    let left: Vec<&PathBuf> = files.iter().filter(|f| f.exists()).collect();
    assert!(
        left.is_empty(),
        "package files left after the purge: {left:?}"
    );
    for (path, existed) in STATE.iter().zip(&before) {
        assert_eq!(
            Path::new(path).exists(),
            *existed,
            "{path}: existed before the install: {existed}, after the purge: {}",
            !existed
        );
    }
}
