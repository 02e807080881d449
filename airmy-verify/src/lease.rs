//! Leases kept alive while work runs: one rule for the suite.
//!
//! A lease is a claim on some work (an idempotency claim on an event id, an inbox entry taken by
//! a worker) that expires unless its holder extends it, so that work whose process died is
//! picked up again after at most one lease. While the work runs, its holder extends the lease
//! every third of it ([`keep_alive`]): two extensions may fail or be slow before the lease
//! runs out. The idempotency guard keeps its claims this way, and the inbox worker its
//! entries; both default to [`DEFAULT_LEASE`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use airmy_verify::lease;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // The work, and the store's "extend my lease" (here always granted).
//! let work = tokio::time::sleep(Duration::from_millis(10));
//! let extend = || async { Ok::<bool, std::io::Error>(true) };
//! let keep = lease::keep_alive(
//!     lease::DEFAULT_LEASE,
//!     extend,
//!     || tracing::warn!("the lease of a running handler was taken over"),
//!     |err| tracing::warn!(error = %err, "could not extend the lease of a running handler"),
//! );
//! // Kept alive for as long as the work runs; `keep_alive` never ends by itself.
//! tokio::select! {
//!     () = work => {}
//!     never = keep => match never {},
//! }
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

/// The default lease: 30 seconds. A running holder extends it every 10 s; work whose process
/// died is taken up again at most 30 s later.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Extends a lease every third of `lease` (at least every millisecond), for as long as it is
/// polled: it never ends, so run it beside the work (`select!`) and drop it when the work is
/// done.
///
/// `extend` asks the store to extend the lease to `lease` from now: `Ok(true)` when it did,
/// `Ok(false)` when the lease is no longer the caller's (it expired and someone else took it),
/// `Err` when the store could not answer. A lost lease calls `on_lost`, a failed extension
/// `on_error`, each time it happens; the caller logs them in its own words (and counts them).
/// Neither stops the loop: the work goes on, and a lease that is back in the caller's hands
/// (a store that answers again) is kept.
pub async fn keep_alive<F, Fut, E>(
    lease: Duration,
    mut extend: F,
    mut on_lost: impl FnMut(),
    mut on_error: impl FnMut(&E),
) -> Infallible
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, E>>,
{
    let every = (lease / 3).max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(every).await;
        match extend().await {
            Ok(true) => {}
            Ok(false) => on_lost(),
            Err(err) => on_error(&err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn extends_every_third_of_the_lease_and_goes_on_after_a_loss_or_an_error() {
        let start = Instant::now();
        let calls = RefCell::new(Vec::new());
        let (lost, failed) = (RefCell::new(0), RefCell::new(Vec::new()));
        let answers = RefCell::new(vec![Ok(true), Ok(false), Err("down"), Ok(true), Ok(true)]);
        let keep = keep_alive(
            Duration::from_secs(30),
            || {
                calls.borrow_mut().push(start.elapsed());
                let answer = answers.borrow_mut().remove(0);
                async move { answer }
            },
            || *lost.borrow_mut() += 1,
            |err: &&str| failed.borrow_mut().push(*err),
        );
        tokio::select! {
            never = keep => match never {},
            () = tokio::time::sleep(Duration::from_secs(55)) => {}
        }
        let secs: Vec<u64> = calls.borrow().iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [10, 20, 30, 40, 50]);
        assert_eq!(*lost.borrow(), 1);
        assert_eq!(*failed.borrow(), ["down"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_lease_does_not_spin() {
        let count = RefCell::new(0_u32);
        let keep = keep_alive(
            Duration::ZERO,
            || {
                *count.borrow_mut() += 1;
                async { Ok::<bool, ()>(true) }
            },
            || {},
            |_: &()| {},
        );
        tokio::select! {
            never = keep => match never {},
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        assert!(*count.borrow() <= 10, "{}", count.borrow());
    }
}
