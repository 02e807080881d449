//! The durable inbox in process: one accept at a time (each pays its own sync), 32 concurrent
//! accepts (they share transactions and syncs: group commit), against verification alone.
//!
//! ```text
//! cargo bench -p airmy-verify-benches --bench inbox
//! ```

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use airmy_verify::time::OffsetDateTime;
use airmy_verify::{Secret, Verified, Verifier, testing};
use airmy_verify_inbox::{Accepted, Inbox, SqliteBackend, SqliteOptions};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn verifier() -> Verifier {
    Verifier::new(Secret::new(testing::SECRET).expect("secret"))
}

fn delivery(n: u64) -> (String, airmy_verify::Bytes) {
    let d = testing::sample_event("run.completed")
        .id(format!("evt_bench_{}_{n}", std::process::id()))
        .created_at(OffsetDateTime::now_utc())
        .padded_to(1024)
        .signed(testing::SECRET);
    (d.signature, d.body)
}

fn verified(n: u64) -> Verified {
    let (signature, body) = delivery(n);
    verifier().verify(signature, body).expect("verifies")
}

fn inbox(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("inbox-criterion-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    let counter = AtomicU64::new(0);
    let next = || counter.fetch_add(1, Ordering::Relaxed);

    let mut group = c.benchmark_group("inbox");
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("verify_only_1KiB", |b| {
        let v = verifier();
        b.iter_batched(
            || delivery(next()),
            |(s, body)| black_box(v.verify(s, body).expect("ok")),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("accept_one_at_a_time", |b| {
        b.iter_batched(
            || verified(next()),
            |v| {
                runtime.block_on(async {
                    assert_eq!(inbox.accept(&v).await.expect("accepted"), Accepted::Stored)
                })
            },
            BatchSize::SmallInput,
        );
    });
    group.throughput(Throughput::Elements(32));
    group.bench_function("accept_32_concurrent", |b| {
        b.iter_batched(
            || (0..32).map(|_| verified(next())).collect::<Vec<_>>(),
            |vs| {
                runtime.block_on(async {
                    let all =
                        futures_util::future::join_all(vs.iter().map(|v| inbox.accept(v))).await;
                    assert!(all.iter().all(|r| matches!(r, Ok(Accepted::Stored))));
                });
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
    drop(inbox);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, inbox);
criterion_main!(benches);
