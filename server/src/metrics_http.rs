//! The Prometheus endpoint: `GET /metrics` in the text format, over plain
//! HTTP/1 on the configured address.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tracing::{debug, info};

pub async fn bind(address: &str) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = address.parse()?;
    let listener = TcpListener::bind(addr).await?;
    info!(address = %listener.local_addr()?, "metrics endpoint listening");
    Ok(listener)
}

pub async fn serve(listener: TcpListener, registry: Registry) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(&req, &registry)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn respond(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Vec<u8>, content_type: &str| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            b"not found; try /metrics\n".to_vec(),
            "text/plain",
        );
    }
    let encoder = TextEncoder::new();
    let mut buf = Vec::new();
    match encoder.encode(&registry.gather(), &mut buf) {
        Ok(()) => reply(StatusCode::OK, buf, encoder.format_type()),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string().into_bytes(),
            "text/plain",
        ),
    }
}
