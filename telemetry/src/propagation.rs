//! W3C trace context over HTTP/gRPC headers and as a stored `traceparent`.

use http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes a context into HTTP headers.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Reads a context from HTTP headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A single `traceparent`, as stored on a workitem.
struct TraceparentCarrier(Option<String>);

impl Injector for TraceparentCarrier {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

impl Extractor for TraceparentCarrier {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent")
            .then_some(self.0.as_deref())
            .flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// The remote parent context carried by `headers` (empty when there is none).
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes `context` into `headers` as `traceparent` (and `tracestate`).
pub fn inject(context: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(context, &mut HeaderInjector(headers));
}

/// Writes the current tracing span's context into `headers`.
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&tracing::Span::current().context(), headers);
}

/// The current span's `traceparent`, when it belongs to a sampled or remote trace.
pub fn current_traceparent() -> Option<String> {
    let mut carrier = TraceparentCarrier(None);
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.0
}

/// The remote context a stored `traceparent` names.
pub fn context_from_traceparent(traceparent: &str) -> Context {
    TraceContextPropagator::new().extract(&TraceparentCarrier(Some(traceparent.to_owned())))
}

/// Makes `context` the parent of `span` (no-op for an empty context).
pub fn set_parent(span: &tracing::Span, context: Context) {
    use opentelemetry::trace::TraceContextExt as _;
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// A tonic client interceptor that sends the current span's context with
/// every call.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClientInterceptor;

impl tonic_interceptor::Interceptor for GrpcClientInterceptor {
    fn call(
        &mut self,
        mut request: tonic_interceptor::Request<()>,
    ) -> Result<tonic_interceptor::Request<()>, tonic_interceptor::Status> {
        let mut headers = HeaderMap::new();
        inject_current(&mut headers);
        for (name, value) in &headers {
            if let Ok(value) = value.to_str()
                && let Ok(value) = value.parse()
            {
                request.metadata_mut().insert(
                    tonic_interceptor::MetadataKey::from_bytes(name.as_str().as_bytes())
                        .expect("traceparent is a valid metadata key"),
                    value,
                );
            }
        }
        Ok(request)
    }
}

mod tonic_interceptor {
    pub use tonic::metadata::MetadataKey;
    pub use tonic::service::Interceptor;
    pub use tonic::{Request, Status};
}

/// How a server names its requests' spans.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    /// `{package.Service}/{Method}` with `rpc.*` attributes; `client` for
    /// the calling side's span.
    Grpc { client: bool },
    /// `{METHOD} {route}` with `http.*` and `url.path`; `route` reads the
    /// matched route template from the request's extensions.
    Http {
        route: fn(&http::Extensions) -> Option<String>,
    },
}

/// A tower layer for HTTP and gRPC servers: each request runs in a server
/// span whose parent is the caller's `traceparent`, named and attributed
/// per the OpenTelemetry semantic conventions (HTTP server: `{method}
/// {http.route}`, `http.request.method`, `http.route`, `url.path`,
/// `http.response.status_code`; gRPC: `{rpc.service}/{rpc.method}`,
/// `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`).
///
/// The span lasts until the response body ends (a gRPC status arrives in
/// its trailers). Built on `tower_http::trace`.
#[derive(Debug, Clone, Copy)]
pub struct ServerTraceLayer {
    protocol: Protocol,
}

/// The service [`ServerTraceLayer`] wraps around a server.
pub type ServerTraceService<S> = tower_http::trace::Trace<
    S,
    tower_http::classify::SharedClassifier<tower_http::classify::GrpcErrorsAsFailures>,
    ServerSpan,
    (),
    ServerSpan,
    (),
    ServerSpan,
    (),
>;

impl ServerTraceLayer {
    /// For a gRPC server.
    pub fn grpc() -> Self {
        Self {
            protocol: Protocol::Grpc { client: false },
        }
    }

    /// For an HTTP server; `route` returns the route template the request
    /// matched (axum's `MatchedPath`), `None` for none (the span is then
    /// named for the method alone, as the conventions say: a raw path would
    /// make span names unbounded).
    pub fn http(route: fn(&http::Extensions) -> Option<String>) -> Self {
        Self {
            protocol: Protocol::Http { route },
        }
    }
}

impl<S> tower::Layer<S> for ServerTraceLayer {
    type Service = ServerTraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let span = ServerSpan {
            protocol: self.protocol,
        };
        tower_http::trace::TraceLayer::new_for_grpc()
            .make_span_with(span)
            .on_request(())
            .on_response(span)
            .on_body_chunk(())
            .on_eos(span)
            .on_failure(())
            .layer(inner)
    }
}

/// A gRPC client's channel whose every call runs in a client span named
/// `{service}/{method}` with `rpc.system`, `rpc.service`, `rpc.method` and
/// `rpc.grpc.status_code` (the OpenTelemetry semantic conventions), and
/// sends that span's context as `traceparent`, so the server's span is its
/// child.
pub type GrpcClientChannel<C = tonic::transport::Channel> =
    ServerTraceService<tonic::service::interceptor::InterceptedService<C, GrpcClientInterceptor>>;

/// Wraps `channel` into a [`GrpcClientChannel`].
pub fn grpc_client_channel<C>(channel: C) -> GrpcClientChannel<C> {
    let client = ServerTraceLayer {
        protocol: Protocol::Grpc { client: true },
    };
    tower::Layer::layer(
        &client,
        tonic::service::interceptor::InterceptedService::new(channel, GrpcClientInterceptor),
    )
}

/// Makes a request's span and records its outcome (see [`ServerTraceLayer`];
/// a client's in [`grpc_client_channel`]).
#[derive(Debug, Clone, Copy)]
pub struct ServerSpan {
    protocol: Protocol,
}

/// The gRPC status codes that mark a server span as an error (the
/// conventions: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS; the others are the caller's doing).
const GRPC_SERVER_ERRORS: [u16; 6] = [2, 4, 12, 13, 14, 15];

/// `/package.Service/Method` → (`package.Service`, `Method`).
pub(crate) fn grpc_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// The `grpc-status` in `headers` (response headers of a trailers-only
/// answer, or trailers).
fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Records a call's gRPC status on its span; a client span is an error for
/// any status but OK, a server span for [`GRPC_SERVER_ERRORS`].
fn record_grpc_status(span: &tracing::Span, code: u16, client: bool) {
    span.record("rpc.grpc.status_code", code);
    if (client && code != 0) || GRPC_SERVER_ERRORS.contains(&code) {
        span.record("otel.status_code", "ERROR");
    }
}

impl<B> tower_http::trace::MakeSpan<B> for ServerSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> tracing::Span {
        let path = request.uri().path();
        let span = match self.protocol {
            Protocol::Grpc { client } => {
                let (service, method) = grpc_method(path).unwrap_or(("_OTHER", "_OTHER"));
                tracing::info_span!(
                    "request",
                    otel.name = %format!("{service}/{method}"),
                    otel.kind = if client { "client" } else { "server" },
                    otel.status_code = tracing::field::Empty,
                    rpc.system = "grpc",
                    rpc.service = %service,
                    rpc.method = %method,
                    rpc.grpc.status_code = tracing::field::Empty,
                )
            }
            Protocol::Http { route } => {
                let method = http_method(request.method());
                let route = route(request.extensions());
                let name = match &route {
                    Some(route) => format!("{method} {route}"),
                    None => method.to_owned(),
                };
                tracing::info_span!(
                    "request",
                    otel.name = %name,
                    otel.kind = "server",
                    otel.status_code = tracing::field::Empty,
                    http.request.method = %method,
                    http.route = route.as_deref(),
                    url.path = %path,
                    http.response.status_code = tracing::field::Empty,
                )
            }
        };
        if !matches!(self.protocol, Protocol::Grpc { client: true }) {
            set_parent(&span, extract(request.headers()));
        }
        span
    }
}

/// The method as the conventions name it: a known one, else `_OTHER` (so an
/// invented method cannot make span names unbounded).
fn http_method(method: &http::Method) -> &str {
    use http::Method;
    match *method {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::PATCH
        | Method::HEAD
        | Method::OPTIONS
        | Method::CONNECT
        | Method::TRACE => method.as_str(),
        _ => "_OTHER",
    }
}

impl<B> tower_http::trace::OnResponse<B> for ServerSpan {
    fn on_response(
        self,
        response: &http::Response<B>,
        _latency: std::time::Duration,
        span: &tracing::Span,
    ) {
        match self.protocol {
            Protocol::Grpc { client } => {
                if let Some(code) = grpc_status(response.headers()) {
                    record_grpc_status(span, code, client);
                }
            }
            Protocol::Http { .. } => {
                let status = response.status();
                span.record("http.response.status_code", status.as_u16());
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
            }
        }
    }
}

impl tower_http::trace::OnEos for ServerSpan {
    fn on_eos(
        self,
        trailers: Option<&HeaderMap>,
        _stream_duration: std::time::Duration,
        span: &tracing::Span,
    ) {
        if let (Protocol::Grpc { client }, Some(code)) =
            (self.protocol, trailers.and_then(grpc_status))
        {
            record_grpc_status(span, code, client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_through_headers_and_storage() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = context_from_traceparent(traceparent);
        let mut headers = HeaderMap::new();
        inject(&context, &mut headers);
        assert_eq!(headers.get("traceparent").unwrap(), traceparent);
        let back = extract(&headers);
        use opentelemetry::trace::TraceContextExt as _;
        assert_eq!(
            back.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn grpc_paths_split_into_service_and_method() {
        assert_eq!(
            grpc_method("/k8sworker.v1.Executor/Apply"),
            Some(("k8sworker.v1.Executor", "Apply"))
        );
        assert_eq!(grpc_method("/k8sworker.v1.Executor"), None);
        assert_eq!(grpc_method("/a/b/c"), None);
        assert_eq!(grpc_method("//Apply"), None);
    }

    #[test]
    fn invented_http_methods_are_other() {
        assert_eq!(http_method(&http::Method::POST), "POST");
        let invented = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(http_method(&invented), "_OTHER");
    }

    #[test]
    fn garbage_traceparent_gives_an_empty_context() {
        use opentelemetry::trace::TraceContextExt as _;
        let context = context_from_traceparent("not-a-traceparent");
        assert!(!context.span().span_context().is_valid());
        let mut headers = HeaderMap::new();
        inject(&context, &mut headers);
        assert!(headers.get("traceparent").is_none());
    }
}
