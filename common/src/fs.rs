//! Files written whole or not at all, and directories only root can enter.
//!
//! Every piece of state gantry keeps (records, specs, caches, the image
//! index) is written through [`write_atomic`]: a reader, or a daemon that
//! restarts after a crash or a full disk, sees the old bytes or the new
//! ones, never a mix, and never a stray temp file that looks like state.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically and durably, readable by root only:
/// records and specs hold the container's environment, where Secrets end
/// up.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

/// [`write_atomic`] with the file's permission bits.
///
/// The bytes go to a fresh temp file in the same directory, are synced,
/// renamed over `path`, and the directory is synced so that the rename
/// survives a crash too. On any failure the temp file is removed.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = TempFile::create_in(dir, mode)?;
    tmp.file.write_all(bytes)?;
    tmp.file.sync_all()?;
    std::fs::rename(&tmp.path, path)?;
    tmp.path = PathBuf::new();
    std::fs::File::open(dir)?.sync_all()
}

/// A temp file that removes itself unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    file: std::fs::File,
}

impl TempFile {
    fn create_in(dir: &Path, mode: u32) -> std::io::Result<TempFile> {
        // Unique per process and call, so concurrent writers of the same
        // file (or of files in one directory) never share a temp file.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".tmp-{}-{n}", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
            {
                Ok(file) => return Ok(TempFile { path, file }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(format!(
            "no unique temp file could be made in {}",
            dir.display()
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether a directory entry is a temp file [`write_atomic`] left behind
/// (a crash between create and rename): never state, safe to remove.
pub fn is_temp_file(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with(".tmp-"))
}

/// Makes `dir` (and its missing parents) a directory only root can enter,
/// tightening one an older gantry left open: records, bundles and upper
/// directories hold Secret values, setuid binaries and device nodes.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    tighten(dir, 0o700)
}

/// Takes group and other permissions off `path` (leaving `mode`'s bits),
/// if it has any. A missing file is not an error; a symlink is left alone.
pub fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_symlink() && m.permissions().mode() & 0o077 & !mode != 0 => {
            tracing::info!(path = %path.display(), "tightening permissions left by an older gantry");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_whole_private_and_leave_no_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic_mode(&d.path().join("pub"), b"x", 0o644).unwrap();
        assert_eq!(
            std::fs::metadata(d.path().join("pub"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(!names.iter().any(|n| is_temp_file(n)), "{names:?}");
    }

    #[test]
    fn a_failed_write_keeps_the_old_bytes_and_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        write_atomic(&p, b"old").unwrap();
        // Renaming a file over a directory fails after the temp is written.
        let dir_target = d.path().join("sub");
        std::fs::create_dir(&dir_target).unwrap();
        std::fs::write(dir_target.join("x"), b"").unwrap();
        assert!(write_atomic(&dir_target, b"new").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let temps = std::fs::read_dir(d.path())
            .unwrap()
            .filter(|e| is_temp_file(&e.as_ref().unwrap().file_name()))
            .count();
        assert_eq!(temps, 0);
    }

    #[test]
    fn private_dirs_are_made_and_tightened() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        private_dir(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
        tighten(&d.path().join("missing"), 0o600).unwrap();
    }
}
