//! Pod-level cgroups: where a pod's cgroup is, making and removing it, and
//! the cgroup paths of the containers below it, for both cgroup drivers.
//!
//! With the `cgroupfs` driver the pod's cgroup is the sandbox config's
//! `cgroup_parent` (kubelet passes the pod cgroup it manages, such as
//! `/kubepods/besteffort/pod<uid>`), or `/gantry/<pod id>` when none is
//! given. gantry creates it in every mounted hierarchy (each v1 controller,
//! the v2 unified one, or both on a hybrid host) if it is missing, and
//! removes only the pod directories it created: never a pod cgroup it was
//! handed that already existed, nor the parents above it (`/gantry`,
//! `/kubepods/...`), which other pods share. Containers live at
//! `<pod cgroup>/<container id>`.
//!
//! With the `systemd` driver the pod's cgroup is a slice (`cgroup_parent`,
//! such as `kubepods-besteffort-pod123.slice`, or `gantry-pod<id>.slice`),
//! containers get the OCI path `<slice>:gantry:<container id>` and runc is
//! run with `--systemd-cgroup`, so systemd creates and removes the units;
//! gantry makes no directories then, and the pod init stays where it is,
//! since a slice cannot hold processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::CgroupDriver;
use crate::error::{Error, Result};

/// The scope prefix of container units under the systemd driver.
pub const SYSTEMD_PREFIX: &str = "gantry";

/// The v2 leaf holding a pod's init: a cgroup2 cgroup whose children get
/// controllers enabled may hold no processes itself.
pub(crate) const V2_INIT_LEAF: &str = "pod-init";

/// Checks a sandbox's `cgroup_parent` against the driver's syntax.
pub fn validate_parent(driver: CgroupDriver, parent: &str) -> Result<()> {
    if parent.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "cgroup_parent {parent:?} {why}"
        )))
    };
    if parent.contains(['\0', '\n']) {
        return bad("contains a NUL or newline");
    }
    match driver {
        CgroupDriver::Cgroupfs => {
            if !parent.starts_with('/') {
                return bad("must be an absolute path with the cgroupfs driver");
            }
            if parent.split('/').any(|c| c == ".." || c == ".") {
                return bad("must not contain . or .. components");
            }
        }
        CgroupDriver::Systemd => {
            let Some(stem) = parent.strip_suffix(".slice") else {
                return bad("must be a systemd slice name ending in .slice");
            };
            if stem.is_empty()
                || parent.contains('/')
                || parent.contains("..")
                || stem.starts_with('-')
                || stem.ends_with('-')
                || stem.contains("--")
                || !stem
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
            {
                return bad("is not a valid systemd slice name");
            }
        }
    }
    Ok(())
}

/// The pod's cgroup: the given parent, or gantry's default for the pod.
pub fn pod_cgroup(driver: CgroupDriver, parent: &str, pod_id: &str) -> String {
    if !parent.is_empty() {
        return match driver {
            CgroupDriver::Cgroupfs => parent.trim_end_matches('/').to_string(),
            CgroupDriver::Systemd => parent.to_string(),
        };
    }
    match driver {
        CgroupDriver::Cgroupfs => format!("/gantry/{pod_id}"),
        CgroupDriver::Systemd => format!("gantry-pod{pod_id}.slice"),
    }
}

/// The OCI `linux.cgroupsPath` of a container in a pod's cgroup.
pub fn container_path(driver: CgroupDriver, pod_cgroup: &str, container_id: &str) -> String {
    match driver {
        CgroupDriver::Cgroupfs => format!("{}/{container_id}", pod_cgroup.trim_end_matches('/')),
        CgroupDriver::Systemd => format!("{pod_cgroup}:{SYSTEMD_PREFIX}:{container_id}"),
    }
}

/// Where systemd puts a slice in the cgroup tree: `a-b.slice` is
/// `/a.slice/a-b.slice`.
pub fn expand_slice(slice: &str) -> String {
    let stem = slice.strip_suffix(".slice").unwrap_or(slice);
    if stem.is_empty() || stem == "-" {
        return "/".into();
    }
    let mut out = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push('/');
        out.push_str(&prefix);
        out.push_str(".slice");
    }
    out
}

/// A pod's cgroup as a path relative to the hierarchy roots.
pub fn pod_fs_path(driver: CgroupDriver, pod_cgroup: &str) -> String {
    match driver {
        CgroupDriver::Cgroupfs => pod_cgroup.to_string(),
        CgroupDriver::Systemd => expand_slice(pod_cgroup),
    }
}

/// An OCI cgroupsPath as a path relative to the hierarchy roots, for
/// reading statistics: `slice:prefix:name` becomes the scope systemd makes.
pub fn fs_path(cgroups_path: &str) -> String {
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    match parts.as_slice() {
        [slice, prefix, name] if !cgroups_path.starts_with('/') => {
            let scope = if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            format!("{}/{scope}", expand_slice(slice).trim_end_matches('/'))
        }
        _ => cgroups_path.to_string(),
    }
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// cgroup2 (the unified hierarchy), rather than a v1 one.
    pub v2: bool,
}

/// The cgroup hierarchies mounted on the host, from a mountinfo text.
pub fn hierarchies_in(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for m in gantry_common::mountinfo::parse(mountinfo) {
        let v2 = match m.fs_type.as_str() {
            "cgroup" => false,
            "cgroup2" => true,
            _ => continue,
        };
        let mount = m.mount_point;
        if !out.iter().any(|h| h.mount == mount) {
            out.push(Hierarchy { mount, v2 });
        }
    }
    out
}

/// The hierarchies mounted at the usual place in our mount namespace
/// (bind mounts elsewhere are someone else's view of the same trees).
pub fn hierarchies() -> Vec<Hierarchy> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| hierarchies_in(&m))
        .unwrap_or_default()
        .into_iter()
        .filter(|h| h.mount.starts_with("/sys/fs/cgroup"))
        .collect()
}

fn rel(cgroup: &str) -> &str {
    cgroup.trim_start_matches('/')
}

/// Creates a pod's cgroup in each hierarchy. `created` is told, once and
/// before anything is made, every directory that does not exist yet (so a
/// crash still knows what to remove, and what existed is never removed).
pub fn create(
    hierarchies: &[Hierarchy],
    cgroup: &str,
    created: impl FnOnce(&[PathBuf]) -> Result<()>,
) -> Result<()> {
    let mut missing = Vec::new();
    for h in hierarchies {
        let dir = h.mount.join(rel(cgroup));
        missing.push(dir.clone());
        if h.v2 {
            missing.push(dir.join(V2_INIT_LEAF));
        }
    }
    missing.retain(|d| !d.exists());
    created(&missing)?;
    for d in &missing {
        std::fs::create_dir_all(d).map_err(Error::io(format!("creating {}", d.display())))?;
    }
    for h in hierarchies.iter().filter(|h| !h.v2) {
        inherit_cpuset(&h.mount, &h.mount.join(rel(cgroup)))?;
    }
    Ok(())
}

/// A new v1 cpuset cgroup starts with no CPUs and no memory nodes, and no
/// process may join it until it has some: each directory from the root
/// down takes its parent's where it has none.
fn inherit_cpuset(mount: &Path, dir: &Path) -> Result<()> {
    if !mount.join("cpuset.cpus").exists() {
        return Ok(());
    }
    let Ok(rel) = dir.strip_prefix(mount) else {
        return Ok(());
    };
    let mut parent = mount.to_path_buf();
    for part in rel.components() {
        let child = parent.join(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let have = std::fs::read_to_string(child.join(file))
                .map_err(Error::io(format!("reading {}", child.join(file).display())))?;
            if have.trim().is_empty() {
                let from = std::fs::read_to_string(parent.join(file)).map_err(Error::io(
                    format!("reading {}", parent.join(file).display()),
                ))?;
                std::fs::write(child.join(file), from.trim())
                    .map_err(Error::io(format!("writing {}", child.join(file).display())))?;
            }
        }
        parent = child;
    }
    Ok(())
}

/// The cgroup writes that pod-level resources (UpdatePodSandboxResources)
/// ask for, as (v1 file, v2 file, v1 value, v2 value), in the order they
/// must be written. Fields a cgroup cannot take for a whole pod are refused
/// before anything is written.
pub fn pod_resource_writes(
    r: &gantry_proto::v1::LinuxContainerResources,
) -> Result<Vec<(&'static str, &'static str, String, String)>> {
    let unsupported = [
        ("hugepage_limits", !r.hugepage_limits.is_empty()),
        ("unified", !r.unified.is_empty()),
        (
            "memory_swap_limit_in_bytes",
            r.memory_swap_limit_in_bytes != 0,
        ),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(Error::Unimplemented(format!(
            "UpdatePodSandboxResources: {field} is not applied to pod cgroups by gantry"
        )));
    }
    if r.cpu_shares < 0 || r.cpu_period < 0 || r.memory_limit_in_bytes < 0 {
        return Err(Error::InvalidArgument(
            "pod resources: cpu_shares, cpu_period and memory_limit_in_bytes cannot be negative"
                .into(),
        ));
    }
    let mut w = Vec::new();
    if r.cpu_shares > 0 {
        // The v2 weight kubelet and runc derive from shares.
        let shares = r.cpu_shares.clamp(2, 262_144);
        let weight = 1 + ((shares - 2) * 9999) / 262_142;
        w.push((
            "cpu.shares",
            "cpu.weight",
            shares.to_string(),
            weight.to_string(),
        ));
    }
    if r.cpu_period > 0 || r.cpu_quota != 0 {
        let period = if r.cpu_period > 0 {
            r.cpu_period
        } else {
            100_000
        };
        let quota = if r.cpu_quota > 0 { r.cpu_quota } else { -1 };
        let v2_quota = if quota > 0 {
            quota.to_string()
        } else {
            "max".into()
        };
        w.push((
            "cpu.cfs_period_us",
            "cpu.max",
            period.to_string(),
            format!("{v2_quota} {period}"),
        ));
        w.push(("cpu.cfs_quota_us", "", quota.to_string(), String::new()));
    }
    if r.memory_limit_in_bytes > 0 {
        let m = r.memory_limit_in_bytes.to_string();
        w.push(("memory.limit_in_bytes", "memory.max", m.clone(), m));
    }
    if !r.cpuset_cpus.is_empty() {
        w.push((
            "cpuset.cpus",
            "cpuset.cpus",
            r.cpuset_cpus.clone(),
            r.cpuset_cpus.clone(),
        ));
    }
    if !r.cpuset_mems.is_empty() {
        w.push((
            "cpuset.mems",
            "cpuset.mems",
            r.cpuset_mems.clone(),
            r.cpuset_mems.clone(),
        ));
    }
    Ok(w)
}

/// Applies pod-level resources to a pod's cgroup in every hierarchy whose
/// directory has the controller's file. A write the kernel refuses, or a
/// resource no hierarchy has a controller for, is an error naming it.
pub fn apply_pod_resources(
    hierarchies: &[Hierarchy],
    cgroup: &str,
    r: &gantry_proto::v1::LinuxContainerResources,
) -> Result<()> {
    let writes = pod_resource_writes(r)?;
    for (v1_file, v2_file, v1_value, v2_value) in &writes {
        let mut applied = false;
        for h in hierarchies {
            let (file, value) = if h.v2 {
                (v2_file, v2_value)
            } else {
                (v1_file, v1_value)
            };
            if file.is_empty() {
                continue;
            }
            let path = h.mount.join(rel(cgroup)).join(file);
            if !path.exists() {
                continue;
            }
            std::fs::write(&path, value).map_err(Error::io(format!(
                "writing {value:?} to {}",
                path.display()
            )))?;
            applied = true;
        }
        // cpu.cfs_quota_us rides on cpu.max in v2: judged with the period.
        if !applied && !v2_file.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "pod resources: no cgroup controller on this host takes {v1_file}"
            )));
        }
    }
    Ok(())
}

/// Moves a process into the pod's cgroup in every hierarchy (into its
/// init leaf on cgroup2).
pub fn enter(hierarchies: &[Hierarchy], cgroup: &str, pid: i32) -> Result<()> {
    for h in hierarchies {
        let mut dir = h.mount.join(rel(cgroup));
        if h.v2 {
            dir.push(V2_INIT_LEAF);
        }
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .map_err(Error::io(format!("moving {pid} into {}", procs.display())))?;
    }
    Ok(())
}

/// Removes directories gantry created, deepest first. A cgroup whose last
/// process is still exiting refuses rmdir for a moment, so that is retried
/// briefly. Directories already gone count as removed.
pub fn remove(dirs: &[PathBuf]) -> std::result::Result<(), String> {
    let mut dirs = dirs.to_vec();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let mut failed = Vec::new();
    // One budget for the whole call, not one per hierarchy: a cgroup that
    // stays busy (a process that will not die, a child left behind) is
    // busy in every hierarchy, and daemon start-up waits on this.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    for d in &dirs {
        loop {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    failed.push(format!("{}: {e}", d.display()));
                    break;
                }
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// The cgroup2 path (relative to the hierarchy's root) in a
/// `/proc/<pid>/cgroup` text: its `0::` line.
pub fn v2_path_in(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_start_matches('/'))
}

/// SIGKILLs every process of a container's cgroup at once through
/// cgroup2's `cgroup.kill` (Linux 5.14), on a pure cgroup2 host or in a
/// hybrid host's unified hierarchy. `init_cgroups` is the container init's
/// `/proc/<pid>/cgroup`: the kill happens only if the init is in that very
/// cgroup, so that a runtime keeping its processes elsewhere (a sandboxed
/// one, or one that joins only the v1 hierarchies) or a PID reused since
/// the record was written is left to the runtime's own kill.
///
/// `Ok(false)` when it does not apply: no cgroup2 hierarchy, the init
/// elsewhere, or a kernel without `cgroup.kill`.
pub fn kill_all(
    hierarchies: &[Hierarchy],
    cgroup: &str,
    init_cgroups: &str,
) -> std::io::Result<bool> {
    let rel = rel(cgroup).trim_end_matches('/');
    if rel.is_empty() || v2_path_in(init_cgroups) != Some(rel) {
        return Ok(false);
    }
    let Some(v2) = hierarchies.iter().find(|h| h.v2) else {
        return Ok(false);
    };
    let file = v2.mount.join(rel).join("cgroup.kill");
    // Never created: a missing file is an old kernel (or no such cgroup).
    let mut f = match std::fs::OpenOptions::new().write(true).open(&file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    std::io::Write::write_all(&mut f, b"1")?;
    Ok(true)
}

/// Whether systemd runs as the init system (the test libsystemd uses).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_checked_per_driver() {
        use CgroupDriver::*;
        for ok in ["", "/kubepods/besteffort/pod1", "/gantry/"] {
            validate_parent(Cgroupfs, ok).unwrap();
        }
        for bad in ["kubepods", "/a/../b", "/a/./b", "/..", "/a\n"] {
            assert!(validate_parent(Cgroupfs, bad).is_err(), "{bad:?} accepted");
        }
        for ok in ["", "kubepods-besteffort-pod123.slice", "system.slice"] {
            validate_parent(Systemd, ok).unwrap();
        }
        for bad in [
            "/kubepods/pod1",
            "kubepods",
            ".slice",
            "a/b.slice",
            "a..b.slice",
            "-a.slice",
            "a--b.slice",
            "a b.slice",
        ] {
            assert!(validate_parent(Systemd, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn paths_follow_the_driver() {
        use CgroupDriver::*;
        assert_eq!(pod_cgroup(Cgroupfs, "", "p1"), "/gantry/p1");
        assert_eq!(
            pod_cgroup(Cgroupfs, "/kubepods/pod1/", "p1"),
            "/kubepods/pod1"
        );
        assert_eq!(pod_cgroup(Systemd, "", "p1"), "gantry-podp1.slice");
        assert_eq!(
            container_path(Cgroupfs, "/kubepods/pod1", "c1"),
            "/kubepods/pod1/c1"
        );
        assert_eq!(
            container_path(Systemd, "kubepods-besteffort-pod123.slice", "c1"),
            "kubepods-besteffort-pod123.slice:gantry:c1"
        );
        assert_eq!(
            expand_slice("kubepods-besteffort-pod123.slice"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod123.slice"
        );
        assert_eq!(expand_slice("-.slice"), "/");
        assert_eq!(
            fs_path("kubepods-pod1.slice:gantry:c1"),
            "/kubepods.slice/kubepods-pod1.slice/gantry-c1.scope"
        );
        assert_eq!(fs_path("/gantry/p1/c1"), "/gantry/p1/c1");
    }

    #[test]
    fn hierarchies_come_from_mountinfo() {
        let info = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:9 - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:50 / /proc rw - proc proc rw
";
        assert_eq!(
            hierarchies_in(info),
            vec![
                Hierarchy {
                    mount: "/sys/fs/cgroup/cpu".into(),
                    v2: false
                },
                Hierarchy {
                    mount: "/sys/fs/cgroup/systemd".into(),
                    v2: false
                },
                Hierarchy {
                    mount: "/sys/fs/cgroup/unified".into(),
                    v2: true
                },
            ]
        );
    }

    /// Creation on plain directories standing in for hierarchies: only
    /// missing directories are reported, and removal takes only those.
    #[test]
    fn pod_resources_become_cgroup_writes() {
        let r = gantry_proto::v1::LinuxContainerResources {
            cpu_shares: 512,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        let w = pod_resource_writes(&r).unwrap();
        let v1: Vec<(&str, &str)> = w.iter().map(|(f, _, v, _)| (*f, v.as_str())).collect();
        assert_eq!(
            v1,
            [
                ("cpu.shares", "512"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000"),
                ("memory.limit_in_bytes", "67108864"),
                ("cpuset.cpus", "0"),
            ]
        );
        assert_eq!(w[0].3, "20");
        assert_eq!(w[1].3, "50000 100000");
        // No quota: unlimited.
        let w = pod_resource_writes(&gantry_proto::v1::LinuxContainerResources {
            cpu_period: 100_000,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(w[0].3, "max 100000");
        assert_eq!(w[1].2, "-1");
        assert!(pod_resource_writes(&Default::default()).unwrap().is_empty());
        let swap = gantry_proto::v1::LinuxContainerResources {
            memory_swap_limit_in_bytes: 1,
            ..Default::default()
        };
        assert!(
            matches!(pod_resource_writes(&swap), Err(Error::Unimplemented(m)) if m.contains("swap"))
        );
        let negative = gantry_proto::v1::LinuxContainerResources {
            memory_limit_in_bytes: -5,
            ..Default::default()
        };
        assert!(matches!(
            pod_resource_writes(&negative),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn pod_resources_are_written_where_the_controller_is() {
        let root = tempfile::tempdir().unwrap();
        let cpu = root.path().join("cpu");
        let memory = root.path().join("memory");
        for (h, file) in [(&cpu, "cpu.shares"), (&memory, "memory.limit_in_bytes")] {
            std::fs::create_dir_all(h.join("pod")).unwrap();
            std::fs::write(h.join("pod").join(file), "0").unwrap();
        }
        let hs = [
            Hierarchy {
                mount: cpu.clone(),
                v2: false,
            },
            Hierarchy {
                mount: memory.clone(),
                v2: false,
            },
        ];
        let r = gantry_proto::v1::LinuxContainerResources {
            cpu_shares: 300,
            memory_limit_in_bytes: 1 << 30,
            ..Default::default()
        };
        apply_pod_resources(&hs, "/pod", &r).unwrap();
        assert_eq!(
            std::fs::read_to_string(cpu.join("pod/cpu.shares")).unwrap(),
            "300"
        );
        assert_eq!(
            std::fs::read_to_string(memory.join("pod/memory.limit_in_bytes")).unwrap(),
            (1u64 << 30).to_string()
        );
        assert!(!cpu.join("pod/memory.limit_in_bytes").exists());
        // A controller no hierarchy has.
        let cpuset = gantry_proto::v1::LinuxContainerResources {
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        assert!(matches!(
            apply_pod_resources(&hs, "/pod", &cpuset),
            Err(Error::FailedPrecondition(m)) if m.contains("cpuset.cpus")
        ));
    }

    #[test]
    fn only_created_directories_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let hs = vec![
            Hierarchy {
                mount: d.path().join("memory"),
                v2: false,
            },
            Hierarchy {
                mount: d.path().join("unified"),
                v2: true,
            },
        ];
        // The parent exists in the memory hierarchy already (kubelet's).
        std::fs::create_dir_all(d.path().join("memory/kubepods/pod1")).unwrap();
        let mut made = Vec::new();
        create(&hs, "/kubepods/pod1", |dirs| {
            made.extend_from_slice(dirs);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            made,
            vec![
                d.path().join("unified/kubepods/pod1"),
                d.path().join("unified/kubepods/pod1/pod-init"),
            ]
        );
        remove(&made).unwrap();
        assert!(d.path().join("memory/kubepods/pod1").is_dir());
        // A cpuset hierarchy hands CPUs and nodes down to new cgroups.
        let cs = d.path().join("cpuset");
        std::fs::create_dir_all(cs.join("gantry")).unwrap();
        std::fs::write(cs.join("cpuset.cpus"), "0-3\n").unwrap();
        std::fs::write(cs.join("cpuset.mems"), "0\n").unwrap();
        for f in ["cpuset.cpus", "cpuset.mems"] {
            std::fs::write(cs.join("gantry").join(f), "\n").unwrap();
            std::fs::create_dir_all(cs.join("gantry/p1")).unwrap();
            std::fs::write(cs.join("gantry/p1").join(f), "").unwrap();
        }
        inherit_cpuset(&cs, &cs.join("gantry/p1")).unwrap();
        assert_eq!(
            std::fs::read_to_string(cs.join("gantry/p1/cpuset.cpus")).unwrap(),
            "0-3"
        );
        assert_eq!(
            std::fs::read_to_string(cs.join("gantry/cpuset.mems")).unwrap(),
            "0"
        );
        assert!(!d.path().join("unified/kubepods/pod1").exists());
        // Repeating is fine.
        remove(&made).unwrap();
    }

    #[test]
    fn a_container_cgroup_is_killed_only_where_its_init_is() {
        let root = tempfile::tempdir().unwrap();
        let unified = root.path().join("unified");
        let pids = root.path().join("pids");
        let dir = unified.join("gantry/pod1/c1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(pids.join("gantry/pod1/c1")).unwrap();
        std::fs::write(dir.join("cgroup.kill"), "").unwrap();
        let hybrid = [
            Hierarchy {
                mount: pids.clone(),
                v2: false,
            },
            Hierarchy {
                mount: unified.clone(),
                v2: true,
            },
        ];
        let init_in = |path: &str| format!("8:pids:/gantry/pod1/c1\n0::{path}\n");
        let written = || std::fs::read_to_string(dir.join("cgroup.kill")).unwrap();

        // The init in the pod's cgroup, in another container's, or only in
        // the v1 hierarchies: nothing is killed.
        for other in ["/gantry/pod1", "/gantry/pod1/c2", "/"] {
            assert!(!kill_all(&hybrid, "/gantry/pod1/c1", &init_in(other)).unwrap());
        }
        assert!(!kill_all(&hybrid, "/gantry/pod1/c1", "8:pids:/gantry/pod1/c1\n").unwrap());
        assert!(!kill_all(&hybrid, "", &init_in("/")).unwrap());
        assert_eq!(written(), "");
        // cgroup v1 alone has no cgroup.kill.
        assert!(!kill_all(&hybrid[..1], "/gantry/pod1/c1", &init_in("/gantry/pod1/c1")).unwrap());
        assert_eq!(written(), "");

        assert!(kill_all(&hybrid, "/gantry/pod1/c1", &init_in("/gantry/pod1/c1")).unwrap());
        assert_eq!(written(), "1");

        // A kernel older than 5.14: no file, the runtime's kill is used.
        std::fs::remove_file(dir.join("cgroup.kill")).unwrap();
        assert!(!kill_all(&hybrid, "/gantry/pod1/c1", &init_in("/gantry/pod1/c1")).unwrap());
        assert!(!dir.join("cgroup.kill").exists(), "never created");
    }
}
