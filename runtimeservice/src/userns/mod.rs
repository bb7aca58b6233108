//! Pods in a user namespace of their own (`hostUsers: false`, KEP-127),
//! done by gantry itself so that a runtime without idmapped-mount support
//! (runc 1.1) still gets a rootfs and mounts whose owners look right from
//! inside.
//!
//! This module owns: the validation of `NamespaceOption.userns_options`
//! ([`validate`]), creating and pinning a pod's user namespace with the
//! network, IPC and UTS namespaces it owns ([`pin`]), idmapped mounts of a
//! rootfs or a host path through such a namespace ([`idmap`]), and the
//! host probe that decides whether any of this can work here ([`probe`]),
//! and the trial container that decides it per runtime handler ([`trial`]).

pub mod idmap;
pub mod pin;
pub mod probe;
pub mod trial;
pub mod validate;

pub use validate::{from_namespace_options, IdMap, Mappings};
