//! `/proc/<pid>/mountinfo`, parsed once for every reader (cgroup
//! hierarchies, the device of a filesystem, mounts left under the state
//! root, the cgroups gantry-exec joins).
//!
//! Each line is `id parent major:minor root mount-point options
//! [optional fields...] - fstype source super-options`; the kernel escapes
//! space, tab, newline and backslash in paths as three octal digits
//! (`\040`), which every field here has undone.

use std::path::PathBuf;

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u32,
    pub parent: u32,
    /// `major:minor` of the filesystem's device.
    pub device: String,
    /// The directory of the filesystem that is mounted (e.g. a cgroup).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid`).
    pub options: String,
    pub fs_type: String,
    pub source: String,
    /// Per-filesystem options (for cgroup v1, the controllers).
    pub super_options: String,
}

impl Mount {
    /// Whether `option` is one of the filesystem's (super) options.
    pub fn has_super_option(&self, option: &str) -> bool {
        self.super_options.split(',').any(|o| o == option)
    }
}

/// The mounts of a mountinfo text, in its order (later mounts are on top);
/// lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// The mounts of this process's mount namespace; empty if they cannot be
/// read.
pub fn read_self() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let id = l.next()?.parse().ok()?;
    let parent = l.next()?.parse().ok()?;
    let device = l.next()?.to_string();
    let root = unescape_path(l.next()?);
    let mount_point = unescape_path(l.next()?);
    let options = l.next()?.to_string();
    let mut r = right.split(' ');
    Some(Mount {
        id,
        parent,
        device,
        root,
        mount_point,
        options,
        fs_type: r.next()?.to_string(),
        source: unescape(r.next().unwrap_or("")),
        super_options: r.next().unwrap_or("").to_string(),
    })
}

/// A path field unescaped; paths are bytes, and stay so.
fn unescape_path(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(unescape_bytes(field)))
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\134` for a
/// backslash); anything else is kept as it is.
pub fn unescape(field: &str) -> String {
    String::from_utf8_lossy(&unescape_bytes(field)).into_owned()
}

fn unescape_bytes(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(v) = field
                .get(i + 1..i + 4)
                .filter(|d| d.bytes().all(|c| (b'0'..=b'7').contains(&c)))
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:40 /nested /mnt/with\\040space\\011tab\\134slash rw - cgroup cgroup rw,blkio
51 23 0:41 / /mnt/bad\\09x rw - tmpfs my\\040source rw
garbage line
";

    #[test]
    fn every_field_is_parsed_and_unescaped() {
        let m = parse(TEXT);
        assert_eq!(m.len(), 6);
        assert_eq!(m[0].device, "253:1");
        assert_eq!(m[0].source, "/dev/vda1");
        assert_eq!(m[2].fs_type, "cgroup");
        assert!(m[2].has_super_option("cpuacct"));
        assert!(!m[2].has_super_option("cpu,cpuacct"));
        assert_eq!(m[4].root, PathBuf::from("/nested"));
        assert_eq!(
            m[4].mount_point,
            PathBuf::from("/mnt/with space\ttab\\slash")
        );
        // A backslash not followed by three octal digits is kept.
        assert_eq!(m[5].mount_point, PathBuf::from("/mnt/bad\\09x"));
        assert_eq!(m[5].source, "my source");
        assert_eq!((m[3].id, m[3].parent), (41, 31));
    }
}
