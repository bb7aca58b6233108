//! How a container ended, as its monitor records it in the container's
//! directory: the one source of truth for exits, including those that
//! happen while the daemon is down.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name in the container's directory.
pub const EXIT_FILE: &str = "exit.json";

/// A container's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerExit {
    /// The exit code, 128 + the signal for a killed process (as shells and
    /// runc report it).
    pub exit_code: i32,
    /// The signal that killed it, 0 if it exited.
    pub signal: i32,
    /// Nanoseconds since the epoch.
    pub finished_at: i64,
}

impl ContainerExit {
    /// The exit described by a `waitpid` status, now.
    pub fn from_wait_status(status: i32) -> ContainerExit {
        let (exit_code, signal) = if libc_like::exited(status) {
            (libc_like::exit_status(status), 0)
        } else if libc_like::signaled(status) {
            let sig = libc_like::term_sig(status);
            (128 + sig, sig)
        } else {
            (255, 0)
        };
        ContainerExit {
            exit_code,
            signal,
            finished_at: crate::time::now_nanos(),
        }
    }

    /// The path of the exit file in a container's directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(EXIT_FILE)
    }

    /// Records the exit in `dir`, atomically and durably.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        self.write_file(&Self::path(dir))
    }

    /// Records the exit at `path` (the monitor is given the file's path).
    pub fn write_file(&self, path: &Path) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        crate::fs::write_atomic(path, &bytes)
    }

    /// The exit recorded in `dir`, if the container has ended.
    pub fn read(dir: &Path) -> Option<ContainerExit> {
        use std::io::Read;
        // The file is the monitor's, but the directory is reachable by a
        // confused operator: read a bounded amount.
        let mut text = Vec::new();
        std::fs::File::open(Self::path(dir))
            .and_then(|f| f.take(4096).read_to_end(&mut text))
            .ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// The `wait` status macros, without linking libc for four bit operations.
mod libc_like {
    pub fn exited(s: i32) -> bool {
        s & 0x7f == 0
    }
    pub fn exit_status(s: i32) -> i32 {
        (s >> 8) & 0xff
    }
    pub fn signaled(s: i32) -> bool {
        ((s & 0x7f) + 1) as i8 >> 1 > 0
    }
    pub fn term_sig(s: i32) -> i32 {
        s & 0x7f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_become_exits() {
        // exit(3)
        let e = ContainerExit::from_wait_status(3 << 8);
        assert_eq!((e.exit_code, e.signal), (3, 0));
        // killed by SIGKILL
        let e = ContainerExit::from_wait_status(9);
        assert_eq!((e.exit_code, e.signal), (137, 9));
        // killed by SIGTERM with a core dump
        let e = ContainerExit::from_wait_status(15 | 0x80);
        assert_eq!((e.exit_code, e.signal), (143, 15));
        // stopped (0x7f in the low byte): not an end
        let e = ContainerExit::from_wait_status(0x137f);
        assert_eq!((e.exit_code, e.signal), (255, 0));
    }

    #[test]
    fn exits_round_trip_through_the_file() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(ContainerExit::read(d.path()), None);
        let e = ContainerExit {
            exit_code: 137,
            signal: 9,
            finished_at: 42,
        };
        e.write(d.path()).unwrap();
        assert_eq!(ContainerExit::read(d.path()), Some(e));
        // The format older monitors wrote reads the same.
        std::fs::write(
            d.path().join(EXIT_FILE),
            "{\"exit_code\":1,\"signal\":0,\"finished_at\":7}\n",
        )
        .unwrap();
        assert_eq!(ContainerExit::read(d.path()).map(|e| e.exit_code), Some(1));
        std::fs::write(d.path().join(EXIT_FILE), "garbage").unwrap();
        assert_eq!(ContainerExit::read(d.path()), None);
    }
}
