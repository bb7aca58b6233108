//! The CRI container log format: one line per output line,
//! `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <text>`, where `P` marks a
//! partial line (split because it was too long, or cut at end of stream)
//! and `F` a full one. Used by the container monitor. Also where a log
//! file may be: below its pod's log directory, reached without following
//! symlinks.

use std::fs::File;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The log file of a container: `log_path` below the pod's
/// `log_directory`. A `log_path` that is absolute or climbs out of the
/// directory is refused: kubelet only ever gives `<name>/<attempt>.log`,
/// and anything else would let a pod spec choose a host file for the
/// daemon to write.
pub fn log_file(log_directory: &str, log_path: &str) -> Result<PathBuf, String> {
    if log_path.starts_with('/') {
        return Err(format!(
            "log_path {log_path:?} is absolute; it must be relative to the pod's log_directory"
        ));
    }
    let mut depth = 0usize;
    for c in Path::new(log_path).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "log_path {log_path:?} climbs out of the pod's log_directory"
                ))
            }
        }
    }
    if depth == 0 {
        return Err(format!("log_path {log_path:?} names no file"));
    }
    Ok(Path::new(log_directory).join(log_path))
}

/// Opens the log file `rel` below the directory `dir` for appending,
/// creating it and its missing parents. `dir` is the host's (kubelet's pod
/// log directory) and is trusted; below it, no symlink is followed, and
/// anything but a regular file (a FIFO would block, a device would be
/// written to) is refused.
pub fn open_log(dir: &Path, rel: &Path) -> std::io::Result<File> {
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: {what}", dir.join(rel).display()),
        )
    };
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::CurDir => {}
            _ => return Err(invalid("the log path leaves its directory")),
        }
    }
    let Some(name) = parts.pop() else {
        return Err(invalid("the log path names no file"));
    };
    std::fs::create_dir_all(dir)?;
    let mut cur = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for part in parts {
        let open = |at: &std::os::fd::OwnedFd| {
            rustix::fs::openat2(
                at,
                part,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            )
        };
        cur = match open(&cur) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&cur, part, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                open(&cur)?
            }
            Err(Errno::LOOP) | Err(Errno::NOTDIR) | Err(Errno::XDEV) => {
                return Err(invalid("a directory of the log path is a symlink"))
            }
            Err(e) => return Err(e.into()),
        };
    }
    // NONBLOCK: opening a FIFO for writing would wait for a reader.
    let fd = match rustix::fs::openat(
        &cur,
        name,
        OFlags::WRONLY
            | OFlags::APPEND
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::NOCTTY
            | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o640),
    ) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => return Err(invalid("the log file is a symlink")),
        Err(Errno::NXIO) => return Err(invalid("the log file is a FIFO")),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::RegularFile {
        return Err(invalid("the log file is not a regular file"));
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::APPEND)?;
    Ok(File::from(fd))
}

/// Longest log line before it is split into partial lines (containerd's
/// default too).
pub const MAX_LINE: usize = 16 * 1024;

/// RFC 3339 with nanoseconds, UTC: `2026-11-27T23:44:05.123456789Z`.
pub fn rfc3339_nano(since_epoch: std::time::Duration) -> String {
    let secs = since_epoch.as_secs() as i64;
    let nanos = since_epoch.subsec_nanos();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Turns one stream's bytes into CRI log lines.
pub struct LineSplitter {
    stream: &'static str,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: &'static str) -> Self {
        LineSplitter {
            stream,
            pending: Vec::new(),
        }
    }

    fn emit(&self, out: &mut impl Write, text: &[u8], full: bool) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(text.len() + 48);
        line.extend_from_slice(rfc3339_nano(now()).as_bytes());
        line.push(b' ');
        line.extend_from_slice(self.stream.as_bytes());
        line.extend_from_slice(if full { b" F " } else { b" P " });
        line.extend_from_slice(text);
        line.push(b'\n');
        out.write_all(&line)
    }

    /// Feeds a chunk; complete lines are written at once, long ones split.
    pub fn feed(&mut self, out: &mut impl Write, mut chunk: &[u8]) -> std::io::Result<()> {
        while let Some(nl) = chunk.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&chunk[..nl]);
            chunk = &chunk[nl + 1..];
            let line = std::mem::take(&mut self.pending);
            let (mut body, full) = (&line[..], true);
            while body.len() > MAX_LINE {
                self.emit(out, &body[..MAX_LINE], false)?;
                body = &body[MAX_LINE..];
            }
            self.emit(out, body, full)?;
        }
        self.pending.extend_from_slice(chunk);
        while self.pending.len() > MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            let head = std::mem::replace(&mut self.pending, rest);
            self.emit(out, &head, false)?;
        }
        Ok(())
    }

    /// End of stream: what is left is a partial line.
    pub fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(out, &rest, false)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_nano() {
        assert_eq!(
            rfc3339_nano(Duration::new(0, 0)),
            "1970-01-01T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339_nano(Duration::new(951_782_400, 5)),
            "2000-02-29T00:00:00.000000005Z"
        );
        assert_eq!(
            rfc3339_nano(Duration::new(1_795_823_045, 123_456_789)),
            "2026-11-27T23:44:05.123456789Z"
        );
    }

    fn lines(out: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(out)
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.to_string())
            .collect()
    }

    #[test]
    fn lines_partials_and_splits() {
        let mut out = Vec::new();
        let mut s = LineSplitter::new("stdout");
        s.feed(&mut out, b"hel").unwrap();
        s.feed(&mut out, b"lo\nworld\n\nlast").unwrap();
        s.finish(&mut out).unwrap();
        assert_eq!(
            lines(&out),
            [
                "stdout F hello",
                "stdout F world",
                "stdout F ",
                "stdout P last"
            ]
        );

        let mut out = Vec::new();
        let mut e = LineSplitter::new("stderr");
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        e.feed(&mut out, &long).unwrap();
        e.feed(&mut out, b"\n").unwrap();
        let l = lines(&out);
        assert_eq!(l.len(), 3);
        assert!(l[0].starts_with("stderr P x") && l[0].len() == "stderr P ".len() + MAX_LINE);
        assert_eq!(l[2], format!("stderr F {}", "x".repeat(10)));
    }

    #[test]
    fn log_paths_stay_below_the_log_directory() {
        assert_eq!(
            log_file("/var/log/pods/p", "c/0.log").unwrap(),
            Path::new("/var/log/pods/p/c/0.log")
        );
        for bad in ["/etc/passwd", "../x.log", "c/../../x.log", "", "."] {
            let e = log_file("/var/log/pods/p", bad).unwrap_err();
            assert!(e.contains("log_path"), "{bad}: {e}");
        }
    }

    #[test]
    fn log_files_open_without_following_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let victim = host.path().join("victim");
        std::fs::write(&victim, b"host").unwrap();
        let mut f = open_log(d.path(), Path::new("c/0.log")).unwrap();
        f.write_all(b"one\n").unwrap();
        let mut f = open_log(d.path(), Path::new("c/0.log")).unwrap();
        f.write_all(b"two\n").unwrap();
        assert_eq!(
            std::fs::read(d.path().join("c/0.log")).unwrap(),
            b"one\ntwo\n"
        );

        std::os::unix::fs::symlink(&victim, d.path().join("c/1.log")).unwrap();
        std::os::unix::fs::symlink(host.path(), d.path().join("linked")).unwrap();
        assert!(open_log(d.path(), Path::new("c/1.log")).is_err());
        assert!(open_log(d.path(), Path::new("linked/victim")).is_err());
        assert!(open_log(d.path(), Path::new("linked/new.log")).is_err());
        assert!(open_log(d.path(), Path::new("../x.log")).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"host");
        assert!(!host.path().join("new.log").exists());

        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.path().join("c/fifo.log").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = open_log(d.path(), Path::new("c/fifo.log")).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
    }
}
