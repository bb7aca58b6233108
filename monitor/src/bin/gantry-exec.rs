//! gantry-exec: runs one command inside a running runc, crun or youki
//! container without starting the OCI runtime, for ExecSync and streaming
//! Exec. See `gantry_runtimeservice::nsexec` for what it does and in which
//! order.
//!
//! Usage: `gantry-exec --pid INIT --spec CONFIG.JSON --pid-file PATH
//! [--tty [--tty-size COLSxROWS]] -- CMD...`; with `--tty`, standard input
//! is a unix socket that receives the terminal's master. It exits with the
//! command's status (128 + signal for a killed command), or 255 with a
//! message on stderr when the command could not be started, as `runc exec`
//! does.

fn main() {
    // Started from the daemon it already runs from a sealed copy; started
    // any other way it makes one first (see `sealed_exe`), and refuses to
    // run unprotected.
    if let Err(e) = gantry_monitor::sealed_exe::reexec_sealed() {
        eprintln!("gantry-exec: running from a sealed copy of itself: {e}");
        std::process::exit(255);
    }
    let code = gantry_monitor::nsexec::Request::parse(std::env::args_os().skip(1))
        .and_then(|r| gantry_monitor::nsexec::run(&r))
        .unwrap_or_else(|e| {
            eprintln!("gantry-exec: {e}");
            255
        });
    std::process::exit(code);
}
