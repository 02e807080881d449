//! A web console for an inbox (feature `console`): look at entries by state, open one, replay
//! it, replay every dead letter, purge processed entries. Server-rendered HTML (maud), one small
//! stylesheet served by the console itself (no CDN: it works on a closed network), no script.
//!
//! This module is framework-free: [`Console::handle`] takes a [`ConsoleRequest`] and answers a
//! [`ConsoleResponse`]. The adapters mount it: `airmy_verify_axum::console::router` (a
//! `Router`) and `airmy_verify_actix::console::scope` (a `Scope`), features `console`.
//!
//! ```
//! use airmy_verify_inbox::{Inbox, MemoryBackend, MemoryOptions};
//! use airmy_verify_inbox::console::{Console, ConsoleRequest, Login, Token};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inbox = Inbox::new(MemoryBackend::new(MemoryOptions::default()));
//! let console = Console::new(inbox)
//!     .title("billing: AIRMY inbox")
//!     // Without an auth layer of your own: the built-in login.
//!     .login(Login::new(Token::new("the-operators-token-0123")?));
//! let page = console.handle(ConsoleRequest::new("GET", "/").base("/ops/inbox")).await;
//! assert_eq!(page.status, 401, "a login first");
//! # Ok(())
//! # }
//! ```
//!
//! # Pages
//!
//! | method and path | what |
//! |---|---|
//! | `GET /` | the counts of [`Stats`](crate::Stats), the oldest pending age; refreshes every 5 s |
//! | `GET /entries?state=S&type=T&prefix=P&order=newest&after=C` | one state's entries, 50 a page |
//! | `GET /entry?id=ID` | one entry: times, attempts, last error, the body as indented JSON |
//! | `GET /replay-dead` | the confirmation of replaying every dead letter |
//! | `POST /replay` (`id`) | replays one entry, then shows it |
//! | `POST /replay-dead` (`confirm=yes`) | replays every dead letter |
//! | `POST /purge` (`before`, RFC 3339; `force`) | purges processed entries, with the rule of `airmy-webhook inbox purge` ([`purge_refusal`](crate::purge_refusal)) |
//! | `GET /console.css` | the stylesheet |
//! | `GET /login`, `POST /login` (`token`), `POST /logout` | the built-in login, with [`Console::login`] only (404 otherwise) |
//!
//! # Who gets in, and what they may do
//!
//! Either **your own auth layer** decides (mount the console behind it, as the adapters' docs
//! show; it shows event bodies and replays them) and may put a [`Role`] in the request's
//! extensions, which the adapters pass on: [`Role::ReadOnly`] or [`Role::Operator`] (the
//! default when it puts none). Or, for an application without one, **the built-in login**
//! ([`Console::login`] with a [`Login`]) asks for a token.
//!
//! **Roles**: every page is open to both; a read-only operator sees no form (no replay, replay
//! every dead letter or purge button; a "read-only" mark in the header) and every action
//! (`POST /replay`, `/replay-dead`, `/purge`) is refused with 403, whatever it carries.
//! (Logging out is not an action on the inbox: a read-only session may.)
//!
//! ## The built-in login
//!
//! - **Tokens**: an operator token and, optionally, a read-only one ([`Login::read_only`]),
//!   each a [`Token`] of at least 16 characters (refused at construction otherwise). A login
//!   compares what it is given with both, in constant time (their SHA-256 digests with
//!   `subtle`, so neither the contents nor the lengths show in the timing).
//! - **The session cookie** `airmy_console`: `HttpOnly`, `SameSite=Strict`, `Path` the
//!   console's mount path, `Max-Age` its lifetime (12 hours by default,
//!   [`Login::session_lifetime`]), `Secure` when asked ([`Login::secure_cookie`]: do, when the
//!   console is reached over HTTPS). Its value is the role, the expiry, a random nonce and an
//!   HMAC-SHA256 of them keyed by the token that opened it: never the token, checked on every
//!   request, no server-side state, so any replica with the same tokens accepts it.
//! - **Logout** (`POST /logout`, a button in the header) expires the cookie in the browser.
//!   Sessions are signed, not stored: a copy of the cookie taken before the logout stays good
//!   until its expiry, unless the token rotates. To end every session now, rotate.
//! - **Rotation without a restart**: [`Login::rotate`] on any clone of the login (the clones
//!   share their tokens) replaces them at once: a session is keyed by the token that made it,
//!   so the old tokens' sessions end at their next request, and their forms are refused.
//! - **Failed logins** answer 401 after a delay (1 second, [`Login::failure_delay`]), one at a
//!   time per process, so a process answers at most one wrong token per delay; each is counted
//!   in `airmy_webhook_console_logins_total{result="failure"}` (feature `metrics`; successes
//!   under `success`) and logged as a `tracing` warning, target `airmy_verify_inbox::console`,
//!   without the token.
//! - A login posted from another site (`Sec-Fetch-Site`) is refused with 403.
//!
//! # Forms across replicas (CSRF)
//!
//! A GET never changes anything. Every POST carries a form token, and one whose
//! `Sec-Fetch-Site` says another site sent it is refused (403) as well.
//!
//! The form token is **signed, not stored**: `EXPIRES.HMAC-SHA256(key, EXPIRES, session)`,
//! good for 12 hours, bound to the built-in login's session when there is one (a token taken
//! from one session does not work in another), checked in constant time. The key is
//! [`Console::secret`] when the application sets one; else, with the built-in login, derived
//! from its operator token (which every replica has already, and which a rotation renews);
//! else random per process. So **behind a load balancer any replica accepts a form another
//! rendered**, as soon as the replicas share the secret or the login's token: give every
//! replica the same [`Console::secret`] when your own auth layer is in front; with the built-in
//! login there is nothing more to set. A console with neither accepts only its own forms:
//! fine for one process, a 403 about half the time behind a round-robin balancer (the 403 page
//! says so).
//!
//! Why this and not a double-submit cookie checked with `Sec-Fetch-Site` and `Origin`: a
//! double-submit cookie proves only that the sender could write a cookie for the console's
//! host, which a sibling subdomain can (cookie tossing; the `__Host-` prefix that prevents it
//! needs HTTPS, and the receivers' consoles on loopback have none); `Origin` must be compared
//! with the public origin, which a reverse proxy hides (it rewrites `Host`, terminates TLS)
//! and which the console would have to be told. A signed token needs neither: what makes it
//! good is a key the page's reader never sees, the same on every replica, and the session it
//! was rendered for. `Sec-Fetch-Site` stays as a second check where browsers send it.
//!
//! # Text that cannot disguise itself
//!
//! Ids, types, error texts and bodies are data from outside. maud escapes everything (no
//! markup from them), and every character that could disguise a text
//! ([`airmy_verify::text::disguises`]: control and format characters, such as the right-to-left
//! override U+202E, which shows `evt_gpj.exe` as `evt_exe.jpg`, or the zero-width space
//! U+200B) is **shown escaped**, `\u{202e}`, in a marked span (`span.esc`, its code in the
//! `title`), never applied and never served as it is (a hidden field holds it as the reference
//! `&#x202e;`, which the browser sends back as the character: the replay finds the entry). The
//! rule is [`airmy_verify::text::visible`], the one `airmy-webhook inbox`'s tables use too.
//!
//! Every answer carries a `Content-Security-Policy` with `default-src 'none'`, `script-src
//! 'none'` (the console runs no script at all), `style-src 'self'`, `img-src 'self'`,
//! `form-action 'self'`, `frame-ancestors 'none'` and `base-uri 'none'`, and
//! `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`
//! and `Cache-Control: no-store`, the login's pages included. A console without a login on a
//! loopback address can refuse every `Host` but a loopback one ([`Console::loopback_only`],
//! against DNS rebinding).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use crate::Inbox;
use crate::backend::{EntryState, InboxError, ListQuery, Order};

mod csrf;
mod login;
mod pages;

pub use login::{COOKIE, Login, Role, Token, TokenError};

/// The stylesheet, served at `/console.css`.
const STYLESHEET: &str = include_str!("console.css");

/// The headers of every answer (the content type apart).
const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'; script-src 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

const TARGET: &str = "airmy_verify_inbox::console";

/// The web console of one inbox; cheap to clone (the adapters clone it into each request).
#[derive(Clone)]
pub struct Console {
    inbox: Inbox,
    title: Arc<str>,
    /// The form key the application set ([`Console::secret`]).
    secret: Option<Token>,
    /// The form key of a console with neither a secret nor a login: this process's own.
    own_key: Arc<Zeroizing<String>>,
    login: Option<Login>,
    loopback_only: bool,
}

impl fmt::Debug for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Console")
            .field("title", &self.title)
            .field("secret", &self.secret)
            .field("login", &self.login)
            .field("loopback_only", &self.loopback_only)
            .finish_non_exhaustive()
    }
}

/// A request as an adapter hands it to [`Console::handle`]: [`ConsoleRequest::new`] with the
/// method and the path within the console, then what the request has.
///
/// ```
/// use airmy_verify_inbox::console::{ConsoleRequest, Role};
///
/// let request = ConsoleRequest::new("POST", "/replay")
///     .base("/ops/inbox")
///     .body(b"id=evt_1&csrf=...")
///     .fetch_site(Some("same-origin"))
///     .cookie(Some("airmy_console=..."))
///     .role(Role::ReadOnly);
/// assert!(!format!("{request:?}").contains("airmy_console="));
/// ```
#[derive(Clone, Copy)]
pub struct ConsoleRequest<'a> {
    method: &'a str,
    base: &'a str,
    path: &'a str,
    query: &'a str,
    body: &'a [u8],
    fetch_site: Option<&'a str>,
    host: Option<&'a str>,
    cookie: Option<&'a str>,
    role: Role,
}

impl fmt::Debug for ConsoleRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleRequest")
            .field("method", &self.method)
            .field("base", &self.base)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("body", &format_args!("[{} bytes]", self.body.len()))
            .field("fetch_site", &self.fetch_site)
            .field("host", &self.host)
            .field("cookie", &self.cookie.map(|_| "[redacted]"))
            .field("role", &self.role)
            .finish()
    }
}

impl<'a> ConsoleRequest<'a> {
    /// A request: its method (`GET`, `POST`, …) and its path within the console (`/`,
    /// `/entries`, …), with no query, no body, no headers, at the root, from an operator.
    #[must_use]
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            base: "",
            path,
            query: "",
            body: b"",
            fetch_site: None,
            host: None,
            cookie: None,
            role: Role::Operator,
        }
    }

    /// Where the console is mounted, without a trailing slash (`"/console"`): every link
    /// starts with it. Defaults to `""` (the root).
    #[must_use]
    pub fn base(mut self, base: &'a str) -> Self {
        self.base = base;
        self
    }

    /// The query string, without `?`. Defaults to none.
    #[must_use]
    pub fn query(mut self, query: &'a str) -> Self {
        self.query = query;
        self
    }

    /// The body (an `application/x-www-form-urlencoded` form for a POST). Defaults to none.
    #[must_use]
    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }

    /// The `Sec-Fetch-Site` header, if any.
    #[must_use]
    pub fn fetch_site(mut self, fetch_site: Option<&'a str>) -> Self {
        self.fetch_site = fetch_site;
        self
    }

    /// The `Host` header, if any (read by [`Console::loopback_only`]).
    #[must_use]
    pub fn host(mut self, host: Option<&'a str>) -> Self {
        self.host = host;
        self
    }

    /// The `Cookie` header, if any (several joined with `; `), read by the built-in
    /// [`Login`].
    #[must_use]
    pub fn cookie(mut self, cookie: Option<&'a str>) -> Self {
        self.cookie = cookie;
        self
    }

    /// The role your own auth layer gave the request ([`Role`]). Defaults to
    /// [`Role::Operator`].
    #[must_use]
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }
}

/// The console's answer: status, headers, body.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsoleResponse {
    /// The status code.
    pub status: u16,
    /// The headers (lowercase names).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Bytes,
}

impl ConsoleResponse {
    fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        let mut headers: Vec<(&'static str, String)> = SECURITY_HEADERS
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        headers.push(("content-type", content_type.to_owned()));
        Self {
            status,
            headers,
            body: body.into(),
        }
    }

    fn html(status: u16, page: maud::Markup) -> Self {
        Self::new(status, "text/html; charset=utf-8", page.into_string())
    }

    fn see_other(location: String) -> Self {
        let mut response = Self::new(303, "text/plain; charset=utf-8", "");
        response.headers.push(("location", location));
        response
    }

    fn with(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// The form or query fields of a request, decoded.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn parse(text: &[u8]) -> Self {
        Self(
            form_urlencoded::parse(text)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// A field's value as sent, empty included (an event id may be empty).
    fn raw(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field's value; an empty one counts as absent.
    fn get(&self, name: &str) -> Option<&str> {
        self.raw(name).filter(|v| !v.is_empty())
    }
}

impl Drop for Fields {
    fn drop(&mut self) {
        // A login form's token.
        for (_, value) in &mut self.0 {
            zeroize::Zeroize::zeroize(value);
        }
    }
}

/// Now, in Unix milliseconds.
fn now_ms() -> i128 {
    OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
}

/// Whether a `Host` header names this machine's loopback: `127.0.0.1`, `localhost` or
/// `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(inside, _)| inside),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    matches!(
        name.to_ascii_lowercase().as_str(),
        "127.0.0.1" | "localhost" | "::1"
    )
}

/// The paths the console answers (others are 404).
const PATHS: [&str; 10] = [
    "/",
    "",
    "/entries",
    "/entry",
    "/replay-dead",
    "/replay",
    "/purge",
    "/console.css",
    "/login",
    "/logout",
];

impl Console {
    /// The console of `inbox`.
    #[must_use]
    pub fn new(inbox: Inbox) -> Self {
        Self {
            inbox,
            title: "AIRMY inbox".into(),
            secret: None,
            own_key: Arc::new(Zeroizing::new(airmy_verify::token::random_hex(32))),
            login: None,
            loopback_only: false,
        }
    }

    /// The title shown on every page (the service's name, say). Defaults to "AIRMY inbox".
    #[must_use]
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into().into();
        self
    }

    /// The secret the forms' tokens are signed with: give every replica behind a load
    /// balancer the same one, so that any of them accepts a form another rendered. Defaults
    /// to none: then with a [`Login`] the key derives from its operator token (which every
    /// replica has already), and without one it is this process's own (one process only: a
    /// form rendered by another replica is refused with 403). See
    /// [forms across replicas](self#forms-across-replicas-csrf).
    #[must_use]
    pub fn secret(mut self, secret: Token) -> Self {
        self.secret = Some(secret);
        self
    }

    /// The built-in login, for an application without an auth layer of its own: every page
    /// but the login's asks for a session. Defaults to none (the application's auth decides
    /// who gets here). See [the built-in login](self#the-built-in-login).
    #[must_use]
    pub fn login(mut self, login: Login) -> Self {
        self.login = Some(login);
        self
    }

    /// Answers only requests whose `Host` is `127.0.0.1`, `localhost` or `[::1]` (any port),
    /// 421 otherwise: for a console without a login on a loopback address, so that a web page
    /// whose name was rebound to 127.0.0.1 (DNS rebinding) can neither read nor drive it.
    /// Defaults to `false`.
    #[must_use]
    pub fn loopback_only(mut self, loopback_only: bool) -> Self {
        self.loopback_only = loopback_only;
        self
    }

    /// The key the forms' tokens are signed with (see [`Console::secret`]).
    fn form_key(&self) -> Zeroizing<Vec<u8>> {
        match (&self.secret, &self.login) {
            (Some(secret), _) => Zeroizing::new(secret.bytes().to_vec()),
            (None, Some(login)) => login.form_key(),
            (None, None) => Zeroizing::new(self.own_key.as_bytes().to_vec()),
        }
    }

    /// Answers one request. Never panics on any input; an inbox error is a 503 page.
    pub async fn handle(&self, request: ConsoleRequest<'_>) -> ConsoleResponse {
        if self.loopback_only && !request.host.is_some_and(loopback_host) {
            tracing::warn!(target: TARGET, "console request refused: not a loopback Host header");
            return ConsoleResponse::new(
                421,
                "text/plain; charset=utf-8",
                "This console answers only to http://127.0.0.1, localhost or [::1].",
            );
        }
        if !PATHS.contains(&request.path) {
            let page = pages::Page::bare(request.base, &self.title);
            return ConsoleResponse::html(404, page.message("Not found", "No such page."));
        }
        match (request.method, request.path) {
            ("GET" | "HEAD", "/console.css") => {
                return ConsoleResponse::new(200, "text/css; charset=utf-8", STYLESHEET);
            }
            ("GET" | "HEAD" | "POST", _) => {}
            _ => {
                return ConsoleResponse::new(
                    405,
                    "text/plain; charset=utf-8",
                    "method not allowed",
                )
                .with("allow", "GET, POST".to_owned());
            }
        }
        let now = now_ms();
        let mut role = request.role;
        let mut session = "";
        if let Some(login) = &self.login {
            if request.path == "/login" {
                return self.log_in(login, &request, now).await;
            }
            let found = request
                .cookie
                .into_iter()
                .flat_map(login::cookies)
                .find_map(|value| login.session(value, now));
            let Some(found) = found else {
                let page = pages::Page::bare(request.base, &self.title);
                return ConsoleResponse::html(401, page.login(false));
            };
            role = role.min(found.role);
            session = found.value;
        } else if request.path == "/login" || request.path == "/logout" {
            let page = pages::Page::bare(request.base, &self.title);
            return ConsoleResponse::html(404, page.message("Not found", "No such page."));
        }
        let key = self.form_key();
        let csrf = csrf::issue(&key, session, now);
        let page = pages::Page {
            base: request.base,
            title: &self.title,
            csrf: &csrf,
            role,
            session: self.login.is_some(),
        };
        let query = Fields::parse(request.query.as_bytes());
        let answer = match (request.method, request.path) {
            ("GET" | "HEAD", "/" | "") => self.overview(&page).await,
            ("GET" | "HEAD", "/entries") => self.entries(&page, &query).await,
            ("GET" | "HEAD", "/entry") => self.entry(&page, &query).await,
            ("GET" | "HEAD", "/replay-dead") => self.confirm_replay_dead(&page).await,
            ("POST", path @ ("/replay" | "/replay-dead" | "/purge" | "/logout")) => {
                let form = Fields::parse(request.body);
                let forged = (key.as_slice(), session, now);
                if let Some(refused) = refuse_forgery(&page, &request, &form, forged) {
                    return refused;
                }
                if path == "/logout" {
                    return self.log_out(&page, role);
                }
                if !role.can_act() {
                    tracing::warn!(target: TARGET, path, role = role.as_str(), "console action refused: read-only");
                    return ConsoleResponse::html(
                        403,
                        page.message(
                            "Refused",
                            "You have read-only access to this console: you can look, not act.",
                        ),
                    );
                }
                match path {
                    "/replay" => self.replay(&page, &form).await,
                    "/replay-dead" => self.replay_dead(&page, &form).await,
                    _ => self.purge(&page, &form).await,
                }
            }
            _ => {
                return ConsoleResponse::new(
                    405,
                    "text/plain; charset=utf-8",
                    "method not allowed",
                )
                .with("allow", "GET, POST".to_owned());
            }
        };
        answer.unwrap_or_else(|err| {
            tracing::warn!(target: TARGET, error = %err, "the console could not read the inbox");
            let status = if err.kind() == crate::ErrorKind::Invalid {
                400
            } else {
                503
            };
            ConsoleResponse::html(
                status,
                page.message("The inbox could not answer", &err.to_string()),
            )
        })
    }

    /// `GET /login`: the form; `POST /login`: a token in, a session cookie out, or a refusal
    /// after the failure delay.
    async fn log_in(
        &self,
        login: &Login,
        request: &ConsoleRequest<'_>,
        now: i128,
    ) -> ConsoleResponse {
        let page = pages::Page::bare(request.base, &self.title);
        if request.method != "POST" {
            return ConsoleResponse::html(200, page.login(false));
        }
        if matches!(request.fetch_site, Some("cross-site" | "same-site")) {
            tracing::warn!(target: TARGET, "console login refused: sent from another site");
            return ConsoleResponse::html(
                403,
                page.message(
                    "Refused",
                    "This login did not come from this console's page.",
                ),
            );
        }
        let form = Fields::parse(request.body);
        let role = form
            .raw("token")
            .and_then(|given| login.role_of(given.as_bytes()));
        let Some(role) = role else {
            airmy_verify::observe::metrics::console_login("failure");
            tracing::warn!(target: TARGET, "console login refused: not a console token");
            login.slow_down().await;
            return ConsoleResponse::html(401, page.login(true));
        };
        let Some(value) = login.open(role, now) else {
            // The read-only token was rotated away between the comparison and now.
            return ConsoleResponse::html(401, page.login(true));
        };
        airmy_verify::observe::metrics::console_login("success");
        tracing::info!(target: TARGET, role = role.as_str(), "console login");
        ConsoleResponse::see_other(page.home().to_owned())
            .with("set-cookie", login.cookie(Some(&value), page.cookie_path()))
    }

    /// `POST /logout`: the session cookie expired, back to the login.
    fn log_out(&self, page: &pages::Page<'_>, role: Role) -> ConsoleResponse {
        let Some(login) = &self.login else {
            return ConsoleResponse::html(404, page.message("Not found", "No such page."));
        };
        tracing::info!(target: TARGET, role = role.as_str(), "console logout");
        ConsoleResponse::see_other(format!("{}/login", page.base))
            .with("set-cookie", login.cookie(None, page.cookie_path()))
    }

    async fn overview(&self, page: &pages::Page<'_>) -> Result<ConsoleResponse, InboxError> {
        let stats = self.inbox.admin().stats().await?;
        Ok(ConsoleResponse::html(
            200,
            page.overview(
                &stats,
                OffsetDateTime::now_utc(),
                self.inbox.dedupe_window(),
            ),
        ))
    }

    async fn entries(
        &self,
        page: &pages::Page<'_>,
        query: &Fields,
    ) -> Result<ConsoleResponse, InboxError> {
        let state = match query.get("state").map(str::parse::<EntryState>) {
            None => EntryState::Pending,
            Some(Ok(state)) => state,
            Some(Err(why)) => {
                return Ok(ConsoleResponse::html(
                    400,
                    page.message("Bad request", &why),
                ));
            }
        };
        let mut list = ListQuery::new(state);
        list.event_type = query.get("type").map(str::to_owned);
        list.id_prefix = query.get("prefix").map(str::to_owned);
        list.after = query.get("after").map(str::to_owned);
        if query.get("order") == Some("newest") {
            list.order = Order::Newest;
        }
        let listed = self.inbox.admin().list(&list).await?;
        Ok(ConsoleResponse::html(200, page.entries(&list, &listed)))
    }

    async fn entry(
        &self,
        page: &pages::Page<'_>,
        query: &Fields,
    ) -> Result<ConsoleResponse, InboxError> {
        let Some(id) = query.raw("id") else {
            return Ok(ConsoleResponse::html(
                400,
                page.message("Bad request", "Which entry? (id)"),
            ));
        };
        match self.inbox.admin().entry(id).await? {
            Some(entry) => Ok(ConsoleResponse::html(
                200,
                page.entry(&entry, query.get("replayed").is_some()),
            )),
            None => Ok(ConsoleResponse::html(
                404,
                page.message("No such entry", &format!("The inbox holds no entry {id}.")),
            )),
        }
    }

    async fn confirm_replay_dead(
        &self,
        page: &pages::Page<'_>,
    ) -> Result<ConsoleResponse, InboxError> {
        let stats = self.inbox.admin().stats().await?;
        Ok(ConsoleResponse::html(
            200,
            page.confirm_replay_dead(stats.dead),
        ))
    }

    async fn replay(
        &self,
        page: &pages::Page<'_>,
        form: &Fields,
    ) -> Result<ConsoleResponse, InboxError> {
        let Some(id) = form.raw("id") else {
            return Ok(ConsoleResponse::html(
                400,
                page.message("Bad request", "Which entry? (id)"),
            ));
        };
        match self.inbox.admin().replay(id).await {
            Ok(()) => {
                tracing::info!(target: "airmy_verify_inbox::console", id = %airmy_verify::text::word(id), "replayed from the console");
                Ok(ConsoleResponse::see_other(page.entry_link(id, true)))
            }
            Err(err)
                if matches!(
                    err.kind(),
                    crate::ErrorKind::NotFound | crate::ErrorKind::Busy
                ) =>
            {
                let status = if err.kind() == crate::ErrorKind::NotFound {
                    404
                } else {
                    409
                };
                Ok(ConsoleResponse::html(
                    status,
                    page.message("Not replayed", &err.to_string()),
                ))
            }
            Err(err) => Err(err),
        }
    }

    async fn replay_dead(
        &self,
        page: &pages::Page<'_>,
        form: &Fields,
    ) -> Result<ConsoleResponse, InboxError> {
        if form.get("confirm") != Some("yes") {
            return Ok(ConsoleResponse::see_other(format!(
                "{}/replay-dead",
                page.base
            )));
        }
        let replayed = self.inbox.admin().replay_dead(None).await?;
        tracing::info!(target: "airmy_verify_inbox::console", count = replayed.len(), "replayed every dead letter from the console");
        Ok(ConsoleResponse::html(
            200,
            page.done(&format!(
                "Replayed {} dead letter(s): they are pending again.",
                replayed.len()
            )),
        ))
    }

    async fn purge(
        &self,
        page: &pages::Page<'_>,
        form: &Fields,
    ) -> Result<ConsoleResponse, InboxError> {
        let Some(before) = form
            .get("before")
            .and_then(|t| OffsetDateTime::parse(t.trim(), &Rfc3339).ok())
        else {
            return Ok(ConsoleResponse::html(
                400,
                page.message(
                    "Not purged",
                    "The time is not an RFC 3339 time such as 2026-12-01T00:00:00Z.",
                ),
            ));
        };
        if let Some(why) = self.inbox.purge_refusal(before)
            && form.get("force") != Some("yes")
        {
            return Ok(ConsoleResponse::html(
                400,
                page.message(
                    "Not purged",
                    &format!("{why}. Choose an earlier time, or tick \"even inside the window\"."),
                ),
            ));
        }
        let purged = self.inbox.admin().purge_done(before).await?;
        tracing::info!(target: "airmy_verify_inbox::console", purged, "purged processed entries from the console");
        Ok(ConsoleResponse::html(
            200,
            page.done(&format!(
                "Purged {purged} processed entr{}.",
                if purged == 1 { "y" } else { "ies" }
            )),
        ))
    }
}

/// `at` as RFC 3339, to the second.
fn rfc3339(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// A POST without a form token of this console for this session, or sent from another site,
/// is refused (403).
fn refuse_forgery(
    page: &pages::Page<'_>,
    request: &ConsoleRequest<'_>,
    form: &Fields,
    (key, session, now): (&[u8], &str, i128),
) -> Option<ConsoleResponse> {
    let token_ok = form
        .get("csrf")
        .is_some_and(|token| csrf::check(key, session, token, now));
    let site_ok = !matches!(request.fetch_site, Some("cross-site" | "same-site"));
    if token_ok && site_ok {
        return None;
    }
    tracing::warn!(target: TARGET, path = request.path, "refused a console action without its form token");
    Some(ConsoleResponse::html(
        403,
        page.message(
            "Refused",
            "This action did not come from a page of this console: its form token is missing, \
             stale, or signed with another key (replicas behind a load balancer need the same \
             Console::secret). Reload the page and try again.",
        ),
    ))
}
