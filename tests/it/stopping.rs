//! The real binary under stops and watchdog faults. SIGTERM mid-run: the request in flight finishes,
//! the cursor is saved on the last acknowledged record, the lease is released, the exit
//! code is 6, and the next run completes with nothing lost. The same for SIGINT, for a stop
//! during `backfill` and during a run of `run --every`; a request in flight that outlasts
//! `STOP_TIMEOUT_SECONDS` is cut off.
//!
//! Every wait is bounded (`crate::process`, and deadlines on the polling loops); counts
//! that depend on timing (how many records left before a signal) are never asserted,
//! only the invariants (exit code, cursor on the last record sent, nothing lost after).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::process::{RUN_LIMIT, kill_after, output_of, output_within};
use crate::support::{TestEnv, by_key, many_rows, p};

const BIN: &str = env!("CARGO_BIN_EXE_pc-reserve-poller");

pub(crate) fn poller(env: &TestEnv, extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env.variables() {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// Waits until the run has acknowledged something (the cursor object exists).
pub(crate) async fn wait_for_first_cursor(env: &TestEnv) {
    for _ in 0..600 {
        if env.cursor_object().await.is_some() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the run never saved a cursor");
}

/// Paced to 200 records/s: several seconds of sending, many requests.
pub(crate) const PACED: [(&str, &str); 3] = [
    ("ENVISIONWARE_BATCH_SIZE", "200"),
    ("KINESIS_BATCH_SIZE", "20"),
    ("KINESIS_MAX_RECORDS_PER_SECOND", "200"),
];

#[tokio::test]
async fn sigterm_mid_run_saves_the_cursor_exits_6_and_the_next_run_loses_nothing() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(1200)).await;
    let child = poller(&env, &PACED).spawn().unwrap();
    let _bound = kill_after(child.id(), RUN_LIMIT);
    wait_for_first_cursor(&env).await;
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || output_of(child, RUN_LIMIT)).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("stopped (SIGTERM)"), "{stderr}");
    // An expected stop (ECS sends SIGTERM on every deployment): nothing at ERROR, and the
    // last line says it stopped, not that it failed.
    assert!(!stderr.contains("ERROR") && !stderr.contains("error:"), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains(" INFO run: stopped (SIGTERM); the cursor is saved"), "{stderr}");
    assert!(last.ends_with(" stage=run exit_code=6"), "{stderr}");

    // The cursor is the last record on the stream: nothing acknowledged was left behind.
    // (How many were sent before the signal depends on timing; the invariants do not.)
    let sent = env.sent().await;
    assert!(!sent.is_empty(), "the signal came after the first cursor write");
    let cursor = env.cursor().await.unwrap();
    assert_eq!(sent.last().unwrap().key, p(&cursor.key.to_string()));
    assert_eq!(sent.len() as i64, cursor.key, "rows are sent in key order, one shard");

    // The lease was released: the next run starts at once and completes, no loss, no duplicate.
    let out = output_within(&mut poller(&env, &[]), RUN_LIMIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all = by_key(&env.sent().await);
    assert_eq!(all.len(), 1200);
    assert_eq!(env.cursor().await.map(|c| c.key), Some(1200));
    env.cleanup().await;
}

#[tokio::test]
async fn a_run_whose_lease_is_taken_stops_before_its_next_send_with_exit_3() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(1200)).await;
    let slow = [PACED.as_slice(), &[("LEASE_TTL_SECONDS", "3")]].concat();
    let child = poller(&env, &slow).spawn().unwrap();
    let _bound = kill_after(child.id(), RUN_LIMIT);
    wait_for_first_cursor(&env).await;
    // Another runner takes the lease over (as if this one had stalled past its expiry).
    let intruder = r#"{"owner": "intruder", "acquired_at": "2026-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z"}"#;
    crate::support::s3_client(&env.sdk)
        .put_object()
        .bucket(&env.bucket)
        .key(format!("{}.lease", env.cursor_key))
        .body(intruder.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || output_of(child, RUN_LIMIT)).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("lost lease"), "{stderr}");
    // One line reports the failure: the last; nothing before it at ERROR.
    assert!(!stderr.lines().any(|l| l.contains(" ERROR ")), "{stderr}");
    let sent = env.sent().await;
    let cursor = env.cursor().await.unwrap();
    assert_eq!(sent.last().unwrap().key, p(&cursor.key.to_string()), "cursor on the last acknowledged");
    // The intruder's lease is left alone.
    let out = output_within(&mut poller(&env, &[]), RUN_LIMIT);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    env.cleanup().await;
}

#[tokio::test]
async fn the_watchdog_warns_on_an_old_cursor_and_exits_5_when_rows_were_purged() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(5)).await; // from 2024-06-01 10:00:00
    env.put_cursor_object(r#"{"pcr_key": "1", "pcr_date_time": "2024-06-01 10:00:00"}"#).await;
    let out = output_within(&mut poller(&env, &[("CURSOR_MAX_AGE_HOURS", "1")]), RUN_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("older than CURSOR_MAX_AGE_HOURS"), "{stderr}");

    // The oldest row Envisionware holds is newer than the cursor: rows were purged.
    let purged = r#"{"pcr_key": "9", "pcr_date_time": "2024-05-30 10:00:00"}"#;
    env.put_cursor_object(purged).await;
    let out = output_within(&mut poller(&env, &[]), RUN_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("retention lost"), "{stderr}");
    assert_eq!(env.cursor_object().await.as_deref(), Some(purged));
    env.cleanup().await;
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill").args([name, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {name} {pid}");
}

/// Waits (at most `limit`) until `ready` answers true.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !ready().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the invariants of a stopped run: the cursor is the last record on the stream
/// (nothing acknowledged left behind, nothing unacknowledged passed).
async fn assert_cursor_on_the_last_record_sent(env: &TestEnv) {
    let sent = env.sent().await;
    assert!(!sent.is_empty(), "the stop came after the first acknowledged request");
    let cursor = env.cursor().await.expect("a cursor");
    assert_eq!(sent.last().unwrap().key, p(&cursor.key.to_string()), "cursor on the last acknowledged");
    assert_eq!(sent.len() as i64, cursor.key, "rows go out in key order, once each (one shard)");
}

/// After a stop, the next run sends the rest: all `n` rows on the stream exactly once.
async fn assert_next_run_completes(env: &TestEnv, n: i64) {
    let out = output_within(&mut poller(env, &[]), RUN_LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let sent = env.sent().await;
    assert_eq!(by_key(&sent).len() as i64, n, "nothing lost");
    assert_eq!(sent.len() as i64, n, "nothing sent twice");
    assert_eq!(env.cursor().await.map(|c| c.key), Some(n));
}

#[tokio::test]
async fn sigint_mid_run_saves_the_cursor_exits_6_and_the_next_run_loses_nothing() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(600)).await;
    let child = poller(&env, &PACED).spawn().unwrap();
    let _bound = kill_after(child.id(), RUN_LIMIT);
    wait_for_first_cursor(&env).await;
    signal(child.id(), "-INT");
    let out = tokio::task::spawn_blocking(move || output_of(child, RUN_LIMIT)).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("stopped (SIGINT)"), "{stderr}");
    assert_cursor_on_the_last_record_sent(&env).await;
    assert_next_run_completes(&env, 600).await;
    env.cleanup().await;
}

/// A loopback proxy to the local AWS endpoint that forwards everything but Kinesis
/// `PutRecords`, which it swallows and never answers: a request that hangs.
struct HangingKinesis {
    url: String,
    put_records_seen: Arc<AtomicBool>,
}

async fn hanging_kinesis(upstream: &str) -> HangingKinesis {
    let upstream = upstream.trim_end_matches('/').rsplit("//").next().unwrap().to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let flag = Arc::clone(&flag);
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if buf[..n].windows(10).any(|w| w == b"PutRecords") {
                            flag.store(true, Ordering::SeqCst);
                            // Hold the connection open without an answer.
                            std::future::pending::<()>().await;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = async {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                };
                tokio::select! {
                    () = up => {}
                    () = down => {}
                }
            });
        }
    });
    HangingKinesis { url, put_records_seen: seen }
}

#[tokio::test]
async fn a_request_that_outlasts_stop_timeout_seconds_is_cut_off_and_the_run_exits_6() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(10)).await;
    let proxy = hanging_kinesis(&env.stack.aws_endpoint).await;
    let child =
        poller(&env, &[("AWS_ENDPOINT_URL", &proxy.url), ("STOP_TIMEOUT_SECONDS", "1")]).spawn().unwrap();
    let _bound = kill_after(child.id(), RUN_LIMIT);
    let seen = Arc::clone(&proxy.put_records_seen);
    wait_until("a PutRecords request in flight", Duration::from_secs(60), || {
        let seen = Arc::clone(&seen);
        async move { seen.load(Ordering::SeqCst) }
    })
    .await;
    let signalled = Instant::now();
    signal(child.id(), "-TERM");
    let out = tokio::task::spawn_blocking(move || output_of(child, RUN_LIMIT)).await.unwrap();
    let took = signalled.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("stopped (SIGTERM)"), "{stderr}");
    // The request got its grace of STOP_TIMEOUT_SECONDS=1, and was cut off well before
    // the SDK's own 30 s attempt timeout would have ended it.
    assert!(took >= Duration::from_secs(1), "cut off before the grace period: {took:?}");
    assert!(took < Duration::from_secs(25), "the grace period did not bound the stop: {took:?}");
    // Nothing was acknowledged: no cursor object; the lease was released.
    assert_eq!(env.cursor_object().await, None);
    let lease = crate::support::s3_client(&env.sdk)
        .get_object()
        .bucket(&env.bucket)
        .key(format!("{}.lease", env.cursor_key))
        .send()
        .await;
    assert!(lease.is_err(), "the lease was released");
    assert!(env.sent().await.is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn sigterm_during_backfill_saves_its_cursor_exits_6_and_a_restart_finishes_it() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(600)).await; // 2024-06-01 10:00:00 to 10:03:19
    let backfill = || {
        let mut cmd = poller(&env, &PACED);
        cmd.args(["backfill", "--from", "2024-06-01", "--to", "2024-06-02"]);
        cmd
    };
    let own_key = "poller/state.backfill-20240601T000000-20240602T000000.json";
    let s3 = crate::support::s3_client(&env.sdk);
    let own_cursor = || {
        let s3 = s3.clone();
        let bucket = env.bucket.clone();
        async move {
            let got = s3.get_object().bucket(&bucket).key(own_key).send().await.ok()?;
            let body = got.body.collect().await.ok()?.into_bytes();
            pc_reserve_poller::domain::Cursor::from_json(&body).ok()
        }
    };
    let child = backfill().spawn().unwrap();
    let _bound = kill_after(child.id(), RUN_LIMIT);
    // The backfill writes its cursor object at the start of the range first; wait for
    // the first acknowledged record.
    wait_until("the backfill's first acknowledged record", Duration::from_secs(60), || {
        let f = own_cursor();
        async move { f.await.is_some_and(|c| c.key > 0) }
    })
    .await;
    signal(child.id(), "-TERM");
    let out = tokio::task::spawn_blocking(move || output_of(child, RUN_LIMIT)).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    let sent = env.sent().await;
    let cursor = own_cursor().await.expect("the backfill's cursor");
    assert_eq!(sent.last().unwrap().key, p(&cursor.key.to_string()), "its cursor on the last acknowledged");
    assert_eq!(sent.len() as i64, cursor.key);
    assert_eq!(env.cursor_object().await, None, "the main cursor is not touched");

    let out = output_within(&mut backfill(), RUN_LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let sent = env.sent().await;
    assert_eq!((by_key(&sent).len(), sent.len()), (600, 600), "resumed: nothing lost, nothing twice");
    env.cleanup().await;
}

#[tokio::test]
async fn sigterm_during_a_run_of_run_every_stops_it_gracefully_with_exit_6() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(600)).await;
    let mut cmd = poller(&env, &PACED);
    cmd.args(["run", "--every", "1h"]);
    let child = cmd.spawn().unwrap();
    let _bound = kill_after(child.id(), RUN_LIMIT);
    wait_for_first_cursor(&env).await;
    signal(child.id(), "-TERM");
    let out = tokio::task::spawn_blocking(move || output_of(child, RUN_LIMIT)).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(!stderr.contains("waiting for the next run"), "stopped inside the first run: {stderr}");
    assert_cursor_on_the_last_record_sent(&env).await;
    assert_next_run_completes(&env, 600).await;
    env.cleanup().await;
}
