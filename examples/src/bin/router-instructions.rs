//! Sends the load benchmark's 1 KiB delivery through one router in-process, many times, for
//! instruction counts under `valgrind --tool=callgrind` (deterministic, unlike req/s on a
//! shared machine). The routers are those of `axum-bench-server` and `actix-bench-server`.
//!
//! ```text
//! cargo build --release -p examples --bin router-instructions
//! for r in axum-layer axum-handwritten axum-insecure actix-extractor actix-middleware actix-handwritten actix-insecure; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/router-instructions $r 2000
//! done
//! ```

use actix_web::{App, HttpRequest, HttpResponse, test as actix_test, web};
use airmy_verify::event::RunCompleted;
use airmy_verify::{Secret, Verifier};
use airmy_verify_actix::AirmyVerify;
use airmy_verify_axum::{AirmyEvent, AirmyVerifyLayer};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use examples::bench::{self, HmacSha256, PlainEnvelope};
use tower::ServiceExt;

async fn axum_ours(AirmyEvent(run): AirmyEvent<RunCompleted>) -> String {
    format!("{} {:?}", run.id, run.data.tokens_used)
}

async fn axum_handwritten(
    State(key): State<HmacSha256>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let signature = headers.get("x-airmy-signature").map(|v| v.as_bytes());
    match bench::handwritten(&key, signature, &body) {
        Ok(envelope) => (StatusCode::OK, envelope.answer()),
        Err(_) => (StatusCode::UNAUTHORIZED, String::new()),
    }
}

async fn axum_insecure(Json(envelope): Json<PlainEnvelope>) -> String {
    envelope.answer()
}

async fn actix_ours(
    airmy_verify_actix::AirmyEvent(run): airmy_verify_actix::AirmyEvent<RunCompleted>,
) -> HttpResponse {
    HttpResponse::Ok().body(format!("{} {:?}", run.id, run.data.tokens_used))
}

async fn actix_handwritten(
    key: web::Data<HmacSha256>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let signature = req.headers().get("x-airmy-signature").map(|v| v.as_bytes());
    match bench::handwritten(&key, signature, &body) {
        Ok(envelope) => HttpResponse::Ok().body(envelope.answer()),
        Err(_) => HttpResponse::Unauthorized().finish(),
    }
}

async fn actix_insecure(envelope: web::Json<PlainEnvelope>) -> HttpResponse {
    HttpResponse::Ok().body(envelope.answer())
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let router = args.next().unwrap_or_default();
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let body = bench::body_of_1kib();
    let signature = airmy_verify::sign(&body, bench::SECRET);
    let verifier = Verifier::new(Secret::new(bench::SECRET)?);

    if let Some(kind) = router.strip_prefix("axum-") {
        let app = match kind {
            "layer" => Router::new()
                .route("/h", post(axum_ours))
                .layer(AirmyVerifyLayer::new(verifier)),
            "handwritten" => Router::new()
                .route("/h", post(axum_handwritten))
                .with_state(bench::key()),
            "insecure" => Router::new().route("/h", post(axum_insecure)),
            other => return Err(format!("unknown router axum-{other}").into()),
        };
        for _ in 0..n {
            let request = Request::post("/h")
                .header("x-airmy-signature", &signature)
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))?;
            let response = app.clone().oneshot(request).await?;
            assert_eq!(response.status(), StatusCode::OK);
        }
    } else if let Some(kind) = router.strip_prefix("actix-") {
        let key = web::Data::new(bench::key());
        let base = App::new().app_data(verifier.clone()).app_data(key);
        macro_rules! drive {
            ($app:expr) => {{
                let app = actix_test::init_service($app).await;
                for _ in 0..n {
                    let request = actix_test::TestRequest::post()
                        .uri("/h")
                        .insert_header(("x-airmy-signature", signature.as_str()))
                        .insert_header(("content-type", "application/json"))
                        .set_payload(body.clone())
                        .to_request();
                    let response = actix_test::call_service(&app, request).await;
                    assert_eq!(response.status().as_u16(), 200);
                }
            }};
        }
        match kind {
            "extractor" => drive!(base.route("/h", web::post().to(actix_ours))),
            "middleware" => drive!(
                base.service(
                    web::scope("")
                        .wrap(AirmyVerify::new(verifier.clone()))
                        .route("/h", web::post().to(actix_ours))
                )
            ),
            "handwritten" => drive!(base.route("/h", web::post().to(actix_handwritten))),
            "insecure" => drive!(base.route("/h", web::post().to(actix_insecure))),
            other => return Err(format!("unknown router actix-{other}").into()),
        }
    } else {
        return Err("usage: router-instructions axum-{layer,handwritten,insecure}|actix-{extractor,middleware,handwritten,insecure} [N]".into());
    }
    println!("{router}: {n} requests of {} bytes", body.len());
    Ok(())
}
