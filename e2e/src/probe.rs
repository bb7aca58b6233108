//! The seccomp probe (`seccomp_probe.c`), compiled static at test time so
//! that it runs in a busybox image with no libc, and the parsing of what
//! it prints.

use std::collections::BTreeMap;
use std::process::Command;

const SOURCE: &str = include_str!("seccomp_probe.c");

/// The probe binary, built with the host's `gcc -static`.
pub fn seccomp_probe() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a build directory");
    let src = dir.path().join("probe.c");
    let out = dir.path().join("probe");
    std::fs::write(&src, SOURCE).expect("writing the probe source");
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-lpthread")
        .status()
        .expect("running gcc (apt-get install gcc libc6-dev)");
    assert!(status.success(), "gcc failed on the seccomp probe");
    std::fs::read(&out).expect("reading the built probe")
}

/// What the probe printed, by probe name: `None` when the call reached the
/// kernel, else the errno the filter answered. Panics if the probe did
/// not finish.
pub fn parse(output: &str) -> BTreeMap<String, Option<i32>> {
    assert!(
        output.lines().any(|l| l.trim_end() == "probe done"),
        "the probe did not finish: {output}"
    );
    let mut out = BTreeMap::new();
    for line in output.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [name, "reached"] => {
                out.insert(name.to_string(), None);
            }
            [name, "blocked", errno] => {
                let e = errno
                    .parse()
                    .unwrap_or_else(|_| panic!("bad line {line:?}"));
                out.insert(name.to_string(), Some(e));
            }
            ["probe", "done"] => {}
            _ => panic!("unexpected probe line {line:?}"),
        }
    }
    out
}
