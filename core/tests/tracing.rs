//! The checked layer's spans: one per operation, with the backend, operation, name, outcome,
//! `replayed`, error kind and duration; and errors that name their operation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use stowage_core::{
    BudgetBackend, BudgetPolicy, DimensionLimit, ErrorKind, MemoryBackend, PersistenceBackend,
    UsageReport,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Every closed `stowage` span's fields, in closing order.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields(BTreeMap::new());
        attrs.record(&mut fields);
        ctx.span(id).unwrap().extensions_mut().insert(fields);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut extensions = span.extensions_mut();
        values.record(extensions.get_mut::<Fields>().unwrap());
    }
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        if span.name() == "stowage" {
            let fields = span.extensions_mut().remove::<Fields>().unwrap();
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

fn field<'a>(span: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    span.get(name).map(String::as_str).unwrap_or("<absent>")
}

/// One test, in order, not two in parallel: tracing caches each callsite's interest for the whole
/// process, so a test calling the backend without a subscriber on another thread could cache
/// "never" while this one installs its scoped subscriber, and no span would be recorded (seen once,
/// in a clean-clone CI run).
#[tokio::test]
async fn every_operation_is_one_span_with_its_outcome() {
    // Without a subscriber, errors still name their operation.
    let error = MemoryBackend::new().usage("").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert_eq!(error.operation(), Some("usage"));

    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let model = MemoryBackend::new();
    model
        .set_policy(
            "team",
            &BudgetPolicy::new().limit("t", DimensionLimit::soft(5)),
        )
        .await
        .unwrap();
    let report = UsageReport::new().add("t", 9).dedup_key("k");
    model.report_usage("team", &report).await.unwrap();
    model.report_usage("team", &report).await.unwrap();
    let invalid = model.store("", &serde_json::json!(1), 1).await.unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::InvalidInput);
    assert_eq!(invalid.operation(), Some("store"));

    let spans = spans.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 4, "{spans:?}");
    for span in &spans {
        assert_eq!(field(span, "backend"), "memory");
        assert!(field(span, "elapsed_us").parse::<u64>().is_ok(), "{span:?}");
    }
    assert_eq!(field(&spans[0], "op"), "set_policy");
    assert_eq!(field(&spans[0], "name"), "team");
    assert_eq!(field(&spans[0], "outcome"), "ok");
    assert_eq!(field(&spans[1], "op"), "report_usage");
    assert_eq!(field(&spans[1], "outcome"), "soft_breach");
    assert_eq!(field(&spans[1], "replayed"), "false");
    assert_eq!(field(&spans[2], "outcome"), "soft_breach");
    assert_eq!(field(&spans[2], "replayed"), "true");
    assert_eq!(field(&spans[3], "op"), "store");
    assert_eq!(field(&spans[3], "outcome"), "error");
    assert_eq!(field(&spans[3], "error_kind"), "InvalidInput");
}
