//! Extractors that hand a handler a verified AIRMY event, typed.
//!
//! - [`AirmyEvent`] (any event, as the [`Event`] enum) and `AirmyEvent<RunCompleted>` (one
//!   event type; any [`Payload`] works).
//! - [`VerifiedBytes`]: the raw verified payload, to queue it or parse it later.
//!
//! Behind an [`AirmyVerifyLayer`](crate::AirmyVerifyLayer) they take the delivery the layer
//! verified from the request extensions: nothing is hashed or parsed twice. Without the layer
//! they verify the request themselves with the verifier in the router state, found through an
//! [`AirmyVerifier`] (`FromRef`): a router whose state has none does not compile, and a
//! stateless router without the layer answers 500 and logs why. There is no way to get an event
//! from an unverified body.
//!
//! A typed extractor meeting another event type answers **422** with
//! `{"error":"unexpected_event_type"}`: the delivery is authentic but this route cannot process
//! it, and the 4xx shows in AIRMY's delivery history (it usually means the webhook is subscribed
//! to more types than the route handles). To decide in the handler instead, extract
//! `Result<AirmyEvent<T>, AirmyRejection>`.
//!
//! # Example: no layer, verifier in the state
//!
//! ```
//! use airmy_verify::{Secret, Verifier, event::RunCompleted};
//! use airmy_verify_axum::{AirmyEvent, AirmyVerifier};
//! use axum::{Router, http::StatusCode, routing::post};
//!
//! async fn on_run(AirmyEvent(run): AirmyEvent<RunCompleted>) -> StatusCode {
//!     println!("{} used {:?} tokens", run.id, run.data.tokens_used);
//!     StatusCode::OK
//! }
//!
//! # fn main() -> Result<(), airmy_verify::InvalidSecret> {
//! let verifier = Verifier::new(Secret::new("whsec_…")?);
//! let app: Router = Router::new()
//!     .route("/hooks/airmy/runs", post(on_run))
//!     .with_state(AirmyVerifier::new(verifier));
//! # Ok(())
//! # }
//! ```

use std::ops::Deref;

use airmy_verify::{Envelope, Event, Payload, Verified, VerifiedPayload, Verifier};
use axum_core::extract::{FromRef, FromRequest, Request};

use crate::layer::read_delivery;
use crate::rejection::AirmyRejection;

/// The router state an extractor takes its verifier from when no layer ran before it.
///
/// Put it in your state: as the whole state (`.with_state(AirmyVerifier::new(verifier))`), or as
/// a field of a `#[derive(FromRef)]` state struct. Routers with no state (`()`) get
/// `AirmyVerifier::none()`, for use behind an [`AirmyVerifyLayer`](crate::AirmyVerifyLayer);
/// a [`Verifier`] used as the whole state also works.
#[derive(Debug, Clone, Default)]
pub struct AirmyVerifier(Option<Verifier>);

impl AirmyVerifier {
    /// Extractors verify deliveries with `verifier` when no layer did.
    #[must_use]
    pub fn new(verifier: Verifier) -> Self {
        Self(Some(verifier))
    }

    /// No verifier: extractors rely on an [`AirmyVerifyLayer`](crate::AirmyVerifyLayer) and
    /// answer 500 where none ran.
    #[must_use]
    pub fn none() -> Self {
        Self(None)
    }

    fn verifier(&self) -> Result<&Verifier, AirmyRejection> {
        self.0.as_ref().ok_or(AirmyRejection::NotConfigured)
    }
}

impl From<Verifier> for AirmyVerifier {
    fn from(verifier: Verifier) -> Self {
        Self::new(verifier)
    }
}

impl FromRef<()> for AirmyVerifier {
    fn from_ref((): &()) -> Self {
        Self::none()
    }
}

impl FromRef<Verifier> for AirmyVerifier {
    fn from_ref(verifier: &Verifier) -> Self {
        Self::new(verifier.clone())
    }
}

/// A verified AIRMY event: `AirmyEvent` for any type ([`Event`]), `AirmyEvent<RunCompleted>`
/// for one. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct AirmyEvent<T = Event>(pub Envelope<T>);

impl<T> Deref for AirmyEvent<T> {
    type Target = Envelope<T>;

    fn deref(&self) -> &Envelope<T> {
        &self.0
    }
}

impl<S, T> FromRequest<S> for AirmyEvent<T>
where
    S: Send + Sync,
    T: Payload,
    AirmyVerifier: FromRef<S>,
{
    type Rejection = AirmyRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, AirmyRejection> {
        let (mut parts, body) = request.into_parts();
        let envelope = match parts.extensions.remove::<Verified>() {
            Some(verified) => verified.envelope,
            None => {
                let state = AirmyVerifier::from_ref(state);
                let verifier = state.verifier()?;
                let (signature, bytes) = read_delivery(verifier, &parts.headers, body).await?;
                verifier.verify_event::<Event>(&signature, &bytes)?
            }
        };
        Ok(Self(envelope.into_typed()?))
    }
}

/// The raw payload of a verified delivery (the same bytes, no copy), with its `id`, `type` and
/// `created_at`; [`VerifiedPayload::parse`] parses it later. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct VerifiedBytes(pub VerifiedPayload);

impl Deref for VerifiedBytes {
    type Target = VerifiedPayload;

    fn deref(&self) -> &VerifiedPayload {
        &self.0
    }
}

impl<S> FromRequest<S> for VerifiedBytes
where
    S: Send + Sync,
    AirmyVerifier: FromRef<S>,
{
    type Rejection = AirmyRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, AirmyRejection> {
        let (mut parts, body) = request.into_parts();
        if let Some(verified) = parts.extensions.remove::<Verified>() {
            return Ok(Self(verified.into_payload()));
        }
        let state = AirmyVerifier::from_ref(state);
        let verifier = state.verifier()?;
        let (signature, bytes) = read_delivery(verifier, &parts.headers, body).await?;
        Ok(Self(verifier.verify_payload(&signature, bytes)?))
    }
}
