//! Container resource usage read from cgroups (v1 controllers or the v2
//! unified hierarchy, whichever holds the container's cgroup) and from its
//! writable layer. `usage_nano_cores` needs two samples; the previous one
//! per container is kept in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Raw numbers from one read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupSample {
    pub cpu_usage_ns: u64,
    pub memory_usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub memory_limit: Option<u64>,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn keyed(p: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Reads a cgroup given its path relative to the hierarchy roots under
/// `root` (normally /sys/fs/cgroup).
pub fn read_cgroup(root: &Path, cgroup: &str) -> Option<CgroupSample> {
    let rel = cgroup.trim_start_matches('/');
    let v2 = root.join(rel);
    if v2.join("cgroup.controllers").exists() && v2.join("memory.current").exists() {
        let mem = keyed(&v2.join("memory.stat"));
        let usage = read_u64(&v2.join("memory.current")).unwrap_or(0);
        let inactive = mem.get("inactive_file").copied().unwrap_or(0);
        let cpu = keyed(&v2.join("cpu.stat"));
        return Some(CgroupSample {
            cpu_usage_ns: cpu.get("usage_usec").copied().unwrap_or(0) * 1000,
            memory_usage: usage,
            working_set: usage.saturating_sub(inactive),
            rss: mem.get("anon").copied().unwrap_or(0),
            page_faults: mem.get("pgfault").copied().unwrap_or(0),
            major_page_faults: mem.get("pgmajfault").copied().unwrap_or(0),
            memory_limit: std::fs::read_to_string(v2.join("memory.max"))
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        });
    }
    let memdir = root.join("memory").join(rel);
    let cpudir = [
        root.join("cpuacct").join(rel),
        root.join("cpu,cpuacct").join(rel),
    ]
    .into_iter()
    .find(|p| p.join("cpuacct.usage").exists())?;
    let mem = keyed(&memdir.join("memory.stat"));
    let usage = read_u64(&memdir.join("memory.usage_in_bytes")).unwrap_or(0);
    let inactive = mem.get("total_inactive_file").copied().unwrap_or(0);
    let limit = read_u64(&memdir.join("memory.limit_in_bytes")).filter(|l| *l < (1 << 62));
    Some(CgroupSample {
        cpu_usage_ns: read_u64(&cpudir.join("cpuacct.usage")).unwrap_or(0),
        memory_usage: usage,
        working_set: usage.saturating_sub(inactive),
        rss: mem.get("total_rss").copied().unwrap_or(0),
        page_faults: mem.get("total_pgfault").copied().unwrap_or(0),
        major_page_faults: mem.get("total_pgmajfault").copied().unwrap_or(0),
        memory_limit: limit,
    })
}

/// Processes in the cgroup (pids controller on v1, cgroup.procs on v2).
pub fn process_count(root: &Path, cgroup: &str) -> u64 {
    let rel = cgroup.trim_start_matches('/');
    for p in [
        root.join(rel).join("cgroup.procs"),
        root.join("pids").join(rel).join("cgroup.procs"),
    ] {
        if let Ok(text) = std::fs::read_to_string(&p) {
            return text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
        }
    }
    0
}

/// How many times the kernel's OOM killer struck inside the cgroup.
pub fn oom_kills(root: &Path, cgroup: &str) -> u64 {
    let rel = cgroup.trim_start_matches('/');
    let v2 = keyed(&root.join(rel).join("memory.events"));
    if let Some(n) = v2.get("oom_kill") {
        return *n;
    }
    keyed(&root.join("memory").join(rel).join("memory.oom_control"))
        .get("oom_kill")
        .copied()
        .unwrap_or(0)
}

/// Bytes (allocated) and inodes of a directory tree, not crossing mounts.
pub fn dir_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = top.dev();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    let (mut bytes, mut inodes) = (0, 0);
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            bytes += m.blocks() * 512;
            inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// Previous CPU samples, for nano-cores.
#[derive(Default)]
pub struct CpuRates {
    last: Mutex<HashMap<String, (i64, u64)>>,
}

impl CpuRates {
    /// Cores used since the previous sample, in billionths; `None` the
    /// first time.
    pub fn nano_cores(&self, id: &str, now_ns: i64, usage_ns: u64) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let prev = last.insert(id.to_string(), (now_ns, usage_ns));
        let (t0, u0) = prev?;
        let dt = (now_ns - t0).max(1) as u128;
        Some(((usage_ns.saturating_sub(u0) as u128) * 1_000_000_000 / dt) as u64)
    }

    pub fn forget(&self, id: &str) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_trees_are_read() {
        let d = tempfile::tempdir().unwrap();
        let v1 = d.path().join("v1");
        std::fs::create_dir_all(v1.join("memory/gantry/c")).unwrap();
        std::fs::create_dir_all(v1.join("cpuacct/gantry/c")).unwrap();
        std::fs::write(v1.join("memory/gantry/c/memory.usage_in_bytes"), "1000\n").unwrap();
        std::fs::write(
            v1.join("memory/gantry/c/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(
            v1.join("memory/gantry/c/memory.stat"),
            "total_rss 600\ntotal_inactive_file 300\ntotal_pgfault 7\ntotal_pgmajfault 1\n",
        )
        .unwrap();
        std::fs::write(v1.join("cpuacct/gantry/c/cpuacct.usage"), "123456\n").unwrap();
        let s = read_cgroup(&v1, "/gantry/c").unwrap();
        assert_eq!(
            s,
            CgroupSample {
                cpu_usage_ns: 123456,
                memory_usage: 1000,
                working_set: 700,
                rss: 600,
                page_faults: 7,
                major_page_faults: 1,
                memory_limit: None
            }
        );
        let v2 = d.path().join("v2");
        std::fs::create_dir_all(v2.join("gantry/c")).unwrap();
        std::fs::write(v2.join("gantry/c/cgroup.controllers"), "cpu memory\n").unwrap();
        std::fs::write(v2.join("gantry/c/memory.current"), "2000\n").unwrap();
        std::fs::write(v2.join("gantry/c/memory.max"), "4096\n").unwrap();
        std::fs::write(
            v2.join("gantry/c/memory.stat"),
            "anon 1500\ninactive_file 500\npgfault 9\npgmajfault 2\n",
        )
        .unwrap();
        std::fs::write(
            v2.join("gantry/c/cpu.stat"),
            "usage_usec 42\nuser_usec 40\n",
        )
        .unwrap();
        let s = read_cgroup(&v2, "gantry/c").unwrap();
        assert_eq!(
            (s.cpu_usage_ns, s.working_set, s.rss, s.memory_limit),
            (42_000, 1500, 1500, Some(4096))
        );
        assert!(read_cgroup(d.path(), "nope").is_none());
        std::fs::write(
            v1.join("memory/gantry/c/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(oom_kills(&v1, "/gantry/c"), 2);
        std::fs::write(
            v2.join("gantry/c/memory.events"),
            "low 0\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(oom_kills(&v2, "gantry/c"), 1);
        assert_eq!(oom_kills(d.path(), "nope"), 0);
    }

    #[test]
    fn nano_cores_need_two_samples() {
        let r = CpuRates::default();
        assert_eq!(r.nano_cores("c", 0, 0), None);
        // Half a core over one second.
        assert_eq!(
            r.nano_cores("c", 1_000_000_000, 500_000_000),
            Some(500_000_000)
        );
    }
}
