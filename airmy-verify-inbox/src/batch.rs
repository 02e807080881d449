//! The batching loop the Redis and PostgreSQL backends share for their commonest writes
//! (accepts and completions): whatever arrived while the previous batches ran goes out as one
//! batch, so that at low load a batch is one job and waits for nothing, and at high load one
//! round trip (and one fsync) serves many.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

/// The most jobs in one batch, and the most bytes of them as `size` counts.
const MOST: usize = 256;
const BYTES: usize = 8 << 20;

/// Runs batches of the jobs from `queue` through `run` (at most 256 jobs or 8 MiB, with
/// `in_flight` batches running at once), until every sender is dropped.
pub(crate) async fn batches<J, F, Fut>(
    mut queue: mpsc::UnboundedReceiver<J>,
    size: fn(&J) -> usize,
    in_flight: usize,
    run: F,
) where
    J: Send + 'static,
    F: Fn(Vec<J>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(in_flight));
    let mut held: Option<J> = None;
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
        let mut bytes = size(&first);
        let mut batch = vec![first];
        while batch.len() < MOST {
            match queue.try_recv() {
                Ok(job) if bytes + size(&job) > BYTES => {
                    held = Some(job);
                    break;
                }
                Ok(job) => {
                    bytes += size(&job);
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let done = run(batch);
        tokio::spawn(async move {
            done.await;
            drop(permit);
        });
    }
}
