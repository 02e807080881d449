//! What a receiver is doing: one `tracing` span per delivery, and metrics (feature `metrics`),
//! named once here for every adapter.
//!
//! # Spans
//!
//! The axum layer and the actix middleware open a [`Delivery`] (its span is a
//! [`delivery_span`]) per request and enter it
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
//! | `airmy_webhook_inbox_paused` | gauge | | inbox entries held by a pause of their event type or of everything |
//! | `airmy_webhook_handler_attempts_total` | counter | `event_type`, `result`: `success`, `retry`, `dead` | inbox handler attempts |
//! | `airmy_webhook_inbox_accept_seconds` | histogram | `backend`: `sqlite`, `redis`, `postgres`, `other`; `stage` ([`AcceptStage`](metrics::AcceptStage)): `queue`, `batch`, `commit`, `total` | where one accept's time goes: waiting for its batch to open, its batch's statements (with the commit where the store does both in one round trip), SQLite's `COMMIT` (its sync), and the whole accept; what `total` holds beyond the others is the wake-up of the waiting request |
//! | `airmy_webhook_inbox_accept_batch_size` | histogram | `backend` | how many accepts each batch stored together (one statement, one commit) |
//! | `airmy_webhook_console_logins_total` | counter | `result`: `success`, `failure` | logins at the inbox console's built-in login (crate `airmy-verify-inbox`, feature `console`): a failure is a wrong token |
//! | `airmy_webhook_inbox_admin_actions_total` | counter | `action`: `replay`, `replay_dead`, `purge`, `pause`, `resume` (and what a console adds; see `airmy_verify_inbox::audit`) | operators' actions on an inbox, counted where they are audited |
//!
//! The inbox gauges are refreshed once a second by a running `Worker`.
//!
//! # Example
//!
//! ```
//! use airmy_verify::observe::{self, Outcome};
//!
//! // A layer that answers without the handler marks its response with its outcome, which the
//! // verifying layer's `Delivery` records (once) as the delivery's.
//! assert_eq!(Outcome::Duplicate.as_str(), "duplicate");
//! assert_eq!(observe::event_type_label("billing.paid"), "unknown");
//! ```
//!
//! Where each rule lives: the stages of a delivery and "counted once, however it ends" in
//! [`Delivery`] (`delivery.rs`); every metric name, label and sink in `metrics.rs`; the span
//! names and fields here.

use tracing::Span;
use tracing::field::Empty;

mod delivery;
pub mod metrics;

pub use delivery::{Delivery, PanicGuard};

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
/// The histogram of the stages of one inbox accept, in seconds.
pub const INBOX_ACCEPT_SECONDS: &str = "airmy_webhook_inbox_accept_seconds";
/// The histogram of how many accepts one batch stored.
pub const INBOX_ACCEPT_BATCH_SIZE: &str = "airmy_webhook_inbox_accept_batch_size";
/// The counter of logins at the inbox console's built-in login.
pub const CONSOLE_LOGINS_TOTAL: &str = "airmy_webhook_console_logins_total";
/// The gauge of inbox entries held by a pause.
pub const INBOX_PAUSED: &str = "airmy_webhook_inbox_paused";
/// The counter of operators' actions on an inbox.
pub const INBOX_ADMIN_ACTIONS_TOTAL: &str = "airmy_webhook_inbox_admin_actions_total";

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
/// The span status of a verified delivery whose request was dropped before it was answered:
/// its client left, or a layer outside the verifying one (a timeout) answered instead (nginx's
/// 499; nothing is sent).
pub const STATUS_DROPPED: u16 = 499;

/// The span status of a verified delivery whose inner service failed (returned an error, or
/// its handler panicked) instead of answering: 500, whatever an outer `HandleErrorLayer` or
/// `CatchPanicLayer` makes of it.
pub const STATUS_FAILED: u16 = 500;

#[cfg(test)]
mod tests {
    use super::delivery::{record_answered, record_rejected};
    use super::*;
    #[cfg(feature = "metrics")]
    use crate::error::Error;

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
    impl ::metrics::CounterFn for Count {
        fn increment(&self, value: u64) {
            let mut counts = self.0.lock().expect("counts");
            *counts.entry(self.1.clone()).or_default() += value;
        }

        fn absolute(&self, value: u64) {
            self.0.lock().expect("counts").insert(self.1.clone(), value);
        }
    }

    #[cfg(feature = "metrics")]
    impl ::metrics::Recorder for Counting {
        fn describe_counter(
            &self,
            _: ::metrics::KeyName,
            _: Option<::metrics::Unit>,
            _: ::metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: ::metrics::KeyName,
            _: Option<::metrics::Unit>,
            _: ::metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: ::metrics::KeyName,
            _: Option<::metrics::Unit>,
            _: ::metrics::SharedString,
        ) {
        }

        fn register_counter(
            &self,
            key: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            ::metrics::Counter::from_arc(std::sync::Arc::new(Count(self.counts.clone(), name)))
        }

        fn register_gauge(
            &self,
            _: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Gauge {
            ::metrics::Gauge::noop()
        }

        fn register_histogram(
            &self,
            _: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Histogram {
            ::metrics::Histogram::noop()
        }
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn admin_actions_are_counted_by_action() {
        let recorder = Counting::default();
        ::metrics::with_local_recorder(&recorder, || {
            metrics::inbox_admin_action("pause");
            metrics::inbox_admin_action("pause");
            metrics::inbox_admin_action("replay_dead");
        });
        let name =
            |action: &str| format!("airmy_webhook_inbox_admin_actions_total{{action={action}}}");
        assert_eq!(
            *recorder.counts.lock().expect("counts"),
            [(name("pause"), 2), (name("replay_dead"), 1)]
                .into_iter()
                .collect()
        );
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn deliveries_are_counted_by_label_set_and_again_under_a_new_recorder() {
        let span = Span::none();
        let (first, second) = (Counting::default(), Counting::default());
        ::metrics::with_local_recorder(&first, || {
            record_answered(&span, None, 200, "run.completed");
            record_answered(&span, None, 200, "run.completed");
            record_answered(&span, Some(Outcome::Duplicate), 200, "billing.paid");
            record_rejected(&span, &Error::SignatureMismatch);
        });
        ::metrics::with_local_recorder(&second, || {
            record_answered(&span, Some(Outcome::Rejected), 503, "test");
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

    /// A fresh signed delivery, verified.
    #[cfg(all(feature = "metrics", feature = "testing"))]
    fn verified(event_type: &str) -> crate::Verified {
        let secret = "whsec_observe";
        let signed = crate::testing::sample_event(event_type)
            .created_at(time::OffsetDateTime::now_utc())
            .signed(secret);
        let verifier = crate::Verifier::new(crate::Secret::new(secret).expect("secret"));
        let mut intake = verifier
            .intake([signed.signature.as_bytes()], None)
            .expect("intake");
        intake.push(signed.body).expect("push");
        intake.finish().expect("verified")
    }

    /// The deliveries counted while `f` runs, by label set.
    #[cfg(all(feature = "metrics", feature = "testing"))]
    fn counted(f: impl FnOnce()) -> std::collections::BTreeMap<String, u64> {
        let recorder = Counting::default();
        ::metrics::with_local_recorder(&recorder, f);
        let counts = recorder.counts.lock().expect("counts").clone();
        counts
            .into_iter()
            .map(|(k, v)| {
                let labels = k
                    .trim_start_matches("airmy_webhook_deliveries_total{")
                    .trim_end_matches('}')
                    .to_owned();
                (labels, v)
            })
            .collect()
    }

    #[cfg(all(feature = "metrics", feature = "testing"))]
    fn one(labels: &str) -> std::collections::BTreeMap<String, u64> {
        [(labels.to_owned(), 1)].into_iter().collect()
    }

    #[cfg(all(feature = "metrics", feature = "testing"))]
    #[test]
    fn a_delivery_dropped_while_its_body_is_read_counts_once_as_body_unreadable() {
        let counts = counted(|| {
            let delivery = Delivery::open();
            delivery.reading();
            delivery.body_read(10);
        });
        assert_eq!(
            counts,
            one("outcome=rejected,code=body_unreadable,event_type=none")
        );
    }

    #[cfg(all(feature = "metrics", feature = "testing"))]
    #[test]
    fn a_verified_delivery_dropped_before_its_answer_counts_once_as_accepted() {
        let verified = verified("run.completed");
        let counts = counted(|| {
            let delivery = Delivery::open();
            delivery.reading();
            delivery.verified(&verified);
        });
        assert_eq!(
            counts,
            one("outcome=accepted,code=none,event_type=run.completed")
        );
    }

    #[cfg(all(feature = "metrics", feature = "testing"))]
    #[test]
    fn an_answered_delivery_is_not_counted_again_when_dropped_or_answered_again() {
        let verified = verified("test");
        let counts = counted(|| {
            let delivery = Delivery::open();
            delivery.reading();
            delivery.verified(&verified);
            delivery.answered(Some(Outcome::Duplicate), 200);
            delivery.answered(None, 200);
            delivery.failed();
            delivery.rejected(&Error::BodyRead);
        });
        assert_eq!(counts, one("outcome=duplicate,code=none,event_type=test"));
    }

    #[cfg(all(feature = "metrics", feature = "testing"))]
    #[test]
    fn a_refused_delivery_counts_once_with_its_code() {
        let counts = counted(|| {
            let delivery = Delivery::open();
            delivery.rejected(&Error::MissingSignature);
            delivery.rejected(&Error::MissingSignature);
            delivery.reading();
        });
        assert_eq!(
            counts,
            one("outcome=rejected,code=missing_signature,event_type=none")
        );
    }

    #[cfg(all(feature = "metrics", feature = "testing"))]
    #[test]
    fn a_panic_under_the_guard_counts_once_as_failed_and_not_again_on_drop() {
        let verified = verified("alert.triggered");
        let counts = counted(|| {
            let delivery = Delivery::open();
            delivery.reading();
            delivery.verified(&verified);
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _guard = delivery.guard();
                panic!("handler panicked");
            }));
            assert!(caught.is_err());
            // A future polled again after the panic answers: not counted twice.
            delivery.answered(None, 200);
        });
        assert_eq!(
            counts,
            one("outcome=accepted,code=none,event_type=alert.triggered")
        );
    }

    #[cfg(all(feature = "metrics", feature = "testing"))]
    #[test]
    fn a_guard_dropped_without_a_panic_records_nothing() {
        let verified = verified("run.failed");
        let counts = counted(|| {
            let delivery = Delivery::open();
            delivery.reading();
            delivery.verified(&verified);
            drop(delivery.guard());
            delivery.answered(Some(Outcome::InFlight), 409);
        });
        assert_eq!(
            counts,
            one("outcome=in_flight,code=none,event_type=run.failed")
        );
    }
}
