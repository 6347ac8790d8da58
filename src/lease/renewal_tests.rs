//! The lease rules (`docs/delivery.md`, "One runner at a time"), beyond the tests in `lease.rs`:
//! renewal every third of `LEASE_TTL_SECONDS` and what it keeps out, the expiry instant,
//! the object's `{"owner", "acquired_at", "expires_at"}`, owner names, a lost race to
//! create the lease, and a lapsed holder's release.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;

use super::*;
use crate::test_support::MemoryLeaseStore;

/// Writes the store has taken so far (the create, then one per renewal).
fn writes(store: &MemoryLeaseStore) -> u64 {
    store.version.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_renewed_every_third_of_its_ttl() {
    let store = MemoryLeaseStore::default();
    // A TTL of 900 ms: renewals every 300 ms.
    let ttl = Duration::from_millis(900);
    let mut lease = Lease::acquire(store.clone(), "a".into(), ttl, Utc::now()).await.unwrap();
    assert_eq!(writes(&store), 1, "created");
    let stop = StopToken::with_grace(Duration::from_secs(20));
    let started = std::time::Instant::now();
    lease.keep_renewed(stop.clone());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(writes(&store), 1, "renewed before a third of the TTL");
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let renewals = writes(&store) - 1;
    let elapsed = started.elapsed().as_millis() as u64;
    // Never more often than every 300 ms; and about every 300 ms (6 in 1.95 s; every
    // half of the TTL would give 4, so 5 leaves room for a late wake-up or two).
    assert!(
        renewals <= elapsed / 300,
        "{renewals} renewals in {elapsed} ms: more often than a third of the TTL"
    );
    assert!(renewals >= 5, "{renewals} renewals in {elapsed} ms: less often than a third of the TTL");
    assert_eq!(stop.reason(), None);
    lease.release().await;
    assert!(store.body().is_none(), "released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_keep_a_later_runner_out_after_the_first_expiry() {
    let store = MemoryLeaseStore::default();
    let ttl = Duration::from_millis(1500);
    let started = Utc::now();
    let mut lease = Lease::acquire(store.clone(), "a".into(), ttl, started).await.unwrap();
    let first_expiry = lease.record().expires_at;
    let stop = StopToken::with_grace(Duration::from_secs(20));
    lease.keep_renewed(stop.clone());
    // Past the first expiry: without renewals the lease would have lapsed by now.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let later = Utc::now();
    assert!(later > first_expiry);
    match Lease::acquire(store.clone(), "b".into(), ttl, later).await {
        Err(LeaseError::Held { owner, .. }) => assert_eq!(owner, "a"),
        Ok(_) => panic!("the later runner took a lease that should have been renewed"),
        Err(other) => panic!("{other:?}"),
    }
    assert!(lease.record().expires_at > later, "renewed past the later runner's start");
    assert_eq!(stop.reason(), None, "the holder never lost it");
    lease.release().await;
}

fn t(s: &str) -> chrono::DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const TTL: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_lease_is_expired_from_its_expiry_instant_on() {
    let store = MemoryLeaseStore::default();
    let a = Lease::acquire(store.clone(), "a".into(), TTL, t("2026-01-01T00:00:00Z")).await.unwrap();
    // One second before the expiry it is held; at the expiry instant it may be taken.
    assert!(Lease::acquire(store.clone(), "b".into(), TTL, t("2026-01-01T00:01:59Z")).await.is_err());
    // Its holder can no longer renew at that instant either: it lapsed.
    assert!(!a.renew(t("2026-01-01T00:02:00Z")).await.unwrap());
    let b = Lease::acquire(store.clone(), "b".into(), TTL, t("2026-01-01T00:02:00Z")).await.unwrap();
    assert_eq!(b.record().acquired_at, t("2026-01-01T00:02:00Z"));
    assert_eq!(b.record().expires_at, t("2026-01-01T00:04:00Z"));
}

#[tokio::test]
async fn the_lease_object_holds_owner_acquired_at_and_expires_at() {
    let store = MemoryLeaseStore::default();
    let a = Lease::acquire(store.clone(), "host/42/0000abcd".into(), TTL, t("2026-01-01T00:00:00Z"))
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&store.body().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "owner": "host/42/0000abcd",
            "acquired_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-01T00:02:00Z",
        })
    );
    // A renewal keeps the owner and acquisition time and moves the expiry.
    assert!(a.renew(t("2026-01-01T00:00:40Z")).await.unwrap());
    let body: serde_json::Value = serde_json::from_str(&store.body().unwrap()).unwrap();
    assert_eq!(body["acquired_at"], "2026-01-01T00:00:00Z");
    assert_eq!(body["expires_at"], "2026-01-01T00:02:40Z");
    assert_eq!(LeaseRecord::from_json(br#"{"owner": "x"}"#), None);
    assert_eq!(
        LeaseRecord::from_json(br#"{"owner": "x", "acquired_at": "now", "expires_at": "later"}"#),
        None
    );
}

#[test]
fn owner_names_carry_host_pid_and_a_random_suffix() {
    let (a, b) = (owner_name(), owner_name());
    assert_ne!(a, b, "two runners on one host and pid still differ");
    let parts: Vec<&str> = a.split('/').collect();
    assert_eq!(parts.len(), 3, "{a}");
    assert!(!parts[0].is_empty(), "{a}");
    assert_eq!(parts[1], std::process::id().to_string());
    assert_eq!(parts[2].len(), 8, "{a}");
    assert!(parts[2].chars().all(|c| c.is_ascii_hexdigit()), "{a}");
}

/// A store where another runner creates the lease between this runner's read and write.
#[derive(Clone, Default)]
struct Racing {
    inner: MemoryLeaseStore,
    winner: Option<String>,
}

impl LeaseStore for Racing {
    fn location(&self) -> String {
        "memory/racing".into()
    }
    async fn read(&self) -> Result<Option<(Vec<u8>, String)>, LeaseError> {
        self.inner.read().await
    }
    async fn create(&self, _body: String) -> Result<Written, LeaseError> {
        if let Some(w) = &self.winner {
            self.inner.force(w);
        }
        Ok(Written::PreconditionFailed)
    }
    async fn replace(&self, etag: &str, body: String) -> Result<Written, LeaseError> {
        self.inner.replace(etag, body).await
    }
    async fn delete(&self, etag: &str) -> Result<crate::lease::Deleted, LeaseError> {
        self.inner.delete(etag).await
    }
}

#[tokio::test]
async fn losing_the_race_to_create_names_the_winner() {
    let winner = LeaseRecord {
        owner: "winner".into(),
        acquired_at: t("2026-01-01T00:00:00Z"),
        expires_at: t("2026-01-01T00:02:00Z"),
    };
    let store = Racing { winner: Some(winner.to_json()), ..Racing::default() };
    match Lease::acquire(store, "late".into(), TTL, t("2026-01-01T00:00:00Z")).await {
        Err(LeaseError::Held { owner, expires_at, location }) => {
            assert_eq!((owner.as_str(), expires_at.as_str()), ("winner", "2026-01-01T00:02:00Z"));
            assert_eq!(location, "memory/racing");
        }
        other => panic!("{:?}", other.map(|l| l.record())),
    }
    // The winner's object vanished meanwhile: still refused, holder unknown.
    match Lease::acquire(Racing::default(), "late".into(), TTL, t("2026-01-01T00:00:00Z")).await {
        Err(LeaseError::Held { owner, .. }) => assert_eq!(owner, "unknown"),
        other => panic!("{:?}", other.map(|l| l.record())),
    }
}

#[tokio::test]
async fn a_lost_lease_is_not_deleted_at_release() {
    let store = MemoryLeaseStore::default();
    let a = Lease::acquire(store.clone(), "a".into(), TTL, t("2026-01-01T00:00:00Z")).await.unwrap();
    assert!(!a.is_lost());
    // It lapsed; then someone else wrote the same ETag's successor.
    assert!(!a.renew(t("2026-01-01T00:03:00Z")).await.unwrap());
    assert!(a.is_lost());
    a.release().await;
    assert!(store.body().is_some(), "a lapsed holder deletes nothing");
}

#[tokio::test]
async fn release_leaves_a_lease_another_runner_wrote_meanwhile() {
    let store = MemoryLeaseStore::default();
    let a = Lease::acquire(store.clone(), "a".into(), TTL, t("2026-01-01T00:00:00Z")).await.unwrap();
    // Another runner writes the object (a new ETag) before `a` notices anything.
    let other = LeaseRecord {
        owner: "b".into(),
        acquired_at: t("2026-01-01T00:03:00Z"),
        expires_at: t("2026-01-01T00:05:00Z"),
    };
    store.force(&other.to_json());
    a.release().await;
    // The delete is conditional on a's ETag (`If-Match`): b's lease stays.
    assert_eq!(LeaseRecord::from_json(store.body().unwrap().as_bytes()), Some(other));
}
