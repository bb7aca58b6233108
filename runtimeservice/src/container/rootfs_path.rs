//! The one way gantry touches a path inside a container's root filesystem.
//!
//! Every such path comes from an image or a CRI request, and the rootfs is
//! the image's: any component may be a symlink to `/`, to a host file, to
//! `/dev/zero`, or a FIFO. So nothing here builds a host path with
//! `rootfs.join(..)`: every path is resolved with
//! `openat2(RESOLVE_IN_ROOT)` relative to a handle on the rootfs, where
//! symlinks and `..` stay inside it as they will for the container. Files
//! are opened for reading only once they are known to be regular files
//! (opening a FIFO blocks, opening a device may act on the host's
//! hardware), and read with a size cap. Directories are created one
//! component at a time below a parent resolved the same way.
//!
//! Users: user and group resolution ([`crate::oci::spec::user`]), `WORKDIR` and
//! mount points ([`Rootfs::mkdir_all`], [`Rootfs::ensure_mount_point`]),
//! image `VOLUME` seeding ([`Rootfs::open_dir`]), and the command check at
//! `CreateContainer` ([`check_command`]): the runtime runs the container
//! only at `StartContainer`, but a command the image lacks should fail the
//! create, as it does with containerd and CRI-O. That check only refuses
//! what is certainly missing: a path under one of the container's mounts,
//! or one reached through a symlink (which may point into a mount), is left
//! for the runtime to judge.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// What the readers of small image files (`/etc/passwd`, `/etc/group`)
/// accept at most: far above any real account database, far below what
/// would hurt the daemon.
pub const MAX_SMALL_FILE: u64 = 4 << 20;

/// Why a path in a rootfs could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{path} in the container's root filesystem is not a regular file but {kind}")]
    NotRegularFile { path: String, kind: &'static str },
    #[error("{path} in the container's root filesystem is not a directory but {kind}")]
    NotDirectory { path: String, kind: &'static str },
    #[error("{path} in the container's root filesystem is larger than {cap} bytes")]
    TooLarge { path: String, cap: u64 },
    #[error("{path} in the container's root filesystem is a symlink to nothing in it")]
    DanglingSymlink { path: String },
    #[error(
        "{path} in the container's root filesystem leads to {target}, which the runtime \
         mounts over: the container would see something else there"
    )]
    UnderRuntimeMount { path: String, target: String },
    #[error("{path} cannot be resolved inside the container's root filesystem: {source}")]
    Resolve {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context} {path} in the container's root filesystem: {source}")]
    Io {
        context: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl RootfsError {
    /// Whether the image (or the request naming the path) is at fault, as
    /// opposed to the host.
    pub fn is_content_fault(&self) -> bool {
        !matches!(self, RootfsError::Io { .. })
    }
}

type Result<T> = std::result::Result<T, RootfsError>;

fn kind_of(mode: u32) -> &'static str {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of unknown type",
    }
}

/// The lexically cleaned, relative form of an absolute or relative path
/// in the rootfs: `.` dropped, `..` applied (never above the root, as
/// `RESOLVE_IN_ROOT` does), so its components can be created one by one.
fn clean(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// A handle on a container's root filesystem.
pub struct Rootfs {
    root: OwnedFd,
}

impl Rootfs {
    pub fn open(path: &Path) -> Result<Rootfs> {
        let root = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootfsError::Io {
            context: "opening",
            path: path.display().to_string(),
            source: e.into(),
        })?;
        Ok(Rootfs { root })
    }

    /// An `O_PATH` handle on `path` resolved inside the rootfs, or `None`
    /// when it does not exist there.
    pub fn resolve(&self, path: &str) -> Result<Option<OwnedFd>> {
        self.resolve_with(path, ResolveFlags::empty())
    }

    fn resolve_with(&self, path: &str, extra: ResolveFlags) -> Result<Option<OwnedFd>> {
        let rel = path.trim_start_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        match rustix::fs::openat2(
            &self.root,
            rel,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | extra,
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
            // EAGAIN: a rename raced the lookup; retrying would let a
            // hostile rootfs spin us, so it is an error like any other.
            Err(e) => Err(RootfsError::Resolve {
                path: path.to_string(),
                source: e.into(),
            }),
        }
    }

    /// The contents of the regular file `path`, at most `cap` bytes; `None`
    /// when it does not exist. FIFOs, devices, sockets and directories are
    /// refused without being opened.
    pub fn read_file(&self, path: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let Some(fd) = self.resolve(path)? else {
            return Ok(None);
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| RootfsError::Io {
            context: "examining",
            path: path.to_string(),
            source: e.into(),
        })?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(RootfsError::NotRegularFile {
                path: path.to_string(),
                kind: kind_of(st.st_mode),
            });
        }
        if u64::try_from(st.st_size).unwrap_or(u64::MAX) > cap {
            return Err(RootfsError::TooLarge {
                path: path.to_string(),
                cap,
            });
        }
        let file = std::fs::File::from(reopen(&fd, OFlags::RDONLY, path)?);
        let mut out = Vec::new();
        // The file may grow after the fstat: the cap holds for the read.
        file.take(cap + 1)
            .read_to_end(&mut out)
            .map_err(|source| RootfsError::Io {
                context: "reading",
                path: path.to_string(),
                source,
            })?;
        if out.len() as u64 > cap {
            return Err(RootfsError::TooLarge {
                path: path.to_string(),
                cap,
            });
        }
        Ok(Some(out))
    }

    /// [`Self::read_file`] for a file the runtime reads too, inside the
    /// running container (`/etc/passwd`, `/etc/group`): there, `/dev`,
    /// `/proc` and `/sys` are the runtime's, so a link that dangles in the
    /// image or leads below them could reach `/dev/zero` or a host file
    /// in the container, whatever the image shows here. Both are refused.
    pub fn read_runtime_file(&self, path: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let Some(fd) = self.resolve(path)? else {
            // Missing, or a symlink to nothing in the image?
            let rel = path.trim_start_matches('/');
            return match rustix::fs::openat2(
                &self.root,
                if rel.is_empty() { "." } else { rel },
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(_) => Err(RootfsError::DanglingSymlink {
                    path: path.to_string(),
                }),
                Err(_) => Ok(None),
            };
        };
        let target = self.inside_path(&fd, path)?;
        if ["/dev", "/proc", "/sys"]
            .iter()
            .any(|m| target == *m || target.starts_with(&format!("{m}/")))
        {
            return Err(RootfsError::UnderRuntimeMount {
                path: path.to_string(),
                target,
            });
        }
        self.read_file(path, cap)
    }

    /// Where a handle from [`Self::resolve`] lies, as a path inside the
    /// rootfs.
    fn inside_path(&self, fd: &OwnedFd, path: &str) -> Result<String> {
        let link = |fd: &OwnedFd| {
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|source| {
                RootfsError::Io {
                    context: "locating",
                    path: path.to_string(),
                    source,
                }
            })
        };
        let root = link(&self.root)?;
        let at = link(fd)?;
        let inside = at.strip_prefix(&root).map_err(|_| RootfsError::Resolve {
            path: path.to_string(),
            source: std::io::Error::other("resolved outside the rootfs"),
        })?;
        Ok(format!("/{}", inside.display()))
    }

    /// [`Self::read_file`] as text (invalid UTF-8 replaced).
    pub fn read_text(&self, path: &str, cap: u64) -> Result<Option<String>> {
        Ok(self
            .read_file(path, cap)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// [`Self::read_runtime_file`] as text (invalid UTF-8 replaced).
    pub fn read_runtime_text(&self, path: &str, cap: u64) -> Result<Option<String>> {
        Ok(self
            .read_runtime_file(path, cap)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// A readable handle on the directory `path`, or `None` when nothing
    /// is there; anything but a directory is refused.
    pub fn open_dir(&self, path: &str) -> Result<Option<OwnedFd>> {
        let Some(fd) = self.resolve(path)? else {
            return Ok(None);
        };
        self.expect_dir(&fd, path)?;
        reopen(&fd, OFlags::RDONLY | OFlags::DIRECTORY, path).map(Some)
    }

    fn expect_dir(&self, fd: &OwnedFd, path: &str) -> Result<()> {
        let st = rustix::fs::fstat(fd).map_err(|e| RootfsError::Io {
            context: "examining",
            path: path.to_string(),
            source: e.into(),
        })?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(RootfsError::NotDirectory {
                path: path.to_string(),
                kind: kind_of(st.st_mode),
            });
        }
        Ok(())
    }

    /// Creates the directory `path` and its missing parents (mode `mode`,
    /// owned by us) inside the rootfs; returns a handle on it. Each new
    /// directory is made relative to its parent's handle, so a symlink in
    /// the image can redirect it only to elsewhere inside the rootfs.
    pub fn mkdir_all(&self, path: &str, mode: u32) -> Result<OwnedFd> {
        let parts = clean(path);
        let mut cur = self
            .resolve("/")?
            .ok_or_else(|| RootfsError::DanglingSymlink { path: "/".into() })?;
        let mut prefix = String::new();
        for part in &parts {
            prefix.push('/');
            prefix.push_str(part);
            cur = match self.resolve(&prefix)? {
                Some(fd) => fd,
                None => {
                    match rustix::fs::mkdirat(&cur, part.as_str(), Mode::from_raw_mode(mode)) {
                        Ok(()) => {}
                        // Something with that name is there yet resolves
                        // to nothing: a symlink whose target is missing.
                        Err(Errno::EXIST) => {
                            return Err(RootfsError::DanglingSymlink { path: prefix })
                        }
                        Err(e) => {
                            return Err(RootfsError::Io {
                                context: "creating",
                                path: prefix,
                                source: e.into(),
                            })
                        }
                    }
                    self.resolve(&prefix)?
                        .ok_or_else(|| RootfsError::DanglingSymlink {
                            path: prefix.clone(),
                        })?
                }
            };
            self.expect_dir(&cur, &prefix)?;
        }
        Ok(cur)
    }

    /// Makes sure something exists at the mount destination `path` for the
    /// runtime to mount over: a directory when `dir`, else an empty file,
    /// with the parents created inside the rootfs. An existing entry is
    /// left as it is (the runtime judges whether it fits); a symlink whose
    /// target is missing is left to the runtime too, which resolves it
    /// inside the rootfs as we do.
    pub fn ensure_mount_point(&self, path: &str, dir: bool) -> Result<()> {
        let mut parts = clean(path);
        let Some(leaf) = parts.pop() else {
            return Ok(());
        };
        if self.resolve(path)?.is_some() {
            return Ok(());
        }
        let parent = self.mkdir_all(&parts.join("/"), 0o755)?;
        let made = if dir {
            rustix::fs::mkdirat(&parent, leaf.as_str(), Mode::from_raw_mode(0o755))
        } else {
            rustix::fs::openat(
                &parent,
                leaf.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        };
        match made {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(RootfsError::Io {
                context: "creating",
                path: path.to_string(),
                source: e.into(),
            }),
        }
    }
}

/// Opens the object an `O_PATH` handle names, through its `/proc/self/fd`
/// link: the same inode, with no path resolved again.
fn reopen(fd: &OwnedFd, flags: OFlags, path: &str) -> Result<OwnedFd> {
    rustix::fs::open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        flags | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| RootfsError::Io {
        context: "opening",
        path: path.to_string(),
        source: e.into(),
    })
}

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
) -> std::result::Result<(), String> {
    if command.is_empty() {
        return Err("the container has no command (none given, none in the image)".into());
    }
    let root = match Rootfs::open(rootfs) {
        Ok(r) => r,
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

fn examine(root: &Rootfs, path: &str, mounts: &[String]) -> Found {
    if under_mount(path, mounts) {
        return Found::Unknown;
    }
    match root.resolve(path) {
        Ok(Some(fd)) => match rustix::fs::fstat(&fd) {
            Ok(st) => {
                if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                    && st.st_mode & 0o111 != 0
                {
                    Found::Executable
                } else {
                    Found::NotExecutable
                }
            }
            Err(_) => Found::Unknown,
        },
        // Missing for sure only if no symlink was followed on the way: a
        // link may lead into a mount the rootfs does not show.
        Ok(None) => match root.resolve_with(path, ResolveFlags::NO_SYMLINKS) {
            Ok(None) => Found::Missing,
            _ => Found::Unknown,
        },
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

    fn check(
        root: &Path,
        cmd: &str,
        env: &[&str],
        mounts: &[&str],
    ) -> std::result::Result<(), String> {
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

    /// A rootfs whose account files are hostile, next to a host directory
    /// holding what the links try to reach.
    fn hostile() -> (tempfile::TempDir, tempfile::TempDir) {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), b"host-only\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        let etc = d.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("plain"), b"in the image\n").unwrap();
        std::os::unix::fs::symlink(host.path().join("secret"), etc.join("abs-escape")).unwrap();
        std::os::unix::fs::symlink(
            "../../../../../..".to_string() + &host.path().join("secret").display().to_string(),
            etc.join("dotdot-escape"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/zero", etc.join("zero")).unwrap();
        std::os::unix::fs::symlink("/", etc.join("root")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            etc.join("fifo").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        (d, host)
    }

    #[test]
    fn links_out_of_the_rootfs_stay_inside_it() {
        let (d, host) = hostile();
        let r = Rootfs::open(d.path()).unwrap();
        assert_eq!(
            r.read_file("/etc/plain", MAX_SMALL_FILE).unwrap().unwrap(),
            b"in the image\n"
        );
        // The host file exists, but not inside the rootfs.
        assert!(host.path().join("secret").exists());
        assert!(r
            .read_file("/etc/abs-escape", MAX_SMALL_FILE)
            .unwrap()
            .is_none());
        assert!(r
            .read_file("etc/dotdot-escape", MAX_SMALL_FILE)
            .unwrap()
            .is_none());
        let hostpath = host.path().join("secret").display().to_string();
        assert!(r
            .read_file(&format!("/../../..{hostpath}"), MAX_SMALL_FILE)
            .unwrap()
            .is_none());
        // `/` is the rootfs.
        assert_eq!(
            r.read_file("/etc/root/etc/plain", MAX_SMALL_FILE)
                .unwrap()
                .unwrap(),
            b"in the image\n"
        );
        assert_eq!(
            r.read_file("/../../etc/plain", MAX_SMALL_FILE)
                .unwrap()
                .unwrap(),
            b"in the image\n"
        );
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_unopened() {
        let (d, _host) = hostile();
        let r = Rootfs::open(d.path()).unwrap();
        let e = r.read_file("/etc/fifo", MAX_SMALL_FILE).unwrap_err();
        assert!(
            matches!(e, RootfsError::NotRegularFile { kind: "a FIFO", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("/etc/fifo"), "{e}");
        assert!(e.is_content_fault());
        let e = r.read_file("/etc", MAX_SMALL_FILE).unwrap_err();
        assert!(
            matches!(
                e,
                RootfsError::NotRegularFile {
                    kind: "a directory",
                    ..
                }
            ),
            "{e}"
        );
        // /dev/zero the host's device cannot be reached by a link...
        assert!(r.read_file("/etc/zero", MAX_SMALL_FILE).unwrap().is_none());
        // ...and a device node in the image is not read either.
        std::fs::create_dir(d.path().join("dev")).unwrap();
        if rustix::process::geteuid().is_root() {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                d.path().join("dev/zero").as_path(),
                FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                rustix::fs::makedev(1, 5),
            )
            .unwrap();
            let e = r.read_file("/etc/zero", MAX_SMALL_FILE).unwrap_err();
            assert!(
                matches!(
                    e,
                    RootfsError::NotRegularFile {
                        kind: "a character device",
                        ..
                    }
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn reads_are_capped() {
        let (d, _host) = hostile();
        std::fs::write(d.path().join("etc/big"), vec![b'x'; 4097]).unwrap();
        let r = Rootfs::open(d.path()).unwrap();
        let e = r.read_file("/etc/big", 4096).unwrap_err();
        assert!(matches!(e, RootfsError::TooLarge { cap: 4096, .. }), "{e}");
        assert_eq!(r.read_file("/etc/big", 4097).unwrap().unwrap().len(), 4097);
    }

    #[test]
    fn directories_are_made_inside_the_rootfs() {
        let (d, host) = hostile();
        let target = host.path().join("made");
        std::os::unix::fs::symlink(&target, d.path().join("work")).unwrap();
        std::os::unix::fs::symlink(host.path(), d.path().join("hostdir")).unwrap();
        let r = Rootfs::open(d.path()).unwrap();
        // A dangling link to a host path: refused, and nothing made there.
        let e = r.mkdir_all("/work/sub", 0o755).unwrap_err();
        assert!(matches!(e, RootfsError::DanglingSymlink { .. }), "{e}");
        assert!(e.to_string().contains("/work"), "{e}");
        assert!(!target.exists());
        // A link to an existing directory is followed inside the rootfs.
        std::fs::create_dir_all(d.path().join(host.path().strip_prefix("/").unwrap())).unwrap();
        r.mkdir_all("/hostdir/a/../b/c", 0o755).unwrap();
        assert!(d
            .path()
            .join(host.path().strip_prefix("/").unwrap())
            .join("b/c")
            .is_dir());
        assert!(!host.path().join("b").exists());
        // A file on the way is not a directory.
        let e = r.mkdir_all("/etc/plain/x", 0o755).unwrap_err();
        assert!(matches!(e, RootfsError::NotDirectory { .. }), "{e}");
    }

    #[test]
    fn mount_points_are_made_inside_the_rootfs() {
        let (d, host) = hostile();
        std::os::unix::fs::symlink(host.path(), d.path().join("etc/hosts-dir")).unwrap();
        std::os::unix::fs::symlink(host.path().join("hosts"), d.path().join("etc/hosts")).unwrap();
        let r = Rootfs::open(d.path()).unwrap();
        r.ensure_mount_point("/etc/hostname", false).unwrap();
        assert!(d.path().join("etc/hostname").is_file());
        r.ensure_mount_point("/data/vol", true).unwrap();
        assert!(d.path().join("data/vol").is_dir());
        // Through a link to a host directory: made inside, never outside.
        let inside = d.path().join(host.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        r.ensure_mount_point("/etc/hosts-dir/x", false).unwrap();
        assert!(inside.join("x").is_file());
        assert!(!host.path().join("x").exists());
        // A dangling link is left as it is (the runtime resolves it inside).
        r.ensure_mount_point("/etc/hosts", false).unwrap();
        assert!(!host.path().join("hosts").exists());
        // Existing entries are left alone.
        r.ensure_mount_point("/etc/plain", false).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("etc/plain")).unwrap(),
            b"in the image\n"
        );
    }

    #[test]
    fn directories_open_inside_the_rootfs_only() {
        let (d, host) = hostile();
        std::os::unix::fs::symlink(host.path(), d.path().join("vol")).unwrap();
        let r = Rootfs::open(d.path()).unwrap();
        assert!(r.open_dir("/vol").unwrap().is_none());
        assert!(r.open_dir("/etc/root").unwrap().is_some());
        assert!(matches!(
            r.open_dir("/etc/plain"),
            Err(RootfsError::NotDirectory { .. })
        ));
    }

    #[test]
    fn files_the_runtime_reads_must_not_lead_where_it_mounts() {
        let (d, _host) = hostile();
        let r = Rootfs::open(d.path()).unwrap();
        assert_eq!(
            r.read_runtime_file("/etc/plain", MAX_SMALL_FILE)
                .unwrap()
                .unwrap(),
            b"in the image\n"
        );
        assert!(r
            .read_runtime_file("/etc/missing", MAX_SMALL_FILE)
            .unwrap()
            .is_none());
        // Dangling here; in the container, /dev/zero or a host path.
        for p in ["/etc/zero", "/etc/abs-escape"] {
            let e = r.read_runtime_file(p, MAX_SMALL_FILE).unwrap_err();
            assert!(matches!(e, RootfsError::DanglingSymlink { .. }), "{p}: {e}");
            assert!(e.is_content_fault());
        }
        // A regular file in the image's /dev: shadowed by the runtime's.
        std::fs::create_dir(d.path().join("dev")).unwrap();
        std::fs::write(d.path().join("dev/zero"), b"root:x:0:0::/:/bin/sh\n").unwrap();
        let e = r
            .read_runtime_file("/etc/zero", MAX_SMALL_FILE)
            .unwrap_err();
        assert!(
            matches!(&e, RootfsError::UnderRuntimeMount { target, .. } if target == "/dev/zero"),
            "{e}"
        );
        assert!(r.read_file("/etc/zero", MAX_SMALL_FILE).unwrap().is_some());
    }
}
