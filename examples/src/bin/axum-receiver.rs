//! An AIRMY webhook receiver on axum: `POST /hooks/airmy` behind `AirmyVerifyLayer`.
//!
//! ```text
//! AIRMY_WEBHOOK_SECRET=whsec_... cargo run --release -p examples --bin axum-receiver
//! ```
//!
//! Configuration is in the `examples` crate docs (`AIRMY_WEBHOOK_SECRET`,
//! `AIRMY_WEBHOOK_SECRET_PREVIOUS`, `AIRMY_LISTEN`, `AIRMY_TOLERANCE_SECS`,
//! `AIRMY_IDEMPOTENCY`). Prints
//! `listening on http://HOST:PORT` when ready; answers an accepted event with 200 and
//! `{"id":"<event id>","type":"<event type>"}`, a refused one with the core's status and body.

#[tokio::main]
async fn main() {
    let (config, guard) = examples::start_or_exit().await;
    let app = examples::apps::axum_app(config.verifier, examples::apps::Accepted::default(), guard);
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", config.listen);
            std::process::exit(examples::EXIT_CONFIG);
        }
    };
    match listener.local_addr() {
        Ok(addr) => examples::announce(addr),
        Err(err) => {
            eprintln!("error: no local address: {err}");
            std::process::exit(1);
        }
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("error: server failed: {err}");
        std::process::exit(1);
    }
}
