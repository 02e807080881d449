//! A web console for an inbox (feature `console`): look at entries by state, open one, replay
//! it, replay every dead letter, purge processed entries. Server-rendered HTML (maud), one small
//! stylesheet served by the console itself (no CDN: it works on a closed network), no script.
//!
//! This module is framework-free: [`Console::handle`] takes a [`ConsoleRequest`] and answers a
//! [`ConsoleResponse`]. The adapters mount it: `airmy_verify_axum::console::router` (a
//! `Router`) and `airmy_verify_actix::console::scope` (a `Scope`), features `console`.
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
//!
//! # Security
//!
//! - **Authentication is the application's**: mount the console behind your own auth layer or
//!   middleware (the adapters' docs show how). It shows event bodies and can replay them.
//! - A GET never changes anything. Every POST carries the console's CSRF token (random, made
//!   when the console is built, written into each form): a POST without it is refused with
//!   403, as is one whose `Sec-Fetch-Site` says it came from another site.
//! - Ids, types, error texts and bodies are data from outside: maud escapes everything, and
//!   every answer carries a `Content-Security-Policy` with `script-src 'none'` (the console runs
//!   no script at all), `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
//!   `Referrer-Policy: no-referrer` and `Cache-Control: no-store`.

use std::fmt;

use bytes::Bytes;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Inbox;
use crate::backend::{EntryState, InboxError, ListQuery, Order};

mod pages;

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

/// The web console of one inbox; cheap to clone (the adapters clone it into each request).
#[derive(Clone)]
pub struct Console {
    inbox: Inbox,
    csrf: std::sync::Arc<str>,
    title: std::sync::Arc<str>,
}

impl fmt::Debug for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Console")
            .field("title", &self.title)
            .finish_non_exhaustive()
    }
}

/// A request as an adapter hands it to [`Console::handle`].
#[derive(Debug, Clone, Copy)]
pub struct ConsoleRequest<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// Where the console is mounted, without a trailing slash (`""` at the root,
    /// `"/console"`): every link starts with it.
    pub base: &'a str,
    /// The path within the console (`/`, `/entries`, …).
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: &'a str,
    /// The `Sec-Fetch-Site` header, if any.
    pub fetch_site: Option<&'a str>,
    /// The body (an `application/x-www-form-urlencoded` form for a POST).
    pub body: &'a [u8],
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
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

impl Console {
    /// The console of `inbox`.
    #[must_use]
    pub fn new(inbox: Inbox) -> Self {
        Self {
            inbox,
            csrf: airmy_verify::token::random_hex(32).into(),
            title: "AIRMY inbox".into(),
        }
    }

    /// The title shown on every page (the service's name, say). Defaults to "AIRMY inbox".
    #[must_use]
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into().into();
        self
    }

    /// Answers one request. Never panics on any input; an inbox error is a 503 page.
    pub async fn handle(&self, request: ConsoleRequest<'_>) -> ConsoleResponse {
        let page = pages::Page {
            base: request.base,
            title: &self.title,
            csrf: &self.csrf,
        };
        let query = Fields::parse(request.query.as_bytes());
        let answer = match (request.method, request.path) {
            ("GET" | "HEAD", "/console.css") => {
                return ConsoleResponse::new(200, "text/css; charset=utf-8", STYLESHEET);
            }
            ("GET" | "HEAD", "/" | "") => self.overview(&page).await,
            ("GET" | "HEAD", "/entries") => self.entries(&page, &query).await,
            ("GET" | "HEAD", "/entry") => self.entry(&page, &query).await,
            ("GET" | "HEAD", "/replay-dead") => self.confirm_replay_dead(&page).await,
            ("POST", path @ ("/replay" | "/replay-dead" | "/purge")) => {
                let form = Fields::parse(request.body);
                if let Some(refused) = self.refuse_forgery(&page, &request, &form) {
                    return refused;
                }
                match path {
                    "/replay" => self.replay(&page, &form).await,
                    "/replay-dead" => self.replay_dead(&page, &form).await,
                    _ => self.purge(&page, &form).await,
                }
            }
            (
                _,
                "/" | "" | "/entries" | "/entry" | "/replay-dead" | "/replay" | "/purge"
                | "/console.css",
            ) => {
                let mut response =
                    ConsoleResponse::new(405, "text/plain; charset=utf-8", "method not allowed");
                response.headers.push(("allow", "GET, POST".to_owned()));
                return response;
            }
            _ => Ok(ConsoleResponse::html(
                404,
                page.message("Not found", "No such page."),
            )),
        };
        answer.unwrap_or_else(|err| {
            tracing::warn!(target: "airmy_verify_inbox::console", error = %err, "the console could not read the inbox");
            let status = if err.kind() == crate::ErrorKind::Invalid { 400 } else { 503 };
            ConsoleResponse::html(status, page.message("The inbox could not answer", &err.to_string()))
        })
    }

    /// A POST without the console's token, or sent from another site, is refused (403).
    fn refuse_forgery(
        &self,
        page: &pages::Page<'_>,
        request: &ConsoleRequest<'_>,
        form: &Fields,
    ) -> Option<ConsoleResponse> {
        use subtle::ConstantTimeEq;
        let token_ok = form
            .get("csrf")
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(self.csrf.as_bytes())));
        let site_ok = !matches!(request.fetch_site, Some("cross-site" | "same-site"));
        if token_ok && site_ok {
            return None;
        }
        tracing::warn!(target: "airmy_verify_inbox::console", path = request.path, "refused a console action without its CSRF token");
        Some(ConsoleResponse::html(
            403,
            page.message(
                "Refused",
                "This action did not come from a page of this console (its form token is \
                 missing or stale: reload the page and try again).",
            ),
        ))
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
