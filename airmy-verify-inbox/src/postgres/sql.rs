//! The backend's statements, written once per backend with its schema's name in them.

use std::sync::Arc;

/// The statements, with the schema's name in them (checked to be a plain identifier).
pub(super) struct Sql {
    pub(super) accept_batch: Arc<str>,
    pub(super) complete_batch: Arc<str>,
    pub(super) wake: Arc<str>,
    pub(super) held: Arc<str>,
    pub(super) take_head: Arc<str>,
    pub(super) take_tail: Arc<str>,
    pub(super) next_due: Arc<str>,
    pub(super) extend: Arc<str>,
    pub(super) complete: Arc<str>,
    pub(super) retry: Arc<str>,
    pub(super) bury: Arc<str>,
    pub(super) release: Arc<str>,
    pub(super) stats: Arc<str>,
    pub(super) unfinished: Arc<str>,
    pub(super) replay: Arc<str>,
    pub(super) replay_pending: Arc<str>,
    pub(super) state_of: Arc<str>,
    pub(super) held_by: Arc<str>,
    pub(super) replay_dead: Arc<str>,
    pub(super) purge: Arc<str>,
    pub(super) pause: Arc<str>,
    pub(super) resume: Arc<str>,
    pub(super) paused: Arc<str>,
    pub(super) record_action: Arc<str>,
    pub(super) recent_actions: Arc<str>,
}

/// Whether a pause holds an entry whose event type is `event_type` (a column or a value):
/// that type, or everything, paused. The keys are
/// [`PauseScope::key`](crate::PauseScope::key)'s.
fn held(s: &str, event_type: &str) -> String {
    format!("EXISTS (SELECT 1 FROM {s}.pauses p WHERE p.scope IN ('*', 'type:' || {event_type}))")
}

impl Sql {
    pub(super) fn new(s: &str, channel: &str) -> Self {
        let held_by_token = "WHERE id = $1 AND lease_token = $2 AND state = 'processing'";
        // The state of an entry made waiting again: paused when a pause holds it.
        let waiting = format!(
            "CASE WHEN {} THEN 'paused' ELSE 'pending' END",
            held(s, "event_type")
        );
        let sql = |text: String| -> Arc<str> { Arc::from(text) };
        Self {
            // No NOTIFY in the accept itself: PostgreSQL serializes the commits of notifying
            // transactions (one global lock, held through the WAL flush), which would undo
            // group commit; the wake-up goes out right after, from the waker task.
            accept_batch: sql(format!(
                "INSERT INTO {s}.entries (id, event_type, body, created_at, state, due_at)
                 SELECT j.id, j.event_type, j.body, j.created_at,
                     CASE WHEN {} THEN 'paused' ELSE 'pending' END, clock_timestamp()
                 FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[])
                     AS j(id, event_type, body, created_at)
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id",
                held(s, "j.event_type")
            )),
            complete_batch: sql(format!(
                "UPDATE {s}.entries e SET state = 'done', finished_at = clock_timestamp(),
                     lease_token = NULL, last_error = NULL
                 FROM (SELECT x.id, j.token FROM {s}.entries x
                       JOIN unnest($1::text[], $2::text[]) AS j(id, token)
                         ON x.id = j.id AND x.lease_token = j.token
                       WHERE x.state = 'processing'
                       FOR UPDATE OF x SKIP LOCKED) AS held
                 WHERE e.id = held.id
                 RETURNING e.id, held.token"
            )),
            wake: sql(format!("SELECT pg_notify('{channel}', '')")),
            held: sql(format!("SELECT 1 FROM {s}.entries WHERE id = $1")),
            // The limit is written into the statement (`take_head`, the number, `take_tail`), one
            // prepared statement per limit: with `LIMIT $1` PostgreSQL cannot cost a generic
            // plan (it assumes a tenth of the table) and plans the take anew at every call.
            // `statement_timestamp()`, not the volatile `clock_timestamp()`, bounds the index
            // range, so the scan starts and stops at the due entries.
            //
            // Paused entries are not in `entries_due`: the take never reads them. An entry it
            // meets that a pause holds (a lease run out on a paused type, or an entry accepted
            // while the pause was being made) is held, not taken: paused, no attempt counted
            // (returned with its state, and left out of the lease).
            take_head: sql(format!(
                "WITH due AS (
                     SELECT x.id, {} AS held FROM {s}.entries x
                     WHERE x.state IN ('pending', 'processing')
                         AND x.due_at <= statement_timestamp()
                     ORDER BY x.due_at
                     LIMIT ",
                held(s, "x.event_type")
            )),
            take_tail: sql(format!(
                "
                     FOR UPDATE OF x SKIP LOCKED)
                 UPDATE {s}.entries e
                 SET state = CASE WHEN due.held THEN 'paused' ELSE 'processing' END,
                     attempts = e.attempts + CASE WHEN due.held THEN 0 ELSE 1 END,
                     due_at = CASE WHEN due.held THEN e.due_at
                         ELSE clock_timestamp() + $1 * interval '1 millisecond' END,
                     lease_token = CASE WHEN due.held THEN NULL ELSE $2 || e.seq::text END
                 FROM due WHERE e.id = due.id
                 RETURNING e.id, e.event_type, e.body, e.received_at, e.attempts, e.lease_token,
                     e.state = 'processing'"
            )),
            next_due: sql(format!(
                "SELECT min(due_at) FROM {s}.entries WHERE state IN ('pending', 'processing')"
            )),
            // A row locked by the attempt's own transaction (a handler writing in it) is not
            // waited for: the lock already keeps every other worker off the entry.
            extend: sql(format!(
                "UPDATE {s}.entries SET due_at = clock_timestamp() + $3 * interval '1 millisecond'
                 {held_by_token}
                 AND id IN (SELECT id FROM {s}.entries WHERE id = $1 FOR UPDATE SKIP LOCKED)"
            )),
            complete: sql(format!(
                "UPDATE {s}.entries SET state = 'done', finished_at = clock_timestamp(),
                     lease_token = NULL, last_error = NULL
                 {held_by_token}"
            )),
            retry: sql(format!(
                "UPDATE {s}.entries SET state = {waiting}, due_at = $3, last_error = $4,
                     lease_token = NULL
                 {held_by_token}"
            )),
            bury: sql(format!(
                "UPDATE {s}.entries SET state = 'dead', finished_at = clock_timestamp(),
                     last_error = $3, lease_token = NULL
                 {held_by_token}"
            )),
            release: sql(format!(
                "WITH released AS (
                     UPDATE {s}.entries SET state = {waiting}, due_at = clock_timestamp(),
                         attempts = greatest(attempts - 1, 0), lease_token = NULL
                     {held_by_token}
                     RETURNING 1)
                 SELECT pg_notify('{channel}', '') FROM released"
            )),
            // One count per state, each from the partial index of its rows (an index-only
            // scan where the visibility map allows), never a scan of the table and its bodies:
            // a million entries answer in milliseconds, not seconds.
            stats: sql(format!(
                "SELECT
                     (SELECT count(*) FROM {s}.entries
                      WHERE state = 'pending' AND due_at <= statement_timestamp()),
                     (SELECT count(*) FROM {s}.entries
                      WHERE state = 'pending' AND due_at > statement_timestamp()),
                     (SELECT count(*) FROM {s}.entries WHERE state = 'processing'),
                     (SELECT count(*) FROM {s}.entries WHERE state = 'dead'),
                     (SELECT count(*) FROM {s}.entries WHERE state = 'done'),
                     extract(epoch FROM statement_timestamp() - (
                         SELECT min(due_at) FROM {s}.entries
                         WHERE state = 'pending' AND due_at <= statement_timestamp()))::float8,
                     (SELECT count(*) FROM {s}.entries WHERE state = 'paused')"
            )),
            unfinished: sql(format!(
                "SELECT count(*) FROM {s}.entries WHERE state IN ('pending', 'paused', 'processing')"
            )),
            replay: sql(format!(
                "WITH replayed AS (
                     UPDATE {s}.entries SET state = {waiting}, due_at = clock_timestamp(),
                         attempts = 0, last_error = NULL, finished_at = NULL
                     WHERE id = $1 AND state IN ('dead', 'done')
                     RETURNING 1)
                 SELECT pg_notify('{channel}', '') FROM replayed"
            )),
            replay_pending: sql(format!(
                "WITH due AS (
                     UPDATE {s}.entries SET due_at = least(due_at, clock_timestamp())
                     WHERE id = $1 AND state IN ('pending', 'paused')
                     RETURNING 1)
                 SELECT pg_notify('{channel}', '') FROM due"
            )),
            state_of: sql(format!("SELECT state FROM {s}.entries WHERE id = $1")),
            held_by: sql(format!("SELECT 1 FROM {s}.entries {held_by_token}")),
            replay_dead: sql(format!(
                "WITH replayed AS (
                     UPDATE {s}.entries SET state = {waiting}, due_at = clock_timestamp(),
                         attempts = 0, last_error = NULL, finished_at = NULL
                     WHERE state = 'dead' AND ($1::timestamptz IS NULL OR finished_at >= $1)
                     RETURNING id, finished_at)
                 SELECT id, pg_notify('{channel}', '') FROM replayed ORDER BY finished_at"
            )),
            purge: sql(format!(
                "DELETE FROM {s}.entries WHERE state = 'done' AND finished_at < $1"
            )),
            // One pass over the pending entries (`entries_due`), once: the take never reads
            // the paused ones again. $2: the event type, or NULL for everything.
            pause: sql(format!(
                "WITH made AS (
                     INSERT INTO {s}.pauses (scope) VALUES ($1) ON CONFLICT (scope) DO NOTHING),
                 held AS (
                     UPDATE {s}.entries SET state = 'paused'
                     WHERE state = 'pending' AND ($2::text IS NULL OR event_type = $2)
                     RETURNING 1)
                 SELECT count(*) FROM held"
            )),
            // The entries no other pause holds (the statement sees the pauses as they were
            // before its own delete, hence `<> $1`): pending again, due when they were.
            resume: sql(format!(
                "WITH ended AS (
                     DELETE FROM {s}.pauses WHERE scope = $1 RETURNING 1),
                 released AS (
                     UPDATE {s}.entries e SET state = 'pending'
                     WHERE e.state = 'paused' AND EXISTS (SELECT 1 FROM ended)
                         AND NOT EXISTS (SELECT 1 FROM {s}.pauses p
                             WHERE p.scope <> $1 AND p.scope IN ('*', 'type:' || e.event_type))
                     RETURNING 1)
                 SELECT count(*) FROM released"
            )),
            paused: sql(format!(
                "SELECT scope, since FROM {s}.pauses ORDER BY since, scope"
            )),
            record_action: sql(format!(
                "WITH added AS (
                     INSERT INTO {s}.actions (at, actor, action, subject, count, ids)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq)
                 DELETE FROM {s}.actions WHERE seq <= (SELECT seq FROM added) - $7"
            )),
            recent_actions: sql(format!(
                "SELECT at, actor, action, subject, count, ids FROM {s}.actions
                 ORDER BY seq DESC LIMIT $1"
            )),
        }
    }
}
