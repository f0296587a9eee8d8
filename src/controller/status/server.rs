//! The controller's HTTP endpoint: `/metrics` (OpenMetrics text),
//! `/healthz` and `/readyz`, served by hyper's HTTP/1 server on one port,
//! GET only. It reads the shared state and changes nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::Shared;
use super::metrics::CONTENT_TYPE;

/// Serves until the process ends; a connection that fails is dropped alone.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: try again shortly.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = respond(&shared, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            // A client that never finishes its request headers is cut off.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(shared: &Shared, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match path {
        "/metrics" => Response::builder()
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Full::new(Bytes::from(shared.metrics.encode())))
            .expect("a valid response"),
        "/healthz" => probe(shared.health().live()),
        "/readyz" => probe(shared.health().ready()),
        _ => text(StatusCode::NOT_FOUND, "not found: /metrics, /healthz, /readyz\n".into()),
    }
}

fn probe(result: Result<&'static str, String>) -> Response<Full<Bytes>> {
    match result {
        Ok(why) => text(StatusCode::OK, format!("ok: {why}\n")),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
