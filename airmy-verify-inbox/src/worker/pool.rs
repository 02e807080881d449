//! The worker's pool loop: takes entries ahead into a queue, starts them on free slots, gives
//! back what waited too long, purges processed entries, and at shutdown lets running handlers
//! finish within the deadline and releases the rest.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::Context;
use crate::backend::{Backend, Leased};
#[cfg(feature = "metrics")]
use airmy_verify::observe;

/// How long an entry taken ahead may wait for a slot before it is given back.
const HOLD: Duration = Duration::from_secs(1);

/// Gives back entries taken ahead that waited for a slot for [`HOLD`] (or a third of their
/// lease, if shorter): behind slow handlers, another worker (another replica, on a shared
/// backend) may take them now, and their lease never runs out in the queue (which would count
/// a new attempt). Giving back does not count an attempt.
async fn give_back_waiting(
    queue: &mut VecDeque<(Leased, tokio::time::Instant)>,
    backend: &dyn Backend,
    lease: Duration,
) {
    let now = tokio::time::Instant::now();
    let hold = HOLD.min(lease / 3);
    let mut kept = VecDeque::with_capacity(queue.len());
    for (entry, queued_at) in queue.drain(..) {
        if now.duration_since(queued_at) < hold {
            kept.push_back((entry, queued_at));
            continue;
        }
        match backend.release(&entry.id, &entry.token).await {
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(target: "airmy_verify", event_id = ?entry.id, error = %err, "cannot give back a queued entry; it is taken again when its lease runs out");
            }
        }
    }
    *queue = kept;
}

/// How long the gauges wait after a reading of the stats that took `took`: a second, or
/// twenty times the reading when that is longer (at most 30 s), so that the gauges never spend more than a
/// twentieth of the time in the backend (PostgreSQL counts a large table's states in a
/// fraction of a second, which once a second would take a core's worth from the worker).
#[cfg(feature = "metrics")]
fn gauge_interval(took: Duration) -> Duration {
    took.saturating_mul(GAUGE_COST)
        .clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// The gauges spend at most one part in `GAUGE_COST` of the time reading the stats.
#[cfg(feature = "metrics")]
const GAUGE_COST: u32 = 20;

/// Sets the inbox gauges of [`observe`] from the backend's stats once a second (less often
/// when reading them is slow: [`gauge_interval`]), until `shutdown`.
#[cfg(feature = "metrics")]
async fn refresh_gauges(backend: Arc<dyn Backend>, shutdown: CancellationToken) {
    let mut failing = false;
    loop {
        let started = std::time::Instant::now();
        let stats = backend.stats().await;
        // A failed reading (its time is a timeout, not the cost of counting): again in 1 s.
        let wait = match &stats {
            Ok(_) => gauge_interval(started.elapsed()),
            Err(_) => Duration::from_secs(1),
        };
        match stats {
            Ok(stats) => {
                failing = false;
                observe::metrics::inbox_gauges(
                    stats.pending,
                    stats.scheduled,
                    stats.processing,
                    stats.dead,
                    stats.oldest_pending_age_secs.unwrap_or(0),
                );
                observe::metrics::inbox_paused(stats.paused);
            }
            Err(err) if !failing => {
                // Once per outage: the gauges keep their last values meanwhile.
                failing = true;
                tracing::warn!(target: "airmy_verify", error = %err, "cannot read the inbox stats; its gauges are stale until it answers")
            }
            Err(_) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The pause after the `n`th failed take in a row (from 1): 1 s, doubling, at most
/// [`MOST_PAUSE`]. A backend that cannot be reached is asked less and less often, yet taking
/// resumes within a few seconds of its return.
fn take_pause(n: u32) -> Duration {
    Duration::from_secs(1)
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(MOST_PAUSE)
}

/// The longest pause between two takes while the backend fails.
const MOST_PAUSE: Duration = Duration::from_secs(5);

/// How often a backend that keeps failing is logged again (after the first failure's warning).
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(30);

/// Failed takes in a row: the pause before the next ([`take_pause`]), and the log at a sane
/// rate: a warning at the first failure, another at most every [`OUTAGE_LOG_EVERY`] while it
/// lasts (with the count), and one line when taking works again.
#[derive(Default)]
struct Outage {
    failures: u32,
    since: Option<tokio::time::Instant>,
    logged: Option<tokio::time::Instant>,
}

impl Outage {
    /// A take failed: logs when due, and says how long to pause.
    fn failed(&mut self, err: &crate::InboxError) -> Duration {
        let now = tokio::time::Instant::now();
        self.failures = self.failures.saturating_add(1);
        let since = *self.since.get_or_insert(now);
        let pause = take_pause(self.failures);
        match self.logged {
            None => {
                tracing::warn!(target: "airmy_verify", error = %err, retry_in_secs = pause.as_secs_f64(), "cannot take inbox entries; trying again, less often while it fails");
                self.logged = Some(now);
            }
            Some(at) if now.duration_since(at) >= OUTAGE_LOG_EVERY => {
                tracing::warn!(target: "airmy_verify", error = %err, failures = self.failures, for_secs = now.duration_since(since).as_secs(), "still cannot take inbox entries");
                self.logged = Some(now);
            }
            Some(_) => {}
        }
        pause
    }

    /// A take worked: logs the end of an outage, if there was one.
    fn ended(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(target: "airmy_verify", failures = self.failures, for_secs = since.elapsed().as_secs(), "taking inbox entries again");
        }
        *self = Self::default();
    }
}

/// What the pool loop holds: the handlings running (by task, with their entry's id and lease
/// token, to release at shutdown) and the entries taken ahead, with when they were queued.
struct Pool<C> {
    worker: Arc<Worker<C>>,
    backend: Arc<dyn Backend>,
    slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
    running: HashMap<tokio::task::Id, (String, String)>,
    queue: VecDeque<(Leased, tokio::time::Instant)>,
}

/// Runs `worker` until `shutdown` is cancelled, then finishes or releases what is running.
pub(super) async fn run<C: AsRef<Context> + Send + 'static>(
    worker: Arc<Worker<C>>,
    shutdown: CancellationToken,
) {
    let backend = Arc::clone(&worker.backend);
    let mut pool = Pool {
        slots: Arc::new(Semaphore::new(worker.concurrency)),
        worker,
        backend,
        tasks: JoinSet::new(),
        running: HashMap::new(),
        queue: VecDeque::new(),
    };
    let mut next_purge = tokio::time::Instant::now();
    #[cfg(feature = "metrics")]
    let gauges = tokio::spawn(refresh_gauges(Arc::clone(&pool.backend), shutdown.clone()));
    let (concurrency, lease) = (pool.worker.concurrency, pool.worker.lease);
    let mut outage = Outage::default();
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        pool.reap_finished();
        if tokio::time::Instant::now() >= next_purge {
            next_purge = tokio::time::Instant::now() + Duration::from_secs(3600);
            pool.purge().await;
        }
        pool.start_queued();
        // Keep up to `concurrency` entries taken ahead, so that slots that free up start at
        // once and one `take` serves many entries. But nothing while every slot is busy and
        // the queue is empty (slow handlers: what waited was given back, for other workers,
        // on other replicas too, to take).
        let free = pool.slots.available_permits();
        let queued = pool.queue.len();
        let want = (concurrency + free).saturating_sub(queued);
        if queued > concurrency / 2 || want == 0 || (free == 0 && queued == 0) {
            if !pool.wait_then_give_back(&shutdown).await {
                break;
            }
            continue;
        }
        let leased = match pool.backend.take(want, lease).await {
            Ok(leased) => {
                outage.ended();
                leased
            }
            Err(err) => {
                let pause = outage.failed(&err);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        if !leased.is_empty() {
            let now = tokio::time::Instant::now();
            pool.queue
                .extend(leased.into_iter().map(|entry| (entry, now)));
            continue;
        }
        if !pool.queue.is_empty() {
            // Nothing more to take; the queue waits for a slot.
            if !pool.wait_then_give_back(&shutdown).await {
                break;
            }
            continue;
        }
        let wait = match pool.backend.next_due().await {
            Ok(Some(at)) => {
                let until = at - OffsetDateTime::now_utc();
                Duration::try_from(until).unwrap_or(Duration::ZERO)
            }
            _ => Duration::from_secs(1),
        }
        // Due already, yet nothing was taken: another worker took it, or this machine's clock
        // is ahead of the backend's (Redis keeps its own): a short wait, not a busy loop.
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let busy = !pool.tasks.is_empty();
        let done = tokio::select! {
            () = shutdown.cancelled() => break,
            () = pool.backend.wait(wait) => None,
            Some(done) = pool.tasks.join_next_with_id(), if busy => Some(done),
        };
        if let Some(done) = done {
            pool.reaped(done);
        }
    }
    #[cfg(feature = "metrics")]
    gauges.abort();
    pool.shut_down().await;
}

impl<C: AsRef<Context> + Send + 'static> Pool<C> {
    /// Forgets a finished handling.
    fn reaped(&mut self, done: Result<(tokio::task::Id, ()), JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => e.id(),
        };
        self.running.remove(&id);
    }

    /// Forgets every handling that has finished, without waiting.
    fn reap_finished(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.reaped(done);
        }
    }

    /// Purges processed entries past the retention.
    async fn purge(&self) {
        let before = OffsetDateTime::now_utc() - self.worker.retention;
        match self.backend.purge_done(before).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(target: "airmy_verify", purged = n, "purged processed inbox entries past their retention")
            }
            Err(err) => {
                tracing::warn!(target: "airmy_verify", error = %err, "could not purge processed inbox entries")
            }
        }
    }

    /// Starts queued entries on free slots.
    fn start_queued(&mut self) {
        while !self.queue.is_empty() {
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                break;
            };
            let Some((entry, queued_at)) = self.queue.pop_front() else {
                break;
            };
            let key = (entry.id.clone(), entry.token.clone());
            let worker = Arc::clone(&self.worker);
            let handle = self.tasks.spawn(async move {
                worker.handle(entry, queued_at, permit).await;
            });
            self.running.insert(handle.id(), key);
        }
    }

    /// Waits for a handling to finish, or for [`HOLD`] (a third of the lease if shorter), then
    /// gives back the entries that waited too long for a slot. False when `shutdown` came first.
    async fn wait_then_give_back(&mut self, shutdown: &CancellationToken) -> bool {
        let hold = HOLD.min(self.worker.lease / 3);
        let done = tokio::select! {
            () = shutdown.cancelled() => return false,
            Some(done) = self.tasks.join_next_with_id() => Some(done),
            () = tokio::time::sleep(hold) => None,
        };
        if let Some(done) = done {
            self.reaped(done);
        }
        give_back_waiting(&mut self.queue, self.backend.as_ref(), self.worker.lease).await;
        true
    }

    /// Shutdown: gives back what never started, lets running handlers finish within the
    /// deadline, then aborts and releases the rest.
    async fn shut_down(mut self) {
        // Entries taken ahead that never started go back at once.
        for (entry, _) in self.queue.drain(..) {
            let _ = self.backend.release(&entry.id, &entry.token).await;
        }
        let deadline = tokio::time::sleep(self.worker.shutdown_deadline);
        tokio::pin!(deadline);
        while !self.tasks.is_empty() {
            let done = tokio::select! {
                () = &mut deadline => break,
                Some(done) = self.tasks.join_next_with_id() => done,
            };
            self.reaped(done);
        }
        self.tasks.abort_all();
        while let Some(done) = self.tasks.join_next_with_id().await {
            // An aborted handling is released below; only finished ones are forgotten.
            if let Ok((id, ())) = done {
                self.running.remove(&id);
            }
        }
        // Bounded: a release waits for the entry's row, which a cancelled handler's transaction
        // may still hold (a statement of it blocked on a lock): past the bound, the entries
        // are taken again when their leases run out.
        let backend = &self.backend;
        let releases = self.running.into_values().map(|(id, token)| async move {
            match backend.release(&id, &token).await {
                Ok(_) => {
                    tracing::info!(target: "airmy_verify", event_id = ?id, "released an unfinished inbox entry at shutdown")
                }
                Err(err) => {
                    tracing::warn!(target: "airmy_verify", event_id = ?id, error = %err, "could not release an inbox entry at shutdown; it is taken again when its lease runs out")
                }
            }
        });
        if tokio::time::timeout(RELEASE_BOUND, futures_util::future::join_all(releases))
            .await
            .is_err()
        {
            tracing::warn!(
                target: "airmy_verify",
                bound_secs = RELEASE_BOUND.as_secs(),
                "could not release every unfinished inbox entry in time at shutdown; they are \
                 taken again when their leases run out"
            );
        }
    }
}

/// How long a shutdown waits for the releases of the entries whose handlers it cancelled.
const RELEASE_BOUND: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::take_pause;
    use std::time::Duration;

    #[test]
    fn failed_takes_back_off_to_five_seconds() {
        let pauses: Vec<u64> = (1..=6).map(|n| take_pause(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 5, 5, 5]);
        assert_eq!(take_pause(0), Duration::from_secs(1));
        assert_eq!(take_pause(u32::MAX), Duration::from_secs(5));
    }
}

#[cfg(all(test, feature = "metrics"))]
mod gauge_tests {
    use super::gauge_interval;
    use std::time::Duration;

    #[test]
    fn slow_stats_are_read_less_often() {
        assert_eq!(gauge_interval(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            gauge_interval(Duration::from_millis(30)),
            Duration::from_secs(1)
        );
        assert_eq!(
            gauge_interval(Duration::from_millis(450)),
            Duration::from_secs(9)
        );
        assert_eq!(gauge_interval(Duration::MAX), Duration::from_secs(30));
    }
}
