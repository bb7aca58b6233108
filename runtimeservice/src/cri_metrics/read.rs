//! Where the CRI metrics' values come from: cgroup files (v1 and v2),
//! the processes in a cgroup, `/proc/net/dev` inside a pod's network
//! namespace, and the filesystem of the writable layers; each file read
//! once per scrape and never more than [`MAX_FILE`] bytes.

use super::*;

pub(super) const NANOS: u64 = 1_000_000_000;

/// Reads small kernel files into one reused buffer.
#[derive(Default)]
pub struct Reader {
    buf: String,
}

/// Kernel files read here are small, but `cgroup.procs` grows with the
/// processes a container forks: a cap keeps one hostile container from
/// making every poll read megabytes.
pub const MAX_FILE: u64 = 1 << 20;

impl Reader {
    pub fn read(&mut self, p: &Path) -> Option<&str> {
        self.buf.clear();
        File::open(p)
            .ok()?
            .take(MAX_FILE)
            .read_to_string(&mut self.buf)
            .ok()?;
        Some(&self.buf)
    }

    fn u64(&mut self, p: &Path) -> Option<u64> {
        self.read(p)?.trim().parse().ok()
    }

    /// A limit file: a number, or `max` (v2) for none, which reads as 0 like
    /// v1's near-2^63 "unlimited".
    fn limit(&mut self, p: &Path) -> Option<u64> {
        let t = self.read(p)?.trim();
        if t == "max" {
            return Some(0);
        }
        t.parse()
            .ok()
            .map(|v: u64| if v >= 1 << 62 { 0 } else { v })
    }
}

/// `key value` lines, as memory.stat, cpu.stat and memory.events are.
pub fn keyed(text: &str, keys: &[&str]) -> Vec<Option<u64>> {
    let mut out = vec![None; keys.len()];
    for line in text.lines() {
        let Some((k, v)) = line.split_once(' ') else {
            continue;
        };
        if let Some(i) = keys.iter().position(|want| *want == k) {
            out[i] = v.trim().parse().ok();
        }
    }
    out
}

/// What one cgroup tells, each file read once; `None` where the file or
/// field is missing (a controller not mounted or not enabled).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CgroupUsage {
    pub cpu_ns: Option<u64>,
    pub user_ns: Option<u64>,
    pub system_ns: Option<u64>,
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_ns: Option<u64>,
    pub memory_usage: Option<u64>,
    pub memory_max_usage: Option<u64>,
    /// 0 when unlimited.
    pub memory_limit: Option<u64>,
    pub working_set: Option<u64>,
    pub rss: Option<u64>,
    pub cache: Option<u64>,
    pub mapped_file: Option<u64>,
    pub swap: Option<u64>,
    pub failcnt: Option<u64>,
    /// (failure_type, scope, count).
    pub faults: Vec<(&'static str, &'static str, u64)>,
    pub oom_kills: Option<u64>,
    /// The processes directly in this cgroup (not its children).
    pub pids: Vec<i32>,
    pub threads: Option<u64>,
    /// 0 when unlimited.
    pub threads_max: Option<u64>,
}

/// Whether the hierarchy under `root` is the v2 unified one (rather than
/// v1 controllers, each mounted in a directory of its own).
pub fn unified(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// Reads the cgroup at `rel` (relative to the hierarchy roots under
/// `root`); `None` when it exists in no hierarchy.
pub fn read_cgroup(r: &mut Reader, root: &Path, v2: bool, rel: &str) -> Option<CgroupUsage> {
    let rel = rel.trim_start_matches('/');
    if v2 {
        read_v2(r, &root.join(rel))
    } else {
        read_v1(r, root, rel)
    }
}

fn read_v2(r: &mut Reader, dir: &Path) -> Option<CgroupUsage> {
    let procs = r.read(&dir.join("cgroup.procs"))?;
    let mut u = CgroupUsage {
        pids: pids_of(procs),
        ..Default::default()
    };
    if let Some(t) = r.read(&dir.join("cpu.stat")) {
        let k = keyed(
            t,
            &[
                "usage_usec",
                "user_usec",
                "system_usec",
                "nr_periods",
                "nr_throttled",
                "throttled_usec",
            ],
        );
        let us = |v: Option<u64>| v.map(|v| v.saturating_mul(1000));
        u.cpu_ns = us(k[0]);
        u.user_ns = us(k[1]);
        u.system_ns = us(k[2]);
        u.periods = k[3];
        u.throttled_periods = k[4];
        u.throttled_ns = us(k[5]);
    }
    u.memory_usage = r.u64(&dir.join("memory.current"));
    if u.memory_usage.is_some() {
        u.memory_max_usage = r.u64(&dir.join("memory.peak"));
        u.memory_limit = r.limit(&dir.join("memory.max"));
        if let Some(t) = r.read(&dir.join("memory.stat")) {
            let k = keyed(
                t,
                &[
                    "anon",
                    "file",
                    "file_mapped",
                    "inactive_file",
                    "pgfault",
                    "pgmajfault",
                ],
            );
            u.rss = k[0];
            u.cache = k[1];
            u.mapped_file = k[2];
            u.working_set = u.memory_usage.map(|m| m.saturating_sub(k[3].unwrap_or(0)));
            // v2 counts faults with the descendants only.
            for (kind, v) in [("pgfault", k[4]), ("pgmajfault", k[5])] {
                if let Some(v) = v {
                    u.faults.push((kind, "hierarchy", v));
                }
            }
        }
        u.swap = r.u64(&dir.join("memory.swap.current"));
        if let Some(t) = r.read(&dir.join("memory.events")) {
            let k = keyed(t, &["max", "oom_kill"]);
            u.failcnt = k[0];
            u.oom_kills = k[1];
        }
    }
    u.threads = r.u64(&dir.join("pids.current"));
    u.threads_max = r.limit(&dir.join("pids.max"));
    Some(u)
}

fn read_v1(r: &mut Reader, root: &Path, rel: &str) -> Option<CgroupUsage> {
    let mut u = CgroupUsage::default();
    let mut found = false;
    let controller = |names: &[&str], probe: &str| {
        names
            .iter()
            .map(|n| root.join(n).join(rel))
            .find(|d| d.join(probe).exists())
    };
    if let Some(d) = controller(&["cpuacct", "cpu,cpuacct"], "cpuacct.usage") {
        found = true;
        u.cpu_ns = r.u64(&d.join("cpuacct.usage"));
        if let Some(t) = r.read(&d.join("cpuacct.stat")) {
            let k = keyed(t, &["user", "system"]);
            let hz = clock_ticks();
            let ns = |v: Option<u64>| v.map(|t| t.saturating_mul(NANOS / hz));
            u.user_ns = ns(k[0]);
            u.system_ns = ns(k[1]);
        }
    }
    if let Some(d) = controller(&["cpu", "cpu,cpuacct"], "cpu.stat") {
        found = true;
        if let Some(t) = r.read(&d.join("cpu.stat")) {
            let k = keyed(t, &["nr_periods", "nr_throttled", "throttled_time"]);
            u.periods = k[0];
            u.throttled_periods = k[1];
            u.throttled_ns = k[2];
        }
    }
    let mem = root.join("memory").join(rel);
    if let Some(usage) = r.u64(&mem.join("memory.usage_in_bytes")) {
        found = true;
        u.memory_usage = Some(usage);
        u.memory_max_usage = r.u64(&mem.join("memory.max_usage_in_bytes"));
        u.memory_limit = r.limit(&mem.join("memory.limit_in_bytes"));
        u.failcnt = r.u64(&mem.join("memory.failcnt"));
        if let Some(t) = r.read(&mem.join("memory.stat")) {
            let k = keyed(
                t,
                &[
                    "total_rss",
                    "total_cache",
                    "total_mapped_file",
                    "total_swap",
                    "total_inactive_file",
                    "pgfault",
                    "pgmajfault",
                    "total_pgfault",
                    "total_pgmajfault",
                ],
            );
            u.rss = k[0];
            u.cache = k[1];
            u.mapped_file = k[2];
            u.swap = k[3];
            u.working_set = Some(usage.saturating_sub(k[4].unwrap_or(0)));
            for (kind, scope, v) in [
                ("pgfault", "container", k[5]),
                ("pgmajfault", "container", k[6]),
                ("pgfault", "hierarchy", k[7]),
                ("pgmajfault", "hierarchy", k[8]),
            ] {
                if let Some(v) = v {
                    u.faults.push((kind, scope, v));
                }
            }
        }
        if let Some(t) = r.read(&mem.join("memory.oom_control")) {
            u.oom_kills = keyed(t, &["oom_kill"])[0];
        }
    }
    let pids = root.join("pids").join(rel);
    if let Some(t) = r.read(&pids.join("cgroup.procs")) {
        found = true;
        u.pids = pids_of(t);
        u.threads = r.u64(&pids.join("pids.current"));
        u.threads_max = r.limit(&pids.join("pids.max"));
    } else if let Some(t) = r.read(&mem.join("cgroup.procs")) {
        u.pids = pids_of(t);
    }
    found.then_some(u)
}

pub fn pids_of(procs: &str) -> Vec<i32> {
    procs
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `USER_HZ`, the unit of cpuacct.stat.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant of the C library.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Processes of a cgroup, with their open descriptors and sockets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcessCounts {
    pub processes: u64,
    /// `None` when there were too many processes to look through.
    pub fds: Option<u64>,
    /// `None` when there were too many processes or descriptors.
    pub sockets: Option<u64>,
}

impl ProcessCounts {
    pub fn add(&mut self, o: &ProcessCounts) {
        self.processes += o.processes;
        self.fds = self.fds.zip(o.fds).map(|(a, b)| a + b);
        self.sockets = self.sockets.zip(o.sockets).map(|(a, b)| a + b);
    }
}

/// Looking through more processes than this for their descriptors, or
/// resolving more descriptors than this for sockets, would let one
/// container make every poll slow; past these the counts are left out
/// rather than guessed.
pub const MAX_SCANNED_PROCESSES: usize = 1024;
pub const MAX_RESOLVED_FDS: u64 = 16 * 1024;

/// Counts the descriptors and sockets of `pids`, under `proc` (normally
/// `/proc`). A process that exited meanwhile counts for nothing.
pub fn count_processes(proc: &Path, pids: &[i32]) -> ProcessCounts {
    let mut c = ProcessCounts {
        processes: pids.len() as u64,
        fds: None,
        sockets: None,
    };
    if pids.len() > MAX_SCANNED_PROCESSES {
        return c;
    }
    let (mut fds, mut sockets, mut resolve) = (0u64, 0u64, true);
    for pid in pids {
        let dir = proc.join(pid.to_string()).join("fd");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            fds += 1;
            if fds > MAX_RESOLVED_FDS {
                resolve = false;
            }
            if resolve
                && std::fs::read_link(e.path())
                    .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
            {
                sockets += 1;
            }
        }
    }
    c.fds = Some(fds);
    c.sockets = resolve.then_some(sockets);
    c
}

/// One interface's counters from `/proc/net/dev`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetDev {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// A pod may make interfaces of its own (with NET_ADMIN); this many are
/// reported, loopback left out as cAdvisor does.
pub const MAX_INTERFACES: usize = 64;

/// Parses `/proc/net/dev` as seen inside a network namespace.
pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            (f.len() >= 12 && name != "lo" && !name.is_empty()).then(|| NetDev {
                name: name.to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .take(MAX_INTERFACES)
        .collect()
}

/// Size and inodes of a filesystem.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FsCapacity {
    pub bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

pub fn fs_capacity(path: &Path) -> Option<FsCapacity> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(FsCapacity {
        bytes: s.f_blocks.saturating_mul(s.f_frsize),
        inodes: s.f_files,
        inodes_free: s.f_ffree,
    })
}

/// The device of the filesystem holding `path`, as mountinfo names the
/// mount's source (`/dev/vda1`), else its `major:minor`.
pub fn device_of(path: &Path, mountinfo: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(path) else {
        return String::new();
    };
    let dev = m.dev();
    let id = format!("{}:{}", libc::major(dev), libc::minor(dev));
    // The last mount of that device whose mount point holds `path`: the
    // one on top.
    gantry_common::mountinfo::parse(mountinfo)
        .into_iter()
        .rev()
        .find(|m| m.device == id && path.starts_with(&m.mount_point))
        .map(|m| m.source)
        .unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn v1_controllers_are_read_once_each() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let rel = "gantry/pod/c";
        write(
            &root.join("cpuacct").join(rel),
            "cpuacct.usage",
            "2500000000\n",
        );
        write(
            &root.join("cpuacct").join(rel),
            "cpuacct.stat",
            "user 150\nsystem 70\n",
        );
        write(
            &root.join("cpu").join(rel),
            "cpu.stat",
            "nr_periods 10\nnr_throttled 3\nthrottled_time 4000000000\n",
        );
        let mem = root.join("memory").join(rel);
        write(&mem, "memory.usage_in_bytes", "10000\n");
        write(&mem, "memory.max_usage_in_bytes", "20000\n");
        write(&mem, "memory.limit_in_bytes", "9223372036854771712\n");
        write(&mem, "memory.failcnt", "2\n");
        write(
            &mem,
            "memory.stat",
            "cache 1\nrss 2\npgfault 5\npgmajfault 1\ntotal_cache 3000\ntotal_rss 6000\n\
             total_mapped_file 700\ntotal_swap 0\ntotal_inactive_file 1000\n\
             total_pgfault 50\ntotal_pgmajfault 4\n",
        );
        write(
            &mem,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        let pids = root.join("pids").join(rel);
        write(&pids, "cgroup.procs", "12\n34\n");
        write(&pids, "pids.current", "5\n");
        write(&pids, "pids.max", "max\n");
        assert!(!unified(root));
        let u = read_cgroup(&mut Reader::default(), root, false, "/gantry/pod/c").unwrap();
        let hz = clock_ticks();
        assert_eq!(
            u,
            CgroupUsage {
                cpu_ns: Some(2_500_000_000),
                user_ns: Some(150 * (NANOS / hz)),
                system_ns: Some(70 * (NANOS / hz)),
                periods: Some(10),
                throttled_periods: Some(3),
                throttled_ns: Some(4_000_000_000),
                memory_usage: Some(10000),
                memory_max_usage: Some(20000),
                memory_limit: Some(0),
                working_set: Some(9000),
                rss: Some(6000),
                cache: Some(3000),
                mapped_file: Some(700),
                swap: Some(0),
                failcnt: Some(2),
                faults: vec![
                    ("pgfault", "container", 5),
                    ("pgmajfault", "container", 1),
                    ("pgfault", "hierarchy", 50),
                    ("pgmajfault", "hierarchy", 4),
                ],
                oom_kills: Some(1),
                pids: vec![12, 34],
                threads: Some(5),
                threads_max: Some(0),
            }
        );
        assert!(read_cgroup(&mut Reader::default(), root, false, "nope").is_none());
    }

    #[test]
    fn v2_files_are_read_once_each() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        write(root, "cgroup.controllers", "cpu memory pids\n");
        let c = root.join("gantry/pod/c");
        write(&c, "cgroup.procs", "7\n");
        write(
            &c,
            "cpu.stat",
            "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n\
             nr_periods 4\nnr_throttled 1\nthrottled_usec 2500000\n",
        );
        write(&c, "memory.current", "8192\n");
        write(&c, "memory.max", "65536\n");
        write(
            &c,
            "memory.stat",
            "anon 4096\nfile 2048\nfile_mapped 1024\ninactive_file 512\npgfault 9\npgmajfault 2\n",
        );
        write(
            &c,
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        );
        write(&c, "pids.current", "2\n");
        write(&c, "pids.max", "100\n");
        assert!(unified(root));
        let u = read_cgroup(&mut Reader::default(), root, true, "gantry/pod/c").unwrap();
        assert_eq!(
            u,
            CgroupUsage {
                cpu_ns: Some(3_000_000_000),
                user_ns: Some(2_000_000_000),
                system_ns: Some(1_000_000_000),
                periods: Some(4),
                throttled_periods: Some(1),
                throttled_ns: Some(2_500_000_000),
                memory_usage: Some(8192),
                memory_max_usage: None,
                memory_limit: Some(65536),
                working_set: Some(7680),
                rss: Some(4096),
                cache: Some(2048),
                mapped_file: Some(1024),
                swap: None,
                failcnt: Some(3),
                faults: vec![("pgfault", "hierarchy", 9), ("pgmajfault", "hierarchy", 2)],
                oom_kills: Some(1),
                pids: vec![7],
                threads: Some(2),
                threads_max: Some(100),
            }
        );
        assert!(read_cgroup(&mut Reader::default(), root, true, "gone").is_none());
    }

    #[test]
    fn net_dev_is_parsed_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
             eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0\n  \
             bad: 1 2 x\n";
        assert_eq!(
            parse_net_dev(text),
            vec![NetDev {
                name: "eth0".into(),
                rx_bytes: 5000,
                rx_packets: 40,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 3000,
                tx_packets: 30,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
        let many: String = std::iter::repeat_n("h\nh\n", 1)
            .chain((0..100).map(|_| "x: 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n"))
            .collect();
        assert_eq!(parse_net_dev(&many).len(), MAX_INTERFACES);
    }

    #[test]
    fn descriptors_and_sockets_of_processes_are_counted() {
        let me = std::process::id() as i32;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let before = count_processes(Path::new("/proc"), &[me]);
        let extra = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let after = count_processes(Path::new("/proc"), &[me, i32::MAX]);
        drop((listener, extra));
        assert_eq!(after.processes, 2);
        // Other test threads open files too, so only the socket is certain.
        assert!(after.fds.unwrap() >= 3);
        assert!(after.sockets.unwrap() > before.sockets.unwrap_or(0));
        let many = vec![me; MAX_SCANNED_PROCESSES + 1];
        let c = count_processes(Path::new("/proc"), &many);
        assert_eq!((c.fds, c.sockets), (None, None));
        let mut sum = ProcessCounts {
            processes: 1,
            fds: Some(1),
            sockets: Some(1),
        };
        sum.add(&c);
        assert_eq!((sum.processes, sum.fds), (1 + c.processes, None));
    }

    #[test]
    fn the_device_comes_from_mountinfo() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let dev = std::fs::metadata(d.path()).unwrap().dev();
        let id = format!("{}:{}", libc::major(dev), libc::minor(dev));
        let info = format!(
            "21 1 {id} / / rw - ext4 /dev/fake1 rw\n22 21 0:99 / /other rw - tmpfs none rw\n"
        );
        assert_eq!(device_of(d.path(), &info), "/dev/fake1");
        assert_eq!(device_of(d.path(), ""), id);
        assert!(fs_capacity(d.path()).unwrap().bytes > 0);
    }
}
