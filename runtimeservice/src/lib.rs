//! gantry's runtime service: pod sandboxes, containers and the OCI runtime
//! handlers behind them, served as the CRI RuntimeService.
//!
//! Pods ([`pods`], records in [`pod`]) are real: namespaces pinned without a
//! process, a cgroup of their own ([`cgroup`]), networking through
//! [`network`]'s CNI implementation, state that survives restarts.
//! Containers ([`containers`]) run on an OCI runtime ([`oci`]) below their
//! pod's cgroup, each owned by a gantry-monitor; their usage is read by
//! [`stats`] and, as kubelet's cAdvisor-named CRI metrics, by
//! [`cri_metrics`] (the daemon's own Prometheus metrics are [`metrics`]);
//! their events reach subscribers through [`events`], and live I/O with
//! them (exec, attach, port forward) goes through [`interactive`]. Images
//! mounted into containers (`Mount.image`) are [`image_volume`]s. Exec in
//! namespace-based runtimes skips the runtime: the `gantry-exec` helper
//! ([`nsexec`]) joins the container itself, running from a sealed copy
//! ([`sealed_exe`]).

pub mod apparmor;
pub mod cgroup;
pub mod config;
pub mod containers;
pub mod cri_metrics;
pub mod crilog;
pub mod detach;
pub mod error;
pub mod events;
pub mod features;
pub mod grpc;
pub mod image_volume;
pub mod interactive;
mod locks;
pub mod metrics;
pub mod network;
pub mod nsexec;
pub mod oci;
pub mod pod;
pub mod pods;
pub mod rootfs_path;
pub mod sealed_exe;
pub mod seccomp;
pub mod signal;
pub mod spec;
pub mod stats;

pub use config::{CgroupDriver, ExecMode, RuntimeConfig, RuntimeHandler};
pub use grpc::CriRuntimeService;
pub use metrics::{RuntimeMetrics, StateCollector};
pub use network::{CniNetwork, PodNetwork};
pub use pods::PodService;
