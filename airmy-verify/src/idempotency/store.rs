//! What a store is: the [`IdempotencyStore`] trait, its answers ([`Claim`], [`Commit`]) and
//! its error ([`StoreError`]). See the [module docs](super) for how the guard uses it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future returned by [`IdempotencyStore`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The longest lease or retention a store is asked for: 100 years. Longer durations (up to
/// `Duration::MAX`) are clamped to it, so every store treats them alike, as "never expires".
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What [`IdempotencyStore::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The id was free (or already claimed with the caller's own token) and is now claimed
    /// with the caller's token.
    Claimed,
    /// Another delivery holds an unexpired claim on the id.
    InFlight,
    /// The id was committed: the event was processed.
    Done,
}

/// What [`IdempotencyStore::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The id is committed: the caller's claim held, or had expired with nobody else's in its
    /// place.
    Committed,
    /// Another delivery claimed or committed the id after the caller's claim expired; the
    /// commit was not recorded (that delivery's outcome decides).
    Lost,
}

/// Where claims and commits are kept. Implementations must make each method atomic: of two
/// concurrent claims of a free id, exactly one gets [`Claim::Claimed`]. Durations are at most
/// [`MAX_DURATION`].
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `id` with `token` for `lease`, unless it is done or claimed with another token.
    fn claim<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, Claim>;

    /// Extends `token`'s claim of `id` to `lease` from now; `false` when the claim is no longer
    /// `token`'s.
    fn extend<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, bool>;

    /// Marks `id` done for `retention`, unless another token claimed or committed it
    /// ([`Commit::Lost`]).
    fn commit<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        retention: Duration,
    ) -> StoreFuture<'a, Commit>;

    /// Frees `id`, if `token` still holds its claim (another's claim is never released).
    fn release<'a>(&'a self, id: &'a str, token: &'a str) -> StoreFuture<'a, ()>;
}

/// Why a store could not answer, for a caller to match on ([`StoreError::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store could not be reached or dropped the connection (the default for a failure
    /// that is none of the others).
    Unavailable,
    /// The store did not answer in time.
    Timeout,
    /// Nothing listens where the store should be: the connection was refused.
    Refused,
    /// The store refused the credentials, or the user lacks a permission.
    Authentication,
    /// The TLS handshake failed: an untrusted or mismatched certificate, or a TLS port spoken
    /// to in plain text.
    Tls,
    /// The store's settings are invalid: a URL that does not parse, a certificate that is not
    /// PEM, a `rediss://` URL without TLS support.
    Invalid,
    /// The store is full (the memory store, of claims in flight).
    Full,
    /// The store answered something unexpected.
    Other,
}

impl StoreErrorKind {
    /// A short lowercase name for logs: `unavailable`, `timeout`, `refused`,
    /// `authentication`, `tls`, `invalid`, `full` or `other`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Refused => "refused",
            Self::Authentication => "authentication",
            Self::Tls => "tls",
            Self::Invalid => "invalid",
            Self::Full => "full",
            Self::Other => "other",
        }
    }
}

/// A boxed cause of a [`StoreError`].
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store that could not answer: what kind of failure ([`StoreError::kind`]), a message, and
/// the driver's error as its [`source`](std::error::Error::source).
///
/// Neither `Display` nor `Debug` shows a password: a store puts URLs in its messages through
/// [`redact_url`](crate::text::redact_url), and `Debug` shows the cause by its `Display`.
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    source: Option<Cause>,
}

impl StoreError {
    /// A store error of kind [`StoreErrorKind::Unavailable`] with a message (no event data or
    /// secrets in it), for a store of your own; set the kind with [`StoreError::with_kind`] and
    /// the cause with [`StoreError::with_source`].
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            kind: StoreErrorKind::Unavailable,
            message: message.into(),
            source: None,
        }
    }

    /// The same error, of `kind`.
    #[must_use]
    pub fn with_kind(mut self, kind: StoreErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// The same error, caused by `source` (kept as its [`source`](std::error::Error::source)).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Cause>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "idempotency store failed ({}): {}",
            self.kind.as_str(),
            self.message
        )
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(ToString::to_string))
            .finish()
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
