//! `inbox`: stats, dead letters, replay, purge, pause and resume on a receiver's inbox, also
//! while it runs. Every action is audited (`airmy_verify_inbox::audit`): one line on standard
//! error, and one of the inbox's recent actions.

use std::process::ExitCode;

use airmy_verify::text::{visible, word};
use airmy_verify_inbox::audit::{self, Action, ActionKind};
use airmy_verify_inbox::{
    Admin, EntryState, EntrySummary, InboxUrl, ListQuery, Order, Pause, PauseScope,
};

use crate::cli::{InboxArgs, InboxCommand};

/// Who takes the actions: `--actor`, else `$USER`, else `$LOGNAME`, else `unknown`.
fn actor(flag: Option<String>) -> String {
    flag.or_else(|| {
        ["USER", "LOGNAME"]
            .into_iter()
            .filter_map(|name| std::env::var(name).ok())
            .find_map(|value| crate::cli::parse_actor(&value).ok())
    })
    .unwrap_or_else(|| "unknown".to_owned())
}

/// The audit lines (target `airmy_verify_inbox::audit`) on standard error: text, or JSON with
/// `--json`. `RUST_LOG` chooses what else is shown (default: the audit lines only).
fn install_audit_log(json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{}=info", audit::TARGET)));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal());
    // Installed once per process; should one be there already, it stays.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Logs, counts and keeps `action`; a backend that could not keep it is a warning (the action
/// itself was done).
async fn record(admin: &dyn Admin, action: &Action) {
    if let Err(err) = audit::record(admin, action).await {
        eprintln!("warning: the action is not among the inbox's recent actions: {err}");
    }
}

/// A pause's scope for people: `event type <T>` (the type as one word) or `every event type`.
fn shown_scope(scope: &PauseScope) -> String {
    match scope {
        PauseScope::All => "every event type".to_owned(),
        PauseScope::EventType(t) => format!("event type {}", word(t)),
    }
}

/// A pause's scope as `--json` shows it: `{"event_type": …}`, null for every type.
fn scope_json(scope: &PauseScope) -> serde_json::Value {
    serde_json::json!({
        "event_type": match scope {
            PauseScope::EventType(t) => Some(t.as_str()),
            PauseScope::All => None,
        },
    })
}

/// A pause in force as `--json` shows it: its scope's fields and `since`.
fn pause_json(pause: &Pause) -> serde_json::Value {
    let mut shown = scope_json(&pause.scope);
    shown["since"] = rfc3339(Some(pause.since)).into();
    shown
}

/// `n entry` / `n entries`.
fn entries(n: u64) -> String {
    format!("{n} entr{}", if n == 1 { "y" } else { "ies" })
}

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
    let actor = actor(args.actor);
    install_audit_log(json);
    let failed = |err: airmy_verify_inbox::InboxError| -> Result<ExitCode, String> {
        eprintln!("error: {err}");
        Ok(ExitCode::FAILURE)
    };
    runtime.block_on(async move {
        let backend = inbox.admin();
        match args.command {
            InboxCommand::Stats => {
                let (stats, pauses) = match (backend.stats().await, backend.paused().await) {
                    (Ok(stats), Ok(pauses)) => (stats, pauses),
                    (Err(err), _) | (_, Err(err)) => return Err(err.to_string()),
                };
                if json {
                    let mut shown = serde_json::to_value(stats).unwrap_or_default();
                    shown["pauses"] = pauses.iter().map(pause_json).collect();
                    out!("{shown}");
                } else {
                    for state in EntryState::ALL {
                        out!("{:<10} {:>10}", state.as_str(), state.count(&stats));
                    }
                    let age = stats
                        .oldest_pending_age_secs
                        .map_or_else(|| "-".to_owned(), |s| format!("{s} s"));
                    out!("oldest pending age: {age}");
                    for pause in &pauses {
                        out!(
                            "paused: {} since {}",
                            shown_scope(&pause.scope),
                            rfc3339(Some(pause.since))
                        );
                    }
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
                } else {
                    let action = Action::new(&actor, ActionKind::Replay, &id).ids([&id]);
                    record(backend, &action).await;
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
                if !dry_run {
                    let subject = dead_since.map_or_else(
                        || "every dead letter".to_owned(),
                        |since| format!("dead letters since {}", rfc3339(Some(since))),
                    );
                    let action =
                        Action::new(&actor, ActionKind::ReplayDead, subject).ids(&replayed);
                    record(backend, &action).await;
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
            InboxCommand::Pause(scope) => {
                let scope = scope.scope();
                let before = match backend.paused().await {
                    Ok(pauses) => pauses.into_iter().find(|p| p.scope == scope),
                    Err(err) => return failed(err),
                };
                let held = match backend.pause(&scope).await {
                    Ok(held) => held,
                    Err(err) => return failed(err),
                };
                let action = Action::new(&actor, ActionKind::Pause, scope.to_string()).count(held);
                record(backend, &action).await;
                if json {
                    out!(
                        "{}",
                        serde_json::json!({
                            "paused": scope_json(&scope),
                            "since": rfc3339(Some(before.as_ref().map_or(action.at, |p| p.since))),
                            "already": before.is_some(),
                            "held": held,
                        })
                    );
                } else if let Some(before) = before {
                    // Held now: entries another replica made pending meanwhile (none, mostly).
                    let more = if held > 0 {
                        format!("; {} more held", entries(held))
                    } else {
                        String::new()
                    };
                    out!(
                        "{} was paused already (since {}){more}",
                        shown_scope(&scope),
                        rfc3339(Some(before.since))
                    );
                } else {
                    out!("paused {}: {} held", shown_scope(&scope), entries(held));
                }
                Ok(ExitCode::SUCCESS)
            }
            InboxCommand::Resume(scope) => {
                let scope = scope.scope();
                let was = match backend.paused().await {
                    Ok(pauses) => pauses.iter().any(|p| p.scope == scope),
                    Err(err) => return failed(err),
                };
                let released = match backend.resume(&scope).await {
                    Ok(released) => released,
                    Err(err) => return failed(err),
                };
                let action =
                    Action::new(&actor, ActionKind::Resume, scope.to_string()).count(released);
                record(backend, &action).await;
                if json {
                    out!(
                        "{}",
                        serde_json::json!({
                            "resumed": scope_json(&scope),
                            "was_paused": was,
                            "released": released,
                        })
                    );
                } else if was {
                    out!(
                        "resumed {}: {} released",
                        shown_scope(&scope),
                        entries(released)
                    );
                } else {
                    out!("{} was not paused", shown_scope(&scope));
                }
                Ok(ExitCode::SUCCESS)
            }
            InboxCommand::Actions { limit } => {
                let actions = match backend.recent_actions(limit).await {
                    Ok(actions) => actions,
                    Err(err) => return failed(err),
                };
                if json {
                    out!("{}", serde_json::to_string(&actions).unwrap_or_default());
                } else if actions.is_empty() {
                    out!("no actions recorded");
                } else {
                    out!(
                        "{:<20}  {:<16} {:<11} {:>7}  what",
                        "at (UTC)",
                        "who",
                        "action",
                        "entries"
                    );
                    for a in &actions {
                        let ids: Vec<String> =
                            a.ids.iter().map(|id| word(id).into_owned()).collect();
                        out!(
                            "{:<20}  {:<16} {:<11} {:>7}  {}{}",
                            to_the_second(a.at),
                            word(&a.actor),
                            a.kind,
                            a.count,
                            one_line(&a.subject, 200),
                            if ids.is_empty() || a.ids == [a.subject.clone()] {
                                String::new()
                            } else {
                                format!(" ({})", ids.join(" "))
                            }
                        );
                    }
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
                let subject = format!(
                    "done entries processed before {}",
                    rfc3339(Some(processed_before))
                );
                let action = Action::new(&actor, ActionKind::Purge, subject).count(purged);
                record(backend, &action).await;
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

/// `at` in UTC to the second, as `2026-12-01T10:00:00Z`.
fn to_the_second(at: airmy_verify::time::OffsetDateTime) -> String {
    let at = at.to_offset(airmy_verify::time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
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
