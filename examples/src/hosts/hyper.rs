//! The verify layer on a plain hyper 1 server, no axum: `AirmyVerifyLayer` around a
//! `tower::service_fn`, served through hyper-util's `TowerToHyperService`.
//!
//! ```no_run
//! use airmy_verify::{Secret, Verifier};
//! use airmy_verify_axum::AirmyVerifyLayer;
//! use examples::apps::Handling;
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::new(Secret::new(std::env::var("AIRMY_WEBHOOK_SECRET")?)?);
//! let service = ServiceBuilder::new()
//!     .layer(AirmyVerifyLayer::new(verifier))
//!     .service(examples::hosts::handler(Handling::default(), "hyper"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! examples::hosts::hyper::serve(listener, service, examples::shutdown_signal()).await;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::{HEADER_TIMEOUT, SHUTDOWN_GRACE};

/// Serves `service` (any tower service of `http::Request<hyper::body::Incoming>`, such as the
/// verify layer around a handler) on `listener` over HTTP/1.1 until `shutdown` resolves, then
/// lets open connections finish for up to 30 s. A request's headers must arrive within 5 s.
pub async fn serve<S, B>(
    listener: tokio::net::TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(target: "airmy_receiver", error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(service.clone()),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that hangs up or times out is not the server's failure.
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}
