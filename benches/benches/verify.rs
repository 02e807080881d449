//! Benchmarks of signature verification and verify + parse, each against its floor measured in
//! the same run: a pre-keyed raw HMAC-SHA256 (and a plain serde parse), plus the Svix crate's
//! `Webhook::verify` as a peer.
//!
//! ```text
//! cargo bench -p airmy-verify-benches --bench verify
//! python3 scripts/bench-report.py          # medians and ratios, as in BENCHMARKS.md
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use airmy_verify::event::RunCompleted;
use airmy_verify::secret::Secrets;
use airmy_verify::{Bytes, Event, Secret, Verifier, sign, testing};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use time::OffsetDateTime;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SIZES: [(usize, &str); 4] = [
    (256, "256B"),
    (1024, "1KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];

fn verifier() -> Verifier {
    Verifier::builder(Secret::new(SECRET).expect("secret"))
        .max_body_size(2 << 20)
        .build()
}

fn signature(c: &mut Criterion) {
    let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("key");
    let verifier = verifier();
    let svix_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let svix = svix::webhooks::Webhook::new(svix_secret).expect("svix secret");

    let mut group = c.benchmark_group("signature");
    group.measurement_time(Duration::from_secs(4));
    for (size, label) in SIZES {
        let body = testing::run_completed_of_len(size);
        let header = sign(&body, SECRET);
        let mut tag = [0u8; 32];
        hex::decode_to_slice(&header, &mut tag).expect("hex");
        // Signed with another secret: the verifier checks the header and the HMAC, then stops,
        // so this is the signature check alone through the public path.
        let forged = sign(&body, "whsec_another_secret");
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_with_input(
            BenchmarkId::new("raw_hmac_prekeyed", label),
            &body,
            |b, body| {
                b.iter(|| {
                    keyed
                        .clone()
                        .chain_update(black_box(body))
                        .verify_slice(black_box(&tag))
                        .is_ok()
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new("raw_hex_and_hmac", label),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut tag = [0u8; 32];
                    hex::decode_to_slice(black_box(forged.as_bytes()), &mut tag).expect("hex");
                    keyed
                        .clone()
                        .chain_update(black_box(body))
                        .verify_slice(&tag)
                        .is_ok()
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new("airmy_header_and_signature", label),
            &body,
            |b, body: &Bytes| {
                b.iter(|| {
                    verifier
                        .verify(black_box(forged.as_bytes()), black_box(body.clone()))
                        .is_err()
                });
            },
        );
        // The same check while another thread replaces the verifier's secrets every
        // millisecond (a rotation under way), and, as the control, while another thread only
        // wakes up every millisecond: the swap itself must add nothing measurable.
        for (name, swap) in [
            ("airmy_header_and_signature_while_waking", false),
            ("airmy_header_and_signature_while_swapping", true),
        ] {
            let running = Arc::new(AtomicBool::new(true));
            let other = {
                let (verifier, running) = (verifier.clone(), running.clone());
                // One secret each, as in the other rows (every listed secret is tried, so a
                // list of two would cost a second HMAC).
                let secrets = [
                    Secrets::new(Secret::new(SECRET).expect("secret")),
                    Secrets::new(Secret::new("whsec_rotated").expect("secret")),
                ];
                std::thread::spawn(move || {
                    let mut n = 0usize;
                    while running.load(Ordering::Relaxed) {
                        if swap {
                            verifier.set_secrets(secrets[n % 2].clone());
                        }
                        n += 1;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            };
            group.bench_with_input(BenchmarkId::new(name, label), &body, |b, body: &Bytes| {
                b.iter(|| {
                    verifier
                        .verify(black_box(forged.as_bytes()), black_box(body.clone()))
                        .is_err()
                });
            });
            running.store(false, Ordering::Relaxed);
            other.join().expect("other thread");
        }
        verifier.set_secrets(Secrets::new(Secret::new(SECRET).expect("secret")));

        let now = OffsetDateTime::now_utc().unix_timestamp();
        let svix_sig = svix.sign("msg_bench", now, &body).expect("svix sign");
        let mut headers = http::HeaderMap::new();
        headers.insert("svix-id", http::HeaderValue::from_static("msg_bench"));
        headers.insert("svix-timestamp", now.to_string().parse().expect("ts"));
        headers.insert("svix-signature", svix_sig.parse().expect("sig"));
        svix.verify(&body, &headers)
            .expect("svix verifies its own signature");
        group.bench_with_input(
            BenchmarkId::new("svix_webhook_verify", label),
            &body,
            |b, body| {
                b.iter(|| svix.verify(black_box(body), black_box(&headers)).is_ok());
            },
        );
    }
    group.finish();
}

fn header(c: &mut Criterion) {
    let header = sign(b"{}", SECRET);
    let mut group = c.benchmark_group("header");
    let verifier = verifier();
    group.bench_function("intake_open", |b| {
        b.iter(|| {
            verifier
                .intake([black_box(header.as_bytes())], Some(2))
                .expect("well-formed")
        });
    });
    group.bench_function("hex_crate_decode", |b| {
        b.iter(|| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(black_box(header.as_bytes()), &mut out).expect("hex");
            out
        });
    });
    group.finish();
}

/// The "same typed struct" parsed with plain serde derive: the floor for verify + parse.
#[derive(Deserialize)]
#[allow(dead_code, reason = "fields are parsed, not read")]
struct PlainEnvelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    data: RunCompleted,
}

fn verify_and_parse(c: &mut Criterion) {
    let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("key");
    let verifier = verifier();
    let body = testing::run_completed_of_len(1024);
    let header = sign(&body, SECRET);
    let mut tag = [0u8; 32];
    hex::decode_to_slice(&header, &mut tag).expect("hex");

    let mut group = c.benchmark_group("verify_parse_1KiB");
    // Differences of a few percent matter here: more samples, longer.
    group.measurement_time(Duration::from_secs(10));
    group.sample_size(200);
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("raw_hmac_plus_serde", |b| {
        b.iter(|| {
            let body = black_box(&body[..]);
            let mut tag = tag;
            hex::decode_to_slice(black_box(header.as_bytes()), &mut tag).expect("hex");
            keyed
                .clone()
                .chain_update(body)
                .verify_slice(&tag)
                .expect("verifies");
            serde_json::from_slice::<PlainEnvelope>(body).expect("parses")
        });
    });
    group.bench_function("airmy_verify_event", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(header.as_bytes()), black_box(body.clone()))
                .and_then(|mut v| v.take_event::<Event>())
                .expect("verifies")
        });
    });
    group.bench_function("airmy_verify_event_typed", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(header.as_bytes()), black_box(body.clone()))
                .and_then(|mut v| v.take_event::<RunCompleted>())
                .expect("verifies")
        });
    });
    group.bench_function("airmy_verify_raw", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(header.as_bytes()), black_box(body.clone()))
                .expect("verifies")
                .into_bytes()
        });
    });
    group.finish();
}

criterion_group!(benches, header, signature, verify_and_parse);
criterion_main!(benches);
