//! One runner at a time: a lease object in S3 next to the cursor.
//!
//! The lease is a small JSON object `{"owner": ..., "acquired_at": ..., "expires_at": ...}`
//! (RFC 3339 UTC times). A runner
//!
//! - creates it with `If-None-Match: *` (only one creator can win);
//! - takes over a lease whose `expires_at` has passed (or that is not a lease at all) with
//!   `If-Match` on the ETag it read, so two runners racing for an expired lease cannot both win;
//! - renews it in the background with `If-Match` on the ETag of its own last write, every
//!   third of the lease's time to live; a failed precondition means another runner took it,
//!   and the run stops before its next send ([`crate::stop::StopReason::LeaseLost`]);
//! - deletes it at exit with `If-Match` (so it never deletes a lease someone else took).
//!
//! It never reads a missing object: it creates first and reads only after a failed
//! precondition. To a role without `s3:ListBucket` (the poller's task role has none), S3
//! answers a GET of a missing key with 403, not 404
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html>), and every clean
//! exit deletes the lease. A write whose answer was lost after S3 committed it (a 500 or a
//! timeout, then the SDK's retry of the same conditional request fails its precondition)
//! is recognised by reading the object back: this runner's own owner is adopted with the
//! object's ETag, never reported as another runner.
//!
//! The S3 calls sit behind [`LeaseStore`] so the rules are unit-tested with an in-memory
//! store; [`S3LeaseStore`] is the real one (checked against moto 5.2.5, which honours
//! `If-None-Match: *` and `If-Match` on `PutObject` and `If-Match` on `DeleteObject`).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;

use crate::stop::{StopReason, StopToken};

mod s3;

pub(crate) use s3::S3LeaseStore;

/// The lease object's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    /// Who holds it: host, process id and a random suffix.
    pub owner: String,
    /// When this owner first took it.
    pub acquired_at: DateTime<Utc>,
    /// When it lapses unless renewed.
    pub expires_at: DateTime<Utc>,
}

impl LeaseRecord {
    /// The JSON body (times in RFC 3339, UTC, seconds).
    pub(crate) fn to_json(&self) -> String {
        serde_json::json!({
            "owner": self.owner,
            "acquired_at": self.acquired_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            "expires_at": self.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        })
        .to_string()
    }

    /// Parses a body; `None` when it is not a lease (it may then be taken over).
    pub(crate) fn from_json(body: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Text {
            owner: String,
            acquired_at: String,
            expires_at: String,
        }
        let text: Text = serde_json::from_slice(body).ok()?;
        let time = |t: &str| DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&Utc));
        Some(Self {
            owner: text.owner,
            acquired_at: time(&text.acquired_at)?,
            expires_at: time(&text.expires_at)?,
        })
    }
}

/// A lease-store failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    /// Another runner holds the lease.
    #[error(
        "another runner holds the lease s3://{location} (owner {owner}, until {expires_at}); this run sent nothing"
    )]
    Held {
        /// `bucket/key` of the lease object.
        location: String,
        /// The holder.
        owner: String,
        /// Its expiry (RFC 3339).
        expires_at: String,
    },
    /// S3 could not be reached or refused the request.
    #[error("lease: s3://{location}: {message}")]
    S3 {
        /// `bucket/key` of the lease object.
        location: String,
        /// What S3 said.
        message: String,
    },
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Written {
    /// Written; the object's new ETag.
    Ok(String),
    /// The precondition failed (someone else wrote or deleted it).
    PreconditionFailed,
}

/// The outcome of a conditional delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Deleted {
    /// Deleted.
    Ok,
    /// There was no object (404): deleted already, by this process's own earlier attempt
    /// whose answer was lost, or by someone else.
    Gone,
    /// The object has another ETag (412/409): someone else wrote it.
    Changed,
}

/// The conditional S3 operations a lease needs (a trait so the rules can be tested with a
/// fake).
pub(crate) trait LeaseStore: Send + Sync + 'static {
    /// `bucket/key`, for messages.
    fn location(&self) -> String;
    /// The object's body and ETag, or `None` when it does not exist.
    fn read(&self) -> impl Future<Output = Result<Option<(Vec<u8>, String)>, LeaseError>> + Send;
    /// Creates the object only if it does not exist (`If-None-Match: *`).
    fn create(&self, body: String) -> impl Future<Output = Result<Written, LeaseError>> + Send;
    /// Replaces the object only if its ETag is still `etag` (`If-Match`).
    fn replace(&self, etag: &str, body: String) -> impl Future<Output = Result<Written, LeaseError>> + Send;
    /// Deletes the object only if its ETag is still `etag` (`If-Match`).
    fn delete(&self, etag: &str) -> impl Future<Output = Result<Deleted, LeaseError>> + Send;
}

/// A lease this process holds.
#[derive(Debug)]
pub(crate) struct Lease<S: LeaseStore> {
    store: Arc<S>,
    owner: String,
    ttl: Duration,
    state: Arc<Mutex<Held>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, Clone)]
struct Held {
    etag: String,
    record: LeaseRecord,
    lost: bool,
}

/// Rounds of create-or-read-then-take-over before [`Lease::acquire`] gives up.
const ACQUIRE_ATTEMPTS: u32 = 3;

/// Conditional writes a renewal or release tries before giving up for this round.
const WRITE_ATTEMPTS: u32 = 3;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn chrono_ttl(ttl: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(ttl).unwrap_or(chrono::TimeDelta::MAX)
}

/// A name for this process: host, pid and a random suffix (no identifier of anyone).
pub(crate) fn owner_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let suffix: u32 = rand::random();
    format!("{host}/{}/{suffix:08x}", std::process::id())
}

impl<S: LeaseStore> Lease<S> {
    /// Takes the lease for `owner` at `now`, or fails with [`LeaseError::Held`].
    ///
    /// It creates the object first (`If-None-Match: *`) and reads it only after that
    /// failed, i.e. when it exists: a role without `s3:ListBucket` gets 403, not "absent",
    /// for a missing object, and a clean exit deletes the lease, so reading first would
    /// fail every run. An object found holding `owner` is this process's own creation or
    /// takeover whose answer was lost (the SDK's retry then failed its precondition): it is
    /// adopted, never reported as another runner.
    pub(crate) async fn acquire(
        store: S,
        owner: String,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Self, LeaseError> {
        let record =
            LeaseRecord { owner: owner.clone(), acquired_at: now, expires_at: now + chrono_ttl(ttl) };
        let mut last_holder = None;
        for attempt in 1..=ACQUIRE_ATTEMPTS {
            if let Written::Ok(etag) = store.create(record.to_json()).await? {
                return Ok(Self::holding(store, owner, ttl, etag, record));
            }
            // It exists (or did a moment ago): read who holds it.
            let (body, etag) = match store.read().await {
                Ok(Some(found)) => found,
                // Deleted since: create again.
                Ok(None) => continue,
                // A lease deleted since reads as 403 without s3:ListBucket: try again, and
                // report the error only if it persists.
                Err(e) if attempt == ACQUIRE_ATTEMPTS => return Err(e),
                Err(_) => continue,
            };
            let written = match LeaseRecord::from_json(&body) {
                Some(current) if current.owner == owner => {
                    tracing::debug!(
                        "the lease already holds this runner (a lost answer was retried); adopting it"
                    );
                    return Ok(Self::holding(store, owner, ttl, etag, current));
                }
                Some(current) if current.expires_at > now => return Err(held(&store, &current)),
                Some(current) => {
                    tracing::warn!(
                        previous_owner = %current.owner,
                        expired = %current.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                        "taking over an expired lease"
                    );
                    last_holder = Some(current);
                    store.replace(&etag, record.to_json()).await?
                }
                None => {
                    tracing::warn!(location = %store.location(), "the lease object is not a lease; replacing it");
                    store.replace(&etag, record.to_json()).await?
                }
            };
            match written {
                Written::Ok(etag) => return Ok(Self::holding(store, owner, ttl, etag, record)),
                // Someone else took it meanwhile, or this takeover's answer was lost: the
                // next round reads which.
                Written::PreconditionFailed => {}
            }
        }
        Err(match last_holder {
            Some(h) => held(&store, &h),
            None => LeaseError::Held {
                location: store.location(),
                owner: "unknown".into(),
                expires_at: "unknown".into(),
            },
        })
    }

    fn holding(store: S, owner: String, ttl: Duration, etag: String, record: LeaseRecord) -> Self {
        Self {
            store: Arc::new(store),
            owner,
            ttl,
            state: Arc::new(Mutex::new(Held { etag, record, lost: false })),
            renewer: None,
        }
    }

    /// The lease's current record.
    pub(crate) fn record(&self) -> LeaseRecord {
        lock(&self.state).record.clone()
    }

    /// Whether a renewal found the lease taken by another runner.
    #[cfg(test)]
    pub(crate) fn is_lost(&self) -> bool {
        lock(&self.state).lost
    }

    /// Renews once at `now`. Returns false when the lease was lost (another runner took
    /// it, or it lapsed before a renewal succeeded).
    #[cfg(test)]
    pub(crate) async fn renew(&self, now: DateTime<Utc>) -> Result<bool, LeaseError> {
        renew_once(&*self.store, &self.state, self.ttl, now).await
    }

    /// Starts renewing every third of the time to live; when the lease is lost, `stop` is
    /// told ([`StopReason::LeaseLost`]) so the run stops before its next send.
    pub(crate) fn keep_renewed(&mut self, stop: StopToken) {
        let store = Arc::clone(&self.store);
        let state = Arc::clone(&self.state);
        let ttl = self.ttl;
        let period = (ttl / 3).max(Duration::from_millis(100));
        self.renewer = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match renew_once(&*store, &state, ttl, Utc::now()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(location = %store.location(), "the lease was lost; stopping before the next send");
                        stop.request(StopReason::LeaseLost);
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "lease renewal failed; trying again"),
                }
            }
        }));
    }

    /// Stops renewing and deletes the lease if it is still ours.
    pub(crate) async fn release(mut self) {
        if let Some(task) = self.renewer.take() {
            task.abort();
            let _ = task.await;
        }
        let held = lock(&self.state).clone();
        if held.lost {
            return;
        }
        let mut etag = held.etag;
        for _ in 0..WRITE_ATTEMPTS {
            match self.store.delete(&etag).await {
                Ok(Deleted::Ok) => {
                    tracing::debug!(owner = %self.owner, "lease released");
                    return;
                }
                // A 404 after our own delete was retried is our release, already done.
                Ok(Deleted::Gone) => {
                    tracing::debug!(owner = %self.owner, "lease released (it was already gone)");
                    return;
                }
                Ok(Deleted::Changed) => match self.store.read().await {
                    // Our own renewal committed with its answer lost: delete that version.
                    Ok(Some((body, current)))
                        if LeaseRecord::from_json(&body).is_some_and(|r| r.owner == self.owner) =>
                    {
                        etag = current;
                    }
                    Ok(None) => return,
                    Ok(Some(_)) => {
                        tracing::warn!("the lease had been taken by another runner at release");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not release the lease; it lapses by itself");
                        return;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "could not release the lease; it lapses by itself");
                    return;
                }
            }
        }
        tracing::warn!("could not release the lease; it lapses by itself");
    }
}

fn held<S: LeaseStore>(store: &S, current: &LeaseRecord) -> LeaseError {
    LeaseError::Held {
        location: store.location(),
        owner: current.owner.clone(),
        expires_at: current.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    }
}

async fn renew_once<S: LeaseStore>(
    store: &S,
    state: &Mutex<Held>,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<bool, LeaseError> {
    let held = lock(state).clone();
    if held.lost {
        return Ok(false);
    }
    if held.record.expires_at <= now {
        // It lapsed before we renewed it: someone may have taken it in between.
        lock(state).lost = true;
        return Ok(false);
    }
    let record = LeaseRecord { expires_at: now + chrono_ttl(ttl), ..held.record.clone() };
    let body = record.to_json();
    let mut etag = held.etag;
    for _ in 0..WRITE_ATTEMPTS {
        match store.replace(&etag, body.clone()).await? {
            Written::Ok(new_etag) => {
                *lock(state) = Held { etag: new_etag, record, lost: false };
                return Ok(true);
            }
            // Another runner wrote it, or this renewal (or an earlier one) committed and its
            // answer was lost: the object says which.
            Written::PreconditionFailed => match store.read().await? {
                Some((current_body, current)) if current_body == body.as_bytes() => {
                    *lock(state) = Held { etag: current, record, lost: false };
                    return Ok(true);
                }
                Some((current_body, current))
                    if LeaseRecord::from_json(&current_body).is_some_and(|r| r.owner == record.owner) =>
                {
                    etag = current;
                }
                _ => {
                    lock(state).lost = true;
                    return Ok(false);
                }
            },
        }
    }
    Err(LeaseError::S3 {
        location: store.location(),
        message: format!(
            "the renewal's precondition failed {WRITE_ATTEMPTS} times on this runner's own lease"
        ),
    })
}

#[cfg(test)]
mod renewal_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::MemoryLeaseStore;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const TTL: Duration = Duration::from_secs(120);

    #[tokio::test]
    async fn the_first_runner_creates_the_lease_and_a_second_is_refused() {
        let store = MemoryLeaseStore::default();
        let a = Lease::acquire(store.clone(), "a".into(), TTL, t("2026-01-01T00:00:00Z")).await.unwrap();
        assert_eq!(a.record().expires_at, t("2026-01-01T00:02:00Z"));
        let err =
            Lease::acquire(store.clone(), "b".into(), TTL, t("2026-01-01T00:01:00Z")).await.unwrap_err();
        match err {
            LeaseError::Held { owner, expires_at, .. } => {
                assert_eq!(owner, "a");
                assert_eq!(expires_at, "2026-01-01T00:02:00Z");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_its_old_holder_finds_it_lost() {
        let store = MemoryLeaseStore::default();
        let a = Lease::acquire(store.clone(), "a".into(), TTL, t("2026-01-01T00:00:00Z")).await.unwrap();
        let b = Lease::acquire(store.clone(), "b".into(), TTL, t("2026-01-01T00:05:00Z")).await.unwrap();
        assert_eq!(b.record().owner, "b");
        // a wakes up late: its lease lapsed, so it is lost without writing anything.
        assert!(!a.renew(t("2026-01-01T00:05:01Z")).await.unwrap());
        assert!(a.is_lost());
        assert!(store.body().unwrap().contains("\"b\""));
        // a's release does not delete b's lease.
        a.release().await;
        assert!(store.body().is_some());
        assert!(b.renew(t("2026-01-01T00:06:00Z")).await.unwrap());
    }

    #[tokio::test]
    async fn a_renewal_after_someone_else_wrote_the_lease_reports_it_lost() {
        let store = MemoryLeaseStore::default();
        let a = Lease::acquire(store.clone(), "a".into(), TTL, t("2026-01-01T00:00:00Z")).await.unwrap();
        assert!(a.renew(t("2026-01-01T00:00:40Z")).await.unwrap());
        assert_eq!(a.record().expires_at, t("2026-01-01T00:02:40Z"));
        store.force(
            &LeaseRecord {
                owner: "intruder".into(),
                acquired_at: t("2026-01-01T00:01:00Z"),
                expires_at: t("2026-01-01T00:03:00Z"),
            }
            .to_json(),
        );
        assert!(!a.renew(t("2026-01-01T00:01:20Z")).await.unwrap());
        assert!(a.is_lost());
    }

    #[tokio::test]
    async fn release_deletes_the_lease_so_the_next_runner_can_start_at_once() {
        let store = MemoryLeaseStore::default();
        let a = Lease::acquire(store.clone(), "a".into(), TTL, t("2026-01-01T00:00:00Z")).await.unwrap();
        a.release().await;
        assert!(store.body().is_none());
        Lease::acquire(store.clone(), "b".into(), TTL, t("2026-01-01T00:00:01Z")).await.unwrap();
    }

    #[tokio::test]
    async fn garbage_in_the_lease_object_is_replaced() {
        let store = MemoryLeaseStore::default();
        store.force("not json");
        let a = Lease::acquire(store.clone(), "a".into(), TTL, t("2026-01-01T00:00:00Z")).await.unwrap();
        assert_eq!(a.record().owner, "a");
        assert_eq!(LeaseRecord::from_json(store.body().unwrap().as_bytes()).unwrap(), a.record());
    }

    #[tokio::test]
    async fn the_background_renewer_stops_the_run_when_the_lease_is_taken() {
        let store = MemoryLeaseStore::default();
        let mut a =
            Lease::acquire(store.clone(), "a".into(), Duration::from_millis(600), Utc::now()).await.unwrap();
        let stop = StopToken::with_grace(Duration::from_secs(20));
        a.keep_renewed(stop.clone());
        store.force("{\"owner\":\"b\",\"acquired_at\":\"2026-01-01T00:00:00Z\",\"expires_at\":\"2099-01-01T00:00:00Z\"}");
        // Bounded: a renewer that never notices fails here instead of hanging.
        tokio::time::timeout(Duration::from_secs(10), stop.stopped()).await.expect("the renewer noticed");
        assert_eq!(stop.reason(), Some(StopReason::LeaseLost));
        a.release().await;
        assert!(store.body().unwrap().contains("\"b\""), "the other runner's lease stays");
    }

    #[tokio::test]
    async fn no_run_reads_a_missing_lease_object() {
        let store = MemoryLeaseStore::default();
        for owner in ["a", "b", "c"] {
            let lease =
                Lease::acquire(store.clone(), owner.into(), TTL, t("2026-01-01T00:00:00Z")).await.unwrap();
            assert!(lease.renew(t("2026-01-01T00:00:40Z")).await.unwrap());
            lease.release().await;
            assert!(store.body().is_none());
        }
        assert_eq!(store.missing_reads(), 0);
    }

    #[tokio::test]
    async fn a_lost_answer_to_the_creation_is_adopted_not_reported_as_another_runner() {
        let store = MemoryLeaseStore::default();
        store.lose_answers(1);
        let a = Lease::acquire(store.clone(), "a".into(), TTL, t("2026-01-01T00:00:00Z")).await.unwrap();
        assert_eq!(a.record().owner, "a");
        assert!(a.renew(t("2026-01-01T00:00:40Z")).await.unwrap(), "the adopted ETag is the object's");
        a.release().await;
        assert!(store.body().is_none());
    }

    #[tokio::test]
    async fn a_lost_answer_to_a_takeover_is_adopted() {
        let store = MemoryLeaseStore::default();
        store.force(
            &LeaseRecord {
                owner: "old".into(),
                acquired_at: t("2025-12-31T00:00:00Z"),
                expires_at: t("2025-12-31T00:02:00Z"),
            }
            .to_json(),
        );
        store.lose_answers(1);
        let a = Lease::acquire(store.clone(), "a".into(), TTL, t("2026-01-01T00:00:00Z")).await.unwrap();
        assert_eq!(a.record().owner, "a");
        assert!(store.body().unwrap().contains("\"a\""));
    }

    #[tokio::test]
    async fn a_lost_answer_to_a_renewal_keeps_the_lease() {
        let store = MemoryLeaseStore::default();
        let a = Lease::acquire(store.clone(), "a".into(), TTL, t("2026-01-01T00:00:00Z")).await.unwrap();
        store.lose_answers(1);
        assert!(a.renew(t("2026-01-01T00:00:40Z")).await.unwrap());
        assert!(!a.is_lost());
        assert_eq!(a.record().expires_at, t("2026-01-01T00:02:40Z"));
        // The next renewal's If-Match uses the adopted ETag.
        assert!(a.renew(t("2026-01-01T00:01:20Z")).await.unwrap());
        a.release().await;
        assert!(store.body().is_none(), "released");
    }

    #[tokio::test]
    async fn a_lost_answer_to_the_release_still_releases() {
        let store = MemoryLeaseStore::default();
        let a = Lease::acquire(store.clone(), "a".into(), TTL, t("2026-01-01T00:00:00Z")).await.unwrap();
        store.lose_answers(1);
        a.release().await;
        assert!(store.body().is_none());
        Lease::acquire(store.clone(), "b".into(), TTL, t("2026-01-01T00:00:01Z")).await.unwrap();
    }
}
