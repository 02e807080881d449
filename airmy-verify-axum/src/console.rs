//! The inbox's web console as an axum [`Router`] (feature `console`); the pages, their rules
//! and their security are [`airmy_verify_inbox::console`]'s. Nest it where you want it, behind
//! your own authentication:
//!
//! ```no_run
//! use axum::{Router, middleware::{self, Next}, extract::Request, response::Response, http::StatusCode};
//! use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions, console::Console};
//!
//! /// Your own authentication (here a bearer token; use your session or SSO layer).
//! async fn operators_only(request: Request, next: Next) -> Result<Response, StatusCode> {
//!     match request.headers().get("authorization") {
//!         Some(value) if value == "Bearer s3cret-operator-token" => Ok(next.run(request).await),
//!         _ => Err(StatusCode::UNAUTHORIZED),
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inbox = Inbox::new(SqliteBackend::open("inbox.db", SqliteOptions::default())?);
//! let app: Router = Router::new().nest(
//!     "/console",
//!     airmy_verify_axum::console::router(Console::new(inbox))
//!         .layer(middleware::from_fn(operators_only)),
//! );
//! # Ok(())
//! # }
//! ```

use airmy_verify_inbox::console::{Console, ConsoleRequest};
use axum::Router;
use axum::body::Body;
use axum::extract::{NestedPath, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};

/// The largest form the console reads (its forms are a few hundred bytes).
const MAX_FORM: usize = 64 * 1024;

/// The console's routes, for any state `S` of your application: nest them at any path (links
/// follow it), or merge them at the root.
pub fn router<S>(console: Console) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new().fallback(move |request: Request| {
        let console = console.clone();
        async move { serve(&console, request).await }
    })
}

async fn serve(console: &Console, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_FORM).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
    };
    let base = parts
        .extensions
        .get::<NestedPath>()
        .map_or("", |nested| nested.as_str().trim_end_matches('/'));
    let fetch_site = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    let answer = console
        .handle(ConsoleRequest {
            method: parts.method.as_str(),
            base,
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            fetch_site,
            body: &body,
        })
        .await;
    let mut response = Response::new(if parts.method == http::Method::HEAD {
        Body::empty()
    } else {
        Body::from(answer.body)
    });
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .append(HeaderName::from_static(name), value);
        }
    }
    response
}
