//! Coalescing changes per zone: one background task per zone takes every change queued
//! for that zone and hands them to the executor as one batch (one UPDATE message, one
//! PATCH); each caller gets its own result from that batch.
//!
//! It is group commit: a batch is everything that arrived while the previous batch was in
//! flight, plus a burst still arriving when it starts (the task yields until its queue has
//! not grown for [`BURST_QUIET`], at most [`BURST_SETTLE`]), plus — with a non-zero window
//! — whatever arrives during the window. An idle adapter therefore adds ~50 µs to a single
//! drain, and a burst of drains in one zone goes out in one message (two at most when it
//! straddles an UPDATE in flight). It also serialises all changes to a zone from this
//! adapter instance, so read-modify-write executors (PowerDNS `REPLACE`) never race each
//! other.
//!
//! A caller that is cancelled (its future dropped) leaves its change queued: it is still
//! applied, which is safe because every change is idempotent.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

/// The most changes handed to the executor at once.
pub const MAX_BATCH: usize = 1000;

/// With no window: the longest a batch waits for a burst that is still arriving.
pub const BURST_SETTLE: Duration = Duration::from_millis(1);

/// With no window: a burst is over once no change arrived for this long. Callers queue
/// their change a few microseconds apart; 50 µs is 5 % of the ~1 ms UPDATE round trip.
pub const BURST_QUIET: Duration = Duration::from_micros(50);

/// Runs one batch of changes for one zone; returns one result per change, in order.
pub type Executor<K, Op, Out> = Arc<dyn Fn(K, Vec<Op>) -> Pin<Box<dyn Future<Output = Vec<Out>> + Send>> + Send + Sync>;

type Queue<Op, Out> = mpsc::UnboundedSender<(Op, oneshot::Sender<Out>)>;

/// The batch task for a zone ended (it panicked): the change's outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the batch task for this zone ended before answering (the change may or may not have been applied)")]
pub struct BatchLost;

/// Per-key (zone) batching of changes.
pub struct Batcher<K, Op, Out> {
    window: Duration,
    executor: Executor<K, Op, Out>,
    queues: Mutex<HashMap<K, Queue<Op, Out>>>,
}

impl<K, Op, Out> std::fmt::Debug for Batcher<K, Op, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl<K, Op, Out> Batcher<K, Op, Out>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    Op: Send + 'static,
    Out: Send + 'static,
{
    /// A batcher that waits `window` after the first change of a batch (zero: send at
    /// once, group-commit only).
    pub fn new(window: Duration, executor: Executor<K, Op, Out>) -> Self {
        Batcher {
            window,
            executor,
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Queues `op` for `key` and waits for its result. Must run inside a tokio runtime.
    pub async fn submit(&self, key: K, op: Op) -> Result<Out, BatchLost> {
        let (tx, rx) = oneshot::channel();
        let mut item = Some((op, tx));
        for _ in 0..2 {
            let queue = self.queue(&key);
            match queue.send(item.take().expect("item present")) {
                Ok(()) => return rx.await.map_err(|_| BatchLost),
                Err(mpsc::error::SendError(back)) => {
                    // The task is gone (it panicked, or its runtime shut down): start a new one.
                    item = Some(back);
                    self.lock().remove(&key);
                }
            }
        }
        Err(BatchLost)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Queue<Op, Out>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self, key: &K) -> Queue<Op, Out> {
        let mut queues = self.lock();
        if let Some(q) = queues.get(key).filter(|q| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(key.clone(), rx, self.window, self.executor.clone()));
        queues.insert(key.clone(), tx.clone());
        tx
    }
}

async fn run<K, Op, Out>(
    key: K,
    mut rx: mpsc::UnboundedReceiver<(Op, oneshot::Sender<Out>)>,
    window: Duration,
    executor: Executor<K, Op, Out>,
) where
    K: Clone,
{
    while let Some(first) = rx.recv().await {
        if window.is_zero() {
            // Let a burst that is arriving right now join this batch: keep yielding until
            // the queue has not grown for BURST_QUIET (a lone change pays just that).
            let start = Instant::now();
            let (mut queued, mut quiet_since) = (rx.len(), start);
            loop {
                tokio::task::yield_now().await;
                let now = Instant::now();
                if rx.len() != queued {
                    (queued, quiet_since) = (rx.len(), now);
                } else if now - quiet_since >= BURST_QUIET || now - start >= BURST_SETTLE {
                    break;
                }
            }
        } else {
            tokio::time::sleep(window).await;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<Op>, Vec<oneshot::Sender<Out>>) = batch.into_iter().unzip();
        let outs = executor(key.clone(), ops).await;
        debug_assert_eq!(outs.len(), replies.len(), "one result per change");
        for (reply, out) in replies.into_iter().zip(outs) {
            let _ = reply.send(out); // the caller may have been cancelled
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn bursts_are_coalesced_and_each_caller_gets_its_result() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counter = batches.clone();
        let executor: Executor<&'static str, u32, u32> = Arc::new(move |_zone, ops: Vec<u32>| {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ops.into_iter().map(|x| x * 2).collect()
            })
        });
        let b = Arc::new(Batcher::new(Duration::ZERO, executor));
        let calls = (0..300u32).map(|i| {
            let b = b.clone();
            async move { b.submit("zone", i).await.unwrap() }
        });
        let outs = futures::future::join_all(calls).await;
        assert_eq!(outs, (0..300u32).map(|x| x * 2).collect::<Vec<_>>());
        let n = batches.load(Ordering::SeqCst);
        assert!(n <= 3, "300 concurrent changes took {n} batches");
        assert_eq!(b.submit("other", 5).await, Ok(10));
    }
}
