//! An AIRMY webhook receiver on actix-web: `POST /hooks/airmy` behind the `AirmyVerify`
//! middleware.
//!
//! ```text
//! AIRMY_WEBHOOK_SECRET=whsec_... cargo run --release -p examples --bin actix-receiver
//! ```
//!
//! The same contract as `axum-receiver`: configuration from `AIRMY_WEBHOOK_SECRET`,
//! `AIRMY_WEBHOOK_SECRET_PREVIOUS`, `AIRMY_LISTEN`, `AIRMY_TOLERANCE_SECS` and
//! `AIRMY_IDEMPOTENCY`; prints
//! `listening on http://HOST:PORT` when ready; answers an accepted event with 200 and
//! `{"id":"<event id>","type":"<event type>"}`, a refused one with the core's status and body.

use actix_web::{App, HttpServer};

#[actix_web::main]
async fn main() {
    let (config, guard) = examples::start_or_exit().await;
    let routes =
        examples::apps::actix_app(config.verifier, examples::apps::Accepted::default(), guard);
    let server = HttpServer::new(move || App::new().configure(routes.clone())).workers(2);
    let server = match server.bind(&config.listen) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", config.listen);
            std::process::exit(examples::EXIT_CONFIG);
        }
    };
    for addr in server.addrs() {
        examples::announce(addr);
    }
    if let Err(err) = server.run().await {
        eprintln!("error: server failed: {err}");
        std::process::exit(1);
    }
}
