//! Repeats one verification path many times, for instruction counts under
//! `valgrind --tool=callgrind` (deterministic, unlike timings on a shared machine):
//!
//! ```text
//! cargo build --release -p airmy-verify --example instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/instructions floor 20000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/instructions event 20000
//! ```
//!
//! `floor` is a pre-keyed HMAC `verify_slice` plus a plain serde derive parse into the same
//! typed struct; `event` is `Verifier::verify(..)?.take_event::<Event>()` (with the freshness
//! check), the path every delivery takes.

use std::hint::black_box;

use airmy_verify::event::RunCompleted;
use airmy_verify::{Event, Secret, Verifier, sign, testing};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed, not read")]
struct PlainEnvelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: time::OffsetDateTime,
    data: RunCompleted,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let now = time::OffsetDateTime::now_utc();
    let mut data = testing::sample_data("run.completed");
    data["output"]["result"] = "x".repeat(760).into();
    let body = testing::sample_event("run.completed")
        .created_at(now)
        .data(data)
        .body();
    let header = sign(&body, SECRET);
    let tag: [u8; 32] = hex::decode(&header)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("key");
    let verifier = Verifier::new(Secret::new(SECRET).expect("secret"));
    match mode.as_str() {
        "floor" => {
            for _ in 0..n {
                let body = black_box(&body[..]);
                keyed
                    .clone()
                    .chain_update(body)
                    .verify_slice(&tag)
                    .expect("verifies");
                black_box(serde_json::from_slice::<PlainEnvelope>(body).expect("parses"));
            }
        }
        "event" => {
            for _ in 0..n {
                let body = black_box(body.clone());
                black_box(
                    verifier
                        .verify(black_box(&header), body)
                        .and_then(|mut verified| verified.take_event::<Event>())
                        .expect("verifies"),
                );
            }
        }
        other => eprintln!("usage: instructions floor|event [N] (got {other:?})"),
    }
    println!("{} bytes x {n}", body.len());
}
