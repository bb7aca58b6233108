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

/// The file in a container's state directory where its monitor keeps the
/// count of log bytes it dropped (decimal, replaced atomically).
pub const DROPPED_FILE: &str = "log-dropped";

/// The dropped-bytes count a monitor recorded in `state_dir`; 0 when there
/// is none or it is unreadable (the daemon reads what a monitor wrote, so
/// the read is bounded).
pub fn read_dropped(state_dir: &Path) -> u64 {
    use std::io::Read;
    let mut text = String::new();
    let Ok(f) = File::open(state_dir.join(DROPPED_FILE)) else {
        return 0;
    };
    if f.take(32).read_to_string(&mut text).is_err() {
        return 0;
    }
    text.trim().parse().unwrap_or(0)
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

/// The smallest size cap a log may have: a few of the longest lines.
pub const MIN_LOG_CAP: u64 = 64 * 1024;

/// Room kept below the cap for the line saying that output is dropped.
const NOTICE_RESERVE: u64 = 256;

/// The line written once a log file reaches its cap.
fn cap_notice(cap: u64) -> Vec<u8> {
    format!(
        "{} stderr F [gantry: this log file reached its size cap of {cap} bytes; output is dropped until the log is rotated]\n",
        rfc3339_nano(now())
    )
    .into_bytes()
}

/// A container's log file as the monitor writes it: whole CRI lines, never
/// more than `cap` bytes in one file, and never an error back to the
/// caller, so the container's output keeps being drained whatever happens
/// to the disk.
///
/// At the cap, lines are dropped (and counted) until the log is reopened
/// on a new file (kubelet's rotation: rename, then ReopenContainerLog), with
/// one line saying so. The file is never truncated or rewritten: kubelet
/// and `kubectl logs -f` read it by offset as it grows, and a file that
/// shrank under them would stall or garble their reading. Lines that
/// cannot be written (ENOSPC, EIO) are counted as dropped too.
///
/// Each `write` call must be one whole line (as [`LineSplitter`] makes
/// them); it always reports the line as taken.
pub struct CappedLog<W: Write> {
    out: W,
    /// 0: no cap.
    cap: u64,
    /// Bytes in the current file.
    size: u64,
    /// The current file has reached its cap (and says so).
    full: bool,
    /// A line was cut short by a failed write: the next one starts on a
    /// new line.
    needs_newline: bool,
    dropped: u64,
}

impl<W: Write> CappedLog<W> {
    /// `size` is what the file already holds.
    pub fn new(out: W, size: u64, cap: u64) -> Self {
        CappedLog {
            out,
            cap,
            size,
            full: false,
            needs_newline: false,
            dropped: 0,
        }
    }

    /// Writes to a new file from now on (the log was reopened).
    pub fn reopen(&mut self, out: W, size: u64) {
        self.out = out;
        self.size = size;
        self.full = false;
        self.needs_newline = false;
    }

    /// Bytes dropped since the container started, across every file.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Writes what it can of `bytes` in as many calls as it takes; returns
    /// how much went out.
    fn put(&mut self, bytes: &[u8]) -> usize {
        let mut done = 0;
        while done < bytes.len() {
            match self.out.write(&bytes[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.size += done as u64;
        done
    }

    fn line(&mut self, line: &[u8]) {
        let len = line.len() as u64;
        if self.needs_newline {
            if self.put(b"\n") == 1 {
                self.needs_newline = false;
            } else {
                self.dropped += len;
                return;
            }
        }
        if self.full || self.cap > 0 && self.size + len + NOTICE_RESERVE > self.cap {
            self.dropped += len;
            if !self.full {
                self.full = true;
                let notice = cap_notice(self.cap);
                if self.size + notice.len() as u64 <= self.cap {
                    let n = self.put(&notice);
                    self.needs_newline = n > 0 && n < notice.len();
                }
            }
            return;
        }
        let n = self.put(line);
        if n < line.len() {
            self.dropped += len - n as u64;
            self.needs_newline = n > 0;
        }
    }
}

impl<W: Write> Write for CappedLog<W> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.line(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Records a monitor's dropped-bytes count in `state_dir` for the daemon:
/// a temp file renamed over the last count, so a reader sees one whole
/// number. Not synced: after a host crash the count is at worst missing,
/// and the container with it.
pub fn write_dropped(state_dir: &Path, bytes: u64) -> std::io::Result<()> {
    let tmp = state_dir.join(format!("{DROPPED_FILE}.tmp"));
    std::fs::write(&tmp, format!("{bytes}\n"))?;
    std::fs::rename(&tmp, state_dir.join(DROPPED_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A writer that takes `room` bytes, then fails as a full disk does.
    struct Disk {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.room - self.data.len());
            if n == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_capped_log_stops_at_its_cap_and_says_so_once() {
        let cap = MIN_LOG_CAP;
        let mut log = CappedLog::new(Vec::new(), 0, cap);
        let mut s = LineSplitter::new("stdout");
        let chunk = vec![b'y'; 1000];
        let mut fed = 0u64;
        for _ in 0..200 {
            s.feed(&mut log, &chunk).unwrap();
            s.feed(&mut log, b"\n").unwrap();
            fed += 1001;
        }
        let out = log.get_ref().clone();
        assert!(
            out.len() as u64 <= cap,
            "{} bytes over a cap of {cap}",
            out.len()
        );
        assert!(
            out.len() as u64 > cap - 2 * 1100,
            "stopped early: {}",
            out.len()
        );
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(text.matches("reached its size cap").count(), 1);
        assert!(text.ends_with("until the log is rotated]\n"));
        // Whole CRI lines only.
        for l in text.lines() {
            let parts: Vec<&str> = l.splitn(4, ' ').collect();
            assert!(parts.len() == 4 && ["F", "P"].contains(&parts[2]), "{l:?}");
        }
        let kept_lines = text.lines().count() as u64 - 1;
        assert!(log.dropped() > 0);
        // Every line fed is either in the file or counted as dropped.
        let line_len = out.len() as u64 / (kept_lines + 1);
        assert!(log.dropped() + kept_lines * 1000 >= fed - 200 && line_len > 0);

        // Rotation: a new file takes lines again, and the count goes on.
        let before = log.dropped();
        log.reopen(Vec::new(), 0);
        s.feed(&mut log, b"after rotation\n").unwrap();
        assert!(String::from_utf8_lossy(log.get_ref()).contains("stdout F after rotation"));
        assert_eq!(log.dropped(), before);
    }

    #[test]
    fn an_uncapped_log_takes_everything() {
        let mut log = CappedLog::new(Vec::new(), 0, 0);
        let mut s = LineSplitter::new("stderr");
        for _ in 0..100 {
            s.feed(&mut log, &[b'z'; 5000]).unwrap();
        }
        s.finish(&mut log).unwrap();
        assert_eq!(log.dropped(), 0);
        assert!(log.get_ref().len() > 500_000);
    }

    #[test]
    fn a_full_disk_drops_lines_without_failing_or_garbling() {
        let mut log = CappedLog::new(
            Disk {
                data: Vec::new(),
                room: 100,
            },
            0,
            0,
        );
        let mut s = LineSplitter::new("stdout");
        // The first line fits, the second is cut by ENOSPC, the rest fail.
        for text in ["short", &"x".repeat(60), "third", "fourth"] {
            s.feed(&mut log, format!("{text}\n").as_bytes()).unwrap();
        }
        let written = log.get_ref().data.clone();
        assert_eq!(written.len(), 100);
        assert!(log.dropped() > 0);
        // Room again (the disk was cleaned): the cut line is ended first,
        // so the next line is whole.
        log.out.room = 1000;
        s.feed(&mut log, b"fifth\n").unwrap();
        let text = String::from_utf8_lossy(&log.get_ref().data).into_owned();
        let last = text.lines().last().unwrap();
        assert!(last.ends_with(" stdout F fifth"), "{text}");
        assert!(text.lines().next().unwrap().ends_with(" stdout F short"));
    }

    #[test]
    fn the_dropped_count_is_replaced_whole() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_dropped(d.path()), 0);
        write_dropped(d.path(), 12345).unwrap();
        assert_eq!(read_dropped(d.path()), 12345);
        write_dropped(d.path(), 99).unwrap();
        assert_eq!(read_dropped(d.path()), 99);
        std::fs::write(d.path().join(DROPPED_FILE), "garbage").unwrap();
        assert_eq!(read_dropped(d.path()), 0);
    }

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
