//! Sends the load benchmark's 1 KiB delivery through one of its routers in process, many times,
//! for instruction counts under `valgrind --tool=callgrind` (deterministic, unlike req/s on a
//! shared machine). The routers are `examples::bench`'s, as the bench servers serve them.
//!
//! ```text
//! cargo build --release -p examples --bin router-instructions
//! for r in axum-layer axum-handwritten axum-insecure actix-extractor actix-middleware actix-middleware-app actix-handwritten actix-insecure; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/router-instructions $r 2000
//! done
//! ```
//!
//! With `ROUTER_METRICS=prometheus` (and the `metrics` feature, the default) the Prometheus
//! recorder of the receivers is installed first, so the counts include recording the metrics;
//! build with `--no-default-features` for the suite without the `metrics` feature.

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{App, test as actix_test};
use airmy_verify_actix::AirmyVerify;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use examples::bench;
use tower::ServiceExt;

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let router = args.next().unwrap_or_default();
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let body = bench::body_of_1kib();
    let signature = airmy_verify::sign(&body, bench::SECRET);
    let verifier = bench::verifier();
    if std::env::var("ROUTER_METRICS").is_ok_and(|v| v == "prometheus") {
        install_recorder()?;
    }

    if let Some(kind) = router.strip_prefix("axum-") {
        let (_, app) = bench::axum_routers(verifier)
            .into_iter()
            .find(|(name, _)| *name == kind)
            .ok_or_else(|| format!("unknown router {router}"))?;
        for _ in 0..n {
            let request = Request::post(bench::PATH)
                .header("x-airmy-signature", &signature)
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))?;
            let response = app.clone().oneshot(request).await?;
            assert_eq!(response.status(), StatusCode::OK);
        }
    } else if let Some(kind) = router.strip_prefix("actix-") {
        let name = bench::ACTIX_APPS
            .into_iter()
            .find(|name| *name == kind)
            .ok_or_else(|| format!("unknown router {router}"))?;
        let routes = bench::actix_routes(name, verifier.clone());
        if bench::actix_wraps_app(name) {
            let app = App::new()
                .wrap(AirmyVerify::new(verifier))
                .configure(routes);
            actix_requests(actix_test::init_service(app).await, n, &body, &signature).await;
        } else {
            let app = App::new().configure(routes);
            actix_requests(actix_test::init_service(app).await, n, &body, &signature).await;
        }
    } else {
        return Err("usage: router-instructions axum-{layer,handwritten,insecure}|actix-{extractor,middleware,middleware-app,handwritten,insecure} [N]".into());
    }
    println!("{router}: {n} requests of {} bytes", body.len());
    Ok(())
}

/// Sends the delivery `n` times through an initialized actix app, each answered 200.
async fn actix_requests<S, B>(app: S, n: usize, body: &bytes::Bytes, signature: &str)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    for _ in 0..n {
        let request = actix_test::TestRequest::post()
            .uri(bench::PATH)
            .insert_header(("x-airmy-signature", signature))
            .insert_header(("content-type", "application/json"))
            .set_payload(body.clone())
            .to_request();
        let response = actix_test::call_service(&app, request).await;
        assert_eq!(response.status().as_u16(), 200);
    }
}

/// Installs the Prometheus recorder (never rendered here: what a request costs is recording).
#[cfg(feature = "metrics")]
fn install_recorder() -> Result<(), Box<dyn std::error::Error>> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    // Kept for the life of the process.
    std::mem::forget(handle);
    Ok(())
}

#[cfg(not(feature = "metrics"))]
fn install_recorder() -> Result<(), Box<dyn std::error::Error>> {
    Err("built without the `metrics` feature".into())
}
