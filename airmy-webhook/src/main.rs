//! `airmy-webhook`: deliver signed AIRMY events to an endpoint, the way AIRMY does, for testing
//! your own receiver (like `airmy webhooks test`, but aimed at a local URL).
//!
//! ```text
//! airmy-webhook send --url http://127.0.0.1:3000/hooks/airmy --secret whsec_... --type run.completed
//! airmy-webhook send --url ... --secret ... --type run.completed --set data.id=run_7 --set data.tokens_used=1200
//! airmy-webhook send --url ... --secret ... --type run.completed --data '{"id":"run_7"}'
//! airmy-webhook send --url ... --secret ... --file body.json     # the file's exact bytes
//! airmy-webhook sign --secret whsec_... body.json                # prints the signature, for curl
//! airmy-webhook inbox --inbox sqlite:inbox.db stats              # the durable inbox's counts
//! airmy-webhook inbox --inbox redis://127.0.0.1:6379 stats       # the same, on Redis
//! airmy-webhook inbox --inbox 'postgres://app@db/billing?schema=billing_inbox' stats
//! airmy-webhook inbox dead | replay ID | replay --all-dead | replay --dead-since 2026-12-01T00:00:00Z
//! airmy-webhook inbox purge --processed-before 2026-11-01T00:00:00Z
//! airmy-webhook inbox pause --type run.completed | resume --type run.completed | actions
//! ```
//!
//! `inbox` works on a receiver's inbox (`--inbox`, or `AIRMY_INBOX`), also while the receiver
//! runs: `stats` (pending, scheduled, paused, processing, dead, done, oldest pending age, the
//! pauses), `dead` (id, type, attempts, last error), `replay` (one id, every dead letter, or
//! those that died since a time; `--dry-run` lists without replaying), `purge` (processed
//! entries before a time), `pause` / `resume` (one event type or all, on every receiver), and
//! `actions` (the last actions: who, what, when). Every action is audited (`--actor`, else
//! `$USER`). A table by default, `--json` for scripts. Exit 0 on success, 1 when the operation
//! failed (an unknown id), 2 for a usage error or an inbox that cannot be opened.
//!
//! `send` follows AIRMY's retry policy: up to 3 attempts, waiting 1 s then 5 s between them
//! (AIRMY's page lists the delays 1 s, 5 s and 30 s; the 30 s one applies to a 4th attempt,
//! `--attempts 4`), a 10 s timeout per attempt, and only a 2xx acknowledges. It prints each
//! attempt's status and time and exits 0 when acknowledged, 1 when never acknowledged, 2 for a
//! usage error (bad URL, unreadable file, missing secret, `--data` that is not a JSON object, a
//! `--set` that is not `data.PATH=VALUE`).

/// `println!` that never panics: when standard output is closed (`airmy-webhook inbox dead |
/// head -2`), the tool stops quietly with 141, the status of a process ended by `SIGPIPE`, as
/// other command-line tools do.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, $($arg)*).and_then(|()| stdout.flush()).is_err() {
            std::process::exit(141);
        }
    }};
}

mod cli;
mod inbox;
mod send;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Send(args) => send::send(args),
        Command::Sign(args) => send::sign(&args),
        Command::Inbox(args) => inbox::run(args),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(dir),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            // One line, whatever the message holds (a path or URL with a newline in it).
            let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("error: {line}");
            ExitCode::from(2)
        }
    }
}

/// `completions SHELL`: the script, generated from the command's definition.
fn completions(shell: clap_complete::Shell) -> Result<ExitCode, String> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "airmy-webhook", &mut script);
    let mut script = String::from_utf8(script)
        .map_err(|_| "the generated completion script is not UTF-8".to_owned())?;
    if shell == clap_complete::Shell::Bash {
        script = bash_hyphen_fix(&script);
    }
    std::io::Write::write_all(&mut std::io::stdout(), script.as_bytes())
        .map_err(|e| format!("cannot write the completion script: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// clap_complete's bash script (4.6.12) spells a hyphenated binary's subcommand states two ways:
/// the loop that walks the words reaches `airmy__webhook__subcmd__inbox`, the `case` arms match
/// `airmy__subcmd__webhook__subcmd__inbox`, so nothing after the first word ever completes
/// (clap-rs/clap#6421, #6529, open). One spelling for both; once clap is fixed there is nothing
/// left to replace. The test `bash_completion_completes_commands_and_subcommands` runs it.
fn bash_hyphen_fix(script: &str) -> String {
    script.replace("airmy__subcmd__webhook", "airmy__webhook")
}

/// `man [--dir DIR]`: the man page on standard output, or every page written into `DIR`.
fn man(dir: Option<std::path::PathBuf>) -> Result<ExitCode, String> {
    let command = Cli::command();
    match dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| format!("cannot render the man page: {e}"))?;
            std::io::Write::write_all(&mut std::io::stdout(), &page)
                .map_err(|e| format!("cannot write the man page: {e}"))?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .map_err(|e| format!("cannot write the man pages into {}: {e}", dir.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
