//! The inbox's errors: [`InboxError`] for what an inbox could not do, [`OpenError`] for a
//! backend that could not be opened or connected. Each has a kind to match on, keeps its
//! cause (`source()`), and never shows a password or a secret in `Display` or `Debug`: URLs
//! are shown with their password replaced, and a driver's error is kept as the cause only
//! where its text holds no credentials.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use airmy_verify::Answer;
use airmy_verify::observe::Outcome;
use bytes::Bytes;

/// A cause kept by an error: shared, so that one failure of a batch can be answered to each
/// of its deliveries.
type Cause = Arc<dyn StdError + Send + Sync + 'static>;

/// What kind of failure an [`InboxError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The inbox holds as many unfinished entries as it may, or its disk is full: the
    /// delivery was not stored (adapters answer 503, AIRMY retries).
    Full,
    /// The inbox could not be reached or written (adapters answer 503).
    Unavailable,
    /// No entry with this id (or none in a state the operation applies to).
    NotFound,
    /// The entry with this id is being processed right now (replay refuses it: replay it once
    /// it is done or dead).
    Busy,
    /// The request cannot be answered as asked (a listing's cursor that this backend did not
    /// write).
    Invalid,
}

/// Why an inbox could not do what was asked: a [`kind`](Self::kind) to match on, a message,
/// and the driver's error as its [`source`](StdError::source) where there is one.
///
/// ```
/// use airmy_verify_inbox::{ErrorKind, InboxError};
///
/// let err = InboxError::not_found("evt_1");
/// assert_eq!(err.kind(), ErrorKind::NotFound);
/// assert_eq!(err.to_string(), "no such entry: evt_1");
/// ```
#[derive(Clone)]
pub struct InboxError {
    kind: ErrorKind,
    message: String,
    source: Option<Cause>,
}

impl InboxError {
    /// An error of `kind` saying `message` (for a backend of your own).
    #[must_use]
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// This error, caused by `source` (kept for [`source`](StdError::source); its `Display`
    /// must not show a credential).
    #[must_use]
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The inbox is full: `why`.
    #[must_use]
    pub fn full(why: impl Into<String>) -> Self {
        Self::new(ErrorKind::Full, why)
    }

    /// The inbox cannot be reached or written: `why`.
    #[must_use]
    pub fn unavailable(why: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, why)
    }

    /// No entry with the id `id`.
    #[must_use]
    pub fn not_found(id: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, id)
    }

    /// The entry `id` is being processed.
    #[must_use]
    pub fn busy(id: impl Into<String>) -> Self {
        Self::new(ErrorKind::Busy, id)
    }

    /// The request cannot be answered as asked: `why`.
    #[must_use]
    pub fn invalid(why: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, why)
    }

    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The answer adapters give for a delivery that could not be accepted: 503
    /// `{"error":"inbox_unavailable"}`, outcome `rejected` (AIRMY retries). The same for every
    /// kind: the reason is logged, never sent.
    pub fn answer(&self) -> Answer {
        Answer::new(
            503,
            Bytes::from_static(br#"{"error":"inbox_unavailable"}"#),
            Some(Outcome::Rejected),
        )
    }
}

impl fmt::Display for InboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = &self.message;
        match self.kind {
            ErrorKind::Full => write!(f, "the inbox is full: {why}"),
            ErrorKind::Unavailable => write!(f, "the inbox is unavailable: {why}"),
            ErrorKind::NotFound => write!(f, "no such entry: {why}"),
            ErrorKind::Busy => write!(
                f,
                "entry {why} is being processed right now: replay it once it is done or dead"
            ),
            ErrorKind::Invalid => write!(f, "invalid request: {why}"),
        }
    }
}

impl fmt::Debug for InboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(ToString::to_string))
            .finish()
    }
}

impl StdError for InboxError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Why a backend could not be opened or connected: which part failed, as far as the driver
/// tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpenErrorKind {
    /// What was given is not usable: not a URL of this backend, an option out of range, a
    /// schema name that is not a plain identifier, a database that does not exist.
    Invalid,
    /// Nothing listens at the address (connection refused, host not found).
    Refused,
    /// The server refused the credentials.
    Authentication,
    /// The TLS handshake or the certificates failed.
    Tls,
    /// The server did not answer in time.
    Timeout,
    /// The store holds a schema this version cannot use: a newer version, or another
    /// program's.
    Schema,
    /// Anything else: the file could not be opened, the server failed the set-up.
    Unavailable,
}

impl OpenErrorKind {
    /// The kind's name, as in logs: `invalid`, `refused`, `authentication`, `tls`, `timeout`,
    /// `schema` or `unavailable`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Refused => "refused",
            Self::Authentication => "authentication",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::Schema => "schema",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Why a backend could not be opened or connected ([`SqliteBackend::open`](crate::SqliteBackend),
/// `RedisBackend::connect`, `PgBackend::connect`, [`InboxUrl`](crate::InboxUrl)): a
/// [`kind`](Self::kind) to match on, a message naming what was opened (a URL with its password
/// replaced), and the driver's error as its [`source`](StdError::source).
///
/// ```
/// use airmy_verify_inbox::{InboxUrl, OpenErrorKind};
///
/// let err = "mysql://db".parse::<InboxUrl>().unwrap_err();
/// assert_eq!(err.kind(), OpenErrorKind::Invalid);
/// ```
#[derive(Clone)]
pub struct OpenError {
    kind: OpenErrorKind,
    message: String,
    source: Option<Cause>,
}

impl OpenError {
    /// An error of `kind` saying `message` (which must not hold a password).
    #[must_use]
    pub fn new(kind: OpenErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// This error, caused by `source` (whose `Display` must not show a credential).
    #[must_use]
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// This error, its message preceded by `what` (`cannot use redis://…: `).
    #[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
    #[must_use]
    pub(crate) fn context(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// What failed.
    #[must_use]
    pub fn kind(&self) -> OpenErrorKind {
        self.kind
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(ToString::to_string))
            .finish()
    }
}

impl StdError for OpenError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_kind_and_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = InboxError::unavailable("Redis: refused").with_source(io);
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            Some("refused")
        );
        let copy = err.clone();
        assert!(copy.source().is_some());
        assert!(format!("{err:?}").contains("Unavailable"));
        let open = OpenError::new(OpenErrorKind::Timeout, "cannot use redis://:***@h/")
            .with_source(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(open.kind().as_str(), "timeout");
        assert!(open.source().is_some());
    }
}
