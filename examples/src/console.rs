//! The receivers' console listener (`AIRMY_CONSOLE_LISTEN`, `AIRMY_CONSOLE_TOKEN`,
//! `AIRMY_CONSOLE_READONLY_TOKEN`): the inbox's web console (`airmy_verify_inbox::console`) on
//! an address of its own, mounted with each receiver's framework (`airmy_verify_axum::console`,
//! `airmy_verify_actix::console`). The login, the roles, the forms and the security headers are
//! the console's own (its built-in `Login`); this only reads the environment.
//!
//! - A loopback address (`127.0.0.1`, `::1`, `localhost`) needs no token: the console then
//!   answers only a loopback `Host` (`Console::loopback_only`, against DNS rebinding).
//! - Any other address requires `AIRMY_CONSOLE_TOKEN` (at least 16 characters), else the
//!   receiver exits 2 before anything listens. With a token every page asks for a login
//!   (`POST /login`); its session cookie `airmy_console` is `HttpOnly`, `SameSite=Strict`, lasts
//!   12 hours and is signed with the token, never the token itself. A second token,
//!   `AIRMY_CONSOLE_READONLY_TOKEN`, opens read-only sessions (every page, no action). Replicas
//!   with the same tokens accept each other's sessions and forms. The receivers serve plain
//!   HTTP: put TLS in front of a console reached over a network.

use std::net::SocketAddr;

use airmy_verify_inbox::Inbox;
use airmy_verify_inbox::console::{Console, Login, Token};

use crate::ConfigError;

/// Where the console listens, and the tokens its login accepts, if any.
#[derive(Debug, Clone)]
pub struct ConsoleSetting {
    /// `AIRMY_CONSOLE_LISTEN`.
    pub listen: String,
    /// `AIRMY_CONSOLE_TOKEN`: an operator's login.
    pub token: Option<Token>,
    /// `AIRMY_CONSOLE_READONLY_TOKEN`: a read-only login.
    pub read_only: Option<Token>,
}

/// A token variable, if set and not empty.
///
/// # Errors
///
/// It has fewer than 16 characters (the message names the variable, never the value).
fn token(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<Token>, ConfigError> {
    lookup(name)
        .filter(|t| !t.is_empty())
        .map(|t| {
            Token::new(t).map_err(|_| {
                ConfigError(format!(
                    "{name} must be at least {} characters",
                    Token::MIN_CHARS
                ))
            })
        })
        .transpose()
}

impl ConsoleSetting {
    /// Reads `AIRMY_CONSOLE_LISTEN`, `AIRMY_CONSOLE_TOKEN` and `AIRMY_CONSOLE_READONLY_TOKEN`;
    /// unset or empty listen is off.
    ///
    /// # Errors
    ///
    /// A token shorter than 16 characters, a read-only token without an operator token or
    /// equal to it, or a listen address that is not `HOST:PORT`.
    pub fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let token_ = token(lookup, "AIRMY_CONSOLE_TOKEN")?;
        let read_only = token(lookup, "AIRMY_CONSOLE_READONLY_TOKEN")?;
        if read_only.is_some() && token_.is_none() {
            return Err(ConfigError(
                "AIRMY_CONSOLE_READONLY_TOKEN needs AIRMY_CONSOLE_TOKEN (the operators' login)"
                    .to_owned(),
            ));
        }
        // Equal tokens would make every read-only login an operator's.
        let (operator, viewer) = (
            zeroize::Zeroizing::new(lookup("AIRMY_CONSOLE_TOKEN").unwrap_or_default()),
            zeroize::Zeroizing::new(lookup("AIRMY_CONSOLE_READONLY_TOKEN").unwrap_or_default()),
        );
        if read_only.is_some()
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                operator.as_bytes(),
                viewer.as_bytes(),
            ))
        {
            return Err(ConfigError(
                "AIRMY_CONSOLE_READONLY_TOKEN must differ from AIRMY_CONSOLE_TOKEN".to_owned(),
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
        Ok(Some(Self {
            listen,
            token: token_,
            read_only,
        }))
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

    /// The console of `inbox` as this setting wants it: behind the built-in login with the
    /// tokens, or, without one, answering a loopback `Host` only.
    #[must_use]
    pub fn console(&self, inbox: Inbox) -> Console {
        let console = Console::new(inbox);
        match &self.token {
            Some(operator) => {
                let mut login = Login::new(operator.clone());
                if let Some(viewer) = &self.read_only {
                    login = login.read_only(viewer.clone());
                }
                console.login(login)
            }
            None => console.loopback_only(true),
        }
    }
}

fn listen_error(setting: &ConsoleSetting, err: &std::io::Error) -> ConfigError {
    ConfigError(format!(
        "AIRMY_CONSOLE_LISTEN: cannot listen on {}: {err}",
        setting.listen
    ))
}

/// Serves the console of `inbox` with axum on the setting's address; the bound address.
///
/// # Errors
///
/// The address cannot be bound.
pub async fn serve_axum(setting: &ConsoleSetting, inbox: Inbox) -> Result<SocketAddr, ConfigError> {
    let listener = tokio::net::TcpListener::bind(&setting.listen)
        .await
        .map_err(|e| listen_error(setting, &e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| listen_error(setting, &e))?;
    let app = airmy_verify_axum::console::router(setting.console(inbox));
    // The webhook port's server: headers within 5 s, or the connection is closed (a client
    // that trickles its headers would otherwise hold a descriptor for ever).
    tokio::spawn(async move {
        if let Err(err) = crate::serve_axum(listener, app, std::future::pending()).await {
            tracing::error!(target: "airmy_receiver", error = %err, "the console server stopped");
        }
    });
    Ok(addr)
}

/// Serves the console of `inbox` with actix-web on the setting's address; the bound address
/// and the server (to run on actix's runtime).
///
/// # Errors
///
/// The address cannot be bound.
pub fn serve_actix(
    setting: &ConsoleSetting,
    inbox: Inbox,
) -> Result<(SocketAddr, actix_web::dev::Server), ConfigError> {
    let console = setting.console(inbox);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().service(airmy_verify_actix::console::scope("", console.clone()))
    })
    .workers(1)
    .client_request_timeout(crate::HEADER_TIMEOUT)
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
            ("AIRMY_CONSOLE_READONLY_TOKEN", "a-long-enough-viewer"),
        ])
        .expect("ok")
        .expect("on");
        assert!(with.check().await.is_ok());
        assert!(setting(&[("AIRMY_CONSOLE_TOKEN", "short")]).is_err());
        assert!(setting(&[("AIRMY_CONSOLE_LISTEN", "nonsense")]).is_err());
        assert!(!format!("{with:?}").contains("a-long-enough"));
    }

    #[test]
    fn a_read_only_token_needs_an_operator_token_of_its_own() {
        let err = |vars: &[(&str, &str)]| setting(vars).expect_err("refused").to_string();
        let alone = err(&[("AIRMY_CONSOLE_READONLY_TOKEN", "a-long-enough-viewer")]);
        assert!(alone.contains("needs AIRMY_CONSOLE_TOKEN"), "{alone}");
        let same = err(&[
            ("AIRMY_CONSOLE_TOKEN", "a-long-enough-token"),
            ("AIRMY_CONSOLE_READONLY_TOKEN", "a-long-enough-token"),
        ]);
        assert!(same.contains("must differ"), "{same}");
        let short = err(&[
            ("AIRMY_CONSOLE_TOKEN", "a-long-enough-token"),
            ("AIRMY_CONSOLE_READONLY_TOKEN", "short-viewer"),
        ]);
        assert!(
            short.contains("AIRMY_CONSOLE_READONLY_TOKEN must be at least 16")
                && !short.contains("short-viewer"),
            "{short}"
        );
    }
}
