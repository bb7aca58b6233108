//! Which cgroups the container's init is in, and joining them.

use super::*;

/// The directories of a process's cgroups, one per hierarchy: the lines of
/// its `/proc/<pid>/cgroup` mapped onto the cgroup mounts of `mountinfo`
/// (ours). Cgroup v1 hierarchies are matched by their controllers (or
/// `name=`), v2 by its filesystem type; a hierarchy that is not mounted
/// here, or whose mount does not reach the process's cgroup, is skipped.
pub fn cgroup_dirs(proc_cgroup: &str, mountinfo: &str) -> Vec<PathBuf> {
    let mounts: Vec<gantry_common::mountinfo::Mount> = gantry_common::mountinfo::parse(mountinfo)
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .collect();
    let mut dirs = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let v2 = id == "0" && controllers.is_empty();
        let mount = mounts.iter().find(|m| {
            if v2 {
                return m.fs_type == "cgroup2";
            }
            m.fs_type == "cgroup"
                && !controllers.is_empty()
                && controllers.split(',').all(|c| m.has_super_option(c))
        });
        let Some(m) = mount else { continue };
        let root = m.root.to_string_lossy();
        let rel = if root == "/" {
            Some(path)
        } else {
            path.strip_prefix(root.as_ref())
                .filter(|r| r.is_empty() || r.starts_with('/'))
        };
        let Some(rel) = rel else { continue };
        let dir = m.mount_point.join(rel.trim_start_matches('/'));
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// Whether a process's `/proc/<pid>/cgroup` places it in the spec's
/// `linux.cgroupsPath`: a path (cgroupfs driver) or `slice:prefix:name`
/// (systemd driver, whose unit is `prefix-name.scope`). Without a
/// cgroupsPath there is nothing to check.
pub fn in_cgroups_path(proc_cgroup: &str, cgroups_path: &str) -> bool {
    if cgroups_path.is_empty() {
        return true;
    }
    let mut paths = proc_cgroup
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .map(|p| p.trim_end_matches('/'));
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    if let [_, prefix, name] = parts[..] {
        let scope = format!("{prefix}-{name}.scope");
        return paths.any(|p| p.rsplit('/').next() == Some(scope.as_str()));
    }
    let want = format!("/{}", cgroups_path.trim_matches('/'));
    paths.any(|p| p == want || p.ends_with(&want))
}

/// Moves the calling process into each cgroup directory.
pub(super) fn join_cgroups(dirs: &[PathBuf]) -> Result<()> {
    for d in dirs {
        let procs = d.join("cgroup.procs");
        // "0" is the writer itself, whatever PID namespace it is in.
        std::fs::write(&procs, b"0").map_err(io_err(format!("joining {}", d.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:40 /nested /mnt/with\\040space rw - cgroup cgroup rw,blkio
";

    #[test]
    fn cgroup_paths_map_onto_mounts() {
        let cg = "\
12:pids:/gantry/pod1/c1
4:cpu,cpuacct:/gantry/pod1/c1
3:memory:/gantry/pod1/c1
2:name=systemd:/
7:blkio:/nested/pod1
8:devices:/gantry/pod1/c1
0::/gantry/pod1/c1
";
        let dirs = cgroup_dirs(cg, MOUNTINFO_HYBRID);
        let want: Vec<PathBuf> = [
            "/sys/fs/cgroup/pids/gantry/pod1/c1",
            "/sys/fs/cgroup/cpu,cpuacct/gantry/pod1/c1",
            "/sys/fs/cgroup/memory/gantry/pod1/c1",
            "/sys/fs/cgroup/systemd",
            "/mnt/with space/pod1",
            "/sys/fs/cgroup/unified/gantry/pod1/c1",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(dirs, want, "devices is not mounted, so skipped");

        // Pure v2: one line, one mount.
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_dirs("0::/kubepods/pod1/c1\n", v2),
            vec![PathBuf::from("/sys/fs/cgroup/kubepods/pod1/c1")]
        );
        // A mount whose root does not contain the cgroup cannot reach it.
        let rooted = "30 23 0:26 /other /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert!(cgroup_dirs("0::/kubepods/c1\n", rooted).is_empty());
        assert!(cgroup_dirs("0::/otherwise/c1\n", rooted).is_empty());
    }

    #[test]
    fn the_init_is_recognised_by_its_cgroup() {
        let cg = "4:memory:/gantry/pod1/c1\n0::/gantry/pod1/c1\n";
        assert!(in_cgroups_path(cg, "/gantry/pod1/c1"));
        assert!(in_cgroups_path(cg, ""));
        assert!(!in_cgroups_path(cg, "/gantry/pod1/c2"));
        assert!(!in_cgroups_path(cg, "/gantry/pod1/c"));
        // Seen from inside a cgroup namespace rooted higher up.
        assert!(in_cgroups_path("0::/pod1/c1\n", "pod1/c1"));
        let sd = "1:name=systemd:/kubepods.slice/kubepods-pod1.slice/gantry-c1.scope\n";
        assert!(in_cgroups_path(sd, "kubepods-pod1.slice:gantry:c1"));
        assert!(!in_cgroups_path(sd, "kubepods-pod1.slice:gantry:c2"));
        assert!(!in_cgroups_path("0::/user.slice\n", "/gantry/pod1/c1"));
    }
}
