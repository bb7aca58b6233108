//! Fuzzing of OCI spec generation (time-bounded, see `gantry-fuzzkit`):
//! CRI container and pod configs and image configs built at random from
//! hostile values must give a valid spec or an error, never a panic, and
//! a spec that is produced must say what it was asked (no seccomp-less
//! unprivileged container when RuntimeDefault was asked for).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gantry_fuzzkit::{self as fuzz, Rng};
use gantry_proto::v1 as cri;
use gantry_runtimeservice::oci::spec::{generate, PidNamespace, SpecInput};
use serde_json::{json, Value};

const STRINGS: &[&str] = &[
    "",
    "/",
    "/bin/sh",
    "sh",
    "..",
    "../../etc",
    "/proc/self/root",
    "a b",
    "a=b",
    "=",
    "\u{0}",
    "ALL",
    "SYS_ADMIN",
    "CAP_SYS_ADMIN",
    "NET_RAW",
    "not-a-cap",
    "alice",
    "root",
    "0",
    "1000",
    "-1",
    "4294967296",
    "1000:1000",
    "alice:staff",
    "a:b:c",
    ":",
    "/data",
    "/dev/null",
    "/dev/zero",
    "/nonexistent",
    "localhost//nonexistent.json",
    "/dev/zero",
    "rw",
    "rwm",
    "xyz",
    "0-1",
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_forward",
    "1",
];

const NUMBERS: &[i64] = &[
    0,
    1,
    -1,
    2,
    1000,
    65535,
    65536,
    4_294_967_295,
    4_294_967_296,
    i64::MAX,
    i64::MIN,
    100_000,
    1024,
    -1000,
];

fn s(rng: &mut Rng) -> String {
    if rng.one_in(8) {
        // Now and then a random printable string.
        let n = rng.below(12);
        (0..n)
            .map(|_| (b' ' + rng.below(95) as u8) as char)
            .collect()
    } else {
        rng.pick(STRINGS).to_string()
    }
}

fn n(rng: &mut Rng) -> i64 {
    if rng.one_in(6) {
        rng.next_u64() as i64
    } else {
        *rng.pick(NUMBERS)
    }
}

fn strings(rng: &mut Rng, max: usize) -> Vec<String> {
    (0..rng.below(max + 1)).map(|_| s(rng)).collect()
}

fn map(rng: &mut Rng, max: usize) -> HashMap<String, String> {
    (0..rng.below(max + 1)).map(|_| (s(rng), s(rng))).collect()
}

fn maybe<T>(rng: &mut Rng, f: impl FnOnce(&mut Rng) -> T) -> Option<T> {
    if rng.one_in(2) {
        Some(f(rng))
    } else {
        None
    }
}

fn int64(rng: &mut Rng) -> Option<cri::Int64Value> {
    maybe(rng, |r| cri::Int64Value { value: n(r) })
}

fn namespaces(rng: &mut Rng) -> cri::NamespaceOption {
    let mut mode = || rng.below(5) as i32 - 1; // includes invalid values
    cri::NamespaceOption {
        network: mode(),
        pid: mode(),
        ipc: mode(),
        target_id: String::new(),
        ..Default::default()
    }
}

fn container(rng: &mut Rng) -> cri::ContainerConfig {
    let security = maybe(rng, |r| cri::LinuxContainerSecurityContext {
        capabilities: maybe(r, |r| cri::Capability {
            add_capabilities: strings(r, 3),
            drop_capabilities: strings(r, 3),
            ..Default::default()
        }),
        privileged: r.one_in(4),
        namespace_options: maybe(r, namespaces),
        run_as_user: int64(r),
        run_as_group: int64(r),
        run_as_username: if r.one_in(3) { s(r) } else { String::new() },
        readonly_rootfs: r.one_in(2),
        supplemental_groups: (0..r.below(4)).map(|_| n(r)).collect(),
        no_new_privs: r.one_in(2),
        masked_paths: strings(r, 3),
        readonly_paths: strings(r, 3),
        seccomp: maybe(r, |r| cri::SecurityProfile {
            profile_type: r.below(5) as i32 - 1,
            localhost_ref: s(r),
        }),
        ..Default::default()
    });
    let resources = maybe(rng, |r| cri::LinuxContainerResources {
        cpu_period: n(r),
        cpu_quota: n(r),
        cpu_shares: n(r),
        memory_limit_in_bytes: n(r),
        oom_score_adj: n(r),
        cpuset_cpus: s(r),
        cpuset_mems: s(r),
        hugepage_limits: (0..r.below(3))
            .map(|_| cri::HugepageLimit {
                page_size: s(r),
                limit: r.next_u64(),
            })
            .collect(),
        unified: map(r, 3),
        memory_swap_limit_in_bytes: n(r),
    });
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: s(rng),
            attempt: rng.next_u64() as u32,
        }),
        command: strings(rng, 3),
        args: strings(rng, 3),
        working_dir: s(rng),
        envs: (0..rng.below(4))
            .map(|_| cri::KeyValue {
                key: s(rng),
                value: s(rng).into_bytes(),
            })
            .collect(),
        mounts: (0..rng.below(4))
            .map(|_| cri::Mount {
                container_path: s(rng),
                host_path: s(rng),
                readonly: rng.one_in(2),
                propagation: rng.below(5) as i32 - 1,
                ..Default::default()
            })
            .collect(),
        devices: (0..rng.below(3))
            .map(|_| cri::Device {
                container_path: s(rng),
                host_path: s(rng),
                permissions: s(rng),
            })
            .collect(),
        labels: map(rng, 2),
        annotations: map(rng, 2),
        log_path: s(rng),
        tty: rng.one_in(2),
        stdin: rng.one_in(2),
        linux: maybe(rng, |_| cri::LinuxContainerConfig {
            resources,
            security_context: security,
        }),
        ..Default::default()
    }
}

fn pod(rng: &mut Rng) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        hostname: s(rng),
        log_directory: s(rng),
        dns_config: maybe(rng, |r| cri::DnsConfig {
            servers: strings(r, 2),
            searches: strings(r, 2),
            options: strings(r, 2),
        }),
        labels: map(rng, 2),
        annotations: map(rng, 2),
        linux: maybe(rng, |r| cri::LinuxPodSandboxConfig {
            cgroup_parent: s(r),
            sysctls: map(r, 3),
            security_context: maybe(r, |r| cri::LinuxSandboxSecurityContext {
                namespace_options: maybe(r, namespaces),
                privileged: r.one_in(4),
                run_as_user: int64(r),
                supplemental_groups: (0..r.below(3)).map(|_| n(r)).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn image(rng: &mut Rng) -> Value {
    let mut config = serde_json::Map::new();
    let mut put = |rng: &mut Rng, key: &str, v: Value| {
        if rng.one_in(2) {
            config.insert(key.into(), v);
        }
    };
    let strs = |rng: &mut Rng| json!(strings(rng, 3));
    let v = strs(rng);
    put(rng, "Env", v);
    let v = strs(rng);
    put(rng, "Cmd", v);
    let v = strs(rng);
    put(rng, "Entrypoint", v);
    let v = json!(s(rng));
    put(rng, "User", v);
    let v = json!(s(rng));
    put(rng, "WorkingDir", v);
    let vols: serde_json::Map<String, Value> =
        (0..rng.below(3)).map(|_| (s(rng), json!({}))).collect();
    put(rng, "Volumes", Value::Object(vols));
    // Values of the wrong JSON type are part of the input too.
    if rng.one_in(8) {
        config.insert("Env".into(), json!(n(rng)));
    }
    json!({"config": config})
}

fn rootfs() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("etc")).unwrap();
    std::fs::write(
        d.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:alice\n").unwrap();
    d
}

#[test]
fn fuzz_spec_generation() {
    let root = rootfs();
    let pod_dir = tempfile::tempdir().unwrap();
    let volume_host = pod_dir.path().join("volume");
    fuzz::structured("oci-spec", |rng| {
        let config = container(rng);
        let pod = pod(rng);
        let image = image(rng);
        let volumes: Vec<(String, PathBuf)> = (0..rng.below(2))
            .map(|_| (s(rng), volume_host.clone()))
            .collect();
        let pid = match rng.below(3) {
            0 => PidNamespace::Private,
            1 => PidNamespace::Host,
            _ => PidNamespace::Join(PathBuf::from(s(rng))),
        };
        let netns = PathBuf::from(s(rng));
        // Some mounts stand for image volumes already mounted.
        let image_mounts: std::collections::BTreeMap<usize, PathBuf> = (0..config.mounts.len())
            .filter(|_| rng.one_in(4))
            .map(|i| (i, volume_host.clone()))
            .collect();
        let input = SpecInput {
            id: "fuzz",
            config: &config,
            pod: &pod,
            image_config: &image,
            rootfs: root.path(),
            pod_dir: pod_dir.path(),
            netns: rng.one_in(2).then_some(netns.as_path()),
            ipc_ns: None,
            uts_ns: rng.one_in(2).then_some(Path::new("/proc/self/ns/uts")),
            pid,
            cgroups_path: "/fuzz",
            volumes: &volumes,
            image_mounts: &image_mounts,
            apparmor: None,
            recursive_read_only: rng.one_in(2),
        };
        match generate(&input) {
            Ok(spec) => {
                let sc = config
                    .linux
                    .as_ref()
                    .and_then(|l| l.security_context.as_ref());
                let asked_default = sc.is_some_and(|sc| {
                    !sc.privileged
                        && sc.seccomp.as_ref().is_some_and(|p| {
                            p.profile_type
                                == cri::security_profile::ProfileType::RuntimeDefault as i32
                        })
                });
                let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
                if asked_default {
                    assert!(
                        seccomp.is_some(),
                        "RuntimeDefault asked, no seccomp in the spec"
                    );
                }
                format!("ok {}", seccomp.is_some())
            }
            Err(e) => {
                let text: String = e
                    .to_string()
                    .split('"')
                    .step_by(2)
                    .collect::<String>()
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .collect();
                text.split_whitespace()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }
    });
}
