//! The Redis backend's Lua scripts: each in its own file under `lua/` (read with
//! `include_str!`), composed with the preludes they share, and loaded into Redis at connect.
//!
//! Every script gets the keys `stream`, `scheduled`, `dead`, `done`, `leases`, `paused`,
//! `pauses` (`KEYS[1]` to `KEYS[7]`, in that order); those about one leased entry get the
//! entry's hash as `KEYS[8]` and its id as `ARGV[1]` (`record.lua`: the list of recent actions
//! as `KEYS[8]`). The preludes come first:
//! `prelude_now.lua` (the server's time as `now`), `prelude_last_delivered.lua` (the group's
//! `last_delivered()`), `prelude_held.lua` (the lease check, and `drop()`) and
//! `prelude_paused.lua` (`held(type)`: whether a pause holds a type; `hold()`).

/// The server's time in milliseconds, as `now`.
const NOW: &str = include_str!("lua/prelude_now.lua");
/// `last_delivered()`: the group's last delivered message id, `nil` when there is no group.
const LAST_FN: &str = include_str!("lua/prelude_last_delivered.lua");
/// The lease check of the scripts about one leased entry; defines `m` and `drop()`.
const HELD: &str = include_str!("lua/prelude_held.lua");
/// `held(type)` and `hold(id, e, due)`: the pauses, for the scripts that make entries wait.
const PAUSED: &str = include_str!("lua/prelude_paused.lua");

/// The scripts, loaded once at connect (then run by their hash).
#[derive(Clone)]
pub(super) struct Scripts {
    pub(super) accept: redis::Script,
    pub(super) take: redis::Script,
    pub(super) extend: redis::Script,
    pub(super) complete: redis::Script,
    pub(super) retry: redis::Script,
    pub(super) bury: redis::Script,
    pub(super) release: redis::Script,
    pub(super) replay: redis::Script,
    pub(super) stats: redis::Script,
    pub(super) next_due: redis::Script,
    pub(super) purge: redis::Script,
    pub(super) last_delivered: redis::Script,
    pub(super) has_group: redis::Script,
    pub(super) list: redis::Script,
    pub(super) entry: redis::Script,
    pub(super) pause: redis::Script,
    pub(super) resume: redis::Script,
    pub(super) record: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let now = |body: &str| redis::Script::new(&format!("{NOW}{body}"));
        let held = |body: &str| redis::Script::new(&format!("{NOW}{HELD}{body}"));
        let last = |body: &str| redis::Script::new(&format!("{LAST_FN}{body}"));
        Self {
            accept: now(&format!("{PAUSED}{}", include_str!("lua/accept.lua"))),
            take: now(&format!(
                "{LAST_FN}{PAUSED}{}",
                include_str!("lua/take.lua")
            )),
            extend: held(include_str!("lua/extend.lua")),
            complete: now(include_str!("lua/complete.lua")),
            retry: held(&format!("{PAUSED}{}", include_str!("lua/retry.lua"))),
            bury: held(include_str!("lua/bury.lua")),
            release: held(&format!("{PAUSED}{}", include_str!("lua/release.lua"))),
            replay: now(&format!("{PAUSED}{}", include_str!("lua/replay.lua"))),
            stats: now(&format!("{LAST_FN}{}", include_str!("lua/stats.lua"))),
            next_due: now(include_str!("lua/next_due.lua")),
            purge: redis::Script::new(include_str!("lua/purge.lua")),
            last_delivered: last(include_str!("lua/last_delivered.lua")),
            has_group: last(include_str!("lua/has_group.lua")),
            list: now(include_str!("lua/list.lua")),
            entry: now(include_str!("lua/entry.lua")),
            pause: now(&format!(
                "{LAST_FN}{PAUSED}{}",
                include_str!("lua/pause.lua")
            )),
            resume: now(&format!("{PAUSED}{}", include_str!("lua/resume.lua"))),
            record: redis::Script::new(include_str!("lua/record.lua")),
        }
    }

    /// Loads every script into Redis (`SCRIPT LOAD`), so that each runs by its hash.
    pub(super) async fn load(
        &self,
        connection: &mut (impl redis::aio::ConnectionLike + Send),
    ) -> redis::RedisResult<()> {
        for script in self.all() {
            script.load_async(connection).await?;
        }
        Ok(())
    }

    /// Every script, for loading.
    fn all(&self) -> [&redis::Script; 18] {
        [
            &self.accept,
            &self.take,
            &self.extend,
            &self.complete,
            &self.retry,
            &self.bury,
            &self.release,
            &self.replay,
            &self.stats,
            &self.next_due,
            &self.purge,
            &self.last_delivered,
            &self.has_group,
            &self.list,
            &self.entry,
            &self.pause,
            &self.resume,
            &self.record,
        ]
    }
}
