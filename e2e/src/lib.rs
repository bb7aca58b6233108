//! The end-to-end harness: a real registry process, OCI images built from
//! Debian's static busybox and pushed over the distribution API, and a real
//! `gantry` process driven over its unix socket with a CRI client. The
//! tests in `tests/` and the benchmark in `src/bin/bench.rs` use it.

pub mod daemon;
pub mod fixture;
pub mod oci;
pub mod probe;
pub mod prom;
pub mod registry;
pub mod static_http;
pub mod stream;

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// Whether the tests can run here at all (root, and the tools they drive).
pub fn require_host() {
    assert!(
        rustix_is_root(),
        "the e2e tests start gantry, which needs root: run them as root (see README.md)"
    );
    for tool in ["/usr/bin/docker-registry", "/bin/busybox"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: run .ci/run once, or apt-get install docker-registry busybox-static"
        );
    }
}

fn rustix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The `image:` config for tests: the given registries over plain HTTP, and
/// docker.io locked to a dead loopback port so that a name that normalises
/// to Docker Hub can never send a test's traffic off this machine.
pub fn local_registries(hosts: &[&str]) -> String {
    let mut y = String::from("image:\n  registries:\n    docker.io:\n      mirrors: [\"http://127.0.0.1:9\"]\n      skip_upstream: true\n");
    for h in hosts {
        y.push_str(&format!("    \"{h}\":\n      insecure: true\n"));
    }
    y
}

pub mod net;
