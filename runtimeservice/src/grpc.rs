//! The CRI RuntimeService over gRPC. `Version`, `Status` and `RuntimeConfig`
//! are real; pods, containers and streaming are not built yet and answer
//! `Unimplemented`, naming the RPC.

use std::collections::HashMap;
use std::pin::Pin;

use gantry_proto::v1 as cri;
use gantry_proto::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use crate::config::{CgroupDriver, RuntimeConfig};

/// The CRI API version gantry speaks.
pub const CRI_API_VERSION: &str = "v1";
pub const RUNTIME_NAME: &str = "gantry";

/// Tells `Status` whether pod networking is usable; the CNI side answers.
pub trait NetworkStatus: Send + Sync + 'static {
    /// `Ok(())` when ready, or the reason and message when not.
    fn network_ready(&self) -> Result<(), (String, String)>;
}

pub struct CriRuntimeService {
    config: RuntimeConfig,
    network: Box<dyn NetworkStatus>,
}

impl CriRuntimeService {
    pub fn new(config: RuntimeConfig, network: Box<dyn NetworkStatus>) -> Self {
        CriRuntimeService { config, network }
    }
}

// `#[tonic::async_trait]` does not see inside macro invocations, so the
// stubs are written in the shape it would have produced.
macro_rules! unimplemented_rpcs {
    ($($fn_name:ident: $rpc:literal, $req:ident => $resp:ident;)*) => {
        $(
            fn $fn_name<'life0, 'async_trait>(
                &'life0 self,
                _request: Request<cri::$req>,
            ) -> Pin<Box<dyn std::future::Future<Output = Result<Response<cri::$resp>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async { Err(Status::unimplemented(concat!($rpc, " is not implemented in gantry yet"))) })
            }
        )*
    };
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for CriRuntimeService {
    async fn version(
        &self,
        _request: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        request: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let verbose = request.into_inner().verbose;
        let runtime_ready = cri::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        let network_ready = match self.network.network_ready() {
            Ok(()) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: true,
                ..Default::default()
            },
            Err((reason, message)) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason,
                message,
            },
        };
        let mut handlers: Vec<cri::RuntimeHandler> = self
            .config
            .runtimes
            .keys()
            .map(|name| cri::RuntimeHandler {
                name: name.clone(),
                features: Some(cri::RuntimeHandlerFeatures::default()),
            })
            .collect();
        // The default handler also answers to the empty name.
        handlers.push(cri::RuntimeHandler {
            name: String::new(),
            features: Some(cri::RuntimeHandlerFeatures::default()),
        });
        let mut info = HashMap::new();
        if verbose {
            let config =
                serde_json::to_string(&self.config).map_err(|e| Status::internal(e.to_string()))?;
            info.insert("config".to_string(), config);
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime_ready, network_ready],
            }),
            info,
            runtime_handlers: handlers,
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        }))
    }

    async fn runtime_config(
        &self,
        _request: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        let driver = match self.config.cgroup_driver {
            CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
            CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
        };
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(Status::unimplemented(
            "GetContainerEvents is not implemented in gantry yet",
        ))
    }

    unimplemented_rpcs! {
        run_pod_sandbox: "RunPodSandbox", RunPodSandboxRequest => RunPodSandboxResponse;
        stop_pod_sandbox: "StopPodSandbox", StopPodSandboxRequest => StopPodSandboxResponse;
        remove_pod_sandbox: "RemovePodSandbox", RemovePodSandboxRequest => RemovePodSandboxResponse;
        pod_sandbox_status: "PodSandboxStatus", PodSandboxStatusRequest => PodSandboxStatusResponse;
        list_pod_sandbox: "ListPodSandbox", ListPodSandboxRequest => ListPodSandboxResponse;
        create_container: "CreateContainer", CreateContainerRequest => CreateContainerResponse;
        start_container: "StartContainer", StartContainerRequest => StartContainerResponse;
        stop_container: "StopContainer", StopContainerRequest => StopContainerResponse;
        remove_container: "RemoveContainer", RemoveContainerRequest => RemoveContainerResponse;
        list_containers: "ListContainers", ListContainersRequest => ListContainersResponse;
        container_status: "ContainerStatus", ContainerStatusRequest => ContainerStatusResponse;
        update_container_resources: "UpdateContainerResources", UpdateContainerResourcesRequest => UpdateContainerResourcesResponse;
        reopen_container_log: "ReopenContainerLog", ReopenContainerLogRequest => ReopenContainerLogResponse;
        exec_sync: "ExecSync", ExecSyncRequest => ExecSyncResponse;
        exec: "Exec", ExecRequest => ExecResponse;
        attach: "Attach", AttachRequest => AttachResponse;
        port_forward: "PortForward", PortForwardRequest => PortForwardResponse;
        container_stats: "ContainerStats", ContainerStatsRequest => ContainerStatsResponse;
        list_container_stats: "ListContainerStats", ListContainerStatsRequest => ListContainerStatsResponse;
        pod_sandbox_stats: "PodSandboxStats", PodSandboxStatsRequest => PodSandboxStatsResponse;
        list_pod_sandbox_stats: "ListPodSandboxStats", ListPodSandboxStatsRequest => ListPodSandboxStatsResponse;
        update_runtime_config: "UpdateRuntimeConfig", UpdateRuntimeConfigRequest => UpdateRuntimeConfigResponse;
        checkpoint_container: "CheckpointContainer", CheckpointContainerRequest => CheckpointContainerResponse;
        list_metric_descriptors: "ListMetricDescriptors", ListMetricDescriptorsRequest => ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics: "ListPodSandboxMetrics", ListPodSandboxMetricsRequest => ListPodSandboxMetricsResponse;
    }
}
