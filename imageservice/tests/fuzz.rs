//! Fuzz targets of the image side, run as time-bounded tests (see
//! `gantry-fuzzkit`; `GANTRY_FUZZ_SECS=60 cargo test -p
//! gantry-imageservice --test fuzz -- --nocapture` for a longer run):
//! layer unpacking (must never panic nor touch anything outside its
//! target), manifest, index and config parsing, and image references.

use std::path::Path;

use gantry_fuzzkit as fuzz;
use gantry_imageservice::manifest::{self, Parsed};
use gantry_imageservice::mediatype::Compression;
use gantry_imageservice::reference::ImageRef;
use gantry_imageservice::unpack::unpack_layer;
use gantry_imageservice::{Error, Limits};
use tar::{EntryType, Header};

/// What tells outcomes apart: the error's variant and the first plain
/// words of its message (numbers, names and quoted input left out, since
/// they vary per input).
fn kind(e: &(impl std::fmt::Debug + std::fmt::Display)) -> String {
    let d = format!("{e:?}");
    let variant = d.split(['(', ' ', '{']).next().unwrap_or_default();
    let text = e.to_string();
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|w| w.trim_end_matches([':', ',']))
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
        .take(6)
        .collect();
    format!("{variant}: {}", words.join(" "))
}

fn entry(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: EntryType, link: &str, data: &[u8]) {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    let name = path.as_bytes();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    let link = link.as_bytes();
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// Path, kind, link target, data.
type SeedEntry<'a> = (&'a str, EntryType, String, &'a [u8]);

/// Layers that exercise each entry kind and each hostile shape the
/// unpacker refuses, for the mutations to start from. Symlinks point at
/// `outside`, so that an escape would land where the check looks.
fn layer_seeds(outside: &Path) -> Vec<Vec<u8>> {
    let out = outside.display().to_string();
    let mut seeds = Vec::new();
    let layers: Vec<Vec<SeedEntry>> = vec![
        vec![
            ("etc/", EntryType::Directory, String::new(), b""),
            (
                "etc/passwd",
                EntryType::Regular,
                String::new(),
                b"root:x:0:0::/:/bin/sh\n",
            ),
            ("etc/link", EntryType::Symlink, "passwd".into(), b""),
            ("etc/hard", EntryType::Link, "etc/passwd".into(), b""),
        ],
        vec![
            ("up", EntryType::Symlink, out.clone(), b""),
            ("up/file", EntryType::Regular, String::new(), b"escaped"),
            ("rel", EntryType::Symlink, "../../..".into(), b""),
            ("rel/file", EntryType::Regular, String::new(), b"escaped"),
        ],
        vec![
            ("a/b/c", EntryType::Regular, String::new(), b"x"),
            ("a/.wh.b", EntryType::Regular, String::new(), b""),
            ("a/.wh..wh..opq", EntryType::Regular, String::new(), b""),
            (".wh...", EntryType::Regular, String::new(), b""),
        ],
        vec![
            ("../escape", EntryType::Regular, String::new(), b"x"),
            ("/abs", EntryType::Regular, String::new(), b"x"),
            ("h", EntryType::Link, out.clone(), b""),
            ("dev", EntryType::Char, String::new(), b""),
            ("fifo", EntryType::Fifo, String::new(), b""),
        ],
    ];
    for l in layers {
        let mut b = tar::Builder::new(Vec::new());
        for (p, k, link, data) in l {
            entry(&mut b, p, k, &link, data);
        }
        seeds.push(b.into_inner().unwrap());
    }
    seeds
}

/// Mutations break header checksums, which stops the tar reader at once;
/// fixing them lets most inputs reach the unpacker proper.
fn fix_checksums(tar: &mut [u8]) {
    for block in tar.chunks_exact_mut(512) {
        if &block[257..262] != b"ustar" {
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        let text = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(text.as_bytes());
    }
}

/// Everything below `dir`, as relative paths.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn fuzz_layer_unpacking() {
    let sandbox = tempfile::tempdir().unwrap();
    let outside = sandbox.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"untouched").unwrap();
    let limits = Limits {
        max_unpacked_layer_bytes: 8 << 20,
        max_entries_per_layer: 10_000,
        ..Limits::default()
    };
    let blob = sandbox.path().join("blob");
    std::fs::write(&blob, b"").unwrap();
    let before = tree(sandbox.path());
    fuzz::bytes("layer-unpack", layer_seeds(&outside), 64 << 10, |input| {
        let mut tar = input.to_vec();
        fix_checksums(&mut tar);
        std::fs::write(&blob, &tar).unwrap();
        let target = sandbox.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let outcome = match unpack_layer(&blob, &target, Compression::None, &limits) {
            Ok(s) => format!("ok {}", s.entries.min(8)),
            Err(e) => kind(&e),
        };
        // Nothing outside the target changed.
        let now = tree(sandbox.path());
        let outside_target: Vec<_> = now.iter().filter(|p| !p.starts_with("target")).collect();
        let expected: Vec<_> = before.iter().collect();
        assert_eq!(
            outside_target, expected,
            "the layer wrote outside its target"
        );
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"untouched");
        std::fs::remove_dir_all(&target).unwrap();
        outcome
    });
}

fn manifest_seeds() -> Vec<Vec<u8>> {
    let d = format!("sha256:{}", "a".repeat(64));
    vec![
        format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":7}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":1}}]}}"#).into_bytes(),
        format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},{{"digest":"{d}","size":2,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}]}}"#).into_bytes(),
        format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"digest":"{d}","size":1}},"layers":[]}}"#).into_bytes(),
        br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#.to_vec(),
    ]
}

#[test]
fn fuzz_manifest_and_index_parsing() {
    let types = [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "",
    ];
    let host = manifest::host_platform();
    fuzz::bytes("manifest", manifest_seeds(), 16 << 10, |input| {
        let mut out = String::new();
        for t in types {
            match manifest::parse(input, t) {
                Ok(Parsed::Index(entries)) => {
                    let _ = manifest::choose_platform(&entries, &host);
                    out.push_str(&format!("index{} ", entries.len().min(4)));
                }
                Ok(Parsed::Manifest(m)) => {
                    out.push_str(&format!("manifest{} ", m.layers.len().min(4)))
                }
                Err(e) => out.push_str(&kind(&e)),
            }
        }
        out
    });
}

#[test]
fn fuzz_image_config_parsing() {
    let seeds = vec![
        br#"{"architecture":"amd64","os":"linux","config":{"User":"1000:1000","Env":["PATH=/bin"],"Entrypoint":["/ep"],"Cmd":["x"],"WorkingDir":"/w","Volumes":{"/data":{}},"Labels":{"a":"b"}},"rootfs":{"type":"layers","diff_ids":["sha256:00"]}}"#.to_vec(),
        br#"{"config":{"User":"alice"}}"#.to_vec(),
    ];
    fuzz::bytes(
        "image-config",
        seeds,
        16 << 10,
        |input| match manifest::parse_config(input) {
            Ok(c) => {
                let user = c.config.and_then(|r| r.user).unwrap_or_default();
                let (uid, name) = manifest::user_of(&user);
                format!("ok {} {}", uid.is_some(), name.is_empty())
            }
            Err(e) => kind(&e),
        },
    );
}

#[test]
fn fuzz_image_references() {
    let seeds: Vec<Vec<u8>> = [
        "busybox",
        "docker.io/library/busybox:1.36",
        "localhost:5000/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "registry.example/a/b/c:tag@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "[::1]:5000/x:y",
        "UPPER/case",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz::bytes("image-reference", seeds, 512, |input| {
        let Ok(text) = std::str::from_utf8(input) else {
            return "not utf-8".into();
        };
        match ImageRef::parse(text) {
            Ok(r) => {
                // What a parsed reference prints must parse to itself.
                let again = ImageRef::parse(&r.to_string())
                    .unwrap_or_else(|e| panic!("{text:?} → {r} does not parse again: {e}"));
                assert_eq!(again.to_string(), r.to_string(), "{text:?}");
                let _ = (r.name(), r.tagged(), r.manifest_reference());
                format!("ok {}", r.tagged().is_some())
            }
            // The message quotes the input; the reason is the outcome.
            Err(Error::InvalidReference { reason, .. }) => reason,
            Err(e) => kind(&e),
        }
    });
}
