//! [`Delivery`]: the rule "every delivery is counted once, however it ends", owned by one type.

use std::cell::Cell;
use std::fmt;

use tracing::Span;
use tracing::span::Entered;

use super::{Outcome, STATUS_DROPPED, STATUS_FAILED, delivery_span, metrics};
use crate::error::Error;
use crate::verifier::Verified;

/// How far a delivery got; what its `Drop` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Opened; its body is not being read (refused from its headers, or not yet started).
    Opened,
    /// Its body is being read: dropped now, it counts as `rejected`, `body_unreadable`.
    Reading,
    /// Verified and handed on (metric label of its type): dropped now, it counts as
    /// `accepted` with status [`STATUS_DROPPED`].
    Verified(&'static str),
    /// Recorded (answered, refused, or failed): nothing more is recorded.
    Recorded,
}

/// One delivery through a verifying layer or middleware: its span, its event type label and
/// whether it was recorded.
///
/// An adapter's future (the axum layer's, the actix middleware's) holds one `Delivery` and tells
/// it each stage: the body is being read, it was read, it verified (or was refused), how it was
/// answered. A panic in the inner service is recorded by a [`PanicGuard`] held around each call
/// and poll, and a delivery dropped before its answer (the client hung up, a timeout layer
/// outside answered, a panic unwound) is recorded by `Delivery`'s `Drop`. Whatever happens,
/// exactly one of these records the delivery: its span fields and one
/// `airmy_webhook_deliveries_total` increment.
///
/// # Example
///
/// ```
/// use airmy_verify::observe::Delivery;
/// use airmy_verify::testing::sample_event;
/// use airmy_verify::{Secret, Verifier};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let verifier = Verifier::new(Secret::new("whsec_example")?);
/// let signed = sample_event("run.completed")
///     .created_at(airmy_verify::time::OffsetDateTime::now_utc())
///     .signed("whsec_example");
///
/// // What an adapter does for one request:
/// let delivery = Delivery::open();
/// let _in_span = delivery.enter();
/// let mut intake = verifier.intake([signed.signature.as_bytes()], None)?;
/// delivery.reading();
/// intake.push(signed.body.clone())?;
/// delivery.body_read(intake.len());
/// let verified = intake.finish()?;
/// delivery.verified(&verified);
/// {
///     let _watch = delivery.guard(); // around the inner service's call and each poll
///     // ... the handler runs ...
/// }
/// delivery.answered(None, 200); // recorded once: accepted, 200
/// # Ok(())
/// # }
/// ```
///
/// Each recording method records at most once: after the delivery was recorded (answered,
/// refused, failed in a panic), later calls do nothing.
pub struct Delivery {
    span: Span,
    stage: Cell<Stage>,
}

impl Delivery {
    /// Opens the delivery and its span ([`delivery_span`]).
    #[must_use]
    #[inline]
    pub fn open() -> Self {
        Self {
            span: delivery_span(),
            stage: Cell::new(Stage::Opened),
        }
    }

    /// The delivery's span.
    #[must_use]
    #[inline]
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Enters the delivery's span until the guard is dropped.
    #[inline]
    pub fn enter(&self) -> Entered<'_> {
        self.span.enter()
    }

    /// Its body is being read: from now until [`verified`](Self::verified) or
    /// [`rejected`](Self::rejected), a drop counts it as `rejected`, `body_unreadable`.
    #[inline]
    pub fn reading(&self) {
        if self.stage.get() == Stage::Opened {
            self.stage.set(Stage::Reading);
        }
    }

    /// Its body was read whole (or as far as the limit): `len` bytes, on the span.
    #[inline]
    pub fn body_read(&self, len: usize) {
        record_body(&self.span, len);
    }

    /// It verified: its id and type go on the span. Gives its event type as a metric label
    /// ([`event_type_label`](super::event_type_label)).
    #[inline]
    pub fn verified(&self, verified: &Verified) -> &'static str {
        let event_type = record_verified(&self.span, verified);
        if self.stage.get() != Stage::Recorded {
            self.stage.set(Stage::Verified(event_type));
        }
        event_type
    }

    /// It was refused by `error` (by the verifier, before any handler): outcome `rejected`,
    /// the error's status and code.
    #[inline]
    pub fn rejected(&self, error: &Error) {
        if self.stage.replace(Stage::Recorded) != Stage::Recorded {
            record_rejected(&self.span, error);
        }
    }

    /// The inner service answered `status`, with the `outcome` its response carries (none
    /// means [`Outcome::Accepted`]: the handler had it).
    #[inline]
    pub fn answered(&self, outcome: Option<Outcome>, status: u16) {
        if let Stage::Verified(event_type) = self.stage.get() {
            self.stage.set(Stage::Recorded);
            record_answered(&self.span, outcome, status, event_type);
        }
    }

    /// The inner service failed (returned an error) instead of answering: `accepted` with
    /// status [`STATUS_FAILED`].
    #[inline]
    pub fn failed(&self) {
        self.answered(None, STATUS_FAILED);
    }

    /// A guard to hold around each call and poll of the inner service: if it panics, the
    /// delivery is recorded as it unwinds, as `accepted` with status [`STATUS_FAILED`] (and not
    /// again when the future is dropped or polled again).
    #[must_use]
    #[inline]
    pub fn guard(&self) -> PanicGuard<'_> {
        PanicGuard { delivery: self }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        match self.stage.get() {
            Stage::Reading => {
                let _entered = self.span.enter();
                record_rejected(&self.span, &Error::BodyRead);
            }
            Stage::Verified(event_type) => {
                let _entered = self.span.enter();
                record_answered(&self.span, None, STATUS_DROPPED, event_type);
            }
            Stage::Opened | Stage::Recorded => {}
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("span", &self.span)
            .field("stage", &self.stage.get())
            .finish()
    }
}

/// Held around a call or poll of the inner service: records the delivery if that panics; see
/// [`Delivery::guard`].
#[derive(Debug)]
pub struct PanicGuard<'a> {
    delivery: &'a Delivery,
}

impl Drop for PanicGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.delivery.failed();
        }
    }
}

/// Records a complete body's size on a delivery span.
#[inline]
fn record_body(span: &Span, len: usize) {
    if !span.is_disabled() {
        span.record("body_bytes", len);
    }
}

/// Records a verified delivery's id and type on its span; gives its event type as a metric
/// label.
#[inline]
fn record_verified(span: &Span, verified: &Verified) -> &'static str {
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
pub(super) fn record_rejected(span: &Span, error: &Error) {
    let code = error.code();
    if !span.is_disabled() {
        span.record("outcome", Outcome::Rejected.as_str());
        span.record("status", error.status());
        span.record("code", code);
    }
    metrics::delivery(Outcome::Rejected, code, "none");
}

/// Records how a verified delivery was answered: the outcome and status on the span, and
/// `airmy_webhook_deliveries_total` with its event type label. An answer of the idempotency
/// guard or the inbox that refused (`rejected`) means the store was unavailable (503):
/// code `store_unavailable`.
#[inline]
pub(super) fn record_answered(
    span: &Span,
    outcome: Option<Outcome>,
    status: u16,
    event_type: &str,
) {
    let outcome = outcome.unwrap_or(Outcome::Accepted);
    if !span.is_disabled() {
        span.record("outcome", outcome.as_str());
        span.record("status", status);
    }
    let code = if outcome == Outcome::Rejected {
        "store_unavailable"
    } else {
        "none"
    };
    if outcome == Outcome::Rejected && !span.is_disabled() {
        span.record("code", code);
    }
    metrics::delivery(outcome, code, event_type);
}
