//! The README's renewal rule ("renewed with `If-Match` every third of
//! `LEASE_TTL_SECONDS`"): how often the background renewer writes, and that its renewals
//! keep a later runner out after the first expiry would have passed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;

use super::*;

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
    let stop = StopToken::new();
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
    let stop = StopToken::new();
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
