//! The [`Verifier`]: every rule a delivery must pass, in one place.
//!
//! A delivery is accepted when, in this order:
//! 1. its body is at most [`max_body_size`](VerifierBuilder::max_body_size) bytes (413);
//! 2. it carries exactly one `X-AIRMY-Signature` of 64 hex digits (401);
//! 3. that signature is the HMAC-SHA256 of the raw body under one of the configured secrets
//!    (401); every secret is tried, so timing does not tell which one matched;
//! 4. the body is a JSON envelope `{id, type, created_at, data}` (400 for a syntax error, 422
//!    otherwise);
//! 5. its signed `created_at` is within the [`tolerance`](VerifierBuilder::tolerance) of this
//!    host's clock, in either direction, bounds included (401).
//!
//! Adapters call [`Verifier::check_content_length`] and [`Signature::from_header_values`]
//! before reading a body, then [`Verifier::verify_event`] (or [`Verifier::verify_payload`])
//! once it is read. Nothing is hashed or parsed twice.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use airmy_verify::{Event, Secret, Signature, Verifier};
//!
//! let verifier = Verifier::builder(Secret::new("whsec_current")?)
//!     .previous_secret(Secret::new("whsec_before_rotation")?)
//!     .max_body_size(1024 * 1024)
//!     .tolerance(Duration::from_secs(60))
//!     .build();
//!
//! let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
//! let body = format!(r#"{{"id":"evt_1","type":"test","created_at":"{now}","data":{{}}}}"#);
//! let header = airmy_verify::sign(body.as_bytes(), "whsec_before_rotation");
//!
//! let signature = Signature::parse(&header)?;
//! let envelope = verifier.verify_event::<Event>(&signature, body.as_bytes())?;
//! assert_eq!(envelope.event_type(), "test");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hmac::Mac;
use time::OffsetDateTime;

use crate::error::Error;
use crate::event::{Envelope, Event, Parsed, Payload, Skipped};
use crate::secret::Secret;
use crate::signature::Signature;

/// The default body limit: 2 MiB (2,097,152 bytes), inclusive.
pub const DEFAULT_MAX_BODY_SIZE: usize = 2 * 1024 * 1024;

/// The default freshness tolerance: 5 minutes, in both directions.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Where a [`Verifier`] reads the current time from.
///
/// The default is [`SystemClock`]; tests use [`testing::FixedClock`](crate::testing::FixedClock).
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> OffsetDateTime;
}

/// The host's clock: [`OffsetDateTime::now_utc`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Checks AIRMY deliveries: size, signature, envelope and freshness.
///
/// Cheap to clone (the configuration is shared). See the [module docs](self).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Config>,
}

struct Config {
    secrets: Vec<Secret>,
    max_body_size: usize,
    tolerance: Option<Duration>,
    clock: Arc<dyn Clock>,
}

impl Verifier {
    /// A verifier for one secret with the defaults: a 2 MiB body limit and a 5 minute
    /// freshness tolerance on the system clock.
    #[must_use]
    pub fn new(secret: Secret) -> Self {
        Self::builder(secret).build()
    }

    /// Starts a configuration with `secret` as the current signing secret.
    #[must_use]
    pub fn builder(secret: Secret) -> VerifierBuilder {
        VerifierBuilder {
            secrets: vec![secret],
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            tolerance: Some(DEFAULT_TOLERANCE),
            clock: Arc::new(SystemClock),
        }
    }

    /// The largest body accepted, in bytes.
    #[must_use]
    pub fn max_body_size(&self) -> usize {
        self.inner.max_body_size
    }

    /// The freshness tolerance, or `None` when freshness is not checked.
    #[must_use]
    pub fn tolerance(&self) -> Option<Duration> {
        self.inner.tolerance
    }

    /// The checks an adapter makes before reading any of the body, in the order every adapter
    /// follows: the signature header (every value the request carried for it), then the
    /// declared `Content-Length`, if any.
    ///
    /// # Errors
    ///
    /// [`Error::MissingSignature`], [`Error::MalformedSignature`] or [`Error::BodyTooLarge`].
    pub fn check_headers<'a, I>(
        &self,
        signature_values: I,
        content_length: Option<u64>,
    ) -> Result<Signature, Error>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let signature = Signature::from_header_values(signature_values)?;
        if let Some(len) = content_length {
            self.check_content_length(len)?;
        }
        Ok(signature)
    }

    /// The error for a body that turned out, while being read, to be over the limit.
    #[must_use]
    pub fn body_too_large(&self) -> Error {
        Error::BodyTooLarge {
            limit: self.inner.max_body_size,
        }
    }

    /// Checks a declared `Content-Length` before any of the body is read.
    ///
    /// # Errors
    ///
    /// [`Error::BodyTooLarge`] when `len` is over the limit.
    pub fn check_content_length(&self, len: u64) -> Result<(), Error> {
        match usize::try_from(len) {
            Ok(len) if len <= self.inner.max_body_size => Ok(()),
            _ => Err(self.body_too_large()),
        }
    }

    /// A buffer for a body that arrives in chunks, which refuses to grow past the limit.
    ///
    /// `declared` is the `Content-Length` the request announced, if any (already checked with
    /// [`check_headers`](Self::check_headers)); it only sizes the buffer, never more than the
    /// limit. See [`BodyBuffer`].
    #[must_use]
    pub fn body_buffer(&self, declared: Option<u64>) -> BodyBuffer {
        let limit = self.inner.max_body_size;
        BodyBuffer {
            first: None,
            rest: BytesMut::new(),
            len: 0,
            limit,
            capacity: declared.map_or(0, |n| usize::try_from(n).unwrap_or(limit).min(limit)),
        }
    }

    /// Checks the size of `body` and its signature, and nothing else.
    ///
    /// # Errors
    ///
    /// [`Error::BodyTooLarge`] or [`Error::SignatureMismatch`].
    pub fn verify_signature(&self, signature: &Signature, body: &[u8]) -> Result<(), Error> {
        if body.len() > self.inner.max_body_size {
            return Err(self.body_too_large());
        }
        let mut matched = false;
        // Every secret is tried, so the time taken does not tell which one matched.
        for secret in &self.inner.secrets {
            let ok = secret
                .mac()
                .chain_update(body)
                .verify_slice(signature.as_bytes())
                .is_ok();
            matched |= ok;
        }
        if matched {
            Ok(())
        } else {
            Err(Error::SignatureMismatch)
        }
    }

    /// Checks `created_at` against the clock and the tolerance (bounds included).
    fn check_freshness(&self, event_id: &str, created_at: OffsetDateTime) -> Result<(), Error> {
        let Some(tolerance) = self.inner.tolerance else {
            return Ok(());
        };
        let age = self.inner.clock.now() - created_at;
        if age.is_negative() {
            let ahead = age.unsigned_abs();
            if ahead > tolerance {
                return Err(Error::FromFuture {
                    event_id: event_id.to_owned(),
                    ahead,
                    tolerance,
                });
            }
        } else {
            let age = age.unsigned_abs();
            if age > tolerance {
                return Err(Error::Stale {
                    event_id: event_id.to_owned(),
                    age,
                    tolerance,
                });
            }
        }
        Ok(())
    }

    /// Verifies a delivery and parses it into a typed envelope, in one pass over the JSON.
    ///
    /// `T` is [`Event`] for any event type, or a data struct such as
    /// [`RunCompleted`](crate::event::RunCompleted) for one type only.
    ///
    /// # Errors
    ///
    /// Size, signature, JSON, envelope and freshness errors in the order of the
    /// [module docs](self); then [`Error::UnexpectedEventType`] when `T` is one event type and
    /// the delivery is another.
    pub fn verify_event<T: Payload>(
        &self,
        signature: &Signature,
        body: &[u8],
    ) -> Result<Envelope<T>, Error> {
        self.verify_signature(signature, body)?;
        let parsed = Parsed::<Event>::from_slice(body)?;
        self.check_freshness(&parsed.id, parsed.created_at)?;
        parsed.into_envelope().into_typed()
    }

    /// Verifies a delivery and keeps its raw bytes (no copy) for parsing later or queueing.
    ///
    /// The envelope's `id`, `type` and `created_at` are read (and freshness checked) in a scan
    /// that skips over `data` without building it.
    ///
    /// # Errors
    ///
    /// Size, signature, JSON, envelope and freshness errors in the order of the
    /// [module docs](self).
    pub fn verify_payload(
        &self,
        signature: &Signature,
        body: Bytes,
    ) -> Result<VerifiedPayload, Error> {
        self.verify_signature(signature, &body)?;
        let parsed = Parsed::<Skipped>::from_slice(&body)?;
        self.check_freshness(&parsed.id, parsed.created_at)?;
        let (id, event_type, created_at) =
            (parsed.id, parsed.event_type.into_owned(), parsed.created_at);
        Ok(VerifiedPayload {
            bytes: body,
            id,
            event_type,
            created_at,
        })
    }
}

impl Verifier {
    /// Verifies a delivery once and gives both views of it: the parsed [`Envelope<Event>`] and
    /// the [`VerifiedPayload`] with the raw bytes (no copy). This is what adapter layers call,
    /// so extractors behind them neither hash nor parse again. Logs a `tracing` event at debug
    /// level (target `airmy_verify`) with the event id and type of each verified delivery.
    ///
    /// # Errors
    ///
    /// As [`Verifier::verify_event`] with `T = Event`.
    pub fn verify(&self, signature: &Signature, body: Bytes) -> Result<Verified, Error> {
        self.verify_signature(signature, &body)?;
        let envelope = {
            let parsed = Parsed::<Event>::from_slice(&body)?;
            self.check_freshness(&parsed.id, parsed.created_at)?;
            parsed.into_envelope()
        };
        tracing::debug!(
            target: "airmy_verify",
            event_id = %envelope.id,
            event_type = envelope.event_type(),
            "AIRMY webhook delivery verified"
        );
        Ok(Verified {
            envelope,
            bytes: body,
        })
    }
}

/// A delivery verified by [`Verifier::verify`]: the parsed event and the raw bytes it was
/// parsed from (the same allocation, not a copy).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Verified {
    /// The parsed envelope.
    pub envelope: Envelope<Event>,
    /// The verified body, as received.
    pub bytes: Bytes,
}

impl Verified {
    /// The raw payload view, with the envelope's `id`, `type` and `created_at` (built on
    /// demand: only extractors that want the raw bytes pay for it).
    #[must_use]
    pub fn into_payload(self) -> VerifiedPayload {
        VerifiedPayload {
            id: self.envelope.id,
            event_type: self.envelope.data.event_type().to_owned(),
            created_at: self.envelope.created_at,
            bytes: self.bytes,
        }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.inner.secrets.len())
            .field("max_body_size", &self.inner.max_body_size)
            .field("tolerance", &self.inner.tolerance)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Verifier`]; start with [`Verifier::builder`].
pub struct VerifierBuilder {
    secrets: Vec<Secret>,
    max_body_size: usize,
    tolerance: Option<Duration>,
    clock: Arc<dyn Clock>,
}

impl VerifierBuilder {
    /// Also accepts deliveries signed with `secret`, for the time a secret is being rotated.
    ///
    /// Call it once per previous secret. Defaults to none.
    #[must_use]
    pub fn previous_secret(mut self, secret: Secret) -> Self {
        self.secrets.push(secret);
        self
    }

    /// The largest body accepted, in bytes, inclusive. Defaults to 2 MiB (2,097,152 bytes).
    #[must_use]
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// How far `created_at` may be from this host's clock, in either direction, bounds
    /// included. Defaults to 5 minutes.
    ///
    /// Freshness limits replays of a captured delivery to this window; it does not stop a
    /// replay inside it (use an idempotency guard keyed by the event id for that).
    #[must_use]
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = Some(tolerance);
        self
    }

    /// Turns the freshness check off: any `created_at` is accepted. Defaults to on.
    #[must_use]
    pub fn without_freshness_check(mut self) -> Self {
        self.tolerance = None;
        self
    }

    /// Reads the current time from `clock` instead of the system clock (for tests).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The verifier.
    #[must_use]
    pub fn build(self) -> Verifier {
        Verifier {
            inner: Arc::new(Config {
                secrets: self.secrets,
                max_body_size: self.max_body_size,
                tolerance: self.tolerance,
                clock: self.clock,
            }),
        }
    }
}

impl fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("secrets", &self.secrets.len())
            .field("max_body_size", &self.max_body_size)
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

/// A delivery's body, collected chunk by chunk within the verifier's limit, for adapters that
/// read a body as a stream ([`Verifier::body_buffer`]).
///
/// A body that arrives as one chunk (the usual case for a small delivery) is kept as it is,
/// without a copy; later chunks are gathered into one buffer, sized from the declared length.
/// A chunk that would take the body past the limit is refused before it is stored, so memory
/// never grows past the limit.
///
/// # Example
///
/// ```
/// use airmy_verify::{Bytes, Error, Secret, Verifier};
///
/// let verifier = Verifier::builder(Secret::new("whsec_test")?).max_body_size(8).build();
/// let mut body = verifier.body_buffer(None);
/// body.push(Bytes::from_static(b"{\"ab\""))?;
/// body.push(Bytes::from_static(b":1}"))?;
/// assert_eq!(body.len(), 8);
/// assert!(matches!(body.push(Bytes::from_static(b" ")), Err(Error::BodyTooLarge { limit: 8 })));
/// assert_eq!(body.finish(), Bytes::from_static(b"{\"ab\":1}"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BodyBuffer {
    first: Option<Bytes>,
    rest: BytesMut,
    len: usize,
    limit: usize,
    capacity: usize,
}

impl BodyBuffer {
    /// Appends the next chunk of the body.
    ///
    /// # Errors
    ///
    /// [`Error::BodyTooLarge`] when the chunk would take the body past the limit; the chunk is
    /// not stored.
    pub fn push(&mut self, chunk: Bytes) -> Result<(), Error> {
        let len = self
            .len
            .checked_add(chunk.len())
            .filter(|&len| len <= self.limit)
            .ok_or_else(|| self.too_large())?;
        self.len = len;
        if chunk.is_empty() {
            return Ok(());
        }
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(chunk),
            None => self.rest.extend_from_slice(&chunk),
            Some(first) => {
                self.rest.reserve(self.capacity.clamp(len, self.limit));
                self.rest.extend_from_slice(&first);
                self.rest.extend_from_slice(&chunk);
            }
        }
        Ok(())
    }

    /// The error for this body being over the limit ([`Error::BodyTooLarge`]), for an adapter
    /// whose own reader noticed it first.
    #[must_use]
    pub fn too_large(&self) -> Error {
        Error::BodyTooLarge { limit: self.limit }
    }

    /// The number of bytes received so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing (or only empty chunks) arrived so far.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole body.
    #[must_use]
    pub fn finish(self) -> Bytes {
        self.first.unwrap_or_else(|| self.rest.freeze())
    }
}

/// A delivery whose size, signature, envelope and freshness were checked, with its raw bytes.
///
/// Holds the body as [`Bytes`] (the same allocation that was verified), so it can be queued
/// and parsed later with [`VerifiedPayload::parse`].
#[derive(Clone)]
pub struct VerifiedPayload {
    bytes: Bytes,
    id: String,
    event_type: String,
    created_at: OffsetDateTime,
}

impl VerifiedPayload {
    /// The event id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The event type, such as `run.completed`.
    #[must_use]
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The signed creation time.
    #[must_use]
    pub fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }

    /// The verified body, as received.
    #[must_use]
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The verified body, as received.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Parses the verified body into a typed envelope. Freshness is not checked again: it
    /// was checked when the payload was verified.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEnvelope`] when a documented event's `data` is not an object, and
    /// [`Error::UnexpectedEventType`] when `T` is another event type.
    pub fn parse<T: Payload>(&self) -> Result<Envelope<T>, Error> {
        Parsed::<Event>::from_slice(&self.bytes)?
            .into_envelope()
            .into_typed()
    }
}

impl fmt::Debug for VerifiedPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedPayload")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("created_at", &self.created_at)
            .field("len", &self.bytes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(limit: usize) -> Verifier {
        Verifier::builder(Secret::new("whsec_test").expect("secret"))
            .max_body_size(limit)
            .build()
    }

    #[test]
    fn body_of_one_chunk_is_kept_without_a_copy() {
        let chunk = Bytes::from(vec![7u8; 1024]);
        let mut body = verifier(2048).body_buffer(Some(1024));
        body.push(chunk.clone()).expect("within the limit");
        let out = body.finish();
        assert_eq!(out.as_ptr(), chunk.as_ptr());
        assert_eq!(out, chunk);
    }

    #[test]
    fn chunks_are_joined_in_order() {
        let mut body = verifier(64).body_buffer(None);
        for part in ["ab", "", "cde", "f", "", "ghij"] {
            body.push(Bytes::from(part)).expect("within the limit");
        }
        assert_eq!(body.len(), 10);
        assert_eq!(body.finish(), Bytes::from("abcdefghij"));
    }

    #[test]
    fn body_of_exactly_the_limit_is_accepted_and_one_more_byte_refused() {
        let mut body = verifier(4).body_buffer(Some(4));
        body.push(Bytes::from("ab")).expect("2 bytes");
        body.push(Bytes::from("cd"))
            .expect("4 bytes: the limit is inclusive");
        let err = body.push(Bytes::from("e")).expect_err("5 bytes");
        assert!(matches!(err, Error::BodyTooLarge { limit: 4 }));
        assert_eq!(body.len(), 4, "the refused chunk is not stored");
        assert_eq!(body.finish(), Bytes::from("abcd"));
    }

    #[test]
    fn first_chunk_over_the_limit_is_refused() {
        let mut body = verifier(3).body_buffer(None);
        assert!(body.push(Bytes::from("abcd")).is_err());
        assert!(body.is_empty());
        assert_eq!(body.finish(), Bytes::new());
    }

    #[test]
    fn huge_declared_length_never_reserves_past_the_limit() {
        let mut body = verifier(16).body_buffer(Some(u64::MAX));
        body.push(Bytes::from("ab")).expect("fits");
        body.push(Bytes::from("cd")).expect("fits");
        assert!(
            body.rest.capacity() <= 64,
            "reserved {}",
            body.rest.capacity()
        );
        assert_eq!(body.finish(), Bytes::from("abcd"));
    }

    #[test]
    fn empty_body_is_empty_bytes() {
        let body = verifier(16).body_buffer(Some(0));
        assert!(body.is_empty());
        assert_eq!(body.finish(), Bytes::new());
    }
}
