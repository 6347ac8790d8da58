//! Stopping a run from outside the run loop: a signal (SIGTERM, SIGINT) or a lost lease
//! sets a [`StopToken`]; the loop checks it before each Envisionware read and each
//! Kinesis request, and an operation in flight when it is set gets at most a grace period
//! to finish ([`StopToken::bounded`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Why a run was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM (ECS stopping the task).
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// Another runner took the lease.
    LeaseLost,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
            Self::LeaseLost => "lost lease",
        })
    }
}

/// A shared, cloneable request to stop; the first reason set wins.
#[derive(Debug, Clone)]
pub struct StopToken {
    tx: Arc<watch::Sender<Option<StopReason>>>,
    /// How long an operation already in flight may still take once a stop is requested.
    pub grace: Duration,
}

impl StopToken {
    /// A token nobody has set, with the given grace period (a run's is `STOP_TIMEOUT_SECONDS`).
    pub(crate) fn with_grace(grace: Duration) -> Self {
        Self { tx: Arc::new(watch::Sender::new(None)), grace }
    }

    /// Asks the run to stop (a later reason does not replace the first).
    pub(crate) fn request(&self, reason: StopReason) {
        self.tx.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// The reason, once a stop was requested.
    pub(crate) fn reason(&self) -> Option<StopReason> {
        *self.tx.borrow()
    }

    /// Resolves once a stop is requested.
    pub(crate) async fn stopped(&self) -> StopReason {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(r) = *rx.borrow_and_update() {
                return r;
            }
            // The sender lives in `self`, so `changed` cannot fail while we wait.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Runs `op` to completion, unless a stop is requested and `op` then takes longer than
    /// the grace period: `None` (the operation is dropped).
    pub(crate) async fn bounded<T>(&self, op: impl Future<Output = T>) -> Option<T> {
        let deadline = async {
            self.stopped().await;
            tokio::time::sleep(self.grace).await;
        };
        tokio::select! {
            out = op => Some(out),
            () = deadline => None,
        }
    }

    /// Sets the token on SIGTERM or SIGINT (in a background task).
    pub(crate) fn listen_for_signals(&self) {
        let token = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let (mut term, mut int) =
                    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                        (Ok(t), Ok(i)) => (t, i),
                        _ => {
                            tracing::warn!("cannot listen for SIGTERM/SIGINT; a signal will kill the run");
                            return;
                        }
                    };
                let reason = tokio::select! {
                    _ = term.recv() => StopReason::Terminate,
                    _ = int.recv() => StopReason::Interrupt,
                };
                // An expected stop (ECS sends SIGTERM on every deployment): not a warning.
                tracing::info!(signal = %reason, grace_seconds = token.grace.as_secs_f64(), "stopping: finishing the request in flight, then saving the cursor");
                token.request(reason);
            }
            #[cfg(not(unix))]
            {
                if tokio::signal::ctrl_c().await.is_ok() {
                    token.request(StopReason::Interrupt);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins() {
        let t = StopToken::with_grace(Duration::from_secs(20));
        assert_eq!(t.reason(), None);
        t.request(StopReason::Terminate);
        t.request(StopReason::LeaseLost);
        assert_eq!(t.reason(), Some(StopReason::Terminate));
        assert_eq!(t.stopped().await, StopReason::Terminate);
    }

    #[tokio::test]
    async fn an_operation_finishes_when_no_stop_is_requested() {
        let t = StopToken::with_grace(Duration::ZERO);
        assert_eq!(t.bounded(async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn an_operation_that_outlives_the_grace_period_is_dropped() {
        let t = StopToken::with_grace(Duration::ZERO);
        t.request(StopReason::Interrupt);
        assert_eq!(t.bounded(std::future::pending::<u8>()).await, None);
    }
}
