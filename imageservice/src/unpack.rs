//! Unpacks one layer tarball into its own snapshot directory, in the form
//! overlayfs stacks directly: OCI whiteouts (`.wh.name`) become 0/0 character
//! devices and opaque markers (`.wh..wh..opq`) become the
//! `trusted.overlay.opaque` xattr on their directory.
//!
//! The `tar` crate's own `unpack_in` follows symlinks that earlier entries
//! created and knows nothing of whiteouts, so entries are applied here by
//! hand with `*at` syscalls relative to directory handles opened with
//! `O_NOFOLLOW`: no entry can write through a symlink, use `..`, or name an
//! absolute path, whatever the archive holds. Everything streams (from a
//! file or straight from a download, see [`unpack_stream`]); memory stays
//! bounded by the tar header size and one copy buffer, and the limits in
//! [`Limits`] stop decompression bombs, deep trees and entry floods early.
//!
//! Each entry costs only the syscalls it needs: it is created with its mode
//! where the umask allows, owned by the unpacker unless the tar says
//! otherwise, written with one write when small, and the directory handles
//! along the path of the previous entry are kept for the next one.

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::mediatype::Compression;

const OPAQUE_MARKER: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// File data moves through one buffer of this size: most files of an image
/// are smaller and take a single write.
const COPY_BUFFER: usize = 256 << 10;

/// What unpacking a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// Digest of the uncompressed tar stream (the layer's diff ID).
    pub diff_id: String,
    pub entries: u64,
    pub uncompressed_bytes: u64,
}

/// Unpacks the layer blob at `blob`, compressed as its media type says,
/// into the existing, empty directory `target`.
pub fn unpack_layer(
    blob: &Path,
    target: &Path,
    compression: Compression,
    limits: &Limits,
) -> Result<UnpackStats> {
    let file = File::open(blob).map_err(Error::io(format!("opening layer {}", blob.display())))?;
    let compressed = file.metadata().map(|m| m.len()).unwrap_or(0);
    unpack_stream(file, compressed, target, compression, limits)
}

/// Unpacks the compressed layer read from `input`, which holds
/// `compressed` bytes in all (for the compression-ratio limit), into the
/// existing, empty directory `target`. Reads `input` only as far as the
/// layer goes; the caller drains whatever follows.
pub fn unpack_stream<R: Read>(
    input: R,
    compressed: u64,
    target: &Path,
    compression: Compression,
    limits: &Limits,
) -> Result<UnpackStats> {
    let mut buffered = BufReader::with_capacity(256 << 10, input);
    let compression = match compression {
        Compression::Detect => {
            let head = buffered.fill_buf().map_err(Error::io("reading layer"))?;
            if head.starts_with(&[0x1f, 0x8b]) {
                Compression::Gzip
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                Compression::Zstd
            } else {
                Compression::None
            }
        }
        known => known,
    };
    let decoder: Box<dyn Read + '_> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(Error::io("starting zstd"))?,
        ),
        Compression::None | Compression::Detect => Box::new(buffered),
    };
    let limit_hit = Rc::new(Cell::new(None));
    let reader = MeteredReader {
        inner: decoder,
        hasher: Sha256::new(),
        read: 0,
        compressed,
        limits: limits.clone(),
        limit_hit: limit_hit.clone(),
    };
    let root = rfs::open(
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("opening {}", target.display()))(e.into()))?;
    let mut applier = Applier {
        root,
        open_dirs: Vec::new(),
        limits,
        entries: 0,
        dir_times: Vec::new(),
        me: (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        ),
        umask: current_umask(),
        inherited_group: false,
        buffer: Vec::new(),
    };
    let mut archive = tar::Archive::new(reader);
    let outcome = applier.apply_all(&mut archive);
    if let Some(msg) = limit_hit.take() {
        return Err(Error::LimitExceeded(msg));
    }
    outcome?;
    applier.finish_dir_times()?;
    let mut reader = archive.into_inner();
    // Trailing zero blocks count towards the diff ID.
    io::copy(&mut reader, &mut io::sink()).map_err(|e| match limit_hit.take() {
        Some(msg) => Error::LimitExceeded(msg),
        None => read_error("layer", e),
    })?;
    Ok(UnpackStats {
        diff_id: format!("sha256:{}", hex::encode(reader.hasher.finalize())),
        entries: applier.entries,
        uncompressed_bytes: reader.read,
    })
}

/// The process umask, which new files and directories are created under;
/// read from /proc rather than set and reset, which would race other
/// threads. Unknown means everything may be masked, so every mode is set
/// explicitly.
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

/// Hashes and counts the uncompressed stream, and stops it when it grows
/// past the configured size or compression ratio.
struct MeteredReader<'a> {
    inner: Box<dyn Read + 'a>,
    hasher: Sha256,
    read: u64,
    compressed: u64,
    limits: Limits,
    limit_hit: Rc<Cell<Option<String>>>,
}

impl Read for MeteredReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        let over = if self.read > self.limits.max_unpacked_layer_bytes {
            Some(format!(
                "layer expands past {} bytes (max_unpacked_layer_bytes)",
                self.limits.max_unpacked_layer_bytes
            ))
        } else if self.read > self.limits.ratio_check_after_bytes
            && self.read / self.compressed.max(1) > self.limits.max_compression_ratio
        {
            Some(format!(
                "layer expands more than {}x ({} compressed bytes gave {}; max_compression_ratio)",
                self.limits.max_compression_ratio, self.compressed, self.read
            ))
        } else {
            None
        };
        if let Some(msg) = over {
            self.limit_hit.set(Some(msg.clone()));
            return Err(io::Error::other(msg));
        }
        Ok(n)
    }
}

struct Applier<'a> {
    root: OwnedFd,
    /// Handles of the directories along the previous entry's path, root
    /// first: tarballs list a directory's entries together, so the next
    /// entry mostly shares all or most of them. Only directories inside the
    /// one an entry lives in are ever removed, so a handle here never
    /// outlives its directory.
    open_dirs: Vec<(OsString, OwnedFd)>,
    limits: &'a Limits,
    entries: u64,
    /// Directory mtimes are set last, since adding children changes them.
    dir_times: Vec<(Vec<OsString>, i64)>,
    /// Who new entries belong to without a chown.
    me: (u32, u32),
    umask: u32,
    /// A setgid directory was made: entries below it may take its group,
    /// so every owner and mode is set explicitly from then on.
    inherited_group: bool,
    buffer: Vec<u8>,
}

fn unsafe_entry(path: &[u8], reason: impl Into<String>) -> Error {
    Error::UnsafeEntry {
        path: String::from_utf8_lossy(path).into_owned(),
        reason: reason.into(),
    }
}

fn sys(context: &str, path: &[u8]) -> impl FnOnce(Errno) -> Error {
    let context = format!("{context} {:?}", String::from_utf8_lossy(path));
    move |e| Error::Io {
        context,
        source: e.into(),
    }
}

/// Splits an archive path into its components, refusing anything that could
/// leave the root.
fn components<'p>(raw: &'p [u8], limits: &Limits) -> Result<Vec<&'p OsStr>> {
    if raw.len() > limits.max_path_bytes {
        return Err(unsafe_entry(
            &raw[..64.min(raw.len())],
            "path longer than max_path_bytes",
        ));
    }
    if raw.starts_with(b"/") {
        return Err(unsafe_entry(raw, "absolute path"));
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => return Err(unsafe_entry(raw, "path contains '..'")),
            _ => out.push(OsStr::from_bytes(part)),
        }
    }
    if out.len() > limits.max_path_depth {
        return Err(unsafe_entry(
            raw,
            format!(
                "deeper than {} levels (max_path_depth)",
                limits.max_path_depth
            ),
        ));
    }
    Ok(out)
}

/// What one entry's metadata needs beyond its creation.
#[derive(Clone, Copy)]
struct Meta {
    owner: (u32, u32),
    /// The full mode, special bits included.
    mode: u32,
    mtime: i64,
}

impl Meta {
    fn owner(&self) -> (Option<Uid>, Option<Gid>) {
        (
            Some(Uid::from_raw(self.owner.0)),
            Some(Gid::from_raw(self.owner.1)),
        )
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Applier<'_> {
    fn apply_all<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<()> {
        let entries = archive.entries().map_err(|e| read_error("layer tar", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| read_error("layer tar", e))?;
            self.entries += 1;
            if self.entries > self.limits.max_entries_per_layer {
                return Err(Error::LimitExceeded(format!(
                    "layer has more than {} entries (max_entries_per_layer)",
                    self.limits.max_entries_per_layer
                )));
            }
            self.apply(&mut entry)?;
        }
        Ok(())
    }

    /// Opens (creating as needed) the directory `comps` under the root,
    /// refusing to pass through symlinks or non-directories. A fresh walk
    /// from the root, for hardlink targets.
    fn walk(&self, comps: &[&OsStr], raw: &[u8], create: bool) -> Result<OwnedFd> {
        let mut cur = rfs::openat(&self.root, ".", DIR_FLAGS, Mode::empty())
            .map_err(sys("opening root for", raw))?;
        for comp in comps {
            cur = open_dir(&cur, comp, raw, create)?;
        }
        Ok(cur)
    }

    /// The directory `comps`, through the handles kept from the previous
    /// entry where the paths agree and opened (created with `create`) from
    /// there on.
    fn descend(&mut self, comps: &[&OsStr], raw: &[u8], create: bool) -> Result<BorrowedFd<'_>> {
        let shared = self
            .open_dirs
            .iter()
            .zip(comps)
            .take_while(|((have, _), want)| have.as_os_str() == **want)
            .count();
        self.open_dirs.truncate(shared);
        for comp in &comps[shared..] {
            let next = {
                let cur = match self.open_dirs.last() {
                    Some((_, fd)) => fd.as_fd(),
                    None => self.root.as_fd(),
                };
                open_dir(cur, comp, raw, create)?
            };
            self.open_dirs.push((comp.to_os_string(), next));
        }
        Ok(match self.open_dirs.last() {
            Some((_, fd)) => fd.as_fd(),
            None => self.root.as_fd(),
        })
    }

    /// Whether the entry's owner and mode need setting after creating it
    /// with `created` as its mode.
    fn needs(&self, meta: &Meta, created: u32) -> (bool, bool) {
        let chown = self.inherited_group || meta.owner != self.me;
        let chmod = self.inherited_group || meta.mode != created & !self.umask;
        (chown, chmod)
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let comps = components(&raw, self.limits)?;
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header
            .mode()
            .map_err(|e| Error::malformed("tar header mode", e))?
            & 0o7777;
        let uid = header
            .uid()
            .map_err(|e| Error::malformed("tar header uid", e))?;
        let gid = header
            .gid()
            .map_err(|e| Error::malformed("tar header gid", e))?;
        let mtime = header.mtime().unwrap_or(0) as i64;
        let device = (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        );
        let meta = Meta {
            owner: (
                u32::try_from(uid).map_err(|_| unsafe_entry(&raw, "uid out of range"))?,
                u32::try_from(gid).map_err(|_| unsafe_entry(&raw, "gid out of range"))?,
            ),
            mode,
            mtime,
        };

        let Some((name, dirs)) = comps.split_last() else {
            // The root itself ("./"): take its mode and owner.
            if kind == EntryType::Directory {
                let o = meta.owner();
                rfs::fchown(&self.root, o.0, o.1).map_err(sys("chown", &raw))?;
                rfs::fchmod(&self.root, Mode::from_raw_mode(mode)).map_err(sys("chmod", &raw))?;
                self.inherited_group |= mode & 0o2000 != 0;
                self.dir_times.push((Vec::new(), mtime));
            }
            return Ok(());
        };
        let name = *name;
        let name_bytes = name.as_bytes();
        // `.wh.a/b` would hide a path, not a name: whiteouts are files, and
        // a directory with a whiteout's name means nothing in OCI layers.
        if let Some(d) = dirs
            .iter()
            .find(|d| d.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()))
        {
            return Err(unsafe_entry(
                &raw,
                format!(
                    "whiteout {:?} used as a directory (it would hide a path, not a name)",
                    d.to_string_lossy()
                ),
            ));
        }

        if name_bytes == OPAQUE_MARKER.as_bytes() {
            let parent = self.descend(dirs, &raw, true)?;
            rfs::fsetxattr(parent, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(sys("marking opaque", &raw))?;
            return Ok(());
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                // Other `.wh..wh.` names are aufs bookkeeping with no meaning here.
                return Ok(());
            }
            // `.wh..` would empty this very directory and `.wh...` its
            // parent, which for a top-level entry is every other snapshot.
            if !plain_name(hidden) {
                return Err(unsafe_entry(
                    &raw,
                    format!(
                        "whiteout hides {:?}, which is not a name in its directory",
                        String::from_utf8_lossy(hidden)
                    ),
                ));
            }
            let hidden = OsStr::from_bytes(hidden);
            let parent = self.descend(dirs, &raw, true)?;
            make(parent, hidden, &raw, |p| {
                rfs::mknodat(
                    p,
                    hidden,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rfs::makedev(0, 0),
                )
            })
            .map_err(sys("creating whiteout for", &raw))?;
            return Ok(());
        }

        let xattrs = xattrs_of(entry, &raw)?;
        match kind {
            EntryType::Directory => {
                let created = mode & 0o777;
                let (mut chown, mut chmod) = self.needs(&meta, created);
                let fd = {
                    let parent = self.descend(dirs, &raw, true)?;
                    if !plain_name(name_bytes) {
                        return Err(unsafe_entry(&raw, "names no entry of its directory"));
                    }
                    match rfs::mkdirat(parent, name, Mode::from_raw_mode(created)) {
                        Ok(()) => {}
                        Err(Errno::EXIST) => {
                            if !clear(parent, name, true, &raw)? {
                                rfs::mkdirat(parent, name, Mode::from_raw_mode(created))
                                    .map_err(sys("mkdir", &raw))?;
                            } else {
                                // An earlier entry made it: this one's
                                // owner and mode win.
                                (chown, chmod) = (true, true);
                            }
                        }
                        Err(e) => return Err(sys("mkdir", &raw)(e)),
                    }
                    rfs::openat(parent, name, DIR_FLAGS, Mode::empty())
                        .map_err(sys("opening", &raw))?
                };
                set_meta(&fd, &meta, chown, chmod, &xattrs, false, &raw)?;
                self.inherited_group |= mode & 0o2000 != 0;
                self.dir_times
                    .push((comps.iter().map(|c| c.to_os_string()).collect(), mtime));
                // Its entries most likely come next.
                self.open_dirs.push((name.to_os_string(), fd));
            }
            EntryType::Regular | EntryType::Continuous => {
                let created = mode & 0o777;
                let (chown, chmod) = self.needs(&meta, created);
                let parent = self.descend(dirs, &raw, true)?;
                let fd = make(parent, name, &raw, |p| {
                    rfs::openat(
                        p,
                        name,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(created),
                    )
                })
                .map_err(sys("creating", &raw))?;
                let mut file = File::from(fd);
                copy_data(entry, &mut file, &mut self.buffer)?;
                set_meta(&file, &meta, chown, chmod, &xattrs, true, &raw)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry(&raw, "symlink without a target"))?
                    .into_owned();
                let (chown, _) = self.needs(&meta, mode);
                let parent = self.descend(dirs, &raw, true)?;
                // The target is stored as text and never followed here.
                make(parent, name, &raw, |p| {
                    rfs::symlinkat(OsStr::from_bytes(&target), p, name)
                })
                .map_err(sys("symlink", &raw))?;
                if chown {
                    let o = meta.owner();
                    rfs::chownat(parent, name, o.0, o.1, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(sys("chown", &raw))?;
                }
                rfs::utimensat(parent, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(sys("utimes", &raw))?;
            }
            EntryType::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry(&raw, "hardlink without a target"))?
                    .into_owned();
                let target = components(&target_raw, self.limits)
                    .map_err(|_| unsafe_entry(&raw, "hardlink target leaves the layer"))?;
                let Some((target_name, target_dirs)) = target.split_last() else {
                    return Err(unsafe_entry(&raw, "hardlink to the root"));
                };
                let target_parent = self.walk(target_dirs, &target_raw, false)?;
                let parent = self.descend(dirs, &raw, true)?;
                make(parent, name, &raw, |p| {
                    rfs::linkat(&target_parent, *target_name, p, name, AtFlags::empty())
                })
                .map_err(|e| {
                    if e == Errno::NOENT {
                        unsafe_entry(&raw, "hardlink target is not in this layer")
                    } else {
                        sys("hardlink", &raw)(e)
                    }
                })?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let file_type = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let created = mode & 0o777;
                let (chown, chmod) = self.needs(&meta, created);
                let parent = self.descend(dirs, &raw, true)?;
                make(parent, name, &raw, |p| {
                    rfs::mknodat(
                        p,
                        name,
                        file_type,
                        Mode::from_raw_mode(created),
                        rfs::makedev(device.0, device.1),
                    )
                })
                .map_err(sys("mknod", &raw))?;
                if chown {
                    let o = meta.owner();
                    rfs::chownat(parent, name, o.0, o.1, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(sys("chown", &raw))?;
                }
                if chmod {
                    // The node was just made in a directory held open, so
                    // the name cannot have become a symlink since.
                    rfs::chmodat(parent, name, Mode::from_raw_mode(mode), AtFlags::empty())
                        .map_err(sys("chmod", &raw))?;
                }
                rfs::utimensat(parent, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(sys("utimes", &raw))?;
            }
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => {}
            other => {
                return Err(Error::Unsupported {
                    what: "tar entry type".into(),
                    value: format!("{other:?} at {}", String::from_utf8_lossy(&raw)),
                })
            }
        }
        Ok(())
    }

    /// Sets each directory's mtime from the tar, in archive order so the
    /// kept handles serve as they did for the entries. A directory a later
    /// entry replaced or removed has no time to set.
    fn finish_dir_times(&mut self) -> Result<()> {
        self.open_dirs.clear();
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            let comps: Vec<&OsStr> = path.iter().map(|c| c.as_os_str()).collect();
            let fd = match self.descend(&comps, b"(directory)", false) {
                Ok(fd) => fd,
                Err(Error::UnsafeEntry { .. }) => continue,
                Err(Error::Io { source, .. })
                    if source.raw_os_error() == Some(Errno::NOENT.raw_os_error()) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            rfs::futimens(fd, &times(mtime)).map_err(sys("utimes", b"(directory)"))?;
        }
        Ok(())
    }
}

/// Opens the directory `name` in `dir`, never through a symlink; with
/// `create`, makes it (0755, as tar does for implied parents) if missing.
fn open_dir(dir: impl AsFd, name: &OsStr, raw: &[u8], create: bool) -> Result<OwnedFd> {
    let dir = dir.as_fd();
    match rfs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) if create => {
            rfs::mkdirat(dir, name, Mode::from_raw_mode(0o755))
                .map_err(sys("creating parent of", raw))?;
            rfs::openat(dir, name, DIR_FLAGS, Mode::empty()).map_err(sys("opening parent of", raw))
        }
        Err(Errno::LOOP) | Err(Errno::NOTDIR) => Err(unsafe_entry(
            raw,
            "a parent directory is a symlink or not a directory",
        )),
        Err(e) => Err(sys("opening parent of", raw)(e)),
    }
}

/// Creates an entry with `create`, which fails with EEXIST when the name is
/// taken: then whatever holds the name goes and `create` runs once more.
/// The common case (a fresh name) costs no lookup.
fn make<T>(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    raw: &[u8],
    create: impl Fn(BorrowedFd<'_>) -> rustix::io::Result<T>,
) -> std::result::Result<T, Errno> {
    if !plain_name(name.as_bytes()) {
        // Never reached through `components`, which yields plain names.
        return Err(Errno::INVAL);
    }
    match create(parent) {
        Err(Errno::EXIST) => {
            clear(parent, name, false, raw).map_err(|_| Errno::EXIST)?;
            create(parent)
        }
        other => other,
    }
}

/// An error reading a layer: the layer's fault (malformed), unless the
/// disk is full, which the read side sees too (the download is written to
/// the blob store as it is read) and which is the node's.
fn read_error(what: &str, e: io::Error) -> Error {
    if crate::error::is_out_of_space(&e)
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<io::Error>())
            .is_some_and(crate::error::is_out_of_space)
    {
        return Error::io(format!("reading the {what}"))(e);
    }
    Error::malformed(what, e)
}

/// Copies an entry's data into `file`, a buffer at a time.
fn copy_data(entry: &mut impl Read, file: &mut File, buffer: &mut Vec<u8>) -> Result<()> {
    buffer.resize(COPY_BUFFER, 0);
    loop {
        let mut filled = 0;
        while filled < buffer.len() {
            match entry.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error("layer file data", e)),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        file.write_all(&buffer[..filled])
            .map_err(Error::io("writing layer file data"))?;
        if filled < buffer.len() {
            return Ok(());
        }
    }
}

/// Whether `name` names an entry of a directory (not the directory itself,
/// not its parent, not a path).
fn plain_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/')
}

/// Makes room for a new entry at `name`. Returns true when an existing
/// directory was kept because the new entry is a directory too. Only ever
/// removes an entry of `parent`, the directory being unpacked into.
fn clear(parent: BorrowedFd<'_>, name: &OsStr, new_is_dir: bool, raw: &[u8]) -> Result<bool> {
    if !plain_name(name.as_bytes()) {
        return Err(unsafe_entry(raw, "names no entry of its directory"));
    }
    let stat = match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(s) => s,
        Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(sys("stat", raw)(e)),
    };
    let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
    if is_dir && new_is_dir {
        return Ok(true);
    }
    if is_dir {
        // std's remove_dir_all does not follow symlinks; the /proc path
        // resolves to the trusted parent we already hold open.
        let path = Path::new("/proc/self/fd")
            .join(std::os::fd::AsRawFd::as_raw_fd(&parent).to_string())
            .join(name);
        std::fs::remove_dir_all(&path).map_err(Error::io(format!(
            "replacing directory {:?}",
            String::from_utf8_lossy(raw)
        )))?;
    } else {
        rfs::unlinkat(parent, name, AtFlags::empty()).map_err(sys("replacing", raw))?;
    }
    Ok(false)
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn set_meta(
    fd: impl AsFd,
    meta: &Meta,
    chown: bool,
    chmod: bool,
    xattrs: &[(String, Vec<u8>)],
    set_mtime: bool,
    raw: &[u8],
) -> Result<()> {
    let fd = fd.as_fd();
    if chown {
        let o = meta.owner();
        rfs::fchown(fd, o.0, o.1).map_err(sys("chown", raw))?;
    }
    // After chown, which clears setuid/setgid bits.
    if chmod || (chown && meta.mode & 0o6000 != 0) {
        rfs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(sys("chmod", raw))?;
    }
    for (name, value) in xattrs {
        rfs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty())
            .map_err(sys("setting xattr on", raw))?;
    }
    if set_mtime {
        rfs::futimens(fd, &times(meta.mtime)).map_err(sys("utimes", raw))?;
    }
    Ok(())
}

/// Extended attributes from PAX `SCHILY.xattr.*` records. Overlay's own
/// `trusted.overlay.*` attributes are refused: a layer must not forge
/// whiteouts or redirects other than through the OCI whiteout files.
fn xattrs_of<R: Read>(entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| Error::malformed("pax header", e))?
    else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(|e| Error::malformed("pax header", e))?;
        let Ok(key) = ext.key() else { continue };
        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
            if name.starts_with("trusted.overlay.") {
                return Err(unsafe_entry(raw, format!("carries overlay xattr {name}")));
            }
            out.push((name.to_string(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    struct Tb(tar::Builder<Vec<u8>>);

    impl Tb {
        fn new() -> Self {
            Tb(tar::Builder::new(Vec::new()))
        }
        fn header(path: &str, kind: EntryType, mode: u32, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_mtime(1_600_000_000);
            h.set_uid(0);
            h.set_gid(0);
            // Raw bytes, so hostile names ("..", "/abs") survive.
            let name = &mut h.as_old_mut().name;
            name.fill(0);
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            h
        }
        fn file(mut self, path: &str, data: &[u8]) -> Self {
            let h = Self::header(path, EntryType::Regular, 0o644, data.len() as u64);
            self.0.append(&h, data).unwrap();
            self
        }
        fn dir(mut self, path: &str) -> Self {
            let h = Self::header(path, EntryType::Directory, 0o755, 0);
            self.0.append(&h, &[][..]).unwrap();
            self
        }
        fn link(mut self, path: &str, target: &str, kind: EntryType) -> Self {
            let mut h = Self::header(path, kind, 0o777, 0);
            h.set_link_name(target).unwrap();
            h.set_cksum();
            self.0.append(&h, &[][..]).unwrap();
            self
        }
        fn finish(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn unpack(tar: &[u8], limits: &Limits) -> (tempfile::TempDir, Result<UnpackStats>) {
        // Several tests feed gzip blobs through here, as the sniffing
        // unpacker once took them.
        unpack_as(tar, Compression::Detect, limits)
    }

    fn unpack_as(
        blob_bytes: &[u8],
        compression: Compression,
        limits: &Limits,
    ) -> (tempfile::TempDir, Result<UnpackStats>) {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, blob_bytes).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let r = unpack_layer(&blob, &root, compression, limits);
        (dir, r)
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// A download that stops on a full disk (the tee into the blob store
    /// fails under the reader): the node's error, not a malformed layer.
    #[test]
    fn a_full_disk_under_the_reader_is_not_a_malformed_layer() {
        struct FullAfter(Vec<u8>, usize);
        impl Read for FullAfter {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.1 >= self.0.len() {
                    return Err(io::Error::from_raw_os_error(libc::ENOSPC));
                }
                let n = buf.len().min(self.0.len() - self.1).min(512);
                buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        let tar = Tb::new().dir("./").file("./a", &[7u8; 4096]).finish();
        // Cut inside the file's data.
        let input = FullAfter(tar[..2048].to_vec(), 0);
        let dir = tempfile::tempdir().unwrap();
        let e = unpack_stream(
            input,
            2048,
            dir.path(),
            Compression::None,
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(
            tonic::Status::from(e).code(),
            tonic::Code::ResourceExhausted
        );
        // A stream that just ends early is the layer's fault.
        let dir = tempfile::tempdir().unwrap();
        let e = unpack_stream(
            &tar[..2048],
            2048,
            dir.path(),
            Compression::None,
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(
            tonic::Status::from(e).code(),
            tonic::Code::FailedPrecondition
        );
    }

    #[test]
    fn files_dirs_links_and_diff_id() {
        let tar = Tb::new()
            .dir("./")
            .dir("etc/")
            .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
            .file("bin/tool", b"#!/bin/sh\n")
            .link("bin/sh", "tool", EntryType::Symlink)
            .link("bin/hard", "bin/tool", EntryType::Link)
            .finish();
        let (dir, r) = unpack(&tar, &Limits::default());
        let stats = r.unwrap();
        assert_eq!(stats.diff_id, crate::content::sha256_digest(&tar));
        assert_eq!(stats.entries, 6);
        let root = dir.path().join("root");
        assert_eq!(
            std::fs::read(root.join("etc/passwd")).unwrap(),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("tool")
        );
        let m = std::fs::metadata(root.join("bin/hard")).unwrap();
        assert_eq!(m.nlink(), 2);
        assert_eq!(m.permissions().mode() & 0o777, 0o644);
        assert_eq!(
            std::fs::metadata(root.join("etc")).unwrap().mtime(),
            1_600_000_000
        );
    }

    #[test]
    fn ownership_special_files_and_xattrs_are_kept() {
        if !is_root() {
            eprintln!("skipping: chown and mknod need root");
            return;
        }
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("owned").unwrap();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o4750);
        h.set_uid(1000);
        h.set_gid(2000);
        h.set_size(1);
        h.set_mtime(0);
        h.set_cksum();
        b.append_pax_extensions([("SCHILY.xattr.user.gantry", &b"yes"[..])])
            .unwrap();
        b.append(&h, &b"x"[..]).unwrap();
        let mut f = tar::Header::new_ustar();
        f.set_path("pipe").unwrap();
        f.set_entry_type(EntryType::Fifo);
        f.set_mode(0o600);
        f.set_size(0);
        f.set_uid(0);
        f.set_gid(0);
        f.set_mtime(0);
        f.set_cksum();
        b.append(&f, &[][..]).unwrap();
        let mut n = tar::Header::new_ustar();
        n.set_path("null").unwrap();
        n.set_entry_type(EntryType::Char);
        n.set_mode(0o666);
        n.set_device_major(1).unwrap();
        n.set_device_minor(3).unwrap();
        n.set_size(0);
        n.set_uid(0);
        n.set_gid(0);
        n.set_mtime(0);
        n.set_cksum();
        b.append(&n, &[][..]).unwrap();
        let tar = b.into_inner().unwrap();
        let (dir, r) = unpack(&tar, &Limits::default());
        r.unwrap();
        let root = dir.path().join("root");
        let m = std::fs::metadata(root.join("owned")).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.permissions().mode() & 0o7777),
            (1000, 2000, 0o4750)
        );
        let mut buf = [0u8; 8];
        let len = rfs::getxattr(root.join("owned").as_path(), "user.gantry", &mut buf[..]).unwrap();
        assert_eq!(&buf[..len], b"yes");
        assert!(std::fs::symlink_metadata(root.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo());
        let null = std::fs::symlink_metadata(root.join("null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), rfs::makedev(1, 3));
    }

    #[test]
    fn overlay_xattrs_from_a_layer_are_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("d").unwrap();
        h.set_entry_type(EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..])])
            .unwrap();
        b.append(&h, &[][..]).unwrap();
        let (_d, r) = unpack(&b.into_inner().unwrap(), &Limits::default());
        assert!(matches!(r, Err(Error::UnsafeEntry { .. })), "{r:?}");
    }

    #[test]
    fn gzip_and_zstd_layers_give_the_same_diff_id() {
        let tar = Tb::new().file("a", b"alpha").finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        for (blob, declared) in [
            (&gz, Compression::Gzip),
            (&zst, Compression::Zstd),
            (&gz, Compression::Detect),
            (&zst, Compression::Detect),
            (&tar, Compression::Detect),
        ] {
            let (dir, r) = unpack_as(blob, declared, &Limits::default());
            assert_eq!(r.unwrap().diff_id, crate::content::sha256_digest(&tar));
            assert_eq!(std::fs::read(dir.path().join("root/a")).unwrap(), b"alpha");
        }
    }

    #[test]
    fn the_declared_compression_is_used_not_the_bytes() {
        let tar = Tb::new().file("a", b"alpha").finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        // gzip bytes under an uncompressed or zstd type, and a plain tar
        // under a gzip type, all fail instead of being guessed right.
        for (blob, declared) in [
            (&gz, Compression::None),
            (&gz, Compression::Zstd),
            (&tar, Compression::Gzip),
        ] {
            let (dir, r) = unpack_as(blob, declared, &Limits::default());
            assert!(r.is_err(), "{declared:?}: {r:?}");
            assert!(!dir.path().join("root/a").exists(), "{declared:?}");
        }
    }

    #[test]
    fn escapes_are_refused() {
        let cases = [
            Tb::new().file("../evil", b"x").finish(),
            Tb::new().file("a/../../evil", b"x").finish(),
            Tb::new().file("/abs", b"x").finish(),
            // A symlink to outside, then a write through it.
            Tb::new()
                .link("esc", "/tmp", EntryType::Symlink)
                .file("esc/evil", b"x")
                .finish(),
            Tb::new()
                .link("esc", "..", EntryType::Symlink)
                .file("esc/evil", b"x")
                .finish(),
            Tb::new().link("h", "../outside", EntryType::Link).finish(),
            Tb::new().link("h", "/etc/passwd", EntryType::Link).finish(),
        ];
        for (i, tar) in cases.iter().enumerate() {
            let (dir, r) = unpack(tar, &Limits::default());
            assert!(
                matches!(r, Err(Error::UnsafeEntry { .. })),
                "case {i}: {r:?}"
            );
            assert!(!dir.path().join("evil").exists(), "case {i} wrote outside");
        }
    }

    #[test]
    fn symlink_replaced_by_file_is_not_followed() {
        let dir0 = tempfile::tempdir().unwrap();
        let victim = dir0.path().join("victim");
        std::fs::write(&victim, b"original").unwrap();
        let tar = Tb::new()
            .link("x", victim.to_str().unwrap(), EntryType::Symlink)
            .file("x", b"overwritten")
            .finish();
        let (dir, r) = unpack(&tar, &Limits::default());
        r.unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"original");
        assert_eq!(
            std::fs::read(dir.path().join("root/x")).unwrap(),
            b"overwritten"
        );
    }

    #[test]
    fn whiteouts_become_overlay_markers() {
        if !is_root() {
            eprintln!("skipping: whiteouts need CAP_MKNOD");
            return;
        }
        let tar = Tb::new()
            .dir("d/")
            .file("d/.wh..wh..opq", b"")
            .file(".wh.gone", b"")
            .finish();
        let (dir, r) = unpack(&tar, &Limits::default());
        r.unwrap();
        let root = dir.path().join("root");
        let m = std::fs::symlink_metadata(root.join("gone")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        assert!(!root.join(".wh.gone").exists());
        let mut buf = [0u8; 4];
        let n =
            rfs::getxattr(root.join("d").as_path(), OVERLAY_OPAQUE_XATTR, &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"y");
    }

    #[test]
    fn whiteouts_cannot_reach_outside_their_directory() {
        for (name, hidden) in [
            (".wh...", ".."),
            ("d/.wh...", ".."),
            (".wh..", "."),
            ("d/.wh..", "."),
            (".wh.", ""),
        ] {
            let tar = Tb::new()
                .dir("d/")
                .file("d/keep", b"x")
                .file(name, b"")
                .finish();
            let dir = tempfile::tempdir().unwrap();
            // Siblings of the layer's directory, as other snapshots are.
            let sibling = dir.path().join("other-snapshot");
            std::fs::create_dir(&sibling).unwrap();
            std::fs::write(sibling.join("file"), b"mine").unwrap();
            let blob = dir.path().join("blob");
            std::fs::write(&blob, &tar).unwrap();
            let root = dir.path().join("root");
            std::fs::create_dir(&root).unwrap();
            let r = unpack_layer(&blob, &root, Compression::None, &Limits::default());
            match &r {
                Err(Error::UnsafeEntry { path, reason }) => {
                    assert_eq!(path, name);
                    assert!(reason.contains(&format!("{hidden:?}")), "{reason}");
                }
                other => panic!("{name}: {other:?}"),
            }
            assert_eq!(
                std::fs::read(sibling.join("file")).unwrap(),
                b"mine",
                "{name}"
            );
            assert_eq!(std::fs::read(root.join("d/keep")).unwrap(), b"x", "{name}");
            assert!(blob.exists(), "{name}");
        }
        for name in [".wh.a/b", "d/.wh.a/b", ".wh..wh..opq/x"] {
            let tar = Tb::new().dir("d/").file(name, b"").finish();
            let (_d, r) = unpack(&tar, &Limits::default());
            match &r {
                Err(Error::UnsafeEntry { path, reason }) => {
                    assert_eq!(path, name);
                    assert!(reason.contains("used as a directory"), "{reason}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(!plain_name(b"a/b"));
        assert!(plain_name(b"b"));
    }

    #[test]
    fn limits_stop_bombs_floods_and_depth() {
        // 64 MiB of zeros compresses to ~64 KiB: a ratio of ~1000.
        let zeros = vec![0u8; 64 << 20];
        let tar = Tb::new().file("zeros", &zeros).finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let limits = Limits {
            ratio_check_after_bytes: 1 << 20,
            ..Limits::default()
        };
        let (_d, r) = unpack(&gz, &limits);
        assert!(matches!(r, Err(Error::LimitExceeded(_))), "{r:?}");
        let limits = Limits {
            max_unpacked_layer_bytes: 1 << 20,
            ..Limits::default()
        };
        let (_d, r) = unpack(&tar, &limits);
        assert!(matches!(r, Err(Error::LimitExceeded(_))), "{r:?}");

        let mut many = Tb::new();
        for i in 0..20 {
            many = many.file(&format!("f{i}"), b"");
        }
        let limits = Limits {
            max_entries_per_layer: 10,
            ..Limits::default()
        };
        let (_d, r) = unpack(&many.finish(), &limits);
        assert!(matches!(r, Err(Error::LimitExceeded(_))), "{r:?}");

        let deep = "d/".repeat(40) + "f";
        let limits = Limits {
            max_path_depth: 16,
            ..Limits::default()
        };
        let (_d, r) = unpack(&Tb::new().file(&deep, b"").finish(), &limits);
        assert!(matches!(r, Err(Error::UnsafeEntry { .. })), "{r:?}");
    }

    #[test]
    fn garbage_is_malformed() {
        let (_d, r) = unpack(&[0x1f, 0x8b, 1, 2, 3, 4, 5], &Limits::default());
        assert!(r.is_err());
    }
}
