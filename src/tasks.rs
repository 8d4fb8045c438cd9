//! The provider's long-running tasks, started and stopped one way.
//!
//! Every task that outlives a request — the ledger's rounds, the pod and key
//! watches, the Vault probe and each Vault cluster's watch, the health
//! thread — is spawned through one [`Tasks`] set and stops through its one
//! path, [`Tasks::shutdown`]: the set's cancellation token is cancelled, each
//! task is dropped at its next await point, and shutdown waits (within a
//! grace) until the tracker says every one of them is gone. A task started
//! after shutdown began is dropped at once. The same token is handed to
//! what stops on its own terms (the health thread's runtime), so nothing
//! needs a channel of its own to be told.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A set of tasks that run until they end by themselves or the set is shut
/// down. Cloning gives another handle to the same set.
#[derive(Clone, Default)]
pub struct Tasks {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    /// An empty, running set.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Runs `task` on the current runtime until it ends or the set is shut
    /// down; `name` says which in the log when it ends by itself.
    pub fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = task => tracing::debug!(task = name, "background task ended"),
                _ = cancel.cancelled() => {}
            }
        });
    }

    /// The set's cancellation token, for work that is not a task of this
    /// runtime (a thread with a runtime of its own) but must stop with it.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Whether shutdown has begun.
    pub fn is_shut_down(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Cancels every task and waits until all are gone, for at most
    /// `grace`: `false` if some were still running then (a task stuck in
    /// blocking code between two await points).
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        let ended = tokio::time::timeout(grace, self.tracker.wait()).await.is_ok();
        if !ended {
            tracing::warn!(
                running = self.tracker.len(),
                ?grace,
                "background tasks still running after the shutdown grace"
            );
        }
        ended
    }
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("running", &self.tracker.len())
            .field("shut_down", &self.cancel.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tasks_run_until_shut_down_together() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let tasks = Tasks::new();
        for _ in 0..3 {
            let ticks = ticks.clone();
            tasks.spawn("ticker", async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        tasks.spawn("short", async {});
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 6);
        assert!(tasks.shutdown(Duration::from_secs(1)).await, "every task ended");
        let after = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), after, "nothing runs after shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_started_after_shutdown_never_runs_and_the_token_tells_others() {
        let tasks = Tasks::new();
        let token = tasks.token();
        assert!(!token.is_cancelled());
        assert!(tasks.shutdown(Duration::from_secs(1)).await);
        assert!(token.is_cancelled() && tasks.is_shut_down());
        let ran = Arc::new(AtomicUsize::new(0));
        let counted = ran.clone();
        tasks.spawn("late", async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            counted.fetch_add(1, Ordering::SeqCst);
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_reports_a_task_that_does_not_let_go() {
        let tasks = Tasks::new();
        // Every task of `spawn` lets go when cancelled; one tracked without
        // that (as a task stuck in blocking code would be) outlives the
        // grace, and shutdown says so rather than wait for it.
        tasks.tracker.spawn(std::future::pending::<()>());
        assert!(!tasks.shutdown(Duration::from_millis(50)).await);
    }
}
