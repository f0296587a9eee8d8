//! The kube client's transport: kube's own layers (kubeconfig TLS, auth,
//! headers, retries of 429/503/504) over a connector tuned as client-go's.

/// A kube client as `kube::Client::try_from` builds one (kubeconfig TLS,
/// auth, headers, retries of 429/503/504), but as client-go connects: with
/// Nagle's algorithm off (with it on, the first request on every new
/// connection waited for the server's delayed ACK of the TLS handshake,
/// 40 ms a connection on Linux) and over HTTP/2 where offered.
pub(super) fn client(config: kube::Config) -> Result<kube::Client, String> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
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
    // request below, not kube's per-socket read timeout: an HTTP/2 connection
    // always waits to read, so that timeout closed idle pooled connections
    // under the requests about to use them.
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    let http_client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let deadline = config.read_timeout.map(tower::timeout::TimeoutLayer::new);
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer().map_err(|e| e.to_string())?)
        .layer(config.extra_headers_layer().map_err(|e| e.to_string())?)
        .option_layer(deadline)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace))
}
