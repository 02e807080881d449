//! The operator's side of the Redis backend: counts, listings, one entry, replay, purge, pause
//! and resume, recent actions.

use bytes::Bytes;
use time::OffsetDateTime;

use super::{RedisBackend, number, redis_error, text, valid_cursor};
use crate::backend::{
    Action, Admin, BackendFuture, Entry, EntryState, EntrySummary, InboxError, LIST_SCAN,
    ListQuery, Order, Page, Pause, PauseScope, RECENT_ACTIONS, Stats,
};
use crate::clock::{from_unix_ms, unix_ms};

impl Admin for RedisBackend {
    fn stats(&self) -> BackendFuture<'_, Stats> {
        Box::pin(async move {
            let [
                len,
                leased,
                scheduled,
                overdue,
                dead,
                done,
                oldest,
                now,
                paused,
            ]: [i64; 9] = self.run(self.invocation(&self.scripts.stats)).await?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            Ok(Stats {
                pending: count(len - leased + overdue),
                scheduled: count(scheduled - overdue),
                processing: count(leased),
                dead: count(dead),
                done: count(done),
                paused: count(paused),
                oldest_pending_age_secs: (oldest >= 0).then(|| count(now - oldest) / 1000),
            })
        })
    }

    fn list<'a>(&'a self, query: &'a ListQuery) -> BackendFuture<'a, Page> {
        Box::pin(async move {
            let limit = query.page_size();
            let mut invocation = self.invocation(&self.scripts.list);
            invocation
                .arg(&self.entry_prefix)
                .arg(query.state.as_str())
                .arg(match query.order {
                    Order::Oldest => "asc",
                    Order::Newest => "desc",
                })
                .arg(query.after.as_deref().unwrap_or(""))
                .arg(limit)
                // Unfiltered too: the stream of pending entries holds the leased ones' messages,
                // passed over; the page stops as soon as it is full.
                .arg(LIST_SCAN)
                .arg(query.event_type.as_deref().unwrap_or(""))
                .arg(query.id_prefix.as_deref().unwrap_or(""))
                .arg(if query.event_type.is_some() { "1" } else { "0" })
                .arg(if query.id_prefix.is_some() { "1" } else { "0" });
            if let Some(cursor) = query.after.as_deref()
                && !valid_cursor(cursor)
            {
                return Err(InboxError::invalid("not a cursor of this inbox"));
            }
            let flat: Vec<Vec<u8>> = self.run(invocation).await?;
            let Some((next, rest)) = flat.split_first() else {
                return Ok(Page::default());
            };
            if next.as_slice() == b"!bad" {
                return Err(InboxError::invalid(
                    "not a cursor of this listing".to_owned(),
                ));
            }
            let optional_ms = |f: &[u8]| (!f.is_empty()).then(|| from_unix_ms(number(f)));
            let entries = rest
                .chunks_exact(8)
                .map(|f| EntrySummary {
                    id: text(&f[0]),
                    event_type: text(&f[1]),
                    state: query.state,
                    attempts: number(&f[2]),
                    received_at: from_unix_ms(number(&f[3])),
                    next_attempt_at: optional_ms(&f[4]),
                    finished_at: optional_ms(&f[5]),
                    last_error: (!f[6].is_empty()).then(|| text(&f[6])),
                })
                .collect();
            Ok(Page::new(entries, (!next.is_empty()).then(|| text(next))))
        })
    }

    fn entry<'a>(&'a self, id: &'a str) -> BackendFuture<'a, Option<Entry>> {
        Box::pin(async move {
            let mut invocation = self.invocation(&self.scripts.entry);
            invocation.arg(&self.entry_prefix).arg(id);
            let f: Vec<Vec<u8>> = self.run(invocation).await?;
            if f.len() < 11 {
                return Ok(None);
            }
            let optional_ms = |f: &[u8]| (!f.is_empty()).then(|| from_unix_ms(number(f)));
            let now: i64 = number(&f[10]);
            let scheduled: Option<i64> = (!f[9].is_empty()).then(|| number(&f[9]));
            // A pending entry is due since its stream message was added.
            let message_ms = f[8]
                .split(|b| *b == b'-')
                .next()
                .filter(|ms| !ms.is_empty())
                .map(|ms| from_unix_ms(number(ms)));
            let (state, next_attempt_at) = match f[4].as_slice() {
                b"q" => (EntryState::Processing, optional_ms(&f[7])),
                b"x" => (EntryState::Dead, None),
                b"d" => (EntryState::Done, None),
                b"h" => (EntryState::Paused, scheduled.map(from_unix_ms)),
                b"s" => match scheduled {
                    Some(due) if due > now => (EntryState::Scheduled, Some(from_unix_ms(due))),
                    due => (EntryState::Pending, due.map(from_unix_ms)),
                },
                _ => (EntryState::Pending, message_ms),
            };
            let finished_at = matches!(state, EntryState::Dead | EntryState::Done)
                .then(|| optional_ms(&f[6]))
                .flatten();
            Ok(Some(Entry {
                summary: EntrySummary {
                    id: id.to_owned(),
                    event_type: text(&f[0]),
                    state,
                    attempts: number(&f[3]),
                    received_at: from_unix_ms(number(&f[2])),
                    next_attempt_at,
                    finished_at,
                    last_error: (!f[5].is_empty()).then(|| text(&f[5])),
                },
                body: Bytes::from(f[1].clone()),
            }))
        })
    }

    fn replay<'a>(&'a self, id: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            match self.replay_ids(&[id.to_owned()]).await?.first() {
                Some(1) => Ok(()),
                Some(2) => Err(InboxError::busy(id.to_owned())),
                _ => Err(InboxError::not_found(id.to_owned())),
            }
        })
    }

    fn replay_dead(&self, since: Option<OffsetDateTime>) -> BackendFuture<'_, Vec<String>> {
        Box::pin(async move {
            // The dead-letter stream's message ids carry the time each entry died.
            let mut start = since.map_or_else(|| "-".to_owned(), |t| unix_ms(t).to_string());
            let mut ids = Vec::new();
            loop {
                let mut connection = self.connection.clone();
                let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                    .arg(&self.keys[2])
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut connection)
                    .await
                    .map_err(redis_error)?;
                let Some((last, _)) = page.last() else { break };
                start = format!("({last}");
                let full = page.len() == 1000;
                ids.extend(
                    page.into_iter()
                        .filter_map(|(_, fields)| fields.into_iter().next().map(|(_, id)| id)),
                );
                if !full {
                    break;
                }
            }
            let codes = self.replay_ids(&ids).await?;
            Ok(ids
                .into_iter()
                .zip(codes)
                .filter(|(_, code)| *code == 1)
                .map(|(id, _)| id)
                .collect())
        })
    }

    fn purge_done(&self, before: OffsetDateTime) -> BackendFuture<'_, u64> {
        Box::pin(async move {
            const BATCH: u64 = 1000;
            let mut purged = 0;
            loop {
                let mut invocation = self.invocation(&self.scripts.purge);
                invocation
                    .arg(&self.entry_prefix)
                    .arg(unix_ms(before))
                    .arg(BATCH);
                let n: u64 = self.run(invocation).await?;
                purged += n;
                if n < BATCH {
                    return Ok(purged);
                }
            }
        })
    }

    fn pause<'a>(&'a self, scope: &'a PauseScope) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            let (event_type, all) = match scope {
                PauseScope::All => ("", "1"),
                PauseScope::EventType(t) => (t.as_str(), "0"),
            };
            // The scheduled retries, then the stream, STEP read per script.
            let (mut phase, mut cursor) = ("z".to_owned(), "0".to_owned());
            let mut first = true;
            let mut held = 0;
            loop {
                let mut invocation = self.invocation(&self.scripts.pause);
                invocation
                    .arg(&self.entry_prefix)
                    .arg(scope.key())
                    .arg(event_type)
                    .arg(all)
                    .arg(&phase)
                    .arg(&cursor)
                    .arg(STEP)
                    .arg(if first { "1" } else { "0" });
                let (next, moved): (String, u64) = self.run(invocation).await?;
                held += moved;
                first = false;
                match next.split_once(':') {
                    Some((p, c)) if !next.is_empty() => {
                        (phase, cursor) = (p.to_owned(), c.to_owned());
                    }
                    _ => return Ok(held),
                }
            }
        })
    }

    fn resume<'a>(&'a self, scope: &'a PauseScope) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            let mut offset = 0;
            let mut first = true;
            let mut released = 0;
            loop {
                let mut invocation = self.invocation(&self.scripts.resume);
                invocation
                    .arg(&self.entry_prefix)
                    .arg(scope.key())
                    .arg(offset)
                    .arg(STEP)
                    .arg(if first { "1" } else { "0" });
                let (next, moved): (i64, u64) = self.run(invocation).await?;
                released += moved;
                first = false;
                if next < 0 {
                    return Ok(released);
                }
                offset = next;
            }
        })
    }

    fn paused(&self) -> BackendFuture<'_, Vec<Pause>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let all: Vec<(String, i64)> = redis::cmd("HGETALL")
                .arg(&self.keys[6])
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
            let mut pauses: Vec<Pause> = all
                .into_iter()
                .filter_map(|(key, since)| {
                    PauseScope::from_key(&key).map(|scope| Pause::new(scope, from_unix_ms(since)))
                })
                .collect();
            pauses.sort_by(|a, b| (a.since, &a.scope).cmp(&(b.since, &b.scope)));
            Ok(pauses)
        })
    }

    fn record_action<'a>(&'a self, action: &'a Action) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let json = serde_json::to_string(action)
                .map_err(|e| InboxError::invalid(format!("an action as JSON: {e}")))?;
            let mut invocation = self.invocation(&self.scripts.record);
            invocation.key(&self.actions).arg(json).arg(RECENT_ACTIONS);
            self.run::<i64>(invocation).await.map(drop)
        })
    }

    fn recent_actions(&self, limit: usize) -> BackendFuture<'_, Vec<Action>> {
        Box::pin(async move {
            let limit = limit.min(RECENT_ACTIONS);
            if limit == 0 {
                return Ok(Vec::new());
            }
            let mut connection = self.connection.clone();
            let all: Vec<String> = redis::cmd("LRANGE")
                .arg(&self.actions)
                .arg(0)
                .arg(limit - 1)
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
            // An action a newer version wrote, of a kind this one does not know: left out.
            Ok(all
                .iter()
                .filter_map(|json| serde_json::from_str(json).ok())
                .collect())
        })
    }
}

/// How many members or messages one script of a pause or a resume reads: a large backlog is
/// moved in steps, so that no script blocks Redis for long.
const STEP: usize = 1000;
