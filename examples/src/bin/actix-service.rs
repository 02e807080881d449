//! A whole service on actix-web, as an application writes it: its own state and routes beside
//! AIRMY's verified webhook, the inbox on PostgreSQL on the application's own pool, the
//! console behind its own token, graceful shutdown (see `examples::service`).
//!
//! ```text
//! DATABASE_URL=postgres://app@127.0.0.1/app AIRMY_WEBHOOK_SECRET=whsec_... \
//!     cargo run -p examples --bin actix-service
//! ```

use examples::service::{self, Config, Database};

#[actix_web::main]
async fn main() {
    examples::service::init_logging();
    let config = Config::from_env().unwrap_or_else(|err| examples::exit_config(&err));
    let database = Database::open(&config.database_url)
        .await
        .unwrap_or_else(|err| examples::exit_config(&err));
    let listener = match std::net::TcpListener::bind(&config.listen) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: LISTEN: cannot listen on {}: {err}", config.listen);
            std::process::exit(examples::EXIT_CONFIG);
        }
    };
    if let Ok(addr) = listener.local_addr() {
        println!("listening on http://{addr}");
    }
    // SIGTERM or Ctrl-C: the server stops, then the worker, the backend, the pool.
    let served = service::actix::serve(config, database, listener, examples::shutdown_signal());
    if let Err(err) = served.await {
        eprintln!("error: the server failed: {err}");
        std::process::exit(1);
    }
}
