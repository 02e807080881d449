//! [`AirmyVerifyLayer`]: the configuration that wraps services in [`AirmyVerify`].

use airmy_verify::Verifier;
use airmy_verify::idempotency::Idempotency;
use tower_layer::{Layer, Stack};

use crate::idempotency::AirmyIdempotencyLayer;
use crate::service::AirmyVerify;

/// Applies [`AirmyVerify`] to a service: every request is verified before the service sees
/// it. Configuration only; cheap to clone.
///
/// On an axum `Router`, mount it with `route_layer` on the webhook routes: `Router::layer`
/// also wraps the fallback, so every unknown path of the application would answer 401.
/// See the [crate docs](crate) for what is checked and answered.
#[derive(Debug, Clone)]
pub struct AirmyVerifyLayer {
    verifier: Verifier,
}

impl AirmyVerifyLayer {
    /// A layer checking deliveries with `verifier` (its secrets, body limit, tolerance and
    /// body timeout).
    #[must_use]
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }

    /// This layer followed by an [`AirmyIdempotencyLayer`] with `guard`: the one-line way to
    /// run handlers once per verified event id (see [`airmy_verify::idempotency`]).
    ///
    /// ```
    /// # use airmy_verify::{Secret, Verifier, idempotency::{Idempotency, MemoryStore}};
    /// # use airmy_verify_axum::AirmyVerifyLayer;
    /// # use axum::{Router, routing::post};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let verifier = Verifier::new(Secret::new("whsec_…")?);
    /// let guard = Idempotency::new(MemoryStore::new(100_000), &verifier);
    /// let app: Router = Router::new()
    ///     .route("/hooks/airmy", post(|| async { "ok" }))
    ///     .route_layer(AirmyVerifyLayer::new(verifier).idempotency(guard));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn idempotency(self, guard: Idempotency) -> Stack<AirmyIdempotencyLayer, Self> {
        Stack::new(AirmyIdempotencyLayer::new(guard), self)
    }
}

impl<S> Layer<S> for AirmyVerifyLayer {
    type Service = AirmyVerify<S>;

    fn layer(&self, inner: S) -> AirmyVerify<S> {
        AirmyVerify::new(inner, self.verifier.clone())
    }
}
