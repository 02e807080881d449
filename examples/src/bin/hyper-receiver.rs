//! An AIRMY webhook receiver on plain hyper 1 (no axum): `POST /hooks/airmy` behind
//! `AirmyVerifyLayer`, the handler a `tower::service_fn` ([`examples::hosts`]).
//!
//! ```text
//! AIRMY_WEBHOOK_SECRET=whsec_... cargo run --release -p examples --bin hyper-receiver
//! ```
//!
//! Reads `AIRMY_WEBHOOK_SECRET`, `AIRMY_WEBHOOK_SECRET_PREVIOUS`, `AIRMY_LISTEN`,
//! `AIRMY_TOLERANCE_SECS`, `AIRMY_HANDLER_DELAY_MS` and `AIRMY_HANDLER_FAIL_FOR_SECS` as the
//! other receivers do (the `examples` crate docs); `AIRMY_INBOX` and `AIRMY_IDEMPOTENCY` are
//! the axum and actix receivers' and exit 2 here. Prints `listening on http://HOST:PORT` when
//! ready and `handled <id> <type>` per handling; answers an accepted event (an unknown type
//! too) with 200 and `{"id":"<event id>","type":"<event type>"}`, a refused one with the
//! core's status and body. Every path is the webhook's: a plain hyper server has no router.

use airmy_verify_axum::AirmyVerifyLayer;
use examples::apps::Handling;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() {
    let config = examples::config_or_exit();
    if config.inbox.is_some() || config.idempotency.is_some() {
        eprintln!("error: the hyper receiver takes neither AIRMY_INBOX nor AIRMY_IDEMPOTENCY");
        std::process::exit(examples::EXIT_CONFIG);
    }
    examples::observe::init_logging(config.log_format);
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", config.listen);
            std::process::exit(examples::EXIT_CONFIG);
        }
    };
    let handling = Handling::printing(config.handler_delay, config.handler_fail_for);
    let service = ServiceBuilder::new()
        .layer(AirmyVerifyLayer::new(config.verifier))
        .service(examples::hosts::handler(handling, "hyper"));
    match listener.local_addr() {
        Ok(addr) => examples::announce(addr, None),
        Err(err) => {
            eprintln!("error: no local address: {err}");
            std::process::exit(1);
        }
    }
    examples::hosts::hyper::serve(listener, service, examples::shutdown_signal()).await;
}
