//! The backend-independent conformance suite: every [`Backend`] must pass it unchanged.
//!
//! A backend's test file builds a [`Harness`] (a fresh, empty backend and a way to let time
//! pass) and calls [`run_all`]. Where the backend keeps time itself (SQLite, with an injected
//! clock) time passes instantly; where a server's clock decides (Redis), the harness sleeps, and
//! the suite keeps its leases and delays short ([`LEASE`], [`STEP`]).
//!
//! ```no_run
//! # async fn example(harness: impl airmy_verify_inbox::conformance::Harness) {
//! airmy_verify_inbox::conformance::run_all(&harness).await;
//! # }
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airmy_verify::testing::{self, FixedClock};
use airmy_verify::{Clock, Verified, Verifier};
use time::OffsetDateTime;

use crate::backend::{Accepted, Backend, EntryState, ListQuery, Order};

mod listing;
mod pause;

pub use listing::entries_are_listed_by_state_page_by_page;
use listing::list_all;
pub use pause::{
    a_paused_type_waits_until_resumed, pausing_everything_holds_every_type,
    recent_actions_are_kept_newest_first_and_bounded,
};

/// The lease the suite takes entries for.
pub const LEASE: Duration = Duration::from_millis(300);

/// A step of time the suite lets pass: longer than [`LEASE`].
pub const STEP: Duration = Duration::from_millis(450);

/// What the suite needs from a backend's test.
pub trait Harness: Sync {
    /// A fresh backend with no entries (each call may return the same one only if it is empty).
    fn backend(&self) -> &dyn Backend;

    /// Lets `by` pass on the backend's clock.
    fn advance(&self, by: Duration) -> impl Future<Output = ()> + Send;

    /// The backend's current time.
    fn now(&self) -> OffsetDateTime;
}

/// A clock tests can move (for backends that keep time themselves).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<OffsetDateTime>>);

impl ManualClock {
    /// A clock at the system's current time.
    #[must_use]
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(OffsetDateTime::now_utc())))
    }

    /// Moves the clock on.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A verified delivery of `event_type` with `id` (verified by a verifier on a fixed clock).
#[must_use]
pub fn delivery(id: &str, event_type: &str) -> Verified {
    let signed = testing::sample_event(event_type)
        .id(id)
        .created_at(testing::fixed_now())
        .signed(testing::SECRET);
    let verifier = Verifier::builder(airmy_verify::Secret::new(testing::SECRET).expect("secret"))
        .clock(FixedClock(testing::fixed_now()))
        .build();
    verifier
        .verify(&signed.signature, signed.body)
        .expect("a sample delivery verifies")
}

/// Runs every check of the suite, in order, on fresh ids.
pub async fn run_all(h: &impl Harness) {
    accept_stores_once_and_reports_duplicates(h).await;
    concurrent_accepts_of_one_id_store_it_once(h).await;
    take_leases_due_entries_and_counts_attempts(h).await;
    an_expired_lease_is_taken_over(h).await;
    extend_keeps_a_lease(h).await;
    complete_retry_bury_need_the_lease(h).await;
    a_retry_waits_until_it_is_due(h).await;
    dead_letters_are_listed_and_replayed(h).await;
    release_gives_an_entry_back_at_once(h).await;
    purge_forgets_processed_entries(h).await;
    stats_count_every_state(h).await;
    entries_are_listed_by_state_page_by_page(h).await;
    wait_wakes_on_a_new_entry(h).await;
    a_paused_type_waits_until_resumed(h).await;
    pausing_everything_holds_every_type(h).await;
    recent_actions_are_kept_newest_first_and_bounded(h).await;
}

/// Not part of [`run_all`] (it needs its own backend): run it on an empty backend opened to
/// hold at most 3 unfinished entries. Three accepts store; the fourth fails with
/// [`ErrorKind::Full`](crate::ErrorKind::Full) (adapters answer 503, never a 2xx); a delivery already stored is still
/// answered [`Accepted::Duplicate`].
pub async fn a_full_inbox_refuses_new_entries_but_knows_stored_ones(bounded_at_3: &dyn Backend) {
    let b = bounded_at_3;
    for i in 0..3 {
        assert_eq!(
            b.accept(&delivery(&format!("evt_bounded_{i}"), "test"))
                .await
                .expect("accepted"),
            Accepted::Stored
        );
    }
    assert!(matches!(
        b.accept(&delivery("evt_bounded_3", "test")).await,
        Err(e) if e.kind() == crate::ErrorKind::Full
    ));
    assert_eq!(
        b.accept(&delivery("evt_bounded_0", "test"))
            .await
            .expect("accepted"),
        Accepted::Duplicate
    );
}

fn unique(prefix: &str) -> String {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    format!("{prefix}_{nanos}")
}

/// Takes until `id` comes up (other suites' leftovers are released).
async fn take_one(h: &impl Harness, id: &str) -> Option<crate::Leased> {
    let taken = h.backend().take(64, LEASE).await.expect("take");
    let mut found = None;
    for entry in taken {
        if entry.id == id {
            found = Some(entry);
        } else {
            let _ = h.backend().release(&entry.id, &entry.token).await;
        }
    }
    found
}

/// A stored delivery is stored once; every later delivery of its id, in any state, is a
/// duplicate.
pub async fn accept_stores_once_and_reports_duplicates(h: &impl Harness) {
    let id = unique("evt_dup");
    let d = delivery(&id, "run.completed");
    let b = h.backend();
    assert_eq!(b.accept(&d).await.expect("accepted"), Accepted::Stored);
    assert_eq!(b.accept(&d).await.expect("accepted"), Accepted::Duplicate);
    let leased = take_one(h, &id).await.expect("taken");
    assert_eq!(
        b.accept(&d).await.expect("accepted"),
        Accepted::Duplicate,
        "while processing"
    );
    assert_eq!(leased.body, *d.bytes(), "the body is kept byte for byte");
    assert_eq!(leased.event_type, "run.completed");
    assert!(b.complete(&id, &leased.token).await.expect("complete"));
    assert_eq!(
        b.accept(&d).await.expect("accepted"),
        Accepted::Duplicate,
        "once done"
    );
}

/// Of many concurrent accepts of one id, exactly one stores it.
pub async fn concurrent_accepts_of_one_id_store_it_once(h: &impl Harness) {
    let id = unique("evt_race");
    let d = delivery(&id, "test");
    let results = futures_util::future::join_all((0..16).map(|_| h.backend().accept(&d))).await;
    let stored = results
        .iter()
        .filter(|r| matches!(r, Ok(Accepted::Stored)))
        .count();
    let duplicate = results
        .iter()
        .filter(|r| matches!(r, Ok(Accepted::Duplicate)))
        .count();
    assert_eq!((stored, duplicate), (1, 15), "{results:?}");
    let leased = take_one(h, &id).await.expect("taken");
    assert!(
        h.backend()
            .complete(&id, &leased.token)
            .await
            .expect("complete")
    );
}

/// `take` leases due entries once, counts an attempt, and respects `max`.
pub async fn take_leases_due_entries_and_counts_attempts(h: &impl Harness) {
    let b = h.backend();
    let ids: Vec<String> = (0..3).map(|i| unique(&format!("evt_take{i}"))).collect();
    for id in &ids {
        assert_eq!(
            b.accept(&delivery(id, "test")).await.expect("accepted"),
            Accepted::Stored
        );
    }
    let first = b.take(2, LEASE).await.expect("take");
    assert_eq!(first.len(), 2, "at most max");
    let second = b.take(10, LEASE).await.expect("take");
    let third = b.take(10, LEASE).await.expect("take");
    assert!(third.is_empty(), "nothing left while leased: {third:?}");
    let all: Vec<_> = first.iter().chain(&second).collect();
    for id in &ids {
        let entry = all.iter().find(|e| &e.id == id).expect("each taken once");
        assert_eq!(entry.attempt, 1);
    }
    for entry in all {
        assert!(b.complete(&entry.id, &entry.token).await.expect("complete"));
    }
}

/// An entry whose lease runs out (its worker died) is taken again, as attempt 2, with a new
/// token; the old token can no longer record anything.
pub async fn an_expired_lease_is_taken_over(h: &impl Harness) {
    let b = h.backend();
    let id = unique("evt_takeover");
    b.accept(&delivery(&id, "test")).await.expect("accept");
    let dead_worker = take_one(h, &id).await.expect("taken");
    assert!(take_one(h, &id).await.is_none(), "leased");
    h.advance(STEP).await;
    let survivor = take_one(h, &id).await.expect("taken over");
    assert_eq!(survivor.attempt, 2);
    assert_ne!(survivor.token, dead_worker.token);
    assert!(!b.complete(&id, &dead_worker.token).await.expect("complete"));
    assert!(b.complete(&id, &survivor.token).await.expect("complete"));
}

/// `extend` keeps an entry leased past its first lease.
pub async fn extend_keeps_a_lease(h: &impl Harness) {
    let b = h.backend();
    let id = unique("evt_extend");
    b.accept(&delivery(&id, "test")).await.expect("accept");
    let leased = take_one(h, &id).await.expect("taken");
    for _ in 0..3 {
        h.advance(LEASE / 2).await;
        assert!(b.extend(&id, &leased.token, LEASE).await.expect("extend"));
    }
    assert!(take_one(h, &id).await.is_none(), "still leased");
    assert!(!b.extend(&id, "not-the-token", LEASE).await.expect("extend"));
    assert!(b.complete(&id, &leased.token).await.expect("complete"));
}

/// Only the lease's holder completes, retries or buries an entry.
pub async fn complete_retry_bury_need_the_lease(h: &impl Harness) {
    let b = h.backend();
    let id = unique("evt_token");
    b.accept(&delivery(&id, "test")).await.expect("accept");
    let leased = take_one(h, &id).await.expect("taken");
    assert!(!b.complete(&id, "x").await.expect("complete"));
    assert!(!b.retry(&id, "x", "e", h.now()).await.expect("retry"));
    assert!(!b.bury(&id, "x", "e").await.expect("bury"));
    assert!(!b.release(&id, "x").await.expect("release"));
    assert!(b.complete(&id, &leased.token).await.expect("complete"));
    assert!(
        !b.complete(&id, &leased.token).await.expect("complete"),
        "done already"
    );
}

/// A scheduled retry is not taken before it is due, then is, as the next attempt.
pub async fn a_retry_waits_until_it_is_due(h: &impl Harness) {
    let b = h.backend();
    let id = unique("evt_retry");
    b.accept(&delivery(&id, "test")).await.expect("accept");
    let leased = take_one(h, &id).await.expect("taken");
    let at = h.now() + STEP;
    assert!(
        b.retry(&id, &leased.token, "database down", at)
            .await
            .expect("retry")
    );
    assert!(take_one(h, &id).await.is_none(), "not due yet");
    let due = b
        .next_due()
        .await
        .expect("next_due")
        .expect("something is due later");
    assert!(due <= at, "{due} <= {at}");
    h.advance(STEP + Duration::from_millis(50)).await;
    let again = take_one(h, &id).await.expect("due now");
    assert_eq!(again.attempt, 2);
    assert!(b.complete(&id, &again.token).await.expect("complete"));
}

/// Dead letters keep their error and attempts, are listed newest first, and come back with
/// `replay` (one id, or every one since a time, with a dry run).
pub async fn dead_letters_are_listed_and_replayed(h: &impl Harness) {
    let b = h.backend();
    let (one, two) = (unique("evt_dead1"), unique("evt_dead2"));
    for id in [&one, &two] {
        b.accept(&delivery(id, "alert.triggered"))
            .await
            .expect("accept");
        let leased = take_one(h, id).await.expect("taken");
        assert!(
            b.bury(id, &leased.token, "pager returned 500")
                .await
                .expect("bury")
        );
    }
    let dead = list_all(b, ListQuery::new(EntryState::Dead).order(Order::Newest)).await;
    let listed = dead.iter().find(|d| d.id == one).expect("listed");
    assert_eq!(listed.attempts, 1);
    assert_eq!(listed.last_error.as_deref(), Some("pager returned 500"));
    assert_eq!(listed.event_type, "alert.triggered");
    let at = |id: &str| dead.iter().position(|d| d.id == id).expect("listed");
    assert!(at(&two) < at(&one), "newest first");
    assert_eq!(
        b.accept(&delivery(&one, "alert.triggered"))
            .await
            .expect("accepted"),
        Accepted::Duplicate
    );

    assert!(matches!(
        b.replay("evt_never_seen").await,
        Err(e) if e.kind() == crate::ErrorKind::NotFound
    ));
    b.replay(&one).await.expect("replay");
    let back = take_one(h, &one).await.expect("pending again");
    assert_eq!(back.attempt, 1, "attempts start again");
    assert!(b.complete(&one, &back.token).await.expect("complete"));

    let since = h.now() - Duration::from_secs(3600);
    let future = h.now() + Duration::from_secs(3600);
    assert!(
        !b.replay_dead(Some(future))
            .await
            .expect("none")
            .contains(&two)
    );
    let replayed = b.replay_dead(Some(since)).await.expect("replay");
    assert!(replayed.contains(&two));
    let back = take_one(h, &two).await.expect("pending again");
    assert!(b.complete(&two, &back.token).await.expect("complete"));
}

/// A worker shutting down gives its entry back, due at once, the attempt not counted.
pub async fn release_gives_an_entry_back_at_once(h: &impl Harness) {
    let b = h.backend();
    let id = unique("evt_release");
    b.accept(&delivery(&id, "test")).await.expect("accept");
    let leased = take_one(h, &id).await.expect("taken");
    assert!(b.release(&id, &leased.token).await.expect("release"));
    let again = take_one(h, &id).await.expect("due at once");
    assert_eq!(again.attempt, 1);
    assert!(b.complete(&id, &again.token).await.expect("complete"));
}

/// Purging forgets processed entries older than a time; their ids can be stored again.
pub async fn purge_forgets_processed_entries(h: &impl Harness) {
    let b = h.backend();
    let id = unique("evt_purge");
    let d = delivery(&id, "test");
    b.accept(&d).await.expect("accept");
    let leased = take_one(h, &id).await.expect("taken");
    assert!(b.complete(&id, &leased.token).await.expect("complete"));
    assert_eq!(
        b.purge_done(h.now() - Duration::from_secs(3600))
            .await
            .expect("purge"),
        0,
        "too recent"
    );
    h.advance(STEP).await;
    assert!(b.purge_done(h.now()).await.expect("purge") >= 1);
    assert_eq!(
        b.accept(&d).await.expect("accepted"),
        Accepted::Stored,
        "forgotten"
    );
    let leased = take_one(h, &id).await.expect("taken");
    assert!(b.complete(&id, &leased.token).await.expect("complete"));
}

/// Stats count entries by state.
pub async fn stats_count_every_state(h: &impl Harness) {
    let b = h.backend();
    let before = b.stats().await.expect("stats");
    let ids: Vec<String> = (0..4).map(|i| unique(&format!("evt_stats{i}"))).collect();
    for id in &ids {
        b.accept(&delivery(id, "test")).await.expect("accept");
    }
    let after = b.stats().await.expect("stats");
    assert_eq!(after.pending, before.pending + 4);
    assert!(after.oldest_pending_age_secs.is_some());
    let processing = take_one(h, &ids[0]).await.expect("taken");
    let scheduled = take_one(h, &ids[1]).await.expect("taken");
    let dead = take_one(h, &ids[2]).await.expect("taken");
    assert!(
        b.retry(
            &ids[1],
            &scheduled.token,
            "e",
            h.now() + Duration::from_secs(3600)
        )
        .await
        .expect("retry")
    );
    assert!(b.bury(&ids[2], &dead.token, "e").await.expect("bury"));
    let now = b.stats().await.expect("stats");
    assert_eq!(now.processing, before.processing + 1);
    assert_eq!(now.scheduled, before.scheduled + 1);
    assert_eq!(now.dead, before.dead + 1);
    assert_eq!(now.pending, before.pending + 1);
    assert!(
        b.complete(&ids[0], &processing.token)
            .await
            .expect("complete")
    );
    let done = b.stats().await.expect("stats");
    assert_eq!(done.done, now.done + 1);
    // Leave nothing due behind for the next checks.
    let last = take_one(h, &ids[3]).await.expect("taken");
    assert!(b.complete(&ids[3], &last.token).await.expect("complete"));
}

/// A waiting worker wakes when a delivery is accepted, well before its timeout.
pub async fn wait_wakes_on_a_new_entry(h: &impl Harness) {
    let b = h.backend();
    let id = unique("evt_wake");
    // Earlier accepts may have left a wake-up behind: use it up first.
    b.wait(Duration::from_millis(1)).await;
    let started = std::time::Instant::now();
    let (_, ()) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.accept(&delivery(&id, "test")).await.expect("accept");
        },
        b.wait(Duration::from_secs(10)),
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(40),
        "woken by the accept, not before: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "woken by the accept: {waited:?}"
    );
    let leased = take_one(h, &id).await.expect("taken");
    assert!(b.complete(&id, &leased.token).await.expect("complete"));
}
