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

#[tokio::test(start_paused = true)]
async fn the_lease_is_renewed_every_third_of_its_ttl() {
    let store = MemoryLeaseStore::default();
    let ttl = Duration::from_secs(120);
    let mut lease = Lease::acquire(store.clone(), "a".into(), ttl, Utc::now()).await.unwrap();
    assert_eq!(writes(&store), 1, "created");
    let stop = StopToken::new();
    lease.keep_renewed(stop.clone());
    // Renewals at 40 s, 80 s and 120 s (a third of 120 s); none before the first third.
    tokio::time::sleep(Duration::from_secs(39)).await;
    assert_eq!(writes(&store), 1, "renewed before a third of the TTL");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(writes(&store), 2, "not renewed at a third of the TTL");
    tokio::time::sleep(Duration::from_secs(80)).await;
    assert_eq!(writes(&store), 4, "renewals at 40 s, 80 s and 120 s");
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
