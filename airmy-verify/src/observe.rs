//! What a receiver is doing: one `tracing` span per delivery, and metrics (feature `metrics`),
//! named once here for every adapter.
//!
//! # Spans
//!
//! The axum layer and the actix middleware open a [`delivery_span`] per request and enter it
//! around verification, the idempotency guard or the inbox, and the handler (a guarded
//! handler's detached task and the inbox's store run inside it), so a `fmt` or OpenTelemetry
//! subscriber shows one tree per delivery. An inbox worker's attempt at an entry gets its own
//! [`inbox_entry_span`]. Spans never hold the secret, the signature or the body. (The actix
//! extractors used without the middleware verify without a delivery span or counter: use the
//! middleware for those.)
//!
//! | span (target `airmy_verify`, level INFO) | field | value |
//! |---|---|---|
//! | `airmy_delivery` | `event_id` | the verified event id (once verified) |
//! | | `event_type` | the verified event type, as sent (once verified) |
//! | | `body_bytes` | the body's size in bytes, as received (once read) |
//! | | `outcome` | `accepted`, `duplicate`, `in_flight` or `rejected` ([`Outcome`]) |
//! | | `status` | the HTTP status answered; [`STATUS_DROPPED`] (499) when the request was dropped before its answer, [`STATUS_FAILED`] (500) when the inner service failed or panicked |
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
//! | `airmy_webhook_delivery_lag_seconds` | histogram | | receive time − signed `created_at`, for every delivery whose signature matched, stale ones included (negative when the sender's clock is ahead) |
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
#[inline]
pub fn delivery_span() -> Span {
    // No `tracing` subscriber listens at INFO: no span at all (not even the `log` records that
    // tracing's `log` feature would make of it), so a request pays a branch.
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return Span::none();
    }
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
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return Span::none();
    }
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
#[inline]
pub fn record_body(span: &Span, len: usize) {
    if !span.is_disabled() {
        span.record("body_bytes", len);
    }
}

/// Records a verified delivery's id and type on its span; gives its event type as a metric
/// label ([`event_type_label`]), for [`record_answered`].
#[inline]
pub fn record_verified(span: &Span, verified: &Verified) -> &'static str {
    if !span.is_disabled() {
        span.record("event_id", verified.id());
        span.record("event_type", verified.event_type());
    }
    // A documented type is kept as its `&'static str` when parsed: no comparison needed.
    verified.known_type().unwrap_or("unknown")
}

/// Records a refused delivery: outcome `rejected`, its status and code, on the span and in
/// `airmy_webhook_deliveries_total`.
#[inline]
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
/// `airmy_webhook_deliveries_total` with the event type label [`record_verified`] gave (any
/// other string counts as `unknown`). `outcome` is the one the response carries in its
/// extensions, if any: none means [`Outcome::Accepted`].
#[inline]
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
    count_delivery(outcome, code, event_type);
    #[cfg(not(feature = "metrics"))]
    let _ = event_type;
}

/// The span status of a verified delivery whose request was dropped before it was answered:
/// its client left, or a layer outside the verifying one (a timeout) answered instead (nginx's
/// 499; nothing is sent).
pub const STATUS_DROPPED: u16 = 499;

/// The span status of a verified delivery whose inner service failed (returned an error, or
/// its handler panicked) instead of answering: 500, whatever an outer `HandleErrorLayer` or
/// `CatchPanicLayer` makes of it.
pub const STATUS_FAILED: u16 = 500;

/// Records a delivery whose request was dropped before the layer or middleware saw its answer,
/// so that every delivery is counted once however it ends. `verified_type` is the label
/// [`record_verified`] gave, if the delivery got that far: then it counts as `accepted` (the
/// handler had it) with status [`STATUS_DROPPED`]; otherwise its body never arrived whole:
/// `rejected`, `body_unreadable`. Call it from the future's `Drop` while it has not answered
/// (and [`PanicWatch`] has not recorded a panic).
pub fn record_dropped(span: &Span, verified_type: Option<&str>) {
    let _entered = span.enter();
    match verified_type {
        Some(event_type) => record_answered(span, None, STATUS_DROPPED, event_type),
        None => record_rejected(span, &Error::BodyRead),
    }
}

/// Held by an adapter's future around each call and poll of the inner service: if it panics
/// (a handler's panic, which a `CatchPanicLayer` outside may turn into a 500), the delivery is
/// recorded as it unwinds, as `accepted` with status [`STATUS_FAILED`], and `recorded` is set
/// so that the future's later drop does not record it again as [`STATUS_DROPPED`].
#[derive(Debug)]
pub struct PanicWatch<'a> {
    span: &'a Span,
    event_type: &'a str,
    recorded: &'a mut bool,
}

impl<'a> PanicWatch<'a> {
    /// Watches one poll of the inner service for the delivery of `span`, whose metric label
    /// [`record_verified`] gave as `event_type`.
    #[inline]
    pub fn new(span: &'a Span, event_type: &'a str, recorded: &'a mut bool) -> Self {
        Self {
            span,
            event_type,
            recorded,
        }
    }
}

impl Drop for PanicWatch<'_> {
    #[inline]
    fn drop(&mut self) {
        if std::thread::panicking() && !*self.recorded {
            *self.recorded = true;
            record_answered(self.span, None, STATUS_FAILED, self.event_type);
        }
    }
}

/// The handles of the per-delivery metrics, registered once per recorder: counting a
/// delivery is then an atomic add and three histogram records, with no key built, hashed or
/// looked up. A handle is registered on first use (so only the series that happened appear),
/// and all are registered again when the recorder changes (found by its address: installing
/// the exporter after the first delivery is fine).
#[cfg(feature = "metrics")]
mod handles {
    use std::sync::{Arc, OnceLock};

    use arc_swap::ArcSwapOption;
    use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};

    use super::{
        BODY_BYTES, DELIVERIES_TOTAL, DELIVERY_LAG_SECONDS, Outcome, VERIFICATION_SECONDS,
    };
    use crate::event::EVENT_TYPES;

    /// The error codes a rejection can carry (`Error::code`, and the stores' 503).
    const CODES: [&str; 14] = [
        "missing_signature",
        "malformed_signature",
        "invalid_signature",
        "body_too_large",
        "body_unreadable",
        "body_timeout",
        "stale_event",
        "future_event",
        "invalid_json",
        "invalid_envelope",
        "unexpected_event_type",
        "verifier_not_configured",
        "store_unavailable",
        // A code missing above is still counted, under this one.
        "other",
    ];
    const OUTCOMES: [Outcome; 4] = [
        Outcome::Accepted,
        Outcome::Duplicate,
        Outcome::InFlight,
        Outcome::Rejected,
    ];
    /// The `code` values (`none` first) and the `event_type` values (`unknown`, `none` last).
    const CODE_VALUES: usize = CODES.len() + 1;
    const TYPE_VALUES: usize = EVENT_TYPES.len() + 2;

    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    /// Every `airmy_webhook_deliveries_total` key, built once.
    fn keys() -> &'static [Key] {
        static KEYS: OnceLock<Vec<Key>> = OnceLock::new();
        KEYS.get_or_init(|| {
            let mut keys = Vec::with_capacity(OUTCOMES.len() * CODE_VALUES * TYPE_VALUES);
            for outcome in OUTCOMES {
                for code in std::iter::once("none").chain(CODES) {
                    for event_type in EVENT_TYPES.iter().copied().chain(["unknown", "none"]) {
                        keys.push(Key::from_parts(
                            DELIVERIES_TOTAL,
                            vec![
                                Label::from_static_parts("outcome", outcome.as_str()),
                                Label::from_static_parts("code", code),
                                Label::from_static_parts("event_type", event_type),
                            ],
                        ));
                    }
                }
            }
            keys
        })
    }

    struct Handles {
        /// The address of the recorder these handles belong to.
        recorder: usize,
        deliveries: Box<[OnceLock<Counter>]>,
        body_bytes: OnceLock<Histogram>,
        verification_seconds: OnceLock<Histogram>,
        delivery_lag_seconds: OnceLock<Histogram>,
    }

    static HANDLES: ArcSwapOption<Handles> = ArcSwapOption::const_empty();

    fn address(recorder: &dyn Recorder) -> usize {
        std::ptr::from_ref(recorder).cast::<()>() as usize
    }

    /// Runs `f` with the handles of the current recorder (and the recorder, to register).
    fn with<T>(f: impl FnOnce(&Handles, &dyn Recorder) -> T) -> T {
        metrics::with_recorder(|recorder| {
            let current = address(recorder);
            let guard = HANDLES.load();
            if let Some(handles) = guard.as_deref()
                && handles.recorder == current
            {
                return f(handles, recorder);
            }
            let handles = Arc::new(Handles {
                recorder: current,
                deliveries: (0..keys().len()).map(|_| OnceLock::new()).collect(),
                body_bytes: OnceLock::new(),
                verification_seconds: OnceLock::new(),
                delivery_lag_seconds: OnceLock::new(),
            });
            HANDLES.store(Some(Arc::clone(&handles)));
            f(&handles, recorder)
        })
    }

    fn histogram<'a>(
        cell: &'a OnceLock<Histogram>,
        recorder: &dyn Recorder,
        name: &'static str,
    ) -> &'a Histogram {
        cell.get_or_init(|| recorder.register_histogram(&Key::from_static_name(name), &METADATA))
    }

    pub(super) fn delivery(outcome: Outcome, code: &str, event_type: &str) {
        let outcome = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        let code = match code {
            "none" => 0,
            code => {
                1 + CODES
                    .iter()
                    .position(|c| *c == code)
                    .unwrap_or(CODES.len() - 1)
            }
        };
        let event_type = match event_type {
            "none" => EVENT_TYPES.len() + 1,
            other => EVENT_TYPES
                .iter()
                .position(|t| *t == other)
                .unwrap_or(EVENT_TYPES.len()),
        };
        let index = (outcome * CODE_VALUES + code) * TYPE_VALUES + event_type;
        with(|handles, recorder| {
            handles.deliveries[index]
                .get_or_init(|| recorder.register_counter(&keys()[index], &METADATA))
                .increment(1);
        });
    }

    pub(super) fn verification(len: usize, seconds: f64) {
        with(|handles, recorder| {
            histogram(&handles.body_bytes, recorder, BODY_BYTES).record(len as f64);
            histogram(
                &handles.verification_seconds,
                recorder,
                VERIFICATION_SECONDS,
            )
            .record(seconds);
        });
    }

    pub(super) fn lag(seconds: f64) {
        with(|handles, recorder| {
            histogram(
                &handles.delivery_lag_seconds,
                recorder,
                DELIVERY_LAG_SECONDS,
            )
            .record(seconds);
        });
    }
}

#[cfg(feature = "metrics")]
fn count_delivery(outcome: Outcome, code: &'static str, event_type: &str) {
    handles::delivery(outcome, code, event_type);
}

/// The recording calls of the core and the inbox: nothing without the `metrics` feature.
#[doc(hidden)]
pub mod record {
    /// Describes every metric above to the installed recorder (Prometheus `# HELP` lines and
    /// units). Call it once, after installing a recorder.
    #[cfg(feature = "metrics")]
    pub fn describe() {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(
            DELIVERIES_TOTAL,
            "Deliveries answered by the verifying layer or middleware, by outcome, error code and event type"
        );
        describe_histogram!(
            VERIFICATION_SECONDS,
            Unit::Seconds,
            "Time to check a complete body: HMAC, envelope, freshness"
        );
        describe_histogram!(
            BODY_BYTES,
            Unit::Bytes,
            "Size of each complete body checked"
        );
        describe_histogram!(
            DELIVERY_LAG_SECONDS,
            Unit::Seconds,
            "Receive time minus the signed created_at of deliveries whose signature matched"
        );
        describe_counter!(IDEMPOTENCY_CLAIMS_TOTAL, "Idempotency guard decisions");
        describe_counter!(
            IDEMPOTENCY_STORE_ERRORS_TOTAL,
            "Failed idempotency store calls, by operation"
        );
        describe_counter!(
            INBOX_ACCEPTS_TOTAL,
            "Deliveries offered to the inbox, by result"
        );
        describe_gauge!(INBOX_PENDING, "Inbox entries due now");
        describe_gauge!(INBOX_SCHEDULED, "Inbox entries waiting for a later retry");
        describe_gauge!(INBOX_PROCESSING, "Inbox entries leased to a worker");
        describe_gauge!(INBOX_DEAD, "Inbox dead letters");
        describe_gauge!(
            INBOX_OLDEST_PENDING_AGE_SECONDS,
            Unit::Seconds,
            "How long the oldest due inbox entry has waited"
        );
        describe_counter!(
            HANDLER_ATTEMPTS_TOTAL,
            "Inbox handler attempts, by event type and result"
        );
    }

    #[cfg(feature = "metrics")]
    use super::*;

    /// One complete body checked: its size and how long the check took.
    #[cfg(feature = "metrics")]
    pub fn verification(len: usize, seconds: f64) {
        handles::verification(len, seconds);
    }

    /// A verified delivery's lag behind its `created_at`.
    #[cfg(feature = "metrics")]
    pub fn lag(seconds: f64) {
        handles::lag(seconds);
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

    /// A recorder that counts `airmy_webhook_deliveries_total` increments by label set.
    #[cfg(feature = "metrics")]
    #[derive(Default)]
    struct Counting {
        counts: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
    }

    #[cfg(feature = "metrics")]
    struct Count(
        std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
        String,
    );

    #[cfg(feature = "metrics")]
    impl metrics::CounterFn for Count {
        fn increment(&self, value: u64) {
            let mut counts = self.0.lock().expect("counts");
            *counts.entry(self.1.clone()).or_default() += value;
        }

        fn absolute(&self, value: u64) {
            self.0.lock().expect("counts").insert(self.1.clone(), value);
        }
    }

    #[cfg(feature = "metrics")]
    impl metrics::Recorder for Counting {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }

        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            metrics::Counter::from_arc(std::sync::Arc::new(Count(self.counts.clone(), name)))
        }

        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }

        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn deliveries_are_counted_by_label_set_and_again_under_a_new_recorder() {
        let span = Span::none();
        let (first, second) = (Counting::default(), Counting::default());
        metrics::with_local_recorder(&first, || {
            record_answered(&span, None, 200, "run.completed");
            record_answered(&span, None, 200, "run.completed");
            record_answered(&span, Some(&Outcome::Duplicate), 200, "billing.paid");
            record_rejected(&span, &Error::SignatureMismatch);
        });
        metrics::with_local_recorder(&second, || {
            record_answered(&span, Some(&Outcome::Rejected), 503, "test");
        });
        let counts = |r: &Counting| r.counts.lock().expect("counts").clone();
        let name = |outcome: &str, code: &str, event_type: &str| {
            format!(
                "airmy_webhook_deliveries_total{{outcome={outcome},code={code},event_type={event_type}}}"
            )
        };
        assert_eq!(
            counts(&first),
            [
                (name("accepted", "none", "run.completed"), 2),
                (name("duplicate", "none", "unknown"), 1),
                (name("rejected", "invalid_signature", "none"), 1),
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(
            counts(&second),
            [(name("rejected", "store_unavailable", "test"), 1)]
                .into_iter()
                .collect()
        );
    }
}
