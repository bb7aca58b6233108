//! A tiny HTTP/1.1 server on 127.0.0.1 that answers GETs from a fixed table,
//! for what a real registry will not serve: Docker schema 1 manifests, the
//! external URLs of non-distributable layers, and a blob that stops halfway
//! so a test can kill gantry in the middle of a pull. It counts the
//! requests per path, so a test can tell what gantry fetched. Stopped when
//! dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::oci::BuiltImage;

#[derive(Clone, Debug)]
pub struct Route {
    pub content_type: String,
    pub body: Vec<u8>,
    /// Send only this many bytes of the body, then hold the connection open
    /// without another byte.
    pub stall_after: Option<usize>,
    /// Answer 302 with this Location instead of the body.
    pub redirect_to: Option<String>,
    /// Send nothing until the test adds a permit here.
    pub hold: Option<Arc<tokio::sync::Semaphore>>,
}

impl Route {
    pub fn new(content_type: &str, body: &[u8]) -> Route {
        Route {
            content_type: content_type.into(),
            body: body.to_vec(),
            stall_after: None,
            redirect_to: None,
            hold: None,
        }
    }
}

#[derive(Default)]
struct Shared {
    routes: HashMap<String, Route>,
    hits: HashMap<String, usize>,
}

pub struct StaticHttp {
    pub addr: String,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl StaticHttp {
    pub async fn start() -> StaticHttp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let addr = listener.local_addr().expect("local address").to_string();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let task = tokio::spawn(async move {
            // Connection tasks live in the set, so aborting the accept loop
            // ends them too (a stalled download included).
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let state = state.clone();
                connections.spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head);
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let route = {
                        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                        *s.hits.entry(path.clone()).or_default() += 1;
                        s.routes.get(&path).cloned()
                    };
                    let route = match (route, path.as_str()) {
                        (Some(r), _) => r,
                        (None, "/v2/") => Route::new("application/json", b"{}"),
                        (None, _) => {
                            let body = br#"{"errors":[{"code":"NOT_FOUND"}]}"#;
                            let _ = stream
                                .write_all(
                                    format!(
                                        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                        body.len()
                                    )
                                    .as_bytes(),
                                )
                                .await;
                            let _ = stream.write_all(body).await;
                            return;
                        }
                    };
                    if let Some(gate) = &route.hold {
                        if let Ok(permit) = gate.acquire().await {
                            permit.forget();
                        }
                    }
                    if let Some(location) = &route.redirect_to {
                        let _ = stream
                            .write_all(
                                format!(
                                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                )
                                .as_bytes(),
                            )
                            .await;
                        return;
                    }
                    let header = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        route.content_type,
                        route.body.len()
                    );
                    if stream.write_all(header.as_bytes()).await.is_err() {
                        return;
                    }
                    match route.stall_after {
                        None => {
                            let _ = stream.write_all(&route.body).await;
                            let _ = stream.shutdown().await;
                        }
                        Some(n) => {
                            let _ = stream.write_all(&route.body[..n.min(route.body.len())]).await;
                            let _ = stream.flush().await;
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        });
        StaticHttp { addr, shared, task }
    }

    pub fn route(&self, path: &str, content_type: &str, body: &[u8]) {
        self.route_with(path, Route::new(content_type, body));
    }

    pub fn route_with(&self, path: &str, route: Route) {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .routes
            .insert(path.into(), route);
    }

    /// Serves an image the way a registry would: its manifest under `tag`
    /// and its digest, each blob under its digest.
    pub fn image(&self, repo: &str, tag: &str, img: &BuiltImage) {
        for reference in [tag, img.manifest_digest.as_str()] {
            self.route(
                &format!("/v2/{repo}/manifests/{reference}"),
                img.manifest_media_type,
                &img.manifest,
            );
        }
        for (digest, bytes) in &img.blobs {
            self.route(
                &format!("/v2/{repo}/blobs/{digest}"),
                "application/octet-stream",
                bytes,
            );
        }
    }

    /// How many requests asked for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for StaticHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
