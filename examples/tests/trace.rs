//! One trace from delivery to effect, through the real OpenTelemetry SDK: a receiver (axum,
//! the verifying layer, an inbox route behind an HTTP span of the application's) with
//! `tracing-opentelemetry` and the SDK's in-memory exporter; the delivery accepted by one
//! "process" (its own runtime, tracer provider and backend handle, all dropped), handled by a
//! second one on the same SQLite file or Redis server, each attempt's span a child of the
//! delivery's, in the HTTP request's trace.

use std::time::Duration;

use airmy_verify::Envelope;
use airmy_verify::event::RunCompleted;
use airmy_verify_axum::AirmyVerifyLayer;
use airmy_verify_axum::inbox::AirmyInbox;
use airmy_verify_inbox::otel::OtelPropagator;
use airmy_verify_inbox::{
    Backend, Context, HandlerError, Handlers, Inbox, RedisBackend, RedisOptions, RetryPolicy,
    SqliteBackend, SqliteOptions,
};
use axum::Router;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use test_support::RedisServer;
use test_support::fixtures::{fresh_delivery_with_id, verifier_on_system_clock};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// The spans this thread's `tracing` sends to OpenTelemetry, exported in memory when they end.
struct Otel {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Otel {
    /// `tracing` on this thread through `tracing-opentelemetry` into a fresh SDK provider.
    fn install() -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("trace-test"));
        let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        Self {
            exporter,
            provider,
            _guard: guard,
        }
    }

    /// Every span ended so far.
    fn spans(&self) -> Vec<SpanData> {
        self.provider.force_flush().expect("flush");
        self.exporter.get_finished_spans().expect("spans")
    }
}

/// The one span named `name`.
fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
    found[0]
}

/// The application's own span around every request, as a `TraceLayer` would open it.
async fn http_span(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let span = tracing::info_span!("http_request", path = %request.uri().path());
    next.run(request).instrument(span).await
}

/// The receiver: the inbox route behind the verifying layer, behind the HTTP span.
fn app(inbox: &Inbox) -> Router {
    Router::new()
        .route_service("/hooks/airmy", AirmyInbox::new(inbox.clone()))
        .route_layer(AirmyVerifyLayer::new(verifier_on_system_clock()))
        .layer(axum::middleware::from_fn(http_span))
}

/// Serves `inbox` on loopback, posts one fresh delivery of `id`, and answers its status.
async fn deliver(inbox: &Inbox, id: &str) -> u16 {
    let (listener, addr) = test_support::http::loopback().await;
    let server = tokio::spawn(axum::serve(listener, app(inbox)).into_future());
    let response = test_support::http::raw_post(addr, &fresh_delivery_with_id(id)).await;
    server.abort();
    let _ = server.await;
    response.status
}

fn propagating(backend: impl Backend) -> Inbox {
    Inbox::new(backend).propagate(OtelPropagator::new(TraceContextPropagator::new()))
}

/// A runtime of its own, as a process has.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The first process: accepts the delivery of `id` on the inbox `open` makes; the HTTP
/// request's trace id and the delivery span's id.
fn accept_in_a_first_process<B: Backend, F: Future<Output = B>>(
    open: impl FnOnce() -> F,
    id: &str,
) -> (TraceId, SpanId) {
    let otel = Otel::install();
    let spans = runtime().block_on(async {
        let inbox = propagating(open().await);
        assert_eq!(deliver(&inbox, id).await, 200);
        otel.spans()
    });
    let request = one(&spans, "http_request");
    let delivery = one(&spans, "airmy_delivery");
    let trace = request.span_context.trace_id();
    assert_eq!(delivery.span_context.trace_id(), trace);
    assert_eq!(delivery.parent_span_id, request.span_context.span_id());
    (trace, delivery.span_context.span_id())
}

/// The second process: handles what the inbox `open` makes holds (attempt 1 fails, attempt 2
/// succeeds, each in a span of the application's own); the spans.
fn handle_in_a_second_process<B: Backend, F: Future<Output = B>>(
    open: impl FnOnce() -> F,
) -> Vec<SpanData> {
    let otel = Otel::install();
    runtime().block_on(async {
        let inbox = propagating(open().await);
        let handlers = Handlers::new().on(|run: Envelope<RunCompleted>, ctx: Context| async move {
            tracing::info_span!("charge_customer", run = ?run.data.id).in_scope(|| {
                if ctx.attempt == 1 {
                    Err(HandlerError::from("the payment service is down"))
                } else {
                    Ok(())
                }
            })
        });
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(
            inbox
                .worker(handlers)
                .retry_policy(
                    RetryPolicy::default()
                        .initial(Duration::from_millis(20))
                        .jitter(0.0),
                )
                .run(shutdown.clone()),
        );
        for _ in 0..500 {
            if inbox.admin().stats().await.expect("stats").done == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            inbox.admin().stats().await.expect("stats").done,
            1,
            "handled"
        );
        shutdown.cancel();
        worker.await.expect("worker");
    });
    otel.spans()
}

/// Both attempts, in the delivery's trace as its children, each with the handler's span under
/// it.
fn assert_one_trace(spans: &[SpanData], trace: TraceId, delivery: SpanId) {
    let attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "airmy_inbox_entry")
        .collect();
    assert_eq!(attempts.len(), 2, "two attempts: {spans:#?}");
    for attempt in &attempts {
        assert_eq!(
            attempt.span_context.trace_id(),
            trace,
            "the request's trace"
        );
        assert_eq!(
            attempt.parent_span_id, delivery,
            "a child of the delivery span"
        );
    }
    let handler: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "charge_customer")
        .collect();
    assert_eq!(handler.len(), 2);
    for (attempt, handler) in attempts.iter().zip(&handler) {
        assert_eq!(handler.span_context.trace_id(), trace);
        assert_eq!(handler.parent_span_id, attempt.span_context.span_id());
    }
}

#[test]
fn one_trace_from_the_request_to_the_handler_across_a_restart_on_sqlite() {
    let dir = test_support::temp_dir();
    let db = dir.0.join("inbox.db");
    let open = || async { SqliteBackend::open(&db, SqliteOptions::default()).expect("open") };
    let (trace, delivery) = accept_in_a_first_process(open, "evt_trace_sqlite");
    let spans = handle_in_a_second_process(open);
    assert_one_trace(&spans, trace, delivery);
}

#[test]
fn one_trace_from_the_request_to_the_handler_across_a_restart_on_redis() {
    let server = RedisServer::start();
    let open = || async {
        RedisBackend::connect(server.url(), RedisOptions::default().prefix("trace"))
            .await
            .expect("connect")
    };
    let (trace, delivery) = accept_in_a_first_process(open, "evt_trace_redis");
    let spans = handle_in_a_second_process(open);
    assert_one_trace(&spans, trace, delivery);
}

/// With no propagator, or one but no OpenTelemetry layer, nothing is stored, and the entry is
/// handled as always (its attempt a trace of its own).
#[test]
fn without_a_propagator_or_a_layer_nothing_is_stored_and_nothing_breaks() {
    let dir = test_support::temp_dir();
    let otel = Otel::install();
    let spans = runtime().block_on(async {
        let inbox = Inbox::new(
            SqliteBackend::open(dir.0.join("plain.db"), SqliteOptions::default()).expect("open"),
        );
        assert_eq!(deliver(&inbox, "evt_untraced").await, 200);
        let leased = inbox
            .queue()
            .take(8, Duration::from_secs(30))
            .await
            .expect("take");
        assert_eq!(leased.len(), 1);
        assert!(leased[0].trace.is_empty(), "no propagator: nothing stored");
        inbox
            .queue()
            .release(&leased[0].id, &leased[0].token)
            .await
            .expect("release");
        let handlers = Handlers::new()
            .on(|_: Envelope<RunCompleted>, _: Context| async { Ok::<(), HandlerError>(()) });
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(inbox.worker(handlers).run(shutdown.clone()));
        for _ in 0..500 {
            if inbox.admin().stats().await.expect("stats").done == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            inbox.admin().stats().await.expect("stats").done,
            1,
            "handled"
        );
        shutdown.cancel();
        worker.await.expect("worker");
        otel.spans()
    });
    let request = one(&spans, "http_request");
    let attempt = one(&spans, "airmy_inbox_entry");
    assert_ne!(
        attempt.span_context.trace_id(),
        request.span_context.trace_id()
    );
    assert_eq!(attempt.parent_span_id, SpanId::INVALID, "a root of its own");
    drop(otel);

    // A propagator, but spans that never reach OpenTelemetry: no context to store.
    let _plain = tracing::subscriber::set_default(tracing_subscriber::registry());
    runtime().block_on(async {
        let inbox = propagating(
            SqliteBackend::open(dir.0.join("no-layer.db"), SqliteOptions::default()).expect("open"),
        );
        assert_eq!(deliver(&inbox, "evt_no_layer").await, 200);
        let leased = inbox
            .queue()
            .take(8, Duration::from_secs(30))
            .await
            .expect("take");
        assert_eq!(leased.len(), 1);
        assert!(
            leased[0].trace.is_empty(),
            "no OpenTelemetry context: nothing stored"
        );
    });
}

/// The handling half of the test below, run by it in a process of its own (the environment
/// names the file and what to expect); in the test run itself, without that environment, it
/// has nothing to do.
#[test]
fn a_second_process_handles_what_the_first_accepted() {
    let (Ok(db), Ok(trace), Ok(delivery)) = (
        std::env::var("AIRMY_TRACE_TEST_DB"),
        std::env::var("AIRMY_TRACE_TEST_TRACE_ID"),
        std::env::var("AIRMY_TRACE_TEST_DELIVERY_SPAN"),
    ) else {
        return;
    };
    let trace = TraceId::from_hex(&trace).expect("a trace id");
    let delivery = SpanId::from_hex(&delivery).expect("a span id");
    let spans = handle_in_a_second_process(|| async {
        SqliteBackend::open(&db, SqliteOptions::default()).expect("open")
    });
    assert_one_trace(&spans, trace, delivery);
}

/// Accepted here, handled by another process (this test binary started again, running only
/// the test above) on the same SQLite file: the trace id crosses the process boundary.
#[test]
fn one_trace_from_the_request_to_the_handler_in_another_process() {
    let dir = test_support::temp_dir();
    let db = dir.0.join("inbox.db");
    let open = || async { SqliteBackend::open(&db, SqliteOptions::default()).expect("open") };
    let (trace, delivery) = accept_in_a_first_process(open, "evt_trace_process");
    let output = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "a_second_process_handles_what_the_first_accepted",
            "--nocapture",
        ])
        .env("AIRMY_TRACE_TEST_DB", &db)
        .env("AIRMY_TRACE_TEST_TRACE_ID", trace.to_string())
        .env("AIRMY_TRACE_TEST_DELIVERY_SPAN", delivery.to_string())
        .output()
        .expect("the second process runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the second process: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
