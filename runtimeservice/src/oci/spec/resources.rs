//! Resources: CPU, memory, hugepages and devices as the OCI `linux.resources`.

use super::*;

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
pub(super) fn default_device_rules() -> Vec<Value> {
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

pub(super) fn device(d: &cri::Device) -> Result<(Value, Value)> {
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

/// The highest oom_score_adj we can hand out is no lower than our own:
/// lowering it needs CAP_SYS_RESOURCE, which a host may not give us.
pub(super) fn clamp_oom(want: i64) -> i64 {
    let ours: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    want.clamp(ours, 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

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
