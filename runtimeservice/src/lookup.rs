//! Finding a container's command in its root filesystem at
//! `CreateContainer`, before any runtime runs: the runtime itself runs the
//! container only at `StartContainer`, and a command the image does not
//! have should fail the create, as it does with containerd and CRI-O.
//!
//! Paths are resolved with `openat2(RESOLVE_IN_ROOT)`, so symlinks in the
//! image resolve inside the rootfs, never on the host. The check only
//! refuses what is certainly missing: a path under one of the container's
//! mounts, or one reached through a symlink (which may point into a mount),
//! is left for the runtime to judge when it runs the container.

use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// The search path runc falls back on when the process sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a look at one candidate path found.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Executable,
    /// There, but a directory or without any execute bit.
    NotExecutable,
    Missing,
    /// Could not be decided here (a mount, a symlink, an old kernel).
    Unknown,
}

/// Checks that `command` names an executable file in `rootfs`, searching
/// `env`'s `PATH` for a bare name as the runtime will, relative paths from
/// `cwd`. `mounts` are the container's mount destinations. Returns a
/// message for the caller when the command certainly cannot run.
pub fn check_command(
    rootfs: &Path,
    command: &str,
    env: &[String],
    cwd: &str,
    mounts: &[String],
) -> Result<(), String> {
    if command.is_empty() {
        return Err("the container has no command (none given, none in the image)".into());
    }
    let root = match std::fs::File::open(rootfs) {
        Ok(f) => f,
        // The rootfs is ours and mounted; not reading it is not the
        // caller's fault, and the runtime will say what is wrong.
        Err(_) => return Ok(()),
    };
    let candidates: Vec<String> = if command.contains('/') {
        vec![if command.starts_with('/') {
            command.to_string()
        } else {
            format!("{}/{command}", cwd.trim_end_matches('/'))
        }]
    } else {
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| {
                if d.starts_with('/') {
                    format!("{}/{command}", d.trim_end_matches('/'))
                } else {
                    format!("{}/{d}/{command}", cwd.trim_end_matches('/'))
                }
            })
            .collect()
    };
    let mut not_executable = None;
    for c in &candidates {
        match examine(&root, c, mounts) {
            Found::Executable | Found::Unknown => return Ok(()),
            Found::NotExecutable => {
                not_executable.get_or_insert(c.clone());
            }
            Found::Missing => {}
        }
    }
    match not_executable {
        Some(p) => Err(format!(
            "the container's command {command:?} ({p}) is not an executable file in the image"
        )),
        None if command.contains('/') => Err(format!(
            "the container's command {command:?} does not exist in the image"
        )),
        None => Err(format!(
            "the container's command {command:?} was not found in the image's PATH"
        )),
    }
}

fn under_mount(path: &str, mounts: &[String]) -> bool {
    mounts.iter().any(|m| {
        let m = m.trim_end_matches('/');
        m.is_empty() || path == m || path.starts_with(&format!("{m}/"))
    })
}

fn examine(root: &impl AsFd, path: &str, mounts: &[String]) -> Found {
    if under_mount(path, mounts) {
        return Found::Unknown;
    }
    let open = |extra: ResolveFlags| {
        rustix::fs::openat2(
            root,
            path.trim_start_matches('/'),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | extra,
        )
    };
    match open(ResolveFlags::empty()) {
        Ok(fd) => match rustix::fs::fstat(&fd) {
            Ok(st) => {
                let mode = rustix::fs::FileType::from_raw_mode(st.st_mode);
                if mode == rustix::fs::FileType::RegularFile && st.st_mode & 0o111 != 0 {
                    Found::Executable
                } else {
                    Found::NotExecutable
                }
            }
            Err(_) => Found::Unknown,
        },
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => {
            // Missing for sure only if no symlink was followed on the way:
            // a link may lead into a mount the rootfs does not show.
            match open(ResolveFlags::NO_SYMLINKS) {
                Err(e2) if e2 == rustix::io::Errno::NOENT || e2 == rustix::io::Errno::NOTDIR => {
                    Found::Missing
                }
                _ => Found::Unknown,
            }
        }
        // ENOSYS on kernels before 5.6, or anything odd: not ours to judge.
        Err(_) => Found::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("sh"), b"").unwrap();
        std::fs::set_permissions(bin.join("sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(bin.join("data"), b"").unwrap();
        std::fs::set_permissions(bin.join("data"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink("/bin/sh", bin.join("link")).unwrap();
        std::os::unix::fs::symlink("/mnt/tool", bin.join("tool")).unwrap();
        // A link out of the rootfs must resolve inside it.
        std::os::unix::fs::symlink("/usr/bin/env", bin.join("escape")).unwrap();
        std::fs::create_dir_all(d.path().join("app")).unwrap();
        d
    }

    fn check(root: &Path, cmd: &str, env: &[&str], mounts: &[&str]) -> Result<(), String> {
        let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
        let mounts: Vec<String> = mounts.iter().map(|s| s.to_string()).collect();
        check_command(root, cmd, &env, "/app", &mounts)
    }

    #[test]
    fn commands_are_found_by_path_and_by_search() {
        let d = rootfs();
        assert_eq!(check(d.path(), "/bin/sh", &[], &[]), Ok(()));
        assert_eq!(check(d.path(), "sh", &["PATH=/usr/bin:/bin"], &[]), Ok(()));
        assert_eq!(check(d.path(), "sh", &[], &[]), Ok(()), "default PATH");
        assert_eq!(check(d.path(), "link", &["PATH=/bin"], &[]), Ok(()));
        assert_eq!(
            check(d.path(), "../bin/sh", &[], &[]),
            Ok(()),
            "relative to cwd"
        );
    }

    #[test]
    fn missing_and_unexecutable_commands_are_refused() {
        let d = rootfs();
        let e = check(d.path(), "/bin/nope", &[], &[]).unwrap_err();
        assert!(
            e.contains("/bin/nope") && e.contains("does not exist"),
            "{e}"
        );
        let e = check(d.path(), "nope", &["PATH=/bin:/usr/bin"], &[]).unwrap_err();
        assert!(e.contains("PATH"), "{e}");
        let e = check(d.path(), "/bin/data", &[], &[]).unwrap_err();
        assert!(e.contains("not an executable"), "{e}");
        assert!(check(d.path(), "/app", &[], &[]).is_err(), "a directory");
        assert!(check(d.path(), "/app/x/y", &[], &[]).is_err());
        assert!(check(d.path(), "", &[], &[]).is_err());
    }

    #[test]
    fn what_the_rootfs_cannot_show_is_left_to_the_runtime() {
        let d = rootfs();
        // Under a mount: the file may well be there once it is mounted.
        assert_eq!(check(d.path(), "/data/tool", &[], &["/data"]), Ok(()));
        assert_eq!(
            check(d.path(), "tool2", &["PATH=/opt/bin"], &["/opt"]),
            Ok(())
        );
        // Through a symlink whose target is not in the image.
        assert_eq!(check(d.path(), "/bin/tool", &[], &[]), Ok(()));
        // A link pointing out of the rootfs is resolved inside it, where
        // /usr/bin/env does not exist; followed links are not judged.
        assert_eq!(check(d.path(), "/bin/escape", &[], &[]), Ok(()));
    }
}
