//! The worker's span per attempt, with a capturing subscriber: `airmy_inbox_entry` with the
//! event id and type, the attempt number and its result, the handler's log lines inside it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airmy_verify::{Envelope, Event};
use airmy_verify_inbox::conformance::delivery;
use airmy_verify_inbox::{
    Accepted, Context, HandlerError, Handlers, Inbox, RetryPolicy, SqliteBackend, SqliteOptions,
};
use test_support::spans::SpanCapture;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn each_attempt_is_a_span_with_its_number_and_result() {
    let (capture, _guard) = SpanCapture::install();
    let dir = std::env::temp_dir().join(format!("airmy-inbox-spans-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let handlers = Handlers::new().fallback(move |event: Envelope<Event>, ctx: Context| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            tracing::info!(attempt = ctx.attempt, id = %event.id, "handler ran");
            if n == 0 {
                return Err::<(), HandlerError>("first attempt fails".into());
            }
            Ok(())
        }
    });
    let policy = RetryPolicy::default()
        .initial(Duration::from_millis(20))
        .multiplier(2.0)
        .max_delay(Duration::from_millis(100))
        .max_age(Duration::from_secs(60))
        .max_attempts(None)
        .jitter(0.0);
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        inbox
            .worker(handlers)
            .retry_policy(policy)
            .run(shutdown.clone()),
    );
    let stored = delivery("evt_attempts", "deployment.created");
    assert_eq!(
        inbox.accept(&stored).await.expect("accepted"),
        Accepted::Stored
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while inbox.admin().stats().await.expect("stats").done < 1 {
        assert!(Instant::now() < deadline, "handled within 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    worker.await.expect("worker");

    let spans = capture.spans();
    let attempts: Vec<(usize, _)> = spans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.name == "airmy_inbox_entry")
        .collect();
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for (n, (_, span)) in attempts.iter().enumerate() {
        assert_eq!(span.fields["event_id"], "evt_attempts");
        assert_eq!(span.fields["event_type"], "deployment.created");
        assert_eq!(span.fields["attempt"], (n + 1).to_string());
    }
    assert_eq!(attempts[0].1.fields["result"], "retry");
    assert_eq!(attempts[1].1.fields["result"], "success");
    let ran: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|e| e.message == "handler ran")
        .map(|e| e.span)
        .collect();
    assert_eq!(ran, [Some(attempts[0].0), Some(attempts[1].0)]);
    let _ = std::fs::remove_dir_all(&dir);
}
