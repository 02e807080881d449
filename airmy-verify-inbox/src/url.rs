//! Where an inbox lives, written as one string: `sqlite:PATH`, `redis://…`, `rediss://…`,
//! `postgres://…` or `postgresql://…`.
//! The example receivers' `AIRMY_INBOX` and the `airmy-webhook inbox --inbox` flag both take
//! it; a service of your own can too.
//!
//! ```
//! use airmy_verify_inbox::InboxUrl;
//!
//! let url: InboxUrl = "sqlite:/var/lib/billing/inbox.db".parse()?;
//! assert!(matches!(url, InboxUrl::Sqlite(_)));
//! let url: InboxUrl = "redis://:hunter2@redis.internal:6379".parse()?;
//! // Shown (Display, Debug, errors) without its password.
//! assert_eq!(url.to_string(), "redis://[redacted]@redis.internal:6379");
//! assert!("inbox.db".parse::<InboxUrl>().is_err()); // sqlite: is required
//! # Ok::<(), airmy_verify_inbox::OpenError>(())
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use airmy_verify::text::redact_url;

use crate::{Inbox, OpenError, OpenErrorKind};

/// Where an inbox lives: an SQLite file, a Redis server or a PostgreSQL database. Which ones
/// can be opened depends on the crate's features (`sqlite`, `redis`, `redis-tls` for
/// `rediss://`, `postgres`); every form parses
/// whatever the features, and [`InboxUrl::open`] says which feature is missing.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboxUrl {
    /// An SQLite file (`sqlite:PATH`, absolute or relative to the working directory).
    Sqlite(PathBuf),
    /// A Redis server (`redis://…` or `rediss://…`), shared by every replica using it, with
    /// the default options (keys under `airmy:inbox:`).
    Redis(String),
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`), shared by every replica
    /// using it, with the default options (tables in the schema `airmy_inbox`).
    Postgres(String),
}

impl FromStr for InboxUrl {
    type Err = OpenError;

    /// Reads `sqlite:PATH` (a non-empty path, not `sqlite://…`), `redis://…`, `rediss://…`,
    /// `postgres://…` or `postgresql://…`;
    /// surrounding whitespace is ignored. Anything else is an [`OpenError`] of kind
    /// [`Invalid`](OpenErrorKind::Invalid), shown without its password.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.starts_with("redis://") || text.starts_with("rediss://") {
            return Ok(Self::Redis(text.to_owned()));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres(text.to_owned()));
        }
        match text.strip_prefix("sqlite:") {
            Some(path) if !path.is_empty() && !path.starts_with("//") => {
                Ok(Self::Sqlite(PathBuf::from(path)))
            }
            _ => Err(OpenError::new(
                OpenErrorKind::Invalid,
                format!(
                    "must be sqlite:PATH, a redis:// or a postgres:// URL, got {:?}",
                    redact_url(text)
                ),
            )),
        }
    }
}

impl InboxUrl {
    /// Opens the inbox: the SQLite file (created if missing, unless `existing_only`: an
    /// operator's command should not create an empty inbox from a typo), or a connection to
    /// Redis, which must answer now.
    ///
    /// # Errors
    ///
    /// An [`OpenError`] saying why, without any password: the backend's own (its kind as the
    /// driver tells it), [`Invalid`](OpenErrorKind::Invalid) when this build lacks the
    /// backend's feature, [`Unavailable`](OpenErrorKind::Unavailable) for a missing file with
    /// `existing_only`.
    pub async fn open(&self, existing_only: bool) -> Result<Inbox, OpenError> {
        match self {
            Self::Sqlite(path) => open_sqlite(path, existing_only),
            Self::Redis(url) => open_redis(url).await,
            Self::Postgres(url) => open_postgres(url).await,
        }
    }
}

#[cfg(feature = "sqlite")]
fn open_sqlite(path: &std::path::Path, existing_only: bool) -> Result<Inbox, OpenError> {
    if existing_only && !path.is_file() {
        return Err(OpenError::new(
            OpenErrorKind::Unavailable,
            format!("no inbox at {}", path.display()),
        ));
    }
    crate::SqliteBackend::open(path, crate::SqliteOptions::default()).map(Inbox::new)
}

#[cfg(not(feature = "sqlite"))]
fn open_sqlite(path: &std::path::Path, _existing_only: bool) -> Result<Inbox, OpenError> {
    Err(OpenError::new(
        OpenErrorKind::Invalid,
        format!(
            "cannot open {}: this build of airmy-verify-inbox has no SQLite backend (feature `sqlite`)",
            path.display()
        ),
    ))
}

#[cfg(feature = "redis")]
async fn open_redis(url: &str) -> Result<Inbox, OpenError> {
    crate::RedisBackend::connect(url, crate::RedisOptions::default())
        .await
        .map(Inbox::new)
        .map_err(|e| e.context(&format!("cannot use {}", redact_url(url))))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(url: &str) -> Result<Inbox, OpenError> {
    Err(OpenError::new(
        OpenErrorKind::Invalid,
        format!(
            "cannot use {}: this build of airmy-verify-inbox has no Redis backend (feature `redis`)",
            redact_url(url)
        ),
    ))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Inbox, OpenError> {
    crate::PgBackend::connect(url, crate::PgOptions::default())
        .await
        .map(Inbox::new)
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(url: &str) -> Result<Inbox, OpenError> {
    Err(OpenError::new(
        OpenErrorKind::Invalid,
        format!(
            "cannot use {}: this build of airmy-verify-inbox has no PostgreSQL backend (feature `postgres`)",
            redact_url(url)
        ),
    ))
}

impl fmt::Display for InboxUrl {
    /// The form it was parsed from, a Redis URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Redis(url) | Self::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for InboxUrl {
    /// Shows a Redis URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Redis(url) => f.debug_tuple("Redis").field(&redact_url(url)).finish(),
            Self::Postgres(url) => f.debug_tuple("Postgres").field(&redact_url(url)).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_parse() {
        assert_eq!(
            " sqlite:inbox.db ".parse::<InboxUrl>().expect("parses"),
            InboxUrl::Sqlite(PathBuf::from("inbox.db"))
        );
        assert_eq!(
            "redis://127.0.0.1:6379/2"
                .parse::<InboxUrl>()
                .expect("parses"),
            InboxUrl::Redis("redis://127.0.0.1:6379/2".to_owned())
        );
        assert!(matches!(
            "rediss://redis.internal".parse(),
            Ok(InboxUrl::Redis(_))
        ));
        for pg in [
            "postgres://app@db/billing",
            "postgresql://app:pw@db:5433/billing",
        ] {
            assert_eq!(
                pg.parse::<InboxUrl>().expect("parses"),
                InboxUrl::Postgres(pg.to_owned())
            );
        }
    }

    #[test]
    fn anything_else_is_refused_without_its_password() {
        for bad in [
            "",
            "inbox.db",
            "sqlite:",
            "sqlite://x.db",
            "http://h",
            "mysql://u:pw@h/db",
        ] {
            let err = bad.parse::<InboxUrl>().expect_err(bad);
            let shown = err.to_string();
            assert_eq!(err.kind(), OpenErrorKind::Invalid);
            assert!(shown.contains("sqlite:PATH"), "{shown}");
            assert!(!shown.contains(":pw@"), "{shown}");
        }
    }

    #[test]
    fn a_password_is_never_shown() {
        for text in [
            "redis://:hunter2@127.0.0.1:1/0",
            "postgres://app:hunter2@db/billing",
        ] {
            let url: InboxUrl = text.parse().expect("parses");
            assert!(!format!("{url} {url:?}").contains("hunter2"));
        }
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn an_operators_open_does_not_create_a_file() {
        let path = std::env::temp_dir().join(format!("airmy-inbox-url-{}.db", std::process::id()));
        let url = InboxUrl::Sqlite(path.clone());
        let err = url.open(true).await.expect_err("missing");
        assert_eq!(err.to_string(), format!("no inbox at {}", path.display()));
        assert!(!path.exists());
        url.open(false).await.expect("created");
        assert!(path.is_file());
        url.open(true).await.expect("opens now");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn an_unreachable_redis_is_named_without_its_password() {
        let url: InboxUrl = "redis://:hunter2@127.0.0.1:1/0".parse().expect("parses");
        let err = url
            .open(false)
            .await
            .expect_err("nothing listens on port 1");
        let shown = err.to_string();
        assert!(
            shown.starts_with("cannot use redis://[redacted]@127.0.0.1:1/0"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!format!("{err:?}").contains("hunter2"));
        assert_eq!(err.kind(), OpenErrorKind::Refused, "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
    }
}
