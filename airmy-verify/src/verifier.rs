//! The [`Verifier`]: every rule a delivery must pass, in one place.
//!
//! A delivery is accepted when, in this order:
//! 1. it carries exactly one `X-AIRMY-Signature` of 64 hex digits (401);
//! 2. its body is at most [`max_body_size`](VerifierBuilder::max_body_size) bytes, whether
//!    declared by `Content-Length` or counted as it arrives (413);
//! 3. that signature is the HMAC-SHA256 of the raw body under one of the configured secrets
//!    (401); every secret is tried, so timing does not tell which one matched;
//! 4. the body is a JSON envelope `{id, type, created_at, data}` (400 for a body that is not
//!    JSON, truncated or nested too deeply, 422 for JSON that is not an envelope);
//! 5. its signed `created_at` is within the [`tolerance`](VerifierBuilder::tolerance) of this
//!    host's clock, in either direction, bounds included (401).
//!
//! There is one path through these rules, the [`Intake`]: adapters open one with the
//! request's headers ([`Verifier::intake`]), [`push`](Intake::push) each chunk of the body as
//! it arrives and [`finish`](Intake::finish) it into a [`Verified`] delivery.
//! [`Verifier::verify`] does the same for a body you already hold (tests, queues). The same
//! delivery therefore gets the same answer on every path, however its body was split.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use airmy_verify::{Event, Secret, Verifier};
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
//! // A body you hold:
//! let verified = verifier.verify(&header, body.clone())?;
//! assert_eq!(verified.event_type(), "test");
//!
//! // A body that streams in, the way the adapters read it:
//! let mut intake = verifier.intake([header.as_bytes()], Some(body.len() as u64))?;
//! for chunk in body.as_bytes().chunks(7) {
//!     intake.push(airmy_verify::Bytes::copy_from_slice(chunk))?;
//! }
//! let mut verified = intake.finish()?;
//! let envelope = verified.take_event::<Event>()?;
//! assert_eq!(envelope.id, "evt_1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use hmac::Mac;
use time::OffsetDateTime;

use crate::error::Error;
use crate::event::{Envelope, Event, EventData, Parsed};
use crate::secret::{Secret, Secrets};
use crate::signature::Signature;

/// The default body limit: 2 MiB (2,097,152 bytes), inclusive.
pub const DEFAULT_MAX_BODY_SIZE: usize = 2 * 1024 * 1024;

/// How long an event id must be remembered to recognise every redelivery of it, for a
/// freshness `tolerance`: twice the tolerance plus a minute (saturating, at most
/// [`MAX_DURATION`](crate::idempotency::MAX_DURATION)). The one rule, used by the idempotency
/// guard for how long it keeps committed ids, and by anything else that deduplicates by id.
///
/// Why: a delivery is accepted only while its signed `created_at` is within `tolerance` of
/// this receiver's clock, in either direction, so every accepted delivery of one event arrives
/// within a span of twice the tolerance; the extra minute covers the time between the check
/// and the record. An older redelivery is refused as stale before deduplication is asked.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use airmy_verify::{DEFAULT_TOLERANCE, dedupe_window};
///
/// assert_eq!(dedupe_window(DEFAULT_TOLERANCE), Duration::from_secs(660));
/// ```
#[must_use]
pub fn dedupe_window(tolerance: Duration) -> Duration {
    tolerance
        .saturating_mul(2)
        .saturating_add(Duration::from_secs(60))
        .min(crate::idempotency::MAX_DURATION)
}

/// The default freshness tolerance: 5 minutes, in both directions.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The default time allowed to read a body once the request's headers arrived: 5 seconds.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a [`Verifier`] reads the current time from.
///
/// The default is [`SystemClock`]; tests use a fixed clock (`testing::FixedClock`, feature
/// `testing`).
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
    /// The current secret first; replaced as a whole by [`Verifier::set_secrets`].
    secrets: ArcSwap<Vec<Secret>>,
    max_body_size: usize,
    tolerance: Option<Duration>,
    body_timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl Verifier {
    /// A verifier for one secret with the defaults: a 2 MiB body limit, a 5 minute freshness
    /// tolerance on the system clock and 5 seconds to read a body.
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
            body_timeout: DEFAULT_BODY_TIMEOUT,
            clock: Arc::new(SystemClock),
        }
    }

    /// Replaces the secrets this verifier (and every clone of it) accepts, atomically, while
    /// requests are in flight: a delivery is checked against the secrets in place when its
    /// body is complete, all of the old ones or all of the new ones, never a mix. The secrets
    /// were keyed when they were built, so requests never pay for a change; they pay one
    /// atomic load each, change or not.
    ///
    /// # Example
    ///
    /// ```
    /// use airmy_verify::secret::Secrets;
    /// use airmy_verify::{Secret, Verifier};
    ///
    /// let verifier = Verifier::builder(Secret::new("whsec_old")?).without_freshness_check().build();
    /// let body = r#"{"id":"evt_1","type":"test","created_at":"2026-03-22T14:30:00Z","data":{}}"#;
    /// assert!(verifier.verify(airmy_verify::sign(body.as_bytes(), "whsec_new"), body).is_err());
    ///
    /// // The rotation: the new secret is current, the old one still accepted for a while.
    /// verifier.set_secrets(Secrets::parse("whsec_new\nwhsec_old")?);
    /// assert!(verifier.verify(airmy_verify::sign(body.as_bytes(), "whsec_new"), body).is_ok());
    /// assert!(verifier.verify(airmy_verify::sign(body.as_bytes(), "whsec_old"), body).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_secrets(&self, secrets: Secrets) {
        self.inner.secrets.store(Arc::new(secrets.into_list()));
    }

    /// How many secrets are accepted now: the current one and the previous ones.
    #[must_use]
    pub fn secret_count(&self) -> usize {
        self.inner.secrets.load().len()
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

    /// How long an event id must be remembered to recognise every redelivery this verifier
    /// accepts: [`dedupe_window`] of its tolerance, or `None` when freshness is not checked
    /// (then no redelivery is too old to be accepted, and there is no window).
    #[must_use]
    pub fn dedupe_window(&self) -> Option<Duration> {
        self.inner.tolerance.map(dedupe_window)
    }

    /// How long an adapter waits for a body to arrive in full before answering 408
    /// ([`Error::BodyTimeout`]).
    #[must_use]
    pub fn body_timeout(&self) -> Duration {
        self.inner.body_timeout
    }

    /// Opens the verification of one delivery with what its request's headers say, before any
    /// of the body is read: every value the request carried for `X-AIRMY-Signature`, then the
    /// declared `Content-Length`, if any (a value that is not a number counts as none: the
    /// body is counted as it arrives anyway).
    ///
    /// # Errors
    ///
    /// [`Error::MissingSignature`], [`Error::MalformedSignature`], or [`Error::BodyTooLarge`]
    /// for a declared length over the limit.
    pub fn intake<I, V>(
        &self,
        signature_values: I,
        content_length: Option<u64>,
    ) -> Result<Intake, Error>
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let signature = Signature::from_header_values(signature_values)?;
        if content_length.is_some_and(|len| len > self.inner.max_body_size as u64) {
            return Err(self.body_too_large());
        }
        Ok(Intake {
            verifier: self.clone(),
            signature,
            first: None,
            rest: Vec::new(),
            tail: BytesMut::new(),
            len: 0,
        })
    }

    /// Verifies a delivery whose body you already hold: the `X-AIRMY-Signature` value and the
    /// raw body, exactly as received. The same rules, in the same order, as an [`Intake`].
    ///
    /// # Errors
    ///
    /// Signature, size, JSON, envelope and freshness errors in the order of the
    /// [module docs](self).
    pub fn verify(
        &self,
        signature: impl AsRef<[u8]>,
        body: impl Into<Bytes>,
    ) -> Result<Verified, Error> {
        let body = body.into();
        let mut intake = self.intake([signature], Some(body.len() as u64))?;
        intake.push(body)?;
        intake.finish()
    }

    fn body_too_large(&self) -> Error {
        Error::BodyTooLarge {
            limit: self.inner.max_body_size,
        }
    }

    /// Whether `signature` is the HMAC of the body (given as its chunks) under any secret.
    /// Every secret is tried, so the time taken does not tell which one matched.
    fn signature_matches(&self, signature: &Signature, chunks: &[&[u8]]) -> bool {
        let mut matched = false;
        for secret in self.inner.secrets.load().iter() {
            let mut mac = secret.mac();
            for chunk in chunks {
                mac.update(chunk);
            }
            matched |= mac.verify_slice(signature.as_bytes()).is_ok();
        }
        matched
    }

    /// Checks `created_at` against the clock and the tolerance (bounds included).
    fn check_freshness(&self, event_id: &str, created_at: OffsetDateTime) -> Result<(), Error> {
        let age = self.inner.clock.now() - created_at;
        // The lag of every delivery whose signature matched, stale ones included.
        #[cfg(feature = "metrics")]
        crate::observe::metrics::lag(age.as_seconds_f64());
        let Some(tolerance) = self.inner.tolerance else {
            return Ok(());
        };
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
}

/// A `Content-Length` header value as a number: ASCII digits only, surrounding whitespace
/// allowed, anything else `None` (the body is then counted as it arrives). Both adapters read
/// the header through this, for [`Verifier::intake`].
#[must_use]
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Digits only, so this fails only on overflow, which is over any limit.
    std::str::from_utf8(digits)
        .ok()?
        .parse()
        .ok()
        .or(Some(u64::MAX))
}

/// One delivery being verified: opened from its headers with [`Verifier::intake`], fed the
/// body chunk by chunk with [`push`](Self::push), and checked with [`finish`](Self::finish).
///
/// The first chunk, and later ones of at least [`SMALL_CHUNK`] bytes, are kept as they
/// arrive, without a copy (a body that arrives in one chunk is never copied); later smaller
/// ones are copied into a shared buffer, so a body sent in tiny chunks (each of which may pin
/// a larger read buffer of the server's) costs about its own size too. The chunks are hashed
/// only when the body is complete, and joined into one buffer only once the signature matched,
/// so a forged body never costs more than about its own bytes. A chunk that would take the
/// body past the limit is refused before it is stored. See the [module docs](self).
pub struct Intake {
    verifier: Verifier,
    signature: Signature,
    first: Option<Bytes>,
    rest: Vec<Bytes>,
    /// Small chunks, copied together; moved to `rest` when it grows large.
    tail: BytesMut,
    len: usize,
}

/// Chunks smaller than this (8 KiB) are copied together rather than kept one by one.
pub const SMALL_CHUNK: usize = 8 * 1024;

/// Copied small chunks move to their own buffer once they add up to this (64 KiB).
const TAIL_FLUSH: usize = 64 * 1024;

impl Intake {
    /// Adds the next chunk of the body.
    ///
    /// # Errors
    ///
    /// [`Error::BodyTooLarge`] when the chunk would take the body past the limit; the chunk is
    /// not stored.
    pub fn push(&mut self, chunk: Bytes) -> Result<(), Error> {
        let len = self
            .len
            .checked_add(chunk.len())
            .filter(|&len| len <= self.verifier.inner.max_body_size)
            .ok_or_else(|| self.verifier.body_too_large())?;
        self.len = len;
        if chunk.is_empty() {
            return Ok(());
        }
        if self.first.is_none() {
            // The usual case: the whole body in one chunk, kept as it is (at most this one
            // chunk pins a read buffer of the server's).
            self.first = Some(chunk);
        } else if chunk.len() < SMALL_CHUNK {
            self.tail.extend_from_slice(&chunk);
            if self.tail.len() >= TAIL_FLUSH {
                self.rest.push(self.tail.split().freeze());
            }
        } else {
            if !self.tail.is_empty() {
                self.rest.push(self.tail.split().freeze());
            }
            self.rest.push(chunk);
        }
        Ok(())
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

    /// Checks the complete body: signature, JSON envelope, freshness. Logs a `tracing` event
    /// at debug level (target `airmy_verify`) with the event id and type of each verified
    /// delivery. With the `metrics` feature, records the body size, the time this check took
    /// and, once verified, the delivery lag ([`observe`](crate::observe)).
    ///
    /// # Errors
    ///
    /// [`Error::SignatureMismatch`], [`Error::InvalidJson`], [`Error::InvalidEnvelope`],
    /// [`Error::Stale`] or [`Error::FromFuture`], in that order.
    pub fn finish(self) -> Result<Verified, Error> {
        #[cfg(feature = "metrics")]
        let (started, len) = (std::time::Instant::now(), self.len);
        let checked = self.check();
        #[cfg(feature = "metrics")]
        crate::observe::metrics::verification(len, started.elapsed().as_secs_f64());
        checked
    }

    fn check(self) -> Result<Verified, Error> {
        let Self {
            verifier,
            signature,
            first,
            mut rest,
            tail,
            len,
        } = self;
        if !tail.is_empty() {
            rest.push(tail.freeze());
        }
        let first = first.unwrap_or_default();
        let bytes = if rest.is_empty() {
            if !verifier.signature_matches(&signature, &[&first]) {
                return Err(Error::SignatureMismatch);
            }
            first
        } else {
            let chunks: Vec<&[u8]> = std::iter::once(&first)
                .chain(&rest)
                .map(Bytes::as_ref)
                .collect();
            if !verifier.signature_matches(&signature, &chunks) {
                return Err(Error::SignatureMismatch);
            }
            let mut joined = BytesMut::with_capacity(len);
            for chunk in chunks {
                joined.extend_from_slice(chunk);
            }
            drop((first, rest));
            joined.freeze()
        };
        let parsed = Parsed::<Event>::from_slice(&bytes)?;
        verifier.check_freshness(&parsed.id, parsed.created_at)?;
        let envelope = parsed.into_envelope();
        tracing::debug!(
            target: "airmy_verify",
            event_id = ?envelope.id,
            event_type = envelope.event_type(),
            "AIRMY webhook delivery verified"
        );
        Ok(Verified::new(bytes, envelope))
    }
}

impl fmt::Debug for Intake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Intake")
            .field("len", &self.len)
            .field(
                "chunks",
                &(usize::from(self.first.is_some()) + self.rest.len()),
            )
            .finish_non_exhaustive()
    }
}

/// A delivery whose signature, size, envelope and freshness were checked: its raw bytes (the
/// very allocation that was verified, not a copy), its `id`, `type` and `created_at`, and
/// its typed event on demand.
///
/// The envelope parsed during verification is handed over by the first
/// [`take_event`](Self::take_event), without a second parse; later calls (and clones, which
/// share the bytes but not the parsed envelope) parse the verified bytes again. Freshness is
/// never checked again: it was checked when the delivery was verified.
pub struct Verified {
    bytes: Bytes,
    id: String,
    event_type: Cow<'static, str>,
    created_at: OffsetDateTime,
    parsed: Option<Envelope<Event>>,
}

impl Verified {
    fn new(bytes: Bytes, envelope: Envelope<Event>) -> Self {
        let event_type = match envelope.data.known_type() {
            Some(known) => Cow::Borrowed(known),
            None => Cow::Owned(envelope.event_type().to_owned()),
        };
        Self {
            bytes,
            id: envelope.id.clone(),
            event_type,
            created_at: envelope.created_at,
            parsed: Some(envelope),
        }
    }

    /// The event type when it is one of the documented ones, as its constant.
    pub(crate) fn known_type(&self) -> Option<&'static str> {
        match self.event_type {
            Cow::Borrowed(known) => Some(known),
            Cow::Owned(_) => None,
        }
    }

    /// The event id; the same for every retry of one delivery.
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

    /// The typed envelope: [`Event`] for any type, or a data struct such as
    /// [`RunCompleted`](crate::event::RunCompleted) for one type only.
    ///
    /// # Errors
    ///
    /// [`Error::UnexpectedEventType`] (HTTP 422) when `T` is one event type and the delivery
    /// is another.
    pub fn take_event<T: EventData>(&mut self) -> Result<Envelope<T>, Error> {
        let envelope = match self.parsed.take() {
            Some(envelope) => envelope,
            // The bytes passed the same parse once, so this cannot fail unless the bytes were
            // swapped underneath, which `Bytes` does not allow.
            None => Parsed::<Event>::from_slice(&self.bytes)?.into_envelope(),
        };
        envelope.into_typed()
    }
}

impl Clone for Verified {
    /// The same bytes and metadata (no copy of the body); the clone parses its event again
    /// when asked for it.
    fn clone(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            id: self.id.clone(),
            event_type: self.event_type.clone(),
            created_at: self.created_at,
            parsed: None,
        }
    }
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("created_at", &self.created_at)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.secret_count())
            .field("max_body_size", &self.inner.max_body_size)
            .field("tolerance", &self.inner.tolerance)
            .field("body_timeout", &self.inner.body_timeout)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Verifier`]; start with [`Verifier::builder`].
pub struct VerifierBuilder {
    secrets: Vec<Secret>,
    max_body_size: usize,
    tolerance: Option<Duration>,
    body_timeout: Duration,
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

    /// How long the adapters wait for a body, from the moment its request's headers were
    /// read, before they answer 408 `{"error":"body_timeout"}` and close the connection.
    /// Defaults to 5 seconds: AIRMY itself gives up on a delivery after 10.
    #[must_use]
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
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
                secrets: ArcSwap::from_pointee(self.secrets),
                max_body_size: self.max_body_size,
                tolerance: self.tolerance,
                body_timeout: self.body_timeout,
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
            .field("body_timeout", &self.body_timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";

    fn verifier(limit: usize) -> Verifier {
        Verifier::builder(Secret::new(SECRET).expect("secret"))
            .max_body_size(limit)
            .without_freshness_check()
            .build()
    }

    fn body() -> &'static [u8] {
        br#"{"id":"evt_1","type":"test","created_at":"2026-03-22T14:30:00Z","data":{}}"#
    }

    fn intake(v: &Verifier, body: &[u8]) -> Intake {
        v.intake([crate::sign(body, SECRET)], None)
            .expect("headers")
    }

    #[test]
    fn body_of_one_chunk_is_kept_without_a_copy() {
        let chunk = Bytes::from(body().to_vec());
        let v = verifier(2048);
        let mut intake = intake(&v, body());
        intake.push(chunk.clone()).expect("within the limit");
        let verified = intake.finish().expect("verified");
        assert_eq!(verified.bytes().as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn tiny_chunks_are_copied_together_not_kept_one_by_one() {
        let v = verifier(1024);
        let mut intake = intake(&v, body());
        for byte in body() {
            intake.push(Bytes::copy_from_slice(&[*byte])).expect("fits");
        }
        assert!(intake.rest.is_empty(), "{} buffers", intake.rest.len());
        assert_eq!(intake.tail.len(), body().len() - 1);
        assert_eq!(intake.finish().expect("verified").bytes(), body());
    }

    #[test]
    fn small_and_large_chunks_keep_their_order() {
        let big = vec![b' '; SMALL_CHUNK];
        let mut body_bytes = br#"{"id":"evt_1","type":"test","#.to_vec();
        body_bytes.extend_from_slice(&big);
        body_bytes.extend_from_slice(br#""created_at":"2026-03-22T14:30:00Z","#);
        body_bytes.extend_from_slice(&big);
        body_bytes.extend_from_slice(br#""data":{}}"#);
        let v = verifier(1 << 20);
        let mut intake = intake(&v, &body_bytes);
        let mut at: usize = 0;
        for size in [3, 5, SMALL_CHUNK + 7, 1, 2, SMALL_CHUNK, usize::MAX] {
            let end = at.saturating_add(size).min(body_bytes.len());
            intake
                .push(Bytes::copy_from_slice(&body_bytes[at..end]))
                .expect("fits");
            at = end;
        }
        assert_eq!(intake.finish().expect("verified").bytes(), &body_bytes[..]);
    }

    #[test]
    fn chunks_are_joined_in_order() {
        let v = verifier(1024);
        let mut intake = intake(&v, body());
        for part in body().chunks(5) {
            intake
                .push(Bytes::copy_from_slice(part))
                .expect("within the limit");
            intake
                .push(Bytes::new())
                .expect("empty chunks count nothing");
        }
        assert_eq!(intake.len(), body().len());
        assert_eq!(intake.finish().expect("verified").bytes(), body());
    }

    #[test]
    fn body_of_exactly_the_limit_is_accepted_and_one_more_byte_refused() {
        let v = verifier(body().len());
        let mut intake = intake(&v, body());
        intake
            .push(Bytes::from_static(body()))
            .expect("the limit is inclusive");
        let err = intake
            .push(Bytes::from_static(b" "))
            .expect_err("one byte more");
        assert!(matches!(err, Error::BodyTooLarge { .. }));
        assert_eq!(
            intake.len(),
            body().len(),
            "the refused chunk is not stored"
        );
        intake.finish().expect("the stored body still verifies");
    }

    #[test]
    fn declared_length_over_the_limit_is_refused_before_reading() {
        let v = verifier(10);
        let err = v
            .intake([crate::sign(b"x", SECRET)], Some(11))
            .expect_err("too large");
        assert_eq!(err, Error::BodyTooLarge { limit: 10 });
        assert!(
            v.intake([crate::sign(b"x", SECRET)], Some(u64::MAX))
                .is_err()
        );
        assert!(v.intake([crate::sign(b"x", SECRET)], Some(10)).is_ok());
    }

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b" 7 "), Some(7));
        assert_eq!(
            parse_content_length(b"99999999999999999999999"),
            Some(u64::MAX)
        );
        for bad in [&b""[..], b"-1", b"+1", b"1e3", b"0x10", b"12 3"] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn forged_chunks_are_never_joined() {
        let v = verifier(1024);
        let mut intake = v
            .intake([crate::sign(b"other", SECRET)], None)
            .expect("headers");
        for part in body().chunks(3) {
            intake.push(Bytes::copy_from_slice(part)).expect("fits");
        }
        assert_eq!(
            intake.finish().expect_err("forged"),
            Error::SignatureMismatch
        );
    }

    #[test]
    fn secrets_swapped_while_an_intake_is_open_apply_to_later_deliveries() {
        let v = verifier(1024);
        let mut open = intake(&v, body());
        let clone = v.clone();
        clone.set_secrets(Secrets::new(Secret::new("whsec_next").expect("secret")));
        assert_eq!(v.secret_count(), 1);
        open.push(Bytes::from_static(body())).expect("fits");
        assert_eq!(
            open.finish().expect_err("old secret gone"),
            Error::SignatureMismatch
        );
        v.verify(crate::sign(body(), "whsec_next"), body())
            .expect("the new secret, through the original verifier");
        v.set_secrets(
            Secrets::new(Secret::new("whsec_next").expect("secret"))
                .previous(Secret::new(SECRET).expect("secret")),
        );
        assert_eq!(v.secret_count(), 2);
        v.verify(crate::sign(body(), SECRET), body())
            .expect("listed again as previous");
    }

    #[test]
    fn take_event_hands_over_the_parse_once_then_parses_again() {
        let v = verifier(1024);
        let mut verified = v
            .verify(crate::sign(body(), SECRET), body())
            .expect("verified");
        let first = verified.take_event::<Event>().expect("event");
        let second = verified.take_event::<Event>().expect("event again");
        assert_eq!(first, second);
        assert_eq!(
            verified.clone().take_event::<Event>().expect("clone"),
            first
        );
        assert!(verified.take_event::<crate::event::RunCompleted>().is_err());
    }

    #[test]
    fn the_dedupe_window_is_twice_the_tolerance_plus_a_minute() {
        assert_eq!(dedupe_window(DEFAULT_TOLERANCE), Duration::from_secs(660));
        assert_eq!(dedupe_window(Duration::ZERO), Duration::from_secs(60));
        assert_eq!(
            dedupe_window(Duration::MAX),
            crate::idempotency::MAX_DURATION,
            "saturates, then capped"
        );
        let secret = || Secret::new("s").expect("s");
        assert_eq!(
            Verifier::new(secret()).dedupe_window(),
            Some(Duration::from_secs(660))
        );
        let off = Verifier::builder(secret())
            .without_freshness_check()
            .build();
        assert_eq!(off.dedupe_window(), None);
    }
}
