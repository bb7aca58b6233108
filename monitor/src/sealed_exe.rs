//! Sealed in-memory copies of the exec helper, so the binary a process
//! runs from while it sits inside a container cannot be written to from
//! there.
//!
//! `gantry-exec` joins a container's namespaces while it is still the
//! helper. A process of the container that reaches `/proc/<pid>/exe` in
//! that window (with `CAP_SYS_PTRACE`, or on a kernel that lets it) holds
//! the file the helper runs from; were that the installed binary, it could
//! reopen it for writing once the helper is gone and replace what every
//! later exec on the host runs (runc's CVE-2019-5736). A `memfd` copy
//! sealed against writes, growth and shrinking is a file nobody can
//! change, and it disappears with its last user.
//!
//! The daemon makes one copy per helper path and starts every helper from
//! it (`/proc/self/fd/N`); a helper started some other way copies itself
//! before doing anything else ([`reexec_sealed`]).

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rustix::fs::{MemfdFlags, SealFlags};

/// What a sealed copy must carry: no writes, no size change, no unsealing.
fn required_seals() -> SealFlags {
    SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE
}

/// Whether `fd` is a memfd with all of [`required_seals`].
pub fn is_sealed(fd: impl AsFd) -> bool {
    rustix::fs::fcntl_get_seals(fd).is_ok_and(|s| s.contains(required_seals()))
}

/// Copies the executable at `path` into a new sealed memfd (close-on-exec)
/// named `name` (what `/proc/<pid>/exe` shows as `/memfd:<name>`).
pub fn sealed_copy(path: &Path, name: &OsStr) -> io::Result<OwnedFd> {
    let mut src = std::fs::File::open(path)?;
    let name = CString::new(name.as_bytes().to_vec())
        .map_err(|_| io::Error::other("NUL in the binary's name"))?;
    let memfd = rustix::fs::memfd_create(
        name.as_c_str(),
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut dst = std::fs::File::from(memfd);
    let copied = io::copy(&mut src, &mut dst)?;
    let expected = src.metadata()?.len();
    if copied != expected {
        return Err(io::Error::other(format!(
            "copied {copied} of {expected} bytes of {}",
            path.display()
        )));
    }
    rustix::fs::fcntl_add_seals(&dst, required_seals())?;
    Ok(dst.into())
}

/// Makes sure the running process executes from a sealed copy: returns
/// when it already does, else re-executes itself (same arguments and
/// environment) from a fresh copy and only returns on failure.
pub fn reexec_sealed() -> io::Result<()> {
    let exe = std::fs::File::open("/proc/self/exe")?;
    if is_sealed(&exe) {
        return Ok(());
    }
    drop(exe);
    let name = std::fs::read_link("/proc/self/exe")
        .ok()
        .and_then(|p| p.file_name().map(OsStr::to_os_string))
        .unwrap_or_else(|| "gantry-exec".into());
    let copy = sealed_copy(Path::new("/proc/self/exe"), &name)?;
    let cstrings = |items: Vec<OsString>| {
        items
            .into_iter()
            .map(|a| CString::new(a.as_bytes().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| io::Error::other("NUL in an argument or variable"))
    };
    let argv = cstrings(std::env::args_os().collect())?;
    let envp = cstrings(
        std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                kv
            })
            .collect(),
    )?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: the descriptor is open; both arrays hold NUL-terminated
    // strings that outlive the call and end with a null pointer.
    unsafe { libc::fexecve(copy.as_raw_fd(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    Err(io::Error::last_os_error())
}

/// The daemon's sealed copies, one per helper path, made on first use and
/// kept for the daemon's life.
static COPIES: OnceLock<Mutex<HashMap<PathBuf, OwnedFd>>> = OnceLock::new();

/// A path that executes a sealed copy of `helper` (`/proc/self/fd/N` of
/// this process, valid in a child until it executes it), or the error
/// that prevented the copy.
pub fn sealed_path(helper: &Path) -> io::Result<PathBuf> {
    let copies = COPIES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut copies = copies.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(fd) = copies.get(helper) {
        return Ok(PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())));
    }
    let name = helper.file_name().unwrap_or(OsStr::new("gantry-exec"));
    let fd = sealed_copy(helper, name)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    copies.insert(helper.to_path_buf(), fd);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_sealed_copy_has_the_content_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("tool");
        std::fs::write(&src, b"#!/bin/sh\necho sealed\n").unwrap();
        let fd = sealed_copy(&src, OsStr::new("tool")).unwrap();
        assert!(is_sealed(&fd));
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let mut text = String::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "#!/bin/sh\necho sealed\n");
        // Whatever opening for writing allows, nothing can be written.
        if let Ok(mut w) = std::fs::OpenOptions::new().append(true).open(&path) {
            assert!(w.write_all(b"tampered").is_err());
        }
        assert!(rustix::fs::ftruncate(&fd, 0).is_err());
        assert!(rustix::fs::fcntl_add_seals(&fd, SealFlags::empty()).is_err());
        // A plain file is not sealed.
        assert!(!is_sealed(std::fs::File::open(&src).unwrap()));
    }

    #[test]
    fn the_daemon_keeps_one_copy_per_helper() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("helper");
        std::fs::write(&src, b"x").unwrap();
        let a = sealed_path(&src).unwrap();
        let b = sealed_path(&src).unwrap();
        assert_eq!(a, b);
        assert_eq!(std::fs::read(&a).unwrap(), b"x");
        assert!(sealed_path(&dir.path().join("missing")).is_err());
    }
}
