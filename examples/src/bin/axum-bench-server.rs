//! The three axum routers of the load benchmark, each on its own port, in one process:
//!
//! - `layer`: `AirmyVerifyLayer` + `AirmyEvent<RunCompleted>` (this suite);
//! - `handwritten`: `Bytes` → pre-keyed HMAC `verify_slice` → serde typed parse, the practical
//!   floor of a secure receiver;
//! - `insecure`: `Json<T>`, which verifies nothing.
//!
//! ```text
//! cargo run --release -p examples --bin axum-bench-server -- OUT_DIR
//! ```
//!
//! Writes `OUT_DIR/body.json` (a 1 KiB `run.completed` created now) and `OUT_DIR/signature`,
//! prints `NAME http://127.0.0.1:PORT/hooks/airmy` for each router, then `ready`, and serves on one worker
//! thread until killed. `scripts/load-bench.sh` drives it with wrk.

use std::path::PathBuf;

use airmy_verify::event::RunCompleted;
use airmy_verify::{Secret, Verifier};
use airmy_verify_axum::{AirmyEvent, AirmyVerifyLayer};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use examples::bench::{self, HmacSha256, PlainEnvelope};

async fn ours(AirmyEvent(run): AirmyEvent<RunCompleted>) -> (StatusCode, String) {
    (
        StatusCode::OK,
        format!("{} {:?}", run.id, run.data.tokens_used),
    )
}

async fn handwritten(
    State(key): State<HmacSha256>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let signature = headers.get("x-airmy-signature").map(|v| v.as_bytes());
    match bench::handwritten(&key, signature, &body) {
        Ok(envelope) => (StatusCode::OK, envelope.answer()),
        Err(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            String::new(),
        ),
    }
}

async fn insecure(Json(envelope): Json<PlainEnvelope>) -> (StatusCode, String) {
    (StatusCode::OK, envelope.answer())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: axum-bench-server OUT_DIR")?,
    );
    bench::write_delivery(&out)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let verifier = Verifier::new(Secret::new(bench::SECRET)?);
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
                    .with_state(bench::key()),
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
        println!("ready");
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
