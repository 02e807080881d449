//! The receivers' console listener (`AIRMY_CONSOLE_LISTEN`, `AIRMY_CONSOLE_TOKEN`): the inbox's
//! web console (`airmy_verify_inbox::console`) on an address of its own, and, when a token is
//! set, a login with it. This is the application's authentication the console docs ask for,
//! written once here; each receiver mounts it with its framework's routes.
//!
//! - A loopback address (`127.0.0.1`, `::1`, `localhost`) needs no token.
//! - Any other address requires `AIRMY_CONSOLE_TOKEN` (at least 16 characters), else the
//!   receiver exits 2 before anything listens. Every page then needs the session cookie that
//!   `POST /login` with the token sets: `airmy_console`, `HttpOnly`, `SameSite=Strict`, its
//!   value an HMAC of the token (never the token itself). The receivers serve plain HTTP: put
//!   TLS in front of a console reached over a network.

use std::net::SocketAddr;

use hmac::{KeyInit, Mac};
use zeroize::Zeroizing;

use airmy_verify_inbox::Inbox;
use airmy_verify_inbox::console::Console;

use crate::ConfigError;

/// The cookie a login sets.
pub const COOKIE: &str = "airmy_console";

/// Where the console listens, and the token it requires, if any.
#[derive(Clone)]
pub struct ConsoleSetting {
    /// `AIRMY_CONSOLE_LISTEN`.
    pub listen: String,
    /// `AIRMY_CONSOLE_TOKEN`.
    pub token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for ConsoleSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSetting")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl ConsoleSetting {
    /// Reads `AIRMY_CONSOLE_LISTEN` and `AIRMY_CONSOLE_TOKEN`; unset or empty listen is off.
    ///
    /// # Errors
    ///
    /// A token shorter than 16 characters, or a listen address that is not `HOST:PORT`.
    pub fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let token = lookup("AIRMY_CONSOLE_TOKEN")
            .filter(|t| !t.is_empty())
            .map(Zeroizing::new);
        if token.as_ref().is_some_and(|t| t.chars().count() < 16) {
            return Err(ConfigError(
                "AIRMY_CONSOLE_TOKEN must be at least 16 characters".to_owned(),
            ));
        }
        let Some(listen) = lookup("AIRMY_CONSOLE_LISTEN").filter(|l| !l.trim().is_empty()) else {
            return Ok(None);
        };
        let listen = listen.trim().to_owned();
        if !listen
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        {
            return Err(ConfigError(format!(
                "AIRMY_CONSOLE_LISTEN must be HOST:PORT, got {listen:?}"
            )));
        }
        Ok(Some(Self { listen, token }))
    }

    /// Resolves the address and checks the token rule: an address that is not loopback needs
    /// `AIRMY_CONSOLE_TOKEN`. Nothing is bound.
    ///
    /// # Errors
    ///
    /// The address does not resolve, or is not loopback and no token is set.
    pub async fn check(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&self.listen)
            .await
            .map_err(|e| ConfigError(format!("AIRMY_CONSOLE_LISTEN {}: {e}", self.listen)))?
            .collect();
        if addrs.is_empty() {
            return Err(ConfigError(format!(
                "AIRMY_CONSOLE_LISTEN {}: no address",
                self.listen
            )));
        }
        if self.token.is_none() && addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(ConfigError(format!(
                "AIRMY_CONSOLE_LISTEN {} is not a loopback address: set AIRMY_CONSOLE_TOKEN \
                 (the console shows event bodies and replays them)",
                self.listen
            )));
        }
        Ok(addrs)
    }

    /// The gate of this setting's console.
    #[must_use]
    pub fn gate(&self) -> Gate {
        Gate {
            session: self.token.as_ref().map(|token| session_value(token)),
            token: self.token.clone(),
        }
    }
}

/// The session cookie's value for `token`: HMAC-SHA256 of a fixed label, keyed by the token.
fn session_value(token: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"airmy-console-session-v1");
    hex::encode(mac.finalize().into_bytes())
}

fn same(a: &[u8], b: &[u8]) -> bool {
    // Constant time in the contents: compare the HMACs of both under a fixed key.
    let tag = |x: &[u8]| {
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(b"airmy-console-compare").expect("any key");
        mac.update(x);
        mac.finalize().into_bytes()
    };
    tag(a) == tag(b)
}

/// Whether a `Host` header names this machine's loopback: `127.0.0.1`, `localhost` or `[::1]`,
/// with or without a port.
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

/// What the gate says about a request.
#[derive(Debug)]
pub enum Decision {
    /// Go on to the console.
    Pass,
    /// Answer this instead: status, headers, HTML.
    Answer(u16, Vec<(&'static str, String)>, String),
}

/// The login in front of a console with a token; lets everything through without one.
#[derive(Clone)]
pub struct Gate {
    token: Option<Zeroizing<String>>,
    session: Option<String>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// The headers of the gate's own pages.
fn page_headers() -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "text/html; charset=utf-8"),
        (
            "content-security-policy",
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; \
             base-uri 'none'; script-src 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

fn login_page(failed: bool) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Log in · AIRMY inbox</title><link rel=\"stylesheet\" href=\"/console.css\"></head>\
         <body><main><h1>AIRMY inbox console</h1>{}\
         <form method=\"post\" action=\"/login\" class=\"actions\">\
         <label for=\"token\">Console token (AIRMY_CONSOLE_TOKEN)</label>\
         <input id=\"token\" type=\"password\" name=\"token\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Log in</button></form></main></body></html>",
        if failed {
            "<p class=\"notice\" id=\"login-failed\">That is not the console's token.</p>"
        } else {
            ""
        }
    )
}

impl Gate {
    /// Whether a login is needed at all.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Decides on a request: `/login` pages, the stylesheet for them, and the session cookie
    /// for everything else. A failed login waits a quarter of a second.
    pub async fn decide(
        &self,
        method: &str,
        path: &str,
        (host, cookie): (Option<&str>, Option<&str>),
        body: &[u8],
    ) -> Decision {
        let (Some(token), Some(session)) = (&self.token, &self.session) else {
            // No login (a loopback console): only a loopback Host, so that a web page whose
            // name was rebound to 127.0.0.1 (DNS rebinding) cannot read or act on it.
            if host.is_some_and(loopback_host) {
                return Decision::Pass;
            }
            tracing::warn!(target: "airmy_receiver", "console request refused: not a loopback Host header");
            return Decision::Answer(
                421,
                page_headers(),
                "<!DOCTYPE html><p>This console answers only to http://127.0.0.1, localhost or [::1].</p>"
                    .to_owned(),
            );
        };
        match (method, path) {
            ("GET" | "HEAD", "/login") => Decision::Answer(200, page_headers(), login_page(false)),
            ("POST", "/login") => {
                let given = form_urlencoded::parse(body)
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| Zeroizing::new(v.into_owned()));
                if given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
                    tracing::info!(target: "airmy_receiver", "console login");
                    let mut headers = page_headers();
                    headers.push(("location", "/".to_owned()));
                    headers.push((
                        "set-cookie",
                        format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict"),
                    ));
                    return Decision::Answer(303, headers, String::new());
                }
                tracing::warn!(target: "airmy_receiver", "console login refused: wrong token");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                Decision::Answer(401, page_headers(), login_page(true))
            }
            ("GET" | "HEAD", "/console.css") => Decision::Pass,
            _ => {
                let presented = cookie
                    .into_iter()
                    .flat_map(|c| c.split(';'))
                    .find_map(|pair| {
                        pair.trim()
                            .strip_prefix(COOKIE)
                            .and_then(|rest| rest.strip_prefix('='))
                    });
                if presented.is_some_and(|value| same(value.as_bytes(), session.as_bytes())) {
                    Decision::Pass
                } else {
                    Decision::Answer(401, page_headers(), login_page(false))
                }
            }
        }
    }
}

/// A header's value as text, if it is.
fn header_of(headers: &axum::http::HeaderMap, name: &axum::http::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn listen_error(setting: &ConsoleSetting, err: &std::io::Error) -> ConfigError {
    ConfigError(format!(
        "AIRMY_CONSOLE_LISTEN: cannot listen on {}: {err}",
        setting.listen
    ))
}

/// Serves the console of `inbox` with axum on the setting's address, behind its gate; the
/// bound address.
///
/// # Errors
///
/// The address cannot be bound.
pub async fn serve_axum(setting: &ConsoleSetting, inbox: Inbox) -> Result<SocketAddr, ConfigError> {
    use axum::extract::Request;
    use axum::middleware::{self, Next};
    use axum::response::{IntoResponse, Response};

    let listener = tokio::net::TcpListener::bind(&setting.listen)
        .await
        .map_err(|e| listen_error(setting, &e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| listen_error(setting, &e))?;
    let gate = setting.gate();
    let gated = move |request: Request, next: Next| {
        let gate = gate.clone();
        async move {
            let (cookie, host) = (
                header_of(request.headers(), &axum::http::header::COOKIE),
                header_of(request.headers(), &axum::http::header::HOST),
            );
            let method = request.method().as_str().to_owned();
            let path = request.uri().path().to_owned();
            let (request, body) = if path == "/login" {
                let (parts, body) = request.into_parts();
                let Ok(body) = axum::body::to_bytes(body, 64 * 1024).await else {
                    return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "form too large")
                        .into_response();
                };
                (Request::from_parts(parts, axum::body::Body::empty()), body)
            } else {
                (request, bytes::Bytes::new())
            };
            match gate
                .decide(&method, &path, (host.as_deref(), cookie.as_deref()), &body)
                .await
            {
                Decision::Pass => next.run(request).await,
                Decision::Answer(status, headers, html) => {
                    let mut response = Response::new(axum::body::Body::from(html));
                    *response.status_mut() = axum::http::StatusCode::from_u16(status)
                        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                    for (name, value) in headers {
                        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                            response
                                .headers_mut()
                                .append(axum::http::HeaderName::from_static(name), value);
                        }
                    }
                    response
                }
            }
        }
    };
    let app =
        airmy_verify_axum::console::router(Console::new(inbox)).layer(middleware::from_fn(gated));
    // The webhook port's server: headers within 5 s, or the connection is closed (a client
    // that trickles its headers would otherwise hold a descriptor for ever).
    tokio::spawn(async move {
        if let Err(err) = crate::serve_axum(listener, app, std::future::pending()).await {
            tracing::error!(target: "airmy_receiver", error = %err, "the console server stopped");
        }
    });
    Ok(addr)
}

/// Serves the console of `inbox` with actix-web on the setting's address, behind its gate;
/// the bound address and the server (to run on actix's runtime).
///
/// # Errors
///
/// The address cannot be bound.
pub fn serve_actix(
    setting: &ConsoleSetting,
    inbox: Inbox,
) -> Result<(SocketAddr, actix_web::dev::Server), ConfigError> {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

    let gate = setting.gate();
    let console = Console::new(inbox);
    let server = HttpServer::new(move || {
        let gate = gate.clone();
        let console = console.clone();
        App::new().default_service(web::to(move |request: HttpRequest, body: web::Bytes| {
            let gate = gate.clone();
            let console = console.clone();
            async move {
                let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
                match gate
                    .decide(
                        request.method().as_str(),
                        request.path(),
                        (header("host"), header("cookie")),
                        &body,
                    )
                    .await
                {
                    Decision::Pass => {
                        airmy_verify_actix::console::respond(&console, "", &request, &body).await
                    }
                    Decision::Answer(status, headers, html) => {
                        let mut response = HttpResponse::build(
                            actix_web::http::StatusCode::from_u16(status)
                                .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
                        );
                        for header in headers {
                            response.append_header(header);
                        }
                        response.body(html)
                    }
                }
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .bind(&setting.listen)
    .map_err(|e| listen_error(setting, &e))?;
    let addr = *server
        .addrs()
        .first()
        .ok_or_else(|| ConfigError("AIRMY_CONSOLE_LISTEN: no local address".to_owned()))?;
    Ok((addr, server.run()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(vars: &[(&str, &str)]) -> Result<Option<ConsoleSetting>, ConfigError> {
        ConsoleSetting::from_lookup(&|name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[tokio::test]
    async fn a_console_off_loopback_needs_a_token() {
        assert!(setting(&[]).expect("off").is_none());
        let local = setting(&[("AIRMY_CONSOLE_LISTEN", "127.0.0.1:0")])
            .expect("ok")
            .expect("on");
        assert!(local.check().await.is_ok());
        let open = setting(&[("AIRMY_CONSOLE_LISTEN", "0.0.0.0:0")])
            .expect("ok")
            .expect("on");
        let err = open.check().await.expect_err("needs a token").to_string();
        assert!(err.contains("AIRMY_CONSOLE_TOKEN"), "{err}");
        let with = setting(&[
            ("AIRMY_CONSOLE_LISTEN", "0.0.0.0:0"),
            ("AIRMY_CONSOLE_TOKEN", "a-long-enough-token"),
        ])
        .expect("ok")
        .expect("on");
        assert!(with.check().await.is_ok());
        assert!(setting(&[("AIRMY_CONSOLE_TOKEN", "short")]).is_err());
        assert!(setting(&[("AIRMY_CONSOLE_LISTEN", "nonsense")]).is_err());
        assert!(!format!("{with:?}").contains("a-long-enough-token"));
    }

    #[tokio::test]
    async fn without_a_token_only_a_loopback_host_is_served() {
        let gate = setting(&[("AIRMY_CONSOLE_LISTEN", "127.0.0.1:0")])
            .expect("ok")
            .expect("on")
            .gate();
        for host in [
            "127.0.0.1:4000",
            "localhost",
            "LOCALHOST:80",
            "[::1]:4000",
            "[::1]",
        ] {
            assert!(
                matches!(
                    gate.decide("GET", "/", (Some(host), None), b"").await,
                    Decision::Pass
                ),
                "{host}"
            );
        }
        for host in [
            None,
            Some("attacker.example:4000"),
            Some("127.0.0.1.attacker.example"),
            Some("[::2]:1"),
            Some(""),
        ] {
            assert!(
                matches!(
                    gate.decide("POST", "/replay-dead", (host, None), b"").await,
                    Decision::Answer(421, _, _)
                ),
                "{host:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_gate_wants_the_token_then_the_cookie() {
        let gate = setting(&[
            ("AIRMY_CONSOLE_LISTEN", "127.0.0.1:0"),
            ("AIRMY_CONSOLE_TOKEN", "a-long-enough-token"),
        ])
        .expect("ok")
        .expect("on")
        .gate();
        let local = Some("127.0.0.1:9");
        assert!(matches!(
            gate.decide("GET", "/", (local, None), b"").await,
            Decision::Answer(401, _, _)
        ));
        assert!(matches!(
            gate.decide(
                "POST",
                "/login",
                (local, None),
                b"token=wrong-token-entirely"
            )
            .await,
            Decision::Answer(401, _, _)
        ));
        let Decision::Answer(303, headers, _) = gate
            .decide(
                "POST",
                "/login",
                (local, None),
                b"token=a-long-enough-token",
            )
            .await
        else {
            panic!("a login with the token");
        };
        let cookie = headers
            .iter()
            .find(|(k, _)| *k == "set-cookie")
            .expect("cookie")
            .1
            .clone();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(!cookie.contains("a-long-enough-token"), "{cookie}");
        let pair = cookie.split(';').next().expect("pair").to_owned();
        assert!(matches!(
            gate.decide("GET", "/entries", (local, Some(&pair)), b"")
                .await,
            Decision::Pass
        ));
        assert!(matches!(
            gate.decide("GET", "/", (local, Some("airmy_console=0000")), b"")
                .await,
            Decision::Answer(401, _, _)
        ));
    }
}
