//! A whole service, as an application writes it (binaries `axum-service` and
//! `actix-service`): its own state holding its `PgPool`, a plain JSON route that queries it
//! (`GET /runs/{id}`), a liveness route (`GET /healthz`) and a JSON 404 for everything else;
//! AIRMY's webhook at `POST /hooks/airmy`, verified, accepted into the durable inbox on
//! PostgreSQL **on the application's own pool**, and handled by a worker whose `run.completed`
//! handler writes a row in the entry's transaction (exactly once); the inbox's web console at
//! `/ops/inbox` behind the application's own bearer token; graceful shutdown in the documented
//! order (server, worker, backend, pool).
//!
//! This module holds what both frameworks share: the configuration ([`Config`]), the state
//! ([`AppState`]), the database ([`Database`]: the pool, the table, the inbox's backend), the
//! handlers ([`handlers`]) and the token check ([`OpsToken`]). [`axum`] and [`actix`] build
//! the routes and run the server.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DATABASE_URL` | the service's PostgreSQL (`postgres://user:password@host/db`): its table `completed_runs` and the inbox (schema `airmy_inbox`) | required |
//! | `AIRMY_WEBHOOK_SECRET` | the signing secret, exactly as configured in AIRMY | required |
//! | `LISTEN` | `HOST:PORT` to bind | `127.0.0.1:3000` |
//! | `OPS_TOKEN` | the bearer token of the console at `/ops/inbox` (at least 16 characters) | unset: no console (404) |
//!
//! A missing or wrong variable, a database that cannot be reached or an address that cannot
//! be bound exits with code 2 and one line on standard error, before anything listens.

pub mod actix;
pub mod axum;

use std::fmt;
use std::time::Duration;

use airmy_verify::event::RunCompleted;
use airmy_verify::text::redact_url;
use airmy_verify::{Envelope, Event, Secret, Verifier};
use airmy_verify_inbox::{HandlerError, Handlers, PgBackend, PgContext, PgOptions};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use subtle::ConstantTimeEq;

use crate::ConfigError;

/// The path AIRMY delivers to.
pub const WEBHOOK_PATH: &str = "/hooks/airmy";

/// Where the console is mounted: its overview at `/ops/inbox`, its pages under it.
pub const CONSOLE_PATH: &str = "/ops/inbox";

/// What the service needs to start, from the environment.
pub struct Config {
    /// `DATABASE_URL`.
    pub database_url: String,
    /// The verifier of `AIRMY_WEBHOOK_SECRET` (real clock, default tolerance).
    pub verifier: Verifier,
    /// `LISTEN`.
    pub listen: String,
    /// `OPS_TOKEN`: the console's bearer token; no console without it.
    pub ops_token: Option<OpsToken>,
}

impl fmt::Debug for Config {
    /// Shows the database URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("verifier", &self.verifier)
            .field("listen", &self.listen)
            .field("ops_token", &self.ops_token)
            .finish()
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the variable that is missing or wrong.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (for tests).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the variable that is missing or wrong.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &str, what: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ConfigError(format!("{name} is missing or empty: {what}")))
        };
        let database_url = required(
            "DATABASE_URL",
            "the service's PostgreSQL, such as postgres://app:password@127.0.0.1/app",
        )?;
        let secret = required(
            "AIRMY_WEBHOOK_SECRET",
            "the signing secret, exactly as configured in AIRMY",
        )?;
        let secret = Secret::new(secret)
            .map_err(|e| ConfigError(format!("AIRMY_WEBHOOK_SECRET is not usable: {e}")))?;
        let listen = lookup("LISTEN")
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
        let ops_token = match lookup("OPS_TOKEN").filter(|v| !v.is_empty()) {
            None => None,
            Some(token) => Some(OpsToken::new(&token)?),
        };
        Ok(Self {
            database_url,
            verifier: Verifier::new(secret),
            listen,
            ops_token,
        })
    }
}

/// The console's bearer token. Kept as its SHA-256 and compared in constant time
/// (`subtle`), so neither the token nor its length leaks through timing.
#[derive(Clone)]
pub struct OpsToken([u8; 32]);

impl fmt::Debug for OpsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpsToken([redacted])")
    }
}

impl OpsToken {
    /// The token operators send as `Authorization: Bearer <token>`.
    ///
    /// # Errors
    ///
    /// When it is shorter than 16 characters.
    pub fn new(token: &str) -> Result<Self, ConfigError> {
        if token.chars().count() < 16 {
            return Err(ConfigError(
                "OPS_TOKEN must be at least 16 characters".to_owned(),
            ));
        }
        Ok(Self(Sha256::digest(token.as_bytes()).into()))
    }

    /// Whether an `Authorization` header value carries the token: the `Bearer` scheme in any
    /// case (RFC 9110 §11.1), then spaces or tabs, then the token.
    #[must_use]
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some((scheme, rest)) = value.split_at_checked(6) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer")
            || !rest.starts_with(b" ") && !rest.starts_with(b"\t")
        {
            return false;
        }
        let given = rest.trim_ascii();
        let given: [u8; 32] = Sha256::digest(given).into();
        given.ct_eq(&self.0).into()
    }
}

/// The application's own state: what its routes need.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The application's pool (the inbox runs on it too).
    pub pool: PgPool,
}

/// The application's table: one row per `run.completed` handled, written in the inbox
/// entry's transaction. No unique constraint: the transaction alone makes it once.
pub const RUNS_TABLE: &str = "completed_runs";

/// The application's database: its pool and the inbox's backend on that pool.
#[derive(Debug)]
pub struct Database {
    /// The application's pool.
    pub pool: PgPool,
    /// The inbox on the same pool (keep it: its worker runs the transactional handlers).
    pub backend: PgBackend,
}

impl Database {
    /// Connects the pool, creates the application's table if it is missing, and opens the
    /// inbox on the pool (its schema `airmy_inbox` created or migrated).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] (without the password) when the database cannot be used.
    pub async fn open(url: &str) -> Result<Self, ConfigError> {
        let fail = |e: &dyn fmt::Display| {
            ConfigError(format!("DATABASE_URL: cannot use {}: {e}", redact_url(url)))
        };
        // Sized for the application's queries, the inbox's listener (one connection for the
        // backend's life) and the worker's transactions (one per running handler).
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| fail(&e))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS completed_runs (
                 run_id text NOT NULL,
                 event_id text NOT NULL,
                 tokens_used bigint,
                 recorded_at timestamptz NOT NULL DEFAULT now())",
        )
        .execute(&pool)
        .await
        .map_err(|e| fail(&e))?;
        let backend = PgBackend::with_pool(pool.clone(), PgOptions::default())
            .await
            .map_err(|e| fail(&e))?;
        Ok(Self { pool, backend })
    }

    /// The last step of the shutdown, once the server and the worker have stopped (and every
    /// `Inbox` is gone with the routes): drop the backend (its listener's connection goes
    /// back), then close the pool.
    pub async fn close(self) {
        drop(self.backend);
        self.pool.close().await;
    }
}

/// The handlers the worker runs: `run.completed` writes a row of [`RUNS_TABLE`] in the entry's
/// transaction (the row and the entry's completion commit together, or neither); every other
/// event type is logged and completed.
#[must_use]
pub fn handlers() -> Handlers<PgContext> {
    Handlers::default()
        .on(|run: Envelope<RunCompleted>, ctx: PgContext| async move {
            let Some(run_id) = run.data.id.as_deref() else {
                tracing::warn!(event = %run.id, "run.completed without a run id: nothing recorded");
                return Ok(());
            };
            let tokens = run.data.tokens_used.and_then(|t| i64::try_from(t).ok());
            let mut tx = ctx.transaction().await?;
            sqlx::query("INSERT INTO completed_runs (run_id, event_id, tokens_used) VALUES ($1, $2, $3)")
                .bind(run_id)
                .bind(&run.id)
                .bind(tokens)
                .execute(&mut *tx)
                .await?;
            Ok::<(), HandlerError>(())
        })
        .fallback(|event: Envelope<Event>, ctx: PgContext| async move {
            tracing::info!(event = %event.id, r#type = event.event_type(), attempt = ctx.attempt, "not for this service");
            Ok::<(), HandlerError>(())
        })
}

/// What `GET /runs/{id}` answers: the run's latest row as JSON, `None` when there is none.
///
/// # Errors
///
/// When the database does not answer.
pub async fn find_run(pool: &PgPool, run_id: &str) -> Result<Option<Value>, sqlx::Error> {
    let row: Option<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT run_id, event_id, tokens_used FROM completed_runs
         WHERE run_id = $1 ORDER BY recorded_at DESC LIMIT 1",
    )
    .bind(run_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(run_id, event_id, tokens_used)| {
        json!({ "run_id": run_id, "event_id": event_id, "tokens_used": tokens_used })
    }))
}

/// Logs to standard error, filtered by `RUST_LOG` (`info` by default).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::OpsToken;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_exact() {
        let token = OpsToken::new("s3cret-operator-token").expect("long enough");
        for ok in [
            "Bearer s3cret-operator-token",
            "bearer s3cret-operator-token",
            "BEARER s3cret-operator-token",
            "Bearer\ts3cret-operator-token",
            "Bearer  s3cret-operator-token ",
        ] {
            assert!(token.allows(Some(ok.as_bytes())), "{ok:?}");
        }
        for refused in [
            "Bearers3cret-operator-token",
            "Basic s3cret-operator-token",
            "Bearer s3cret-operator-tokeN",
            "Bearer",
            "",
        ] {
            assert!(!token.allows(Some(refused.as_bytes())), "{refused:?}");
        }
        assert!(!token.allows(None));
    }
}
