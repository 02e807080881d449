//! An AIRMY webhook receiver on axum: `POST /hooks/airmy` behind `AirmyVerifyLayer`.
//!
//! ```text
//! AIRMY_WEBHOOK_SECRET=whsec_... cargo run --release -p examples --bin axum-receiver
//! ```
//!
//! Configuration and the stdout contract are in the `examples` crate docs
//! (`AIRMY_WEBHOOK_SECRET`, `AIRMY_WEBHOOK_SECRET_PREVIOUS`, `AIRMY_LISTEN`,
//! `AIRMY_TOLERANCE_SECS`, `AIRMY_IDEMPOTENCY`, `AIRMY_HANDLER_DELAY_MS`,
//! `AIRMY_HANDLER_FAIL_FOR_SECS`, `AIRMY_INBOX`, `AIRMY_INBOX_WORKERS`). Prints
//! `listening on http://HOST:PORT` when ready and `handled <id> <type>` per handling; answers
//! an accepted event with 200 and `{"id":"<event id>","type":"<event type>"}` (with an inbox:
//! `{"status":"accepted","id":"…"}`), a refused one with the core's status and body. SIGTERM
//! or Ctrl-C: stops accepting, lets running handlers finish, exits 0.

use examples::apps::{Handling, axum_app};

#[tokio::main]
async fn main() {
    let (config, guard, opened) = examples::start_or_exit().await;
    let inbox = opened.as_ref().map(|opened| opened.inbox.clone());
    let metrics = examples::observe_or_exit(&config).await;
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", config.listen);
            std::process::exit(examples::EXIT_CONFIG);
        }
    };
    let console = match (&config.console, &inbox) {
        (Some(setting), Some(inbox)) => {
            match examples::console::serve_axum(setting, inbox.clone()).await {
                Ok(addr) => Some(addr),
                Err(err) => examples::exit_config(&err),
            }
        }
        _ => None,
    };
    let handling = Handling::printing(config.handler_delay, config.handler_fail_for);
    let (workers, worker) = examples::start_workers(
        opened.as_ref(),
        &config.verifier,
        &handling,
        (
            config.inbox_workers,
            config.inbox_lease,
            config.inbox_max_attempts,
        ),
        "axum",
    );
    let app = axum_app(config.verifier, handling, guard.clone(), inbox);
    match listener.local_addr() {
        Ok(addr) => examples::announce_all(addr, console, metrics),
        Err(err) => {
            eprintln!("error: no local address: {err}");
            std::process::exit(1);
        }
    }
    // At the signal the inbox workers stop taking entries at once, while open connections
    // finish theirs.
    let shutdown = {
        let workers = workers.clone();
        async move {
            examples::shutdown_signal().await;
            workers.cancel();
        }
    };
    let deadline = match examples::serve_axum(listener, app, shutdown).await {
        Ok(deadline) => deadline,
        Err(err) => {
            eprintln!("error: server failed: {err}");
            std::process::exit(1);
        }
    };
    // One deadline for everything: open connections, detached handlers, inbox workers.
    examples::drain(guard.as_ref(), deadline).await;
    if let Some(worker) = worker {
        let _ = worker.await;
    }
}
