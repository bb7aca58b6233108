//! OCI runtime spec generation for a container, in small steps (process,
//! user, mounts, namespaces, security, resources), each a plain function of
//! the CRI config, the pod and the image config. `oci-spec`'s `Spec` gives
//! the base (the runtime-spec defaults: /proc, /dev, masked paths, …) and
//! validates the result; the steps edit its JSON form, which keeps each of
//! them a few lines.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gantry_proto::v1 as cri;
use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::rootfs_path::{Rootfs, MAX_SMALL_FILE};

/// containerd's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel knows, for `ALL` and privileged containers.
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities this process holds (effective and bounding): a
/// container cannot be given more, so requests are clamped to these.
pub fn host_caps() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(u64::MAX)
    };
    let have = mask("CapEff:") & mask("CapBnd:");
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| have & (1u64 << bit) != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// The largest seccomp profile read: real ones are tens of KiB.
const MAX_PROFILE_BYTES: u64 = 4 << 20;

/// A profile's bytes: a regular file (a FIFO would block, a device such
/// as /dev/zero never end), at most [`MAX_PROFILE_BYTES`].
fn read_profile(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PROFILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_PROFILE_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

/// A profile file (Docker or OCI layout) as the OCI `linux.seccomp` value.
pub fn localhost_seccomp(path: &str) -> Result<Value> {
    let path = path.strip_prefix("localhost/").unwrap_or(path);
    if !path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "seccomp profile path {path:?} must be absolute"
        )));
    }
    let text = read_profile(Path::new(path))
        .map_err(|e| Error::InvalidArgument(format!("reading seccomp profile {path}: {e}")))?;
    let p: Value = serde_json::from_slice(&text)
        .map_err(|e| Error::InvalidArgument(format!("seccomp profile {path} is not JSON: {e}")))?;
    let mut out = json!({"defaultAction": p["defaultAction"].clone()});
    if out["defaultAction"].is_null() {
        return Err(Error::InvalidArgument(format!(
            "seccomp profile {path} has no defaultAction"
        )));
    }
    for key in ["defaultErrnoRet", "architectures", "flags", "listenerPath"] {
        if !p[key].is_null() {
            out[key] = p[key].clone();
        }
    }
    if let Some(map) = p["archMap"].as_array() {
        let mut arches = Vec::new();
        for a in map {
            if let Some(x) = a["architecture"].as_str() {
                arches.push(json!(x));
            }
            for sub in a["subArchitectures"].as_array().into_iter().flatten() {
                arches.push(sub.clone());
            }
        }
        out["architectures"] = json!(arches);
    }
    let syscalls: Vec<Value> = p["syscalls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let mut x = json!({"names": s["names"].clone(), "action": s["action"].clone()});
            if x["names"].is_null() {
                if let Some(n) = s["name"].as_str() {
                    x["names"] = json!([n]);
                }
            }
            for key in ["errnoRet", "args"] {
                if !s[key].is_null() {
                    x[key] = s[key].clone();
                }
            }
            x
        })
        .collect();
    out["syscalls"] = json!(syscalls);
    Ok(out)
}

/// Everything a container's spec is made from.
pub struct SpecInput<'a> {
    pub id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub pod: &'a cri::PodSandboxConfig,
    /// The image config JSON (`config` holds Env, Cmd, Entrypoint, ...).
    pub image_config: &'a Value,
    pub rootfs: &'a Path,
    pub pod_dir: &'a Path,
    pub netns: Option<&'a Path>,
    pub ipc_ns: Option<&'a Path>,
    pub uts_ns: Option<&'a Path>,
    pub pid: PidNamespace,
    /// The OCI `linux.cgroupsPath` (see [`crate::cgroup::container_path`]).
    pub cgroups_path: &'a str,
    /// The image's `VOLUME`s, each with the host directory that backs it
    /// (see [`image_volumes`]).
    pub volumes: &'a [(String, PathBuf)],
    /// The host source of each image volume ([`crate::image_volume`]), by
    /// its index in the config's mounts.
    pub image_mounts: &'a std::collections::BTreeMap<usize, PathBuf>,
    /// The AppArmor profile to run under (see [`crate::apparmor`]).
    pub apparmor: Option<&'a str>,
    /// The handler honours the `rro` mount option (see [`crate::features`]).
    pub recursive_read_only: bool,
}

/// The image's `VOLUME` paths that no CRI mount covers, cleaned. A path
/// that is not absolute or climbs with `..` is refused: it would name
/// something outside the container.
pub fn image_volumes(image: &Value, mounts: &[cri::Mount]) -> Result<Vec<String>> {
    let Some(vols) = image["config"]["Volumes"].as_object() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for v in vols.keys() {
        let path = Path::new(v);
        if !path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(Error::InvalidArgument(format!(
                "image volume {v:?} is not a clean absolute path"
            )));
        }
        let clean: PathBuf = path.components().collect();
        let clean = clean.display().to_string();
        if clean == "/"
            || mounts
                .iter()
                .any(|m| Path::new(&m.container_path) == Path::new(&clean))
        {
            continue;
        }
        out.push(clean);
    }
    out.sort();
    Ok(out)
}

/// Where a container's processes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidNamespace {
    /// Its own PID namespace.
    Private,
    /// The host's.
    Host,
    /// One that already exists (the pod's shared one, or a target's).
    Join(PathBuf),
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The command line, by the CRI rules: `command` replaces the image's
/// entrypoint (and drops its cmd), `args` replaces its cmd.
pub fn command_line(config: &cri::ContainerConfig, image: &Value) -> Result<Vec<String>> {
    let entrypoint = strings(&image["config"]["Entrypoint"]);
    let cmd = strings(&image["config"]["Cmd"]);
    let mut argv = if !config.command.is_empty() {
        config.command.clone()
    } else {
        entrypoint
    };
    if !config.args.is_empty() {
        argv.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        argv.extend(cmd);
    }
    if argv.is_empty() {
        return Err(Error::InvalidArgument(
            "no command: neither the container config nor the image names one".into(),
        ));
    }
    Ok(argv)
}

/// Image env first, container env overriding by name. CRI 1.36 lets a
/// value be any bytes, but the OCI spec is JSON and holds only text, so a
/// value that is not UTF-8 is refused rather than mangled.
pub fn environment(config: &cri::ContainerConfig, image: &Value) -> Result<Vec<String>> {
    let mut out: Vec<String> = strings(&image["config"]["Env"]);
    for kv in &config.envs {
        let value = std::str::from_utf8(&kv.value).map_err(|_| {
            Error::InvalidArgument(format!(
                "the value of environment variable {:?} is not UTF-8, which an OCI runtime spec cannot hold",
                kv.key
            ))
        })?;
        out.retain(|e| e.split('=').next() != Some(kv.key.as_str()));
        out.push(format!("{}={}", kv.key, value));
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    Ok(out)
}

/// The image's `/etc/passwd` and `/etc/group`, each read at most once,
/// inside the rootfs and with a size cap (see [`crate::rootfs_path`]).
struct Accounts<'a> {
    rootfs: &'a Path,
    root: Option<Rootfs>,
    passwd: Option<Option<String>>,
    group: Option<Option<String>>,
}

impl<'a> Accounts<'a> {
    fn new(rootfs: &'a Path) -> Self {
        Accounts {
            rootfs,
            root: None,
            passwd: None,
            group: None,
        }
    }

    fn read(&mut self, path: &str) -> Result<Option<String>> {
        let root = match self.root.take() {
            Some(r) => r,
            None => Rootfs::open(self.rootfs)?,
        };
        // The runtime reads these files again inside the container, where
        // /dev is its own: what they lead to there must be what we read.
        let text = root.read_runtime_text(path, MAX_SMALL_FILE);
        self.root = Some(root);
        Ok(text?)
    }

    fn passwd(&mut self) -> Result<&str> {
        if self.passwd.is_none() {
            self.passwd = Some(self.read("/etc/passwd")?);
        }
        Ok(self
            .passwd
            .as_ref()
            .and_then(|p| p.as_deref())
            .unwrap_or(""))
    }

    fn group(&mut self) -> Result<&str> {
        if self.group.is_none() {
            self.group = Some(self.read("/etc/group")?);
        }
        Ok(self.group.as_ref().and_then(|g| g.as_deref()).unwrap_or(""))
    }
}

/// Looks a name up in a passwd/group style text: its id and, for passwd,
/// its primary group.
fn lookup(text: &str, name: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 || f[0] != name {
            return None;
        }
        let id = f[2].parse().ok()?;
        Some((id, f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0)))
    })
}

/// uid, gid and extra groups: `run_as_user`/`run_as_username`/`run_as_group`
/// first, else the image's USER (`uid`, `name`, `uid:gid`, `name:group`).
pub fn user(
    config: &cri::ContainerConfig,
    image: &Value,
    rootfs: &Path,
) -> Result<(u32, u32, Vec<u32>)> {
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let image_user = image["config"]["User"].as_str().unwrap_or("");
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let mut accounts = Accounts::new(rootfs);
    let resolve_user = |accounts: &mut Accounts<'_>, name: &str| -> Result<(u32, u32)> {
        if name.is_empty() {
            return Ok((0, 0));
        }
        if let Ok(uid) = name.parse::<u32>() {
            return Ok((uid, lookup_uid_gid(accounts.passwd()?, uid).unwrap_or(0)));
        }
        lookup(accounts.passwd()?, name).ok_or_else(|| {
            Error::InvalidArgument(format!("user {name:?} is not in the image's /etc/passwd"))
        })
    };
    if sc.is_some_and(|s| {
        s.run_as_group.is_some() && s.run_as_user.is_none() && s.run_as_username.is_empty()
    }) {
        return Err(Error::InvalidArgument(
            "run_as_group needs run_as_user or run_as_username".into(),
        ));
    }
    let (mut uid, mut gid) = match (
        sc.and_then(|s| s.run_as_user.as_ref()),
        sc.map(|s| s.run_as_username.as_str()),
    ) {
        (Some(u), _) => {
            let uid = u32::try_from(u.value).map_err(|_| {
                Error::InvalidArgument(format!("run_as_user {} is out of range", u.value))
            })?;
            (uid, lookup_uid_gid(accounts.passwd()?, uid).unwrap_or(0))
        }
        (None, Some(name)) if !name.is_empty() => resolve_user(&mut accounts, name)?,
        _ => resolve_user(&mut accounts, user_part)?,
    };
    if sc.and_then(|s| s.run_as_user.as_ref()).is_none()
        && sc.is_none_or(|s| s.run_as_username.is_empty())
    {
        if let Some(g) = group_part {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => lookup(accounts.group()?, g)
                    .map(|(gid, _)| gid)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "group {g:?} is not in the image's /etc/group"
                        ))
                    })?,
            };
        }
    }
    if let Some(g) = sc.and_then(|s| s.run_as_group.as_ref()) {
        gid = u32::try_from(g.value).map_err(|_| {
            Error::InvalidArgument(format!("run_as_group {} is out of range", g.value))
        })?;
    }
    if uid == u32::MAX {
        uid = 0;
    }
    let strict = sc.is_some_and(|s| {
        s.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32
    });
    // Merge (the default): the groups the image's /etc/group gives the
    // user, then the requested ones; Strict: the requested ones only.
    let mut extra: Vec<u32> = if strict {
        Vec::new()
    } else {
        image_groups(&mut accounts, uid)?
    };
    for g in sc
        .map(|s| s.supplemental_groups.as_slice())
        .unwrap_or_default()
    {
        let g = u32::try_from(*g).map_err(|_| {
            Error::InvalidArgument(format!("supplemental group {g} is out of range"))
        })?;
        extra.push(g);
    }
    // The primary group leads the list, as containerd does since
    // CVE-2023-25173: without it, a process that drops to another gid could
    // keep rights the container's primary group was meant to limit.
    extra.retain(|g| *g != gid);
    extra.sort_unstable();
    extra.dedup();
    extra.insert(0, gid);
    Ok((uid, gid, extra))
}

/// The groups whose member list in the image's /etc/group names the user
/// with this uid (found in its /etc/passwd).
fn image_groups(accounts: &mut Accounts<'_>, uid: u32) -> Result<Vec<u32>> {
    let Some(name) = accounts.passwd()?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    }) else {
        return Ok(Vec::new());
    };
    Ok(accounts
        .group()?
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f.get(3)?;
            members
                .split(',')
                .any(|m| m.trim() == name)
                .then(|| f[2].parse().ok())
                .flatten()
        })
        .collect())
}

/// A host device for `linux.devices` and its cgroup rule.
/// The OCI `linux.resources` a container's CRI resources ask for: what the
/// spec starts with, and what an update hands the runtime. Unset (zero)
/// values are left out, so an update leaves them as they are.
pub fn oci_resources(r: &cri::LinuxContainerResources) -> Value {
    let mut res = json!({});
    let mut memory = json!({});
    if r.memory_limit_in_bytes > 0 {
        memory["limit"] = json!(r.memory_limit_in_bytes);
    }
    if r.memory_swap_limit_in_bytes > 0 {
        memory["swap"] = json!(r.memory_swap_limit_in_bytes);
    }
    if memory.as_object().is_some_and(|o| !o.is_empty()) {
        res["memory"] = memory;
    }
    let mut cpu = json!({});
    if r.cpu_shares > 0 {
        cpu["shares"] = json!(r.cpu_shares);
    }
    if r.cpu_quota > 0 {
        cpu["quota"] = json!(r.cpu_quota);
    }
    if r.cpu_period > 0 {
        cpu["period"] = json!(r.cpu_period);
    }
    if !r.cpuset_cpus.is_empty() {
        cpu["cpus"] = json!(r.cpuset_cpus);
    }
    if !r.cpuset_mems.is_empty() {
        cpu["mems"] = json!(r.cpuset_mems);
    }
    if cpu.as_object().is_some_and(|o| !o.is_empty()) {
        res["cpu"] = cpu;
    }
    if !r.hugepage_limits.is_empty() {
        res["hugepageLimits"] = json!(r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect::<Vec<_>>());
    }
    if !r.unified.is_empty() {
        // cgroup v2 files by name; the runtime refuses them on v1.
        res["unified"] = json!(r.unified);
    }
    res
}

/// The device cgroup rules of the devices every container gets in its
/// `/dev` (the OCI runtime spec's default devices, the pty multiplexer and
/// its terminals), and `mknod` of any device, which is harmless once
/// opening it is denied.
fn default_device_rules() -> Vec<Value> {
    let rule = |kind: &str, major: Option<i64>, minor: Option<i64>, access: &str| json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": access});
    vec![
        rule("c", None, None, "m"),
        rule("b", None, None, "m"),
        rule("c", Some(1), Some(3), "rwm"), // null
        rule("c", Some(1), Some(5), "rwm"), // zero
        rule("c", Some(1), Some(7), "rwm"), // full
        rule("c", Some(1), Some(8), "rwm"), // random
        rule("c", Some(1), Some(9), "rwm"), // urandom
        rule("c", Some(5), Some(0), "rwm"), // tty
        rule("c", Some(5), Some(2), "rwm"), // ptmx
        rule("c", Some(136), None, "rwm"),  // pts/*
    ]
}

fn device(d: &cri::Device) -> Result<(Value, Value)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !d.container_path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "device container path {:?} must be absolute",
            d.container_path
        )));
    }
    let meta = std::fs::metadata(&d.host_path).map_err(|e| {
        Error::InvalidArgument(format!("device {:?} on the host: {e}", d.host_path))
    })?;
    let kind = if meta.file_type().is_char_device() {
        "c"
    } else if meta.file_type().is_block_device() {
        "b"
    } else {
        return Err(Error::InvalidArgument(format!(
            "{:?} is not a device",
            d.host_path
        )));
    };
    let access = if d.permissions.is_empty() {
        "rwm"
    } else {
        d.permissions.as_str()
    };
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(Error::InvalidArgument(format!(
            "device permissions {access:?}: only r, w and m"
        )));
    }
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    Ok((
        json!({"path": d.container_path, "type": kind, "major": major, "minor": minor,
               "fileMode": meta.mode() & 0o7777, "uid": meta.uid(), "gid": meta.gid()}),
        json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": access}),
    ))
}

fn lookup_uid_gid(passwd: &str, uid: u32) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse::<u32>().ok()? == uid)
            .then(|| f[3].parse().ok())
            .flatten()
    })
}

/// The CRI's conditions for a recursive read-only mount (KEP-3857): read-only,
/// private propagation, and a handler that can do it.
fn check_recursive_read_only(m: &cri::Mount, propagation: &str, supported: bool) -> Result<()> {
    if !m.readonly {
        return Err(Error::InvalidArgument(format!(
            "mount {:?}: recursive_read_only needs readonly",
            m.container_path
        )));
    }
    if propagation != "rprivate" {
        return Err(Error::InvalidArgument(format!(
            "mount {:?}: recursive_read_only needs private propagation",
            m.container_path
        )));
    }
    if !supported {
        return Err(Error::InvalidArgument(format!(
            "mount {:?}: recursive_read_only is not supported by this runtime handler (see Status' runtime_handlers)",
            m.container_path
        )));
    }
    Ok(())
}

fn bind(dest: &str, source: &Path, readonly: bool, propagation: &str) -> Value {
    let mut options = vec!["rbind", propagation];
    options.push(if readonly { "ro" } else { "rw" });
    json!({"destination": dest, "type": "bind", "source": source, "options": options})
}

/// The highest oom_score_adj we can hand out is no lower than our own:
/// lowering it needs CAP_SYS_RESOURCE, which a host may not give us.
fn clamp_oom(want: i64) -> i64 {
    let ours: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    want.clamp(ours, 1000)
}

pub fn generate(input: &SpecInput<'_>) -> Result<Spec> {
    let c = input.config;
    let sc = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let mut spec =
        serde_json::to_value(Spec::default()).map_err(|e| Error::Internal(e.to_string()))?;

    // Process.
    let (uid, gid, extra) = user(c, input.image_config, input.rootfs)?;
    let cwd = if !c.working_dir.is_empty() {
        c.working_dir.clone()
    } else {
        input.image_config["config"]["WorkingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_string()
    };
    if !cwd.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "working_dir {cwd:?} must be absolute"
        )));
    }
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    if let Some(cap) = &sc.capabilities {
        let norm = |s: &String| {
            if s.starts_with("CAP_") {
                s.clone()
            } else {
                format!("CAP_{s}")
            }
        };
        if cap.add_capabilities.iter().any(|a| a == "ALL") {
            caps = ALL_CAPS.iter().map(|s| s.to_string()).collect();
        }
        if cap.drop_capabilities.iter().any(|d| d == "ALL") {
            caps.clear();
        }
        caps.retain(|k| !cap.drop_capabilities.iter().map(norm).any(|d| &d == k));
        for a in &cap.add_capabilities {
            if a != "ALL" && !caps.contains(&norm(a)) {
                caps.push(norm(a));
            }
        }
    }
    if sc.privileged {
        caps = ALL_CAPS.iter().map(|s| s.to_string()).collect();
    }
    let held = host_caps();
    caps.retain(|c| held.contains(&c.as_str()));
    let seccomp = if sc.privileged {
        None
    } else {
        match sc.seccomp.as_ref() {
            None => None,
            Some(p) => match cri::security_profile::ProfileType::try_from(p.profile_type) {
                Ok(cri::security_profile::ProfileType::Unconfined) => None,
                Ok(cri::security_profile::ProfileType::Localhost) => {
                    Some(localhost_seccomp(&p.localhost_ref)?)
                }
                _ => Some(crate::seccomp::runtime_default(&caps)),
            },
        }
    };
    let caps = json!(caps);
    spec["process"] = json!({
        "terminal": c.tty,
        "user": {"uid": uid, "gid": gid, "additionalGids": extra},
        "args": command_line(c, input.image_config)?,
        "env": environment(c, input.image_config)?,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": sc.no_new_privs,
    });
    if let Some(profile) = input.apparmor {
        spec["process"]["apparmorProfile"] = json!(profile);
    }
    if let Some(r) = c.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        if r.oom_score_adj != 0 {
            spec["process"]["oomScoreAdj"] = json!(clamp_oom(r.oom_score_adj));
        }
    }

    spec["root"] = json!({"path": input.rootfs, "readonly": sc.readonly_rootfs});
    if !input.pod.hostname.is_empty() && input.uts_ns.is_some() {
        spec["hostname"] = json!(input.pod.hostname);
    } else {
        spec.as_object_mut().map(|o| o.remove("hostname"));
    }

    // Mounts: the pod's files, then the config's own.
    let mounts = spec["mounts"]
        .as_array_mut()
        .ok_or_else(|| Error::Internal("base spec has no mounts".into()))?;
    for (dest, file) in [
        ("/etc/hosts", "hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
        ("/etc/hostname", "hostname"),
    ] {
        if !c.mounts.iter().any(|m| m.container_path == dest) {
            mounts.push(bind(dest, &input.pod_dir.join(file), false, "rprivate"));
        }
    }
    for (dest, host) in input.volumes {
        mounts.push(bind(dest, host, false, "rprivate"));
    }
    let mut rootfs_propagation: Option<&str> = None;
    for (i, m) in c.mounts.iter().enumerate() {
        if !m.container_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "mount container_path {:?} must be absolute",
                m.container_path
            )));
        }
        // An image volume is read-only whatever the mount says: its
        // overlay has nowhere to write.
        let (host, readonly) = match input.image_mounts.get(&i) {
            Some(source) => (source.clone(), true),
            None if crate::image_volume::is_image_mount(m) => {
                return Err(Error::Internal(format!(
                    "image volume {:?} was not mounted",
                    m.container_path
                )))
            }
            None => (PathBuf::from(&m.host_path), m.readonly),
        };
        if !input.image_mounts.contains_key(&i) && (m.host_path.is_empty() || !host.exists()) {
            return Err(Error::InvalidArgument(format!(
                "mount host_path {:?} does not exist",
                m.host_path
            )));
        }
        let propagation = match cri::MountPropagation::try_from(m.propagation) {
            Ok(cri::MountPropagation::PropagationHostToContainer) => "rslave",
            Ok(cri::MountPropagation::PropagationBidirectional) => "rshared",
            _ => "rprivate",
        };
        mounts.retain(|x| x["destination"] != json!(m.container_path));
        let mut mount = bind(&m.container_path, &host, readonly, propagation);
        if m.recursive_read_only {
            check_recursive_read_only(m, propagation, input.recursive_read_only)?;
            // `ro` leaves the mounts below the bind writable; `rro` makes
            // the runtime set read-only on every one (mount_setattr).
            if let Some(options) = mount["options"].as_array_mut() {
                options.push(json!("rro"));
            }
        }
        mounts.push(mount);
        // Propagation back out of (or into) the container needs its root
        // mount to take part too.
        match propagation {
            "rshared" => rootfs_propagation = Some("rshared"),
            "rslave" if rootfs_propagation.is_none() => rootfs_propagation = Some("rslave"),
            _ => {}
        }
    }
    if let Some(p) = rootfs_propagation {
        spec["linux"]["rootfsPropagation"] = json!(p);
    }

    // Namespaces: the pod's network, IPC and UTS; its own PID and mount.
    let mut ns = vec![json!({"type": "mount"})];
    match &input.pid {
        PidNamespace::Private => ns.push(json!({"type": "pid"})),
        PidNamespace::Join(p) => ns.push(json!({"type": "pid", "path": p})),
        PidNamespace::Host => {}
    }
    for (kind, path) in [
        ("network", input.netns),
        ("ipc", input.ipc_ns),
        ("uts", input.uts_ns),
    ] {
        if let Some(p) = path {
            ns.push(json!({"type": kind, "path": p}));
        }
    }
    spec["linux"]["namespaces"] = json!(ns);
    spec["linux"]["cgroupsPath"] = json!(input.cgroups_path);

    spec["linux"]["resources"] = match c.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        Some(r) => oci_resources(r),
        None => json!({}),
    };
    // Deny-all first: a device cgroup without it starts from allow-all on
    // runc, crun and youki alike, and the container could open any host
    // device it can mknod. Then the devices every container has, then the
    // requested ones.
    let mut rules = vec![json!({"allow": false, "access": "rwm"})];
    rules.extend(default_device_rules());
    if !c.devices.is_empty() {
        let mut nodes = Vec::new();
        for d in &c.devices {
            let (node, rule) = device(d)?;
            nodes.push(node);
            rules.push(rule);
        }
        spec["linux"]["devices"] = json!(nodes);
    }
    spec["linux"]["resources"]["devices"] = json!(rules);
    if sc.privileged {
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
    } else {
        if !sc.masked_paths.is_empty() {
            spec["linux"]["maskedPaths"] = json!(sc.masked_paths);
        }
        if !sc.readonly_paths.is_empty() {
            spec["linux"]["readonlyPaths"] = json!(sc.readonly_paths);
        }
    }
    if let Some(profile) = seccomp {
        spec["linux"]["seccomp"] = profile;
    }
    let annotations: HashMap<String, String> = c.annotations.clone();
    spec["annotations"] = json!(annotations);

    serde_json::from_value(spec)
        .map_err(|e| Error::Internal(format!("generated an invalid OCI spec: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Value {
        json!({"config": {"Entrypoint": ["/ep"], "Cmd": ["default"], "Env": ["PATH=/bin", "A=image"], "User": "app"}})
    }

    #[test]
    fn seccomp_profiles_translate() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p.json");
        std::fs::write(
            &p,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],"syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let v = localhost_seccomp(&format!("localhost/{}", p.display())).unwrap();
        assert_eq!(
            v["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
        );
        assert_eq!(v["syscalls"][0]["names"], json!(["chmod"]));
        // The result must be a valid OCI seccomp section.
        let _: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(v).unwrap();
        assert!(localhost_seccomp("relative.json").is_err());
        assert!(localhost_seccomp("/nonexistent/profile.json").is_err());
        // Devices and FIFOs are refused without reading them.
        for special in ["/dev/zero", "/dev/null"] {
            let e = localhost_seccomp(special).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        let fifo = d.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(localhost_seccomp(fifo.to_str().unwrap()).is_err());
        let big = d.path().join("big.json");
        std::fs::write(&big, vec![b' '; (MAX_PROFILE_BYTES + 1) as usize]).unwrap();
        let e = localhost_seccomp(big.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn command_follows_cri_rules() {
        let img = image();
        let mut c = cri::ContainerConfig::default();
        assert_eq!(command_line(&c, &img).unwrap(), ["/ep", "default"]);
        c.args = vec!["x".into()];
        assert_eq!(command_line(&c, &img).unwrap(), ["/ep", "x"]);
        c.command = vec!["/bin/sh".into()];
        assert_eq!(command_line(&c, &img).unwrap(), ["/bin/sh", "x"]);
        c.args.clear();
        assert_eq!(command_line(&c, &img).unwrap(), ["/bin/sh"]);
        assert!(command_line(&cri::ContainerConfig::default(), &json!({})).is_err());
    }

    #[test]
    fn recursive_read_only_needs_readonly_private_and_a_capable_handler() {
        let m = cri::Mount {
            container_path: "/d".into(),
            readonly: true,
            recursive_read_only: true,
            ..Default::default()
        };
        assert!(check_recursive_read_only(&m, "rprivate", true).is_ok());
        let refused = |m: &cri::Mount, p: &str, ok: bool, word: &str| {
            assert!(matches!(
                check_recursive_read_only(m, p, ok),
                Err(Error::InvalidArgument(msg)) if msg.contains(word)
            ));
        };
        refused(&m, "rslave", true, "propagation");
        refused(&m, "rshared", true, "propagation");
        refused(&m, "rprivate", false, "not supported");
        let rw = cri::Mount {
            readonly: false,
            ..m.clone()
        };
        refused(&rw, "rprivate", true, "readonly");
    }

    #[test]
    fn env_merges_by_name() {
        let c = cri::ContainerConfig {
            envs: vec![
                cri::KeyValue {
                    key: "A".into(),
                    value: "mine".into(),
                },
                cri::KeyValue {
                    key: "B".into(),
                    value: "b".into(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            environment(&c, &image()).unwrap(),
            ["PATH=/bin", "A=mine", "B=b"]
        );
        assert!(environment(&c, &json!({})).unwrap()[0].starts_with("PATH="));
        let binary = cri::ContainerConfig {
            envs: vec![cri::KeyValue {
                key: "BIN".into(),
                value: vec![0xff, 0xfe],
            }],
            ..Default::default()
        };
        assert!(matches!(
            environment(&binary, &image()),
            Err(Error::InvalidArgument(m)) if m.contains("BIN")
        ));
    }

    #[test]
    fn users_resolve_against_the_rootfs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let c = cri::ContainerConfig::default();
        assert_eq!(
            user(&c, &image(), d.path()).unwrap(),
            (1000, 1001, vec![1001])
        );
        let img = json!({"config": {"User": "app:staff"}});
        assert_eq!(user(&c, &img, d.path()).unwrap(), (1000, 50, vec![50]));
        let img = json!({"config": {"User": "nobody"}});
        assert!(user(&c, &img, d.path()).is_err());
        let c = cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    run_as_user: Some(cri::Int64Value { value: 1000 }),
                    run_as_group: Some(cri::Int64Value { value: 7 }),
                    supplemental_groups: vec![8, 9],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            user(&c, &json!({}), d.path()).unwrap(),
            (1000, 7, vec![7, 8, 9])
        );
    }

    #[test]
    fn hostile_account_files_are_neither_followed_nor_read_without_end() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("passwd"), "alice:x:4242:4242::/:/bin/sh\n").unwrap();
        std::fs::write(host.path().join("group"), "hostgrp:x:4343:root\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(host.path().join("passwd"), d.path().join("etc/passwd"))
            .unwrap();
        std::os::unix::fs::symlink(host.path().join("group"), d.path().join("etc/group")).unwrap();
        let c = cri::ContainerConfig::default();
        // The host's alice is not the image's, nor are the host's groups
        // root's: links to nothing in the image are refused, since the
        // runtime would follow them in the container.
        for img in [json!({"config": {"User": "alice"}}), json!({})] {
            let e = user(&c, &img, d.path()).unwrap_err();
            assert!(e.to_string().contains("/etc/passwd"), "{e}");
            assert_eq!(
                tonic::Status::from(e).code(),
                tonic::Code::FailedPrecondition
            );
        }
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        let e = user(&c, &json!({}), d.path()).unwrap_err();
        assert!(e.to_string().contains("/etc/group"), "{e}");

        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join("etc/passwd")).unwrap();
        std::fs::create_dir(d.path().join("dev")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.path().join("dev/zero").as_path(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = user(&c, &json!({}), d.path()).unwrap_err();
        assert!(e.to_string().contains("mounts over"), "{e}");
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::fs::rename(d.path().join("dev/zero"), d.path().join("etc/passwd")).unwrap();
        for img in [json!({"config": {"User": "alice"}}), json!({})] {
            let e = user(&c, &img, d.path()).unwrap_err();
            assert!(
                e.to_string().contains("/etc/passwd") && e.to_string().contains("FIFO"),
                "{e}"
            );
            assert_eq!(
                tonic::Status::from(e).code(),
                tonic::Code::FailedPrecondition
            );
        }
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), vec![b'#'; 5 << 20]).unwrap();
        let e = user(&c, &json!({}), d.path()).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn device_rules_start_with_deny_all() {
        let d = tempfile::tempdir().unwrap();
        let pod = cri::PodSandboxConfig::default();
        let img = json!({"config": {"Cmd": ["/bin/sh"]}});
        for resources in [
            None,
            Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
        ] {
            let with_resources = resources.is_some();
            let c = cri::ContainerConfig {
                linux: Some(cri::LinuxContainerConfig {
                    resources,
                    ..Default::default()
                }),
                devices: vec![cri::Device {
                    container_path: "/dev/mine".into(),
                    host_path: "/dev/null".into(),
                    permissions: "rw".into(),
                }],
                ..Default::default()
            };
            let spec = generate(&SpecInput {
                id: "c1",
                config: &c,
                pod: &pod,
                image_config: &img,
                rootfs: d.path(),
                pod_dir: d.path(),
                netns: None,
                ipc_ns: None,
                uts_ns: None,
                pid: PidNamespace::Private,
                cgroups_path: "/gantry/c1",
                volumes: &[],
                image_mounts: &Default::default(),
                apparmor: None,
                recursive_read_only: false,
            })
            .unwrap();
            let v = serde_json::to_value(&spec).unwrap();
            let rules = v["linux"]["resources"]["devices"].as_array().unwrap();
            let deny_all = |r: &Value| {
                r["allow"] == json!(false)
                    && r["access"] == json!("rwm")
                    && r["major"].is_null()
                    && r["minor"].is_null()
                    && (r["type"].is_null() || r["type"] == json!("a"))
            };
            assert!(deny_all(&rules[0]), "resources {with_resources}: {rules:?}");
            assert_eq!(rules.iter().filter(|r| deny_all(r)).count(), 1);
            assert!(rules[1..].iter().all(|r| r["allow"] == json!(true)));
            let last = rules.last().unwrap();
            assert_eq!(
                (
                    &last["type"],
                    &last["major"],
                    &last["minor"],
                    &last["access"]
                ),
                (&json!("c"), &json!(1), &json!(3), &json!("rw")),
                "the requested device comes last"
            );
            assert!(rules.iter().any(|r| r["major"] == json!(136)), "pts");
            if with_resources {
                assert_eq!(v["linux"]["resources"]["memory"]["limit"], json!(64 << 20));
            }
        }
    }

    #[test]
    fn supplemental_groups_merge_with_the_images_unless_strict() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "app:x:1000:1000::/:/bin/sh
",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "app:x:1000:\nwheel:x:10:root,app\naudio:x:29:other\nvideo:x:44: app \n",
        )
        .unwrap();
        let with = |policy: cri::SupplementalGroupsPolicy| cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    run_as_user: Some(cri::Int64Value { value: 1000 }),
                    supplemental_groups: vec![5000, 10],
                    supplemental_groups_policy: policy as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let merged = user(
            &with(cri::SupplementalGroupsPolicy::Merge),
            &json!({}),
            d.path(),
        );
        assert_eq!(merged.unwrap(), (1000, 1000, vec![1000, 10, 44, 5000]));
        let strict = user(
            &with(cri::SupplementalGroupsPolicy::Strict),
            &json!({}),
            d.path(),
        );
        assert_eq!(strict.unwrap(), (1000, 1000, vec![1000, 10, 5000]));
    }

    #[test]
    fn image_volumes_are_clean_and_skip_mounted_paths() {
        let img = json!({"config": {"Volumes": {"/data/": {}, "/var//log": {}, "/m": {}}}});
        let mounts = vec![cri::Mount {
            container_path: "/m".into(),
            ..Default::default()
        }];
        assert_eq!(
            image_volumes(&img, &mounts).unwrap(),
            vec!["/data".to_string(), "/var/log".to_string()]
        );
        for bad in ["relative", "/a/../../etc"] {
            let img = json!({"config": {"Volumes": {bad: {}}}});
            assert!(image_volumes(&img, &[]).is_err(), "{bad}");
        }
        assert!(image_volumes(&json!({"config": {}}), &[])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn devices_are_checked_and_allowed_in_the_cgroup() {
        let d = |host: &str, perms: &str| cri::Device {
            container_path: "/dev/xnull".into(),
            host_path: host.into(),
            permissions: perms.into(),
        };
        let (node, rule) = device(&d("/dev/null", "rw")).unwrap();
        assert_eq!(node["path"], "/dev/xnull");
        assert_eq!(
            (
                node["type"].as_str(),
                node["major"].as_u64(),
                node["minor"].as_u64()
            ),
            (Some("c"), Some(1), Some(3))
        );
        assert_eq!(
            rule,
            json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"})
        );
        assert!(device(&d("/etc/hostname", "rw")).is_err(), "not a device");
        assert!(device(&d("/dev/nonexistent-device", "rw")).is_err());
        assert!(device(&d("/dev/null", "rwx")).is_err(), "bad permissions");
        let mut relative = d("/dev/null", "r");
        relative.container_path = "dev/x".into();
        assert!(device(&relative).is_err());
    }
}
