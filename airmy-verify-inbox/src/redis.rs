//! The Redis backend (feature `redis`): one queue shared by every replica, on Redis Streams.
//!
//! # Layout
//!
//! Every key of one inbox carries the hash tag `{prefix}` (the prefix defaults to
//! `airmy:inbox:`), so one inbox lives in one Redis Cluster slot and every script touches one
//! slot:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}stream` | stream, consumer group `workers` | one message per entry that is due or leased |
//! | `{prefix}e:<event id>` | hash | the entry: type, body, received time, attempts, state, lease token and expiry, last error |
//! | `{prefix}scheduled` | sorted set | retries waiting for their due time (score: due time, ms) |
//! | `{prefix}leases` | sorted set | leased entries (score: lease expiry, ms), for [`next_due`](Backend::next_due) |
//! | `{prefix}dead` | stream | one message per dead letter, in the order they died |
//! | `{prefix}done` | sorted set | processed entries kept for deduplication (score: when, ms) |
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
//!   connection of its own, so an idle worker on any replica sees a new entry within
//!   milliseconds of its `XADD` (a blocking read cannot run inside a script, and reading with
//!   `XREADGROUP` outside one would split a take into two steps).
//! - **complete / retry / bury / release**: check the token, then `XACK` and `XDEL` the message
//!   (the stream holds only unfinished entries: that is its retention) and record the new state;
//!   a dead letter is `XADD`ed to the dead-letter stream. Completions that arrive while one is
//!   in flight go together in the next script (one round trip for a batch).
//! - **purge**: deletes processed entries older than a time (and idle consumers of the group).
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
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{Accepted, Backend, BackendFuture, DeadEntry, InboxError, Leased, Stats};

/// The consumer group every worker reads with.
const GROUP: &str = "workers";

/// Shared by every script: the server's time in milliseconds.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// Shared by the scripts that need it: the group's last delivered message id (`0-0` before
/// any), `nil` when there is no group.
const LAST_FN: &str = r"
local function last_delivered()
  local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local fields = {}
      for i = 1, #g, 2 do fields[g[i]] = g[i + 1] end
      if fields['name'] == 'workers' then return fields['last-delivered-id'] end
    end
  end
  return nil
end
";

/// Accepts a batch. ARGV: entry key prefix, max unfinished, then id, type, body triples. For
/// each: 1 stored, 0 duplicate (an id seen earlier in the batch included), -1 full.
const ACCEPT: &str = r"
local room = tonumber(ARGV[2]) - redis.call('XLEN', KEYS[1]) - redis.call('ZCARD', KEYS[2])
local out = {}
for i = 3, #ARGV, 3 do
  local e = ARGV[1] .. ARGV[i]
  if redis.call('EXISTS', e) == 1 then
    out[#out + 1] = 0
  elseif room <= 0 then
    out[#out + 1] = -1
  else
    local m = redis.call('XADD', KEYS[1], '*', 'i', ARGV[i])
    redis.call('HSET', e, 't', ARGV[i + 1], 'b', ARGV[i + 2], 'r', now, 'a', 0, 's', 'p', 'm', m)
    room = room - 1
    out[#out + 1] = 1
  end
end
return out";

/// KEYS: stream, scheduled, dead, done, leases. ARGV: entry key prefix, consumer, max,
/// lease ms, token seed, `1` when recovering the entries of a take with that seed whose reply
/// was lost. Returns id, type, body, received ms, attempt, token for each entry.
const TAKE: &str = r"
local ep, consumer = ARGV[1], ARGV[2]
local max, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local out, n, bytes = {}, 0, 0
if last_delivered() == nil then
  -- No group (a Redis restarted empty, or the stream deleted): start it again, so that what
  -- is accepted from now on is handled.
  redis.call('XGROUP', 'CREATE', KEYS[1], 'workers', '0', 'MKSTREAM')
end
if ARGV[6] == '1' then
  -- The reply to the take with this seed was lost: hand back what it leased, if it ran.
  local mine = ARGV[5] .. ':'
  for _, p in ipairs(redis.call('XPENDING', KEYS[1], 'workers', '-', '+', 1000, consumer)) do
    local msg = redis.call('XRANGE', KEYS[1], p[1], p[1])[1]
    if msg then
      local id = msg[2][2]
      local f = redis.call('HMGET', ep .. id, 's', 'k', 't', 'b', 'r', 'a')
      if f[1] == 'q' and f[2] and string.sub(f[2], 1, #mine) == mine then
        for _, v in ipairs({id, f[3], f[4], f[5], f[6], f[2]}) do out[#out + 1] = v end
      end
    end
  end
  if #out > 0 then return out end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', KEYS[2], id)
  local e = ep .. id
  if redis.call('HGET', e, 's') == 's' then
    redis.call('HSET', e, 's', 'p', 'm', redis.call('XADD', KEYS[1], '*', 'i', id))
  end
end
local function drop(m)
  redis.pcall('XACK', KEYS[1], 'workers', m)
  redis.call('XDEL', KEYS[1], m)
end
local function stamp(id, m)
  local e = ep .. id
  n = n + 1
  local token = ARGV[5] .. ':' .. n
  local attempt = redis.call('HINCRBY', e, 'a', 1)
  local u = now + lease
  redis.call('HSET', e, 's', 'q', 'k', token, 'u', u, 'm', m)
  redis.call('ZADD', KEYS[5], u, id)
  local f = redis.call('HMGET', e, 't', 'b', 'r')
  bytes = bytes + #f[2]
  for _, v in ipairs({id, f[1], f[2], f[3], tostring(attempt), token}) do
    out[#out + 1] = v
  end
end
-- At most `max` entries, and no more once 8 MiB of bodies are taken (2 MiB bodies).
local function room() return n < max and bytes < 8388608 end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, max)) do
  if not room() then break end
  local f = redis.call('HMGET', ep .. id, 's', 'm')
  if f[1] == 'q' and f[2] then
    -- Its worker died or stalled: move the message to this consumer's pending list (gone
    -- with a lost stream: the lease in the entry is what counts).
    redis.pcall('XCLAIM', KEYS[1], 'workers', consumer, 0, f[2], 'JUSTID')
    stamp(id, f[2])
  else
    redis.call('ZREM', KEYS[5], id)
  end
end
while room() do
  local read = redis.call('XREADGROUP', 'GROUP', 'workers', consumer, 'COUNT', 1,
    'STREAMS', KEYS[1], '>')
  if not read then break end
  for _, msg in ipairs(read[1][2]) do
    local m, id = msg[1], msg[2][2]
    local f = redis.call('HMGET', ep .. id, 's', 'm')
    if f[1] == 'p' and f[2] == m then stamp(id, m) else drop(m) end
  end
end
return out";

/// Checks the token; shared by the scripts that need the lease. KEYS[6] is the entry, ARGV[2]
/// the token. Leaves the stream message id in `m`.
const HELD: &str = r"
local f = redis.call('HMGET', KEYS[6], 's', 'k', 'm')
if f[1] ~= 'q' or f[2] ~= ARGV[2] then return 0 end
local m = f[3]
local function drop()
  redis.pcall('XACK', KEYS[1], 'workers', m)
  redis.call('XDEL', KEYS[1], m)
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('HDEL', KEYS[6], 'k', 'u', 'm')
end
";

/// ARGV: id, token, lease ms, consumer.
const EXTEND: &str = r"
local u = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[6], 'u', u)
redis.call('ZADD', KEYS[5], u, ARGV[1])
redis.pcall('XCLAIM', KEYS[1], 'workers', ARGV[4], 0, m, 'JUSTID')
return 1";

/// Completes a batch. ARGV: entry key prefix, then id and token pairs. 1 (done) or 0 (the
/// token no longer holds the lease) for each.
const COMPLETE: &str = r"
local out, msgs, ids, scored = {}, {}, {}, {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local e = ARGV[1] .. id
  local f = redis.call('HMGET', e, 's', 'k', 'm')
  if f[1] == 'q' and f[2] == ARGV[i + 1] then
    msgs[#msgs + 1] = f[3]
    ids[#ids + 1] = id
    scored[#scored + 1] = now
    scored[#scored + 1] = id
    redis.call('HDEL', e, 'k', 'u', 'm')
    redis.call('HSET', e, 's', 'd', 'z', now)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #msgs > 0 then
  redis.pcall('XACK', KEYS[1], 'workers', unpack(msgs))
  redis.call('XDEL', KEYS[1], unpack(msgs))
  redis.call('ZREM', KEYS[5], unpack(ids))
  redis.call('ZADD', KEYS[4], unpack(scored))
end
return out";

/// ARGV: id, token, error, due ms.
const RETRY: &str = r"
drop()
redis.call('HSET', KEYS[6], 's', 's', 'e', ARGV[3])
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[1])
return 1";

/// ARGV: id, token, error.
const BURY: &str = r"
drop()
local dm = redis.call('XADD', KEYS[3], '*', 'i', ARGV[1])
redis.call('HSET', KEYS[6], 's', 'x', 'e', ARGV[3], 'z', now, 'dm', dm)
return 1";

/// ARGV: id, token.
const RELEASE: &str = r"
drop()
redis.call('HINCRBY', KEYS[6], 'a', -1)
redis.call('HSET', KEYS[6], 's', 'p', 'm', redis.call('XADD', KEYS[1], '*', 'i', ARGV[1]))
return 1";

/// KEYS: stream, scheduled, dead, done, leases. ARGV: entry key prefix, ids. For each id: 1 replayed (or already
/// due), 2 being processed, 0 unknown.
const REPLAY: &str = r"
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local e = ARGV[1] .. id
  local f = redis.call('HMGET', e, 's', 'dm')
  local s = f[1]
  if not s then
    out[#out + 1] = 0
  elseif s == 'q' then
    out[#out + 1] = 2
  elseif s == 'p' then
    -- Due already; if its message was lost (the stream deleted or evicted), add it again.
    local m = redis.call('HGET', e, 'm')
    if not m or not redis.call('XRANGE', KEYS[1], m, m)[1] then
      redis.call('HSET', e, 'm', redis.call('XADD', KEYS[1], '*', 'i', id))
    end
    out[#out + 1] = 1
  else
    if s == 'x' then
      redis.call('XDEL', KEYS[3], f[2])
    elseif s == 'd' then
      redis.call('ZREM', KEYS[4], id)
    else
      redis.call('ZREM', KEYS[2], id)
    end
    if s ~= 's' then
      redis.call('HSET', e, 'a', 0)
      redis.call('HDEL', e, 'e', 'z', 'dm')
    end
    redis.call('HSET', e, 's', 'p', 'm', redis.call('XADD', KEYS[1], '*', 'i', id))
    out[#out + 1] = 1
  end
end
return out";

/// ARGV: entry key prefix, limit. Dead letters newest first: id, type, attempts, error,
/// received ms, died ms.
const DEAD: &str = r"
local out = {}
for _, msg in ipairs(redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[2])) do
  local id = msg[2][2]
  local f = redis.call('HMGET', ARGV[1] .. id, 't', 'a', 'e', 'r', 'z')
  if f[1] then
    for _, v in ipairs({id, f[1], f[2], f[3] or '', f[4], f[5]}) do out[#out + 1] = v end
  end
end
return out";

/// Counts: stream length, leased, scheduled (overdue ones apart: due, not moved into the
/// stream yet because no worker took since), dead, done, the oldest due entry's time (ms, or
/// -1), and the server's time.
const STATS: &str = r"
local len = redis.call('XLEN', KEYS[1])
local leased, oldest = 0, -1
local summary = redis.pcall('XPENDING', KEYS[1], 'workers')
if type(summary) == 'table' and not summary.err then leased = summary[1] end
local next = redis.call('XRANGE', KEYS[1], '(' .. (last_delivered() or '0-0'), '+', 'COUNT', 1)
if next[1] then oldest = tonumber(string.match(next[1][1], '^(%d+)')) end
local overdue = redis.call('ZCOUNT', KEYS[2], '-inf', now)
if overdue > 0 then
  local first = tonumber(redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2])
  if oldest < 0 or first < oldest then oldest = first end
end
return {len, leased, redis.call('ZCARD', KEYS[2]), overdue, redis.call('XLEN', KEYS[3]),
  redis.call('ZCARD', KEYS[4]), oldest, now}";

/// The group's last delivered message id (`0-0` before any).
const LAST_DELIVERED: &str = "return last_delivered() or '0-0'";

/// The earliest scheduled retry or lease expiry (ms), or -1; and the server's time.
const NEXT_DUE: &str = r"
local due = -1
for _, key in ipairs({KEYS[2], KEYS[5]}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    local at = tonumber(first[2])
    if due < 0 or at < due then due = at end
  end
end
return {due, now}";

/// ARGV: entry key prefix, before ms, batch. Deletes up to a batch of processed entries, and
/// the group's consumers idle for an hour with nothing pending; how many entries.
const PURGE: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', tonumber(ARGV[2]), 'LIMIT', 0,
  tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. id)
  redis.call('ZREM', KEYS[4], id)
end
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], 'workers')
if type(consumers) == 'table' and not consumers.err then
  for _, c in ipairs(consumers) do
    local fields = {}
    for i = 1, #c, 2 do fields[c[i]] = c[i + 1] end
    if fields['pending'] == 0 and fields['idle'] > 3600000 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'workers', fields['name'])
    end
  end
end
return #ids";

/// The options of a [`RedisBackend`].
#[derive(Clone)]
pub struct RedisOptions {
    prefix: String,
    max_unfinished: u64,
    timeout: Duration,
    #[cfg(feature = "redis-tls")]
    root_ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("prefix", &self.prefix)
            .field("max_unfinished", &self.max_unfinished)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "airmy:inbox:".to_owned(),
            max_unfinished: 1_000_000,
            timeout: Duration::from_secs(2),
            #[cfg(feature = "redis-tls")]
            root_ca_pem: None,
        }
    }
}

impl RedisOptions {
    /// The prefix of every key, inside a hash tag (`{airmy:inbox:}stream`, …). Defaults to
    /// `airmy:inbox:`. Two inboxes on one Redis need two prefixes; every replica of one
    /// service uses the same.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The most due, leased and scheduled entries the inbox holds; accepts past it fail with
    /// [`InboxError::Full`]. Defaults to 1,000,000. (A Redis out of memory under its
    /// `maxmemory` refuses writes: also [`InboxError::Full`].)
    #[must_use]
    pub fn max_unfinished(mut self, entries: u64) -> Self {
        self.max_unfinished = entries;
        self
    }

    /// How long connecting and every command may take before the operation fails with
    /// [`InboxError::Unavailable`] (the adapters answer 503). Defaults to 2 s.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// Verifies a `rediss://` server's certificate against this CA (PEM) instead of the
    /// system's trust store. Feature `redis-tls`.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    #[must_use]
    pub fn root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_ca_pem = Some(pem.into());
        self
    }
}

/// An inbox [`Backend`] on Redis Streams, shared by every replica that connects to the same
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
    connection: ConnectionManager,
    /// For blocking reads only: a blocked read holds up its connection.
    waiting: ConnectionManager,
    keys: [String; 5],
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

/// The two commonest writes, accepts and completions, each go to a task of their own that
/// sends whatever arrived while its previous script ran as one script: one round trip (and one
/// Lua call) per batch, not per entry, and at low load no wait at all.
#[derive(Clone)]
struct Batches {
    accepts: mpsc::UnboundedSender<Job>,
    completions: mpsc::UnboundedSender<Job>,
}

/// One accept or completion waiting for its batch; the answer is the script's code for it.
enum Job {
    Accept {
        id: String,
        event_type: String,
        body: Bytes,
        reply: oneshot::Sender<Result<i64, InboxError>>,
    },
    Complete {
        id: String,
        token: String,
        reply: oneshot::Sender<Result<i64, InboxError>>,
    },
}

impl Job {
    fn size(&self) -> usize {
        match self {
            Self::Accept { id, body, .. } => id.len() + body.len(),
            Self::Complete { id, token, .. } => id.len() + token.len(),
        }
    }

    fn reply(self, answer: Result<i64, InboxError>) {
        let (Self::Accept { reply, .. } | Self::Complete { reply, .. }) = self;
        let _ = reply.send(answer);
    }
}

fn shutting_down() -> InboxError {
    InboxError::Unavailable("the inbox is shutting down".to_owned())
}

/// Runs `script` on batches of jobs (at most 256, or 8 MiB of arguments), until every backend
/// clone is dropped. `lead` are the arguments before the jobs'.
async fn run_batches(
    connection: ConnectionManager,
    script: redis::Script,
    keys: [String; 5],
    lead: Vec<String>,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    const MOST: usize = 256;
    const BYTES: usize = 8 << 20;
    const IN_FLIGHT: usize = 2;
    let (script, keys, lead) = (Arc::new(script), Arc::new(keys), Arc::new(lead));
    let mut held: Option<Job> = None;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match queue.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        // A few batches in flight: the next ones gather while the previous replies (and
        // Redis's fsync, which Redis shares between the scripts of one event loop turn) are on
        // their way.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let mut bytes = first.size();
        let mut batch = vec![first];
        while batch.len() < MOST {
            match queue.try_recv() {
                Ok(job) if bytes + job.size() > BYTES => {
                    held = Some(job);
                    break;
                }
                Ok(job) => {
                    bytes += job.size();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let (script, keys, lead) = (Arc::clone(&script), Arc::clone(&keys), Arc::clone(&lead));
        let mut connection = connection.clone();
        tokio::spawn(async move {
            let mut invocation = script.prepare_invoke();
            for key in keys.iter() {
                invocation.key(key);
            }
            for arg in lead.iter() {
                invocation.arg(arg);
            }
            for job in &batch {
                match job {
                    Job::Accept {
                        id,
                        event_type,
                        body,
                        ..
                    } => invocation.arg(id).arg(event_type).arg(body.as_ref()),
                    Job::Complete { id, token, .. } => invocation.arg(id).arg(token),
                };
            }
            let result: Result<Vec<i64>, InboxError> = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(redis_error);
            drop(permit);
            for (i, job) in batch.into_iter().enumerate() {
                job.reply(match &result {
                    Ok(codes) => codes
                        .get(i)
                        .copied()
                        .ok_or_else(|| InboxError::Unavailable("Redis: a short reply".to_owned())),
                    Err(err) => Err(err.clone()),
                });
            }
        });
    }
}

#[derive(Clone)]
struct Scripts {
    accept: redis::Script,
    take: redis::Script,
    extend: redis::Script,
    complete: redis::Script,
    retry: redis::Script,
    bury: redis::Script,
    release: redis::Script,
    replay: redis::Script,
    dead: redis::Script,
    stats: redis::Script,
    next_due: redis::Script,
    purge: redis::Script,
    last_delivered: redis::Script,
    has_group: redis::Script,
}

impl Scripts {
    fn new() -> Self {
        let now = |body: &str| redis::Script::new(&format!("{NOW}{body}"));
        let held = |body: &str| redis::Script::new(&format!("{NOW}{HELD}{body}"));
        Self {
            accept: now(ACCEPT),
            take: redis::Script::new(&format!("{NOW}{LAST_FN}{TAKE}")),
            extend: held(EXTEND),
            complete: now(COMPLETE),
            retry: held(RETRY),
            bury: held(BURY),
            release: held(RELEASE),
            replay: redis::Script::new(REPLAY),
            dead: redis::Script::new(DEAD),
            stats: redis::Script::new(&format!("{NOW}{LAST_FN}{STATS}")),
            next_due: now(NEXT_DUE),
            purge: redis::Script::new(PURGE),
            last_delivered: redis::Script::new(&format!("{LAST_FN}{LAST_DELIVERED}")),
            has_group: redis::Script::new(&format!("{LAST_FN}return last_delivered() and 1 or 0")),
        }
    }

    fn all(&self) -> [&redis::Script; 14] {
        [
            &self.accept,
            &self.take,
            &self.extend,
            &self.complete,
            &self.retry,
            &self.bury,
            &self.release,
            &self.replay,
            &self.dead,
            &self.stats,
            &self.next_due,
            &self.purge,
            &self.last_delivered,
            &self.has_group,
        ]
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("stream", &self.keys[0])
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

/// Why [`RedisBackend::connect`] failed. Its message never contains the URL's password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError(String);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot open the Redis inbox: {}", self.0)
    }
}

impl std::error::Error for ConnectError {}

impl RedisBackend {
    /// Connects to Redis at `url` (`redis://[:password@]host:port[/db]`, or `rediss://` with
    /// feature `redis-tls`), loads the scripts and creates the consumer group if needed.
    ///
    /// # Errors
    ///
    /// A [`ConnectError`] when the URL is invalid, the prefix is empty, or Redis cannot be
    /// reached within the options' timeout.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self, ConnectError> {
        if options.prefix.is_empty() || options.prefix.contains(['{', '}']) {
            return Err(ConnectError(
                "the key prefix is empty or holds `{` or `}` (its hash tag would not keep one \
                 inbox in one Redis Cluster slot)"
                    .to_owned(),
            ));
        }
        let client = client(url, &options)?;
        // Setting up (loading the scripts, creating the group) happens once, at start-up: it
        // gets at least 5 s, whatever the commands' timeout, so a busy machine does not fail it.
        let setup = options.timeout.max(Duration::from_secs(5));
        let mut connection = tokio::time::timeout(
            setup,
            client.get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(setup))
                    .set_response_timeout(Some(setup)),
            ),
        )
        .await
        .map_err(|_| ConnectError("Redis did not answer in time".to_owned()))?
        .map_err(|e| ConnectError(e.to_string()))?;
        let tag = format!("{{{}}}", options.prefix);
        let keys =
            ["stream", "scheduled", "dead", "done", "leases"].map(|name| format!("{tag}{name}"));
        let scripts = Scripts::new();
        for script in scripts.all() {
            script
                .load_async(&mut connection)
                .await
                .map_err(|e| ConnectError(e.to_string()))?;
        }
        // Created only when missing: Redis refuses `XGROUP CREATE` when it is out of memory even
        // for a group that exists, and operators must still be able to connect then (to purge).
        let has_group: i64 = scripts
            .has_group
            .key(&keys[0])
            .invoke_async(&mut connection)
            .await
            .map_err(|e| ConnectError(e.to_string()))?;
        if has_group == 0 {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&keys[0])
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut connection)
                .await;
            if let Err(err) = created
                && err.code() != Some("BUSYGROUP")
            {
                return Err(ConnectError(err.to_string()));
            }
        }
        warn_unless_noeviction(&mut connection).await;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = |config| {
            let client = client.clone();
            async move {
                tokio::time::timeout(setup, ConnectionManager::new_with_config(client, config))
                    .await
                    .map_err(|_| ConnectError("Redis did not answer in time".to_owned()))?
                    .map_err(|e| ConnectError(e.to_string()))
            }
        };
        let connection = manager(config.clone()).await?;
        // Blocking reads last up to a second; their own timeout is set per read.
        let waiting = manager(config.set_response_timeout(None)).await?;
        let entry_prefix = format!("{tag}e:");
        let (accepts, accept_queue) = mpsc::unbounded_channel();
        let (completions, completion_queue) = mpsc::unbounded_channel();
        tokio::spawn(run_batches(
            connection.clone(),
            scripts.accept.clone(),
            keys.clone(),
            vec![entry_prefix.clone(), options.max_unfinished.to_string()],
            accept_queue,
        ));
        tokio::spawn(run_batches(
            connection.clone(),
            scripts.complete.clone(),
            keys.clone(),
            vec![entry_prefix.clone()],
            completion_queue,
        ));
        Ok(Self {
            connection,
            waiting,
            entry_prefix,
            keys,
            consumer: format!("{}-{}", std::process::id(), random_hex(6)),
            max_unfinished: options.max_unfinished,
            timeout: options.timeout,
            scripts,
            lost_take: Arc::default(),
            batches: Batches {
                accepts,
                completions,
            },
        })
    }

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

/// An eviction policy other than `noeviction` lets Redis delete entries that were answered 2xx
/// (and their stream messages) when it fills up: said once, at start-up. Managed services that
/// hide `CONFIG` say nothing here.
async fn warn_unless_noeviction(connection: &mut redis::aio::MultiplexedConnection) {
    let policy: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(connection)
        .await;
    if let Ok(policy) = policy
        && let Some(value) = policy.get(1)
        && value != "noeviction"
    {
        tracing::warn!(
            target: "airmy_verify",
            maxmemory_policy = %value,
            "Redis may evict keys (maxmemory-policy is not noeviction): inbox entries answered 2xx can be lost when it fills up; set maxmemory-policy noeviction"
        );
    }
}

fn client(url: &str, options: &RedisOptions) -> Result<redis::Client, ConnectError> {
    #[cfg(feature = "redis-tls")]
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Some(pem) = &options.root_ca_pem {
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            };
            return redis::Client::build_with_tls(url, certificates)
                .map_err(|e| ConnectError(format!("invalid Redis TLS settings: {e}")));
        }
    }
    #[cfg(not(feature = "redis-tls"))]
    let _ = options;
    redis::Client::open(url).map_err(|e| ConnectError(format!("invalid Redis URL: {e}")))
}

fn redis_error(err: redis::RedisError) -> InboxError {
    if err.code() == Some("OOM") {
        InboxError::Full(format!("Redis is out of memory: {err}"))
    } else {
        InboxError::Unavailable(format!("Redis: {err}"))
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0_u8; bytes];
    // getrandom fails only without an OS random source; the time is then unique enough for
    // a consumer name or a token seed combined with the entry's id.
    if getrandom::fill(&mut buf).is_err() {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        return format!("{nanos:x}");
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn unix_millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
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

impl Backend for RedisBackend {
    fn accept<'a>(&'a self, delivery: &'a Verified) -> BackendFuture<'a, Accepted> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let job = Job::Accept {
                id: delivery.id().to_owned(),
                event_type: delivery.event_type().to_owned(),
                body: delivery.bytes().clone(),
                reply,
            };
            self.batches
                .accepts
                .send(job)
                .map_err(|_| shutting_down())?;
            match answer.await.unwrap_or_else(|_| Err(shutting_down()))? {
                1 => Ok(Accepted::Stored),
                0 => Ok(Accepted::Duplicate),
                _ => Err(InboxError::Full(format!(
                    "{} unfinished entries",
                    self.max_unfinished
                ))),
            }
        })
    }

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
            let seed = lost.unwrap_or_else(|| random_hex(12));
            let mut invocation = self.invocation(&self.scripts.take);
            invocation
                .arg(&self.entry_prefix)
                .arg(&self.consumer)
                .arg(max)
                .arg(millis(lease))
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
                    received_at: from_millis(number(&f[3])),
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
            invocation.arg(token).arg(millis(lease)).arg(&self.consumer);
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
                .send(job)
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
            invocation.arg(token).arg(error).arg(unix_millis(at));
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

    fn stats(&self) -> BackendFuture<'_, Stats> {
        Box::pin(async move {
            let [len, leased, scheduled, overdue, dead, done, oldest, now]: [i64; 8] =
                self.run(self.invocation(&self.scripts.stats)).await?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            Ok(Stats {
                pending: count(len - leased + overdue),
                scheduled: count(scheduled - overdue),
                processing: count(leased),
                dead: count(dead),
                done: count(done),
                oldest_pending_age_secs: (oldest >= 0).then(|| count(now - oldest) / 1000),
            })
        })
    }

    fn dead(&self, limit: usize) -> BackendFuture<'_, Vec<DeadEntry>> {
        Box::pin(async move {
            let mut invocation = self.invocation(&self.scripts.dead);
            // Redis counts in a signed 64-bit integer.
            let count = u64::try_from(limit)
                .unwrap_or(u64::MAX)
                .clamp(1, i64::MAX as u64);
            invocation.arg(&self.entry_prefix).arg(count);
            let flat: Vec<Vec<u8>> = self.run(invocation).await?;
            Ok(flat
                .chunks_exact(6)
                .take(limit)
                .map(|f| DeadEntry {
                    id: text(&f[0]),
                    event_type: text(&f[1]),
                    attempts: number(&f[2]),
                    last_error: text(&f[3]),
                    received_at: from_millis(number(&f[4])),
                    died_at: from_millis(number(&f[5])),
                })
                .collect())
        })
    }

    fn replay<'a>(&'a self, id: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            match self.replay_ids(&[id.to_owned()]).await?.first() {
                Some(1) => Ok(()),
                Some(2) => Err(InboxError::Busy(id.to_owned())),
                _ => Err(InboxError::NotFound(id.to_owned())),
            }
        })
    }

    fn replay_dead(
        &self,
        since: Option<OffsetDateTime>,
        dry_run: bool,
    ) -> BackendFuture<'_, Vec<String>> {
        Box::pin(async move {
            // The dead-letter stream's message ids carry the time each entry died.
            let mut start = since.map_or_else(|| "-".to_owned(), |t| unix_millis(t).to_string());
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
            if dry_run {
                return Ok(ids);
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
                    .arg(unix_millis(before))
                    .arg(BATCH);
                let n: u64 = self.run(invocation).await?;
                purged += n;
                if n < BATCH {
                    return Ok(purged);
                }
            }
        })
    }

    fn wait(
        &self,
        timeout: Duration,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let blocked = async {
                // From the group's last delivered id: anything after it is a new entry (or one
                // no worker has read yet), whoever added it.
                let mut connection = self.waiting.clone();
                let last: String = self
                    .invocation(&self.scripts.last_delivered)
                    .invoke_async(&mut connection)
                    .await?;
                let _: redis::Value = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(millis(timeout))
                    .arg("STREAMS")
                    .arg(&self.keys[0])
                    .arg(last)
                    .query_async(&mut connection)
                    .await?;
                Ok::<(), redis::RedisError>(())
            };
            let started = tokio::time::Instant::now();
            match tokio::time::timeout(timeout + self.timeout, blocked).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    // Redis unreachable: wait out the timeout rather than spin.
                    tokio::time::sleep_until(started + timeout).await;
                }
            }
        })
    }
}
