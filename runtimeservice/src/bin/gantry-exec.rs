//! gantry-exec: runs one command inside a running runc, crun or youki
//! container without starting the OCI runtime, for ExecSync and streaming
//! Exec. See `gantry_runtimeservice::nsexec` for what it does and in which
//! order.
//!
//! Usage: `gantry-exec --pid INIT --spec CONFIG.JSON --pid-file PATH
//! [--tty] -- CMD...`. It exits with the command's status (128 + signal
//! for a killed command), or 255 with a message on stderr when the command
//! could not be started, as `runc exec` does.

fn main() {
    let code = gantry_runtimeservice::nsexec::Request::parse(std::env::args_os().skip(1))
        .and_then(|r| gantry_runtimeservice::nsexec::run(&r))
        .unwrap_or_else(|e| {
            eprintln!("gantry-exec: {e}");
            255
        });
    std::process::exit(code);
}
