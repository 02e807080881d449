//! The three axum routers of the load benchmark, each on its own port, in one process:
//!
//! - `layer`: `AirmyVerifyLayer` + `AirmyEvent` extractor (this suite);
//! - `handwritten`: `Bytes` → pre-keyed HMAC `verify_slice` → serde typed parse, the practical
//!   floor of a secure receiver;
//! - `insecure`: `Json<T>`, which verifies nothing.
//!
//! ```text
//! cargo run --release -p examples --bin axum-bench-server -- OUT_DIR
//! ```
//!
//! Writes `OUT_DIR/body.json` (a 1 KiB `run.completed` created now) and `OUT_DIR/signature`,
//! prints `NAME http://127.0.0.1:PORT/hooks/airmy` for each router, and serves on one worker
//! thread until killed. `scripts/load-bench.sh` drives it with wrk.

use std::path::PathBuf;

use airmy_verify::event::RunCompleted;
use airmy_verify::{Secret, Verifier, testing};
use airmy_verify_axum::{AirmyEvent, AirmyVerifyLayer};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What the hand-written and insecure handlers parse into: the same typed struct as ours.
#[derive(Deserialize)]
struct PlainEnvelope {
    id: String,
    #[serde(rename = "type")]
    #[allow(dead_code, reason = "parsed, not read")]
    event_type: String,
    #[serde(with = "airmy_verify::time::serde::rfc3339")]
    #[allow(dead_code, reason = "parsed, not read")]
    created_at: airmy_verify::time::OffsetDateTime,
    data: RunCompleted,
}

async fn ours(AirmyEvent(run): AirmyEvent<RunCompleted>) -> (StatusCode, String) {
    (
        StatusCode::OK,
        format!("{} {:?}", run.id, run.data.tokens_used),
    )
}

async fn handwritten(
    axum::extract::State(key): axum::extract::State<HmacSha256>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    use hmac::Mac;
    let Some(tag) = headers
        .get("x-airmy-signature")
        .and_then(|v| hex::decode(v.as_bytes()).ok())
    else {
        return (StatusCode::UNAUTHORIZED, String::new());
    };
    if key.clone().chain_update(&body).verify_slice(&tag).is_err() {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    match serde_json::from_slice::<PlainEnvelope>(&body) {
        Ok(e) => (StatusCode::OK, format!("{} {:?}", e.id, e.data.tokens_used)),
        Err(_) => (StatusCode::BAD_REQUEST, String::new()),
    }
}

async fn insecure(Json(e): Json<PlainEnvelope>) -> (StatusCode, String) {
    (StatusCode::OK, format!("{} {:?}", e.id, e.data.tokens_used))
}

/// A 1 KiB run.completed envelope created now (whole seconds, so its length is exact).
fn body_of_1kib() -> Bytes {
    let now = airmy_verify::time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| testing::fixed_now());
    let build = |filler: usize| {
        let mut data = testing::sample_data("run.completed");
        data["output"]["result"] = "x".repeat(filler).into();
        testing::sample_event("run.completed")
            .created_at(now)
            .data(data)
            .body()
    };
    build(1024usize.saturating_sub(build(0).len()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: axum-bench-server OUT_DIR")?,
    );
    let body = body_of_1kib();
    std::fs::write(out.join("body.json"), &body)?;
    std::fs::write(out.join("signature"), airmy_verify::sign(&body, SECRET))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use hmac::digest::KeyInit;
        let verifier = Verifier::new(Secret::new(SECRET)?);
        let key = <HmacSha256 as KeyInit>::new_from_slice(SECRET.as_bytes())?;
        let routers = [
            (
                "layer",
                Router::new()
                    .route("/hooks/airmy", post(ours))
                    .layer(AirmyVerifyLayer::new(verifier)),
            ),
            (
                "handwritten",
                Router::new()
                    .route("/hooks/airmy", post(handwritten))
                    .with_state(key),
            ),
            (
                "insecure",
                Router::new().route("/hooks/airmy", post(insecure)),
            ),
        ];
        for (name, router) in routers {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("{name} http://{}/hooks/airmy", listener.local_addr()?);
            tokio::spawn(async move { axum::serve(listener, router).await });
        }
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
