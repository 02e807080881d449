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

/// A store that could not answer: unreachable, timed out, or full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(String);

impl StoreError {
    /// A store error with a message (no event data or secrets in it).
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "idempotency store unavailable: {}", self.0)
    }
}

impl std::error::Error for StoreError {}
