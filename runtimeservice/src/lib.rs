//! gantry's runtime service: pod sandboxes, containers and the OCI runtime
//! handlers behind them, served as the CRI RuntimeService.
//!
//! Today it answers `Version`, `Status` and `RuntimeConfig`; the pod and
//! container lifecycle is the next piece of work and its RPCs say so with
//! `Unimplemented`.

pub mod config;
pub mod grpc;

pub use config::{CgroupDriver, RuntimeConfig, RuntimeHandler};
pub use grpc::{CriRuntimeService, NetworkStatus};
