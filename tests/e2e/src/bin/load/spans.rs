//! Every closed span of the system under test, with its wall-clock
//! interval and the installation it worked for: the load driver's profile
//! and the source of the per-deploy phases.
//!
//! The planner's `execute`, the executor's `observe`, `apply`, `step` and
//! `health` spans carry an `installation` field (or inherit it from their
//! parent span); Kubernetes API calls (`kube`) are labelled by their
//! `otel.name` (`verb resource`), every other span by its name.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// One closed span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// The span's name, or `kube <verb> <resource>` for an API call.
    pub label: Arc<str>,
    /// The installation it worked for, if any.
    pub installation: Option<Arc<str>>,
    /// When it was created.
    pub opened: SystemTime,
    /// When it closed.
    pub closed: SystemTime,
}

/// The spans closed so far; clones share them.
#[derive(Debug, Clone, Default)]
pub struct SpanLog {
    records: Arc<Mutex<Vec<SpanRecord>>>,
}

impl SpanLog {
    /// Takes every record so far, leaving the log empty.
    pub fn take(&self) -> Vec<SpanRecord> {
        std::mem::take(&mut *self.records.lock().expect("span log lock"))
    }
}

/// Kept in a span's extensions until it closes.
struct Open {
    label: Arc<str>,
    installation: Option<Arc<str>>,
    opened: SystemTime,
}

#[derive(Default)]
struct Fields {
    installation: Option<String>,
    otel_name: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "installation" if !value.is_empty() => self.installation = Some(value),
            "otel.name" => self.otel_name = Some(value),
            _ => {}
        }
    }
}

impl<S> Layer<S> for SpanLog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let installation = fields.installation.map(Arc::from).or_else(|| {
            span.parent()
                .and_then(|parent| parent.extensions().get::<Open>()?.installation.clone())
        });
        let label: Arc<str> = match fields.otel_name {
            Some(name) if span.name() == "kube" => format!("kube {name}").into(),
            _ => span.name().into(),
        };
        span.extensions_mut().insert(Open {
            label,
            installation,
            opened: SystemTime::now(),
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let extensions = span.extensions();
        let Some(open) = extensions.get::<Open>() else {
            return;
        };
        let record = SpanRecord {
            label: open.label.clone(),
            installation: open.installation.clone(),
            opened: open.opened,
            closed: SystemTime::now(),
        };
        self.records.lock().expect("span log lock").push(record);
    }
}
