//! A trial container per runtime handler: whether the handler's runtime
//! can create a container in a pinned pod user namespace on an overlay of
//! idmapped layers, the way pods with `hostUsers: false` would run. Only a
//! handler that passes is reported with `user_namespaces: true`.
//!
//! The trial runs a real process to its end: the host's `touch /ok`, with the
//! host's `/usr` (and the top-level links into it) bound read-only into an
//! otherwise empty idmapped rootfs, so the runtime has joined the
//! namespaces, mounted through the idmap, pivoted, and executed a binary as
//! the pod's root. A runtime that only gets as far as `create` is not
//! counted as working. The runtime's state directory is opened to the
//! pod's root as for real pods (youki's init reaches its notify socket
//! there as that user).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gantry_cni::netns::Private;
use oci_spec::runtime::{
    LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    Spec,
};

use super::{idmap, pin, IdMap, Mappings};

/// Far above kubelet's ranges, like the probe's; never seen by a pod.
const TRIAL_HOST: u32 = 0xF100_0000;

fn namespace(typ: LinuxNamespaceType, path: Option<&PathBuf>) -> Result<LinuxNamespace, String> {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p.clone());
    }
    b.build().map_err(|e| e.to_string())
}

fn id_mapping(m: IdMap) -> Result<oci_spec::runtime::LinuxIdMapping, String> {
    LinuxIdMappingBuilder::default()
        .container_id(m.container)
        .host_id(m.host)
        .size(m.len)
        .build()
        .map_err(|e| e.to_string())
}

/// The OCI linux section of a container in the pod user namespace
/// `pinned`: runc 1.1 joins the namespace by its path but still needs the
/// mappings, to know which host ids own what it creates for the container.
pub fn linux_section(
    pinned: &pin::PinnedUserns,
    maps: &Mappings,
) -> Result<oci_spec::runtime::Linux, String> {
    let o = &pinned.others;
    LinuxBuilder::default()
        .namespaces(vec![
            namespace(LinuxNamespaceType::User, Some(&pinned.user))?,
            namespace(LinuxNamespaceType::Network, o.net.as_ref())?,
            namespace(LinuxNamespaceType::Ipc, o.ipc.as_ref())?,
            namespace(LinuxNamespaceType::Uts, o.uts.as_ref())?,
            namespace(LinuxNamespaceType::Pid, None)?,
            namespace(LinuxNamespaceType::Mount, None)?,
        ])
        .uid_mappings(vec![id_mapping(maps.uid)?])
        .gid_mappings(vec![id_mapping(maps.gid)?])
        .build()
        .map_err(|e| e.to_string())
}

/// Runs the trial for the runtime `binary` (with its global `args`) in a
/// scratch directory under `root`; answers why it fails, if it does.
/// Leaves no container, mount, namespace pin or file behind.
pub fn run(binary: &Path, args: &[String], root: &Path) -> Result<(), String> {
    // The trial opens the path to its scratch directory to the pod's root
    // (search permission for others) and gives the directories their modes
    // back when it is done, so a node without such pods keeps its state
    // root private (0700). Trials take turns: one's restore must not close
    // the path under another.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let n = super::next_scratch();
    let scratch = root.join(format!(".userns-trial-{}-{n}", std::process::id()));
    let modes: Vec<(std::path::PathBuf, u32)> = root
        .ancestors()
        .filter_map(|d| {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(d).ok()?;
            Some((d.to_path_buf(), m.permissions().mode() & 0o7777))
        })
        .collect();
    let _ = std::fs::remove_dir_all(&scratch);
    // Also the trial's cgroup: unique per trial, as trials run at once.
    let id = format!("gantry-userns-trial-{}-{n}", std::process::id());
    let mut pinned = None;
    let result = attempt(binary, args, &scratch, &id, &mut pinned);
    let _ = runtime(binary, args, &scratch)
        .args(["delete", "--force", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = rustix::mount::unmount(scratch.join("rootfs"), rustix::mount::UnmountFlags::DETACH);
    if let Some(p) = &pinned {
        pin::remove(p);
    }
    remove_cgroup(&id);
    let _ = std::fs::remove_dir_all(&scratch);
    for (d, mode) in modes {
        use std::os::unix::fs::PermissionsExt;
        let now = std::fs::metadata(&d).map(|m| m.permissions().mode() & 0o7777);
        if now.is_ok_and(|now| now != mode) {
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode));
        }
    }
    result
}

/// A runtime whose `create` failed may leave the trial's cgroup behind
/// (runsc does); it is empty, so rmdir in every hierarchy removes it.
fn remove_cgroup(id: &str) {
    let base = Path::new("/sys/fs/cgroup");
    let _ = std::fs::remove_dir(base.join(id));
    if let Ok(hierarchies) = std::fs::read_dir(base) {
        for h in hierarchies.flatten() {
            let _ = std::fs::remove_dir(h.path().join(id));
        }
    }
}

fn runtime(binary: &Path, args: &[String], scratch: &Path) -> Command {
    let mut c = Command::new(binary);
    c.args(args).arg("--root").arg(scratch.join("state"));
    c
}

fn attempt(
    binary: &Path,
    args: &[String],
    scratch: &Path,
    id: &str,
    pinned_out: &mut Option<pin::PinnedUserns>,
) -> Result<(), String> {
    let [lower, upper, work, rootfs, ns, bundle] =
        ["lower", "rw/upper", "rw/work", "rootfs", "ns", "bundle"].map(|d| scratch.join(d));
    for d in [&lower, &upper, &work, &rootfs, &ns, &bundle] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    for d in ["proc", "dev", "sys", "usr"] {
        std::fs::create_dir(lower.join(d)).map_err(|e| format!("creating {d}: {e}"))?;
    }
    let mut binds = vec![(PathBuf::from("/usr"), "/usr".to_string())];
    for top in ["bin", "lib", "lib64", "lib32", "sbin"] {
        let host = Path::new("/").join(top);
        match std::fs::read_link(&host) {
            // Merged /usr: the link leads into the bound /usr.
            Ok(target) => std::os::unix::fs::symlink(&target, lower.join(top))
                .map_err(|e| format!("linking {top}: {e}"))?,
            Err(_) if host.is_dir() => {
                std::fs::create_dir(lower.join(top)).map_err(|e| format!("creating {top}: {e}"))?;
                binds.push((host, format!("/{top}")));
            }
            Err(_) => {}
        }
    }
    let exe = ["/usr/bin/touch", "/bin/touch"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .ok_or("the host has no `touch` to run")?;
    let maps = Mappings {
        uid: IdMap {
            container: 0,
            host: TRIAL_HOST,
            len: 65536,
        },
        gid: IdMap {
            container: 0,
            host: TRIAL_HOST,
            len: 65536,
        },
    };
    let all = Private {
        net: true,
        ipc: true,
        uts: true,
    };
    let state = scratch.join("state");
    std::fs::create_dir_all(&state).map_err(|e| format!("creating {}: {e}", state.display()))?;
    for d in [&bundle, &state] {
        super::let_pod_root_through(d)
            .map_err(|e| format!("opening {} to the pod's root: {e}", d.display()))?;
    }
    let pinned = pin::create(&ns, &maps, all).map_err(|e| e.to_string())?;
    let pinned = pinned_out.insert(pinned);
    let userns = pin::open(&pinned.user).map_err(|e| e.to_string())?;
    idmap::overlay(
        &[lower.as_path()],
        &upper,
        &work,
        &rootfs,
        userns.as_fd(),
        &maps,
    )
    .map_err(|e| e.to_string())?;

    let mut spec = Spec::default();
    let mut process = spec
        .process()
        .clone()
        .ok_or("the default spec has no process")?;
    process.set_terminal(Some(false));
    process.set_args(Some(vec![exe.into(), "/ok".into()]));
    spec.set_process(Some(process));
    spec.set_hostname(None);
    let mut r = spec.root().clone().ok_or("the default spec has no root")?;
    r.set_path(rootfs.clone());
    r.set_readonly(Some(false));
    spec.set_root(Some(r));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for (host, dest) in &binds {
        mounts.push(
            oci_spec::runtime::MountBuilder::default()
                .destination(dest)
                .typ("bind")
                .source(host)
                .options(vec![
                    "rbind".into(),
                    "ro".into(),
                    "nosuid".into(),
                    "nodev".into(),
                ])
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    spec.set_mounts(Some(mounts));
    let mut linux = linux_section(pinned, &maps)?;
    linux.set_cgroups_path(Some(PathBuf::from("/").join(id)));
    spec.set_linux(Some(linux));
    spec.save(bundle.join("config.json"))
        .map_err(|e| e.to_string())?;

    let log = scratch.join("stderr");
    // create, start, then wait for the process to be gone: `run` in the
    // foreground is not used, as youki's can hang after its process exits.
    let step = |what: &str| -> Result<(), String> {
        let err =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let mut cmd = runtime(binary, args, scratch);
        match what {
            "create" => cmd.args(["create", "--bundle"]).arg(&bundle).arg(id),
            _ => cmd.arg(what).arg(id),
        };
        // No pipes: the runtime's init outlives `create` and would hold them.
        let status = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .status()
            .map_err(|e| format!("running {}: {e}", binary.display()))?;
        if status.success() {
            return Ok(());
        }
        let why = std::fs::read(&log).unwrap_or_default();
        let why = String::from_utf8_lossy(&why[..why.len().min(2048)])
            .trim()
            .to_string();
        Err(format!(
            "{} {what} failed ({status}): {why}",
            binary.display()
        ))
    };
    step("create")?;
    step("start")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = runtime(binary, args, scratch)
            .args(["state", id])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", binary.display()))?;
        let status = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_string));
        if status.as_deref() == Some("stopped") {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{}: the trial process did not finish in 10 s (state {status:?})",
                binary.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The process wrote as the pod's root through the rootfs.
    if upper.join("ok").exists() {
        Ok(())
    } else {
        Err(format!(
            "{}: the trial process ran but could not write its rootfs as the pod's root",
            binary.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trials of these tests run one at a time, so that one test's
    /// look for leftovers never sees another's trial in progress.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn find(name: &str) -> Option<PathBuf> {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        [
            PathBuf::from("/usr/sbin").join(name),
            PathBuf::from("/usr/bin").join(name),
            home.join(".cargo/bin").join(name),
        ]
        .into_iter()
        .find(|p| p.exists())
    }

    fn root() -> bool {
        crate::userns::test_as_root()
    }

    #[test]
    fn runc_passes_the_trial_and_nothing_is_left() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let runc = find("runc").expect("runc is not installed: apt-get install runc");
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("root");
        std::fs::create_dir(&private).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        run(&runc, &[], &private).unwrap();
        assert_eq!(std::fs::read_dir(&private).unwrap().count(), 0);
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o700, "the trial gave the directory its mode back");
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(dir.path().to_str().unwrap()));
    }

    #[test]
    fn a_runtime_that_cannot_run_it_is_reported_with_its_reason() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let why = run(Path::new("/bin/false"), &[], dir.path()).unwrap_err();
        assert!(why.contains("/bin/false create failed"), "{why}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// What the other handlers on this host do; informative, as each
    /// answer is the host's, and printed for the report.
    #[test]
    fn other_runtimes_answer_one_way_or_the_other() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        for name in ["youki", "crun", "runsc"] {
            let Some(bin) = find(name) else {
                eprintln!("{name}: not installed");
                continue;
            };
            let dir = tempfile::tempdir().unwrap();
            let verdict = run(&bin, &[], dir.path());
            eprintln!("{name}: {verdict:?}");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
            let trial = format!("gantry-userns-trial-{}-", std::process::id());
            for h in ["/sys/fs/cgroup", "/sys/fs/cgroup/memory"] {
                let left = std::fs::read_dir(h)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(&trial));
                assert!(!left, "{name} left a trial cgroup in {h}");
            }
        }
    }
}
