//! Batching of the two commonest writes, accepts and completions: one script per batch.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use airmy_verify::redis_connection::RedisConnection;

use super::redis_error;
use crate::backend::InboxError;
use crate::batch::{Measured, Queued};

/// The two commonest writes, accepts and completions, each go to a task of their own that
/// sends whatever arrived while its previous script ran as one script: one round trip (and one
/// Lua call) per batch, not per entry, and at low load no wait at all.
#[derive(Clone)]
pub(super) struct Batches {
    pub(super) accepts: mpsc::UnboundedSender<Queued<Job>>,
    pub(super) completions: mpsc::UnboundedSender<Queued<Job>>,
}

/// One accept or completion waiting for its batch; the answer is the script's code for it.
pub(super) enum Job {
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

pub(super) fn shutting_down() -> InboxError {
    InboxError::unavailable("the inbox is shutting down")
}

/// Runs `script` on batches of jobs (at most 256, or 8 MiB of arguments; two in flight: the
/// next ones gather while the previous replies, and Redis's fsync, which Redis shares between
/// the scripts of one event loop turn, are on their way), until every backend clone is
/// dropped. `lead` are the arguments before the jobs'. With `replicas` (how many, and how
/// long to wait for them), a batch is answered only once that many replicas hold it
/// ([`run_and_wait`]).
pub(super) async fn run_batches(
    connection: RedisConnection,
    script: redis::Script,
    keys: [String; 7],
    lead: Vec<String>,
    replicas: Option<(u32, Duration)>,
    measured: Measured,
    queue: mpsc::UnboundedReceiver<Queued<Job>>,
) {
    const IN_FLIGHT: usize = 2;
    let (script, keys, lead) = (Arc::new(script), Arc::new(keys), Arc::new(lead));
    crate::batch::batches(
        queue,
        measured,
        Job::size,
        IN_FLIGHT,
        move |batch: Vec<Job>| {
            let (script, keys, lead) = (Arc::clone(&script), Arc::clone(&keys), Arc::clone(&lead));
            let mut connection = connection.clone();
            async move {
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
                let result = match replicas {
                    Some((wanted, timeout)) => {
                        run_and_wait(&mut connection, &invocation, wanted, timeout).await
                    }
                    None => invocation
                        .invoke_async(&mut connection)
                        .await
                        .map_err(redis_error),
                };
                for (i, job) in batch.into_iter().enumerate() {
                    job.reply(match &result {
                        Ok(codes) => codes
                            .get(i)
                            .copied()
                            .ok_or_else(|| InboxError::unavailable("Redis: a short reply")),
                        Err(err) => Err(err.clone()),
                    });
                }
            }
        },
    )
    .await;
}

/// The script, then Redis `WAIT wanted timeout`, in one pipeline: both on the one connection to
/// the node that runs the script, so the `WAIT` counts the replicas holding everything that
/// connection wrote up to the script (a `WAIT` sent apart could land on a new connection,
/// after a reconnect or a failover, which has written nothing and so is held by every
/// replica). Fewer replicas than `wanted`: [`ErrorKind::Unavailable`](crate::ErrorKind). A node
/// that does not know the script (a promoted replica: Redis does not replicate `SCRIPT LOAD`)
/// gets it loaded, and the pipeline is sent again, once.
async fn run_and_wait(
    connection: &mut RedisConnection,
    invocation: &redis::ScriptInvocation<'_>,
    wanted: u32,
    timeout: Duration,
) -> Result<Vec<i64>, InboxError> {
    let ms = u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut pipeline = redis::pipe();
    pipeline
        .invoke_script(invocation)
        .cmd("WAIT")
        .arg(wanted)
        .arg(ms);
    let mut sent = pipeline.query_async::<(Vec<i64>, u64)>(connection).await;
    if matches!(&sent, Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
    {
        invocation
            .load_async(connection)
            .await
            .map_err(redis_error)?;
        sent = pipeline.query_async(connection).await;
    }
    let (codes, held) = sent.map_err(redis_error)?;
    if held < u64::from(wanted) {
        return Err(InboxError::unavailable(format!(
            "Redis: {held} of {wanted} replicas hold the accept after {timeout:?}"
        )));
    }
    Ok(codes)
}
