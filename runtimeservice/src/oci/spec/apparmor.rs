//! AppArmor for containers: which profile a container's process runs
//! under, from its CRI security context, and gantry's runtime-default
//! profile, loaded into the kernel the first time a container needs it.
//! The OCI runtime applies the profile (`process.apparmorProfile`).
//!
//! As with containerd and CRI-O, a host without AppArmor runs containers
//! unconfined whatever they ask for; a profile named by a `Localhost`
//! request must already be loaded, which gantry checks rather than
//! leaving the runtime to fail at start.

use std::io::Write;
use std::process::{Command, Stdio};

use gantry_proto::v1 as cri;
use tracing::warn;

use crate::error::{Error, Result};

/// The runtime-default profile's name.
pub const DEFAULT_PROFILE: &str = "gantry-default";

/// The runtime-default profile: what a container may do by default, minus
/// the host's kernel knobs and the mount, ptrace and signal reach a
/// container has no business with.
const DEFAULT_PROFILE_TEXT: &str = r#"#include <tunables/global>

profile gantry-default flags=(attach_disconnected,mediate_deleted) {
  #include <abstractions/base>

  # Ordinary container work: files, sockets, the capabilities the OCI
  # spec grants.
  file,
  network,
  capability,
  umount,

  # Filesystems are the runtime's to mount, before the profile applies.
  deny mount,

  # Kernel settings and secrets of the host. The runtime writes the
  # container's namespaced sysctls before the profile applies; nothing in
  # the container needs to write any.
  deny @{PROC}/sysrq-trigger rwklx,
  deny @{PROC}/kcore rwklx,
  deny @{PROC}/sys/** w,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
  deny /sys/kernel/debug/** rwklx,

  # Processes of the same profile may trace and signal each other; only
  # unconfined processes (the runtime) may signal in.
  ptrace (trace,read,tracedby,readby) peer=gantry-default,
  signal (send,receive) peer=gantry-default,
  signal (receive) peer=unconfined,
}
"#;

/// What a container asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

/// The host's AppArmor, behind a trait so the choice can be tested on
/// hosts without it.
pub trait Host {
    fn enabled(&self) -> bool;
    fn loaded(&self, profile: &str) -> bool;
    /// Loads (or replaces) a profile from its source text.
    fn load(&self, text: &str) -> Result<()>;
}

/// The running kernel, through securityfs and `apparmor_parser`.
pub struct Kernel;

impl Host for Kernel {
    fn enabled(&self) -> bool {
        std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim() == "Y")
    }

    fn loaded(&self, profile: &str) -> bool {
        // Lines are `<name> (<mode>)`.
        std::fs::read_to_string("/sys/kernel/security/apparmor/profiles").is_ok_and(|s| {
            s.lines()
                .any(|l| l.rsplit_once(" (").is_some_and(|(name, _)| name == profile))
        })
    }

    fn load(&self, text: &str) -> Result<()> {
        let mut child = Command::new("apparmor_parser")
            .arg("--replace")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io("running apparmor_parser"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(text.as_bytes())
                .map_err(Error::io("writing to apparmor_parser"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(Error::io("waiting for apparmor_parser"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Host {
                context: format!("loading AppArmor profile {DEFAULT_PROFILE}"),
                source: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .to_string()
                    .into(),
            })
        }
    }
}

/// The request in a container's security context: the `apparmor` field,
/// else the deprecated `apparmor_profile` string; `None` when neither is
/// set.
// Kubelets before 1.30 still send only the deprecated string.
#[allow(deprecated)]
pub fn requested(sc: &cri::LinuxContainerSecurityContext) -> Result<Option<Request>> {
    if let Some(p) = &sc.apparmor {
        use cri::security_profile::ProfileType;
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Some(Request::RuntimeDefault)),
            Ok(ProfileType::Unconfined) => Ok(Some(Request::Unconfined)),
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref).map(Some),
            Err(_) => Err(Error::InvalidArgument(format!(
                "unknown AppArmor profile type {}",
                p.profile_type
            ))),
        };
    }
    match sc.apparmor_profile.as_str() {
        "" => Ok(None),
        "runtime/default" => Ok(Some(Request::RuntimeDefault)),
        "unconfined" => Ok(Some(Request::Unconfined)),
        other => match other.strip_prefix("localhost/") {
            Some(name) => localhost(name).map(Some),
            None => Err(Error::InvalidArgument(format!(
                "AppArmor profile {other:?} is not runtime/default, unconfined or localhost/<name>"
            ))),
        },
    }
}

fn localhost(name: &str) -> Result<Request> {
    // kubelet passes the bare name; the `localhost/` form also occurs.
    let name = name.strip_prefix("localhost/").unwrap_or(name);
    if name.is_empty() {
        return Err(Error::InvalidArgument(
            "a Localhost AppArmor profile needs a profile name".into(),
        ));
    }
    Ok(Request::Localhost(name.to_string()))
}

/// The profile the container's process runs under, or `None` for
/// unconfined. Unspecified means the runtime default, except for
/// privileged containers, as with containerd.
pub fn profile_for(
    sc: &cri::LinuxContainerSecurityContext,
    host: &dyn Host,
) -> Result<Option<String>> {
    let request = requested(sc)?;
    if !host.enabled() {
        if let Some(Request::Localhost(name)) = &request {
            warn!(profile = %name, "AppArmor is not enabled on this host; running the container unconfined");
        }
        return Ok(None);
    }
    let request = match request {
        Some(r) => r,
        None if sc.privileged => Request::Unconfined,
        None => Request::RuntimeDefault,
    };
    match request {
        Request::Unconfined => Ok(None),
        Request::RuntimeDefault => {
            if !host.loaded(DEFAULT_PROFILE) {
                host.load(DEFAULT_PROFILE_TEXT)?;
            }
            Ok(Some(DEFAULT_PROFILE.to_string()))
        }
        Request::Localhost(name) => {
            if !host.loaded(&name) {
                return Err(Error::FailedPrecondition(format!(
                    "AppArmor profile {name:?} is not loaded on this host"
                )));
            }
            Ok(Some(name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Fake {
        enabled: bool,
        loaded: RefCell<Vec<String>>,
    }

    impl Host for Fake {
        fn enabled(&self) -> bool {
            self.enabled
        }
        fn loaded(&self, p: &str) -> bool {
            self.loaded.borrow().iter().any(|l| l == p)
        }
        fn load(&self, text: &str) -> Result<()> {
            assert!(text.contains(&format!("profile {DEFAULT_PROFILE} ")));
            self.loaded.borrow_mut().push(DEFAULT_PROFILE.into());
            Ok(())
        }
    }

    fn host(enabled: bool, loaded: &[&str]) -> Fake {
        Fake {
            enabled,
            loaded: RefCell::new(loaded.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn sc(
        profile: Option<(cri::security_profile::ProfileType, &str)>,
    ) -> cri::LinuxContainerSecurityContext {
        cri::LinuxContainerSecurityContext {
            apparmor: profile.map(|(t, r)| cri::SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    #[allow(deprecated)]
    fn requests_come_from_the_field_or_the_old_string() {
        use cri::security_profile::ProfileType::*;
        assert_eq!(requested(&sc(None)).unwrap(), None);
        assert_eq!(
            requested(&sc(Some((RuntimeDefault, "")))).unwrap(),
            Some(Request::RuntimeDefault)
        );
        assert_eq!(
            requested(&sc(Some((Localhost, "my-prof")))).unwrap(),
            Some(Request::Localhost("my-prof".into()))
        );
        assert!(requested(&sc(Some((Localhost, "")))).is_err());
        let old = |s: &str| cri::LinuxContainerSecurityContext {
            apparmor_profile: s.into(),
            ..Default::default()
        };
        assert_eq!(
            requested(&old("localhost/p1")).unwrap(),
            Some(Request::Localhost("p1".into()))
        );
        assert_eq!(
            requested(&old("unconfined")).unwrap(),
            Some(Request::Unconfined)
        );
        assert_eq!(
            requested(&old("runtime/default")).unwrap(),
            Some(Request::RuntimeDefault)
        );
        let e = requested(&old("bogus")).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }

    #[test]
    fn the_host_decides_what_applies() {
        use cri::security_profile::ProfileType::*;
        // No AppArmor: unconfined, whatever was asked.
        let none = host(false, &[]);
        assert_eq!(
            profile_for(&sc(Some((Localhost, "p"))), &none).unwrap(),
            None
        );
        assert_eq!(profile_for(&sc(None), &none).unwrap(), None);
        // With it: the default is loaded once, on first use.
        let aa = host(true, &[]);
        assert_eq!(
            profile_for(&sc(None), &aa).unwrap().as_deref(),
            Some(DEFAULT_PROFILE)
        );
        assert!(aa.loaded(DEFAULT_PROFILE));
        let privileged = cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        assert_eq!(profile_for(&privileged, &aa).unwrap(), None);
        assert_eq!(profile_for(&sc(Some((Unconfined, ""))), &aa).unwrap(), None);
        let e = profile_for(&sc(Some((Localhost, "missing"))), &aa).unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
        let aa = host(true, &["mine"]);
        assert_eq!(
            profile_for(&sc(Some((Localhost, "mine"))), &aa)
                .unwrap()
                .as_deref(),
            Some("mine")
        );
    }
}
