//! The inbox's web console as an actix-web [`Scope`] (feature `console`); the pages, their
//! rules and their security are [`airmy_verify_inbox::console`]'s. Mount it where you want it,
//! behind your own authentication, which may give a request a [`Role`] in its extensions (a
//! request without one is an operator's):
//!
//! ```no_run
//! use actix_web::{App, HttpMessage as _, dev::Service as _};
//! use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions, console::{Console, Role}};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inbox = Inbox::new(SqliteBackend::open("inbox.db", SqliteOptions::default())?);
//! let console = Console::new(inbox);
//! let app = move || {
//!     App::new().service(
//!         airmy_verify_actix::console::scope("/console", console.clone()).wrap_fn(|req, srv| {
//!             // Your own authentication: your session or SSO layer says who this is.
//!             let groups = req.headers().get("x-sso-groups").and_then(|v| v.to_str().ok());
//!             let role = match groups {
//!                 Some(g) if g.split(',').any(|g| g == "inbox-operators") => Some(Role::Operator),
//!                 Some(g) if g.split(',').any(|g| g == "inbox-viewers") => Some(Role::ReadOnly),
//!                 _ => None,
//!             };
//!             if let Some(role) = role {
//!                 req.extensions_mut().insert(role);
//!             }
//!             let call = role.map(|_| srv.call(req));
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
//!
//! Without an auth layer of your own, the console's built-in login
//! ([`Console::login`](airmy_verify_inbox::console::Console::login)) asks for a token:
//!
//! ```no_run
//! use actix_web::App;
//! use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions, console::{Console, Login, Token}};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inbox = Inbox::new(SqliteBackend::open("inbox.db", SqliteOptions::default())?);
//! let login = Login::new(Token::new(std::env::var("CONSOLE_TOKEN")?)?).secure_cookie(true);
//! let console = Console::new(inbox).login(login);
//! let app = move || App::new().service(airmy_verify_actix::console::scope("/console", console.clone()));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use actix_web::HttpMessage as _;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, Scope, web};
use airmy_verify_inbox::console::{Console, ConsoleRequest, Role};

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
/// `"/console"` or `""`; a [`Role`] in the request's extensions is the role it acts with, an
/// operator's without one). [`scope`] calls it.
pub async fn respond(
    console: &Console,
    base: &str,
    request: &HttpRequest,
    body: &[u8],
) -> HttpResponse {
    let full = request.path();
    let path = full.strip_prefix(base).unwrap_or(full);
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    // HTTP/2 may split the cookies over several headers.
    let cookies: Vec<&str> = request
        .headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .collect();
    let cookie = cookies.join("; ");
    let role = request
        .extensions()
        .get::<Role>()
        .copied()
        .unwrap_or_default();
    let answer = console
        .handle(
            ConsoleRequest::new(
                request.method().as_str(),
                if path.is_empty() { "/" } else { path },
            )
            .base(base)
            .query(request.query_string())
            .body(body)
            .fetch_site(header("sec-fetch-site"))
            .host(header("host"))
            .cookie((!cookies.is_empty()).then_some(cookie.as_str()))
            .role(role),
        )
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
