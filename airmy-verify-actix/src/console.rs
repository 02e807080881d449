//! The inbox's web console as an actix-web [`Scope`] (feature `console`); the pages, their
//! rules and their security are [`airmy_verify_inbox::console`]'s. Mount it where you want it,
//! behind your own authentication:
//!
//! ```no_run
//! use actix_web::{App, HttpResponse, dev::Service as _};
//! use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions, console::Console};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inbox = Inbox::new(SqliteBackend::open("inbox.db", SqliteOptions::default())?);
//! let console = Console::new(inbox);
//! let app = move || {
//!     App::new().service(
//!         airmy_verify_actix::console::scope("/console", console.clone()).wrap_fn(|req, srv| {
//!             // Your own authentication (here a bearer token; use your session or SSO).
//!             let allowed = req
//!                 .headers()
//!                 .get("authorization")
//!                 .is_some_and(|v| v == "Bearer s3cret-operator-token");
//!             let call = allowed.then(|| srv.call(req));
//!             async move {
//!                 match call {
//!                     Some(call) => call.await,
//!                     None => Err(actix_web::error::ErrorUnauthorized("unauthorized")),
//!                 }
//!             }
//!         }),
//!     )
//! };
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, Scope, web};
use airmy_verify_inbox::console::{Console, ConsoleRequest};

/// The largest form the console reads (its forms are a few hundred bytes).
const MAX_FORM: usize = 64 * 1024;

/// The console mounted at `path` (such as `"/console"`; links follow it).
pub fn scope(path: &str, console: Console) -> Scope {
    let base = path.trim_end_matches('/').to_owned();
    let mount = base.clone();
    web::scope(&mount).default_service(web::to(move |request: HttpRequest, body: web::Payload| {
        let console = console.clone();
        let base = base.clone();
        async move { serve(&console, &base, &request, body).await }
    }))
}

async fn serve(
    console: &Console,
    base: &str,
    request: &HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    let Ok(body) = body.to_bytes_limited(MAX_FORM).await else {
        return HttpResponse::PayloadTooLarge().body("form too large");
    };
    let Ok(body) = body else {
        return HttpResponse::BadRequest().body("the form could not be read");
    };
    respond(console, base, request, &body).await
}

/// Answers one console request whose body is read already: for a handler of your own that
/// runs the console after its own checks (`base` is where the console's pages are, such as
/// `"/console"` or `""`). [`scope`] calls it.
pub async fn respond(
    console: &Console,
    base: &str,
    request: &HttpRequest,
    body: &[u8],
) -> HttpResponse {
    let full = request.path();
    let path = full.strip_prefix(base).unwrap_or(full);
    let fetch_site = request
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    let answer = console
        .handle(ConsoleRequest {
            method: request.method().as_str(),
            base,
            path: if path.is_empty() { "/" } else { path },
            query: request.query_string(),
            fetch_site,
            body,
        })
        .await;
    let mut response = HttpResponse::build(
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.append_header((HeaderName::from_static(name), value));
        }
    }
    if request.method() == actix_web::http::Method::HEAD {
        response.finish()
    } else {
        response.body(answer.body)
    }
}
