//! The four actix-web apps of the load benchmark, each on its own port, in one process:
//!
//! - `extractor`: `AirmyEvent<RunCompleted>` with the verifier in `app_data` (this suite);
//! - `middleware`: the `AirmyVerify` middleware + the same extractor (this suite);
//! - `handwritten`: `web::Bytes` → pre-keyed HMAC `verify_slice` → serde typed parse, the
//!   practical floor of a secure receiver;
//! - `insecure`: `web::Json<T>`, which verifies nothing.
//!
//! ```text
//! cargo run --release -p examples --bin actix-bench-server -- OUT_DIR
//! ```
//!
//! Writes `OUT_DIR/body.json` and `OUT_DIR/signature`, prints `NAME http://127.0.0.1:PORT/hooks/airmy`
//! for each app, then `ready`, and serves each on one worker until killed. `scripts/load-bench.sh` drives it.

use std::path::PathBuf;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use airmy_verify::event::RunCompleted;
use airmy_verify::{Secret, Verifier};
use airmy_verify_actix::{AirmyEvent, AirmyVerify};
use examples::bench::{self, HmacSha256, PlainEnvelope};

async fn ours(AirmyEvent(run): AirmyEvent<RunCompleted>) -> HttpResponse {
    HttpResponse::Ok().body(format!("{} {:?}", run.id, run.data.tokens_used))
}

async fn handwritten(
    key: web::Data<HmacSha256>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let signature = req.headers().get("x-airmy-signature").map(|v| v.as_bytes());
    match bench::handwritten(&key, signature, &body) {
        Ok(envelope) => HttpResponse::Ok().body(envelope.answer()),
        Err(401) => HttpResponse::Unauthorized().finish(),
        Err(_) => HttpResponse::BadRequest().finish(),
    }
}

async fn insecure(envelope: web::Json<PlainEnvelope>) -> HttpResponse {
    HttpResponse::Ok().body(envelope.answer())
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: actix-bench-server OUT_DIR")?,
    );
    bench::write_delivery(&out)?;
    let verifier = Verifier::new(Secret::new(bench::SECRET)?);
    let key = web::Data::new(bench::key());
    let mut servers = Vec::new();
    for name in ["extractor", "middleware", "handwritten", "insecure"] {
        let (verifier, key) = (verifier.clone(), key.clone());
        let server = HttpServer::new(move || {
            let app = App::new().app_data(verifier.clone()).app_data(key.clone());
            match name {
                "extractor" => app.route("/hooks/airmy", web::post().to(ours)),
                "middleware" => app.service(
                    web::scope("/hooks")
                        .wrap(AirmyVerify::new(verifier.clone()))
                        .route("/airmy", web::post().to(ours)),
                ),
                "handwritten" => app.route("/hooks/airmy", web::post().to(handwritten)),
                _ => app.route("/hooks/airmy", web::post().to(insecure)),
            }
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))?;
        println!("{name} http://{}/hooks/airmy", server.addrs()[0]);
        servers.push(actix_web::rt::spawn(server.run()));
    }
    println!("ready");
    actix_web::rt::signal::ctrl_c().await?;
    Ok(())
}
