//! The example receivers' apps, shared by the receiver binaries and the demo so that the demo
//! exercises exactly what the receivers serve: `POST /hooks/airmy` answering an accepted event
//! with 200 and `{"id":"<event id>","type":"<event type>"}`.
//!
//! Each completed handling prints `handled <id> <type>` on standard output (one line, flushed),
//! after the configured handler delay: black-box tests count these lines.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airmy_verify::idempotency::Idempotency;
use airmy_verify::text::word;
use airmy_verify::{Envelope, Event, Verifier};
use airmy_verify_inbox::{Context, HandlerError, Handlers, Inbox, PgContext};
use serde_json::{Value, json};

/// The path the receivers serve.
pub const PATH: &str = "/hooks/airmy";

/// What a receiver's handler does with an event: wait `delay` (a slow handler, from
/// `AIRMY_HANDLER_DELAY_MS`), fail while a simulated outage lasts (`fail_until`, from
/// `AIRMY_HANDLER_FAIL_FOR_SECS`), count it, log it, and print the `handled` line.
#[derive(Debug, Clone, Default)]
pub struct Handling {
    /// How many handlings completed (the demo reads it; the binaries ignore it).
    pub completed: Arc<AtomicUsize>,
    /// How many attempts failed (the demo reads it).
    pub failed: Arc<AtomicUsize>,
    /// How long each handling takes.
    pub delay: Duration,
    /// Every attempt before this instant fails (a dependency that is down).
    pub fail_until: Option<Instant>,
    /// Whether to print `handled <id> <type>` on standard output (the receivers do; the demo,
    /// which prints a table of its own, does not).
    pub print: bool,
}

/// The error of an attempt made while the simulated outage lasts.
#[derive(Debug)]
pub struct Outage;

impl std::fmt::Display for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated outage (AIRMY_HANDLER_FAIL_FOR_SECS)")
    }
}

impl std::error::Error for Outage {}

impl Handling {
    /// A handling that takes `delay`, fails for `fail_for` from now, and prints its `handled`
    /// lines.
    #[must_use]
    pub fn printing(delay: Duration, fail_for: Duration) -> Self {
        Self {
            completed: Arc::default(),
            failed: Arc::default(),
            delay,
            fail_until: (!fail_for.is_zero()).then(|| Instant::now() + fail_for),
            print: true,
        }
    }

    /// The handlers an inbox worker runs: this handling for every event type, printing
    /// `handled <id> <type> attempt=<n>`.
    #[must_use]
    pub fn handlers(&self, receiver: &'static str) -> Handlers {
        let handling = self.clone();
        Handlers::new().fallback(move |event: Envelope<Event>, ctx: Context| {
            let handling = handling.clone();
            async move {
                handling
                    .attempt(receiver, &event, Some(ctx.attempt))
                    .await
                    .map(drop)
                    .map_err(HandlerError::from)
            }
        })
    }

    /// The handlers a worker on a PostgreSQL inbox runs (a receiver whose `AIRMY_INBOX` is a
    /// PostgreSQL URL): this handling for every event type, its effect (one row of
    /// `airmy_receiver_effects`) written in the entry's transaction, `delay` taken inside it,
    /// and the `handled … attempt=<n>` line printed once it committed with the entry's
    /// completion.
    #[must_use]
    pub fn transactional_handlers(&self, receiver: &'static str) -> Handlers<PgContext> {
        let handling = self.clone();
        Handlers::default().fallback(move |event: Envelope<Event>, ctx: PgContext| {
            let handling = handling.clone();
            async move {
                handling
                    .attempt_in_transaction(receiver, &event, &ctx)
                    .await
            }
        })
    }

    pub(crate) async fn handle(
        &self,
        receiver: &'static str,
        event: &Envelope<Event>,
    ) -> Result<Value, Outage> {
        self.attempt(receiver, event, None).await
    }

    /// One attempt whose effect is a row of `airmy_receiver_effects`, written in the entry's
    /// transaction; the delay is taken inside it, and the `handled` line printed only once the
    /// row committed together with the entry's completion.
    async fn attempt_in_transaction(
        &self,
        receiver: &'static str,
        event: &Envelope<Event>,
        ctx: &PgContext,
    ) -> Result<(), HandlerError> {
        let mut tx = ctx.transaction().await?;
        sqlx::query(
            "INSERT INTO airmy_receiver_effects (event_id, event_type, attempt) VALUES ($1, $2, $3)",
        )
        .bind(&event.id)
        .bind(event.event_type())
        .bind(i32::try_from(ctx.attempt).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        let quiet = Self {
            print: false,
            ..self.clone()
        };
        quiet.attempt(receiver, event, Some(ctx.attempt)).await?;
        drop(tx);
        if self.print {
            let line = format!(
                "handled {} {} attempt={}",
                word(&event.id),
                word(event.event_type()),
                ctx.attempt
            );
            ctx.after_commit(move || {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            });
        }
        Ok(())
    }

    async fn attempt(
        &self,
        receiver: &'static str,
        event: &Envelope<Event>,
        attempt: Option<u32>,
    ) -> Result<Value, Outage> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.fail_until.is_some_and(|until| Instant::now() < until) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(target: "airmy_receiver", receiver, event_id = ?event.id, "handler failed: simulated outage");
            return Err(Outage);
        }
        self.completed.fetch_add(1, Ordering::SeqCst);
        tracing::info!(
            target: "airmy_receiver",
            receiver,
            event_id = ?event.id,
            event_type = event.event_type(),
            created_at = %event.created_at,
            "event handled"
        );
        if self.print {
            let mut out = std::io::stdout().lock();
            // A closed stdout must not stop the receiver.
            let (id, event_type) = (word(&event.id), word(event.event_type()));
            let _ = match attempt {
                Some(n) => writeln!(out, "handled {id} {event_type} attempt={n}"),
                None => writeln!(out, "handled {id} {event_type}"),
            };
            let _ = out.flush();
        }
        Ok(json!({ "id": event.id, "type": event.event_type() }))
    }
}

/// The body of a synchronous handling that failed.
const HANDLER_FAILED: &str = r#"{"error":"handler_failed"}"#;

/// `GET /healthz`: 200 `{"status":"ok"}` when the inbox (if any) answers, else 503
/// `{"error":"inbox_unavailable"}`.
async fn health(inbox: Option<&Inbox>) -> (u16, &'static str) {
    match inbox {
        Some(inbox) if inbox.admin().stats().await.is_err() => {
            (503, r#"{"error":"inbox_unavailable"}"#)
        }
        _ => (200, r#"{"status":"ok"}"#),
    }
}

/// The axum receiver: the route behind `AirmyVerifyLayer` (and `AirmyIdempotencyLayer`
/// inside it, if a guard is given), the handler taking `AirmyEvent`; or, with an inbox, the
/// route storing deliveries in it (a worker handles them). `GET /healthz` beside it.
pub fn axum_app(
    verifier: Verifier,
    handling: Handling,
    idempotency: Option<Idempotency>,
    inbox: Option<Inbox>,
) -> axum::Router {
    use airmy_verify_axum::inbox::AirmyInbox;
    use airmy_verify_axum::{AirmyEvent, AirmyIdempotencyLayer, AirmyVerifyLayer};
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};

    let health_inbox = inbox.clone();
    let healthz = get(move || {
        let inbox = health_inbox.clone();
        async move {
            let (status, body) = health(inbox.as_ref()).await;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    });
    let mut router = match inbox {
        Some(inbox) => axum::Router::new().route_service(PATH, AirmyInbox::new(inbox)),
        None => {
            let handler = move |AirmyEvent(event): AirmyEvent| {
                let handling = handling.clone();
                async move {
                    match handling.handle("axum", &event).await {
                        Ok(answer) => axum::Json(answer).into_response(),
                        Err(Outage) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [(header::CONTENT_TYPE, "application/json")],
                            HANDLER_FAILED,
                        )
                            .into_response(),
                    }
                }
            };
            axum::Router::new().route(PATH, post(handler))
        }
    };
    if let Some(guard) = idempotency {
        router = router.layer(AirmyIdempotencyLayer::new(guard));
    }
    router
        .layer(AirmyVerifyLayer::new(verifier))
        .route("/healthz", healthz)
}

/// The actix receiver: a `/hooks` scope wrapped in `AirmyVerify` (and `AirmyIdempotency`
/// inside it, if a guard is given), the handler taking `AirmyEvent`; or, with an inbox, the
/// route storing deliveries in it (a worker handles them). `GET /healthz` beside it. Use with
/// `App::new().configure(actix_app(verifier, handling, guard, inbox))`.
pub fn actix_app(
    verifier: Verifier,
    handling: Handling,
    idempotency: Option<Idempotency>,
    inbox: Option<Inbox>,
) -> impl Fn(&mut actix_web::web::ServiceConfig) + Clone + Send + 'static {
    use actix_web::{HttpResponse, web};
    use airmy_verify_actix::{AirmyEvent, AirmyIdempotency, AirmyVerify};

    move |config: &mut web::ServiceConfig| {
        let health_inbox = inbox.clone();
        config.route(
            "/healthz",
            web::get().to(move || {
                let inbox = health_inbox.clone();
                async move {
                    let (status, body) = health(inbox.as_ref()).await;
                    HttpResponse::build(
                        actix_web::http::StatusCode::from_u16(status)
                            .unwrap_or(actix_web::http::StatusCode::OK),
                    )
                    .content_type("application/json")
                    .body(body)
                }
            }),
        );
        let verify = AirmyVerify::new(verifier.clone());
        if let Some(inbox) = &inbox {
            config.app_data(web::Data::new(inbox.clone())).service(
                web::scope("/hooks")
                    .wrap(verify)
                    .route("/airmy", web::post().to(airmy_verify_actix::inbox::accept)),
            );
            return;
        }
        let handling = handling.clone();
        let handler = move |AirmyEvent(event): AirmyEvent| {
            let handling = handling.clone();
            async move {
                match handling.handle("actix", &event).await {
                    Ok(answer) => HttpResponse::Ok().json(answer),
                    Err(Outage) => HttpResponse::InternalServerError()
                        .content_type("application/json")
                        .body(HANDLER_FAILED),
                }
            }
        };
        let route = web::post().to(handler);
        match &idempotency {
            Some(guard) => config.service(
                web::scope("/hooks")
                    .wrap(AirmyIdempotency::new(guard.clone()))
                    .wrap(verify)
                    .route("/airmy", route),
            ),
            None => config.service(web::scope("/hooks").wrap(verify).route("/airmy", route)),
        };
    }
}
