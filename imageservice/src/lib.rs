//! gantry's image service: pulls images from OCI distribution registries into
//! a verified content-addressed store, unpacks their layers into per-layer
//! snapshots ready for overlayfs, keeps the image index, and serves the CRI
//! ImageService.
//!
//! Map of the crate: [`reference`] names images, [`registry`] talks to
//! registries, [`mediatype`] says what each document and layer type is,
//! [`manifest`] reads manifests and picks the platform, [`content`] stores
//! verified blobs, [`unpack`] and [`snapshot`] turn layers into
//! directories, [`store`] ties them into pull/list/remove, [`index`] holds the
//! images in memory with their CRI messages, [`fs_info`] keeps ImageFsInfo's
//! figures, [`leases`] keeps
//! what containers hold of them, and [`grpc`]
//! adapts all that to CRI.

pub mod config;
pub mod content;
pub mod error;
pub mod fs_info;
pub mod grpc;
pub mod index;
pub mod leases;
pub mod manifest;
pub mod mediatype;
pub mod metrics;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;

pub use config::{ImageConfig, Limits, RegistryConfig};
pub use error::{Error, Result};
pub use grpc::CriImageService;
pub use metrics::ImageMetrics;
pub use store::ImageStore;
