//! Where an inbox lives, written as one string: `sqlite:PATH`, `redis://…`, `rediss://…`,
//! `postgres://…` or `postgresql://…`.
//! The example receivers' `AIRMY_INBOX` and the `airmy-webhook inbox --inbox` flag both take
//! it; a service of your own can too.
//!

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use airmy_verify::text::redact_url;

use crate::{Inbox, OpenError, OpenErrorKind};

/// Where an inbox lives: an SQLite file, a Redis server or a PostgreSQL database. Which ones
/// can be opened depends on the crate's features (`sqlite`, `redis`, `redis-tls` for
/// `rediss://`, `postgres`); every form parses
/// whatever the features, and [`InboxUrl::open`] says which feature is missing.
///
/// A URL may also carry the inbox's own settings as query parameters: `?schema=NAME` on
/// PostgreSQL ([`PgOptions::schema`](crate::PgOptions::schema)), and `?pooler=true` when the
/// URL goes through a transaction pooler such as PgBouncer in transaction mode
/// ([`PgOptions::pooler`](crate::PgOptions::pooler)); `?prefix=PREFIX` on Redis
/// ([`RedisOptions::prefix`](crate::RedisOptions::prefix)), and `?cluster=true` when the URL
/// names a Redis Cluster ([`RedisOptions::cluster`](crate::RedisOptions::cluster)): any node, or
/// several seeds separated by commas, `redis://[:password@]node-a:6379,node-b:6379?cluster=true`
/// (several hosts without `cluster=true` fail to open as invalid). They
/// are taken off the URL before
/// the URL reaches the driver. Any other parameter must be one the driver reads (sqlx's
/// `sslmode`, `application_name`, …; the Redis client's `protocol`): an unknown one is refused,
/// never ignored.
///
/// ```
/// use airmy_verify_inbox::InboxUrl;
///
/// let url: InboxUrl = "sqlite:/var/lib/billing/inbox.db".parse()?;
/// assert!(matches!(url, InboxUrl::Sqlite(_)));
/// let url: InboxUrl = "redis://:hunter2@redis.internal:6379".parse()?;
/// // Shown (Display, Debug, errors) without its password.
/// assert_eq!(url.to_string(), "redis://[redacted]@redis.internal:6379");
/// let url: InboxUrl = "postgres://app@db/billing?sslmode=require&schema=billing_inbox".parse()?;
/// assert_eq!(
///     url,
///     InboxUrl::Postgres {
///         url: "postgres://app@db/billing?sslmode=require".to_owned(),
///         schema: Some("billing_inbox".to_owned()),
///         pooler: false,
///     }
/// );
/// assert!("postgres://app@db/billing?schem=x".parse::<InboxUrl>().is_err()); // unknown
/// assert!("inbox.db".parse::<InboxUrl>().is_err()); // sqlite: is required
/// # Ok::<(), airmy_verify_inbox::OpenError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboxUrl {
    /// An SQLite file (`sqlite:PATH`, absolute or relative to the working directory).
    Sqlite(PathBuf),
    /// A Redis server (`redis://…` or `rediss://…`), shared by every replica using it.
    Redis {
        /// The URL as the Redis client takes it: without `prefix`.
        url: String,
        /// The prefix of the inbox's keys (`?prefix=…`); `None`: the default, `airmy:inbox:`.
        prefix: Option<String>,
        /// Whether the URL is a node of a Redis Cluster (`?cluster=true`;
        /// [`RedisOptions::cluster`](crate::RedisOptions::cluster)); false without the
        /// parameter.
        cluster: bool,
    },
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`), shared by every replica
    /// using it.
    Postgres {
        /// The URL as sqlx takes it: without `schema`.
        url: String,
        /// The schema of the inbox's tables (`?schema=…`); `None`: the default, `airmy_inbox`.
        schema: Option<String>,
        /// Whether the URL goes through a transaction pooler (`?pooler=true`;
        /// [`PgOptions::pooler`](crate::PgOptions::pooler)); false without the parameter.
        pooler: bool,
    },
}

/// The query parameters sqlx 0.9 reads from a PostgreSQL URL (`PgConnectOptions`), its
/// alternative spellings after the first; `options[NAME]` too. sqlx ignores any other.
const POSTGRES_PARAMETERS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
    "statement-cache-capacity",
    "ssl-mode",
    "ssl-root-cert",
    "ssl-ca",
    "ssl-cert",
    "ssl-key",
];

/// The query parameters the Redis client (redis 1) reads from a `redis://` URL. It ignores any
/// other.
const REDIS_PARAMETERS: &[&str] = &["protocol"];

impl FromStr for InboxUrl {
    type Err = OpenError;

    /// Reads `sqlite:PATH` (a non-empty path, not `sqlite://…`), `redis://…`, `rediss://…`,
    /// `postgres://…` or `postgresql://…`;
    /// surrounding whitespace is ignored. Anything else, a query parameter that neither the
    /// inbox nor the driver reads, or the inbox's own parameter empty or given twice, is an
    /// [`OpenError`] of kind [`Invalid`](OpenErrorKind::Invalid), shown without its password.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.starts_with("redis://") || text.starts_with("rediss://") {
            let (url, [prefix, cluster]) = take_parameters(text, ["prefix", "cluster"], |key| {
                REDIS_PARAMETERS.contains(&key)
            })?;
            let cluster = flag(text, "cluster", cluster.as_deref())?;
            return Ok(Self::Redis {
                url,
                prefix,
                cluster,
            });
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            let (url, [schema, pooler]) = take_parameters(text, ["schema", "pooler"], |key| {
                POSTGRES_PARAMETERS.contains(&key) || key.starts_with("options[")
            })?;
            let pooler = flag(text, "pooler", pooler.as_deref())?;
            return Ok(Self::Postgres {
                url,
                schema,
                pooler,
            });
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

/// The inbox's boolean parameter `key` of `url`: `true` or `false`, false when absent.
fn flag(url: &str, key: &str, value: Option<&str>) -> Result<bool, OpenError> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(OpenError::new(
            OpenErrorKind::Invalid,
            format!(
                "{}: the parameter {key} must be true or false",
                redact_url(url)
            ),
        )),
    }
}

/// `url` without the inbox's parameters `ours`, and their values: every other parameter must
/// be one the driver reads (`driver_reads`). The rest of the URL is kept as it was written.
fn take_parameters<const N: usize>(
    url: &str,
    ours: [&str; N],
    driver_reads: impl Fn(&str) -> bool,
) -> Result<(String, [Option<String>; N]), OpenError> {
    let invalid = |what: String| {
        OpenError::new(
            OpenErrorKind::Invalid,
            format!("{}: {what}", redact_url(url)),
        )
    };
    // A `?` or `#` before an `@` may be inside the password: the query cannot be told from
    // it, and nothing of the URL can be shown safely.
    if let Some(first) = url.find(['?', '#'])
        && url[first..].contains('@')
    {
        return Err(OpenError::new(
            OpenErrorKind::Invalid,
            "the URL has a `?` or `#` before an `@` (in its password, or an `@` in its query): \
             percent-encode them (%3F, %23, %40)",
        ));
    }
    let (head, fragment) = url.split_at(url.find('#').unwrap_or(url.len()));
    let Some((base, query)) = head.split_once('?') else {
        return Ok((url.to_owned(), std::array::from_fn(|_| None)));
    };
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    let named = ours.join(", ");
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, given) = form_urlencoded::parse(pair.as_bytes())
            .next()
            .unwrap_or_default();
        if let Some(i) = ours.iter().position(|ours| *ours == key) {
            if values[i].is_some() {
                return Err(invalid(format!("the parameter {key} is given twice")));
            }
            if given.is_empty() {
                return Err(invalid(format!("the parameter {key} is empty")));
            }
            values[i] = Some(given.into_owned());
        } else if driver_reads(&key) {
            kept.push(pair);
        } else if key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']'))
        {
            return Err(invalid(format!(
                "unknown parameter {key:?} (neither {named} nor one the driver reads)"
            )));
        } else {
            // Not a name: perhaps a piece of a password with a `?` in it; not repeated.
            return Err(invalid(format!(
                "a query parameter is not a name (neither {named} nor one the driver \
                 reads)"
            )));
        }
    }
    let mut url = base.to_owned();
    if !kept.is_empty() {
        url.push('?');
        url.push_str(&kept.join("&"));
    }
    url.push_str(fragment);
    Ok((url, values))
}

/// `url` with the parameter `key=value` added, before any fragment.
fn with_parameter(url: &str, key: &str, value: Option<&str>) -> String {
    let Some(value) = value else {
        return url.to_owned();
    };
    let (head, fragment) = url.split_at(url.find('#').unwrap_or(url.len()));
    let separator = if head.contains('?') { '&' } else { '?' };
    let value: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    format!("{head}{separator}{key}={value}{fragment}")
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
            Self::Redis {
                url,
                prefix,
                cluster,
            } => open_redis(url, prefix.as_deref(), *cluster).await,
            Self::Postgres {
                url,
                schema,
                pooler,
            } => open_postgres(url, schema.as_deref(), *pooler).await,
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
async fn open_redis(url: &str, prefix: Option<&str>, cluster: bool) -> Result<Inbox, OpenError> {
    let mut options = crate::RedisOptions::default().cluster(cluster);
    if let Some(prefix) = prefix {
        options = options.prefix(prefix);
    }
    crate::RedisBackend::connect(url, options)
        .await
        .map(Inbox::new)
        .map_err(|e| e.context(&format!("cannot use {}", redact_url(url))))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(url: &str, _prefix: Option<&str>, _cluster: bool) -> Result<Inbox, OpenError> {
    Err(OpenError::new(
        OpenErrorKind::Invalid,
        format!(
            "cannot use {}: this build of airmy-verify-inbox has no Redis backend (feature `redis`)",
            redact_url(url)
        ),
    ))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, schema: Option<&str>, pooler: bool) -> Result<Inbox, OpenError> {
    let mut options = crate::PgOptions::default().pooler(pooler);
    if let Some(schema) = schema {
        options = options.schema(schema);
    }
    crate::PgBackend::connect(url, options)
        .await
        .map(Inbox::new)
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(
    url: &str,
    _schema: Option<&str>,
    _pooler: bool,
) -> Result<Inbox, OpenError> {
    Err(OpenError::new(
        OpenErrorKind::Invalid,
        format!(
            "cannot use {}: this build of airmy-verify-inbox has no PostgreSQL backend (feature `postgres`)",
            redact_url(url)
        ),
    ))
}

impl fmt::Display for InboxUrl {
    /// The form it was parsed from (the inbox's parameters last), a URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Redis {
                url,
                prefix,
                cluster,
            } => f.write_str(&with_parameter(
                &with_parameter(&redact_url(url), "prefix", prefix.as_deref()),
                "cluster",
                cluster.then_some("true"),
            )),
            Self::Postgres {
                url,
                schema,
                pooler,
            } => f.write_str(&with_parameter(
                &with_parameter(&redact_url(url), "schema", schema.as_deref()),
                "pooler",
                pooler.then_some("true"),
            )),
        }
    }
}

impl fmt::Debug for InboxUrl {
    /// Shows a URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Redis {
                url,
                prefix,
                cluster,
            } => f
                .debug_struct("Redis")
                .field("url", &redact_url(url))
                .field("prefix", prefix)
                .field("cluster", cluster)
                .finish(),
            Self::Postgres {
                url,
                schema,
                pooler,
            } => f
                .debug_struct("Postgres")
                .field("url", &redact_url(url))
                .field("schema", schema)
                .field("pooler", pooler)
                .finish(),
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
            InboxUrl::Redis {
                url: "redis://127.0.0.1:6379/2".to_owned(),
                prefix: None,
                cluster: false,
            }
        );
        assert!(matches!(
            "rediss://redis.internal".parse(),
            Ok(InboxUrl::Redis { .. })
        ));
        for pg in [
            "postgres://app@db/billing",
            "postgresql://app:pw@db:5433/billing",
        ] {
            assert_eq!(
                pg.parse::<InboxUrl>().expect("parses"),
                InboxUrl::Postgres {
                    url: pg.to_owned(),
                    schema: None,
                    pooler: false,
                }
            );
        }
    }

    #[test]
    fn the_inbox_parameter_is_taken_off_the_url() {
        let url: InboxUrl = "postgres://app:pw@db/billing?schema=billing_inbox&sslmode=disable"
            .parse()
            .expect("parses");
        assert_eq!(
            url,
            InboxUrl::Postgres {
                url: "postgres://app:pw@db/billing?sslmode=disable".to_owned(),
                schema: Some("billing_inbox".to_owned()),
                pooler: false,
            }
        );
        assert_eq!(
            url.to_string(),
            "postgres://[redacted]@db/billing?sslmode=disable&schema=billing_inbox"
        );
        for (text, rest) in [
            ("postgres://db/b?schema=s", "postgres://db/b"),
            (
                "postgres://db/b?application_name=x&schema=s&options[search_path]=y",
                "postgres://db/b?application_name=x&options[search_path]=y",
            ),
            ("postgresql://db/b?&schema=s&", "postgresql://db/b"),
        ] {
            assert_eq!(
                text.parse::<InboxUrl>().expect(text),
                InboxUrl::Postgres {
                    url: rest.to_owned(),
                    schema: Some("s".to_owned()),
                    pooler: false,
                },
            );
        }
        assert_eq!(
            "rediss://h:6380/1?prefix=billing%3Ainbox%3A&protocol=resp3#insecure"
                .parse::<InboxUrl>()
                .expect("parses"),
            InboxUrl::Redis {
                url: "rediss://h:6380/1?protocol=resp3#insecure".to_owned(),
                prefix: Some("billing:inbox:".to_owned()),
                cluster: false,
            }
        );
    }

    #[test]
    fn an_unknown_parameter_is_refused_by_name_without_the_password() {
        for (text, named) in [
            ("postgres://app:hunter2@db/b?schem=x", "\"schem\""),
            (
                "postgres://app:hunter2@db/b?sslmode=disable&foo=1",
                "\"foo\"",
            ),
            ("postgres://db/b?password=hunter2&prefix=x", "\"prefix\""),
            ("redis://:hunter2@h/0?schema=x", "\"schema\""),
            ("postgres://app:hun?ter2@db/b", "percent-encode"),
            ("postgres://db/b?schema=a&schema=b", "given twice"),
            ("postgres://db/b?schema=", "is empty"),
            ("postgres://db/b?pooler=yes", "pooler must be true or false"),
            ("postgres://db/b?pooler=true&pooler=true", "given twice"),
            ("redis://h?prefix", "is empty"),
            ("redis://h?cluster=yes", "cluster must be true or false"),
            ("redis://h?cluster=true&cluster=true", "given twice"),
            ("postgres://db/b?cluster=true", "\"cluster\""),
        ] {
            let err = text.parse::<InboxUrl>().expect_err(text);
            let shown = err.to_string();
            assert_eq!(err.kind(), OpenErrorKind::Invalid, "{text}");
            assert!(shown.contains(named), "{shown}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("ter2"),
                "{shown}"
            );
            assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        }
    }

    #[test]
    fn pooler_true_marks_a_transaction_pooler_and_is_shown() {
        let url: InboxUrl = "postgres://app:hunter2@pgbouncer:6432/billing?pooler=true&schema=s"
            .parse()
            .expect("parses");
        assert_eq!(
            url,
            InboxUrl::Postgres {
                url: "postgres://app:hunter2@pgbouncer:6432/billing".to_owned(),
                schema: Some("s".to_owned()),
                pooler: true,
            }
        );
        assert_eq!(
            url.to_string(),
            "postgres://[redacted]@pgbouncer:6432/billing?schema=s&pooler=true"
        );
        let url: InboxUrl = "postgres://db/b?pooler=false".parse().expect("parses");
        assert!(matches!(url, InboxUrl::Postgres { pooler: false, .. }));
    }

    #[test]
    fn cluster_true_marks_a_redis_cluster_node_and_is_shown() {
        let url: InboxUrl = "redis://:hunter2@node-2:7001/0?cluster=true&prefix=billing:"
            .parse()
            .expect("parses");
        assert_eq!(
            url,
            InboxUrl::Redis {
                url: "redis://:hunter2@node-2:7001/0".to_owned(),
                prefix: Some("billing:".to_owned()),
                cluster: true,
            }
        );
        assert_eq!(
            url.to_string(),
            "redis://[redacted]@node-2:7001/0?prefix=billing%3A&cluster=true"
        );
        // Shown as parsed: the form reads back the same.
        let url: InboxUrl = "redis://node-2:7001?cluster=true".parse().expect("parses");
        assert_eq!(url.to_string().parse::<InboxUrl>().ok(), Some(url));
        let url: InboxUrl = "rediss://h?cluster=false".parse().expect("parses");
        assert!(matches!(url, InboxUrl::Redis { cluster: false, .. }));
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
    fn a_password_holding_a_question_mark_is_refused_unseen() {
        for text in [
            "postgres://postgres:topsecret?schema=x@127.0.0.1:5432/app",
            "redis://:sec?prefix=ret@127.0.0.1:6379/0",
            "postgres://postgres:hun?ter&2@x@127.0.0.1:5432/app?schema=x",
            "postgres://u:a#b@h/db?schema=x",
        ] {
            let err = text.parse::<InboxUrl>().expect_err(text);
            assert_eq!(err.kind(), OpenErrorKind::Invalid);
            let shown = format!("{err} {err:?}");
            for secret in ["topsecret", "sec", "ret", "hun", "ter", "a#b"] {
                assert!(!shown.contains(secret), "{text}: {shown}");
            }
        }
        // Encoded, it parses.
        let url: InboxUrl = "postgres://u:top%3Fsecret@h/db?schema=x"
            .parse()
            .expect("parses");
        assert!(!format!("{url} {url:?}").contains("top%3Fsecret"));
    }

    #[test]
    fn a_password_is_never_shown() {
        for text in [
            "redis://:hunter2@127.0.0.1:1/0?prefix=p:",
            "postgres://app:hunter2@db/billing?schema=s",
            "postgres://db/billing?password=hunter2&schema=s",
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
