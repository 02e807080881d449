//! Why a delivery was refused, and the HTTP answer every adapter gives for it.
//!
//! Every check in this crate fails with one [`Error`]. An adapter never decides a status of its
//! own: it answers [`Error::status`] with the fixed body [`Error::body`] and logs
//! [`Error`]'s `Display`, which says what was wrong without echoing the secret, the signature or
//! the body.
//!
//! | variant | status | `code()` |
//! |---|---|---|
//! | [`MissingSignature`](Error::MissingSignature) | 401 | `missing_signature` |
//! | [`MalformedSignature`](Error::MalformedSignature) | 401 | `malformed_signature` |
//! | [`SignatureMismatch`](Error::SignatureMismatch) | 401 | `invalid_signature` |
//! | [`Stale`](Error::Stale) | 401 | `stale_event` |
//! | [`FromFuture`](Error::FromFuture) | 401 | `future_event` |
//! | [`BodyTooLarge`](Error::BodyTooLarge) | 413 | `body_too_large` |
//! | [`BodyRead`](Error::BodyRead) | 400 | `body_unreadable` |
//! | [`BodyTimeout`](Error::BodyTimeout) | 408 | `body_timeout` |
//! | [`InvalidJson`](Error::InvalidJson) | 400 | `invalid_json` |
//! | [`InvalidEnvelope`](Error::InvalidEnvelope) | 422 | `invalid_envelope` |
//! | [`UnexpectedEventType`](Error::UnexpectedEventType) | 422 | `unexpected_event_type` |
//! | [`NotConfigured`](Error::NotConfigured) | 500 | `verifier_not_configured` |
//!
//! # Example
//!
//! ```
//! use airmy_verify::{Error, Secret, Verifier};
//!
//! let verifier = Verifier::new(Secret::new("whsec_example")?);
//! let err = verifier.verify("00".repeat(32), "{}").unwrap_err();
//! assert_eq!(err, Error::SignatureMismatch);
//! assert_eq!(err.status(), 401);
//! assert_eq!(err.body(), r#"{"error":"invalid_signature"}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::Duration;

/// Why an `X-AIRMY-Signature` header value was refused before any HMAC was computed.
///
/// Part of [`Error::MalformedSignature`]; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MalformedReason {
    /// The header was present but held nothing (after trimming whitespace).
    Empty,
    /// The header was sent more than once; the count is given.
    Repeated(usize),
    /// The value was not 64 characters long (after trimming); the length is given.
    WrongLength(usize),
    /// The value held a byte that is not a hex digit (this covers `sha256=` prefixes, base64
    /// and non-ASCII bytes).
    NotHex,
}

impl fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the header is empty"),
            Self::Repeated(n) => write!(f, "the header appears {n} times, exactly one is allowed"),
            Self::WrongLength(n) => write!(f, "expected 64 hex digits, got {n} characters"),
            Self::NotHex => f.write_str("expected 64 hex digits, found another character"),
        }
    }
}

/// A delivery that must not reach a handler, with the reason.
///
/// See the [module docs](self) for the status and code of each variant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The request carried no `X-AIRMY-Signature` header.
    MissingSignature,
    /// The `X-AIRMY-Signature` header was not exactly one value of 64 hex digits.
    MalformedSignature(MalformedReason),
    /// The signature is well-formed but is not the HMAC-SHA256 of the body under any configured
    /// secret: the body was tampered with, or signed with another secret.
    SignatureMismatch,
    /// The body is larger than the verifier's limit (in bytes, inclusive).
    BodyTooLarge {
        /// The largest body accepted, in bytes.
        limit: usize,
    },
    /// The body could not be read to the end: the connection failed or the transfer encoding
    /// was broken. Adapters report it; the core never reads bodies.
    BodyRead,
    /// The body did not arrive in full within the verifier's
    /// [`body_timeout`](crate::VerifierBuilder::body_timeout): a stalled or very slow client.
    /// Adapters answer 408 and close the connection.
    BodyTimeout,
    /// The envelope's signed `created_at` is older than the tolerance allows: a replay, or a
    /// delivery held back too long.
    Stale {
        /// The (verified) event id.
        event_id: String,
        /// How old the event was when it was checked (whole seconds are shown).
        age: Duration,
        /// The configured tolerance.
        tolerance: Duration,
    },
    /// The envelope's signed `created_at` lies further in the future than the tolerance allows
    /// (the sender's or this host's clock is wrong).
    FromFuture {
        /// The (verified) event id.
        event_id: String,
        /// How far ahead of this host's clock the event was.
        ahead: Duration,
        /// The configured tolerance.
        tolerance: Duration,
    },
    /// The body verified but is not JSON (a syntax error or truncated document).
    InvalidJson {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// The body is JSON but not an AIRMY envelope `{id, type, created_at, data}`, or a
    /// documented event's `data` is not an object.
    InvalidEnvelope {
        /// What was wrong, without any value copied from the body.
        reason: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// A typed extraction asked for one event type and the (verified) delivery is another.
    UnexpectedEventType {
        /// The (verified) event id.
        event_id: String,
        /// The event type that was asked for.
        expected: &'static str,
        /// The event type of the delivery (at most 64 characters are kept).
        found: String,
    },
    /// An extractor or idempotency layer found no verified delivery on the request: no
    /// verifying layer or middleware covers the route (and, for actix's extractors, no verifier
    /// is in `app_data`). A mistake in the application, not in the delivery: adapters answer
    /// 500 and log at `ERROR`, and never hand an unverified body to a handler.
    NotConfigured,
}

impl Error {
    /// The HTTP status an adapter answers with: 401 for every signature and freshness failure,
    /// 413 for the size limit, 408 for a body that did not arrive in time, 400 for a JSON syntax error and 422 for JSON that is not an
    /// envelope (or not the expected event type).
    #[must_use]
    pub const fn status(&self) -> u16 {
        match self {
            Self::MissingSignature
            | Self::MalformedSignature(_)
            | Self::SignatureMismatch
            | Self::Stale { .. }
            | Self::FromFuture { .. } => 401,
            Self::BodyTooLarge { .. } => 413,
            Self::InvalidJson { .. } | Self::BodyRead => 400,
            Self::BodyTimeout => 408,
            Self::InvalidEnvelope { .. } | Self::UnexpectedEventType { .. } => 422,
            Self::NotConfigured => 500,
        }
    }

    /// A short, stable, machine-readable name for the failure, such as `invalid_signature`.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        self.codes().0
    }

    /// The fixed JSON body an adapter answers with, such as `{"error":"invalid_signature"}`.
    ///
    /// It is the same for every instance of a variant and carries nothing from the request.
    #[must_use]
    pub const fn body(&self) -> &'static str {
        self.codes().1
    }

    const fn codes(&self) -> (&'static str, &'static str) {
        macro_rules! code {
            ($c:literal) => {
                ($c, concat!("{\"error\":\"", $c, "\"}"))
            };
        }
        match self {
            Self::MissingSignature => code!("missing_signature"),
            Self::MalformedSignature(_) => code!("malformed_signature"),
            Self::SignatureMismatch => code!("invalid_signature"),
            Self::BodyTooLarge { .. } => code!("body_too_large"),
            Self::BodyRead => code!("body_unreadable"),
            Self::BodyTimeout => code!("body_timeout"),
            Self::Stale { .. } => code!("stale_event"),
            Self::FromFuture { .. } => code!("future_event"),
            Self::InvalidJson { .. } => code!("invalid_json"),
            Self::InvalidEnvelope { .. } => code!("invalid_envelope"),
            Self::UnexpectedEventType { .. } => code!("unexpected_event_type"),
            Self::NotConfigured => code!("verifier_not_configured"),
        }
    }

    /// The event id, for the failures found after the (verified) envelope was parsed:
    /// freshness and event type. `None` for every other failure.
    #[must_use]
    pub fn event_id(&self) -> Option<&str> {
        match self {
            Self::Stale { event_id, .. }
            | Self::FromFuture { event_id, .. }
            | Self::UnexpectedEventType { event_id, .. } => Some(event_id),
            _ => None,
        }
    }

    /// Emits the `tracing` event every adapter emits for a refused delivery: at `WARN`, target
    /// `airmy_verify`, with `status`, `code`, `event_id` (when known) and `reason` (this
    /// error's `Display`, which never holds a secret, a signature or the body); at `ERROR` for
    /// [`NotConfigured`](Self::NotConfigured), a mistake in the application.
    pub fn log(&self) {
        if matches!(self, Self::NotConfigured) {
            tracing::error!(
                target: "airmy_verify",
                status = self.status(),
                code = self.code(),
                reason = %self,
                "AIRMY webhook delivery refused: the route is not verified"
            );
            return;
        }
        tracing::warn!(
            target: "airmy_verify",
            status = self.status(),
            code = self.code(),
            event_id = self.event_id(),
            reason = %self,
            "AIRMY webhook delivery rejected"
        );
    }

    /// Turns a `serde_json` error from parsing a body into [`InvalidJson`](Self::InvalidJson)
    /// or [`InvalidEnvelope`](Self::InvalidEnvelope), keeping no value from the body.
    pub(crate) fn from_json(err: &serde_json::Error) -> Self {
        let (line, column) = (err.line(), err.column());
        match err.classify() {
            serde_json::error::Category::Data => Self::InvalidEnvelope {
                reason: sanitize_reason(&err.to_string()),
                line,
                column,
            },
            _ => Self::InvalidJson { line, column },
        }
    }

    pub(crate) fn unexpected_type(event_id: &str, expected: &'static str, found: &str) -> Self {
        Self::UnexpectedEventType {
            event_id: event_id.to_owned(),
            expected,
            found: truncate(found, 64).to_owned(),
        }
    }
}

/// Keeps the part of a `serde_json` data-error message that names what was wrong and drops
/// anything that may quote the body (`invalid type: string "…"`), and serde_json's own
/// position suffix (the variant carries line and column).
fn sanitize_reason(message: &str) -> String {
    let message = message
        .split_once(" at line ")
        .map_or(message, |(head, _)| head);
    let message = if message.contains('"') {
        message
            .split_once(':')
            .map_or("invalid value", |(head, _)| head)
    } else {
        message
    };
    truncate(message, 120).to_owned()
}

fn truncate(s: &str, max_chars: usize) -> &str {
    s.char_indices().nth(max_chars).map_or(s, |(i, _)| &s[..i])
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingSignature => f.write_str("the request has no X-AIRMY-Signature header"),
            Self::MalformedSignature(reason) => {
                write!(f, "the X-AIRMY-Signature header is malformed: {reason}")
            }
            Self::SignatureMismatch => {
                f.write_str("the signature does not match the body under any configured secret")
            }
            Self::BodyTooLarge { limit } => {
                write!(f, "the body is larger than the limit of {limit} bytes")
            }
            Self::BodyRead => f.write_str("the body could not be read to the end"),
            Self::BodyTimeout => f.write_str("the body did not arrive in time"),
            Self::Stale { age, tolerance, .. } => write!(
                f,
                "the event was created {} s ago, more than the tolerance of {} s",
                age.as_secs(),
                tolerance.as_secs()
            ),
            Self::FromFuture {
                ahead, tolerance, ..
            } => write!(
                f,
                "the event was created {} s in the future, more than the tolerance of {} s",
                ahead.as_secs(),
                tolerance.as_secs()
            ),
            Self::InvalidJson { line, column } => {
                write!(
                    f,
                    "the body is not valid JSON (line {line}, column {column})"
                )
            }
            Self::InvalidEnvelope {
                reason,
                line,
                column,
            } => write!(
                f,
                "the body is not an AIRMY event envelope: {reason} (line {line}, column {column})"
            ),
            Self::UnexpectedEventType {
                expected, found, ..
            } => {
                write!(f, "expected a `{expected}` event, got `{found}`")
            }
            Self::NotConfigured => f.write_str(
                "no verified delivery on this request: add AirmyVerifyLayer / AirmyVerify in \
                 front of this route, outside any idempotency layer or middleware (or, for \
                 actix's extractors alone, a Verifier in app_data)",
            ),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Error> {
        vec![
            Error::MissingSignature,
            Error::MalformedSignature(MalformedReason::NotHex),
            Error::SignatureMismatch,
            Error::BodyTooLarge { limit: 10 },
            Error::Stale {
                event_id: "evt_1".into(),
                age: Duration::from_secs(301),
                tolerance: Duration::from_secs(300),
            },
            Error::FromFuture {
                event_id: "evt_1".into(),
                ahead: Duration::from_secs(301),
                tolerance: Duration::from_secs(300),
            },
            Error::InvalidJson { line: 1, column: 2 },
            Error::InvalidEnvelope {
                reason: "missing field `id`".into(),
                line: 1,
                column: 2,
            },
            Error::unexpected_type("evt_1", "run.completed", "alert.triggered"),
            Error::BodyRead,
            Error::BodyTimeout,
            Error::NotConfigured,
        ]
    }

    #[test]
    fn maps_every_variant_to_the_documented_status() {
        let statuses: Vec<u16> = all().iter().map(Error::status).collect();
        assert_eq!(
            statuses,
            [401, 401, 401, 413, 401, 401, 400, 422, 422, 400, 408, 500]
        );
        let ids: Vec<_> = all().iter().map(|e| e.event_id().is_some()).collect();
        assert_eq!(
            ids,
            [
                false, false, false, false, true, true, false, false, true, false, false, false
            ]
        );
    }

    #[test]
    fn bodies_are_json_objects_naming_the_code() {
        for err in all() {
            let v: serde_json::Value = serde_json::from_str(err.body()).expect("body is JSON");
            assert_eq!(v["error"], err.code(), "{err:?}");
            assert_eq!(v.as_object().map(|o| o.len()), Some(1));
        }
    }

    #[test]
    fn display_says_what_was_wrong() {
        let msg = Error::Stale {
            event_id: "evt_1".into(),
            age: Duration::from_millis(301_500),
            tolerance: Duration::from_secs(300),
        }
        .to_string();
        assert_eq!(
            msg,
            "the event was created 301 s ago, more than the tolerance of 300 s"
        );
        assert_eq!(
            Error::MalformedSignature(MalformedReason::WrongLength(63)).to_string(),
            "the X-AIRMY-Signature header is malformed: expected 64 hex digits, got 63 characters"
        );
    }

    #[test]
    fn data_errors_never_quote_the_body() {
        let err = serde_json::from_str::<u64>(r#""top secret value""#).unwrap_err();
        let ours = Error::from_json(&err);
        assert_eq!(ours.status(), 422);
        let shown = ours.to_string();
        assert!(!shown.contains("top secret"), "{shown}");
        assert!(shown.starts_with("the body is not an AIRMY event envelope: invalid type"));
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let err = serde_json::from_str::<serde_json::Value>("{\n  \"a\": }").unwrap_err();
        assert_eq!(
            Error::from_json(&err),
            Error::InvalidJson { line: 2, column: 8 }
        );
    }

    #[test]
    fn unexpected_type_keeps_at_most_64_characters() {
        let long = "x".repeat(500);
        match Error::unexpected_type("evt_1", "run.completed", &long) {
            Error::UnexpectedEventType { found, .. } => assert_eq!(found.len(), 64),
            other => panic!("unexpected {other:?}"),
        }
    }
}
