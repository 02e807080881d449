//! The three axum routers of the load benchmark (`examples::bench::axum_routers`), each on its
//! own port, in one process:
//!
//! - `layer`: `AirmyVerifyLayer` + `AirmyEvent<RunCompleted>` (this suite);
//! - `handwritten`: `Bytes` → pre-keyed HMAC `verify_slice` → serde typed parse, the practical
//!   floor of a secure receiver;
//! - `insecure`: `Json<T>`, which verifies nothing.
//!
//! ```text
//! cargo run --release -p examples --bin axum-bench-server -- OUT_DIR
//! ```
//!
//! Writes `OUT_DIR/body.json` (a 1 KiB `run.completed` created now) and `OUT_DIR/signature`,
//! prints `NAME http://127.0.0.1:PORT/hooks/airmy` for each router, then `ready`, and serves
//! on one worker thread until killed. `scripts/load-bench.sh` drives it with wrk.

use std::path::PathBuf;

use examples::bench;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: axum-bench-server OUT_DIR")?,
    );
    bench::write_delivery(&out)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let verifier = bench::verifier();
        for (name, router) in bench::axum_routers(verifier) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("{name} http://{}{}", listener.local_addr()?, bench::PATH);
            tokio::spawn(async move { axum::serve(listener, router).await });
        }
        println!("ready");
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
