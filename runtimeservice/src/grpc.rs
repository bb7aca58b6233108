//! The CRI RuntimeService over gRPC: converts CRI messages and calls the
//! plain business code ([`crate::pod`], [`crate::container`]). Exec,
//! Attach and PortForward are checked here and answered with a URL minted by
//! the daemon's streaming server ([`StreamUrls`]). What is not built yet
//! (checkpoints) answers `Unimplemented`, naming the RPC. The streaming list
//! RPCs of CRI 1.36 send what their list RPC answers, split into messages of
//! bounded size.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use gantry_proto::v1 as cri;
use gantry_proto::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use crate::config::{CgroupDriver, RuntimeConfig};
use crate::container::ContainerService;
use crate::detach::{detached, run_once, Replays};
use crate::pod::PodService;

/// The CRI API version gantry speaks.
pub const CRI_API_VERSION: &str = "v1";
pub const RUNTIME_NAME: &str = "gantry";

pub struct CriRuntimeService {
    config: RuntimeConfig,
    pods: Arc<PodService>,
    containers: Arc<ContainerService>,
    streaming: Option<Arc<dyn StreamUrls>>,
    /// The node's pod CIDRs, as kubelet last set them (UpdateRuntimeConfig).
    pod_cidrs: std::sync::Mutex<Vec<String>>,
    /// Answers of abandoned creating calls, for their retries.
    pod_runs: Replays<cri::RunPodSandboxRequest>,
    container_creates: Replays<cri::CreateContainerRequest>,
    container_starts: Replays<cri::StartContainerRequest>,
}

/// The stream choices an Exec or Attach request may make.
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument(
            "one of stdin, stdout and stderr must be requested",
        ));
    }
    if tty && stderr {
        // A terminal merges the two streams.
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be true",
        ));
    }
    Ok(())
}

/// Mints single-use URLs on the streaming server for requests that were
/// already checked. The daemon implements it.
pub trait StreamUrls: Send + Sync + 'static {
    fn exec(&self, req: cri::ExecRequest) -> Result<String, Status>;
    fn attach(&self, req: cri::AttachRequest) -> Result<String, Status>;
    fn port_forward(&self, req: cri::PortForwardRequest) -> Result<String, Status>;
}

impl CriRuntimeService {
    pub fn new(
        config: RuntimeConfig,
        pods: Arc<PodService>,
        containers: Arc<ContainerService>,
    ) -> Self {
        CriRuntimeService {
            config,
            pods,
            containers,
            streaming: None,
            pod_cidrs: Default::default(),
            pod_runs: Replays::default(),
            container_creates: Replays::default(),
            container_starts: Replays::default(),
        }
    }

    pub fn with_streaming(mut self, urls: Arc<dyn StreamUrls>) -> Self {
        self.streaming = Some(urls);
        self
    }

    fn streaming(&self, rpc: &str) -> Result<&Arc<dyn StreamUrls>, Status> {
        self.streaming
            .as_ref()
            .ok_or_else(|| Status::unimplemented(format!("{rpc}: the streaming server is off")))
    }

    /// Every ready pod's metrics, read on a blocking thread: the poll reads
    /// a few files per cgroup and enters each pod's network namespace.
    async fn pod_metrics(&self) -> Result<Vec<cri::PodSandboxMetrics>, Status> {
        let containers = self.containers.clone();
        tokio::task::spawn_blocking(move || containers.pod_metrics())
            .await
            .map_err(|e| Status::internal(format!("reading pod metrics: {e}")))
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

/// The answer of a streaming list RPC (CRI 1.36).
type ListStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// The streaming form of a list answer: the same items, split into messages
/// that each stay well under the client's size limit.
fn list_stream<I: prost::Message + 'static, T: Send + 'static>(
    items: Vec<I>,
    wrap: impl Fn(Vec<I>) -> T + Send + 'static,
) -> ListStream<T> {
    let chunks = gantry_proto::chunk_by_size(items, gantry_proto::STREAM_CHUNK_BYTES);
    Box::pin(tokio_stream::iter(
        chunks.into_iter().map(move |c| Ok(wrap(c))),
    ))
}

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
        let network_ready = match self.pods.network.ready().await {
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
        let configured = self.pods.handlers();
        let mut handlers: Vec<cri::RuntimeHandler> = configured
            .keys()
            .map(|name| cri::RuntimeHandler {
                name: name.clone(),
                features: Some(self.containers.handler_features(name)),
            })
            .collect();
        // The default handler also answers to the empty name.
        handlers.push(cri::RuntimeHandler {
            name: String::new(),
            features: Some(self.containers.handler_features("")),
        });
        let mut info = HashMap::new();
        if verbose {
            let config = RuntimeConfig {
                runtimes: (*configured).clone(),
                ..self.config.clone()
            };
            let config =
                serde_json::to_string(&config).map_err(|e| Status::internal(e.to_string()))?;
            info.insert("config".to_string(), config);
            let cidrs = self
                .pod_cidrs
                .lock()
                .map(|c| c.join(","))
                .unwrap_or_default();
            info.insert("podCIDRs".to_string(), cidrs);
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime_ready, network_ready],
            }),
            info,
            runtime_handlers: handlers,
            // Strict is honoured (spec.rs leaves out the image's groups) and
            // ContainerStatus.user reports the groups the process got.
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
                // A pod user namespace owns the pod's network namespace;
                // the host's cannot be (see crate::userns::validate).
                user_namespaces_host_network: false,
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

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let req = request.into_inner();
        let config = req
            .config
            .clone()
            .ok_or_else(|| Status::invalid_argument("pod sandbox config is required"))?;
        let key = match &config.metadata {
            Some(m) => format!("{}/{}/{}/{}", m.namespace, m.name, m.uid, m.attempt),
            None => String::new(),
        };
        let (pods, containers) = (self.pods.clone(), self.containers.clone());
        let handler = req.runtime_handler.clone();
        let exists = {
            let pods = self.pods.clone();
            move |id: &str| pods.store.get(id).is_some()
        };
        let id = run_once(
            &self.pod_runs,
            "RunPodSandbox",
            &key,
            &req,
            prost::Message::encoded_len(&req),
            exists,
            || async move {
                let id = pods.run(config, handler).await?;
                // A sandbox is reported as a container under its own ID,
                // created and started at once (containerd's CRI plugin does
                // the same).
                containers.emit_pod_event(&id, cri::ContainerEventType::ContainerCreatedEvent);
                containers.emit_pod_event(&id, cri::ContainerEventType::ContainerStartedEvent);
                Ok(id)
            },
        )
        .await?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let (pods, containers) = (self.pods.clone(), self.containers.clone());
        detached("StopPodSandbox", async move {
            Ok(pods.stop_sandbox(&containers, &id).await?)
        })
        .await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        if let Ok(Some(full)) = self.pods.store.resolve(&id) {
            let in_pod = self.containers.in_pod(&full);
            self.pod_runs.forget(std::slice::from_ref(&full), |_| false);
            let prefix = format!("{full}/");
            self.container_creates
                .forget(&[], |k| k.starts_with(&prefix));
            self.container_starts
                .forget(&[], |k| in_pod.iter().any(|c| c == k));
        }
        let (pods, containers) = (self.pods.clone(), self.containers.clone());
        detached("RemovePodSandbox", async move {
            Ok(pods.remove_sandbox(&containers, &id).await?)
        })
        .await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let req = request.into_inner();
        let mut resp = self.pods.status(&req.pod_sandbox_id, req.verbose)?;
        // Kubelet's evented PLEG reads the pod's containers from here too.
        if let Some(s) = &resp.status {
            resp.containers_statuses = self.containers.statuses_in_pod(&s.id);
        }
        Ok(Response::new(resp))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let items = self.pods.list(request.into_inner().filter);
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let req = request.into_inner();
        let config = req
            .config
            .clone()
            .ok_or_else(|| Status::invalid_argument("container config is required"))?;
        let key = match &config.metadata {
            Some(m) => format!("{}/{}/{}", req.pod_sandbox_id, m.name, m.attempt),
            None => String::new(),
        };
        let containers = self.containers.clone();
        let exists = {
            let containers = self.containers.clone();
            move |id: &str| matches!(containers.resolve(id), Ok(Some(_)))
        };
        let pod = req.pod_sandbox_id.clone();
        let id = run_once(
            &self.container_creates,
            "CreateContainer",
            &key,
            &req,
            prost::Message::encoded_len(&req),
            exists,
            || async move { Ok(containers.create(&pod, config).await?) },
        )
        .await?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        let req = request.into_inner();
        let containers = self.containers.clone();
        // A container an earlier identical start started is the answer;
        // one that failed to start is started again.
        let exists = {
            let containers = self.containers.clone();
            move |id: &str| matches!(containers.resolve(id), Ok(Some(_)))
        };
        let id = req.container_id.clone();
        run_once(
            &self.container_starts,
            "StartContainer",
            &req.container_id,
            &req,
            prost::Message::encoded_len(&req),
            exists,
            || async move {
                containers.start(&id).await?;
                Ok(id)
            },
        )
        .await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let req = request.into_inner();
        let containers = self.containers.clone();
        detached("StopContainer", async move {
            Ok(containers.stop(&req.container_id, req.timeout).await?)
        })
        .await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        if let Ok(Some(full)) = self.containers.resolve(&id) {
            self.container_creates
                .forget(std::slice::from_ref(&full), |_| false);
            self.container_starts.forget(&[], |k| k == full);
        }
        let containers = self.containers.clone();
        detached("RemoveContainer", async move {
            Ok(containers.remove(&id).await?)
        })
        .await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            self.containers.status(&req.container_id, req.verbose)?,
        ))
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let containers = self.containers.list(request.into_inner().filter);
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            self.containers
                .exec_sync(&req.container_id, req.cmd, req.timeout)
                .await?,
        ))
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        self.containers
            .reopen_log(&request.into_inner().container_id)?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let req = request.into_inner();
        let res = req
            .linux
            .ok_or_else(|| Status::invalid_argument("linux resources are required"))?;
        let containers = self.containers.clone();
        detached("UpdateContainerResources", async move {
            Ok(containers.update_resources(&req.container_id, res).await?)
        })
        .await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let stats = self.containers.stats(&request.into_inner().container_id)?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        // Cgroup files and writable-layer walks for every container: off
        // the async threads, so the in-memory calls kubelet makes meanwhile
        // (its relist) do not wait behind them.
        let (containers, filter) = (self.containers.clone(), request.into_inner().filter);
        let stats = tokio::task::spawn_blocking(move || containers.list_stats(filter))
            .await
            .map_err(|e| Status::internal(format!("reading container stats: {e}")))?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let stats = self
            .containers
            .pod_stats(&request.into_inner().pod_sandbox_id)?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        // As ListContainerStats, and each pod's network counters too.
        let (containers, filter) = (self.containers.clone(), request.into_inner().filter);
        let stats = tokio::task::spawn_blocking(move || containers.list_pod_stats(filter))
            .await
            .map_err(|e| Status::internal(format!("reading pod stats: {e}")))?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    type StreamPodSandboxesStream = ListStream<cri::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        request: Request<cri::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let items = self.pods.list(request.into_inner().filter);
        Ok(Response::new(list_stream(items, |pod_sandboxes| {
            cri::StreamPodSandboxesResponse { pod_sandboxes }
        })))
    }

    type StreamContainersStream = ListStream<cri::StreamContainersResponse>;

    async fn stream_containers(
        &self,
        request: Request<cri::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let items = self.containers.list(request.into_inner().filter);
        Ok(Response::new(list_stream(items, |containers| {
            cri::StreamContainersResponse { containers }
        })))
    }

    type StreamContainerStatsStream = ListStream<cri::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        request: Request<cri::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let items = self.containers.list_stats(request.into_inner().filter);
        Ok(Response::new(list_stream(items, |container_stats| {
            cri::StreamContainerStatsResponse { container_stats }
        })))
    }

    type StreamPodSandboxStatsStream = ListStream<cri::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let items = self.containers.list_pod_stats(request.into_inner().filter);
        Ok(Response::new(list_stream(items, |pod_sandbox_stats| {
            cri::StreamPodSandboxStatsResponse { pod_sandbox_stats }
        })))
    }

    type StreamPodSandboxMetricsStream = ListStream<cri::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _request: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        let items = self.pod_metrics().await?;
        Ok(Response::new(list_stream(items, |pod_sandbox_metrics| {
            cri::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            }
        })))
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: crate::cri_metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics: self.pod_metrics().await?,
        }))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let bus = self.containers.events.clone();
        let mut events = bus.subscribe();
        // A small buffer towards the client: when it stops reading, this
        // task stops too and the broadcast channel, not the daemon, keeps
        // what it missed until the subscriber is dropped for lagging.
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = events.recv() => next,
                    () = bus.closing() => return,
                };
                let item = match next {
                    Ok(ev) => Ok(ev),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "a GetContainerEvents subscriber fell behind and is dropped"
                        );
                        Err(Status::resource_exhausted(format!(
                            "this subscriber fell {n} events behind and was dropped; subscribe again and relist"
                        )))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn exec(
        &self,
        request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        let mut req = request.into_inner();
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("exec needs a command"));
        }
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        req.container_id = self.containers.running_id(&req.container_id)?;
        let url = self.streaming("Exec")?.exec(req)?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(
        &self,
        request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let mut req = request.into_inner();
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        req.container_id = self.containers.running_id(&req.container_id)?;
        let url = self.streaming("Attach")?.attach(req)?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let mut req = request.into_inner();
        if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Status::invalid_argument(format!(
                "port {p} is out of range"
            )));
        }
        req.pod_sandbox_id = self.pods.store.find(&req.pod_sandbox_id)?.id;
        self.containers.port_forward_target(&req.pod_sandbox_id)?;
        let url = self.streaming("PortForward")?.port_forward(req)?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    /// Kubelet hands over the node's pod CIDRs when it learns them. Pod
    /// networks come from the CNI configuration that is installed (as with
    /// containerd when it has no config template), so they are checked,
    /// kept for `Status` and logged; nothing else changes.
    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let text = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        let cidrs: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if cidrs.is_empty() {
            return Ok(Response::new(cri::UpdateRuntimeConfigResponse {}));
        }
        if let Some(bad) = cidrs.iter().find(|c| !crate::pod::network::is_cidr(c)) {
            return Err(Status::invalid_argument(format!(
                "pod CIDR {bad:?} is not an address with a prefix length"
            )));
        }
        tracing::info!(pod_cidrs = %cidrs.join(","), "pod CIDRs updated; pod networks come from the CNI configuration");
        if let Ok(mut kept) = self.pod_cidrs.lock() {
            *kept = cidrs;
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn update_pod_sandbox_resources(
        &self,
        request: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<cri::UpdatePodSandboxResourcesResponse>, Status> {
        let req = request.into_inner();
        // `resources` already counts the overhead, which is only told.
        let resources = req
            .resources
            .ok_or_else(|| Status::invalid_argument("resources are required"))?;
        self.pods
            .update_resources(&req.pod_sandbox_id, &resources)?;
        Ok(Response::new(cri::UpdatePodSandboxResourcesResponse {}))
    }

    unimplemented_rpcs! {
        checkpoint_container: "CheckpointContainer", CheckpointContainerRequest => CheckpointContainerResponse;
    }
}
