//! Verify AIRMY webhook deliveries: HMAC-SHA256 signatures over the raw body, size limits,
//! freshness and typed events, with no web framework.
//!
//! AIRMY POSTs a JSON envelope `{id, type, created_at, data}` and puts the lowercase hex
//! HMAC-SHA256 of the raw body, keyed by the UTF-8 bytes of your signing secret (the whole
//! `whsec_…` string), in `X-AIRMY-Signature`. This crate holds every rule for checking such a
//! delivery; `airmy-verify-axum` and `airmy-verify-actix` only move requests into it.
//!
//! - [`Secret`]: the signing secret, keyed once; `Debug` prints `[redacted]`.
//! - [`Verifier`]: the rules (signature header, size, signature under any of the configured
//!   secrets, envelope, freshness), applied through one [`Intake`] per delivery.
//! - [`Verified`]: a delivery that passed, with its raw bytes (for queueing) and its typed
//!   event on demand.
//! - [`event`]: [`Envelope`], [`Event`] and one struct per event type ([`EventData`]);
//!   unknown types and fields parse and are kept.
//! - [`Error`]: why a delivery was refused, with the HTTP status to answer.
//! - [`Answer`]: every HTTP answer the suite decides (a refusal, an idempotency decision, the
//!   inbox's), as status, fixed JSON body and outcome; each adapter converts it once.
//! - [`idempotency`]: exactly-once handling of AIRMY's retries, in memory or on Redis.
//! - [`lease`]: a lease kept alive while work runs (idempotency claims, inbox entries).
//! - `redis_connection` (feature `redis`): one connection to a Redis server or a Redis Cluster
//!   (several seed nodes too), for the Redis idempotency store and the inbox's Redis backend.
//! - [`observe`]: the span of each delivery and, with the `metrics` feature, metrics through
//!   the `metrics` facade; names and fields documented once; [`observe::Delivery`] counts
//!   every delivery once, however it ends.
//! - `testing` (feature `testing`): signed sample deliveries, a fixed clock and the
//!   conformance table, for your own tests.
//! - [`sign`] and [`verify`]: AIRMY's reference functions, for tests and scripts.
//! - [`token`]: random tokens (lease tokens, worker names, event ids of the tool).
//! - [`text`]: an event id as one word of a line, a URL without its password: how the suite
//!   prints text it does not control.
//!
//! # Example
//!
//! ```
//! use airmy_verify::{Event, Secret, Verifier};
//!
//! // Once, at start-up:
//! let verifier = Verifier::new(Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?);
//!
//! // Per delivery: the raw body and the X-AIRMY-Signature value(s) from the request.
//! # let created_at = time::OffsetDateTime::now_utc()
//! #     .format(&time::format_description::well_known::Rfc3339)?;
//! # let raw = format!(r#"{{"id":"evt_01HXYZ","type":"run.completed","created_at":"{created_at}","data":{{"id":"run_1","latency_ms":48}}}}"#);
//! # let body: &[u8] = raw.as_bytes();
//! # let header = airmy_verify::sign(body, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
//! let envelope = verifier.verify(&header, body.to_vec())?.take_event::<Event>()?;
//! match envelope.data {
//!     Event::RunCompleted(run) => println!("run {:?} took {:?} ms", run.id, run.latency_ms),
//!     other => println!("{} ignored", other.event_type()),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub mod answer;
pub mod error;
pub mod event;
pub mod idempotency;
pub mod lease;
pub mod observe;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis_connection;
pub mod secret;
pub mod signature;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod text;
pub mod token;
pub mod verifier;

pub use answer::Answer;
pub use error::{Error, MalformedReason};
pub use event::{Envelope, Event, EventData};
pub use secret::{InvalidSecret, Secret, SecretFileError, Secrets};
pub use signature::{SIGNATURE_HEADER, sign, verify};
pub use verifier::{
    Clock, DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_SIZE, DEFAULT_TOLERANCE, Intake, SystemClock,
    Verified, Verifier, VerifierBuilder, dedupe_window,
};

pub use bytes::Bytes;
pub use time;
