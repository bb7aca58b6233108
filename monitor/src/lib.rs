//! The processes gantry leaves next to each container, and what the daemon
//! shares with them. Both are small, single-threaded programs without an
//! async runtime, started from the daemon but outliving it:
//!
//! - `gantry-monitor` owns one container: it runs the OCI runtime's create,
//!   holds the container's stdio, writes its CRI log ([`crilog`]), serves
//!   attach ([`wire`]) and records how the container ended.
//! - `gantry-exec` runs one command inside a running container without the
//!   OCI runtime ([`nsexec`]), from a sealed copy of itself
//!   ([`sealed_exe`]).
//!
//! The daemon reads what they write through the same modules, so each
//! format has one definition.

pub mod crilog;
pub mod nsexec;
pub mod runtime_log;
pub mod sealed_exe;
pub mod wire;
