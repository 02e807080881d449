//! [`SpanCapture`]: a `tracing` subscriber layer that keeps every span (name, parent, fields)
//! and every event's enclosing span, so tests can assert the tree a request produced.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// One span as captured: its name, its parent's index in [`SpanCapture::spans`], and its
/// fields as text (values recorded later included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedSpan {
    /// The span's name.
    pub name: String,
    /// The parent span's index, if any.
    pub parent: Option<usize>,
    /// Field name to value, as `Debug`/`Display` text.
    pub fields: BTreeMap<String, String>,
}

/// One event as captured: its message and the index of the span it happened in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedEvent {
    /// The event's `message` field.
    pub message: String,
    /// The enclosing span's index, if any.
    pub span: Option<usize>,
    /// Every field, as text.
    pub fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Captured {
    spans: Vec<CapturedSpan>,
    events: Vec<CapturedEvent>,
}

/// A layer that records spans and events; clone it to read what it captured.
#[derive(Clone, Default)]
pub struct SpanCapture {
    captured: Arc<Mutex<Captured>>,
}

impl fmt::Debug for SpanCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanCapture").finish_non_exhaustive()
    }
}

/// The capture's index of a span, kept in the span's extensions.
struct Index(usize);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl SpanCapture {
    /// A capture with nothing in it yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A capture installed as this thread's default subscriber until the guard drops (use a
    /// current-thread runtime, so spawned tasks run on this thread too).
    #[must_use]
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        use tracing_subscriber::layer::SubscriberExt;
        let capture = Self::new();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        (capture, tracing::subscriber::set_default(subscriber))
    }

    /// Every span so far, in creation order.
    #[must_use]
    pub fn spans(&self) -> Vec<CapturedSpan> {
        self.lock().spans.clone()
    }

    /// Every event so far, in order.
    #[must_use]
    pub fn events(&self) -> Vec<CapturedEvent> {
        self.lock().events.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.captured.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S> Layer<S> for SpanCapture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span
            .parent()
            .and_then(|parent| parent.extensions().get::<Index>().map(|i| i.0));
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut captured = self.lock();
        captured.spans.push(CapturedSpan {
            name: attrs.metadata().name().to_owned(),
            parent,
            fields,
        });
        let index = captured.spans.len() - 1;
        drop(captured);
        span.extensions_mut().insert(Index(index));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(index) = span.extensions().get::<Index>().map(|i| i.0) else {
            return;
        };
        let mut captured = self.lock();
        values.record(&mut Fields(&mut captured.spans[index].fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let span = ctx
            .event_span(event)
            .and_then(|span| span.extensions().get::<Index>().map(|i| i.0));
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let message = fields.get("message").cloned().unwrap_or_default();
        self.lock().events.push(CapturedEvent {
            message,
            span,
            fields,
        });
    }
}

/// The value of `name` in `span`'s fields, or `""`.
#[must_use]
pub fn field<'a>(span: &'a CapturedSpan, name: &str) -> &'a str {
    span.fields.get(name).map_or("", String::as_str)
}

/// The `event_id`, `outcome` and `status` of the one `airmy_delivery` span captured.
///
/// # Panics
///
/// When there is not exactly one.
#[must_use]
pub fn one_delivery(capture: &SpanCapture) -> (String, String, String) {
    let spans = capture.spans();
    let deliveries: Vec<&CapturedSpan> = spans
        .iter()
        .filter(|s| s.name == "airmy_delivery")
        .collect();
    assert_eq!(deliveries.len(), 1, "{spans:?}");
    let field = |name| field(deliveries[0], name).to_owned();
    (field("event_id"), field("outcome"), field("status"))
}

/// What the adapters' span tests check after sending one delivery (`event_id`, `event_type`,
/// `body_len` bytes) to a guarded handler that logs `handler ran`, then the same delivery again,
/// then one with a forged signature: three root `airmy_delivery` spans with the fields of an
/// accepted, a duplicate and a rejected delivery; the handler's line in the first (its detached
/// task included), the rejection's in the third; none of `never` (secret, signatures, body)
/// anywhere.
///
/// # Panics
///
/// When any of that does not hold.
pub fn assert_accepted_duplicate_forged(
    capture: &SpanCapture,
    (event_id, event_type, body_len): (&str, &str, usize),
    never: &[&str],
) {
    let spans = capture.spans();
    let deliveries: Vec<(usize, &CapturedSpan)> = spans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.name == "airmy_delivery")
        .collect();
    assert_eq!(deliveries.len(), 3, "{spans:#?}");
    for (_, span) in &deliveries {
        assert_eq!(span.parent, None, "a delivery span is a root: {span:?}");
    }
    let (first, accepted) = deliveries[0];
    assert_eq!(field(accepted, "event_id"), event_id);
    assert_eq!(field(accepted, "event_type"), event_type);
    assert_eq!(field(accepted, "outcome"), "accepted");
    assert_eq!(field(accepted, "status"), "200");
    assert_eq!(field(accepted, "body_bytes"), body_len.to_string());
    let duplicate = deliveries[1].1;
    assert_eq!(field(duplicate, "event_id"), event_id);
    assert_eq!(field(duplicate, "outcome"), "duplicate");
    assert_eq!(field(duplicate, "status"), "200");
    let (third, rejected) = deliveries[2];
    assert_eq!(field(rejected, "outcome"), "rejected");
    assert_eq!(field(rejected, "status"), "401");
    assert_eq!(field(rejected, "code"), "invalid_signature");
    assert_eq!(
        field(rejected, "event_id"),
        "",
        "not verified: no id recorded"
    );

    let events = capture.events();
    let in_span = |message: &str| -> Vec<Option<usize>> {
        events
            .iter()
            .filter(|e| e.message == message)
            .map(|e| e.span)
            .collect()
    };
    assert_eq!(in_span("handler ran"), [Some(first)], "{events:#?}");
    assert_eq!(
        in_span("AIRMY webhook delivery rejected"),
        [Some(third)],
        "{events:#?}"
    );
    let shown = format!("{spans:?} {events:?}");
    for secret in never {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}
