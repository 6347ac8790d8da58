//! README guarantees that had no test: SIGINT, a stop whose request in flight outlasts
//! `STOP_TIMEOUT_SECONDS`, stops during `backfill` and during a run of `run --every`, exit
//! 4 when another writer moves the cursor mid-run, `check`'s exit 7 for each dependency,
//! the retry and timeout variables' effects, and `PSEUDONYM_KERNEL=crate` in a run.
//!
//! Every wait is bounded (`crate::process`, and deadlines on the polling loops); counts
//! that depend on timing (how many records left before a signal) are never asserted,
//! only the invariants (exit code, cursor on the last record sent, nothing lost after).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::process::{RUN_LIMIT, kill_after, output_of, output_within};
use crate::stopping::{PACED, poller, wait_for_first_cursor};
use crate::support::{SALT, TestEnv, by_key, many_rows, p};

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

#[tokio::test]
async fn a_run_exits_4_when_another_writer_moves_the_cursor_and_leaves_it_alone() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(600)).await;
    let child = poller(&env, &PACED).spawn().unwrap();
    let _bound = kill_after(child.id(), RUN_LIMIT);
    wait_for_first_cursor(&env).await;
    // Another writer (a second poller without the lease, an operator) moves the cursor.
    let other = r#"{"pcr_key": "3", "pcr_date_time": "2024-06-01 10:00:00"}"#;
    env.put_cursor_object(other).await;
    let out = tokio::task::spawn_blocking(move || output_of(child, RUN_LIMIT)).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("was changed by another writer since this run read it"), "{stderr}");
    assert_eq!(env.cursor_object().await.as_deref(), Some(other), "the other writer's cursor is kept");
    env.cleanup().await;
}

/// Runs `check` with `extra` and returns (exit code, stdout + stderr).
fn check(env: &TestEnv, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = poller(env, extra);
    cmd.arg("check");
    let out = output_within(&mut cmd, RUN_LIMIT);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[tokio::test]
async fn check_exits_7_naming_s3_schema_sierra_or_redshift_when_each_fails() {
    let env = TestEnv::new().await;
    let (code, text) = check(&env, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains('✗'), "{text}");
    for (name, value, line) in [
        ("S3_BUCKET", "pcr-no-such-bucket", "✗ S3 cursor"),
        ("PC_RESERVE_SCHEMA_URL", "http://127.0.0.1:1/api/v0.1/current-schemas/PcReserve", "✗ schema"),
        ("SIERRA_DB_PORT", "1", "✗ Sierra"),
        ("REDSHIFT_DB_PORT", "1", "✗ Redshift"),
    ] {
        let (code, text) = check(&env, &[(name, value)]);
        assert_eq!(code, Some(7), "{name}: {text}");
        assert!(text.lines().any(|l| l.starts_with(line)), "{name}: no `{line}` line in {text}");
        assert_eq!(text.matches('✗').count(), 1, "{name}: only that dependency fails: {text}");
        assert!(text.contains("check: 1 of the dependencies failed"), "{name}: {text}");
    }
    env.cleanup().await;
}

/// An HTTP server on loopback answering every request with `status`, counting requests.
async fn failing_schema_endpoint(status: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v0.1/current-schemas/PcReserve", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                counter.fetch_add(1, Ordering::SeqCst);
                let response =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}");
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, count)
}

#[tokio::test]
async fn retry_attempts_is_the_number_of_tries_of_a_failing_dependency() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(2)).await;
    // A 500 is transient: tried RETRY_ATTEMPTS times. A 404 is not: tried once.
    for (status, attempts, expected) in [
        ("500 Internal Server Error", "1", 1),
        ("500 Internal Server Error", "3", 3),
        ("429 Too Many Requests", "2", 2),
        ("404 Not Found", "3", 1),
    ] {
        let (url, count) = failing_schema_endpoint(status).await;
        let err = env
            .run(&[("PC_RESERVE_SCHEMA_URL", Some(&url)), ("RETRY_ATTEMPTS", Some(attempts))])
            .await
            .unwrap_err();
        let code = &status[..3];
        assert!(err.to_string().starts_with(&format!("schema: schema endpoint: HTTP {code}")), "{err}");
        assert_eq!(count.load(Ordering::SeqCst), expected, "{status}, RETRY_ATTEMPTS={attempts}");
    }
    assert!(env.sent().await.is_empty());
    env.cleanup().await;
}

/// A TCP port that accepts connections and never answers.
async fn silent_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    port
}

#[tokio::test]
async fn schema_and_db_connect_timeouts_bound_a_silent_dependency() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(2)).await;
    let port = silent_port().await.to_string();
    let url = format!("http://127.0.0.1:{port}/api/v0.1/current-schemas/PcReserve");

    let started = Instant::now();
    let err = env
        .run(&[
            ("PC_RESERVE_SCHEMA_URL", Some(&url)),
            ("SCHEMA_TIMEOUT_SECONDS", Some("1")),
            ("RETRY_ATTEMPTS", Some("1")),
        ])
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.to_string().starts_with("schema: "), "{err}");
    // 1 s, not the default 60 s.
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(8), "{took:?}: {err}");

    let started = Instant::now();
    let err = env
        .run(&[
            ("ENVISIONWARE_DB_PORT", Some(&port)),
            ("DB_CONNECT_TIMEOUT_SECONDS", Some("1")),
            ("RETRY_ATTEMPTS", Some("1")),
        ])
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.to_string().starts_with("Envisionware: cannot connect"), "{err}");
    // 1 s, not the default 30 s.
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(15), "{took:?}: {err}");
    assert!(env.sent().await.is_empty());
    env.cleanup().await;
}

/// The pseudonym of `input` computed with the bcrypt crate directly.
fn bcrypt_pseudonym(input: &[u8]) -> String {
    use base64::Engine as _;
    let raw = bcrypt::BASE_64.decode(&SALT[7..]).unwrap();
    let salt: [u8; 16] = raw.as_slice().try_into().unwrap();
    let full = bcrypt::hash_with_salt(input, 4, salt).unwrap().format_for_version(bcrypt::Version::TwoB);
    full[29..].to_string()
}

#[tokio::test]
async fn a_run_with_pseudonym_kernel_crate_and_one_thread_sends_the_same_pseudonyms() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(9)).await;
    let summary =
        env.run(&[("PSEUDONYM_KERNEL", Some("crate")), ("PSEUDONYM_THREADS", Some("1"))]).await.unwrap();
    assert_eq!(summary.records(), 9);
    let sent = by_key(&env.sent().await);
    let expected: Vec<String> = (1..=9).map(|k| bcrypt_pseudonym(k.to_string().as_bytes())).collect();
    assert_eq!(
        sent.keys().cloned().collect::<std::collections::BTreeSet<_>>(),
        expected.into_iter().collect()
    );
    env.cleanup().await;
}

#[tokio::test]
async fn db_statement_timeout_seconds_cancels_a_slow_sierra_query() {
    use sqlx::{Connection as _, Executor as _};
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    // Sierra's phrase_entry answers after 3 s.
    let mut pg = sqlx::PgConnection::connect(&env.sierra_url()).await.unwrap();
    pg.execute("DROP TABLE sierra_view.phrase_entry CASCADE").await.unwrap();
    pg.execute(
        "CREATE VIEW sierra_view.phrase_entry AS SELECT 1::bigint AS id, 1::bigint AS record_id, \
         'b'::varchar AS index_tag, ('none' || pg_sleep(3)::text)::varchar AS index_entry",
    )
    .await
    .unwrap();
    drop(pg);
    let started = Instant::now();
    let err = env
        .run(&[("DB_STATEMENT_TIMEOUT_SECONDS", Some("1")), ("RETRY_ATTEMPTS", Some("1"))])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("Sierra"), "{text}");
    // The server's own statement_timeout and the poller's timer race, both set from the
    // variable: either ends the query.
    assert!(
        text.contains("statement timed out after 1s")
            || text.contains("57014: canceling statement due to statement timeout"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "cancelled before the 3 s query ended");
    assert!(env.sent().await.is_empty());
    assert_eq!(env.cursor_object().await, None, "nothing acknowledged, no cursor");
    // The same query under the default (300 s) completes.
    env.run(&[("RETRY_ATTEMPTS", Some("1"))]).await.unwrap();
    assert_eq!(env.sent().await.len(), 3);
    env.cleanup().await;
}
