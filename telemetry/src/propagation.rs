//! W3C trace context over HTTP/gRPC headers and as a stored `traceparent`.

use std::task::{Context as TaskContext, Poll};

use http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
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

/// A tower layer for HTTP and gRPC servers: each request runs in a span named
/// for its path whose parent is the caller's `traceparent`.
#[derive(Debug, Clone, Copy)]
pub struct ServerTraceLayer {
    name: &'static str,
}

impl ServerTraceLayer {
    /// `name` is the span name, e.g. `grpc.server` or `http.request`.
    pub fn new(name: &'static str) -> Self {
        Self { name }
    }
}

impl<S> tower::Layer<S> for ServerTraceLayer {
    type Service = ServerTraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTraceService {
            inner,
            name: self.name,
        }
    }
}

/// The service [`ServerTraceLayer`] wraps around a server.
#[derive(Debug, Clone)]
pub struct ServerTraceService<S> {
    inner: S,
    name: &'static str,
}

impl<S, B> tower::Service<http::Request<B>> for ServerTraceService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = tracing::info_span!(
            "request",
            otel.name = %format!("{} {}", self.name, request.uri().path()),
            rpc.method = %request.uri().path(),
            http.method = %request.method(),
        );
        set_parent(&span, extract(request.headers()));
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(future.instrument(span))
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
    fn garbage_traceparent_gives_an_empty_context() {
        use opentelemetry::trace::TraceContextExt as _;
        let context = context_from_traceparent("not-a-traceparent");
        assert!(!context.span().span_context().is_valid());
        let mut headers = HeaderMap::new();
        inject(&context, &mut headers);
        assert!(headers.get("traceparent").is_none());
    }
}
