//! gantry's runtime service: pod sandboxes, containers and the OCI runtime
//! handlers behind them, served as the CRI RuntimeService.
//!
//! One folder per object, one file per step a reader looks for:
//!
//! - [`pod`]: pod sandboxes (namespaces pinned without a process, a cgroup
//!   of their own, networking through [`pod::network`]'s CNI client, records
//!   that survive restarts): `run`, `stop`, `remove`, `status`, `recover`.
//! - [`container`]: containers on an OCI runtime below their pod's cgroup,
//!   each owned by a gantry-monitor: `create`, `rootfs`, `start`, `stop`,
//!   `remove`, `status`, `stats`, `update`, `exec`, `recover`,
//!   `exit_watch`; image volumes ([`container::image_volume`]) and every
//!   path resolved inside a rootfs ([`container::rootfs_path`]).
//! - [`oci`]: the runtime trait, the runc-style CLI runtime, the spec
//!   generator ([`oci::spec`]) and what each handler can do.
//! - [`exec`]: interactive sessions (exec, attach, port forward). The
//!   native exec helper and the monitor are the `gantry-monitor` crate.
//!
//! What the lifecycles do to the host (cgroups, namespace pins, mounts,
//! signals, monitor processes) goes through [`host::Host`], runtimes
//! through [`oci::OciRuntime`]: the services take both at construction, and
//! the lifecycle tests give them doubles (`testing`).
//!
//! Around them: usage read by [`stats`] and, as kubelet's cAdvisor-named
//! CRI metrics, by [`cri_metrics`] (the daemon's own Prometheus metrics
//! are [`metrics`]); events through [`events`]; calls that outlive their
//! callers through [`detach`]; the gRPC adapter [`grpc`].

pub mod cgroup;
pub mod config;
pub mod container;
pub mod cri_metrics;
pub mod detach;
pub mod error;
pub mod events;
pub mod exec;
pub mod grpc;
pub mod host;
pub mod metrics;
pub mod oci;
pub mod pod;
pub mod signal;
pub mod stats;
#[cfg(test)]
mod testing;
pub mod userns;

pub use config::{CgroupDriver, ExecMode, RuntimeConfig, RuntimeHandler};
pub use grpc::CriRuntimeService;
pub use host::{Host, RealHost};
pub use metrics::{RuntimeMetrics, StateCollector};
pub use pod::network::{CniNetwork, PodNetwork};
pub use pod::PodService;
