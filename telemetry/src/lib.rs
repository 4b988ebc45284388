//! Telemetry for every k8sworker binary: one [`init`] that installs the
//! tracing subscriber (human logs on stderr, `RUST_LOG` filter) and, when the
//! standard `OTEL_*` variables name an OTLP endpoint, an OpenTelemetry
//! exporter; plus W3C trace-context propagation over HTTP and gRPC headers.
//!
//! Data flow: a span's context is written into a request's headers by
//! [`inject`] (client side, [`GrpcClientInterceptor`]), read back by
//! [`extract`] (server side, [`ServerTraceLayer`]), and stored between the
//! control plane and the gateway as a `traceparent` string
//! ([`current_traceparent`], [`context_from_traceparent`]).
//!
//! [`shutdown_signal`] is the one SIGTERM/Ctrl-C wait every binary shares.
//!
//! No exporter configured means no OpenTelemetry cost beyond the propagator.
//! Secrets and tokens must never be recorded as span fields.

#![warn(missing_docs)]

pub mod metrics;
mod propagation;
mod signal;

pub use signal::shutdown_signal;

pub use propagation::{
    GrpcClientChannel, GrpcClientInterceptor, ServerSpan, ServerTraceLayer, ServerTraceService,
    context_from_traceparent, current_traceparent, extract, grpc_client_channel, inject,
    inject_current, set_parent,
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `OTEL_EXPORTER_OTLP_*` named an exporter that could not be built.
    #[error("the OTLP trace exporter could not be built: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// Telemetry was set up twice in one process.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized(#[source] tracing_subscriber::util::TryInitError),
}

/// Keeps the exporter alive; dropping it flushes and shuts down the exporter.
#[must_use = "dropping the guard shuts the exporter down"]
#[derive(Debug)]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Guard {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry: flushing spans failed: {error}");
        }
    }
}

/// Whether the standard OpenTelemetry variables ask for an OTLP trace exporter:
/// an endpoint is set and `OTEL_TRACES_EXPORTER` is not `none`.
pub fn otlp_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none")
        || std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim() == "true");
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the global subscriber and propagator for the binary `service`.
///
/// `OTEL_SERVICE_NAME` overrides `service`. `RUST_LOG` filters both the logs
/// and the exported spans (default `info`). `K8SWORKER_LOG_FORMAT=json` writes
/// logs as JSON lines.
pub fn init(service: &str) -> Result<Guard, Error> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("K8SWORKER_LOG_FORMAT").is_ok_and(|v| v == "json");
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };

    let provider = if otlp_configured() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(Error::Exporter)?;
        let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(name)
            .build();
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build(),
        )
    } else {
        None
    };

    let otel = provider.as_ref().map(|provider| {
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("k8sworker"))
            .with_filter(filter())
    });

    tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .with(otel)
        .try_init()
        .map_err(Error::AlreadyInitialized)?;
    Ok(Guard { provider })
}
