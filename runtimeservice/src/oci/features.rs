//! What each runtime handler can do, probed once at startup and reported in
//! `Status` (`RuntimeHandlerFeatures`): so far recursive read-only mounts
//! (KEP-3857), which need the runtime to know the `rro` mount option (its
//! `features` command lists it) and the kernel to have `mount_setattr`
//! (5.12).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// `features` prints a few KiB; anything past this is not its JSON.
const FEATURES_MAX: u64 = 1 << 20;
const FEATURES_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a kernel release (`uname -r`) is at least `major.minor`.
pub fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// Whether the output of `<runtime> features` lists the `rro` mount option.
pub fn lists_rro(features_json: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(features_json)
        .ok()
        .and_then(|v| {
            v["mountOptions"]
                .as_array()
                .map(|opts| opts.iter().any(|o| o == "rro"))
        })
        .unwrap_or(false)
}

/// Runs `<binary> <args> features`, bounded in time and size; `None` when
/// the runtime has no such command or does not answer.
fn features_output(binary: &Path, args: &[String]) -> Option<Vec<u8>> {
    let mut child = Command::new(binary)
        .args(args)
        .arg("features")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let stdout = child.stdout.take()?;
    // Read on a thread so that a runtime writing more than a pipe holds
    // cannot block the wait below.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.take(FEATURES_MAX).read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + FEATURES_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = reader.join().ok()?;
    status.filter(|s| s.success()).map(|_| out)
}

/// Whether a handler honours `Mount.recursive_read_only`.
pub fn recursive_read_only(name: &str, binary: &Path, args: &[String]) -> bool {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    if !kernel_at_least(&release, 5, 12) {
        info!(handler = name, kernel = %release, "no recursive read-only mounts: the kernel predates mount_setattr (5.12)");
        return false;
    }
    match features_output(binary, args) {
        Some(out) if lists_rro(&out) => true,
        Some(_) => {
            info!(
                handler = name,
                "no recursive read-only mounts: the runtime's features list no rro"
            );
            false
        }
        None => {
            warn!(handler = name, binary = %binary.display(), "no recursive read-only mounts: `features` gave no answer");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_at_least("6.18.44-fc-v1147", 5, 12));
        assert!(kernel_at_least("5.12.0", 5, 12));
        assert!(!kernel_at_least("5.11.22-generic", 5, 12));
        assert!(!kernel_at_least("4.19.0", 5, 12));
        assert!(!kernel_at_least("garbage", 5, 12));
        assert!(!kernel_at_least("6", 5, 12));
    }

    #[test]
    fn rro_is_read_from_the_mount_options() {
        assert!(lists_rro(br#"{"mountOptions": ["bind", "rro", "ro"]}"#));
        assert!(!lists_rro(br#"{"mountOptions": ["bind", "ro"]}"#));
        assert!(!lists_rro(br#"{"hooks": []}"#));
        assert!(!lists_rro(b"flag provided but not defined: features"));
    }

    #[test]
    fn a_runtime_without_features_has_none() {
        // `false` exits 1 to every command; `true` prints nothing.
        assert!(features_output(Path::new("/bin/false"), &[]).is_none());
        assert_eq!(
            features_output(Path::new("/bin/true"), &[]),
            Some(Vec::new())
        );
        assert!(!recursive_read_only("t", Path::new("/bin/true"), &[]));
        assert!(!recursive_read_only(
            "t",
            Path::new("/no/such/runtime"),
            &[]
        ));
    }
}
