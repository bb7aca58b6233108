//! gantry's RuntimeDefault seccomp profile, as an allowlist: every syscall
//! not named here is answered `EPERM`. The table is gantry's own, grouped
//! by why a syscall is allowed; the groups that reach outside the
//! container (mounts, namespaces, modules, clocks, tracing) open only when
//! the container holds the capability that the kernel would check anyway,
//! so a container cannot use them to get at kernel code it has no
//! business reaching. Some syscalls are never allowed (keyrings, kexec,
//! userfaultfd, io_uring): no capability makes them safe to share.
//!
//! Both runc (from the spec) and gantry-exec (`gantry_monitor::nsexec`) compile
//! the same JSON, so a process started by exec is held to the same rules.

use serde_json::{json, Value};

/// Syscalls every container may make: file and memory work, processes
/// and threads, signals, time reading, sockets, System V and POSIX IPC,
/// credentials (the kernel checks CAP_SETUID and friends itself), and the
/// self-sandboxing calls (seccomp, landlock).
const ALWAYS: &[&str] = &[
    // Files and descriptors.
    "access",
    "chdir",
    "chmod",
    "chown",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futimesat",
    "getcwd",
    "getdents",
    "getdents64",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "ioctl",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "memfd_create",
    "memfd_secret",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "pread64",
    "preadv",
    "preadv2",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "select",
    "sendfile",
    "setxattr",
    "signalfd",
    "signalfd4",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "tee",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "truncate",
    "umask",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vmsplice",
    "write",
    "writev",
    // Asynchronous I/O (the old interface; io_uring is never allowed).
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_setup",
    "io_submit",
    // Memory.
    "brk",
    "madvise",
    "membarrier",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mremap",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "remap_file_pages",
    // Processes, threads, scheduling, limits.
    "arch_prctl",
    "capget",
    "capset",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "futex",
    "futex_waitv",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getrlimit",
    "getrusage",
    "getsid",
    "gettid",
    "ioprio_get",
    "ioprio_set",
    "pidfd_open",
    "pidfd_send_signal",
    "prctl",
    "prlimit64",
    "process_mrelease",
    "restart_syscall",
    "rseq",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setpgid",
    "setpriority",
    "setrlimit",
    "setsid",
    "sysinfo",
    "times",
    "uname",
    "vfork",
    "wait4",
    "waitid",
    // Credentials.
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getresgid",
    "getresuid",
    "getuid",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setuid",
    // Signals.
    "kill",
    "pause",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "tgkill",
    "tkill",
    // Time: reading clocks, sleeping, timers (setting clocks needs
    // CAP_SYS_TIME below). adjtimex and clock_adjtime only read without
    // that capability: the kernel checks it before changing anything.
    "adjtimex",
    "alarm",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "getitimer",
    "gettimeofday",
    "nanosleep",
    "setitimer",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    // Sockets (`socket` itself is filtered by family below).
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socketpair",
    // IPC, in the container's own IPC namespace.
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    // A process may narrow its own rights further.
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "seccomp",
    // The 32-bit ABIs (x86 and x32 on x86_64, arm on aarch64): their
    // names for the calls above.
    "_llseek",
    "_newselect",
    "chown32",
    "clock_getres_time64",
    "clock_gettime64",
    "clock_nanosleep_time64",
    "fadvise64_64",
    "fchown32",
    "fcntl64",
    "fstat64",
    "fstatat64",
    "fstatfs64",
    "ftruncate64",
    "futex_time64",
    "getegid32",
    "geteuid32",
    "getgid32",
    "getgroups32",
    "getresgid32",
    "getresuid32",
    "getuid32",
    "io_pgetevents_time64",
    "ipc",
    "lchown32",
    "lstat64",
    "mmap2",
    "mq_timedreceive_time64",
    "mq_timedsend_time64",
    "ppoll_time64",
    "pselect6_time64",
    "recvmmsg_time64",
    "rt_sigtimedwait_time64",
    "sched_rr_get_interval_time64",
    "semtimedop_time64",
    "send",
    "recv",
    "sendfile64",
    "setfsgid32",
    "setfsuid32",
    "setgid32",
    "setgroups32",
    "setregid32",
    "setresgid32",
    "setresuid32",
    "setreuid32",
    "setuid32",
    "sigaction",
    "signal",
    "sigpending",
    "sigprocmask",
    "sigreturn",
    "sigsuspend",
    "socketcall",
    "stat64",
    "statfs64",
    "timer_gettime64",
    "timer_settime64",
    "timerfd_gettime64",
    "timerfd_settime64",
    "truncate64",
    "ugetrlimit",
    "utimensat_time64",
    "waitpid",
    // arm's own.
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "breakpoint",
    "cacheflush",
    "set_tls",
    "sync_file_range2",
];

/// Syscalls opened by a capability the container holds: the kernel checks
/// the same capability, and a container that holds it is trusted with
/// what it guards.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            // Mounts, the old API and the new one.
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "open_tree",
            "move_mount",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "mount_setattr",
            // Namespaces (clone and clone3 are handled by flag below).
            "unshare",
            "setns",
            // Whole-system views and settings.
            "bpf",
            "perf_event_open",
            "fanotify_init",
            "lookup_dcookie",
            "name_to_handle_at",
            "quotactl",
            "quotactl_fd",
            "sethostname",
            "setdomainname",
            "syslog",
        ],
    ),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["init_module", "finit_module", "delete_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "ptrace",
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "migrate_pages",
            "move_pages",
        ],
    ),
];

/// Namespace flags of `clone(2)`'s first argument: NEWNS, NEWCGROUP,
/// NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET. (CLONE_NEWTIME's bit is the
/// exit signal's in `clone`; only unshare and clone3 take it.)
pub const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// `personality(2)` values a container may set: the Linux default, 32-bit
/// (PER_LINUX32), the 2.6-style uname (UNAME26), both, and the query
/// (0xffffffff). Flags such as READ_IMPLIES_EXEC or ADDR_NO_RANDOMIZE
/// would switch off protections the kernel gives the process.
pub const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

/// AF_VSOCK: sockets to the hypervisor or host, outside the pod network.
const AF_VSOCK: u64 = 40;

/// ptrace could bypass seccomp before Linux 4.8 (the filter was not
/// re-run after the tracer changed the syscall); from 4.8 on it is safe
/// to let debuggers and strace work inside the container.
const PTRACE_SAFE_KERNEL: (u32, u32) = (4, 8);

const ENOSYS: u32 = 38;

/// The OCI `linux.seccomp` value of RuntimeDefault for a container holding
/// `caps`, on this node's kernel.
pub fn runtime_default(caps: &[String]) -> Value {
    runtime_default_for(caps, host_kernel())
}

/// The same for a given kernel version (major, minor).
pub fn runtime_default_for(caps: &[String], kernel: (u32, u32)) -> Value {
    let holds = |c: &str| caps.iter().any(|h| h == c);
    let mut allowed: Vec<&str> = ALWAYS.to_vec();
    for (cap, names) in BY_CAPABILITY {
        if holds(cap) {
            allowed.extend_from_slice(names);
        }
    }
    if kernel >= PTRACE_SAFE_KERNEL {
        allowed.push("ptrace");
    }
    allowed.sort_unstable();
    allowed.dedup();
    let mut rules = vec![json!({"names": allowed, "action": "SCMP_ACT_ALLOW"})];
    if holds("CAP_SYS_ADMIN") {
        rules.push(json!({"names": ["clone", "clone3"], "action": "SCMP_ACT_ALLOW"}));
    } else {
        // Threads and processes, but no new namespace: a user namespace
        // would hand the container a full capability set over it.
        rules.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        }));
        // clone3 passes its flags in memory, which seccomp cannot read.
        // ENOSYS makes libc fall back to clone, where they are checked.
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    }
    // One rule per value: conditions on the same argument in one rule
    // would all have to hold.
    for p in PERSONALITIES {
        rules.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}],
        }));
    }
    rules.push(json!({
        "names": ["socket"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}],
    }));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": architectures(),
        "syscalls": rules,
    })
}

/// The native ABI and the compat ones the kernel also runs.
fn architectures() -> &'static [&'static str] {
    if cfg!(target_arch = "aarch64") {
        &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    } else {
        &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    }
}

/// The running kernel's (major, minor); (0, 0) when unreadable, which
/// keeps the stricter rules.
pub fn host_kernel() -> (u32, u32) {
    parse_kernel(&rustix::system::uname().release().to_string_lossy())
}

fn parse_kernel(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODERN: (u32, u32) = (6, 1);

    #[test]
    fn the_runtime_default_profile_compiles_for_gantry_exec() {
        let caps: Vec<String> = crate::oci::spec::DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .collect();
        let v = runtime_default_for(&caps, (6, 1));
        let f =
            gantry_monitor::nsexec::compile_seccomp(&serde_json::from_value(v).unwrap()).unwrap();
        assert_eq!(
            f.get_act_default().unwrap(),
            libseccomp::ScmpAction::Errno(libc::EPERM)
        );
        // The compiled filter as libseccomp's readable text.
        let mut tmp = tempfile::tempfile().unwrap();
        f.export_pfc(&tmp).unwrap();
        use std::io::{Read, Seek};
        tmp.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut text = String::new();
        tmp.read_to_string(&mut text).unwrap();
        assert!(text.contains("\"ptrace\""), "{text}");
        assert!(text.contains("ERRNO(38)"), "clone3: {text}");
        assert!(text.contains("$a0.lo32 & 0x7e020000 == 0"), "clone: {text}");
        assert!(!text.contains("\"mount\""), "{text}");
        assert!(!text.contains("\"keyctl\""), "{text}");
    }

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn default_caps() -> Vec<String> {
        caps(crate::oci::spec::DEFAULT_CAPS)
    }

    /// The rules that name `syscall`.
    fn rules_for(profile: &Value, syscall: &str) -> Vec<Value> {
        profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == syscall))
            .cloned()
            .collect()
    }

    /// Allowed with no condition on its arguments.
    fn plainly_allowed(profile: &Value, syscall: &str) -> bool {
        rules_for(profile, syscall)
            .iter()
            .any(|r| r["action"] == "SCMP_ACT_ALLOW" && r["args"].is_null())
    }

    #[test]
    fn the_profile_is_an_allowlist_and_valid_oci() {
        let p = runtime_default_for(&default_caps(), MODERN);
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        let _: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p.clone()).unwrap();
        for ordinary in [
            "read",
            "openat",
            "execve",
            "futex",
            "rt_sigreturn",
            "exit_group",
        ] {
            assert!(plainly_allowed(&p, ordinary), "{ordinary}");
        }
        // Nothing is listed twice in a way that could contradict itself.
        for name in ALWAYS {
            assert!(
                !BY_CAPABILITY.iter().any(|(_, n)| n.contains(name)),
                "{name} is both always allowed and capability-gated"
            );
        }
    }

    #[test]
    fn clone_namespace_flags_need_cap_sys_admin() {
        let p = runtime_default_for(&default_caps(), MODERN);
        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), 1, "{clone:?}");
        assert_eq!(clone[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone[0]["args"][0]["valueTwo"], 0);
        let mask = clone[0]["args"][0]["value"].as_u64().unwrap();
        const CLONE_NEWUSER: u64 = 0x1000_0000;
        const CLONE_NEWNS: u64 = 0x0002_0000;
        const CLONE_NEWNET: u64 = 0x4000_0000;
        const THREAD: u64 = 0x0001_0000 | 0x0000_0100 | 0x0000_0800 | 0x0000_0200;
        for f in [CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET] {
            assert_ne!(mask & f, 0, "{f:#x} must be filtered");
        }
        assert_eq!(mask & THREAD, 0, "thread creation must pass");
        assert_eq!(mask & 17, 0, "SIGCHLD as exit signal must pass");
        let admin = runtime_default_for(&caps(&["CAP_SYS_ADMIN"]), MODERN);
        let clone = rules_for(&admin, "clone");
        assert!(clone.iter().all(|r| r["args"].is_null()), "{clone:?}");
        assert!(plainly_allowed(&admin, "unshare") && plainly_allowed(&admin, "setns"));
        assert!(!plainly_allowed(&p, "unshare") && !plainly_allowed(&p, "setns"));
    }

    #[test]
    fn clone3_is_enosys_without_cap_sys_admin() {
        let p = runtime_default_for(&default_caps(), MODERN);
        let r = rules_for(&p, "clone3");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(r[0]["errnoRet"], 38);
        let admin = runtime_default_for(&caps(&["CAP_SYS_ADMIN"]), MODERN);
        assert!(plainly_allowed(&admin, "clone3"));
    }

    #[test]
    fn the_new_mount_api_needs_cap_sys_admin() {
        let p = runtime_default_for(&default_caps(), MODERN);
        let admin = runtime_default_for(&caps(&["CAP_SYS_ADMIN"]), MODERN);
        for s in [
            "mount",
            "umount2",
            "pivot_root",
            "open_tree",
            "move_mount",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "mount_setattr",
        ] {
            assert!(rules_for(&p, s).is_empty(), "{s} must fall to EPERM");
            assert!(plainly_allowed(&admin, s), "{s} with CAP_SYS_ADMIN");
        }
    }

    #[test]
    fn keyrings_kexec_userfaultfd_and_io_uring_are_never_allowed() {
        let every = caps(crate::oci::spec::ALL_CAPS);
        for p in [
            runtime_default_for(&default_caps(), MODERN),
            runtime_default_for(&every, MODERN),
        ] {
            for s in [
                "add_key",
                "request_key",
                "keyctl",
                "kexec_load",
                "kexec_file_load",
                "userfaultfd",
                "io_uring_setup",
                "io_uring_enter",
                "io_uring_register",
                "uselib",
                "modify_ldt",
                "vm86",
            ] {
                assert!(rules_for(&p, s).is_empty(), "{s}");
            }
        }
    }

    #[test]
    fn bpf_and_perf_need_their_capabilities() {
        let p = runtime_default_for(&default_caps(), MODERN);
        assert!(rules_for(&p, "bpf").is_empty());
        assert!(rules_for(&p, "perf_event_open").is_empty());
        let bpf = runtime_default_for(&caps(&["CAP_BPF"]), MODERN);
        assert!(plainly_allowed(&bpf, "bpf"));
        assert!(!plainly_allowed(&bpf, "perf_event_open"));
        let perf = runtime_default_for(&caps(&["CAP_PERFMON"]), MODERN);
        assert!(plainly_allowed(&perf, "perf_event_open"));
        assert!(!plainly_allowed(&perf, "bpf"));
    }

    #[test]
    fn tracing_other_processes() {
        let p = runtime_default_for(&default_caps(), MODERN);
        assert!(plainly_allowed(&p, "ptrace"), "ptrace on a modern kernel");
        for s in [
            "pidfd_getfd",
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
        ] {
            assert!(rules_for(&p, s).is_empty(), "{s}");
        }
        let old = runtime_default_for(&default_caps(), (4, 4));
        assert!(rules_for(&old, "ptrace").is_empty(), "ptrace before 4.8");
        let traced = runtime_default_for(&caps(&["CAP_SYS_PTRACE"]), (4, 4));
        assert!(plainly_allowed(&traced, "ptrace"));
        assert!(plainly_allowed(&traced, "pidfd_getfd"));
    }

    #[test]
    fn personality_takes_only_safe_values() {
        let p = runtime_default_for(&default_caps(), MODERN);
        let r = rules_for(&p, "personality");
        assert!(!r.is_empty());
        let mut values = Vec::new();
        for rule in &r {
            assert_eq!(rule["action"], "SCMP_ACT_ALLOW");
            let args = rule["args"].as_array().unwrap();
            assert_eq!(args.len(), 1, "one condition per rule: {rule}");
            assert_eq!(args[0]["op"], "SCMP_CMP_EQ");
            values.push(args[0]["value"].as_u64().unwrap());
        }
        assert!(values.contains(&0xffff_ffff), "the query");
        assert!(values.contains(&0));
        const READ_IMPLIES_EXEC: u64 = 0x0040_0000;
        const ADDR_NO_RANDOMIZE: u64 = 0x0004_0000;
        assert!(!values.contains(&READ_IMPLIES_EXEC));
        assert!(!values.contains(&ADDR_NO_RANDOMIZE));
    }

    #[test]
    fn host_reaching_groups_follow_their_capability() {
        let p = runtime_default_for(&default_caps(), MODERN);
        // DEFAULT_CAPS holds SYS_CHROOT but none of the others.
        assert!(plainly_allowed(&p, "chroot"));
        for s in [
            "reboot",
            "init_module",
            "finit_module",
            "delete_module",
            "acct",
            "iopl",
            "ioperm",
            "settimeofday",
            "clock_settime",
            "open_by_handle_at",
            "name_to_handle_at",
            "syslog",
            "sethostname",
            "quotactl",
            "mbind",
            "move_pages",
            "vhangup",
        ] {
            assert!(rules_for(&p, s).is_empty(), "{s}");
        }
        let time = runtime_default_for(&caps(&["CAP_SYS_TIME"]), MODERN);
        assert!(plainly_allowed(&time, "clock_settime"));
        let module = runtime_default_for(&caps(&["CAP_SYS_MODULE"]), MODERN);
        assert!(plainly_allowed(&module, "finit_module"));
    }

    #[test]
    fn sockets_exclude_vsock() {
        let p = runtime_default_for(&default_caps(), MODERN);
        let r = rules_for(&p, "socket");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["args"][0]["op"], "SCMP_CMP_NE");
        assert_eq!(r[0]["args"][0]["value"], 40);
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel("6.18.0-1-amd64"), (6, 18));
        assert_eq!(parse_kernel("4.8"), (4, 8));
        assert_eq!(parse_kernel("garbage"), (0, 0));
        assert!(host_kernel() >= (3, 0));
    }
}
