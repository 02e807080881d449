//! [`MemoryStore`]: claims and commits kept in this process.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::store::{
    Claim, Commit, IdempotencyStore, MAX_DURATION, StoreError, StoreErrorKind, StoreFuture,
};

/// An in-memory store for one process: bounded, with expiry, and no background thread.
///
/// Expired ids are dropped in expiry order as new claims arrive (a heap of deadlines, so each
/// claim does O(log n) work under the lock, never a scan of the whole map). When the store is
/// full of unexpired ids, the oldest committed ids are dropped before their retention ends
/// (with a warning: deduplication of those events gets shorter); only a store full of claims
/// in flight refuses a claim.
///
/// **Sizing:** ids stay for the guard's retention (by default the verifier's
/// [dedupe window](crate::dedupe_window), 660 s),
/// so a capacity of at least your peak deliveries per second × the retention keeps every id
/// for its whole window; 100,000 covers about 150 deliveries per second. Each id costs about
/// 150 bytes plus its length.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct MemoryInner {
    entries: HashMap<String, Entry>,
    /// Every deadline ever set, earliest first; stale ones are skipped when popped.
    deadlines: BinaryHeap<Reverse<(Instant, String)>>,
    /// Committed ids in commit order, to drop the oldest first when full.
    committed: VecDeque<(Instant, String)>,
    /// When the store last warned that it was full (at most one warning a minute).
    warned_full: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    token: Option<String>,
    expires: Instant,
}

impl MemoryStore {
    /// A store holding at most `capacity` ids (claimed or committed).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(MemoryInner::default()),
            capacity,
        }
    }

    /// How many ids the store holds now, expired ones included until they are dropped.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the store holds no id.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock leaves the maps consistent (every update is one call).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn claim_now(
        &self,
        id: &str,
        token: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.drop_expired(now);
        if let Some(entry) = inner.entries.get(id) {
            return Ok(match entry.token.as_deref() {
                Some(held) if held == token => Claim::Claimed,
                Some(_) => Claim::InFlight,
                None => Claim::Done,
            });
        }
        if inner.entries.len() >= self.capacity && !inner.drop_oldest_committed() {
            return Err(StoreError::new(format!(
                "the in-memory store is full ({} claims in flight)",
                self.capacity
            ))
            .with_kind(StoreErrorKind::Full));
        }
        inner.set(id, Some(token), deadline(now, lease));
        Ok(Claim::Claimed)
    }

    fn extend_now(&self, id: &str, token: &str, lease: Duration) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        let held = inner
            .entries
            .get(id)
            .is_some_and(|e| e.expires > now && e.token.as_deref() == Some(token));
        if held {
            inner.set(id, Some(token), deadline(now, lease));
        }
        held
    }

    fn commit_now(&self, id: &str, token: &str, retention: Duration) -> Commit {
        let now = Instant::now();
        let mut inner = self.lock();
        let taken = inner
            .entries
            .get(id)
            .is_some_and(|e| e.expires > now && e.token.as_deref() != Some(token));
        if taken {
            return Commit::Lost;
        }
        let expires = deadline(now, retention);
        inner.set(id, None, expires);
        inner.committed.push_back((expires, id.to_owned()));
        Commit::Committed
    }

    fn release_now(&self, id: &str, token: &str) {
        let mut inner = self.lock();
        if inner
            .entries
            .get(id)
            .is_some_and(|e| e.token.as_deref() == Some(token))
        {
            inner.entries.remove(id);
        }
    }
}

impl MemoryInner {
    fn set(&mut self, id: &str, token: Option<&str>, expires: Instant) {
        self.entries.insert(
            id.to_owned(),
            Entry {
                token: token.map(str::to_owned),
                expires,
            },
        );
        self.deadlines.push(Reverse((expires, id.to_owned())));
    }

    /// Drops the ids whose deadline passed, earliest first (amortized O(log n) per deadline).
    fn drop_expired(&mut self, now: Instant) {
        while let Some(Reverse((expires, _))) = self.deadlines.peek() {
            if *expires > now {
                break;
            }
            let Some(Reverse((expires, id))) = self.deadlines.pop() else {
                break;
            };
            // Only if this deadline is still the entry's (a later extend or commit moved it).
            if self.entries.get(&id).is_some_and(|e| e.expires == expires) {
                self.entries.remove(&id);
            }
        }
        while self
            .committed
            .front()
            .is_some_and(|(expires, _)| *expires <= now)
        {
            self.committed.pop_front();
        }
    }

    /// Drops the oldest committed id still held; `false` when there is none.
    fn drop_oldest_committed(&mut self) -> bool {
        while let Some((expires, id)) = self.committed.pop_front() {
            let current = self
                .entries
                .get(&id)
                .is_some_and(|e| e.token.is_none() && e.expires == expires);
            if current {
                self.entries.remove(&id);
                let now = Instant::now();
                if self
                    .warned_full
                    .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60))
                {
                    self.warned_full = Some(now);
                    tracing::warn!(
                        target: "airmy_verify",
                        "the in-memory idempotency store is full: dropping the oldest processed \
                         ids before their retention ends (raise its capacity)"
                    );
                }
                return true;
            }
        }
        false
    }
}

/// `now + d`, or a point about a century away when `d` is too large to add.
fn deadline(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX_DURATION))
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

impl IdempotencyStore for MemoryStore {
    fn claim<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, Claim> {
        Box::pin(std::future::ready(self.claim_now(id, token, lease)))
    }

    fn extend<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.extend_now(id, token, lease))))
    }

    fn commit<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        retention: Duration,
    ) -> StoreFuture<'a, Commit> {
        Box::pin(std::future::ready(
            Ok(self.commit_now(id, token, retention)),
        ))
    }

    fn release<'a>(&'a self, id: &'a str, token: &'a str) -> StoreFuture<'a, ()> {
        self.release_now(id, token);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;

    /// Polls a future that never waits (the memory store's are ready at once).
    fn block<T>(f: impl Future<Output = T>) -> T {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the memory store never waits"),
        }
    }

    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn claim_commit_release_follow_the_tokens() {
        let store = MemoryStore::new(10);
        assert_eq!(
            block(store.claim("e", "a", LONG)).ok(),
            Some(Claim::Claimed)
        );
        assert_eq!(
            block(store.claim("e", "b", LONG)).ok(),
            Some(Claim::InFlight)
        );
        assert_eq!(
            block(store.claim("e", "a", LONG)).ok(),
            Some(Claim::Claimed),
            "a claim is its own token's again (a retried claim whose reply was lost)"
        );
        // Another token can neither release nor commit nor extend the claim.
        block(store.release("e", "b")).expect("ok");
        assert_eq!(block(store.commit("e", "b", LONG)).ok(), Some(Commit::Lost));
        assert_eq!(block(store.extend("e", "b", LONG)).ok(), Some(false));
        assert_eq!(
            block(store.claim("e", "c", LONG)).ok(),
            Some(Claim::InFlight)
        );
        block(store.release("e", "a")).expect("ok");
        assert_eq!(
            block(store.claim("e", "d", LONG)).ok(),
            Some(Claim::Claimed)
        );
        assert_eq!(
            block(store.commit("e", "d", LONG)).ok(),
            Some(Commit::Committed)
        );
        assert_eq!(block(store.claim("e", "f", LONG)).ok(), Some(Claim::Done));
        assert_eq!(
            block(store.commit("e", "x", LONG)).ok(),
            Some(Commit::Lost),
            "a commit never overwrites another's"
        );
    }

    #[test]
    fn late_commits_are_kept_unless_another_claim_took_the_id() {
        // Generous margins: a loaded CI machine may pause a thread for tens of milliseconds.
        let (short, wait) = (Duration::from_millis(300), Duration::from_millis(450));
        let store = MemoryStore::new(10);
        assert_eq!(
            block(store.claim("e", "a", short)).ok(),
            Some(Claim::Claimed)
        );
        std::thread::sleep(wait);
        // The lease ran out and nobody claimed the id: the late commit is recorded.
        assert_eq!(
            block(store.commit("e", "a", LONG)).ok(),
            Some(Commit::Committed)
        );
        assert_eq!(block(store.claim("e", "b", LONG)).ok(), Some(Claim::Done));

        assert_eq!(
            block(store.claim("f", "a", short)).ok(),
            Some(Claim::Claimed)
        );
        std::thread::sleep(wait);
        assert_eq!(
            block(store.extend("f", "a", LONG)).ok(),
            Some(false),
            "expired"
        );
        assert_eq!(
            block(store.claim("f", "b", LONG)).ok(),
            Some(Claim::Claimed)
        );
        // Another delivery holds the id now: the late commit is reported lost, not recorded.
        assert_eq!(block(store.commit("f", "a", LONG)).ok(), Some(Commit::Lost));
        assert_eq!(
            block(store.claim("f", "c", LONG)).ok(),
            Some(Claim::InFlight)
        );
    }

    #[test]
    fn extending_keeps_a_claim_past_its_first_lease() {
        let store = MemoryStore::new(10);
        let short = Duration::from_millis(300);
        assert_eq!(
            block(store.claim("e", "a", short)).ok(),
            Some(Claim::Claimed)
        );
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(150));
            assert_eq!(block(store.extend("e", "a", short)).ok(), Some(true));
        }
        assert_eq!(
            block(store.claim("e", "b", LONG)).ok(),
            Some(Claim::InFlight)
        );
        std::thread::sleep(Duration::from_millis(450));
        assert_eq!(
            block(store.claim("e", "b", LONG)).ok(),
            Some(Claim::Claimed)
        );
    }

    #[test]
    fn expired_ids_are_dropped_in_order_without_a_scan() {
        let store = MemoryStore::new(1000);
        let short = Duration::from_millis(200);
        for i in 0..500 {
            assert_eq!(
                block(store.claim(&format!("s{i}"), "t", short)).ok(),
                Some(Claim::Claimed)
            );
        }
        for i in 0..100 {
            assert_eq!(
                block(store.claim(&format!("l{i}"), "t", LONG)).ok(),
                Some(Claim::Claimed)
            );
        }
        assert_eq!(store.len(), 600);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(
            block(store.claim("new", "t", LONG)).ok(),
            Some(Claim::Claimed)
        );
        assert_eq!(
            store.len(),
            101,
            "the 500 expired claims went on the next claim"
        );
    }

    #[test]
    fn a_full_store_drops_the_oldest_committed_ids_and_refuses_only_when_all_are_in_flight() {
        let store = MemoryStore::new(3);
        for id in ["a", "b"] {
            assert_eq!(block(store.claim(id, "t", LONG)).ok(), Some(Claim::Claimed));
            assert_eq!(
                block(store.commit(id, "t", LONG)).ok(),
                Some(Commit::Committed)
            );
        }
        assert_eq!(
            block(store.claim("c", "t", LONG)).ok(),
            Some(Claim::Claimed)
        );
        // Full: "a", the oldest committed id, makes room.
        assert_eq!(
            block(store.claim("d", "t", LONG)).ok(),
            Some(Claim::Claimed)
        );
        assert_eq!(store.len(), 3);
        assert_eq!(block(store.claim("b", "u", LONG)).ok(), Some(Claim::Done));
        assert_eq!(
            block(store.claim("e", "t", LONG)).ok(),
            Some(Claim::Claimed),
            "b made room"
        );
        // Now c, d and e are all in flight: nothing may be dropped.
        assert!(block(store.claim("f", "t", LONG)).is_err());
        assert_eq!(
            block(store.claim("c", "u", LONG)).ok(),
            Some(Claim::InFlight)
        );
    }
}
