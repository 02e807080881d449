//! [`Answer`]: every HTTP answer the suite decides, as one type the adapters convert once.
//!
//! A refusal of the verifier ([`Answer::error`]), a decision of the idempotency guard (a
//! duplicate, a delivery in flight, the store unavailable), what the inbox says of a delivery
//! it stored (or could not), and the answer of synchronous handlers: each is a status, a short
//! fixed JSON body (`Content-Type: application/json`) and, where the answer decides how the
//! delivery counts, its [`Outcome`]. Each adapter has one function that turns an `Answer` into
//! its framework's response (axum: `http::Response`; actix-web: `HttpResponse`).
//!
//! # Example
//!
//! ```
//! use airmy_verify::observe::Outcome;
//! use airmy_verify::{Answer, Error};
//!
//! let refused = Answer::error(&Error::SignatureMismatch);
//! assert_eq!(refused.status(), 401);
//! assert_eq!(refused.body().as_ref(), br#"{"error":"invalid_signature"}"#);
//! assert_eq!(refused.outcome(), None); // the verifying layer records its own refusals
//!
//! let duplicate = Answer::with_id(200, "duplicate", "evt_1", Outcome::Duplicate);
//! assert_eq!(duplicate.body().as_ref(), br#"{"id":"evt_1","status":"duplicate"}"#);
//! assert_eq!(duplicate.outcome(), Some(Outcome::Duplicate));
//! ```

use bytes::Bytes;

use crate::error::Error;
use crate::observe::Outcome;

/// One HTTP answer of the suite: status, JSON body, and the delivery's outcome where the answer
/// decides it; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Answer {
    status: u16,
    body: Bytes,
    outcome: Option<Outcome>,
    close: bool,
}

impl Answer {
    /// An answer of `status` with the JSON `body`; `outcome` is how the delivery counts when
    /// this answer is given instead of the handler's (none: the handler had it, or the answer
    /// is a refusal the verifying layer records itself).
    pub fn new(status: u16, body: impl Into<Bytes>, outcome: Option<Outcome>) -> Self {
        Self {
            status,
            body: body.into(),
            outcome,
            close: false,
        }
    }

    /// `{"id":"<id>","status":"<status_word>"}` with `status`, for the answers that name the
    /// delivery (`accepted`, `duplicate`, `handled`). The id is written as a JSON string
    /// (escaped).
    pub fn with_id(status: u16, status_word: &str, id: &str, outcome: Outcome) -> Self {
        let body = serde_json::json!({ "status": status_word, "id": id }).to_string();
        Self::new(status, body, Some(outcome))
    }

    /// The answer to a core [`Error`]: its [status](Error::status) and [fixed
    /// body](Error::body); a body that did not arrive in time also closes the connection (the
    /// rest of it is not waited for). No outcome: the verifying layer records its refusals
    /// itself, and behind it an extractor's refusal counts as `accepted` (the handler had it).
    ///
    /// It does not log: adapters call [`Error::log`] where they answer.
    pub fn error(err: &Error) -> Self {
        Self {
            status: err.status(),
            body: Bytes::from_static(err.body().as_bytes()),
            outcome: None,
            close: matches!(err, Error::BodyTimeout),
        }
    }

    /// 503 `{"error":"shutting_down"}`: the runtime shut down before a detached handler
    /// answered (nobody waits for the answer any more). No outcome.
    pub fn shutting_down() -> Self {
        Self::new(
            503,
            Bytes::from_static(br#"{"error":"shutting_down"}"#),
            None,
        )
    }

    /// The HTTP status.
    #[must_use]
    pub const fn status(&self) -> u16 {
        self.status
    }

    /// The JSON body.
    #[must_use]
    pub const fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body, taken.
    #[must_use]
    pub fn into_body(self) -> Bytes {
        self.body
    }

    /// How the delivery counts when this is answered instead of the handler, if the answer
    /// decides it: adapters put it in the response's extensions for the verifying layer.
    #[must_use]
    pub const fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Whether the connection is closed after this answer (`Connection: close`): a body that
    /// did not arrive within the body timeout.
    #[must_use]
    pub const fn closes_connection(&self) -> bool {
        self.close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answers_its_status_and_fixed_body_without_an_outcome() {
        let answer = Answer::error(&Error::BodyTooLarge { limit: 10 });
        assert_eq!(answer.status(), 413);
        assert_eq!(answer.body().as_ref(), br#"{"error":"body_too_large"}"#);
        assert_eq!(answer.outcome(), None);
        assert!(!answer.closes_connection());
    }

    #[test]
    fn a_body_timeout_closes_the_connection() {
        let answer = Answer::error(&Error::BodyTimeout);
        assert_eq!(answer.status(), 408);
        assert!(answer.closes_connection());
    }

    #[test]
    fn an_id_is_escaped_in_the_body() {
        let answer = Answer::with_id(200, "accepted", "evt_\"<x>\n", Outcome::Accepted);
        let parsed: serde_json::Value = serde_json::from_slice(answer.body()).expect("JSON");
        assert_eq!(parsed["id"], "evt_\"<x>\n");
        assert_eq!(parsed["status"], "accepted");
        assert_eq!(answer.outcome(), Some(Outcome::Accepted));
    }
}
