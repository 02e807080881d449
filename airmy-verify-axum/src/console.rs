//! The inbox's web console as an axum [`Router`] (feature `console`); the pages, their rules
//! and their security are [`airmy_verify_inbox::console`]'s. Nest it where you want it, behind
//! your own authentication, which may give a request a [`Role`] in its extensions (a request
//! without one is an operator's):
//!
//! ```no_run
//! use axum::{Router, middleware::{self, Next}, extract::Request, response::Response, http::StatusCode};
//! use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions, console::{Console, Role}};
//!
//! /// Your own authentication: your session or SSO layer says who this is.
//! async fn operators_only(mut request: Request, next: Next) -> Result<Response, StatusCode> {
//!     let role = match request.headers().get("x-sso-groups").and_then(|v| v.to_str().ok()) {
//!         Some(groups) if groups.split(',').any(|g| g == "inbox-operators") => Role::Operator,
//!         Some(groups) if groups.split(',').any(|g| g == "inbox-viewers") => Role::ReadOnly,
//!         _ => return Err(StatusCode::UNAUTHORIZED),
//!     };
//!     request.extensions_mut().insert(role);
//!     Ok(next.run(request).await)
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
//!
//! Without an auth layer of your own, the console's built-in login
//! ([`Console::login`](airmy_verify_inbox::console::Console::login)) asks for a token:
//!
//! ```no_run
//! use axum::Router;
//! use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions, console::{Console, Login, Token}};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inbox = Inbox::new(SqliteBackend::open("inbox.db", SqliteOptions::default())?);
//! let login = Login::new(Token::new(std::env::var("CONSOLE_TOKEN")?)?)
//!     .read_only(Token::new(std::env::var("CONSOLE_READONLY_TOKEN")?)?)
//!     .secure_cookie(true);
//! let app: Router = Router::new().nest(
//!     "/console",
//!     airmy_verify_axum::console::router(Console::new(inbox).login(login)),
//! );
//! # Ok(())
//! # }
//! ```

use airmy_verify_inbox::console::{Console, ConsoleRequest, Role};
use axum::Router;
use axum::body::Body;
use axum::extract::{NestedPath, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

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

/// A header's value as text, if it is.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
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
    // HTTP/2 may split the cookies over several headers.
    let cookies: Vec<&str> = parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let cookie = cookies.join("; ");
    let host = header(&parts.headers, "host").or_else(|| parts.uri.authority().map(|a| a.as_str()));
    let answer = console
        .handle(
            ConsoleRequest::new(parts.method.as_str(), parts.uri.path())
                .base(base)
                .query(parts.uri.query().unwrap_or(""))
                .body(&body)
                .fetch_site(header(&parts.headers, "sec-fetch-site"))
                .host(host)
                .cookie((!cookies.is_empty()).then_some(cookie.as_str()))
                .role(parts.extensions.get::<Role>().copied().unwrap_or_default()),
        )
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
