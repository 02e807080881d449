//! The Redis backend (feature `redis`): one queue shared by every replica, on Redis Streams.
//!
//! # Layout
//!
//! Every key of one inbox carries the hash tag `{prefix}` (the prefix defaults to
//! `airmy:inbox:`), so one inbox lives in one Redis Cluster slot and every script touches one
//! slot (on a cluster, [`RedisOptions::cluster`], every command goes to the node that owns it):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}stream` | stream, consumer group `workers` | one message per entry that is due or leased |
//! | `{prefix}e:<event id>` | hash | the entry: type, body, received time, attempts, state, lease token and expiry, last error |
//! | `{prefix}scheduled` | sorted set | retries waiting for their due time (score: due time, ms) |
//! | `{prefix}leases` | sorted set | leased entries (score: lease expiry, ms), for [`next_due`](crate::Queue::next_due) |
//! | `{prefix}dead` | stream | one message per dead letter, in the order they died |
//! | `{prefix}done` | sorted set | processed entries kept for deduplication (score: when, ms) |
//! | `{prefix}paused` | sorted set | entries held by a pause (score: when due, ms): in neither the stream nor `scheduled` |
//! | `{prefix}pauses` | hash | the pauses in force: `*` (everything) or `type:<event type>`, to when each was made (ms) |
//! | `{prefix}actions` | list | the last 100 operators' actions, newest first (JSON) |
//!
//! # How the operations map onto Redis
//!
//! Every operation is one Lua script (one round trip, atomic), with the server's clock:
//!
//! - **accept**: `EXISTS` on the entry (the dedupe), then `HSET` and `XADD` together. Accepts
//!   that arrive while one is in flight go together in the next script.
//! - **take**: moves due retries from `scheduled` back into the stream, takes over entries
//!   whose lease ran out (their worker died) by `XCLAIM`ing their messages into the taking
//!   consumer's pending list, then reads new messages with `XREADGROUP`, and stamps each with a
//!   fresh lease token and one more attempt. Leases are per entry (each take and extension
//!   names its own), so the `leases` sorted set, not the group's idle times, says which ran
//!   out: `XAUTOCLAIM`'s single idle threshold would take over an entry leased for longer
//!   than the taker's own lease, or wait past a shorter one.
//! - **wait**: a blocking `XREAD` on the stream from the group's last delivered id, on a
//!   connection of its own (on a cluster, a cluster connection of its own, routed to the
//!   slot's node like every other command), so an idle worker on any replica sees a new entry within
//!   milliseconds of its `XADD` (a blocking read cannot run inside a script, and reading with
//!   `XREADGROUP` outside one would split a take into two steps).
//! - **complete / retry / bury / release**: check the token, then `XACK` and `XDEL` the message
//!   (the stream holds only unfinished entries: that is its retention) and record the new state;
//!   a dead letter is `XADD`ed to the dead-letter stream. Completions that arrive while one is
//!   in flight go together in the next script (one round trip for a batch).
//! - **purge**: deletes processed entries older than a time (and idle consumers of the group).
//! - **pause**: records the pause in `pauses`, then moves the paused type's entries out of
//!   `scheduled` and the stream's unread part into `paused`, a thousand read per script (a
//!   large backlog never blocks Redis for long). From then on accept, retry, release and
//!   replay put that type's entries in `paused`, and a take holds one it meets (a lease run
//!   out, a message added meanwhile) instead of taking it; the take never reads `paused`.
//!   **resume** removes the pause and moves the entries no pause holds back, in the order
//!   they were due, a thousand per script.
//!
//! # What a 2xx means
//!
//! `accept` returns once Redis has answered the script. Whether that survives a crash depends on
//! Redis's persistence and topology, not on this crate: see the crate README's table ("The Redis
//! inbox: what a 2xx means").

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airmy_verify::Verified;
use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::OpenError;
use crate::backend::{Accepted, BackendFuture, InboxError, Leased, Queue, Store};
use crate::clock::{duration_ms, from_unix_ms, unix_ms};

mod admin;
mod batch;
mod connect;
mod scripts;

pub use connect::RedisOptions;

use airmy_verify::redis_connection::RedisConnection;
use batch::{Batches, Job, shutting_down};
use scripts::Scripts;

/// The consumer group every worker reads with.
const GROUP: &str = "workers";

/// An inbox [`Backend`](crate::Backend) on Redis Streams, shared by every replica that connects to the same
/// Redis with the same prefix. See the [module docs](self) for the layout.
///
/// # Example
///
/// ```no_run
/// use airmy_verify_inbox::{Inbox, RedisBackend, RedisOptions};
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = Inbox::new(RedisBackend::connect("redis://127.0.0.1:6379", RedisOptions::default()).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    connection: RedisConnection,
    /// For blocking reads only: a blocked read holds up its connection. `None` on the
    /// application's connection ([`RedisBackend::with_connection`]): waits poll instead.
    waiting: Option<RedisConnection>,
    keys: [String; 7],
    /// The list of recent actions (outside the scripts' keys, under the same hash tag).
    actions: String,
    entry_prefix: String,
    consumer: String,
    max_unfinished: u64,
    timeout: Duration,
    scripts: Scripts,
    /// The token seed of a take that failed: its script may have run with only its reply lost
    /// (a timeout), leaving entries leased to tokens nobody knows until their lease runs out.
    /// The next take asks for them back first.
    lost_take: Arc<Mutex<Option<String>>>,
    /// Accepts and completions, sent in batches.
    batches: Batches,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("stream", &self.keys[0])
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

/// Why [`RedisBackend::connect`] failed: an [`OpenError`] (the backend's name for it), whose
/// message never shows the URL's password.
pub type RedisError = OpenError;

impl RedisBackend {
    /// This backend's consumer name in the group (the process id and a random suffix).
    #[must_use]
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    fn invocation<'s>(&self, script: &'s redis::Script) -> redis::ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        invocation
    }

    fn entry_invocation<'s>(
        &self,
        script: &'s redis::Script,
        id: &str,
    ) -> redis::ScriptInvocation<'s> {
        let mut invocation = self.invocation(script);
        invocation.key(format!("{}{id}", self.entry_prefix));
        invocation.arg(id);
        invocation
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, InboxError> {
        let mut connection = self.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error)
    }

    async fn replay_ids(&self, ids: &[String]) -> Result<Vec<i64>, InboxError> {
        let mut codes = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let mut invocation = self.invocation(&self.scripts.replay);
            invocation.arg(&self.entry_prefix);
            for id in chunk {
                invocation.arg(id);
            }
            codes.extend(self.run::<Vec<i64>>(invocation).await?);
        }
        Ok(codes)
    }
}

fn redis_error(err: redis::RedisError) -> InboxError {
    if err.code() == Some("OOM") {
        InboxError::full(format!("Redis is out of memory: {err}")).with_source(err)
    } else {
        InboxError::unavailable(format!("Redis: {err}")).with_source(err)
    }
}

/// `d` in milliseconds for a Redis argument, at least 1: a lease or a block of 0 ms would mean
/// "none" or "forever" to Redis.
fn positive_ms(d: Duration) -> i64 {
    duration_ms(d).max(1)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn number<T: std::str::FromStr + Default>(bytes: &[u8]) -> T {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default()
}

/// Whether `cursor` is one `list.lua` writes: `s:` and a stream message id (or nothing), or
/// `z:`, a score (or nothing), `:` and the member it stopped at.
fn valid_cursor(cursor: &str) -> bool {
    let number = |s: &str| !s.is_empty() && s.parse::<u64>().is_ok();
    if let Some(message) = cursor.strip_prefix("s:") {
        return message.is_empty()
            || message
                .split_once('-')
                .is_some_and(|(ms, seq)| number(ms) && number(seq));
    }
    cursor
        .strip_prefix("z:")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(score, _member)| {
            score.is_empty()
                || (score.len() <= 24 && score.parse::<f64>().is_ok_and(f64::is_finite))
        })
}

impl RedisBackend {
    /// One accept (its whole time is recorded by [`Store::accept`]).
    async fn accept_now(&self, delivery: &Verified) -> Result<Accepted, InboxError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Accept {
            id: delivery.id().to_owned(),
            event_type: delivery.event_type().to_owned(),
            body: delivery.bytes().clone(),
            reply,
        };
        self.batches
            .accepts
            .send(crate::batch::Queued::new(job))
            .map_err(|_| shutting_down())?;
        match answer.await.unwrap_or_else(|_| Err(shutting_down()))? {
            1 => Ok(Accepted::Stored),
            0 => Ok(Accepted::Duplicate),
            _ => Err(InboxError::full(format!(
                "{} unfinished entries",
                self.max_unfinished
            ))),
        }
    }
}

impl Store for RedisBackend {
    fn accept<'a>(&'a self, delivery: &'a Verified) -> BackendFuture<'a, Accepted> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let accepted = self.accept_now(delivery).await;
            let took = started.elapsed().as_secs_f64();
            airmy_verify::observe::metrics::inbox_accept_stage(
                "redis",
                airmy_verify::observe::metrics::AcceptStage::Total,
                took,
            );
            accepted
        })
    }
}

impl Queue for RedisBackend {
    fn take(&self, max: usize, lease: Duration) -> BackendFuture<'_, Vec<Leased>> {
        Box::pin(async move {
            if max == 0 {
                return Ok(Vec::new());
            }
            let lost = self
                .lost_take
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            let recovering = lost.is_some();
            let seed = lost.unwrap_or_else(|| airmy_verify::token::random_hex(12));
            let mut invocation = self.invocation(&self.scripts.take);
            invocation
                .arg(&self.entry_prefix)
                .arg(&self.consumer)
                .arg(max)
                .arg(positive_ms(lease))
                .arg(&seed)
                .arg(if recovering { "1" } else { "0" });
            let flat: Vec<Vec<u8>> = match self.run(invocation).await {
                Ok(flat) => flat,
                Err(err) => {
                    *self
                        .lost_take
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(seed);
                    return Err(err);
                }
            };
            Ok(flat
                .chunks_exact(6)
                .map(|f| Leased {
                    id: text(&f[0]),
                    event_type: text(&f[1]),
                    body: Bytes::copy_from_slice(&f[2]),
                    received_at: from_unix_ms(number(&f[3])),
                    attempt: number(&f[4]),
                    token: text(&f[5]),
                })
                .collect())
        })
    }

    fn next_due(&self) -> BackendFuture<'_, Option<OffsetDateTime>> {
        Box::pin(async move {
            let asked = OffsetDateTime::now_utc();
            let [due, now]: [i64; 2] = self.run(self.invocation(&self.scripts.next_due)).await?;
            // Redis's clock decides when an entry is due; this machine's may differ (replicas
            // on other hosts): answer on this machine's clock, so a worker waits the right time
            // instead of finding nothing due and asking again at once. From when it asked, less
            // the millisecond Redis's time was rounded down by: never later than due.
            Ok((due >= 0).then(|| {
                let wait = u64::try_from(due - now - 1).unwrap_or(0);
                asked + Duration::from_millis(wait)
            }))
        })
    }

    fn extend<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let mut invocation = self.entry_invocation(&self.scripts.extend, id);
            invocation
                .arg(token)
                .arg(positive_ms(lease))
                .arg(&self.consumer);
            Ok(self.run::<i64>(invocation).await? == 1)
        })
    }

    fn complete<'a>(&'a self, id: &'a str, token: &'a str) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let job = Job::Complete {
                id: id.to_owned(),
                token: token.to_owned(),
                reply,
            };
            self.batches
                .completions
                .send(crate::batch::Queued::new(job))
                .map_err(|_| shutting_down())?;
            Ok(answer.await.unwrap_or_else(|_| Err(shutting_down()))? == 1)
        })
    }

    fn retry<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        error: &'a str,
        at: OffsetDateTime,
    ) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let mut invocation = self.entry_invocation(&self.scripts.retry, id);
            invocation.arg(token).arg(error).arg(unix_ms(at));
            Ok(self.run::<i64>(invocation).await? == 1)
        })
    }

    fn bury<'a>(&'a self, id: &'a str, token: &'a str, error: &'a str) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let mut invocation = self.entry_invocation(&self.scripts.bury, id);
            invocation.arg(token).arg(error);
            Ok(self.run::<i64>(invocation).await? == 1)
        })
    }

    fn release<'a>(&'a self, id: &'a str, token: &'a str) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let mut invocation = self.entry_invocation(&self.scripts.release, id);
            invocation.arg(token);
            Ok(self.run::<i64>(invocation).await? == 1)
        })
    }

    fn wait(
        &self,
        timeout: Duration,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let Some(waiting) = &self.waiting else {
                // On the application's connection: look every 100 ms, never block it.
                while started.elapsed() < timeout {
                    if self
                        .has_new_entry(self.connection.clone(), None)
                        .await
                        .unwrap_or(false)
                    {
                        return;
                    }
                    tokio::time::sleep(POLL.min(timeout.saturating_sub(started.elapsed()))).await;
                }
                return;
            };
            let blocked = self.has_new_entry(waiting.clone(), Some(timeout));
            match tokio::time::timeout(timeout + self.timeout, blocked).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => {
                    // Redis unreachable: wait out the timeout rather than spin.
                    tokio::time::sleep_until(started + timeout).await;
                }
            }
        })
    }
}

/// How often an idle worker on the application's connection looks for new entries.
const POLL: Duration = Duration::from_millis(100);

impl RedisBackend {
    /// Whether the stream holds an entry after the group's last delivered id (a new entry, or
    /// one no worker has read yet, whoever added it): at once, or blocking up to `block`.
    async fn has_new_entry(
        &self,
        mut connection: RedisConnection,
        block: Option<Duration>,
    ) -> redis::RedisResult<bool> {
        let last: String = self
            .invocation(&self.scripts.last_delivered)
            .invoke_async(&mut connection)
            .await?;
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT").arg(1);
        if let Some(block) = block {
            read.arg("BLOCK").arg(positive_ms(block));
        }
        let found: redis::Value = read
            .arg("STREAMS")
            .arg(&self.keys[0])
            .arg(last)
            .query_async(&mut connection)
            .await?;
        Ok(!matches!(found, redis::Value::Nil))
    }
}

#[cfg(test)]
mod tests {
    use super::valid_cursor;

    #[test]
    fn only_cursors_the_listing_writes_are_valid() {
        for good in [
            "s:",
            "s:1764000000000-3",
            "z::",
            "z:1764000000123:evt_1",
            "z:1764000000123:evt:with:colons",
            "z:-5:",
        ] {
            assert!(valid_cursor(good), "{good}");
        }
        for bad in [
            "",
            "x",
            "s:1-",
            "s:-1",
            "s:abc",
            "s:99999999999999999999-1",
            "z:",
            "z:1",
            "z:inf:a",
            "z:a:1",
            "1.2",
        ] {
            assert!(!valid_cursor(bad), "{bad}");
        }
    }
}
