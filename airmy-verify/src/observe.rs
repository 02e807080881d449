//! What a receiver is doing: one `tracing` span per delivery, and metrics (feature `metrics`),
//! named once here for every adapter.
//!
//! # Spans
//!
//! The axum layer and the actix middleware open a [`delivery_span`] per request and enter it
//! around verification, the idempotency guard or the inbox, and the handler (a guarded
//! handler's detached task and the inbox's store run inside it), so a `fmt` or OpenTelemetry
//! subscriber shows one tree per delivery. An inbox worker's attempt at an entry gets its own
//! [`inbox_entry_span`]. Spans never hold the secret, the signature or the body.
//!
//! | span (target `airmy_verify`, level INFO) | field | value |
//! |---|---|---|
//! | `airmy_delivery` | `event_id` | the verified event id (once verified) |
//! | | `event_type` | the verified event type, as sent (once verified) |
//! | | `body_bytes` | the body's size in bytes, as received (once read) |
//! | | `outcome` | `accepted`, `duplicate`, `in_flight` or `rejected` ([`Outcome`]) |
//! | | `status` | the HTTP status answered |
//! | | `code` | for `rejected`: the error code of the body, such as `invalid_signature`, or `store_unavailable` |
//! | `airmy_inbox_entry` | `event_id`, `event_type` | the stored delivery's |
//! | | `attempt` | 1 for the first attempt, counting every attempt |
//! | | `result` | `success`, `retry` or `dead` |
//!
//! With no subscriber, a span is [`tracing::Span::none`]: creating, entering and recording it
//! costs a few branches (measured in `BENCHMARKS.md`).
//!
//! # Metrics
//!
//! With the `metrics` feature, the suite records through the [`metrics`](https://docs.rs/metrics)
//! facade; the application installs the exporter (the example receivers use
//! `metrics-exporter-prometheus`). Without an installed recorder the calls do nothing. Label
//! values are bounded: an event type outside the eight documented ones is `unknown`
//! ([`event_type_label`]).
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `airmy_webhook_deliveries_total` | counter | `outcome`, `code`, `event_type` | deliveries answered by the axum layer or the actix middleware; `code` is the error code for `rejected` (`store_unavailable` when the idempotency store or the inbox answered 503) and `none` otherwise; `event_type` is `none` when refused by the verifier |
//! | `airmy_webhook_verification_seconds` | histogram | | time to check a complete body: HMAC, JSON envelope, freshness |
//! | `airmy_webhook_body_bytes` | histogram | | size of each complete body checked |
//! | `airmy_webhook_delivery_lag_seconds` | histogram | | receive time − signed `created_at`, for verified deliveries (negative when the sender's clock is ahead) |
//! | `airmy_webhook_idempotency_claims_total` | counter | `result`: `claimed`, `duplicate`, `in_flight`, `store_error` | the idempotency guard's decisions |
//! | `airmy_webhook_idempotency_store_errors_total` | counter | `operation`: `claim`, `extend`, `finish` | idempotency store calls that failed |
//! | `airmy_webhook_inbox_accepts_total` | counter | `result`: `stored`, `duplicate`, `error` | deliveries offered to the inbox (crate `airmy-verify-inbox`) |
//! | `airmy_webhook_inbox_pending` | gauge | | inbox entries due now, waiting for a worker |
//! | `airmy_webhook_inbox_scheduled` | gauge | | inbox entries waiting for a later retry |
//! | `airmy_webhook_inbox_processing` | gauge | | inbox entries leased to a worker |
//! | `airmy_webhook_inbox_dead` | gauge | | dead letters |
//! | `airmy_webhook_inbox_oldest_pending_age_seconds` | gauge | | how long the oldest due entry has waited (0 when none) |
//! | `airmy_webhook_handler_attempts_total` | counter | `event_type`, `result`: `success`, `retry`, `dead` | inbox handler attempts |
//!
//! The inbox gauges are refreshed once a second by a running `Worker`.
//!
//! # Example
//!
//! ```
//! use airmy_verify::observe::{self, Outcome};
//!
//! // What the adapters do, per request:
//! let span = observe::delivery_span();
//! let _entered = span.enter();
//! observe::record_answered(&span, Some(&Outcome::Duplicate), 200, "run.completed");
//! assert_eq!(observe::event_type_label("billing.paid"), "unknown");
//! ```

use tracing::Span;
use tracing::field::Empty;

use crate::error::Error;
use crate::verifier::Verified;

/// The name of the span of one delivery.
pub const DELIVERY_SPAN: &str = "airmy_delivery";

/// The name of the span of one inbox worker attempt.
pub const INBOX_ENTRY_SPAN: &str = "airmy_inbox_entry";

/// The counter of answered deliveries.
pub const DELIVERIES_TOTAL: &str = "airmy_webhook_deliveries_total";
/// The histogram of verification times, in seconds.
pub const VERIFICATION_SECONDS: &str = "airmy_webhook_verification_seconds";
/// The histogram of body sizes, in bytes.
pub const BODY_BYTES: &str = "airmy_webhook_body_bytes";
/// The histogram of delivery lags (receive time − `created_at`), in seconds.
pub const DELIVERY_LAG_SECONDS: &str = "airmy_webhook_delivery_lag_seconds";
/// The counter of idempotency decisions.
pub const IDEMPOTENCY_CLAIMS_TOTAL: &str = "airmy_webhook_idempotency_claims_total";
/// The counter of failed idempotency store calls.
pub const IDEMPOTENCY_STORE_ERRORS_TOTAL: &str = "airmy_webhook_idempotency_store_errors_total";
/// The counter of deliveries offered to the inbox.
pub const INBOX_ACCEPTS_TOTAL: &str = "airmy_webhook_inbox_accepts_total";
/// The gauge of inbox entries due now.
pub const INBOX_PENDING: &str = "airmy_webhook_inbox_pending";
/// The gauge of inbox entries waiting for a later retry.
pub const INBOX_SCHEDULED: &str = "airmy_webhook_inbox_scheduled";
/// The gauge of inbox entries leased to a worker.
pub const INBOX_PROCESSING: &str = "airmy_webhook_inbox_processing";
/// The gauge of dead letters.
pub const INBOX_DEAD: &str = "airmy_webhook_inbox_dead";
/// The gauge of the oldest due entry's wait, in seconds.
pub const INBOX_OLDEST_PENDING_AGE_SECONDS: &str = "airmy_webhook_inbox_oldest_pending_age_seconds";
/// The counter of inbox handler attempts.
pub const HANDLER_ATTEMPTS_TOTAL: &str = "airmy_webhook_handler_attempts_total";

/// How a delivery was answered: the `outcome` of its span and of
/// `airmy_webhook_deliveries_total`.
///
/// The layers that answer without the handler (the idempotency guard, the inbox) put theirs in
/// the response's extensions; the verifying layer reads it there, and a response without one
/// is [`Outcome::Accepted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Verified and handed to the handler (or stored by the inbox), whatever it answered.
    Accepted,
    /// Verified, and already processed (or already in the inbox): answered without the handler.
    Duplicate,
    /// Verified, and another delivery of the same id is being handled: answered 409.
    InFlight,
    /// Refused: by the verifier, or because the idempotency store or the inbox was unavailable.
    Rejected,
}

impl Outcome {
    /// The label value: `accepted`, `duplicate`, `in_flight` or `rejected`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::InFlight => "in_flight",
            Self::Rejected => "rejected",
        }
    }
}

/// An event type as a metric label: one of the eight documented types, or `unknown`, so a
/// sender cannot grow the number of series.
#[must_use]
pub fn event_type_label(event_type: &str) -> &'static str {
    crate::event::EVENT_TYPES
        .iter()
        .find(|known| **known == event_type)
        .copied()
        .unwrap_or("unknown")
}

/// Opens the span of one delivery (see the [module docs](self)); its fields are recorded as
/// they become known.
#[must_use]
pub fn delivery_span() -> Span {
    tracing::info_span!(
        target: "airmy_verify",
        "airmy_delivery",
        event_id = Empty,
        event_type = Empty,
        body_bytes = Empty,
        outcome = Empty,
        status = Empty,
        code = Empty,
    )
}

/// Opens the span of one inbox worker attempt (see the [module docs](self)).
#[must_use]
pub fn inbox_entry_span(event_id: &str, event_type: &str, attempt: u32) -> Span {
    tracing::info_span!(
        target: "airmy_verify",
        "airmy_inbox_entry",
        event_id,
        event_type,
        attempt,
        result = Empty,
    )
}

/// Records a complete body's size on a delivery span.
pub fn record_body(span: &Span, len: usize) {
    if !span.is_disabled() {
        span.record("body_bytes", len);
    }
}

/// Records a verified delivery's id and type on its span.
pub fn record_verified(span: &Span, verified: &Verified) {
    if !span.is_disabled() {
        span.record("event_id", verified.id());
        span.record("event_type", verified.event_type());
    }
}

/// Records a refused delivery: outcome `rejected`, its status and code, on the span and in
/// `airmy_webhook_deliveries_total`.
pub fn record_rejected(span: &Span, error: &Error) {
    let code = error.code();
    if !span.is_disabled() {
        span.record("outcome", Outcome::Rejected.as_str());
        span.record("status", error.status());
        span.record("code", code);
    }
    #[cfg(feature = "metrics")]
    count_delivery(Outcome::Rejected, code, "none");
}

/// Records how a verified delivery was answered: the outcome and status on the span, and
/// `airmy_webhook_deliveries_total` with the event type (as sent; bounded here). `outcome` is
/// the one the response carries in its extensions, if any: none means
/// [`Outcome::Accepted`].
pub fn record_answered(span: &Span, outcome: Option<&Outcome>, status: u16, event_type: &str) {
    let outcome = outcome.copied().unwrap_or(Outcome::Accepted);
    if !span.is_disabled() {
        span.record("outcome", outcome.as_str());
        span.record("status", status);
    }
    // Answered without the handler and refused: the idempotency store or the inbox was
    // unavailable (503).
    let code = if outcome == Outcome::Rejected {
        "store_unavailable"
    } else {
        "none"
    };
    if outcome == Outcome::Rejected && !span.is_disabled() {
        span.record("code", code);
    }
    #[cfg(feature = "metrics")]
    count_delivery(outcome, code, event_type_label(event_type));
    #[cfg(not(feature = "metrics"))]
    let _ = event_type;
}

#[cfg(feature = "metrics")]
fn count_delivery(outcome: Outcome, code: &'static str, event_type: &'static str) {
    metrics::counter!(
        DELIVERIES_TOTAL,
        "outcome" => outcome.as_str(),
        "code" => code,
        "event_type" => event_type,
    )
    .increment(1);
}

/// The recording calls of the core and the inbox: nothing without the `metrics` feature.
#[doc(hidden)]
pub mod record {
    #[cfg(feature = "metrics")]
    use super::*;

    /// One complete body checked: its size and how long the check took.
    #[cfg(feature = "metrics")]
    pub fn verification(len: usize, seconds: f64) {
        metrics::histogram!(BODY_BYTES).record(len as f64);
        metrics::histogram!(VERIFICATION_SECONDS).record(seconds);
    }

    /// A verified delivery's lag behind its `created_at`.
    #[cfg(feature = "metrics")]
    pub fn lag(seconds: f64) {
        metrics::histogram!(DELIVERY_LAG_SECONDS).record(seconds);
    }

    /// An idempotency decision (`claimed`, `duplicate`, `in_flight`, `store_error`).
    pub fn claim(_result: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::counter!(IDEMPOTENCY_CLAIMS_TOTAL, "result" => _result).increment(1);
    }

    /// A failed idempotency store call (`claim`, `extend`, `finish`).
    pub fn store_error(_operation: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::counter!(IDEMPOTENCY_STORE_ERRORS_TOTAL, "operation" => _operation).increment(1);
    }

    /// A delivery offered to the inbox (`stored`, `duplicate`, `error`).
    pub fn inbox_accept(_result: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::counter!(INBOX_ACCEPTS_TOTAL, "result" => _result).increment(1);
    }

    /// The inbox's counts: pending, scheduled, processing, dead, oldest pending age.
    pub fn inbox_gauges(
        _pending: u64,
        _scheduled: u64,
        _processing: u64,
        _dead: u64,
        _oldest_pending_secs: u64,
    ) {
        #[cfg(feature = "metrics")]
        {
            metrics::gauge!(INBOX_PENDING).set(_pending as f64);
            metrics::gauge!(INBOX_SCHEDULED).set(_scheduled as f64);
            metrics::gauge!(INBOX_PROCESSING).set(_processing as f64);
            metrics::gauge!(INBOX_DEAD).set(_dead as f64);
            metrics::gauge!(INBOX_OLDEST_PENDING_AGE_SECONDS).set(_oldest_pending_secs as f64);
        }
    }

    /// An inbox handler attempt's result (`success`, `retry`, `dead`).
    pub fn handler_attempt(_event_type: &str, _result: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::counter!(
            HANDLER_ATTEMPTS_TOTAL,
            "event_type" => event_type_label(_event_type),
            "result" => _result,
        )
        .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_outside_the_documented_eight_are_unknown() {
        for known in [
            "run.completed",
            "run.failed",
            "deployment.created",
            "deployment.rollback",
            "alert.triggered",
            "agent.updated",
            "pipeline.completed",
            "test",
        ] {
            assert_eq!(event_type_label(known), known);
        }
        for other in ["", "billing.paid", "RUN.COMPLETED", "run.completed "] {
            assert_eq!(event_type_label(other), "unknown", "{other:?}");
        }
    }

    #[test]
    fn outcomes_have_their_documented_labels() {
        let labels: Vec<_> = [
            Outcome::Accepted,
            Outcome::Duplicate,
            Outcome::InFlight,
            Outcome::Rejected,
        ]
        .map(Outcome::as_str)
        .into();
        assert_eq!(labels, ["accepted", "duplicate", "in_flight", "rejected"]);
    }
}
