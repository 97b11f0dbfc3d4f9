//! Supervision of the engine's long-lived tasks (routes, heartbeats, persists, locks, broker
//! requests, the rebalancer).
//!
//! Each of them runs until the consumer is cancelled. One that ends before that, by a panic
//! (a bug) or by returning, leaves the subscription quietly broken: without heartbeats the
//! brokers drop the member, without the rebalancer no queue is ever taken again. Nothing inside
//! the engine can repair that, so the end is recorded as the consumer's [`Failure`]: the daemon
//! answers liveness probes with it and exits non-zero so that the process is restarted.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::error;

/// The first engine task that ended while the consumer was meant to run, and why.
#[derive(Debug, Default)]
pub(crate) struct Failure {
    reason: OnceLock<String>,
    recorded: CancellationToken,
}

impl Failure {
    /// Keeps the first reason only: what broke first is the cause, later ends are mostly its
    /// consequences.
    fn record(&self, reason: String) {
        if self.reason.set(reason).is_ok() {
            self.recorded.cancel();
        }
    }

    /// Why the consumer broke, if it did.
    pub(crate) fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    /// Waits until a failure is recorded, then returns its reason.
    pub(crate) async fn wait(&self) -> &str {
        self.recorded.cancelled().await;
        self.reason().unwrap_or_default()
    }
}

/// Runs a consumer's tasks, recording the first that fails in its [`Failure`].
#[derive(Debug, Clone)]
pub(crate) struct Supervisor {
    group: String,
    failure: Arc<Failure>,
    cancel: CancellationToken,
}

impl Supervisor {
    /// For the consumer of `group`, whose tasks end normally once `cancel` fires.
    pub(crate) fn new(group: String, cancel: CancellationToken) -> Self {
        Self {
            group,
            failure: Arc::default(),
            cancel,
        }
    }

    /// Where failures are recorded.
    pub(crate) fn failure(&self) -> Arc<Failure> {
        Arc::clone(&self.failure)
    }

    /// Spawns `task` into `set`, supervised as [`Supervisor::run`] does.
    pub(crate) fn spawn(
        &self,
        set: &mut JoinSet<()>,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        set.spawn(self.run(name, task).map(drop));
    }

    /// `task` (the `name`d engine task), recording a panic at any time, or a return before the
    /// cancel; a return after it is the task's normal end. The output is `None` when the task
    /// panicked.
    pub(crate) fn run<T>(
        &self,
        name: &'static str,
        task: impl Future<Output = T>,
    ) -> impl Future<Output = Option<T>> {
        let this = self.clone();
        async move {
            let (output, reason) = match AssertUnwindSafe(task).catch_unwind().await {
                Ok(output) if this.cancel.is_cancelled() => return Some(output),
                Ok(output) => (Some(output), format!("the {name} task ended on its own")),
                Err(payload) => (
                    None,
                    format!("the {name} task panicked: {}", panic_message(&*payload)),
                ),
            };
            error!(group = %this.group, task = name, reason = %reason, "Consumer task failed; the subscription cannot go on.");
            this.failure.record(reason);
            output
        }
    }
}

/// The message of a panic's payload (`panic!` with a literal gives `&str`, with arguments
/// `String`).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor() -> (Supervisor, CancellationToken) {
        let cancel = CancellationToken::new();
        (Supervisor::new("g".into(), cancel.clone()), cancel)
    }

    #[tokio::test]
    async fn a_panic_is_recorded_with_its_message() {
        let (supervisor, _cancel) = supervisor();
        let n = 7;
        let out = supervisor
            .run("heartbeat", async move {
                if n == 7 {
                    panic!("queue {n} exploded");
                }
            })
            .await;
        assert_eq!(out, None);
        let failure = supervisor.failure();
        assert_eq!(
            failure.reason(),
            Some("the heartbeat task panicked: queue 7 exploded")
        );
        assert_eq!(failure.wait().await, failure.reason().unwrap());
    }

    #[tokio::test]
    async fn a_return_before_the_cancel_is_a_failure_and_after_it_is_not() {
        let (supervisor, _cancel) = supervisor();
        assert_eq!(supervisor.run("route", async { 1 }).await, Some(1));
        assert_eq!(
            supervisor.failure().reason(),
            Some("the route task ended on its own")
        );

        let (supervisor, cancel) = self::supervisor();
        cancel.cancel();
        assert_eq!(supervisor.run("route", async { 2 }).await, Some(2));
        assert_eq!(supervisor.failure().reason(), None);
    }

    #[tokio::test]
    async fn the_first_failure_is_kept() {
        let (supervisor, _cancel) = supervisor();
        supervisor.run("persist", async {}).await;
        supervisor.run("lock", async {}).await;
        assert_eq!(
            supervisor.failure().reason(),
            Some("the persist task ended on its own")
        );
    }

    #[tokio::test]
    async fn a_panic_after_the_cancel_is_still_a_failure() {
        let (supervisor, cancel) = supervisor();
        cancel.cancel();
        let out = supervisor
            .run("rebalancer", async { panic!("while draining") })
            .await;
        assert_eq!(out, None::<()>);
        assert_eq!(
            supervisor.failure().reason(),
            Some("the rebalancer task panicked: while draining")
        );
    }
}
