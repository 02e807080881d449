//! The command line: every command, argument and flag, in one place (the completions and the
//! man page are generated from it).

use std::path::PathBuf;
use std::time::Duration;

use airmy_verify::time::OffsetDateTime;
use airmy_verify_inbox::{EntryState, PauseScope};
use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

/// AIRMY's delays between delivery attempts.
pub(crate) const DELAYS: [Duration; 3] = [
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
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Build (or read) an envelope, sign its exact bytes and POST it, retrying as AIRMY does.
    ///
    /// A generated event has a fresh id (unless --id) and is created now; its data is the
    /// sample's for --type, or --data, with each --set applied.
    Send(SendArgs),
    /// Print the X-AIRMY-Signature of a file's exact bytes (`-` or no file: standard input).
    Sign(SignArgs),
    /// Inspect and operate a receiver's durable inbox.
    Inbox(InboxArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish) to standard output.
    ///
    /// bash: `source <(airmy-webhook completions bash)`, or save it as
    /// ~/.local/share/bash-completion/completions/airmy-webhook. zsh: save it as `_airmy-webhook`
    /// in a directory of `$fpath`. fish: save it as
    /// ~/.config/fish/completions/airmy-webhook.fish.
    Completions {
        /// The shell.
        shell: Shell,
    },
    /// Print the man page (roff) to standard output, or write one page per command into a
    /// directory.
    ///
    /// `airmy-webhook man | man -l -` reads it; `airmy-webhook man --dir /usr/local/share/man/man1`
    /// installs airmy-webhook.1 and airmy-webhook-send.1, -sign.1, -inbox.1, ...
    Man {
        /// Write airmy-webhook.1 and a page per subcommand into this directory instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Args)]
pub(crate) struct InboxArgs {
    /// The inbox, as `sqlite:PATH`, a Redis URL (`?prefix=...` for keys not under airmy:inbox:;
    /// `?cluster=true` for a Redis Cluster, given one node or several: `redis://a,b,c?cluster=true`)
    /// or a PostgreSQL URL (`?schema=...` for tables not in airmy_inbox; `?pooler=true` behind
    /// PgBouncer in transaction mode): the receivers' AIRMY_INBOX. A query parameter that
    /// neither the inbox nor the driver reads is refused.
    #[arg(long, env = "AIRMY_INBOX", hide_env_values = true)]
    pub(crate) inbox: String,
    /// Print JSON instead of a table (the audit line on standard error too).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Who takes the action (replay, purge, pause, resume), as the audit line and the inbox's
    /// recent actions record it. Defaults to $USER (else $LOGNAME, else `unknown`).
    #[arg(long, global = true, value_parser = parse_actor)]
    pub(crate) actor: Option<String>,
    #[command(subcommand)]
    pub(crate) command: InboxCommand,
}

/// The entries a pause or a resume is about: one event type, or every one.
#[derive(Args)]
pub(crate) struct ScopeArgs {
    /// One event type (as sent, such as run.completed).
    #[arg(long = "type", required_unless_present = "all", conflicts_with = "all")]
    pub(crate) event_type: Option<String>,
    /// Every event type.
    #[arg(long)]
    pub(crate) all: bool,
}

impl ScopeArgs {
    pub(crate) fn scope(&self) -> PauseScope {
        match &self.event_type {
            Some(event_type) if !self.all => PauseScope::event_type(event_type),
            _ => PauseScope::All,
        }
    }
}

/// An actor as the audit keeps it: 1 to 100 characters, none of them a control character.
pub(crate) fn parse_actor(text: &str) -> Result<String, String> {
    if text.is_empty() || text.chars().count() > 100 || text.chars().any(char::is_control) {
        return Err("an actor is 1 to 100 characters, without control characters".to_owned());
    }
    Ok(text.to_owned())
}

#[derive(Subcommand)]
pub(crate) enum InboxCommand {
    /// Counts of entries: pending, scheduled, paused, processing, dead, done, oldest pending
    /// age; and the pauses in force.
    Stats,
    /// The dead letters, most recent first: id, type, attempts, last error.
    Dead {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Entries of one state (or of each, in turn), oldest first: id, type, state, attempts,
    /// times, last error. A page that ends before the state does prints the cursor to go on
    /// from (`--after`).
    List {
        /// pending, scheduled, paused, processing, dead or done (default: each in turn).
        #[arg(long)]
        state: Option<EntryState>,
        /// Only entries of this event type.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only entries whose id starts with this.
        #[arg(long)]
        id_prefix: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
        limit: usize,
        /// Newest first.
        #[arg(long)]
        newest: bool,
        /// Go on from where an earlier listing of the same state stopped.
        #[arg(long, requires = "state")]
        after: Option<String>,
    },
    /// One entry in full: times, attempts, last error, the body pretty-printed.
    Show {
        /// The event id.
        id: String,
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
    /// Pause the handling of one event type (--type) or of every one (--all), on every
    /// receiver of the inbox, until `resume`. Deliveries are still accepted and stored; their
    /// entries wait, paused: no worker takes them, no attempt is counted, none becomes a dead
    /// letter. The pause is kept in the inbox: it survives restarts.
    Pause(ScopeArgs),
    /// Resume what `pause` paused: the entries it held are due again (unless another pause
    /// holds them: a type paused on its own stays paused when --all is resumed).
    Resume(ScopeArgs),
    /// The last actions taken on the inbox (replay, purge, pause, resume), newest first: when,
    /// who, what, how many. The inbox keeps the last 100.
    Actions {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Delete processed entries finished before a time (RFC 3339). Times inside the
    /// deduplication window (twice the receiver's freshness tolerance plus a minute: 11 minutes
    /// with the default 300 s) are refused unless `--force`: a retry of a purged event would run
    /// again.
    Purge {
        /// Processed before this time.
        #[arg(long, value_parser = parse_time)]
        processed_before: OffsetDateTime,
        /// The receiver's freshness tolerance in seconds (its AIRMY_TOLERANCE_SECS), from which
        /// the deduplication window follows.
        #[arg(long, env = "AIRMY_TOLERANCE_SECS", default_value_t = 300)]
        tolerance_secs: u64,
        /// Purge even inside the deduplication window.
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(
        text,
        &airmy_verify::time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| format!("{text:?} is not an RFC 3339 time such as 2026-12-01T00:00:00Z"))
}

#[derive(Args)]
pub(crate) struct SendArgs {
    /// The endpoint, such as http://127.0.0.1:3000/hooks/airmy.
    #[arg(long)]
    pub(crate) url: String,
    /// The signing secret, exactly as configured in AIRMY (whsec_... included).
    #[arg(long, env = "AIRMY_WEBHOOK_SECRET", hide_env_values = true)]
    pub(crate) secret: String,
    /// The event type of a generated sample event.
    #[arg(long = "type", default_value = "test", conflicts_with = "file")]
    pub(crate) event_type: String,
    /// Send this file's bytes as they are instead of a generated event.
    #[arg(long)]
    pub(crate) file: Option<PathBuf>,
    /// The event id of a generated event (default: a random evt_...).
    #[arg(long, conflicts_with = "file")]
    pub(crate) id: Option<String>,
    /// The generated event's `data` object, as JSON, instead of the sample's
    /// (`--data '{"id":"run_7","tokens_used":1200}'`).
    #[arg(long, value_name = "JSON", conflicts_with = "file")]
    pub(crate) data: Option<String>,
    /// Set one field of the generated event's data, after --data: `data.id=run_7`,
    /// `data.output.result=done` (objects on the way are created). A VALUE that parses as JSON
    /// is used as JSON (1200, true, {"a":1}, "\"7\""), anything else as a string. Repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE", conflicts_with = "file")]
    pub(crate) set: Vec<String>,
    /// Make one attempt only.
    #[arg(long)]
    pub(crate) no_retry: bool,
    /// How many attempts at most (1 to 4).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=4))]
    pub(crate) attempts: u32,
    /// Multiply the waits between attempts by this (0.01 turns 5 s into 50 ms, for tests).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) backoff_scale: f64,
    /// Seconds to wait for each response.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) timeout: f64,
}

#[derive(Args)]
pub(crate) struct SignArgs {
    /// The signing secret, exactly as configured in AIRMY.
    #[arg(long, env = "AIRMY_WEBHOOK_SECRET", hide_env_values = true)]
    pub(crate) secret: String,
    /// The file to sign; `-` or none reads standard input.
    pub(crate) file: Option<PathBuf>,
}
