//! One tower layer around every CRI RPC: a tracing span and log line per
//! call (mutations at info, reads at debug, failures at warn), and the
//! per-RPC request counter and latency histogram. Handlers stay free of
//! this boilerplate.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tower::{Layer, Service};
use tracing::Instrument;

#[derive(Clone)]
pub struct RpcMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl RpcMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "gantry_cri_requests_total",
                "CRI requests by method and gRPC code",
            ),
            &["method", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "gantry_cri_request_duration_seconds",
                "CRI request latency by method",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                60.0,
            ]),
            &["method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(RpcMetrics { requests, latency })
    }
}

#[derive(Clone)]
pub struct InstrumentLayer {
    metrics: RpcMetrics,
}

impl InstrumentLayer {
    pub fn new(metrics: RpcMetrics) -> Self {
        InstrumentLayer { metrics }
    }
}

impl<S> Layer<S> for InstrumentLayer {
    type Service = Instrumented<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Instrumented {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Instrumented<S> {
    inner: S,
    metrics: RpcMetrics,
}

/// Reads only: logged at debug so kubelet's polling does not flood the log.
/// The methods gantry serves on the socket, by name: the label of a call.
/// A path naming anything else is `unknown`, so a client making up method
/// names cannot grow the metrics without bound.
fn known_methods() -> &'static std::collections::HashSet<String> {
    static KNOWN: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        use prost::Message;
        [
            gantry_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]
        .into_iter()
        .filter_map(|bytes| prost_types::FileDescriptorSet::decode(bytes).ok())
        .flat_map(|set| set.file)
        .flat_map(|file| file.service)
        .flat_map(|service| service.method)
        .filter_map(|method| method.name)
        .collect()
    })
}

/// The method a request path names (`/runtime.v1.RuntimeService/Version`
/// gives `Version`), or `unknown`.
fn method_label(path: &str) -> &str {
    match path.rsplit('/').next() {
        Some(m) if known_methods().contains(m) => m,
        _ => "unknown",
    }
}

fn is_read_only(method: &str) -> bool {
    method.starts_with("List")
        || method.ends_with("Status")
        || method.ends_with("Stats")
        || matches!(
            method,
            "Version" | "ImageFsInfo" | "RuntimeConfig" | "ListMetricDescriptors"
        )
}

fn code_name(code: i32) -> &'static str {
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "Canceled",
        tonic::Code::Unknown => "Unknown",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::DeadlineExceeded => "DeadlineExceeded",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Aborted => "Aborted",
        tonic::Code::OutOfRange => "OutOfRange",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Internal => "Internal",
        tonic::Code::Unavailable => "Unavailable",
        tonic::Code::DataLoss => "DataLoss",
        tonic::Code::Unauthenticated => "Unauthenticated",
    }
}

/// The caller's deadline from the `grpc-timeout` header (`<n><unit>`).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<S, B> Service<http::Request<B>> for Instrumented<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path()).to_string();
        let metrics = self.metrics.clone();
        let span = tracing::info_span!("cri", method = %method);
        let deadline = grpc_timeout(request.headers());
        let future = self.inner.call(request);
        Box::pin(
            async move {
                let started = Instant::now();
                // tonic itself ends a call past its grpc-timeout with
                // CANCELLED; callers (kubelet, critest) expect
                // DEADLINE_EXCEEDED, so the deadline is enforced here, a
                // hair earlier than tonic's own timer.
                let result = match deadline {
                    Some(d) => {
                        let early = d.saturating_sub((d / 10).min(Duration::from_millis(10)));
                        match tokio::time::timeout(early, future).await {
                            Ok(r) => r,
                            Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                                "{method} did not finish within the caller's deadline of {d:?}"
                            ))
                            .into_http()),
                        }
                    }
                    None => future.await,
                };
                let elapsed = started.elapsed();
                // Unary errors come back trailers-only, with grpc-status in the
                // headers; a response without it succeeded.
                let (code, message) = match &result {
                    Ok(response) => (
                        response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .unwrap_or(0),
                        response
                            .headers()
                            .get("grpc-message")
                            .and_then(|v| v.to_str().ok())
                            .map(percent_decode)
                            .unwrap_or_default(),
                    ),
                    Err(_) => (tonic::Code::Internal as i32, "transport error".to_string()),
                };
                let name = code_name(code);
                metrics
                    .requests
                    .with_label_values(&[method.as_str(), name])
                    .inc();
                metrics
                    .latency
                    .with_label_values(&[method.as_str()])
                    .observe(elapsed.as_secs_f64());
                let micros = elapsed.as_micros() as u64;
                if code != 0 {
                    tracing::warn!(code = name, error = %message, micros, "request failed");
                } else if is_read_only(&method) {
                    tracing::debug!(micros, "request done");
                } else {
                    tracing::info!(micros, "request done");
                }
                if method == "PullImage" || method == "RemoveImage" {
                    release_free_memory();
                }
                result
            }
            .instrument(span),
        )
    }
}

/// A pull allocates tens of MiB of short-lived buffers across threads;
/// glibc keeps the freed pages mapped, so an idle daemon would sit at its
/// peak. Handing them back after the call keeps the resident size near idle.
fn release_free_memory() {
    tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim only returns free heap pages to the kernel.
        unsafe {
            libc::malloc_trim(0);
        }
    });
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_are_labels() {
        assert_eq!(
            method_label("/runtime.v1.RuntimeService/RunPodSandbox"),
            "RunPodSandbox"
        );
        assert_eq!(
            method_label("/runtime.v1.ImageService/PullImage"),
            "PullImage"
        );
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(
            method_label("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            "ServerReflectionInfo"
        );
        for made_up in ["/runtime.v1.RuntimeService/NoSuchCall", "/x/y1234", "", "/"] {
            assert_eq!(method_label(made_up), "unknown", "{made_up:?}");
        }
    }

    #[test]
    fn grpc_messages_are_decoded() {
        assert_eq!(
            percent_decode("image%20%22x%22 not found"),
            "image \"x\" not found"
        );
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[tokio::test]
    async fn a_missed_deadline_is_deadline_exceeded() {
        let registry = Registry::new();
        let layer = InstrumentLayer::new(RpcMetrics::new(&registry).unwrap());
        let slow = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut svc = layer.layer(slow);
        let req = http::Request::builder()
            .uri("/runtime.v1.ImageService/PullImage")
            .header("grpc-timeout", "50m")
            .body(())
            .unwrap();
        let started = Instant::now();
        let resp = svc.call(req).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(resp.headers()["grpc-status"], "4");
        let text = registry
            .gather()
            .iter()
            .map(|m| format!("{m:?}"))
            .collect::<String>();
        assert!(text.contains("DeadlineExceeded"), "{text}");
    }

    #[test]
    fn grpc_timeouts_parse() {
        let mut h = http::HeaderMap::new();
        assert_eq!(grpc_timeout(&h), None);
        for (v, d) in [
            ("2S", Duration::from_secs(2)),
            ("150m", Duration::from_millis(150)),
            ("1H", Duration::from_secs(3600)),
            ("999n", Duration::from_nanos(999)),
        ] {
            h.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(grpc_timeout(&h), Some(d));
        }
        h.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
    }

    #[test]
    fn reads_are_told_from_mutations() {
        assert!(is_read_only("ListImages"));
        assert!(is_read_only("ImageStatus"));
        assert!(is_read_only("ListContainerStats"));
        assert!(!is_read_only("PullImage"));
        assert!(!is_read_only("RemoveImage"));
    }
}
