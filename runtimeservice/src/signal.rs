//! Stop signals (CRI 1.33): the CRI `Signal` enum, the image's `StopSignal`
//! text and the signal numbers the runtime is asked to send, and which one
//! a container is stopped with.

use gantry_proto::v1 as cri;
use serde_json::Value;

use crate::error::{Error, Result};

/// glibc keeps the kernel's first two real-time signals for itself, so
/// user space (and `runc kill`, and Go's tables containerd uses) counts
/// SIGRTMIN from 34.
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// The Linux signal number of a CRI signal; `None` for RUNTIME_DEFAULT.
pub fn number(sig: cri::Signal) -> Option<i32> {
    use cri::Signal as S;
    Some(match sig {
        S::RuntimeDefault => return None,
        S::Sigabrt | S::Sigiot => libc::SIGABRT,
        S::Sigalrm => libc::SIGALRM,
        S::Sigbus => libc::SIGBUS,
        S::Sigchld | S::Sigcld => libc::SIGCHLD,
        S::Sigcont => libc::SIGCONT,
        S::Sigfpe => libc::SIGFPE,
        S::Sighup => libc::SIGHUP,
        S::Sigill => libc::SIGILL,
        S::Sigint => libc::SIGINT,
        S::Sigio | S::Sigpoll => libc::SIGIO,
        S::Sigkill => libc::SIGKILL,
        S::Sigpipe => libc::SIGPIPE,
        S::Sigprof => libc::SIGPROF,
        S::Sigpwr => libc::SIGPWR,
        S::Sigquit => libc::SIGQUIT,
        S::Sigsegv => libc::SIGSEGV,
        S::Sigstkflt => libc::SIGSTKFLT,
        S::Sigstop => libc::SIGSTOP,
        S::Sigsys => libc::SIGSYS,
        S::Sigterm => libc::SIGTERM,
        S::Sigtrap => libc::SIGTRAP,
        S::Sigtstp => libc::SIGTSTP,
        S::Sigttin => libc::SIGTTIN,
        S::Sigttou => libc::SIGTTOU,
        S::Sigurg => libc::SIGURG,
        S::Sigusr1 => libc::SIGUSR1,
        S::Sigusr2 => libc::SIGUSR2,
        S::Sigvtalrm => libc::SIGVTALRM,
        S::Sigwinch => libc::SIGWINCH,
        S::Sigxcpu => libc::SIGXCPU,
        S::Sigxfsz => libc::SIGXFSZ,
        // The enum lists SIGRTMIN, +1 .. +15, MAX-14 .. -1, SIGRTMAX as
        // 35..=65: one above the signal number each.
        rt => rt as i32 - 1,
    })
}

/// The CRI signal of a signal number, the first name the enum has for it.
fn from_number(n: i32) -> Option<cri::Signal> {
    (1..=65)
        .filter_map(|v| cri::Signal::try_from(v).ok())
        .find(|s| number(*s) == Some(n))
}

/// Parses an image's `StopSignal` as Docker writes it: `SIGQUIT`, `QUIT`,
/// `3`, `SIGRTMIN+3` or `RTMAX-2`, in any case.
pub fn parse(text: &str) -> Option<cri::Signal> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Ok(n) = name.parse::<i32>() {
        return from_number(n);
    }
    let offset = |rest: &str| rest.parse::<i32>().ok().filter(|n| (0..=30).contains(n));
    if let Some(rest) = name.strip_prefix("RTMIN+") {
        return from_number(SIGRTMIN + offset(rest)?);
    }
    if let Some(rest) = name.strip_prefix("RTMAX-") {
        return from_number(SIGRTMAX - offset(rest)?);
    }
    cri::Signal::from_str_name(&format!("SIG{name}")).filter(|s| *s != cri::Signal::RuntimeDefault)
}

/// The signal StopContainer sends first: the container config's, else the
/// image's `StopSignal`, else SIGTERM. A signal that cannot be sent is
/// refused at create time rather than discovered at stop time.
pub fn stop_signal(config: &cri::ContainerConfig, image: &Value) -> Result<cri::Signal> {
    let asked = cri::Signal::try_from(config.stop_signal).map_err(|_| {
        Error::InvalidArgument(format!(
            "stop_signal {} is not a CRI signal",
            config.stop_signal
        ))
    })?;
    if asked != cri::Signal::RuntimeDefault {
        return Ok(asked);
    }
    match image["config"]["StopSignal"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        Some(text) => parse(text).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the image's StopSignal {:?} is not a signal",
                text.chars().take(32).collect::<String>()
            ))
        }),
        None => Ok(cri::Signal::Sigterm),
    }
}

/// What a container record holds (records from before stop signals hold
/// 0): the signal to send and to report.
pub fn recorded(value: i32) -> cri::Signal {
    match cri::Signal::try_from(value) {
        Ok(cri::Signal::RuntimeDefault) | Err(_) => cri::Signal::Sigterm,
        Ok(sig) => sig,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_cri_signal_has_a_distinct_meaning() {
        assert_eq!(number(cri::Signal::RuntimeDefault), None);
        assert_eq!(number(cri::Signal::Sigterm), Some(15));
        assert_eq!(number(cri::Signal::Sigquit), Some(3));
        assert_eq!(number(cri::Signal::Sigrtmin), Some(34));
        assert_eq!(number(cri::Signal::Sigrtminplus15), Some(49));
        assert_eq!(number(cri::Signal::Sigrtmaxminus14), Some(50));
        assert_eq!(number(cri::Signal::Sigrtmax), Some(64));
        // Aliases share a number; everything else is one to one.
        let mut numbers: Vec<i32> = (1..=65)
            .filter_map(|v| number(cri::Signal::try_from(v).ok()?))
            .collect();
        assert_eq!(numbers.len(), 65);
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), 62);
        assert!(numbers.iter().all(|n| (1..=64).contains(n)));
    }

    #[test]
    fn image_stop_signals_parse_as_docker_writes_them() {
        assert_eq!(parse("SIGQUIT"), Some(cri::Signal::Sigquit));
        assert_eq!(parse("quit"), Some(cri::Signal::Sigquit));
        assert_eq!(parse("3"), Some(cri::Signal::Sigquit));
        assert_eq!(parse("SIGPOLL"), Some(cri::Signal::Sigpoll));
        assert_eq!(parse("6"), Some(cri::Signal::Sigabrt));
        assert_eq!(parse("SIGRTMIN+3"), Some(cri::Signal::Sigrtminplus3));
        assert_eq!(parse("RTMAX-2"), Some(cri::Signal::Sigrtmaxminus2));
        assert_eq!(parse("sigrtmin"), Some(cri::Signal::Sigrtmin));
        for bad in [
            "",
            "SIG",
            "BOGUS",
            "0",
            "65",
            "-1",
            "RTMIN+31",
            "RUNTIME_DEFAULT",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn config_wins_over_image_over_sigterm() {
        let image = json!({"config": {"StopSignal": "SIGUSR1"}});
        let mut config = cri::ContainerConfig::default();
        assert_eq!(stop_signal(&config, &image).unwrap(), cri::Signal::Sigusr1);
        assert_eq!(
            stop_signal(&config, &json!({})).unwrap(),
            cri::Signal::Sigterm
        );
        config.stop_signal = cri::Signal::Sigint as i32;
        assert_eq!(stop_signal(&config, &image).unwrap(), cri::Signal::Sigint);
        config.stop_signal = 99;
        assert!(matches!(
            stop_signal(&config, &image),
            Err(Error::InvalidArgument(_))
        ));
        let bad = json!({"config": {"StopSignal": "SIGNOPE"}});
        assert!(matches!(
            stop_signal(&cri::ContainerConfig::default(), &bad),
            Err(Error::InvalidArgument(m)) if m.contains("SIGNOPE")
        ));
        assert_eq!(recorded(0), cri::Signal::Sigterm);
        assert_eq!(
            recorded(cri::Signal::Sigwinch as i32),
            cri::Signal::Sigwinch
        );
    }
}
