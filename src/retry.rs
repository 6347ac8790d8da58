//! One backoff policy for every dependency: bounded attempts, exponential backoff with
//! full jitter. Callers decide which errors are worth retrying.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng as _;

/// How many times to try and how long to wait between tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (1 means no retry).
    pub attempts: u32,
    /// The backoff ceiling for the first retry; it doubles on each further retry.
    pub base_delay: Duration,
    /// The largest backoff ceiling.
    pub max_delay: Duration,
}

/// The largest backoff ceiling of the configured policy. The attempts and the first
/// backoff have no default here: they come from `RETRY_ATTEMPTS` and
/// `RETRY_BASE_DELAY_MS` (the variable table, `config/variables.rs`).
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(20);

impl RetryPolicy {
    /// A policy that never retries (tests, one-shot tools).
    pub fn none() -> Self {
        Self { attempts: 1, base_delay: Duration::ZERO, max_delay: Duration::ZERO }
    }

    /// The wait before retry number `retry` (1-based): uniform in `[0, ceiling]` ("full
    /// jitter"), where the ceiling doubles from `base_delay` up to `max_delay`.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let ceiling =
            self.base_delay.saturating_mul(1u32 << retry.saturating_sub(1).min(20)).min(self.max_delay);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

/// Retries made during one run, every dependency together: the run creates one, each of
/// its stages adds to a clone of it, and the run summary reads it. Nothing is shared
/// between runs (or between tests).
#[derive(Debug, Clone, Default)]
pub struct RetryCount(Arc<AtomicU64>);

impl RetryCount {
    /// Counts one retry.
    pub(crate) fn add_one(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The retries counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs `op` until it succeeds, fails with an error `retriable` rejects, or the policy's
/// attempts are spent; returns the last error. Each retry is logged at warn level with
/// the error's Display, which must therefore hold no identifier or secret, and counted in
/// `retries`.
pub(crate) async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    retries: &RetryCount,
    what: &str,
    retriable: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < policy.attempts && retriable(&e) => {
                let wait = policy.backoff(attempt);
                tracing::warn!(
                    dependency = what,
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    error = %e,
                    "transient failure, retrying"
                );
                retries.add_one();
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_stays_within_the_doubling_ceiling() {
        let p = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        for _ in 0..100 {
            assert!(p.backoff(1) <= Duration::from_millis(100));
            assert!(p.backoff(2) <= Duration::from_millis(200));
            assert!(p.backoff(9) <= Duration::from_millis(350));
        }
    }

    /// Full jitter draws uniformly in `[0, ceiling]`, so one draw has no lower bound;
    /// 2,000 draws do: their largest is near the ceiling and their mean near half of it.
    /// (A uniform draw stays under 75% of the ceiling 2,000 times in a row with
    /// probability 0.75^2000, about 1e-250: these checks fail only when the rule breaks.)
    #[test]
    fn backoff_doubles_from_the_base_delay_and_is_not_zero() {
        let p = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        for (retry, ceiling) in [(1, 100u64), (2, 200), (3, 350), (9, 350)] {
            let draws: Vec<u64> = (0..2000).map(|_| p.backoff(retry).as_millis() as u64).collect();
            let max = *draws.iter().max().unwrap();
            let mean = draws.iter().sum::<u64>() as f64 / draws.len() as f64;
            assert!(max <= ceiling, "retry {retry}: {max} ms over the {ceiling} ms ceiling");
            assert!(max * 4 >= ceiling * 3, "retry {retry}: never above 75% of {ceiling} ms (max {max})");
            let half = ceiling as f64 / 2.0;
            assert!((mean - half).abs() <= half * 0.15, "retry {retry}: mean {mean} ms, not about {half}");
        }
    }

    #[test]
    fn the_policy_without_retries_tries_once() {
        // The configured defaults (4 attempts from 200 ms) are checked in
        // `config::documented_defaults_tests`.
        assert_eq!(RetryPolicy::none().attempts, 1);
    }

    #[tokio::test]
    async fn retry_returns_the_first_success_and_counts_each_retry() {
        let p = RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        let calls = AtomicU32::new(0);
        let retries = RetryCount::default();
        let r: Result<u32, String> = retry(
            &p,
            &retries,
            "t",
            |_| true,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n < 3 { Err(format!("transient {n}")) } else { Ok(n) }
            },
        )
        .await;
        assert_eq!(r, Ok(3), "the third attempt's value");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "no attempt after the success");
        assert_eq!(retries.get(), 2);
    }

    #[tokio::test]
    async fn retries_only_retriable_errors_and_stops_at_the_bound() {
        let p = RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        let calls = AtomicU32::new(0);
        // Bounded: a retry loop that never stops fails here instead of hanging.
        let r: Result<(), String> = tokio::time::timeout(
            Duration::from_secs(10),
            retry(
                &p,
                &RetryCount::default(),
                "t",
                |_| true,
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("boom".to_string())
                },
            ),
        )
        .await
        .expect("retry stopped at the bound");
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), String> = tokio::time::timeout(
            Duration::from_secs(10),
            retry(
                &p,
                &RetryCount::default(),
                "t",
                |_| false,
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("fatal".to_string())
                },
            ),
        )
        .await
        .expect("a fatal error is not retried");
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
