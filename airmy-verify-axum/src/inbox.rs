//! The durable inbox and the handlers dispatcher as route services (feature `inbox`).
//!
//! - [`AirmyInbox`]: stores each verified delivery in an
//!   [`Inbox`] and answers at once: 200
//!   `{"status":"accepted","id":"…"}`, 200 `{"status":"duplicate","id":"…"}`, or 503
//!   `{"error":"inbox_unavailable"}` when it could not store it (AIRMY retries; never a 2xx
//!   for a delivery that is not stored). A worker handles the entries in the background.
//! - [`AirmyHandlers`]: runs [`Handlers`] synchronously, for an application without an
//!   inbox: 200 `{"status":"handled","id":"…"}`, or 500 `{"error":"handler_failed"}` (AIRMY
//!   retries).
//!
//! Both read the delivery the [`AirmyVerifyLayer`](crate::AirmyVerifyLayer) verified; without
//! it they answer 500 `{"error":"verifier_not_configured"}`.
//!
//! # Example
//!
//! ```
//! use airmy_verify::{Secret, Verifier};
//! use airmy_verify_axum::AirmyVerifyLayer;
//! use airmy_verify_axum::inbox::AirmyInbox;
//! use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions};
//! use axum::Router;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("axum-inbox-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let verifier = Verifier::new(Secret::new("whsec_…")?);
//! let inbox = Inbox::new(SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default())?);
//! let app: Router = Router::new()
//!     .route_service("/hooks/airmy", AirmyInbox::new(inbox.clone()))
//!     .route_layer(AirmyVerifyLayer::new(verifier)); // merge it into your application
//! // and in the background: inbox.worker(handlers).run(shutdown)
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use airmy_verify::{Answer, Error, Verified};
use airmy_verify_inbox::{Handlers, Inbox};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower_service::Service;

use crate::rejection::{answer_response, error_response};

type Answering = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

/// Stores verified deliveries in an inbox; see the [module docs](self).
#[derive(Clone)]
pub struct AirmyInbox {
    inbox: Inbox,
}

impl AirmyInbox {
    /// A service storing deliveries in `inbox`.
    #[must_use]
    pub fn new(inbox: Inbox) -> Self {
        Self { inbox }
    }
}

impl fmt::Debug for AirmyInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AirmyInbox").finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for AirmyInbox {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Answering;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Answering {
        let inbox = self.inbox.clone();
        answer(&request, |verified| async move {
            inbox.respond(&verified).await
        })
    }
}

/// The answer of a route service: the core's 500 when no layer verified the request, else what
/// `respond` (the inbox crate's rule) says, as a JSON response.
fn answer<B, F, Fut>(request: &Request<B>, respond: F) -> Answering
where
    F: FnOnce(Verified) -> Fut,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let Some(verified) = request.extensions().get::<Verified>().cloned() else {
        return Box::pin(std::future::ready(Ok(error_response(
            &Error::NotConfigured,
        ))));
    };
    let answered = respond(verified);
    Box::pin(async move { Ok(answer_response(answered.await)) })
}

/// Runs handlers by event type on each verified delivery, synchronously; see the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct AirmyHandlers {
    handlers: Handlers,
}

impl AirmyHandlers {
    /// A service running `handlers`.
    #[must_use]
    pub fn new(handlers: Handlers) -> Self {
        Self { handlers }
    }
}

impl<B> Service<Request<B>> for AirmyHandlers {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Answering;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Answering {
        let handlers = self.handlers.clone();
        answer(&request, |verified| async move {
            handlers.respond(&verified).await
        })
    }
}
