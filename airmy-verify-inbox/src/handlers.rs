//! [`Handlers`]: handlers by event type, the way `webhooks.on("push", …)` works in octokit.
//!
//! Each handler takes one event type, typed through the core's event structs
//! (`Envelope<RunCompleted>`, …), and a [`Context`]; [`fallback`](Handlers::fallback) takes any
//! other type as `Envelope<Event>`. An event type with neither is completed with a log line,
//! never retried forever. The same dispatcher runs in an inbox [`Worker`](crate::Worker), or
//! synchronously behind one route ([`Handlers::handle`]) for an application without an inbox.
//!
//! # Example
//!
//! ```
//! use airmy_verify::event::{AlertTriggered, RunCompleted};
//! use airmy_verify::{Envelope, Event};
//! use airmy_verify_inbox::{Context, HandlerError, Handlers};
//!
//! let handlers = Handlers::new()
//!     .on(|run: Envelope<RunCompleted>, ctx: Context| async move {
//!         println!("run {:?} (attempt {})", run.data.id, ctx.attempt);
//!         Ok::<(), HandlerError>(())
//!     })
//!     .on(|alert: Envelope<AlertTriggered>, _ctx: Context| async move {
//!         if alert.data.status.as_deref() == Some("firing") {
//!             return Err(HandlerError::from("the pager is down")); // retried later
//!         }
//!         Ok(())
//!     })
//!     .fallback(|event: Envelope<Event>, _ctx: Context| async move {
//!         println!("{} ignored", event.event_type());
//!         Ok::<(), HandlerError>(())
//!     });
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use airmy_verify::observe::Outcome;
use airmy_verify::{Answer, Envelope, Event, EventData};
use bytes::Bytes;
use time::OffsetDateTime;

/// A handler's failure: any error; the inbox keeps its `Display` as the entry's last error.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// What a handler learns besides the event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Context {
    /// The event id.
    pub id: String,
    /// This attempt's number, from 1 (always 1 when run synchronously).
    pub attempt: u32,
    /// When the delivery was received (accepted by the inbox).
    pub received_at: OffsetDateTime,
    after_commit: AfterCommit,
}

impl AsRef<Context> for Context {
    fn as_ref(&self) -> &Context {
        self
    }
}

/// What runs once an attempt's success is recorded.
#[derive(Clone, Default)]
pub(crate) struct AfterCommit(Arc<std::sync::Mutex<Vec<Hook>>>);

/// One `after_commit` closure.
type Hook = Box<dyn FnOnce() + Send>;

impl AfterCommit {
    /// Runs (once) what was registered.
    pub(crate) fn run(&self) {
        let hooks = std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for hook in hooks {
            hook();
        }
    }
}

impl fmt::Debug for AfterCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AfterCommit")
    }
}

impl Context {
    /// A context for a delivery handled now, synchronously (attempt 1).
    #[must_use]
    pub fn now(id: impl Into<String>) -> Self {
        Self::new(id.into(), 1, OffsetDateTime::now_utc())
    }

    pub(crate) fn new(id: String, attempt: u32, received_at: OffsetDateTime) -> Self {
        Self {
            id,
            attempt,
            received_at,
            after_commit: AfterCommit::default(),
        }
    }

    pub(crate) fn after_commit_hooks(&self) -> AfterCommit {
        self.after_commit.clone()
    }

    /// Runs `f` once this attempt's success is recorded: in an inbox worker, after the entry's
    /// completion is committed (with the handler's own writes, on PostgreSQL); synchronously
    /// ([`Handlers::respond`]), once the handler returned `Ok`. Never when the attempt failed.
    /// For what must only be said once it is true: a log line, a reply, a metric.
    pub fn after_commit(&self, f: impl FnOnce() + Send + 'static) {
        self.after_commit
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Box::new(f));
    }
}

type Boxed<C> = Arc<
    dyn Fn(Bytes, C) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>
        + Send
        + Sync,
>;

/// Handlers by event type, and a fallback; see the [module docs](self). Cheap to clone.
///
/// `C` is what each handler gets besides its event: a [`Context`] for every backend, or, on
/// PostgreSQL, a `PgContext` (the entry's transaction as well) for handlers run by
/// `PgBackend::worker`. A handler typed for one cannot be registered where the other is run:
/// the compiler refuses it.
pub struct Handlers<C = Context> {
    by_type: HashMap<&'static str, Boxed<C>>,
    fallback: Option<Boxed<C>>,
}

impl<C> Clone for Handlers<C> {
    fn clone(&self) -> Self {
        Self {
            by_type: self.by_type.clone(),
            fallback: self.fallback.clone(),
        }
    }
}

impl<C> Default for Handlers<C> {
    fn default() -> Self {
        Self {
            by_type: HashMap::new(),
            fallback: None,
        }
    }
}

/// What [`Handlers::handle`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatched {
    /// A handler (or the fallback) ran and succeeded.
    Handled,
    /// No handler and no fallback for this event type: nothing ran (logged).
    Unhandled(String),
}

impl Handlers {
    /// No handlers yet, taking a [`Context`] (`Handlers::<PgContext>::default()` for
    /// handlers that take a PostgreSQL `PgContext`).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl<C: AsRef<Context> + Send + 'static> Handlers<C> {
    /// Handles events of `T`'s type (such as `RunCompleted`) with `handler`. A second handler
    /// for the same type replaces the first; `T = Event` sets the fallback.
    #[must_use]
    pub fn on<T, F, Fut, E>(mut self, handler: F) -> Self
    where
        T: EventData + Send + 'static,
        F: Fn(Envelope<T>, C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<HandlerError>,
    {
        let boxed: Boxed<C> = Arc::new(move |body: Bytes, ctx: C| match serde_json::from_slice::<
            Envelope<Event>,
        >(&body)
        .map_err(HandlerError::from)
        .and_then(|e| e.into_typed::<T>().map_err(HandlerError::from))
        {
            Ok(envelope) => {
                let fut = handler(envelope, ctx);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }
            Err(err) => Box::pin(std::future::ready(Err(err))),
        });
        match T::EXPECTED {
            Some(event_type) => {
                self.by_type.insert(event_type, boxed);
            }
            None => self.fallback = Some(boxed),
        }
        self
    }

    /// Handles every event type that has no handler of its own, as `Envelope<Event>`.
    #[must_use]
    pub fn fallback<F, Fut, E>(self, handler: F) -> Self
    where
        F: Fn(Envelope<Event>, C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<HandlerError>,
    {
        self.on::<Event, _, _, _>(handler)
    }

    /// Runs the handler for `event_type` on a verified body.
    ///
    /// # Errors
    ///
    /// The handler's error (the inbox retries), or a body that does not parse as that type.
    pub async fn handle(
        &self,
        event_type: &str,
        body: Bytes,
        ctx: C,
    ) -> Result<Dispatched, HandlerError> {
        let handler = self.by_type.get(event_type).or(self.fallback.as_ref());
        let Some(handler) = handler else {
            tracing::info!(
                target: "airmy_verify",
                event_id = ?ctx.as_ref().id,
                event_type,
                "no handler for this event type; completed without handling"
            );
            return Ok(Dispatched::Unhandled(event_type.to_owned()));
        };
        handler(body, ctx).await.map(|()| Dispatched::Handled)
    }
}

impl Handlers {
    /// Runs the handler for a verified delivery now (attempt 1) and gives the answer every
    /// adapter sends for a synchronous handling: 200 `{"id":"…","status":"handled"}`, or 500
    /// `{"error":"handler_failed"}` (logged) so that AIRMY retries; outcome `accepted` either
    /// way (the handler had it).
    pub async fn respond(&self, delivery: &airmy_verify::Verified) -> Answer {
        let id = delivery.id();
        let ctx = Context::now(id);
        let after_commit = ctx.after_commit_hooks();
        match self
            .handle(delivery.event_type(), delivery.bytes().clone(), ctx)
            .await
        {
            Ok(_) => {
                after_commit.run();
                Answer::with_id(200, "handled", id, Outcome::Accepted)
            }
            Err(err) => {
                tracing::warn!(
                    target: "airmy_verify",
                    event_id = ?id,
                    error = %err,
                    "handler failed; answering 500"
                );
                Answer::new(
                    500,
                    Bytes::from_static(br#"{"error":"handler_failed"}"#),
                    Some(Outcome::Accepted),
                )
            }
        }
    }
}

impl<C> fmt::Debug for Handlers<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<_> = self.by_type.keys().collect();
        types.sort();
        f.debug_struct("Handlers")
            .field("types", &types)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}
