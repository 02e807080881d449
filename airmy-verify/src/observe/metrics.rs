//! The metric sinks: every `metrics` call of the suite, named once (the names, labels and
//! what each counts are in the [`observe`](super) module's table). Without the `metrics`
//! feature, or without an installed recorder, each function does nothing.
//!
//! Who calls what:
//!
//! - an application, once after installing its exporter: [`describe`] (feature `metrics`);
//! - an inbox (crate `airmy-verify-inbox`, or your own queue behind the adapters):
//!   [`inbox_accept`] for each delivery offered to it, [`inbox_gauges`] for its counts (a
//!   running worker refreshes them once a second, with [`inbox_paused`]), [`handler_attempt`]
//!   for each attempt of a handler, [`inbox_admin_action`] for each operator's action,
//!   [`inbox_accept_stage`] and [`inbox_accept_batch`] for where an accept's time goes,
//!   [`console_login`] for each login at its console's built-in login;
//! - the core itself records the rest (deliveries, verification, lag, idempotency claims), so
//!   those sinks are not public.
//!
//! # Example
//!
//! ```
//! use airmy_verify::observe::metrics;
//!
//! // What an inbox records as it stores a delivery and then handles it.
//! metrics::inbox_accept("stored");
//! metrics::handler_attempt("run.completed", "success");
//! metrics::inbox_gauges(0, 0, 0, 0, 0);
//! metrics::inbox_paused(0);
//! metrics::inbox_admin_action("replay");
//! ```

use super::*;

/// The handles of the per-delivery metrics, registered once per recorder: counting a
/// delivery is then an atomic add and three histogram records, with no key built, hashed or
/// looked up. A handle is registered on first use (so only the series that happened appear),
/// and all are registered again when the recorder changes (found by its address: installing
/// the exporter after the first delivery is fine).
#[cfg(feature = "metrics")]
mod handles {
    use std::sync::{Arc, OnceLock};

    use ::metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};
    use arc_swap::ArcSwapOption;

    use super::super::{
        BODY_BYTES, DELIVERIES_TOTAL, DELIVERY_LAG_SECONDS, INBOX_ACCEPT_BATCH_SIZE,
        INBOX_ACCEPT_SECONDS, Outcome, VERIFICATION_SECONDS,
    };
    use super::{AcceptStage, BACKENDS, backend_index};
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
        /// `airmy_webhook_inbox_accept_seconds` by backend, then stage.
        accept_stages: Box<[OnceLock<Histogram>]>,
        /// `airmy_webhook_inbox_accept_batch_size` by backend.
        batch_sizes: Box<[OnceLock<Histogram>]>,
    }

    static HANDLES: ArcSwapOption<Handles> = ArcSwapOption::const_empty();

    fn address(recorder: &dyn Recorder) -> usize {
        std::ptr::from_ref(recorder).cast::<()>() as usize
    }

    /// Runs `f` with the handles of the current recorder (and the recorder, to register).
    fn with<T>(f: impl FnOnce(&Handles, &dyn Recorder) -> T) -> T {
        ::metrics::with_recorder(|recorder| {
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
                accept_stages: (0..BACKENDS.len() * AcceptStage::ALL.len())
                    .map(|_| OnceLock::new())
                    .collect(),
                batch_sizes: (0..BACKENDS.len()).map(|_| OnceLock::new()).collect(),
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

    pub(super) fn accept_stage(backend: &str, stage: AcceptStage, seconds: f64) {
        let backend = backend_index(backend);
        let index = backend * AcceptStage::ALL.len() + stage as usize;
        with(|handles, recorder| {
            handles.accept_stages[index]
                .get_or_init(|| {
                    let labels = vec![
                        Label::from_static_parts("backend", BACKENDS[backend]),
                        Label::from_static_parts("stage", stage.as_str()),
                    ];
                    recorder.register_histogram(
                        &Key::from_parts(INBOX_ACCEPT_SECONDS, labels),
                        &METADATA,
                    )
                })
                .record(seconds);
        });
    }

    pub(super) fn accept_batch(backend: &str, size: usize) {
        let backend = backend_index(backend);
        with(|handles, recorder| {
            handles.batch_sizes[backend]
                .get_or_init(|| {
                    let labels = vec![Label::from_static_parts("backend", BACKENDS[backend])];
                    recorder.register_histogram(
                        &Key::from_parts(INBOX_ACCEPT_BATCH_SIZE, labels),
                        &METADATA,
                    )
                })
                .record(size as f64);
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

/// One answered delivery in `airmy_webhook_deliveries_total`: its outcome, the error code
/// (`none` unless rejected) and the event type label (`none` when refused by the verifier).
#[inline]
pub(crate) fn delivery(_outcome: Outcome, _code: &'static str, _event_type: &str) {
    #[cfg(feature = "metrics")]
    handles::delivery(_outcome, _code, _event_type);
}

/// Describes every metric of the suite to the installed recorder (Prometheus `# HELP` lines
/// and units). The application calls it once, after installing its exporter.
#[cfg(feature = "metrics")]
pub fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
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
    describe_histogram!(
        INBOX_ACCEPT_SECONDS,
        Unit::Seconds,
        "Where one inbox accept's time goes, by backend and stage (queue, batch, commit, total)"
    );
    describe_histogram!(
        INBOX_ACCEPT_BATCH_SIZE,
        "How many accepts one batch of the inbox stored together"
    );
    describe_counter!(
        CONSOLE_LOGINS_TOTAL,
        "Logins at the inbox console's built-in login, by result"
    );
    describe_gauge!(
        INBOX_PAUSED,
        "Inbox entries held by a pause of their event type or of everything"
    );
    describe_counter!(
        INBOX_ADMIN_ACTIONS_TOTAL,
        "Operators' actions on the inbox (replay, purge, pause, ...), by action"
    );
}

/// One complete body checked: its size and how long the check took.
#[cfg(feature = "metrics")]
pub(crate) fn verification(len: usize, seconds: f64) {
    handles::verification(len, seconds);
}

/// A verified delivery's lag behind its `created_at`.
#[cfg(feature = "metrics")]
pub(crate) fn lag(seconds: f64) {
    handles::lag(seconds);
}

/// An idempotency decision (`claimed`, `duplicate`, `in_flight`, `store_error`).
pub(crate) fn claim(_result: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(IDEMPOTENCY_CLAIMS_TOTAL, "result" => _result).increment(1);
}

/// A failed idempotency store call (`claim`, `extend`, `finish`).
pub(crate) fn store_error(_operation: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(IDEMPOTENCY_STORE_ERRORS_TOTAL, "operation" => _operation).increment(1);
}

/// Counts a delivery offered to an inbox in `airmy_webhook_inbox_accepts_total`, by `result`:
/// `stored` (new, kept for a worker), `duplicate` (its id was already stored) or `error` (the
/// inbox could not store it). An inbox calls it once per delivery it answers.
pub fn inbox_accept(_result: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(INBOX_ACCEPTS_TOTAL, "result" => _result).increment(1);
}

/// Sets the inbox gauges: entries due now (`pending`), waiting for a later retry
/// (`scheduled`), leased to a worker (`processing`), dead letters (`dead`), and how long the
/// oldest due entry has waited, in seconds (0 when none). An inbox's worker calls it with each
/// reading of its counts.
pub fn inbox_gauges(
    _pending: u64,
    _scheduled: u64,
    _processing: u64,
    _dead: u64,
    _oldest_pending_secs: u64,
) {
    #[cfg(feature = "metrics")]
    {
        ::metrics::gauge!(INBOX_PENDING).set(_pending as f64);
        ::metrics::gauge!(INBOX_SCHEDULED).set(_scheduled as f64);
        ::metrics::gauge!(INBOX_PROCESSING).set(_processing as f64);
        ::metrics::gauge!(INBOX_DEAD).set(_dead as f64);
        ::metrics::gauge!(INBOX_OLDEST_PENDING_AGE_SECONDS).set(_oldest_pending_secs as f64);
    }
}

/// The `backend` label values of the accept metrics; a name outside them is `other`.
#[cfg(feature = "metrics")]
const BACKENDS: [&str; 5] = ["sqlite", "redis", "postgres", "memory", "other"];

#[cfg(feature = "metrics")]
fn backend_index(backend: &str) -> usize {
    BACKENDS
        .iter()
        .position(|b| *b == backend)
        .unwrap_or(BACKENDS.len() - 1)
}

/// A stage of one inbox accept, the `stage` label of `airmy_webhook_inbox_accept_seconds`
/// ([`inbox_accept_stage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AcceptStage {
    /// From the accept handing itself to the store's batcher until its batch starts: waiting
    /// for the previous batches (a slot in flight) and for the batcher to run.
    Queue = 0,
    /// The batch's statements, from their start until the store answered them (PostgreSQL and
    /// Redis commit and sync in the same round trip, so their commit is in here).
    Batch = 1,
    /// The batch's commit, where it is a step of its own (SQLite's `COMMIT`: its sync).
    Commit = 2,
    /// The whole accept, from the call until the answer reached it; what it holds beyond the
    /// other stages is the waiting request's wake-up.
    Total = 3,
}

impl AcceptStage {
    #[cfg(feature = "metrics")]
    const ALL: [Self; 4] = [Self::Queue, Self::Batch, Self::Commit, Self::Total];

    /// The label value: `queue`, `batch`, `commit` or `total`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Batch => "batch",
            Self::Commit => "commit",
            Self::Total => "total",
        }
    }
}

/// Records how long one accept spent in `stage`, in `airmy_webhook_inbox_accept_seconds`, by
/// `backend` (`sqlite`, `redis`, `postgres`, `memory`; any other name is `other`). An inbox
/// backend calls it for each stored or refused accept, once per stage it has.
#[inline]
pub fn inbox_accept_stage(_backend: &str, _stage: AcceptStage, _seconds: f64) {
    #[cfg(feature = "metrics")]
    handles::accept_stage(_backend, _stage, _seconds);
}

/// Records how many accepts one batch stored together (one statement, one commit), in
/// `airmy_webhook_inbox_accept_batch_size`, by `backend`.
#[inline]
pub fn inbox_accept_batch(_backend: &str, _size: usize) {
    #[cfg(feature = "metrics")]
    handles::accept_batch(_backend, _size);
}

/// Sets the gauge of inbox entries held by a pause (`airmy_webhook_inbox_paused`). An inbox's
/// worker calls it with each reading of its counts, beside [`inbox_gauges`].
pub fn inbox_paused(_paused: u64) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!(INBOX_PAUSED).set(_paused as f64);
}

/// Counts an operator's action on an inbox in `airmy_webhook_inbox_admin_actions_total`, by
/// `action` (a fixed name such as `replay`, `purge`, `pause`: bounded). The inbox's audit
/// (`airmy_verify_inbox::audit`) calls it once per action, beside its log event.
pub fn inbox_admin_action(_action: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(INBOX_ADMIN_ACTIONS_TOTAL, "action" => _action).increment(1);
}

/// Counts an attempt of an inbox handler in `airmy_webhook_handler_attempts_total`, by event
/// type (bounded: a type outside the documented ones is `unknown`, see
/// [`event_type_label`]) and `result`: `success`, `retry` (failed, tried again later) or
/// `dead` (failed for the last time). A worker calls it once per attempt.
pub fn handler_attempt(_event_type: &str, _result: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(
        HANDLER_ATTEMPTS_TOTAL,
        "event_type" => event_type_label(_event_type),
        "result" => _result,
    )
    .increment(1);
}

/// Counts a login at an inbox console's built-in login in
/// `airmy_webhook_console_logins_total`, by `result`: `success` or `failure` (a wrong token).
/// The console calls it once per `POST /login`.
pub fn console_login(_result: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(CONSOLE_LOGINS_TOTAL, "result" => _result).increment(1);
}
