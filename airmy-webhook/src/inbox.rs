//! `inbox`: stats, dead letters, replay and purge on a receiver's inbox, also while it runs.

use std::process::ExitCode;

use airmy_verify::text::{visible, word};
use airmy_verify_inbox::{Admin, EntryState, EntrySummary, InboxUrl, ListQuery, Order};

use crate::cli::{InboxArgs, InboxCommand};

/// Up to `limit` dead letters in `order` of when they died, those that died at or after
/// `since` (all when `None`), read page by page from the dead state's listing.
async fn dead_letters(
    admin: &dyn Admin,
    order: Order,
    limit: usize,
    since: Option<airmy_verify::time::OffsetDateTime>,
) -> Result<Vec<EntrySummary>, airmy_verify_inbox::InboxError> {
    let mut found = Vec::new();
    let mut query = ListQuery::new(EntryState::Dead)
        .order(order)
        .limit(airmy_verify_inbox::MAX_PAGE);
    while found.len() < limit {
        let page = admin.list(&query).await?;
        let before = found.len();
        found.extend(
            page.entries
                .into_iter()
                .filter(|d| since.is_none_or(|since| d.finished_at.is_some_and(|t| t >= since)))
                .take(limit - before),
        );
        match page.next {
            Some(next) => query = query.after(next),
            None => break,
        }
    }
    Ok(found)
}

/// A dead letter as `inbox dead --json` shows it.
fn dead_json(d: &EntrySummary) -> serde_json::Value {
    let time = |t: Option<airmy_verify::time::OffsetDateTime>| {
        t.and_then(|t| {
            t.format(&airmy_verify::time::format_description::well_known::Rfc3339)
                .ok()
        })
    };
    serde_json::json!({
        "id": d.id,
        "event_type": d.event_type,
        "attempts": d.attempts,
        "last_error": d.last_error.as_deref().unwrap_or_default(),
        "received_at": time(Some(d.received_at)),
        "died_at": time(d.finished_at),
    })
}

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
        let backend = inbox.admin();
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
                let dead = match dead_letters(backend, Order::Newest, limit, None).await {
                    Ok(dead) => dead,
                    Err(err) => return failed(err),
                };
                if json {
                    let rows: Vec<_> = dead.iter().map(dead_json).collect();
                    out!("{}", serde_json::Value::Array(rows));
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
                            .finished_at
                            .and_then(|t| {
                                t.format(
                                    &airmy_verify::time::format_description::well_known::Rfc3339,
                                )
                                .ok()
                            })
                            .unwrap_or_default();
                        let error = one_line(d.last_error.as_deref().unwrap_or_default(), 80);
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
                    // What `replay` would answer, read from the entry: nothing changes.
                    let entry = match backend.entry(&id).await {
                        Ok(entry) => entry,
                        Err(err) => return failed(err),
                    };
                    if let Err(err) = airmy_verify_inbox::replay_check(&id, entry.as_ref()) {
                        return failed(err);
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
                // List first (page by page), then replay one by one, with progress on a terminal.
                let ids: Vec<String> =
                    match dead_letters(backend, Order::Oldest, usize::MAX, dead_since).await {
                        Ok(dead) => dead.into_iter().map(|d| d.id).collect(),
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
            InboxCommand::List {
                state,
                event_type,
                id_prefix,
                limit,
                newest,
                after,
            } => {
                let order = if newest { Order::Newest } else { Order::Oldest };
                let states = state.map_or_else(|| EntryState::ALL.to_vec(), |s| vec![s]);
                let mut listed = Vec::new();
                let mut next = None;
                'states: for state in states {
                    let mut query = ListQuery::new(state).order(order);
                    query.event_type.clone_from(&event_type);
                    query.id_prefix.clone_from(&id_prefix);
                    query.after.clone_from(&after);
                    // Filtered pages may be short: follow the cursor until the limit is met.
                    while listed.len() < limit {
                        let page = match backend
                            .list(&query.clone().limit(limit - listed.len()))
                            .await
                        {
                            Ok(page) => page,
                            Err(err) => return failed(err),
                        };
                        listed.extend(page.entries);
                        next = page.next;
                        match &next {
                            Some(cursor) => query.after = Some(cursor.clone()),
                            None => continue 'states,
                        }
                    }
                    break;
                }
                // A cursor continues one state's listing only.
                let next = next.filter(|_| state.is_some());
                if json {
                    out!("{}", serde_json::json!({ "entries": listed, "next": next }));
                } else if listed.is_empty() {
                    out!("no entries");
                } else {
                    out!(
                        "{:<32} {:<20} {:<10} {:>8}  {:<20}  {:<20}  last error",
                        "id",
                        "type",
                        "state",
                        "attempts",
                        "received at",
                        "next / finished at"
                    );
                    for e in &listed {
                        let when = e.next_attempt_at.or(e.finished_at);
                        out!(
                            "{:<32} {:<20} {:<10} {:>8}  {:<20}  {:<20}  {}",
                            word(&e.id),
                            word(&e.event_type),
                            e.state,
                            e.attempts,
                            rfc3339(Some(e.received_at)),
                            rfc3339(when),
                            one_line(e.last_error.as_deref().unwrap_or(""), 80)
                        );
                    }
                    if let Some(cursor) = &next {
                        out!("more: --after {}", word(cursor));
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            InboxCommand::Show { id } => {
                let entry = match backend.entry(&id).await {
                    Ok(Some(entry)) => entry,
                    Ok(None) => return failed(airmy_verify_inbox::InboxError::not_found(id)),
                    Err(err) => return failed(err),
                };
                let e = &entry.summary;
                if json {
                    /// The summary's fields and the body exactly as received (it is JSON:
                    /// the inbox holds verified deliveries only).
                    #[derive(serde::Serialize)]
                    struct Shown<'a> {
                        #[serde(flatten)]
                        summary: &'a airmy_verify_inbox::EntrySummary,
                        body: Box<serde_json::value::RawValue>,
                    }
                    let body = serde_json::value::RawValue::from_string(
                        String::from_utf8_lossy(&entry.body).into_owned(),
                    )
                    .or_else(|_| {
                        serde_json::value::to_raw_value(&String::from_utf8_lossy(&entry.body))
                    })
                    .map_err(|e| e.to_string())?;
                    out!(
                        "{}",
                        serde_json::to_string(&Shown { summary: e, body }).unwrap_or_default()
                    );
                } else {
                    out!("id:          {}", word(&e.id));
                    out!("type:        {}", word(&e.event_type));
                    out!("state:       {}", e.state);
                    out!("attempts:    {}", e.attempts);
                    out!("received at: {}", rfc3339(Some(e.received_at)));
                    if let Some(at) = e.next_attempt_at {
                        let label = if e.state == EntryState::Processing {
                            "lease until:"
                        } else {
                            "next at:    "
                        };
                        out!("{label} {}", rfc3339(Some(at)));
                    }
                    if let Some(at) = e.finished_at {
                        let label = if e.state == EntryState::Dead {
                            "died at:    "
                        } else {
                            "done at:    "
                        };
                        out!("{label} {}", rfc3339(Some(at)));
                    }
                    if let Some(error) = &e.last_error {
                        out!("last error:  {}", one_line(error, 2000));
                    }
                    out!("body:");
                    out!("{}", printable(&entry.pretty_body()));
                }
                Ok(ExitCode::SUCCESS)
            }
            InboxCommand::Purge {
                processed_before,
                tolerance_secs,
                force,
            } => {
                let window = Some(airmy_verify::dedupe_window(std::time::Duration::from_secs(
                    tolerance_secs,
                )));
                if let Some(why) = airmy_verify_inbox::purge_refusal(processed_before, window)
                    && !force
                {
                    return Err(format!(
                        "--processed-before: {why}; use an earlier time, or --force"
                    ));
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

fn rfc3339(at: Option<airmy_verify::time::OffsetDateTime>) -> String {
    at.and_then(|at| {
        at.format(&airmy_verify::time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| "-".to_owned())
}

/// At most `max` characters of `text` on one line: line breaks and tabs as spaces, any other
/// character that could disguise it (control and format characters: a terminal's escape
/// sequences, U+202E) shown as `\u{…}` (`airmy_verify::text::visible`).
fn one_line(text: &str, max: usize) -> String {
    let cut: String = text
        .chars()
        .take(max)
        .map(|c| {
            if matches!(c, '\n' | '\r' | '\t') {
                ' '
            } else {
                c
            }
        })
        .collect();
    visible(&cut).to_string()
}

/// Pretty-printed JSON with any character left in it that could disguise it (JSON escapes
/// controls below U+0020, not DEL, the C1 range a terminal may act on, nor U+202E) written as
/// `\u{…}`, line by line.
fn printable(text: &str) -> String {
    text.split('\n')
        .map(|line| visible(line).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
