//! gRPC server reflection on the CRI socket, so that `grpcurl` and other
//! generic clients can list and call gantry's services without a copy of its
//! protobuf files: the CRI services, health checking and reflection itself.

use tonic_reflection::server::{v1, v1alpha};

fn builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(gantry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
}

/// Reflection in both protocol versions: grpcurl and grpc-go's tooling ask
/// for v1 first and fall back to v1alpha, which older clients only speak.
#[allow(clippy::type_complexity)]
pub fn services() -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    tonic_reflection::server::Error,
> {
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
