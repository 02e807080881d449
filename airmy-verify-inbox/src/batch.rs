//! The batching loop the Redis and PostgreSQL backends share for their commonest writes
//! (accepts and completions): whatever arrived while the previous batches ran goes out as one
//! batch, so that at low load a batch is one job and waits for nothing, and at high load one
//! round trip (and one fsync) serves many.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use airmy_verify::observe::metrics::{self, AcceptStage};
use tokio::sync::{Semaphore, mpsc};

/// A job and when it was handed to its batcher.
pub(crate) struct Queued<J> {
    job: J,
    at: Instant,
}

impl<J> Queued<J> {
    /// `job`, handed over now.
    pub(crate) fn new(job: J) -> Self {
        Self {
            job,
            at: Instant::now(),
        }
    }
}

/// What a batcher's jobs are, for the accept metrics: accepts of `backend` (their stages
/// recorded in `airmy_webhook_inbox_accept_seconds`), or another write (not recorded).
#[derive(Clone, Copy)]
pub(crate) enum Measured {
    Accepts(&'static str),
    Other,
}

/// The most jobs in one batch, and the most bytes of them as `size` counts.
const MOST: usize = 256;
const BYTES: usize = 8 << 20;

/// Runs batches of the jobs from `queue` through `run` (at most 256 jobs or 8 MiB, with
/// `in_flight` batches running at once), until every sender is dropped. For accepts, each
/// job's wait for its batch (`queue`) and its batch's time (`batch`) are recorded, and each
/// batch's size.
pub(crate) async fn batches<J, F, Fut>(
    mut queue: mpsc::UnboundedReceiver<Queued<J>>,
    measured: Measured,
    size: fn(&J) -> usize,
    in_flight: usize,
    run: F,
) where
    J: Send + 'static,
    F: Fn(Vec<J>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(in_flight));
    let mut held: Option<Queued<J>> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match queue.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let started = Instant::now();
        let record = |queued: &Queued<J>| {
            if let Measured::Accepts(backend) = measured {
                let waited = started.saturating_duration_since(queued.at);
                metrics::inbox_accept_stage(backend, AcceptStage::Queue, waited.as_secs_f64());
            }
        };
        record(&first);
        let mut bytes = size(&first.job);
        let mut batch = vec![first.job];
        while batch.len() < MOST {
            match queue.try_recv() {
                Ok(queued) if bytes + size(&queued.job) > BYTES => {
                    held = Some(queued);
                    break;
                }
                Ok(queued) => {
                    record(&queued);
                    bytes += size(&queued.job);
                    batch.push(queued.job);
                }
                Err(_) => break,
            }
        }
        let count = batch.len();
        let done = run(batch);
        tokio::spawn(async move {
            done.await;
            drop(permit);
            if let Measured::Accepts(backend) = measured {
                let took = started.elapsed().as_secs_f64();
                metrics::inbox_accept_batch(backend, count);
                for _ in 0..count {
                    metrics::inbox_accept_stage(backend, AcceptStage::Batch, took);
                }
            }
        });
    }
}
