//! Whether this host can run pods in their own user namespace the way
//! gantry does it: an overlay of idmapped layers on the state root's
//! filesystem, checked for real at start and by `gantry check`.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{idmap, pin, IdMap, Mappings};

/// The probe's own mappings: far above what kubelet hands out (it starts
/// at 65536 and allocates upwards), and only ever seen through a mount the
/// probe removes again.
const PROBE_HOST: u32 = 0xF000_0000;

/// Tries an idmapped overlay in a scratch directory under `root` and
/// answers why it cannot work here, if it cannot. Leaves nothing behind.
pub fn idmapped_overlay(root: &Path) -> Result<(), String> {
    let scratch = root.join(format!(
        ".userns-probe-{}-{}",
        std::process::id(),
        super::next_scratch()
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    let result = try_overlay(&scratch);
    let _ = rustix::mount::unmount(scratch.join("merged"), rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn try_overlay(scratch: &Path) -> Result<(), String> {
    let dirs = ["lower", "upper", "work", "merged"].map(|d| scratch.join(d));
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let [lower, upper, work, merged] = &dirs;
    let file = lower.join("owned");
    std::fs::write(&file, b"").map_err(|e| format!("writing {}: {e}", file.display()))?;
    std::os::unix::fs::chown(&file, Some(5), Some(6)).map_err(|e| format!("chown: {e}"))?;
    let maps = Mappings {
        uid: IdMap {
            container: 0,
            host: PROBE_HOST,
            len: 65536,
        },
        gid: IdMap {
            container: 0,
            host: PROBE_HOST,
            len: 65536,
        },
    };
    let ns = pin::ephemeral(&maps).map_err(|e| format!("user namespace: {e}"))?;
    idmap::overlay(&[lower.as_path()], upper, work, merged, ns.as_fd(), &maps)
        .map_err(|e| e.to_string())?;
    let m = std::fs::metadata(merged.join("owned"))
        .map_err(|e| format!("stat through the idmapped overlay: {e}"))?;
    if (m.uid(), m.gid()) != (PROBE_HOST + 5, PROBE_HOST + 6) {
        return Err(format!(
            "the idmapped overlay shows owner {}:{}, not the mapped {}:{}",
            m.uid(),
            m.gid(),
            PROBE_HOST + 5,
            PROBE_HOST + 6
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_works_here_and_cleans_up() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Kernels since 5.19 idmap overlays; older ones must say why not.
        let verdict = idmapped_overlay(dir.path());
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        let mut v = release
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        if (major, minor) >= (5, 19) {
            verdict.unwrap();
        } else {
            assert!(!verdict.unwrap_err().is_empty());
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(dir.path().to_str().unwrap()));
    }

    #[test]
    fn a_root_that_cannot_hold_an_overlay_is_reported() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let why = idmapped_overlay(Path::new("/proc/self")).unwrap_err();
        assert!(why.contains("creating"), "{why}");
    }
}
