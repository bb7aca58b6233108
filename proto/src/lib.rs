//! gantry's API surface: the CRI v1 messages and services of Kubernetes
//! 1.36, generated at build time from gantry's own definition in
//! `proto/cri/v1/api.proto`, and its file descriptor set.
//!
//! Until Kubernetes 1.32 this crate re-exported the `k8s-cri` crate. Its
//! newest release stops at 1.32, and protobuf silently drops fields a
//! receiver does not know, so a newer kubelet's stop signals, image
//! sub-paths or pod resizes would have been lost. Nothing else in
//! `k8s-cri` was used (its `v1alpha2` API is gone from kubelet), so the
//! dependency is dropped. The generated types keep what `k8s-cri` gave
//! them: serde derives with the same field names, so the JSON records
//! gantry wrote before still load.

/// The CRI v1 API (`runtime.v1`): messages, `runtime_service_server`,
/// `image_service_server` and the matching clients.
pub mod v1 {
    tonic::include_proto!("runtime.v1");

    impl std::fmt::Debug for AuthConfig {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            // Secrets show only whether they are set, so that no log line
            // or error message can carry them.
            fn redacted(s: &str) -> &'static str {
                if s.is_empty() {
                    ""
                } else {
                    "[REDACTED]"
                }
            }
            f.debug_struct("AuthConfig")
                .field("username", &self.username)
                .field("password", &redacted(&self.password))
                .field("auth", &redacted(&self.auth))
                .field("server_address", &self.server_address)
                .field("identity_token", &redacted(&self.identity_token))
                .field("registry_token", &redacted(&self.registry_token))
                .finish()
        }
    }
}

/// The encoded `FileDescriptorSet` of `proto/cri/v1/api.proto`, for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cri_v1_descriptor.bin"));

/// Largest encoded size of one message of a streaming list RPC
/// (`StreamContainers`, `StreamImages`, ...): well under the 16 MiB kubelet
/// accepts, so that a list too big for one answer still arrives whole.
pub const STREAM_CHUNK_BYTES: usize = 1 << 20;

/// Splits a list answer into groups of at most `max_bytes` encoded bytes
/// each, in order, for the streaming list RPCs; an item bigger than that on
/// its own travels alone. An empty list gives no group.
pub fn chunk_by_size<T: prost::Message>(items: Vec<T>, max_bytes: usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for item in items {
        // The item's size inside a repeated field: tag, length, body.
        let len = item.encoded_len();
        let framed = 1 + prost::length_delimiter_len(len) + len;
        if !current.is_empty() && size + framed > max_bytes {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
        size += framed;
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Serde form of `KeyValue.value`, bytes since CRI 1.36: a JSON string when
/// the bytes are UTF-8 (the only form records written before 1.36 hold), an
/// array of byte values otherwise, so that nothing is lost either way.
mod env_value {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(value) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_seq(value),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Value;
        impl<'de> Visitor<'de> for Value {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of bytes")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                Ok(v.as_bytes().to_vec())
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                // The size hint comes from the input: cap what it reserves.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_any(Value)
    }
}

#[cfg(test)]
mod tests;

/// The Kubernetes release whose CRI `proto/cri/v1/api.proto` matches.
pub const CRI_KUBERNETES_VERSION: &str = "1.36";
