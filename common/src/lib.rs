//! What every gantry crate needs the same way, written once with one set of
//! guarantees:
//!
//! - [`fs`]: files written whole or not at all (temp file, fsync, rename,
//!   directory fsync), and directories only root can enter;
//! - [`records`]: the versioned JSON record store pods and containers are
//!   kept in, with lookup by unique ID prefix;
//! - [`locks`]: async locks by key (with the `tokio` feature);
//! - [`mountinfo`]: `/proc/<pid>/mountinfo` parsed, every field unescaped;
//! - [`time`]: the nanosecond timestamps the CRI speaks;
//! - [`exit`]: how a container ended, as the monitor records it and the
//!   daemon reads it.

pub mod exit;
pub mod fs;
#[cfg(feature = "tokio")]
pub mod locks;
pub mod mountinfo;
pub mod records;
pub mod time;
