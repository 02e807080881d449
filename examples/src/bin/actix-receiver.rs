//! An AIRMY webhook receiver on actix-web: `POST /hooks/airmy` behind the `AirmyVerify`
//! middleware.
//!
//! ```text
//! AIRMY_WEBHOOK_SECRET=whsec_... cargo run --release -p examples --bin actix-receiver
//! ```
//!
//! The same contract as `axum-receiver` (see the `examples` crate docs): configuration from
//! `AIRMY_WEBHOOK_SECRET`, `AIRMY_WEBHOOK_SECRET_PREVIOUS`, `AIRMY_LISTEN`,
//! `AIRMY_TOLERANCE_SECS`, `AIRMY_IDEMPOTENCY`, `AIRMY_HANDLER_DELAY_MS`,
//! `AIRMY_HANDLER_FAIL_FOR_SECS`, `AIRMY_INBOX` and `AIRMY_INBOX_WORKERS`; prints
//! `listening on http://HOST:PORT` (once, even when the address resolves to several) when
//! ready and `handled <id> <type>` per handling. SIGTERM or Ctrl-C: stops accepting, lets
//! running handlers finish, exits 0.

use actix_web::{App, HttpServer};
use examples::apps::{Handling, actix_app};

#[actix_web::main]
async fn main() {
    let (config, guard, opened) = examples::start_or_exit().await;
    let inbox = opened.as_ref().map(|opened| opened.inbox.clone());
    let metrics = examples::observe_or_exit(&config).await;
    let handling = Handling::printing(config.handler_delay, config.handler_fail_for);
    let routes = actix_app(
        config.verifier.clone(),
        handling.clone(),
        guard.clone(),
        inbox.clone(),
    );
    // One worker per CPU this process may use (actix's default), like the axum receiver's
    // runtime: more workers than CPUs only compete with the inbox's writer thread.
    let server = HttpServer::new(move || App::new().configure(routes.clone()))
        .client_request_timeout(examples::HEADER_TIMEOUT)
        .shutdown_timeout(examples::SHUTDOWN_GRACE.as_secs())
        // Signals are handled below, so running handlers can finish before workers stop.
        .disable_signals();
    let server = match server.bind(&config.listen) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", config.listen);
            std::process::exit(examples::EXIT_CONFIG);
        }
    };
    let console = match (&config.console, &inbox) {
        (Some(setting), Some(inbox)) => {
            match examples::console::serve_actix(setting, inbox.clone()) {
                Ok((addr, console)) => {
                    actix_web::rt::spawn(console);
                    Some(addr)
                }
                Err(err) => examples::exit_config(&err),
            }
        }
        _ => None,
    };
    match server.addrs().first() {
        Some(addr) => examples::announce_all(*addr, console, metrics),
        None => {
            eprintln!("error: no local address");
            std::process::exit(1);
        }
    }
    let (workers, worker) = examples::start_workers(
        opened.as_ref(),
        &config.verifier,
        &handling,
        (
            config.inbox_workers,
            config.inbox_lease,
            config.inbox_max_attempts,
        ),
        "actix",
    );
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        examples::shutdown_signal().await;
        // One deadline for everything: stop accepting, let detached handlers and inbox
        // workers finish, then stop the server (gracefully if the handlers finished in time,
        // at once otherwise, so the whole stop stays within the grace period).
        let deadline = tokio::time::Instant::now() + examples::SHUTDOWN_GRACE;
        handle.pause().await;
        workers.cancel();
        let idle = examples::drain(guard.as_ref(), deadline).await;
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        handle.stop(idle).await;
    });
    if let Err(err) = server.await {
        eprintln!("error: server failed: {err}");
        std::process::exit(1);
    }
}
