//! Capabilities and the seccomp profile a container asks for (the
//! RuntimeDefault profile is [`seccomp`], AppArmor [`apparmor`]).

use super::*;

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
pub(super) const MAX_PROFILE_BYTES: u64 = 4 << 20;

/// A profile's bytes: a regular file (a FIFO would block, a device such
/// as /dev/zero never end), at most [`MAX_PROFILE_BYTES`].
pub(super) fn read_profile(path: &Path) -> std::io::Result<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
