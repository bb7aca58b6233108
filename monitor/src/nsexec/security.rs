//! Capabilities, the seccomp filter (compiled with libseccomp from the
//! spec's profile), the LSM labels and the rlimits an exec gets.

use super::*;

/// A capability named as in the OCI spec; `None` for a name this build
/// does not know (skipped, as runc does with a warning).
pub fn parse_capability(name: &str) -> Option<caps::Capability> {
    name.trim().to_ascii_uppercase().parse().ok()
}

pub(super) fn cap_set(names: &[String]) -> caps::CapsHashSet {
    names.iter().filter_map(|n| parse_capability(n)).collect()
}

/// The kernel's highest capability number: the bounding set has no bits
/// beyond it, and dropping one there fails.
pub(super) fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

pub(super) fn caps_err(what: &str) -> impl FnOnce(caps::errors::CapsError) -> ExecError + '_ {
    move |e| ExecError::Caps(format!("{what}: {e}"))
}

pub(super) fn seccomp_err(
    what: &str,
) -> impl FnOnce(libseccomp::error::SeccompError) -> ExecError + '_ {
    move |e| ExecError::Seccomp(format!("{what}: {e}"))
}

/// An OCI seccomp action. ERRNO and TRACE default to EPERM, as runc does.
pub(super) fn seccomp_action(name: &str, errno: Option<u32>) -> Result<ScmpAction> {
    let ret = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    match name {
        "SCMP_ACT_ERRNO" => Ok(ScmpAction::Errno(ret)),
        "SCMP_ACT_TRACE" => Ok(ScmpAction::Trace(ret.clamp(0, u16::MAX as i32) as u16)),
        // A listener would need a seccomp agent to hand the fd to.
        "SCMP_ACT_NOTIFY" => Err(ExecError::Seccomp(
            "SCMP_ACT_NOTIFY is not supported".into(),
        )),
        other => ScmpAction::from_str(other, None)
            .map_err(|_| ExecError::Seccomp(format!("unknown action {other:?}"))),
    }
}

pub(super) fn seccomp_op(arg: &SyscallArg) -> Result<ScmpArgCompare> {
    if arg.index > 5 {
        return Err(ExecError::Seccomp(format!(
            "argument index {} out of range",
            arg.index
        )));
    }
    let (op, datum) = match arg.op.as_str() {
        "SCMP_CMP_NE" => (ScmpCompareOp::NotEqual, arg.value),
        "SCMP_CMP_LT" => (ScmpCompareOp::Less, arg.value),
        "SCMP_CMP_LE" => (ScmpCompareOp::LessOrEqual, arg.value),
        "SCMP_CMP_EQ" => (ScmpCompareOp::Equal, arg.value),
        "SCMP_CMP_GE" => (ScmpCompareOp::GreaterEqual, arg.value),
        "SCMP_CMP_GT" => (ScmpCompareOp::Greater, arg.value),
        // OCI puts the mask in value and the expected bits in valueTwo.
        "SCMP_CMP_MASKED_EQ" => (ScmpCompareOp::MaskedEqual(arg.value), arg.value_two),
        other => return Err(ExecError::Seccomp(format!("unknown comparison {other:?}"))),
    };
    Ok(ScmpArgCompare::new(arg.index, op, datum))
}

/// Compiles an OCI `linux.seccomp` profile. The no-new-privileges bit is
/// left to the caller (libseccomp would otherwise set it on load, which
/// the spec may not want). Syscall names this libseccomp does not know are
/// skipped; a rule whose action is the default one is redundant (and
/// refused by libseccomp), so it is skipped too.
pub fn compile_seccomp(s: &Seccomp) -> Result<ScmpFilterContext> {
    if !s.listener_path.is_empty() {
        return Err(ExecError::Seccomp(
            "listenerPath (seccomp notify) is not supported".into(),
        ));
    }
    let default = seccomp_action(&s.default_action, s.default_errno_ret)?;
    let mut f = ScmpFilterContext::new(default).map_err(seccomp_err("creating the filter"))?;
    f.set_ctl_nnp(false)
        .map_err(seccomp_err("leaving no_new_privs alone"))?;
    for a in &s.architectures {
        let arch: ScmpArch = a
            .parse()
            .map_err(|_| ExecError::Seccomp(format!("unknown architecture {a:?}")))?;
        if !f.is_arch_present(arch).unwrap_or(false) {
            f.add_arch(arch)
                .map_err(seccomp_err(&format!("adding architecture {a}")))?;
        }
    }
    for flag in &s.flags {
        match flag.as_str() {
            "SECCOMP_FILTER_FLAG_LOG" => {
                f.set_ctl_log(true).map_err(seccomp_err(flag))?;
            }
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => {
                f.set_ctl_ssb(true).map_err(seccomp_err(flag))?;
            }
            // One thread here: synchronising threads is moot.
            "SECCOMP_FILTER_FLAG_TSYNC" => {}
            other => return Err(ExecError::Seccomp(format!("unknown flag {other:?}"))),
        }
    }
    for rule in &s.syscalls {
        let action = seccomp_action(&rule.action, rule.errno_ret)?;
        if action == default {
            continue;
        }
        let conds = rule
            .args
            .iter()
            .map(seccomp_op)
            .collect::<Result<Vec<_>>>()?;
        // libseccomp refuses two conditions on one argument in a rule; such
        // a rule means any of them (one rule per condition), as in runc.
        let mut seen = BTreeSet::new();
        let repeated = rule.args.iter().any(|a| !seen.insert(a.index));
        for name in &rule.names {
            let Ok(sc) = libseccomp::ScmpSyscall::from_name(name) else {
                continue;
            };
            let what = format!("rule for {name}");
            if conds.is_empty() {
                f.add_rule(action, sc).map_err(seccomp_err(&what))?;
            } else if repeated {
                for c in &conds {
                    f.add_rule_conditional(action, sc, std::slice::from_ref(c))
                        .map_err(seccomp_err(&what))?;
                }
            } else {
                f.add_rule_conditional(action, sc, &conds)
                    .map_err(seccomp_err(&what))?;
            }
        }
    }
    Ok(f)
}

/// Where an LSM label for the command is written, and what, for the
/// kernel to apply at `execve`. AppArmor has its own attribute directory
/// on kernels with LSM stacking (`apparmor_dir`).
pub fn lsm_exec_writes(p: &Process, apparmor_dir: bool) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    if !p.apparmor_profile.is_empty() {
        let path = if apparmor_dir {
            "/proc/thread-self/attr/apparmor/exec"
        } else {
            "/proc/thread-self/attr/exec"
        };
        out.push((PathBuf::from(path), format!("exec {}", p.apparmor_profile)));
    }
    if !p.selinux_label.is_empty() {
        out.push((
            PathBuf::from("/proc/thread-self/attr/exec"),
            p.selinux_label.clone(),
        ));
    }
    out
}

pub(super) fn rlimit_resource(name: &str) -> Option<rustix::process::Resource> {
    use rustix::process::Resource as R;
    Some(match name {
        "RLIMIT_CPU" => R::Cpu,
        "RLIMIT_FSIZE" => R::Fsize,
        "RLIMIT_DATA" => R::Data,
        "RLIMIT_STACK" => R::Stack,
        "RLIMIT_CORE" => R::Core,
        "RLIMIT_RSS" => R::Rss,
        "RLIMIT_NPROC" => R::Nproc,
        "RLIMIT_NOFILE" => R::Nofile,
        "RLIMIT_MEMLOCK" => R::Memlock,
        "RLIMIT_AS" => R::As,
        "RLIMIT_LOCKS" => R::Locks,
        "RLIMIT_SIGPENDING" => R::Sigpending,
        "RLIMIT_MSGQUEUE" => R::Msgqueue,
        "RLIMIT_NICE" => R::Nice,
        "RLIMIT_RTPRIO" => R::Rtprio,
        "RLIMIT_RTTIME" => R::Rttime,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> Seccomp {
        serde_json::from_value(json).unwrap()
    }

    fn pfc(f: &ScmpFilterContext) -> String {
        let mut tmp = tempfile::tempfile().unwrap();
        f.export_pfc(&tmp).unwrap();
        use std::io::{Read, Seek};
        tmp.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut s = String::new();
        tmp.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn seccomp_profiles_compile_with_their_actions_and_arguments() {
        let s = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [
                {"names": ["read", "write", "no_such_syscall"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                          {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
                {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        }));
        let f = compile_seccomp(&s).unwrap();
        assert!(!f.get_ctl_nnp().unwrap(), "no_new_privs is ours to set");
        assert_eq!(f.get_act_default().unwrap(), ScmpAction::Errno(38));
        assert!(f.is_arch_present(ScmpArch::X86).unwrap());
        let text = pfc(&f);
        assert!(text.contains("\"chmod\""), "{text}");
        assert!(text.contains("ERRNO(1)"), "{text}");
        assert!(text.contains("KILL_PROCESS"), "{text}");
        assert!(
            text.contains("$a0.lo32 & 0x7e020000 == 0"),
            "masked: {text}"
        );
        assert!(
            !text.contains("\"getpid\""),
            "a rule with the default action is dropped: {text}"
        );
        // Two conditions on one argument: either matches.
        assert!(
            text.contains("$a0.lo32 == 1") && text.contains("$a0.lo32 == 2"),
            "{text}"
        );
    }

    #[test]
    fn seccomp_errno_defaults_to_eperm_and_bad_profiles_fail() {
        assert_eq!(
            seccomp_action("SCMP_ACT_ERRNO", None).unwrap(),
            ScmpAction::Errno(libc::EPERM)
        );
        assert_eq!(
            seccomp_action("SCMP_ACT_KILL", None).unwrap(),
            ScmpAction::KillThread
        );
        for bad in [
            serde_json::json!({"defaultAction": "SCMP_ACT_NOPE"}),
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_PDP11"]}),
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}),
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                              "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}]}),
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}),
        ] {
            assert!(compile_seccomp(&profile(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn capability_names_parse() {
        assert_eq!(
            parse_capability("CAP_NET_ADMIN"),
            Some(caps::Capability::CAP_NET_ADMIN)
        );
        assert_eq!(
            parse_capability("cap_chown"),
            Some(caps::Capability::CAP_CHOWN)
        );
        assert_eq!(parse_capability("CAP_MAKE_COFFEE"), None);
        let set = cap_set(&["CAP_KILL".into(), "CAP_BOGUS".into(), "CAP_KILL".into()]);
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn lsm_labels_are_written_only_when_set() {
        let mut p = Process::default();
        assert!(lsm_exec_writes(&p, true).is_empty());
        p.apparmor_profile = "cri-containerd.apparmor.d".into();
        assert_eq!(
            lsm_exec_writes(&p, true),
            vec![(
                PathBuf::from("/proc/thread-self/attr/apparmor/exec"),
                "exec cri-containerd.apparmor.d".into()
            )]
        );
        assert_eq!(
            lsm_exec_writes(&p, false)[0].0,
            PathBuf::from("/proc/thread-self/attr/exec")
        );
        p.apparmor_profile.clear();
        p.selinux_label = "system_u:system_r:container_t:s0:c1,c2".into();
        assert_eq!(
            lsm_exec_writes(&p, true),
            vec![(
                PathBuf::from("/proc/thread-self/attr/exec"),
                "system_u:system_r:container_t:s0:c1,c2".into()
            )]
        );
    }
}
