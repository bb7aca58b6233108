//! The media types gantry knows, and what each one means for a pull: which
//! documents are manifests or indexes, which configs describe a runnable
//! image, and how each layer type is compressed. A layer is decompressed
//! the way its media type says, never the way its first bytes look, so a
//! type outside this list is refused rather than guessed at.

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Annotation buildkit puts on the index entries of attestation manifests.
pub const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    /// Docker's plain `rootfs.diff.tar` type: old Docker clients pushed
    /// gzip layers under it, so its magic bytes decide, as in containerd.
    /// No other type is ever sniffed.
    Detect,
}

/// What a layer media type says about its blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerType {
    pub compression: Compression,
    /// Non-distributable ("foreign") layers live at the descriptor's
    /// `urls`, not in the registry.
    pub foreign: bool,
}

/// The layer types of the OCI image spec and Docker's schema 2, with every
/// compression either defines; `None` for anything else.
pub fn layer_type(media_type: &str) -> Option<LayerType> {
    let (compression, foreign) = match media_type {
        "application/vnd.oci.image.layer.v1.tar" => (Compression::None, false),
        "application/vnd.oci.image.layer.v1.tar+gzip" => (Compression::Gzip, false),
        "application/vnd.oci.image.layer.v1.tar+zstd" => (Compression::Zstd, false),
        "application/vnd.oci.image.layer.nondistributable.v1.tar" => (Compression::None, true),
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => (Compression::Gzip, true),
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => (Compression::Zstd, true),
        "application/vnd.docker.image.rootfs.diff.tar" => (Compression::Detect, false),
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => (Compression::Gzip, false),
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => (Compression::Zstd, false),
        "application/vnd.docker.image.rootfs.foreign.diff.tar" => (Compression::Detect, true),
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => (Compression::Gzip, true),
        _ => return None,
    };
    Some(LayerType {
        compression,
        foreign,
    })
}

/// Whether a config media type describes a runnable image; any other
/// config makes the manifest an artifact.
pub fn is_image_config(media_type: &str) -> bool {
    matches!(media_type, OCI_CONFIG | DOCKER_CONFIG)
}

pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_LIST)
}

pub fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
}

pub fn is_schema1(media_type: &str) -> bool {
    matches!(media_type, DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_types_by_the_book() {
        let c = |t: &str| layer_type(t).map(|l| (l.compression, l.foreign));
        assert_eq!(
            c("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some((Compression::Zstd, false))
        );
        assert_eq!(
            c("application/vnd.docker.image.rootfs.diff.tar.zstd"),
            Some((Compression::Zstd, false))
        );
        assert_eq!(
            c("application/vnd.oci.image.layer.v1.tar"),
            Some((Compression::None, false))
        );
        assert_eq!(
            c("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
            Some((Compression::Gzip, true))
        );
        assert_eq!(
            c("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
            Some((Compression::Gzip, true))
        );
        for unknown in [
            "application/vnd.acme.unknown.layer.v1+evil",
            "application/vnd.oci.image.layer.v1.tar+bzip2",
            "application/vnd.oci.image.layer.v1.tar+gzip ",
            "",
            "application/octet-stream",
        ] {
            assert_eq!(layer_type(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn configs_and_documents() {
        assert!(is_image_config(OCI_CONFIG) && is_image_config(DOCKER_CONFIG));
        assert!(!is_image_config("application/vnd.oci.empty.v1+json"));
        assert!(!is_image_config("application/vnd.in-toto+json"));
        assert!(is_index(DOCKER_LIST) && !is_index(OCI_MANIFEST));
        assert!(is_schema1(DOCKER_SCHEMA1_SIGNED));
    }
}
