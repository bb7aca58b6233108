//! Port forwarding into a pod's network namespace. Over SPDY
//! (`portforward.k8s.io`) the client opens an error stream and a data
//! stream per connection, paired by their `requestID` header; each pair
//! becomes one TCP connection to `127.0.0.1:<port>` inside the pod, so a
//! listener bound only to the pod's loopback is reachable too. Failures
//! are written on the error stream, and both streams are always finished,
//! so the client never hangs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use gantry_proto::v1 as cri;
use gantry_runtimeservice::exec::connect_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info};

use super::spdy::{Connection, IncomingStream, StreamWriter};
use super::StreamingServer;

pub const PROTOCOLS: &[&str] = &["portforward.k8s.io"];

pub async fn serve_spdy(
    server: Arc<StreamingServer>,
    mut conn: Connection,
    req: cri::PortForwardRequest,
) {
    let netns = match server.containers.port_forward_target(&req.pod_sandbox_id) {
        Ok(n) => n,
        Err(e) => {
            debug!(error = %e, "pod not available for port forwarding");
            conn.close().await;
            return;
        }
    };
    let mut halves: HashMap<String, (Option<IncomingStream>, Option<IncomingStream>)> =
        HashMap::new();
    let mut closed = conn.closed.clone();
    let activity = conn.activity.clone();
    let idle = server.idle_timeout();
    loop {
        let s = tokio::select! {
            s = conn.streams.recv() => s,
            _ = closed.wait_for(|c| *c) => None,
            _ = activity.expired(idle) => {
                debug!(idle_secs = idle.as_secs(), "closing an idle port forward");
                None
            }
        };
        let Some(s) = s else { break };
        let id = s.header("requestid").unwrap_or_default().to_string();
        let kind = s.header("streamtype").unwrap_or_default().to_string();
        let entry = halves.entry(id.clone()).or_default();
        match kind.as_str() {
            "data" => entry.0 = Some(s),
            "error" => entry.1 = Some(s),
            other => {
                debug!(stream_type = other, "unexpected stream type; resetting it");
                s.writer.reset().await;
                continue;
            }
        }
        if let (Some(_), Some(_)) = entry {
            if let Some((Some(data), Some(error))) = halves.remove(&id) {
                let port = data.header("port").and_then(|p| p.parse::<u16>().ok());
                let allowed =
                    port.is_some_and(|p| req.port.is_empty() || req.port.contains(&(p as i32)));
                let netns = netns.clone();
                let pod = req.pod_sandbox_id.clone();
                tokio::spawn(async move {
                    match port {
                        Some(p) if allowed => forward(data, error.writer, netns, p, &pod).await,
                        _ => {
                            let msg = format!(
                                "port {:?} is not one this port forward was opened for",
                                data.header("port").unwrap_or_default()
                            );
                            let _ = error.writer.send(msg.into_bytes()).await;
                            error.writer.finish().await;
                            data.writer.finish().await;
                        }
                    }
                });
            }
        }
    }
    conn.close().await;
}

/// Copies between one data stream and a new connection to `port` in the pod.
pub async fn forward(
    mut data: IncomingStream,
    error: StreamWriter,
    netns: Option<PathBuf>,
    port: u16,
    pod: &str,
) {
    let tcp = match connect_port(netns, port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {pod}: {e}");
            debug!("{msg}");
            let _ = error.send(msg.into_bytes()).await;
            error.finish().await;
            data.writer.finish().await;
            return;
        }
    };
    info!(port, "forwarding a connection");
    let (mut rd, mut wr) = tcp.into_split();
    let writer = data.writer.clone();
    let to_pod = async move {
        while let Some(d) = data.data.recv().await {
            if wr.write_all(&d).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let from_pod = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.send(buf[..n].to_vec()).await.is_err() {
                        break;
                    }
                }
            }
        }
        writer.finish().await;
    };
    // The pod's side ending ends the connection, as kubelet does.
    tokio::select! {
        _ = from_pod => {}
        _ = async { to_pod.await; std::future::pending::<()>().await } => {}
    }
    error.finish().await;
}
