//! Helpers for tests: sample events of every type, signed deliveries, a fixed clock, and the
//! conformance table every adapter runs.
//!
//! **[`sample_event`] deliveries are dated on the fixed test clock** ([`fixed_now`],
//! 2026-03-22T14:30:00Z): verify them with [`conformance_verifier`], which runs on that
//! clock. A verifier on the real clock (`Verifier::new(Secret::new(testing::SECRET)?)`, as
//! your application builds one) refuses them as stale (401 `{"error":"stale_event"}`);
//! for it, date the sample now with [`EventBuilder::created_now`].
//!
//! Behind the `testing` feature (as tokio's `test-util`): nothing here is needed in
//! production. Enable it in your dev-dependencies so your own tests can build deliveries
//! exactly as AIRMY signs them:
//!
//! ```toml
//! [dev-dependencies]
//! airmy-verify = { version = "0.1", features = ["testing"] }
//! ```
//!
//! # Example
//!
//! ```
//! use airmy_verify::testing::{self, Delivery};
//! use airmy_verify::{Event, Secret, Verifier};
//!
//! // A run.completed event created at fixed_now(), signed with testing::SECRET, for the
//! // verifier on the fixed test clock.
//! let delivery: Delivery = testing::sample_event("run.completed").signed(testing::SECRET);
//! let verifier = testing::conformance_verifier();
//! let envelope = verifier.verify(&delivery.signature, delivery.body)?.take_event::<Event>()?;
//! assert!(matches!(envelope.data, Event::RunCompleted(_)));
//!
//! // The same event created now, for a verifier on the real clock (your application's).
//! let fresh = testing::sample_event("run.completed").created_now().signed(testing::SECRET);
//! let real_clock = Verifier::new(Secret::new(testing::SECRET)?);
//! let envelope = real_clock.verify(&fresh.signature, fresh.body)?.take_event::<Event>()?;
//! assert!(matches!(envelope.data, Event::RunCompleted(_)));
//!
//! // Every rule, as a table of cases with the expected HTTP outcome:
//! for case in testing::conformance_cases() {
//!     let outcome = match testing::check_case_with_core(&verifier, &case) {
//!         Ok(_) => 200,
//!         Err(err) => err.status(),
//!     };
//!     assert_eq!(outcome, case.status, "{}", case.name);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Posting a delivery through a router
//!
//! A [`Delivery`] is what AIRMY sends: its `body`, and its `signature` as the value of the
//! [`SIGNATURE_HEADER`](crate::SIGNATURE_HEADER) header (`X-AIRMY-Signature`). As an
//! `http::Request` for an axum router's `oneshot` (or actix's `TestRequest`, with the same
//! header and body):
//!
//! ```
//! use airmy_verify::{SIGNATURE_HEADER, testing};
//!
//! let delivery = testing::sample_event("alert.triggered").created_now().signed(testing::SECRET);
//! let request = http::Request::post("/hooks/airmy")
//!     .header(SIGNATURE_HEADER, &delivery.signature)
//!     .header("content-type", "application/json")
//!     .body(delivery.body)?;
//! // let response = app.oneshot(request).await?;
//! # assert_eq!(request.headers()[SIGNATURE_HEADER], testing::Delivery::sign(request.body().clone(), testing::SECRET).signature);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use bytes::Bytes;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::Error;
use crate::event::{EVENT_TYPES, Envelope, Event};
use crate::secret::Secret;
use crate::verifier::{Clock, DEFAULT_MAX_BODY_SIZE, DEFAULT_TOLERANCE, Verifier};

/// The current secret of [`conformance_verifier`].
pub const SECRET: &str = "whsec_airmy_verify_testing_current_0123456789";
/// The previous secret of [`conformance_verifier`], accepted as during a rotation.
pub const PREVIOUS_SECRET: &str = "whsec_airmy_verify_testing_previous_9876543210";
/// A secret that [`conformance_verifier`] does not know.
pub const WRONG_SECRET: &str = "whsec_airmy_verify_testing_wrong_5555555555";

/// The instant the fixed test clock shows: `2026-03-22T14:30:00Z`, the time of the example on
/// AIRMY's webhook page.
#[must_use]
pub fn fixed_now() -> OffsetDateTime {
    time::macros::datetime!(2026-03-22 14:30:00 UTC)
}

/// A [`Clock`] that always shows the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedClock(pub OffsetDateTime);

impl Default for FixedClock {
    /// A clock fixed at [`fixed_now`].
    fn default() -> Self {
        Self(fixed_now())
    }
}

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

/// The verifier the conformance table expects: [`SECRET`] with [`PREVIOUS_SECRET`] as a
/// previous secret, the default 2 MiB limit and 5 minute tolerance, on a [`FixedClock`] at
/// [`fixed_now`].
#[must_use]
pub fn conformance_verifier() -> Verifier {
    Verifier::builder(secret(SECRET))
        .previous_secret(secret(PREVIOUS_SECRET))
        .clock(FixedClock::default())
        .build()
}

fn secret(s: &'static str) -> Secret {
    match Secret::new(s) {
        Ok(secret) => secret,
        Err(_) => unreachable!("the testing secrets are not empty"),
    }
}

/// A `run.completed` envelope created now (whole seconds, so its length does not vary) and
/// padded in `data.output.result` to exactly `len` bytes; shorter than `len` only when `len`
/// is below the unpadded sample's length. The bodies of the benchmarks.
#[must_use]
pub fn run_completed_of_len(len: usize) -> Bytes {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| fixed_now());
    let build = |filler: usize| {
        let mut data = sample_data("run.completed");
        data["output"]["result"] = "x".repeat(filler).into();
        sample_event("run.completed")
            .created_at(now)
            .data(data)
            .body()
    };
    build(len.saturating_sub(build(0).len()))
}

/// A plausible `data` object for an event type, with the fields AIRMY's page shows; for a type
/// this crate does not know, a small object.
#[must_use]
pub fn sample_data(event_type: &str) -> Value {
    let run = json!({
        "id": "run_01HXYZ123",
        "agent_id": "ag_01HXYZ",
        "status": "completed",
        "output": { "result": "..." },
        "latency_ms": 48,
        "tokens_used": 1247
    });
    match event_type {
        "run.completed" => run,
        "run.failed" => {
            let mut run = run;
            run["status"] = json!("failed");
            run["error"] = json!({ "code": "timeout", "message": "the run timed out after 30 s" });
            run
        }
        "deployment.created" => json!({
            "id": "dep_01HXYZ", "agent_id": "ag_01HXYZ", "status": "created", "version": 7
        }),
        "deployment.rollback" => json!({
            "id": "dep_01HXYZ", "agent_id": "ag_01HXYZ", "status": "rolled_back",
            "reason": "error rate above 5% for 10 minutes"
        }),
        "alert.triggered" => json!({
            "id": "alr_01HXYZ", "agent_id": "ag_01HXYZ", "status": "firing",
            "metric_snapshot": { "metric": "error_rate", "value": 0.072, "threshold": 0.05 }
        }),
        "agent.updated" => json!({
            "id": "ag_01HXYZ",
            "old": { "model": "airmy-large-1", "temperature": 0.2 },
            "new": { "model": "airmy-large-2", "temperature": 0.2 }
        }),
        "pipeline.completed" => json!({
            "id": "plr_01HXYZ", "pipeline_id": "pl_01HXYZ", "status": "completed",
            "latency_ms": 5120
        }),
        "test" => json!({ "message": "This is a test event from AIRMY." }),
        _ => json!({ "id": "obj_01HXYZ", "note": "an event type added after this crate" }),
    }
}

/// A sample event of `event_type`, created at [`fixed_now`], to adjust and sign.
#[must_use]
pub fn sample_event(event_type: &str) -> EventBuilder {
    EventBuilder {
        id: format!("evt_test_{}", event_type.replace('.', "_")),
        event_type: event_type.to_owned(),
        created_at: fixed_now(),
        data: sample_data(event_type),
        padded_to: None,
    }
}

/// Builds an envelope body; from [`sample_event`].
#[derive(Debug, Clone)]
pub struct EventBuilder {
    id: String,
    event_type: String,
    created_at: OffsetDateTime,
    data: Value,
    padded_to: Option<usize>,
}

impl EventBuilder {
    /// Sets the event id.
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets `created_at`.
    #[must_use]
    pub fn created_at(mut self, at: OffsetDateTime) -> Self {
        self.created_at = at;
        self
    }

    /// Sets `created_at` to now (the system clock, whole seconds as AIRMY sends them): for a
    /// verifier on the real clock, which refuses the default [`fixed_now`] as stale.
    #[must_use]
    pub fn created_now(self) -> Self {
        let now = OffsetDateTime::now_utc();
        self.created_at(now.replace_nanosecond(0).unwrap_or(now))
    }

    /// Sets `data`.
    #[must_use]
    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// Pads the body with trailing JSON whitespace to exactly `len` bytes (a body already
    /// longer is left as it is).
    #[must_use]
    pub fn padded_to(mut self, len: usize) -> Self {
        self.padded_to = Some(len);
        self
    }

    /// The body: the envelope as compact JSON, keys in the order AIRMY sends them.
    #[must_use]
    pub fn body(&self) -> Bytes {
        let created_at = self
            .created_at
            .format(&Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned());
        let mut body = format!(
            r#"{{"id":{},"type":{},"created_at":"{created_at}","data":{}}}"#,
            Value::from(self.id.as_str()),
            Value::from(self.event_type.as_str()),
            self.data
        )
        .into_bytes();
        if let Some(len) = self.padded_to {
            body.resize(body.len().max(len), b' ');
        }
        Bytes::from(body)
    }

    /// The body signed with `secret`.
    #[must_use]
    pub fn signed(&self, secret: &str) -> Delivery {
        Delivery::sign(self.body(), secret)
    }
}

/// A body and its `X-AIRMY-Signature` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The raw body.
    pub body: Bytes,
    /// The lowercase hex signature AIRMY would send.
    pub signature: String,
}

impl Delivery {
    /// Signs `body` with `secret` as AIRMY does.
    #[must_use]
    pub fn sign(body: impl Into<Bytes>, secret: &str) -> Self {
        let body = body.into();
        let signature = crate::sign(&body, secret);
        Self { body, signature }
    }
}

/// One row of the conformance table: a request and the outcome every adapter must give it
/// when configured with [`conformance_verifier`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Case {
    /// A short name, such as `tampered_body`.
    pub name: &'static str,
    /// The `X-AIRMY-Signature` values to send, in order: none, one, or several (each is valid
    /// as an HTTP header value but may be malformed as a signature).
    pub signatures: Vec<Vec<u8>>,
    /// The body to send.
    pub body: Bytes,
    /// The HTTP status to expect: 200 when the handler accepts.
    pub status: u16,
    /// The error code to expect in the body `{"error":"<code>"}`, for a rejection.
    pub error: Option<&'static str>,
    /// The event id and type the handler must see, for an accepted delivery.
    pub event: Option<(String, String)>,
}

impl Case {
    /// Whether a handler may run for this case (only for accepted deliveries).
    #[must_use]
    pub fn handler_runs(&self) -> bool {
        self.error.is_none()
    }

    /// The exact response body expected for a rejection, such as
    /// `{"error":"invalid_signature"}`.
    #[must_use]
    pub fn error_body(&self) -> Option<String> {
        self.error.map(|code| format!(r#"{{"error":"{code}"}}"#))
    }

    /// Checks a response to this case, for a receiver whose handler answers an accepted event
    /// with `{"id":"<event id>","type":"<event type>"}` (as the example receivers do):
    /// the status, the body (the rejection's exact body, or that JSON), and how many times the
    /// handler ran (once for an accepted delivery, never otherwise).
    ///
    /// # Errors
    ///
    /// What differs, naming the case.
    pub fn check_response(
        &self,
        status: u16,
        body: &[u8],
        handler_runs: usize,
    ) -> Result<(), String> {
        let shown = String::from_utf8_lossy(body);
        let what = format!(
            "{}: got {status} {shown}, {handler_runs} handler run(s)",
            self.name
        );
        if status != self.status {
            return Err(format!("{what}; expected status {}", self.status));
        }
        match (self.error_body(), &self.event) {
            (Some(expected), _) if body != expected.as_bytes() => {
                return Err(format!("{what}; expected body {expected}"));
            }
            (None, Some((id, event_type))) => {
                let expected = serde_json::json!({ "id": id, "type": event_type });
                if serde_json::from_slice::<Value>(body).ok().as_ref() != Some(&expected) {
                    return Err(format!("{what}; expected body {expected}"));
                }
            }
            _ => {}
        }
        if handler_runs != usize::from(self.handler_runs()) {
            return Err(format!(
                "{what}; expected the handler to run {} time(s)",
                usize::from(self.handler_runs())
            ));
        }
        Ok(())
    }
}

/// The conformance case named `name`, such as `tampered_body`.
#[must_use]
pub fn case(name: &str) -> Option<Case> {
    conformance_cases().into_iter().find(|c| c.name == name)
}

/// Runs a case through the core alone, as an adapter would: [`Verifier::intake`] with its
/// signature values (and the body length as `Content-Length`), the body as one chunk, then
/// [`Intake::finish`](crate::Intake::finish).
///
/// # Errors
///
/// The error the core gives the case.
pub fn check_case_with_core(verifier: &Verifier, case: &Case) -> Result<Envelope<Event>, Error> {
    let mut intake = verifier.intake(&case.signatures, Some(case.body.len() as u64))?;
    intake.push(case.body.clone())?;
    intake.finish()?.take_event()
}

/// The conformance table: every rule of the core as a request with its expected outcome,
/// for [`conformance_verifier`].
///
/// The axum and actix test suites both run every case, so the adapters cannot drift apart.
/// Building it allocates two bodies of about 2 MiB (the size limit cases).
#[must_use]
pub fn conformance_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let ok = |name, delivery: Delivery, event: &EventBuilder| Case {
        name,
        signatures: vec![delivery.signature.into_bytes()],
        body: delivery.body,
        status: 200,
        error: None,
        event: Some((event.id.clone(), event.event_type.clone())),
    };
    let reject = |name, signatures: Vec<Vec<u8>>, body: Bytes, err: Error| Case {
        name,
        signatures,
        body,
        status: err.status(),
        error: Some(err.code()),
        event: None,
    };
    let run = sample_event("run.completed");
    let good = run.signed(SECRET);
    let sig = |s: &str| vec![s.as_bytes().to_vec()];
    let malformed = |r| Error::MalformedSignature(r);

    // Accepted: every documented type, `test`, and what AIRMY may add.
    const VALID_NAMES: [&str; 8] = [
        "valid_run_completed",
        "valid_run_failed",
        "valid_deployment_created",
        "valid_deployment_rollback",
        "valid_alert_triggered",
        "valid_agent_updated",
        "valid_pipeline_completed",
        "valid_test_event",
    ];
    for (name, event_type) in VALID_NAMES.into_iter().zip(EVENT_TYPES) {
        let event = sample_event(event_type);
        cases.push(ok(name, event.signed(SECRET), &event));
    }
    let unknown = sample_event("agent.deleted");
    cases.push(ok("unknown_event_type", unknown.signed(SECRET), &unknown));
    let mut data = sample_data("run.completed");
    data["cost_usd"] = json!(0.0042);
    data["latency_ms"] = json!("48 ms");
    let odd = sample_event("run.completed").data(data);
    cases.push(ok("unknown_and_mistyped_fields", odd.signed(SECRET), &odd));
    let reordered = format!(
        r#"{{"data":{},"api_version":"2026-03","created_at":"2026-03-22T14:30:00Z","type":"run.completed","id":"{}"}}"#,
        sample_data("run.completed"),
        run.id
    );
    cases.push(ok(
        "data_before_type_and_extra_envelope_field",
        Delivery::sign(reordered, SECRET),
        &run,
    ));
    cases.push(
        ok("uppercase_signature", good.clone(), &run)
            .with_signature(sig(&good.signature.to_uppercase())),
    );
    cases.push(
        ok("signature_with_surrounding_whitespace", good.clone(), &run)
            .with_signature(sig(&format!("  {}\t", good.signature))),
    );
    cases.push(ok("previous_secret", run.signed(PREVIOUS_SECRET), &run));
    let offset = run
        .clone()
        .created_at(time::macros::datetime!(2026-03-22 16:29:59.999 +02:00));
    cases.push(ok(
        "created_at_with_offset_and_fraction",
        offset.signed(SECRET),
        &offset,
    ));
    let tolerance = time::Duration::try_from(DEFAULT_TOLERANCE).unwrap_or(time::Duration::ZERO);
    let second = time::Duration::SECOND;
    let at = |t| run.clone().created_at(fixed_now() + t);
    cases.push(ok(
        "created_at_exactly_tolerance_ago",
        at(-tolerance).signed(SECRET),
        &run,
    ));
    cases.push(ok(
        "created_at_exactly_tolerance_ahead",
        at(tolerance).signed(SECRET),
        &run,
    ));
    let at_limit = run.clone().padded_to(DEFAULT_MAX_BODY_SIZE);
    cases.push(ok("body_exactly_at_limit", at_limit.signed(SECRET), &run));

    // Rejected before the body matters: the header.
    cases.push(reject(
        "missing_signature",
        vec![],
        good.body.clone(),
        Error::MissingSignature,
    ));
    cases.push(reject(
        "empty_signature",
        sig(""),
        good.body.clone(),
        malformed(crate::MalformedReason::Empty),
    ));
    cases.push(reject(
        "signature_63_hex_digits",
        sig(&good.signature[..63]),
        good.body.clone(),
        malformed(crate::MalformedReason::WrongLength(63)),
    ));
    cases.push(reject(
        "signature_65_hex_digits",
        sig(&format!("{}0", good.signature)),
        good.body.clone(),
        malformed(crate::MalformedReason::WrongLength(65)),
    ));
    cases.push(reject(
        "signature_not_hex",
        sig(&format!("{}zz", &good.signature[..62])),
        good.body.clone(),
        malformed(crate::MalformedReason::NotHex),
    ));
    cases.push(reject(
        "signature_with_sha256_prefix",
        sig(&format!("sha256={}", good.signature)),
        good.body.clone(),
        malformed(crate::MalformedReason::WrongLength(71)),
    ));
    cases.push(reject(
        "signature_in_base64",
        sig("ASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4mrze8="),
        good.body.clone(),
        malformed(crate::MalformedReason::WrongLength(44)),
    ));
    let mut non_ascii = good.signature.as_bytes()[..62].to_vec();
    non_ascii.extend_from_slice("é".as_bytes());
    cases.push(reject(
        "signature_not_ascii",
        vec![non_ascii],
        good.body.clone(),
        malformed(crate::MalformedReason::NotHex),
    ));
    cases.push(reject(
        "signature_header_repeated",
        vec![
            good.signature.clone().into_bytes(),
            good.signature.clone().into_bytes(),
        ],
        good.body.clone(),
        malformed(crate::MalformedReason::Repeated(2)),
    ));
    let over_limit = run
        .clone()
        .padded_to(DEFAULT_MAX_BODY_SIZE + 1)
        .signed(SECRET);
    cases.push(reject(
        "body_over_limit_without_signature",
        vec![],
        over_limit.body.clone(),
        Error::MissingSignature,
    ));

    // Rejected on the body.
    cases.push(reject(
        "body_one_byte_over_limit",
        sig(&over_limit.signature),
        over_limit.body,
        Error::BodyTooLarge {
            limit: DEFAULT_MAX_BODY_SIZE,
        },
    ));
    let mut tampered = good.body.to_vec();
    let i = tampered.len() / 2;
    tampered[i] ^= 0x01;
    cases.push(reject(
        "tampered_body",
        sig(&good.signature),
        Bytes::from(tampered),
        Error::SignatureMismatch,
    ));
    cases.push(reject(
        "wrong_secret",
        sig(&run.signed(WRONG_SECRET).signature),
        good.body.clone(),
        Error::SignatureMismatch,
    ));
    cases.push(reject(
        "secret_without_whsec_prefix",
        sig(&run.signed(SECRET.trim_start_matches("whsec_")).signature),
        good.body.clone(),
        Error::SignatureMismatch,
    ));
    let other = sample_event("run.failed").signed(SECRET);
    cases.push(reject(
        "signature_of_another_body",
        sig(&other.signature),
        good.body.clone(),
        Error::SignatureMismatch,
    ));
    cases.push(reject(
        "unsigned_invalid_json",
        sig(&good.signature),
        Bytes::from_static(b"{not json"),
        Error::SignatureMismatch,
    ));
    let signed = |name, body: &'static [u8], err| {
        let d = Delivery::sign(Bytes::from_static(body), SECRET);
        reject(name, sig(&d.signature), d.body, err)
    };
    let json_err = Error::InvalidJson { line: 0, column: 0 };
    let envelope_err = Error::InvalidEnvelope {
        reason: String::new(),
        line: 0,
        column: 0,
    };
    cases.push(signed(
        "signed_invalid_json",
        b"{not json",
        json_err.clone(),
    ));
    cases.push(signed("signed_empty_body", b"", json_err.clone()));
    cases.push(signed(
        "signed_truncated_json",
        br#"{"id":"evt_1","type":"te"#,
        json_err,
    ));
    cases.push(signed(
        "signed_json_array",
        b"[1,2,3]",
        envelope_err.clone(),
    ));
    cases.push(signed(
        "missing_created_at",
        br#"{"id":"evt_1","type":"test","data":{}}"#,
        envelope_err.clone(),
    ));
    cases.push(signed(
        "created_at_not_rfc3339",
        br#"{"id":"evt_1","type":"test","created_at":"yesterday","data":{}}"#,
        envelope_err.clone(),
    ));
    cases.push(signed(
        "duplicate_type_field",
        br#"{"id":"evt_1","type":"test","type":"run.completed","created_at":"2026-03-22T14:30:00Z","data":{}}"#,
        envelope_err.clone(),
    ));
    cases.push(signed(
        "documented_type_with_non_object_data",
        br#"{"id":"evt_1","type":"run.completed","created_at":"2026-03-22T14:30:00Z","data":"done"}"#,
        envelope_err,
    ));
    let stale = at(-tolerance - second);
    cases.push(reject(
        "created_at_one_second_past_tolerance",
        sig(&stale.signed(SECRET).signature),
        stale.body(),
        Error::Stale {
            event_id: String::new(),
            age: DEFAULT_TOLERANCE,
            tolerance: DEFAULT_TOLERANCE,
        },
    ));
    let future = at(tolerance + second);
    cases.push(reject(
        "created_at_one_second_too_far_ahead",
        sig(&future.signed(SECRET).signature),
        future.body(),
        Error::FromFuture {
            event_id: String::new(),
            ahead: DEFAULT_TOLERANCE,
            tolerance: DEFAULT_TOLERANCE,
        },
    ));
    cases
}

impl Case {
    fn with_signature(mut self, signatures: Vec<Vec<u8>>) -> Self {
        self.signatures = signatures;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_stale_on_the_real_clock_unless_created_now() {
        let real_clock = Verifier::new(Secret::new(SECRET).expect("a secret"));
        let dated = sample_event("run.completed").signed(SECRET);
        let err = real_clock
            .verify(&dated.signature, dated.body)
            .expect_err("fixed_now is stale on the real clock");
        assert!(matches!(err, Error::Stale { .. }), "{err:?}");
        assert_eq!(err.status(), 401);

        let fresh = sample_event("run.completed").created_now().signed(SECRET);
        let envelope = real_clock
            .verify(&fresh.signature, fresh.body.clone())
            .expect("created now")
            .take_event::<Event>()
            .expect("an event");
        assert!(matches!(envelope.data, Event::RunCompleted(_)));
        // The fixed clock refuses it in turn: each sample goes with its verifier.
        assert!(
            conformance_verifier()
                .verify(&fresh.signature, fresh.body)
                .is_err()
        );
    }

    #[test]
    fn run_completed_of_len_is_exactly_that_long_and_verifies() {
        let base = run_completed_of_len(0).len();
        for len in [base, base + 1, 1024, 64 * 1024] {
            let body = run_completed_of_len(len);
            assert_eq!(body.len(), len);
            let envelope: Envelope<Event> = serde_json::from_slice(&body).expect("an envelope");
            assert_eq!(envelope.event_type(), "run.completed");
        }
        assert_eq!(
            run_completed_of_len(base - 1).len(),
            base,
            "cannot be shorter"
        );
    }

    #[test]
    fn every_case_has_the_outcome_the_core_gives_it() {
        let verifier = conformance_verifier();
        let cases = conformance_cases();
        let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "case names are unique");
        for case in &cases {
            match check_case_with_core(&verifier, case) {
                Ok(envelope) => {
                    assert_eq!(case.status, 200, "{} was accepted", case.name);
                    let (id, event_type) =
                        case.event.clone().expect("accepted cases name an event");
                    assert_eq!(envelope.id, id, "{}", case.name);
                    assert_eq!(envelope.event_type(), event_type, "{}", case.name);
                }
                Err(err) => {
                    assert_eq!(Some(err.code()), case.error, "{}: {err}", case.name);
                    assert_eq!(err.status(), case.status, "{}", case.name);
                }
            }
        }
    }

    #[test]
    fn the_table_covers_every_status_and_code() {
        let cases = conformance_cases();
        for status in [200, 400, 401, 413, 422] {
            assert!(cases.iter().any(|c| c.status == status), "{status}");
        }
        for code in [
            "missing_signature",
            "malformed_signature",
            "invalid_signature",
            "body_too_large",
            "stale_event",
            "future_event",
            "invalid_json",
            "invalid_envelope",
        ] {
            assert!(cases.iter().any(|c| c.error == Some(code)), "{code}");
        }
    }

    #[test]
    fn check_response_refuses_any_difference() {
        let ok = case("valid_run_completed").expect("case");
        let body = br#"{"id":"evt_test_run_completed","type":"run.completed"}"#;
        assert_eq!(ok.check_response(200, body, 1), Ok(()));
        assert!(ok.check_response(201, body, 1).is_err());
        assert!(ok.check_response(200, b"{}", 1).is_err());
        assert!(ok.check_response(200, body, 0).is_err());
        assert!(ok.check_response(200, body, 2).is_err());
        let bad = case("tampered_body").expect("case");
        let error = br#"{"error":"invalid_signature"}"#;
        assert_eq!(bad.check_response(401, error, 0), Ok(()));
        assert!(bad.check_response(401, error, 1).is_err());
        assert!(
            bad.check_response(401, br#"{"error":"stale_event"}"#, 0)
                .is_err()
        );
        assert!(case("no_such_case").is_none());
    }

    #[test]
    fn padded_bodies_have_the_exact_length_and_still_verify() {
        let d = sample_event("test").padded_to(4096).signed(SECRET);
        assert_eq!(d.body.len(), 4096);
        assert!(crate::verify(&d.body, &d.signature, SECRET));
    }
}
