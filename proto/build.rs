//! Generates the CRI v1 messages and services from `cri/v1/api.proto` and
//! writes its file descriptor set for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("cri_v1_descriptor.bin"))
        // gantry keeps CRI configs in its JSON records: the derives and
        // field names are those of the k8s-cri crate it used before, and
        // `default` lets a record written before a field existed load.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]")
        // Bytes since 1.36, a string before: records hold the old form.
        .field_attribute(
            "runtime.v1.KeyValue.value",
            "#[serde(with = \"crate::env_value\")]",
        )
        // Its Debug (in lib.rs) hides the secrets, as upstream's
        // `debug_redact` asks.
        .skip_debug(["runtime.v1.AuthConfig"])
        .compile_protos(&["cri/v1/api.proto"], &["cri/v1"])?;
    Ok(())
}
