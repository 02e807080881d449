//! OpenTelemetry for the inbox's trace ([`crate::trace`]): [`OtelPropagator`], for
//! applications whose spans reach OpenTelemetry through `tracing-opentelemetry` (0.34, on
//! `opentelemetry` 0.33).
//!
//! **Parent, not link.** Each attempt's span (`airmy_inbox_entry`) becomes a **child** of the
//! delivery's span (`airmy_delivery`), in the delivery's trace. OpenTelemetry's messaging
//! conventions allow both: a consumer span linked to the producer's (a trace of its own per
//! attempt, with a link back), or its child. In a trace UI (Jaeger, Tempo, Honeycomb):
//!
//! - **As a child** (this crate's choice), one trace holds the HTTP request, the accept, a gap
//!   for the wait in the inbox (seconds to hours), then each attempt one under the other with
//!   its `attempt` and `result`, and under each the handler's own spans (a transactional
//!   handler's `PgContext` statements, when the application instruments them). Searching by
//!   the event id or the request's trace id finds the whole story. The attempts inherit the
//!   delivery's sampling decision (a parent-based sampler keeps all or none). The cost: the
//!   trace's duration is the whole wait, and a tail-sampling collector that decides a trace
//!   seconds after its first span (the OpenTelemetry Collector's `decision_wait`) sees later
//!   attempts as a fragment arriving after its decision.
//! - **As a link**, each attempt would be a root of its own trace, short and complete, linked
//!   to the delivery; a UI shows the request's trace ending at the accept, and finding the
//!   attempts takes following a link (which not every UI shows), or a search by event id.
//!
//! A webhook delivery has exactly one consumer and is never handled in a batch with others
//! (the case the conventions give links for), and the question people ask in an incident is
//! "what became of this delivery": one trace answers it. An application that prefers links
//! implements [`Propagator`] itself (`tracing_opentelemetry::OpenTelemetrySpanExt::add_link`
//! with the extracted span context).
//!
//! # Example
//!
//! ```
//! use airmy_verify_inbox::{Inbox, MemoryBackend, MemoryOptions, otel::OtelPropagator};
//! use opentelemetry_sdk::propagation::TraceContextPropagator;
//!
//! let inbox = Inbox::new(MemoryBackend::new(MemoryOptions::default()))
//!     .propagate(OtelPropagator::new(TraceContextPropagator::new()));
//! # drop(inbox);
//! ```

use std::fmt;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::trace::{Propagator, TraceContext};

/// A [`Propagator`] through OpenTelemetry: the delivery span's OpenTelemetry context (given
/// it by the application's `tracing_opentelemetry` layer) written by a
/// [`TextMapPropagator`] of the application's choice (W3C trace context:
/// `opentelemetry_sdk::propagation::TraceContextPropagator`, which writes `traceparent` and
/// `tracestate`), and read back by it as the parent of each attempt's span. See the
/// [module docs](self) for why a parent.
///
/// A delivery span without an OpenTelemetry context (no such layer, or the span disabled)
/// gives an empty context: nothing is stored.
pub struct OtelPropagator {
    propagator: Box<dyn TextMapPropagator + Send + Sync>,
}

impl OtelPropagator {
    /// Writes and reads the stored context with `propagator`.
    #[must_use]
    pub fn new(propagator: impl TextMapPropagator + Send + Sync + 'static) -> Self {
        Self {
            propagator: Box::new(propagator),
        }
    }
}

impl fmt::Debug for OtelPropagator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelPropagator")
            .field("fields", &self.propagator.fields().collect::<Vec<_>>())
            .finish()
    }
}

impl Propagator for OtelPropagator {
    fn inject(&self, span: &tracing::Span) -> TraceContext {
        let mut stored = Carrier(TraceContext::new());
        let context = span.context();
        if context.span().span_context().is_valid() {
            self.propagator.inject_context(&context, &mut stored);
        }
        stored.0
    }

    fn attach(&self, span: &tracing::Span, stored: &TraceContext) {
        let parent = self.propagator.extract(&Carrier(stored.clone()));
        if parent.span().span_context().is_valid() {
            // A disabled span (no subscriber at INFO) or no OpenTelemetry layer: nothing to
            // attach to, and nothing to say.
            let _ = span.set_parent(parent);
        }
    }
}

/// A [`TraceContext`] as OpenTelemetry's carrier.
struct Carrier(TraceContext);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value);
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().collect()
    }
}
