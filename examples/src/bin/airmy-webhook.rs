//! `airmy-webhook`: deliver signed AIRMY events to an endpoint, the way AIRMY does, for testing
//! your own receiver (like `airmy webhooks test`, but aimed at a local URL).
//!
//! ```text
//! airmy-webhook send --url http://127.0.0.1:3000/hooks/airmy --secret whsec_... --type run.completed
//! airmy-webhook send --url ... --secret ... --file body.json     # the file's exact bytes
//! airmy-webhook sign --secret whsec_... body.json                # prints the signature, for curl
//! airmy-webhook inbox --inbox sqlite:inbox.db stats              # the durable inbox's counts
//! airmy-webhook inbox --inbox redis://127.0.0.1:6379 stats       # the same, on Redis
//! airmy-webhook inbox dead | replay ID | replay --all-dead | replay --dead-since 2026-12-01T00:00:00Z
//! airmy-webhook inbox purge --processed-before 2026-11-01T00:00:00Z
//! ```
//!
//! `inbox` works on a receiver's inbox (`--inbox`, or `AIRMY_INBOX`), also while the receiver
//! runs: `stats` (pending, scheduled, processing, dead, done, oldest pending age), `dead`
//! (id, type, attempts, last error), `replay` (one id, every dead letter, or those that died
//! since a time; `--dry-run` lists without replaying), `purge` (processed entries before a
//! time). A table by default, `--json` for scripts. Exit 0 on success, 1 when the operation
//! failed (an unknown id), 2 for a usage error or an inbox that cannot be opened.
//!
//! `send` follows AIRMY's retry policy: up to 3 attempts, waiting 1 s then 5 s between them
//! (AIRMY's page lists the delays 1 s, 5 s and 30 s; the 30 s one applies to a 4th attempt,
//! `--attempts 4`), a 10 s timeout per attempt, and only a 2xx acknowledges. It prints each
//! attempt's status and time and exits 0 when acknowledged, 1 when never acknowledged, 2 for a
//! usage error (bad URL, unreadable file, missing secret).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use airmy_verify::testing;
use airmy_verify::time::OffsetDateTime;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};

/// AIRMY's delays between delivery attempts.
const DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

#[derive(Parser)]
#[command(
    name = "airmy-webhook",
    version,
    about = "Deliver signed AIRMY webhook events to an endpoint, the way AIRMY does"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build (or read) an envelope, sign its exact bytes and POST it, retrying as AIRMY does.
    Send(SendArgs),
    /// Print the X-AIRMY-Signature of a file's exact bytes (`-` or no file: standard input).
    Sign(SignArgs),
    /// Inspect and operate a receiver's durable inbox.
    Inbox(InboxArgs),
}

#[derive(Args)]
struct InboxArgs {
    /// The inbox, as `sqlite:PATH` or a Redis URL (the receivers' AIRMY_INBOX).
    #[arg(long, env = "AIRMY_INBOX")]
    inbox: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: InboxCommand,
}

#[derive(Subcommand)]
enum InboxCommand {
    /// Counts of entries: pending, scheduled, processing, dead, done, oldest pending age.
    Stats,
    /// The dead letters, most recent first: id, type, attempts, last error.
    Dead {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Make dead (or processed) entries pending again.
    Replay {
        /// The event id to replay.
        #[arg(conflicts_with_all = ["all_dead", "dead_since"], required_unless_present_any = ["all_dead", "dead_since"])]
        id: Option<String>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "dead_since")]
        all_dead: bool,
        /// Dead letters that died at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        dead_since: Option<OffsetDateTime>,
        /// List what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete processed entries finished before a time (RFC 3339). Times later than 11 minutes
    /// ago (the receivers' deduplication window with the default tolerance: twice 5 minutes
    /// plus one) are refused unless `--force`: a retry of a purged event would run again.
    Purge {
        /// Processed before this time.
        #[arg(long, value_parser = parse_time)]
        processed_before: OffsetDateTime,
        /// Purge even inside the deduplication window.
        #[arg(long)]
        force: bool,
    },
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(
        text,
        &airmy_verify::time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| format!("{text:?} is not an RFC 3339 time such as 2026-12-01T00:00:00Z"))
}

#[derive(Args)]
struct SendArgs {
    /// The endpoint, such as http://127.0.0.1:3000/hooks/airmy.
    #[arg(long)]
    url: String,
    /// The signing secret, exactly as configured in AIRMY (whsec_... included).
    #[arg(long, env = "AIRMY_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// The event type of a generated sample event.
    #[arg(long = "type", default_value = "test", conflicts_with = "file")]
    event_type: String,
    /// Send this file's bytes as they are instead of a generated event.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The event id of a generated event (default: a random evt_...).
    #[arg(long, conflicts_with = "file")]
    id: Option<String>,
    /// Make one attempt only.
    #[arg(long)]
    no_retry: bool,
    /// How many attempts at most (1 to 4).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=4))]
    attempts: u32,
    /// Multiply the waits between attempts by this (0.01 turns 5 s into 50 ms, for tests).
    #[arg(long, default_value_t = 1.0)]
    backoff_scale: f64,
    /// Seconds to wait for each response.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

#[derive(Args)]
struct SignArgs {
    /// The signing secret, exactly as configured in AIRMY.
    #[arg(long, env = "AIRMY_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// The file to sign; `-` or none reads standard input.
    file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Send(args) => send(args),
        Command::Sign(args) => sign(&args),
        Command::Inbox(args) => inbox(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn check_secret(secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        Err("the secret is empty: pass --secret or set AIRMY_WEBHOOK_SECRET".into())
    } else {
        Ok(())
    }
}

fn read_input(file: Option<&PathBuf>) -> Result<Vec<u8>, String> {
    match file {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        _ => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            Ok(bytes)
        }
    }
}

fn sign(args: &SignArgs) -> Result<ExitCode, String> {
    check_secret(&args.secret)?;
    let bytes = read_input(args.file.as_ref())?;
    println!("{}", airmy_verify::sign(&bytes, &args.secret));
    Ok(ExitCode::SUCCESS)
}

fn random_id() -> String {
    let mut bytes = [0u8; 10];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        bytes.copy_from_slice(&nanos.to_le_bytes()[..10]);
    }
    format!("evt_{}", hex::encode(bytes))
}

fn send(args: SendArgs) -> Result<ExitCode, String> {
    check_secret(&args.secret)?;
    let url =
        reqwest::Url::parse(&args.url).map_err(|e| format!("invalid --url {:?}: {e}", args.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "invalid --url {:?}: only http and https are supported",
            args.url
        ));
    }
    // Every wait and the timeout must be representable as a `Duration`: 1e20 s or a scale
    // of 1e300 is a usage error, not a panic.
    let waits: Vec<Duration> = DELAYS
        .iter()
        .map(|delay| {
            (args.backoff_scale >= 0.0)
                .then(|| Duration::try_from_secs_f64(delay.as_secs_f64() * args.backoff_scale).ok())
                .flatten()
        })
        .collect::<Option<_>>()
        .ok_or("--backoff-scale must be a number of at least 0, small enough for the waits to fit in a duration")?;
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or("--timeout must be a positive number of seconds that fits in a duration")?;
    let body = match &args.file {
        Some(path) => Bytes::from(read_input(Some(path))?),
        None => testing::sample_event(&args.event_type)
            .id(args.id.clone().unwrap_or_else(random_id))
            .created_at(OffsetDateTime::now_utc())
            .body(),
    };
    let signature = airmy_verify::sign(&body, &args.secret);
    let attempts = if args.no_retry { 1 } else { args.attempts };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    println!(
        "POST {url} ({} bytes, X-AIRMY-Signature {}…)",
        body.len(),
        &signature[..8]
    );
    runtime.block_on(async {
        for attempt in 1..=attempts {
            let started = Instant::now();
            let result = client
                .post(url.clone())
                .header("content-type", "application/json")
                .header("x-airmy-signature", &signature)
                .body(body.clone())
                .send()
                .await;
            let took = started.elapsed();
            let outcome = match result {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let text: String = text.chars().take(200).collect();
                    if status.is_success() {
                        println!(
                            "attempt {attempt}/{attempts}: {status} in {} ms: acknowledged {text}",
                            took.as_millis()
                        );
                        return Ok(ExitCode::SUCCESS);
                    }
                    format!("{status} in {} ms {text}", took.as_millis())
                }
                Err(err) if err.is_timeout() => {
                    format!("timed out after {:.1} s", took.as_secs_f64())
                }
                Err(err) if err.is_connect() => format!(
                    "connection failed ({}) after {} ms",
                    root_cause(&err),
                    took.as_millis()
                ),
                Err(err) => format!(
                    "failed ({}) after {} ms",
                    root_cause(&err),
                    took.as_millis()
                ),
            };
            if attempt < attempts {
                let wait = waits[(attempt - 1) as usize];
                println!(
                    "attempt {attempt}/{attempts}: {outcome}; retrying in {:.2} s",
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
            } else {
                println!("attempt {attempt}/{attempts}: {outcome}");
            }
        }
        println!("not acknowledged after {attempts} attempt(s)");
        Ok(ExitCode::FAILURE)
    })
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `inbox`: opens the inbox (an existing file only), runs the subcommand.
fn inbox(args: InboxArgs) -> Result<ExitCode, String> {
    use std::io::IsTerminal;

    let setting =
        examples::InboxSetting::parse("--inbox", &args.inbox).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let inbox = runtime
        .block_on(setting.open("--inbox", true))
        .map_err(|e| e.to_string())?;
    let json = args.json;
    let failed = |err: airmy_verify_inbox::InboxError| -> Result<ExitCode, String> {
        eprintln!("error: {err}");
        Ok(ExitCode::FAILURE)
    };
    runtime.block_on(async move {
        let backend = inbox.backend();
        match args.command {
            InboxCommand::Stats => {
                let stats = match backend.stats().await {
                    Ok(stats) => stats,
                    Err(err) => return Err(err.to_string()),
                };
                if json {
                    println!("{}", serde_json::to_string(&stats).unwrap_or_default());
                } else {
                    println!("{:<10} {:>10}", "pending", stats.pending);
                    println!("{:<10} {:>10}", "scheduled", stats.scheduled);
                    println!("{:<10} {:>10}", "processing", stats.processing);
                    println!("{:<10} {:>10}", "dead", stats.dead);
                    println!("{:<10} {:>10}", "done", stats.done);
                    let age = stats
                        .oldest_pending_age_secs
                        .map_or_else(|| "-".to_owned(), |s| format!("{s} s"));
                    println!("oldest pending age: {age}");
                }
                Ok(ExitCode::SUCCESS)
            }
            InboxCommand::Dead { limit } => {
                let dead = match backend.dead(limit).await {
                    Ok(dead) => dead,
                    Err(err) => return failed(err),
                };
                if json {
                    println!("{}", serde_json::to_string(&dead).unwrap_or_default());
                } else if dead.is_empty() {
                    println!("no dead letters");
                } else {
                    println!(
                        "{:<32} {:<22} {:>8}  {:<20}  last error",
                        "id", "type", "attempts", "died at"
                    );
                    for d in &dead {
                        let (id, event_type) =
                            (examples::word(&d.id), examples::word(&d.event_type));
                        let died = d
                            .died_at
                            .format(&airmy_verify::time::format_description::well_known::Rfc3339)
                            .unwrap_or_default();
                        let error: String = d
                            .last_error
                            .chars()
                            .take(80)
                            .map(|c| if c.is_control() { ' ' } else { c })
                            .collect();
                        println!(
                            "{id:<32} {event_type:<22} {:>8}  {died:<20}  {error}",
                            d.attempts
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            InboxCommand::Replay {
                id: Some(id),
                dry_run,
                ..
            } => {
                if dry_run {
                    let known = backend.dead(usize::MAX).await.map_err(|e| e.to_string())?;
                    if !known.iter().any(|d| d.id == id) {
                        return failed(airmy_verify_inbox::InboxError::NotFound(id));
                    }
                } else if let Err(err) = backend.replay(&id).await {
                    return failed(err);
                }
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "replayed": [id], "dry_run": dry_run })
                    );
                } else {
                    println!("{} {id}", if dry_run { "would replay" } else { "replayed" });
                }
                Ok(ExitCode::SUCCESS)
            }
            InboxCommand::Replay {
                dead_since,
                dry_run,
                ..
            } => {
                // List first, then replay one by one, with progress on a terminal.
                let ids = match backend.replay_dead(dead_since, true).await {
                    Ok(ids) => ids,
                    Err(err) => return failed(err),
                };
                let progress = !dry_run && std::io::stderr().is_terminal() && ids.len() > 1;
                let mut replayed = Vec::with_capacity(ids.len());
                for (n, id) in ids.iter().enumerate() {
                    if !dry_run && let Err(err) = backend.replay(id).await {
                        eprintln!("warning: {id}: {err}");
                        continue;
                    }
                    replayed.push(id.clone());
                    if progress {
                        eprint!("\rreplaying {}/{}", n + 1, ids.len());
                    }
                }
                if progress {
                    eprintln!();
                }
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "replayed": replayed, "dry_run": dry_run })
                    );
                } else {
                    for id in &replayed {
                        println!("{} {id}", if dry_run { "would replay" } else { "replayed" });
                    }
                    println!(
                        "{} dead letter(s) {}",
                        replayed.len(),
                        if dry_run {
                            "would be replayed"
                        } else {
                            "replayed"
                        }
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            InboxCommand::Purge {
                processed_before,
                force,
            } => {
                let window = OffsetDateTime::now_utc() - std::time::Duration::from_secs(660);
                if processed_before > window && !force {
                    return Err(
                        "--processed-before is inside the deduplication window (later than 11 \
                         minutes ago): a retry of a purged event would be handled again; use an \
                         earlier time, or --force"
                            .to_owned(),
                    );
                }
                if std::io::stderr().is_terminal() {
                    eprint!("purging ...");
                }
                let purged = match backend.purge_done(processed_before).await {
                    Ok(n) => n,
                    Err(err) => return failed(err),
                };
                if std::io::stderr().is_terminal() {
                    eprintln!(" done");
                }
                if json {
                    println!("{}", serde_json::json!({ "purged": purged }));
                } else {
                    println!(
                        "purged {purged} processed entr{}",
                        if purged == 1 { "y" } else { "ies" }
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
