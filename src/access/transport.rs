//! The kube client's transport: kube's own layers (kubeconfig TLS, auth,
//! headers) over a connector tuned as client-go's, with retries of only what
//! is safe to send again and a deadline on every whole request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use kube::client::retry::RetryPolicy;
use tokio::time::{Instant, Sleep};
use tower::BoxError;

/// A kube client as `kube::Client::try_from` builds one (kubeconfig TLS,
/// auth, headers), but as client-go connects: with Nagle's algorithm off
/// (with it on, the first request on every new connection waited for the
/// server's delayed ACK of the TLS handshake, 40 ms a connection on Linux),
/// over HTTP/2 where offered, with TCP and HTTP/2 keepalive every
/// `keepalive` (none when `None`). `config.read_timeout` bounds each whole
/// request, response body included.
pub(super) fn client(config: kube::Config, keepalive: Option<Duration>) -> Result<kube::Client, String> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    use kube::client::ConfigExt;
    use tower::ServiceBuilder;

    // kube only reaches a proxy with its socks5/http-proxy features, which
    // meshform does not build in; say so rather than connect around it.
    if let Some(proxy) = &config.proxy_url {
        // Named by scheme, host and port only: a proxy URL may carry a password.
        let host = proxy.authority().map_or("", |a| a.host());
        let port = proxy.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
        let scheme = proxy.scheme_str().unwrap_or("http");
        return Err(format!(
            "proxy-url {scheme}://{host}{port} is not supported: meshform connects to API servers directly"
        ));
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    // client-go dials with TCP keepalive (k8s.io/client-go/transport/cache.go,
    // KeepAlive: 30s): the kernel then finds a peer that vanished without a
    // FIN or RST, which an idle connection otherwise never notices.
    http.set_keepalive(keepalive);
    // HTTP/2 where the server offers it (kube-apiserver does), as client-go
    // uses it: one TLS handshake per cluster, every request multiplexed on it.
    let tls = config.rustls_client_config().map_err(|e| e.to_string())?;
    let mut https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = rustls_pki_types::ServerName::try_from(name.clone())
            .map_err(|e| format!("tls-server-name {name:?} is not a valid name: {e}"))?;
        https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let https = https.enable_all_versions().wrap_connector(http);
    // Connecting (TCP and TLS) has its deadline here. Reading has one per
    // whole request below, not kube's per-socket read timeout: an HTTP/2
    // connection always waits to read, so that timeout closed idle pooled
    // connections under the requests about to use them.
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
    builder.timer(TokioTimer::new()).pool_timer(TokioTimer::new());
    if let Some(interval) = keepalive {
        // client-go pings an HTTP/2 connection that has been silent for 30 s
        // and closes it when the ping is not answered within 15 s
        // (k8s.io/apimachinery/pkg/util/net/http.go, readIdleTimeout and
        // pingTimeout): a connection that died in a network blip leaves the
        // pool instead of taking every later request down with it.
        builder
            .http2_keep_alive_interval(interval)
            .http2_keep_alive_timeout(interval / 2)
            .http2_keep_alive_while_idle(true);
    }
    let http_client = builder.build(connector);
    let deadline = DeadlineLayer(config.read_timeout);
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(SafeRetry(RetryPolicy::server_retry())));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer().map_err(|e| super::error_chain(&e))?)
        .layer(config.extra_headers_layer().map_err(|e| e.to_string())?)
        .layer(deadline)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// kube's retry policy (backoff, Retry-After) for only what may be sent
/// again. A read always may. A write may only when the API server said it
/// did not act on it: the API server can answer 504 to a create that then
/// commits (k8s.io/apiserver/pkg/server/filters/timeout.go answers when the
/// deadline passes and leaves the handler running), and a create sent again
/// then meets its own object (409), an update its own new resourceVersion.
#[derive(Clone)]
struct SafeRetry(RetryPolicy);

impl<Res> tower::retry::Policy<Request<kube::client::Body>, Response<Res>, BoxError> for SafeRetry {
    type Future = Sleep;

    fn retry(
        &mut self,
        request: &mut Request<kube::client::Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Sleep> {
        let Ok(response) = result else { return None };
        if !repeatable(request.method(), response.status(), response.headers()) {
            return None;
        }
        self.0.retry(request, result)
    }

    fn clone_request(&mut self, request: &Request<kube::client::Body>) -> Option<Request<kube::client::Body>> {
        <RetryPolicy as tower::retry::Policy<_, Response<Res>, BoxError>>::clone_request(&mut self.0, request)
    }
}

/// Whether a request answered `status` may be sent again (kube's policy then
/// judges the status itself: 429, 503 and 504).
///
/// A read may. A write may only when the answer says it was not processed:
/// kube-apiserver rejects a request before any handler runs with a 429 and a
/// Retry-After header (flow control, priority-and-fairness.go; the shutdown
/// window, with_retry_after.go) or a 503 and a Retry-After header ("apiserver
/// is shutting down", waitgroup.go), all in k8s.io/apiserver/pkg/server/filters.
/// client-go (k8s.io/client-go/rest/with_retry.go, checkWait) retries any
/// verb on a 429 or any 5xx that carries Retry-After; meshform does not
/// retry a write on other 5xx, which a handler answers after it may have
/// acted (a storage timeout is a 500 with Retry-After), nor on 504.
fn repeatable(method: &Method, status: StatusCode, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD) {
        return true;
    }
    matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE)
        && headers.contains_key(RETRY_AFTER)
}

/// Bounds each whole request, the response body included: a response whose
/// headers arrived and whose body then stopped (a link cut mid-LIST) fails
/// at the deadline instead of waiting forever. `None`: no deadline.
#[derive(Clone, Copy)]
struct DeadlineLayer(Option<Duration>);

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner, limit: self.0 }
    }
}

#[derive(Clone)]
struct Deadline<S> {
    inner: S,
    limit: Option<Duration>,
}

impl<S, Req, B> tower::Service<Request<Req>> for Deadline<S>
where
    S: tower::Service<Request<Req>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response<DeadlineBody<B>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        // A watch's body is meant to stay open (the controller's, for half
        // an hour): its answer has the deadline, its body only the
        // keepalive, which finds a dead connection, and the watch's own end.
        let watch = is_watch(request.uri());
        // Every request, by method and path (names, never a query's values
        // or a body): what `bench/controller` counts, and what a person
        // asks with RUST_LOG=meshform::access=trace.
        tracing::trace!(method = %request.method(), path = request.uri().path(), watch, "request");
        let response = self.inner.call(request);
        let Some(limit) = self.limit else {
            return Box::pin(async move {
                let response = response.await.map_err(Into::into)?;
                Ok(response.map(|body| DeadlineBody { body, deadline: None }))
            });
        };
        let deadline = Instant::now() + limit;
        Box::pin(async move {
            let response = tokio::time::timeout_at(deadline, response)
                .await
                .map_err(|_| elapsed(limit))?
                .map_err(Into::into)?;
            Ok(response.map(|body| DeadlineBody {
                body,
                deadline: (!watch).then(|| (Box::pin(tokio::time::sleep_until(deadline)), limit)),
            }))
        })
    }
}

/// Whether a request is a watch (`?watch=true`, as kube and client-go send it).
fn is_watch(uri: &http::Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|pair| pair == "watch=true" || pair == "watch=1"))
}

/// A response body that fails once its request's deadline has passed.
struct DeadlineBody<B> {
    body: B,
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
}

impl<B> Body for DeadlineBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if let Some((sleep, limit)) = &mut self.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(elapsed(*limit))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request past its deadline, in words `is_timeout` and the reports know.
fn elapsed(limit: Duration) -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("timed out: no complete response within {}s", limit.as_secs_f64()),
    ))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;

    use super::*;

    fn retry_after() -> HeaderMap {
        HeaderMap::from_iter([(RETRY_AFTER, "1".parse().expect("a header value"))])
    }

    #[test]
    fn reads_are_sent_again() {
        for method in [Method::GET, Method::HEAD] {
            for status in [StatusCode::SERVICE_UNAVAILABLE, StatusCode::GATEWAY_TIMEOUT] {
                assert!(repeatable(&method, status, &HeaderMap::new()), "{method} {status}");
            }
        }
    }

    // Regression: a create answered 504 after it committed was sent again; the
    // second create met the first (409) and apply revoked the token it had stored.
    #[test]
    fn a_write_the_server_may_have_done_is_not_sent_again() {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            for status in [
                StatusCode::GATEWAY_TIMEOUT,
                StatusCode::INTERNAL_SERVER_ERROR,
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::TOO_MANY_REQUESTS,
            ] {
                assert!(!repeatable(&method, status, &HeaderMap::new()), "{method} {status}");
            }
            for status in [StatusCode::GATEWAY_TIMEOUT, StatusCode::INTERNAL_SERVER_ERROR] {
                assert!(
                    !repeatable(&method, status, &retry_after()),
                    "{method} {status} Retry-After"
                );
            }
        }
    }

    #[test]
    fn a_write_the_server_refused_before_acting_is_sent_again() {
        for status in [StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE] {
            assert!(repeatable(&Method::POST, status, &retry_after()), "{status}");
        }
    }

    /// A body that sends one frame, then nothing, ever.
    struct Stalled(bool);

    impl Body for Stalled {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if std::mem::replace(&mut self.0, true) {
                Poll::Pending
            } else {
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{\"items\":[")))))
            }
        }
    }

    // Regression: the deadline covered the response headers only; a body that
    // stopped half-way (a link cut mid-LIST) was waited for forever.
    #[tokio::test]
    async fn a_body_that_stops_fails_at_the_deadline() {
        use tower::{Layer, Service, ServiceExt};

        let inner = tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(Stalled(false))) });
        let mut service = DeadlineLayer(Some(Duration::from_millis(50))).layer(inner);
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(Request::new(()))
            .await
            .expect("headers in time");
        let mut body = std::pin::pin!(response.into_body());
        let error = loop {
            match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                Some(Ok(_)) => continue,
                Some(Err(error)) => break error,
                None => panic!("the body ended"),
            }
        };
        let io = error.downcast_ref::<std::io::Error>().expect("an io error");
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(io.to_string(), "timed out: no complete response within 0.05s");
    }

    // A watch's body stays open past the request deadline: the controller's
    // watches would otherwise be cut and sent again every --timeout.
    #[tokio::test]
    async fn a_watch_body_outlives_the_deadline() {
        use tower::{Layer, Service, ServiceExt};

        let inner = tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(Stalled(false))) });
        let mut service = DeadlineLayer(Some(Duration::from_millis(50))).layer(inner);
        let watch = Request::builder()
            .uri("/api/v1/namespaces/istio-system/secrets?watch=true&timeoutSeconds=1800")
            .body(())
            .unwrap();
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(watch)
            .await
            .expect("headers");
        let mut body = std::pin::pin!(response.into_body());
        assert!(std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await.is_some());
        let open = tokio::time::timeout(
            Duration::from_millis(200),
            std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)),
        )
        .await;
        assert!(open.is_err(), "the watch's body was cut at the deadline");
        assert!(!is_watch(&"/api/v1/secrets?watchers=true".parse().unwrap()));
    }
}
