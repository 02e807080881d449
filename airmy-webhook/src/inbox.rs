//! `inbox`: stats, dead letters, replay and purge on a receiver's inbox, also while it runs.

use std::process::ExitCode;

use airmy_verify::text::word;
use airmy_verify::time::OffsetDateTime;
use airmy_verify_inbox::InboxUrl;

use crate::cli::{InboxArgs, InboxCommand};

/// `inbox`: opens the inbox (an existing file only), runs the subcommand.
pub(crate) fn run(args: InboxArgs) -> Result<ExitCode, String> {
    use std::io::IsTerminal;

    let url: InboxUrl = args.inbox.parse().map_err(|e| format!("--inbox {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let inbox = runtime
        .block_on(url.open(true))
        .map_err(|e| format!("--inbox: {e}"))?;
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
                    out!("{}", serde_json::to_string(&stats).unwrap_or_default());
                } else {
                    out!("{:<10} {:>10}", "pending", stats.pending);
                    out!("{:<10} {:>10}", "scheduled", stats.scheduled);
                    out!("{:<10} {:>10}", "processing", stats.processing);
                    out!("{:<10} {:>10}", "dead", stats.dead);
                    out!("{:<10} {:>10}", "done", stats.done);
                    let age = stats
                        .oldest_pending_age_secs
                        .map_or_else(|| "-".to_owned(), |s| format!("{s} s"));
                    out!("oldest pending age: {age}");
                }
                Ok(ExitCode::SUCCESS)
            }
            InboxCommand::Dead { limit } => {
                let dead = match backend.dead(limit).await {
                    Ok(dead) => dead,
                    Err(err) => return failed(err),
                };
                if json {
                    out!("{}", serde_json::to_string(&dead).unwrap_or_default());
                } else if dead.is_empty() {
                    out!("no dead letters");
                } else {
                    out!(
                        "{:<32} {:<22} {:>8}  {:<20}  last error",
                        "id",
                        "type",
                        "attempts",
                        "died at"
                    );
                    for d in &dead {
                        let (id, event_type) = (word(&d.id), word(&d.event_type));
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
                        out!(
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
                    out!(
                        "{}",
                        serde_json::json!({ "replayed": [id], "dry_run": dry_run })
                    );
                } else {
                    out!("{} {id}", if dry_run { "would replay" } else { "replayed" });
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
                    out!(
                        "{}",
                        serde_json::json!({ "replayed": replayed, "dry_run": dry_run })
                    );
                } else {
                    for id in &replayed {
                        out!("{} {id}", if dry_run { "would replay" } else { "replayed" });
                    }
                    out!(
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
                    out!("{}", serde_json::json!({ "purged": purged }));
                } else {
                    out!(
                        "purged {purged} processed entr{}",
                        if purged == 1 { "y" } else { "ies" }
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
