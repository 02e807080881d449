//! The console's built-in login (for applications without an auth layer of their own): tokens,
//! roles, the session cookie. See [the console's docs](super#the-built-in-login).

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The session cookie's name.
pub const COOKIE: &str = "airmy_console";

/// A console token or secret: at least [`Token::MIN_CHARS`] characters, kept out of `Debug`,
/// wiped from memory when dropped. Made with [`Token::new`] or `parse`.
///
/// ```
/// use airmy_verify_inbox::console::Token;
///
/// assert!(Token::new("too-short").is_err());
/// let token = Token::new("a-long-operator-token-0123")?;
/// assert_eq!(format!("{token:?}"), "Token([redacted])");
/// # Ok::<(), airmy_verify_inbox::console::TokenError>(())
/// ```
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// The fewest characters a token may have.
    pub const MIN_CHARS: usize = 16;

    /// `text` as a token.
    ///
    /// # Errors
    ///
    /// [`TokenError`] when `text` has fewer than [`Token::MIN_CHARS`] characters (the
    /// error does not hold it).
    pub fn new(text: impl Into<String>) -> Result<Self, TokenError> {
        let text = Zeroizing::new(text.into());
        if text.chars().count() < Self::MIN_CHARS {
            return Err(TokenError(()));
        }
        Ok(Self(text))
    }

    pub(super) fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The token's SHA-256, to compare in constant time whatever the lengths.
    fn digest(text: &[u8]) -> [u8; 32] {
        Sha256::digest(text).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

impl std::str::FromStr for Token {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text)
    }
}

/// A token or secret too short to be one (fewer than [`Token::MIN_CHARS`] characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(());

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a console token must be at least {} characters",
            Token::MIN_CHARS
        )
    }
}

impl std::error::Error for TokenError {}

/// What someone at the console may do: every page is open to both roles; only an
/// [`Role::Operator`] sees the forms and may act (replay, replay every dead letter, purge); a
/// [`Role::ReadOnly`] operator's action is refused with 403.
///
/// With an auth layer of your own, put the role in the request's extensions (the adapters
/// read it there; a request without one is an operator's). With the built-in [`Login`], the
/// token that opened the session decides; with both, the lower of the two applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Role {
    /// Sees every page, no form; every action is refused (403).
    ReadOnly,
    /// Sees every page and may act. The default.
    #[default]
    Operator,
}

impl Role {
    /// `read-only` or `operator`, as logged.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "read-only",
            Self::Operator => "operator",
        }
    }

    /// Whether this role may act.
    #[must_use]
    pub const fn can_act(self) -> bool {
        matches!(self, Self::Operator)
    }

    const fn tag(self) -> &'static str {
        match self {
            Self::ReadOnly => "r",
            Self::Operator => "o",
        }
    }
}

/// The tokens a [`Login`] accepts now.
struct Tokens {
    operator: Token,
    read_only: Option<Token>,
}

/// The console's built-in login: a token login (an operator token and, optionally, a read-only
/// one), a session cookie with an expiry, a logout; set on the console with
/// [`Console::login`](super::Console::login). Cheap to clone: the clones share their tokens, so
/// [`Login::rotate`] on any clone applies at once to the console holding another (no restart).
///
/// The session cookie (`airmy_console`, `HttpOnly`, `SameSite=Strict`, `Path` the console's
/// mount path, `Secure` with [`Login::secure_cookie`]) carries its role, its expiry, a random
/// nonce and an HMAC-SHA256 of them keyed by the token that opened it: never the token; any
/// replica with the same tokens accepts it; a rotated token ends every session it opened.
///
/// ```
/// use std::time::Duration;
/// use airmy_verify_inbox::console::{Login, Token};
///
/// # fn main() -> Result<(), airmy_verify_inbox::console::TokenError> {
/// let login = Login::new(Token::new("the-operators-token-0123")?)
///     .read_only(Token::new("the-read-only-token-4567")?)
///     .session_lifetime(Duration::from_secs(8 * 3600))
///     .secure_cookie(true);
/// // Later, from a reload handler: the old tokens' sessions end.
/// login.rotate(Token::new("the-new-operators-token-89")?, None);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Login {
    tokens: Arc<RwLock<Arc<Tokens>>>,
    lifetime: Duration,
    secure: bool,
    failure_delay: Duration,
    /// Held while a failed login waits: failures are answered one at a time.
    failures: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("tokens", &"[redacted]")
            .field("lifetime", &self.lifetime)
            .field("secure", &self.secure)
            .field("failure_delay", &self.failure_delay)
            .finish()
    }
}

/// A session, as its cookie says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Session<'a> {
    pub(super) role: Role,
    /// The cookie's whole value: what the forms' tokens are bound to.
    pub(super) value: &'a str,
}

impl Login {
    /// A login with one token, which makes its sessions operators'.
    #[must_use]
    pub fn new(operator: Token) -> Self {
        Self {
            tokens: Arc::new(RwLock::new(Arc::new(Tokens {
                operator,
                read_only: None,
            }))),
            lifetime: Duration::from_secs(12 * 3600),
            secure: false,
            failure_delay: Duration::from_secs(1),
            failures: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// A second token, whose sessions are read-only ([`Role::ReadOnly`]). Defaults to none.
    /// (A read-only token equal to the operator's opens operators' sessions.)
    #[must_use]
    pub fn read_only(self, token: Token) -> Self {
        let operator = self.current().operator.clone();
        self.rotate(operator, Some(token));
        self
    }

    /// How long a session lasts from its login. Defaults to 12 hours.
    #[must_use]
    pub fn session_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Whether the session cookie is `Secure` (sent over HTTPS only): set it when the console
    /// is reached over HTTPS, as it should be off loopback. Defaults to `false`.
    #[must_use]
    pub fn secure_cookie(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// How long a failed login waits before its answer; failed logins wait one at a time, so
    /// a process answers at most one wrong token per delay. Defaults to 1 second.
    #[must_use]
    pub fn failure_delay(mut self, delay: Duration) -> Self {
        self.failure_delay = delay;
        self
    }

    /// Replaces the tokens, at once for every clone of this login and the console holding it:
    /// the sessions the old tokens opened end (their next request asks for a login), forms
    /// rendered for them are refused. Call it from a reload of your configuration.
    pub fn rotate(&self, operator: Token, read_only: Option<Token>) {
        let tokens = Arc::new(Tokens {
            operator,
            read_only,
        });
        *self.tokens.write().unwrap_or_else(PoisonError::into_inner) = tokens;
    }

    fn current(&self) -> Arc<Tokens> {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key the forms' tokens are signed with when the console has no secret of its own:
    /// derived from the operator token (every replica has it; a rotation renews it).
    pub(super) fn form_key(&self) -> Zeroizing<Vec<u8>> {
        let tokens = self.current();
        let mut mac = HmacSha256::new_from_slice(tokens.operator.bytes())
            .expect("HMAC takes a key of any length");
        mac.update(b"airmy-console-form-key-v1");
        Zeroizing::new(mac.finalize().into_bytes().to_vec())
    }

    /// The role `given` opens a session for, if it is one of the tokens. Both tokens are
    /// compared, in constant time (SHA-256 digests, so the lengths do not show either).
    pub(super) fn role_of(&self, given: &[u8]) -> Option<Role> {
        let tokens = self.current();
        let given = Token::digest(given);
        let operator = given.ct_eq(&Token::digest(tokens.operator.bytes()));
        let read_only = tokens
            .read_only
            .as_ref()
            .map_or(subtle::Choice::from(0), |t| {
                given.ct_eq(&Token::digest(t.bytes()))
            });
        if bool::from(operator) {
            Some(Role::Operator)
        } else if bool::from(read_only) {
            Some(Role::ReadOnly)
        } else {
            None
        }
    }

    /// Waits the failure delay, one failure at a time.
    pub(super) async fn slow_down(&self) {
        let _one = self.failures.lock().await;
        tokio::time::sleep(self.failure_delay).await;
    }

    /// A new session's cookie value for `role`, expiring `lifetime` after `now_ms`.
    pub(super) fn open(&self, role: Role, now_ms: i128) -> Option<String> {
        let tokens = self.current();
        let token = match role {
            Role::Operator => &tokens.operator,
            Role::ReadOnly => tokens.read_only.as_ref()?,
        };
        let expires = now_ms + i128::try_from(self.lifetime.as_millis()).unwrap_or(i128::MAX / 2);
        let head = format!(
            "{}.{expires}.{}",
            role.tag(),
            airmy_verify::token::random_hex(16)
        );
        let mac = session_mac(token, &head);
        Some(format!(
            "{head}.{}",
            hex::encode(mac.finalize().into_bytes())
        ))
    }

    /// The session of one cookie value, if it is sound, unexpired at `now_ms`, and signed by
    /// the current token of its role.
    pub(super) fn session<'v>(&self, value: &'v str, now_ms: i128) -> Option<Session<'v>> {
        let (head, mac) = value.rsplit_once('.')?;
        let mut fields = head.splitn(3, '.');
        let role = match fields.next()? {
            "o" => Role::Operator,
            "r" => Role::ReadOnly,
            _ => return None,
        };
        let expires: i128 = fields.next()?.parse().ok()?;
        fields.next().filter(|nonce| !nonce.is_empty())?;
        if expires <= now_ms {
            return None;
        }
        let mac = hex::decode(mac).ok()?;
        let tokens = self.current();
        let token = match role {
            Role::Operator => &tokens.operator,
            Role::ReadOnly => tokens.read_only.as_ref()?,
        };
        session_mac(token, head).verify_slice(&mac).ok()?;
        Some(Session { role, value })
    }

    /// The `Set-Cookie` value of a session (`Some(value)`) or of a logout (`None`: expired).
    pub(super) fn cookie(&self, value: Option<&str>, path: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        match value {
            Some(value) => format!(
                "{COOKIE}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
                self.lifetime.as_secs()
            ),
            None => format!("{COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
        }
    }
}

/// The HMAC of a session's `role.expires.nonce`, keyed by the token that opened it.
fn session_mac(token: &Token, head: &str) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(token.bytes()).expect("HMAC takes a key of any length");
    mac.update(b"airmy-console-session-v1.");
    mac.update(head.as_bytes());
    mac
}

/// The values of every `airmy_console` cookie in a `Cookie` header.
pub(super) fn cookies(header: &str) -> impl Iterator<Item = &str> {
    header.split(';').filter_map(|pair| {
        pair.trim()
            .strip_prefix(COOKIE)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> Token {
        Token::new(text).expect("long enough")
    }

    #[test]
    fn tokens_are_sixteen_characters_or_more_and_never_shown() {
        assert!(Token::new("fifteen-chars-x").is_err());
        assert!(Token::new("sixteen-chars-xx").is_ok());
        assert!(
            Token::new("ééééééééééééééé").is_err(),
            "characters, not bytes"
        );
        let err = Token::new("hunter2").expect_err("short");
        assert!(!format!("{err} {err:?}").contains("hunter2"));
        let login = Login::new(token("the-operators-token-0123"));
        assert!(!format!("{login:?}").contains("the-operators-token"));
    }

    #[test]
    fn a_session_is_its_tokens_until_it_expires() {
        let login = Login::new(token("the-operators-token-0123"))
            .read_only(token("the-read-only-token-4567"));
        assert_eq!(
            login.role_of(b"the-operators-token-0123"),
            Some(Role::Operator)
        );
        assert_eq!(
            login.role_of(b"the-read-only-token-4567"),
            Some(Role::ReadOnly)
        );
        assert_eq!(login.role_of(b"the-operators-token-0124"), None);
        assert_eq!(login.role_of(b"short"), None);
        let value = login.open(Role::ReadOnly, 1_000).expect("a session");
        assert!(!value.contains("read-only-token"), "{value}");
        let lifetime = i128::try_from(login.lifetime.as_millis()).expect("fits");
        assert_eq!(
            login.session(&value, 1_000).map(|s| s.role),
            Some(Role::ReadOnly)
        );
        assert!(login.session(&value, 1_000 + lifetime).is_none(), "expired");
        // Another role's tag on the same MAC, a flipped byte, another expiry: refused.
        assert!(login.session(&value.replacen('r', "o", 1), 1_000).is_none());
        let mut flipped = value.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("hex");
        assert!(login.session(&flipped, 1_000).is_none());
        let (_, rest) = value.split_once('.').expect("role");
        let (_, rest) = rest.split_once('.').expect("expiry");
        let later = format!("r.{}.{rest}", 1_000 + 10 * lifetime);
        assert!(login.session(&later, 1_000).is_none());
        for odd in [
            "",
            ".",
            "r..x.00",
            "o.1.2",
            "r.x.y.zz",
            "r.99999999999999.n.zz",
        ] {
            assert!(login.session(odd, 1_000).is_none(), "{odd:?}");
        }
    }

    #[test]
    fn a_rotated_token_ends_its_sessions_in_every_clone() {
        let login = Login::new(token("the-operators-token-0123"));
        let held = login.clone();
        let value = login.open(Role::Operator, 0).expect("a session");
        assert!(held.session(&value, 0).is_some());
        login.rotate(token("the-new-operators-token-9"), None);
        assert!(held.session(&value, 0).is_none());
        assert_eq!(held.role_of(b"the-operators-token-0123"), None);
        assert_eq!(
            held.role_of(b"the-new-operators-token-9"),
            Some(Role::Operator)
        );
        assert!(held.open(Role::ReadOnly, 0).is_none(), "no read-only token");
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_when_asked() {
        let login = Login::new(token("the-operators-token-0123"));
        let set = login.cookie(Some("v"), "/ops");
        assert_eq!(
            set,
            "airmy_console=v; Path=/ops; Max-Age=43200; HttpOnly; SameSite=Strict"
        );
        let secure = login.secure_cookie(true);
        assert!(
            secure
                .cookie(None, "/")
                .ends_with("Max-Age=0; HttpOnly; SameSite=Strict; Secure")
        );
        assert_eq!(
            cookies("a=1; airmy_console=x; airmy_consoles=y;airmy_console=z").collect::<Vec<_>>(),
            ["x", "z"]
        );
    }
}
