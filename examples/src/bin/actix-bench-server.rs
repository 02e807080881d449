//! The five actix-web apps of the load benchmark (`examples::bench::actix_routes`), each on its
//! own port, in one process:
//!
//! - `extractor`: `AirmyEvent<RunCompleted>` with the verifier in `app_data` (this suite);
//! - `middleware`: the `AirmyVerify` middleware on a scope + the same extractor (this suite);
//! - `middleware-app`: the same, with the middleware wrapping the whole `App`;
//! - `handwritten`: `web::Bytes` → pre-keyed HMAC `verify_slice` → serde typed parse, the
//!   practical floor of a secure receiver;
//! - `insecure`: `web::Json<T>`, which verifies nothing.
//!
//! ```text
//! cargo run --release -p examples --bin actix-bench-server -- OUT_DIR
//! ```
//!
//! Writes `OUT_DIR/body.json` and `OUT_DIR/signature`, prints `NAME http://127.0.0.1:PORT/hooks/airmy`
//! for each app, then `ready`, and serves each on one worker until killed.
//! `scripts/load-bench.sh` drives it.

use std::path::PathBuf;

use actix_web::{App, HttpServer};
use airmy_verify_actix::AirmyVerify;
use examples::bench;

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: actix-bench-server OUT_DIR")?,
    );
    bench::write_delivery(&out)?;
    let verifier = bench::verifier();
    for name in bench::ACTIX_APPS {
        let routes = bench::actix_routes(name, verifier.clone());
        let (addr, server) = if bench::actix_wraps_app(name) {
            let middleware = AirmyVerify::new(verifier.clone());
            let app = move || {
                App::new()
                    .wrap(middleware.clone())
                    .configure(routes.clone())
            };
            let server = HttpServer::new(app).workers(1).disable_signals();
            let server = server.bind(("127.0.0.1", 0))?;
            (server.addrs()[0], server.run())
        } else {
            let app = move || App::new().configure(routes.clone());
            let server = HttpServer::new(app).workers(1).disable_signals();
            let server = server.bind(("127.0.0.1", 0))?;
            (server.addrs()[0], server.run())
        };
        println!("{name} http://{addr}{}", bench::PATH);
        actix_web::rt::spawn(server);
    }
    println!("ready");
    actix_web::rt::signal::ctrl_c().await?;
    Ok(())
}
