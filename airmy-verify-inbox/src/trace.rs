//! One trace from delivery to effect: the delivery's trace context, stored with its entry at
//! the accept and continued by each attempt's span.
//!
//! An entry may wait seconds or hours between the request that delivered it and the attempts
//! that handle it, in another process. With a [`Propagator`] set
//! ([`Inbox::propagate`](crate::Inbox::propagate)), [`Inbox::accept`](crate::Inbox::accept)
//! asks it for the context of the current span (the adapters' delivery span,
//! [`airmy_verify::observe::delivery_span`]) as a small map of strings, a [`TraceContext`]
//! (with OpenTelemetry's W3C propagator: `traceparent` and, if any, `tracestate`), and every
//! backend keeps it with the entry (SQLite and PostgreSQL a column, Redis a field of the
//! entry's hash, memory beside the entry); [`Leased::trace`](crate::Leased::trace) gives it
//! back to the worker, whose attempt span ([`airmy_verify::observe::inbox_entry_span`]) the
//! propagator makes continue it. With no propagator (the default) nothing is stored and spans
//! are as before.
//!
//! The crate's feature `otel` brings [`OtelPropagator`](crate::otel::OtelPropagator), for
//! applications that export spans through `tracing-opentelemetry`; without it, the crate
//! depends on no OpenTelemetry crate, and any other tracing system can implement
//! [`Propagator`].
//!
//! **What is stored** is what the propagator writes: for W3C trace context, the trace id, the
//! parent span id and the sampling flag (`traceparent`), and the vendors' `tracestate`. No
//! secret, no body. It is bounded: at most [`MAX_FIELDS`] fields of at most [`MAX_LEN`] bytes
//! in all; a larger context is not stored (a debug event says so), and the entry is stored
//! without one.
//!
//! # Example
//!
//! ```
//! use airmy_verify_inbox::trace::TraceContext;
//!
//! let mut context = TraceContext::new();
//! context.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! let stored = context.encode().expect("small enough");
//! assert_eq!(TraceContext::decode(&stored), context);
//! assert_eq!(TraceContext::decode("not json"), TraceContext::new());
//! ```

use std::fmt;

/// The most fields a [`TraceContext`] keeps.
pub const MAX_FIELDS: usize = 8;

/// The most bytes a [`TraceContext`]'s keys and values hold in all (W3C's `traceparent` is 55,
/// a `tracestate` at most 512).
pub const MAX_LEN: usize = 2048;

/// A delivery's trace context as stored with its entry: a few (key, value) strings, such as
/// W3C's `traceparent` and `tracestate`. See the [module docs](self).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    fields: Vec<(String, String)>,
}

impl TraceContext {
    /// An empty context (what an entry holds when no propagator is set).
    #[must_use]
    pub const fn new() -> Self {
        Self { fields: Vec::new() }
    }

    /// Sets `key` to `value` (replacing an earlier value of `key`).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(field) => field.1 = value,
            None => self.fields.push((key, value)),
        }
    }

    /// The value of `key`, if set.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The keys set, in the order they were first set.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| k.as_str())
    }

    /// Whether no field is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The form a backend stores: a JSON object of strings; `None` when empty, or larger than
    /// [`MAX_FIELDS`] fields or [`MAX_LEN`] bytes (then nothing is stored).
    #[must_use]
    pub fn encode(&self) -> Option<String> {
        let len: usize = self.fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        if self.fields.is_empty() || self.fields.len() > MAX_FIELDS || len > MAX_LEN {
            if !self.fields.is_empty() {
                tracing::debug!(
                    target: "airmy_verify",
                    fields = self.fields.len(),
                    bytes = len,
                    "the delivery's trace context is too large to store; the entry is stored without it"
                );
            }
            return None;
        }
        let map: serde_json::Map<String, serde_json::Value> = self
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        Some(serde_json::Value::Object(map).to_string())
    }

    /// A stored context read back ([`encode`](Self::encode)'s form); empty for anything else
    /// (a row written before this version has none).
    #[must_use]
    pub fn decode(stored: &str) -> Self {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str(stored) else {
            return Self::new();
        };
        let mut context = Self::new();
        for (k, v) in map {
            if let serde_json::Value::String(v) = v {
                context.insert(k, v);
            }
        }
        context
    }

    /// [`decode`](Self::decode) of what a backend read, `None` (no context) included.
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "memory")),
        allow(dead_code)
    )]
    pub(crate) fn decode_stored(stored: Option<&str>) -> Self {
        stored.map(Self::decode).unwrap_or_default()
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.fields.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

/// Carries a trace across the inbox: [`inject`](Self::inject) at the accept,
/// [`attach`](Self::attach) at each attempt. Set on an inbox with
/// [`Inbox::propagate`](crate::Inbox::propagate) (its workers get it), or on a worker of
/// `PgBackend::worker` with [`Worker::propagate`](crate::Worker::propagate). With the feature
/// `otel`, [`OtelPropagator`](crate::otel::OtelPropagator) is one.
pub trait Propagator: Send + Sync + 'static {
    /// The context of `span` (the delivery's span, current while the accept runs) to store
    /// with the entry; empty to store none.
    fn inject(&self, span: &tracing::Span) -> TraceContext;

    /// Makes `span`, an attempt's [`inbox_entry_span`](airmy_verify::observe::inbox_entry_span)
    /// not yet entered, continue `stored` (as its parent, or through a link). Called only for
    /// an entry stored with a context.
    fn attach(&self, span: &tracing::Span, stored: &TraceContext);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_is_stored_and_read_back_with_its_fields() {
        let mut context = TraceContext::new();
        context.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        context.insert("tracestate", "congo=t61rcWkgMzE");
        context.insert("tracestate", "rojo=00f067aa0ba902b7");
        let stored = context.encode().expect("stored");
        let back = TraceContext::decode(&stored);
        assert_eq!(back, context);
        assert_eq!(back.get("tracestate"), Some("rojo=00f067aa0ba902b7"));
        assert_eq!(
            back.keys().collect::<Vec<_>>(),
            ["traceparent", "tracestate"]
        );
    }

    #[test]
    fn nothing_is_stored_for_an_empty_or_an_oversized_context() {
        assert_eq!(TraceContext::new().encode(), None);
        let mut big = TraceContext::new();
        big.insert("tracestate", "x".repeat(MAX_LEN));
        assert_eq!(big.encode(), None);
        let mut many = TraceContext::new();
        for i in 0..=MAX_FIELDS {
            many.insert(format!("k{i}"), "v");
        }
        assert_eq!(many.encode(), None);
    }

    #[test]
    fn what_is_not_a_stored_context_reads_as_none() {
        for stored in ["", "[]", "\"traceparent\"", "{\"a\":1}", "{"] {
            assert!(TraceContext::decode(stored).is_empty(), "{stored:?}");
        }
        assert!(TraceContext::decode_stored(None).is_empty());
    }
}
