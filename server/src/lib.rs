//! The daemon's own code: configuration, the gRPC wiring, metrics, the
//! streaming server and the host checks. A library so that the end-to-end
//! tests and the benchmark speak the streaming protocols with the same
//! framing code ([`streaming::spdy`]) the server uses.

pub mod authority;
pub mod check;
pub mod config;
pub mod daemon;
pub mod instrument;
pub mod metrics_http;
pub mod node_metrics;
pub mod reflection;
pub mod reload;
pub mod state;
pub mod streaming;
