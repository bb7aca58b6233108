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

use crate::container::rootfs_path::{Rootfs, MAX_SMALL_FILE};
use crate::error::{Error, Result};

pub mod apparmor;
mod mounts;
mod process;
mod resources;
pub mod seccomp;
mod security;
mod user;

pub use self::{mounts::*, process::*, resources::*, security::*, user::*};

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
    /// The host source of each image volume ([`crate::container::image_volume`]), by
    /// its index in the config's mounts.
    pub image_mounts: &'a std::collections::BTreeMap<usize, PathBuf>,
    /// The AppArmor profile to run under (see [`apparmor`]).
    pub apparmor: Option<&'a str>,
    /// The handler honours the `rro` mount option (see [`crate::oci::features`]).
    pub recursive_read_only: bool,
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

pub fn generate(input: &SpecInput<'_>) -> Result<Spec> {
    let c = input.config;
    let sc = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let mut spec = serde_json::to_value(Spec::default())
        .map_err(Error::corrupt("encoding the base OCI spec"))?;

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
                _ => Some(crate::oci::spec::seccomp::runtime_default(&caps)),
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
            None if crate::container::image_volume::is_image_mount(m) => {
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

    // A failure here is gantry's bug: every step writes the spec's schema.
    serde_json::from_value(spec).map_err(Error::corrupt("generated an invalid OCI spec"))
}
