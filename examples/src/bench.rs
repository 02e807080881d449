//! What the load-benchmark servers and `router-instructions` share: the secret, the 1 KiB
//! delivery they are sent, and the routers under test, ours next to the hand-written secure
//! handler (the floor every adapter is compared with) and the unverified JSON one.

use std::path::Path;

use airmy_verify::event::RunCompleted;
use airmy_verify::testing;
use bytes::Bytes;
use hmac::Mac;
use hmac::digest::KeyInit;
use serde::Deserialize;

/// The signing secret of the benchmark servers.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// HMAC-SHA256, as the hand-written handler keys it.
pub type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What the hand-written and insecure handlers parse into: the same typed struct as ours.
#[derive(Debug, Deserialize)]
pub struct PlainEnvelope {
    /// The event id.
    pub id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The creation time.
    #[serde(with = "airmy_verify::time::serde::rfc3339")]
    pub created_at: airmy_verify::time::OffsetDateTime,
    /// The run.
    pub data: RunCompleted,
}

impl PlainEnvelope {
    /// The body every router answers with.
    #[must_use]
    pub fn answer(&self) -> String {
        format!("{} {:?}", self.id, self.data.tokens_used)
    }
}

/// The verifier of the benchmark routers: [`SECRET`], the default body limit, and a freshness
/// tolerance of one day, so that the one delivery a load run repeats for many minutes stays
/// fresh while every request still goes through the freshness check.
///
/// # Panics
///
/// Never: [`SECRET`] is not empty.
#[must_use]
pub fn verifier() -> airmy_verify::Verifier {
    let secret = airmy_verify::Secret::new(SECRET).expect("a non-empty secret");
    airmy_verify::Verifier::builder(secret)
        .tolerance(std::time::Duration::from_secs(24 * 60 * 60))
        .build()
}

/// The pre-keyed HMAC of [`SECRET`].
///
/// # Panics
///
/// Never: HMAC takes keys of any length.
#[must_use]
pub fn key() -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("any key length")
}

/// The hand-written secure handler: hex header → pre-keyed HMAC `verify_slice` → serde parse.
///
/// # Errors
///
/// 401 for a missing or wrong signature, 400 for a body that does not parse.
pub fn handwritten(
    key: &HmacSha256,
    signature: Option<&[u8]>,
    body: &[u8],
) -> Result<PlainEnvelope, u16> {
    let tag = signature.and_then(|s| hex::decode(s).ok()).ok_or(401u16)?;
    key.clone()
        .chain_update(body)
        .verify_slice(&tag)
        .map_err(|_| 401u16)?;
    serde_json::from_slice(body).map_err(|_| 400u16)
}

/// A 1 KiB `run.completed` envelope created now (whole seconds, so its length is exact).
#[must_use]
pub fn body_of_1kib() -> Bytes {
    testing::run_completed_of_len(1024)
}

/// Writes `body.json` and `signature` (of a fresh 1 KiB delivery) into `dir` for wrk.
///
/// # Errors
///
/// When the files cannot be written.
pub fn write_delivery(dir: &Path) -> std::io::Result<()> {
    let body = body_of_1kib();
    std::fs::write(dir.join("body.json"), &body)?;
    std::fs::write(dir.join("signature"), airmy_verify::sign(&body, SECRET))
}

/// The path every benchmark router serves.
pub const PATH: &str = "/hooks/airmy";

/// The axum routers of the benchmark, by name: `layer` (ours), `handwritten`, `insecure`.
#[must_use]
pub fn axum_routers(verifier: airmy_verify::Verifier) -> Vec<(&'static str, axum::Router)> {
    use airmy_verify_axum::{AirmyEvent, AirmyVerifyLayer};
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    async fn ours(AirmyEvent(run): AirmyEvent<RunCompleted>) -> String {
        format!("{} {:?}", run.id, run.data.tokens_used)
    }
    async fn hand(
        State(key): State<HmacSha256>,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, String) {
        let signature = headers.get("x-airmy-signature").map(|v| v.as_bytes());
        match handwritten(&key, signature, &body) {
            Ok(envelope) => (StatusCode::OK, envelope.answer()),
            Err(status) => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                String::new(),
            ),
        }
    }
    async fn insecure(axum::Json(envelope): axum::Json<PlainEnvelope>) -> String {
        envelope.answer()
    }
    vec![
        (
            "layer",
            axum::Router::new()
                .route(PATH, post(ours))
                .layer(AirmyVerifyLayer::new(verifier)),
        ),
        (
            "handwritten",
            axum::Router::new()
                .route(PATH, post(hand))
                .with_state(key()),
        ),
        ("insecure", axum::Router::new().route(PATH, post(insecure))),
    ]
}

/// The names of the actix apps of the benchmark.
pub const ACTIX_APPS: [&str; 5] = [
    "extractor",
    "middleware",
    "middleware-app",
    "handwritten",
    "insecure",
];

/// Whether the actix app `name` is wrapped as a whole in [`AirmyVerify`](airmy_verify_actix::AirmyVerify)
/// (`middleware-app`); its routes come from [`actix_routes`] as for the others.
#[must_use]
pub fn actix_wraps_app(name: &str) -> bool {
    name == "middleware-app"
}

/// The routes of the actix app `name` (one of [`ACTIX_APPS`]): `extractor` (ours, verifier in
/// `app_data`), `middleware` (ours, `AirmyVerify` on a scope), `middleware-app` (ours, the
/// route of the app that [`actix_wraps_app`] wraps), `handwritten`, `insecure`.
pub fn actix_routes(
    name: &'static str,
    verifier: airmy_verify::Verifier,
) -> impl Fn(&mut actix_web::web::ServiceConfig) + Clone + Send + 'static {
    use actix_web::{HttpRequest, HttpResponse, web};
    use airmy_verify_actix::{AirmyEvent, AirmyVerify};

    async fn ours(AirmyEvent(run): AirmyEvent<RunCompleted>) -> HttpResponse {
        HttpResponse::Ok().body(format!("{} {:?}", run.id, run.data.tokens_used))
    }
    async fn hand(key: web::Data<HmacSha256>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
        let signature = req.headers().get("x-airmy-signature").map(|v| v.as_bytes());
        match handwritten(&key, signature, &body) {
            Ok(envelope) => HttpResponse::Ok().body(envelope.answer()),
            Err(401) => HttpResponse::Unauthorized().finish(),
            Err(_) => HttpResponse::BadRequest().finish(),
        }
    }
    async fn insecure(envelope: web::Json<PlainEnvelope>) -> HttpResponse {
        HttpResponse::Ok().body(envelope.answer())
    }
    let key = web::Data::new(key());
    move |config: &mut web::ServiceConfig| {
        config.app_data(verifier.clone()).app_data(key.clone());
        match name {
            "extractor" => {
                config.route(PATH, web::post().to(ours));
            }
            "middleware" => {
                config.service(
                    web::scope("")
                        .wrap(AirmyVerify::new(verifier.clone()))
                        .route(PATH, web::post().to(ours)),
                );
            }
            "middleware-app" => {
                config.route(PATH, web::post().to(ours));
            }
            "handwritten" => {
                config.route(PATH, web::post().to(hand));
            }
            _ => {
                config.route(PATH, web::post().to(insecure));
            }
        }
    }
}
