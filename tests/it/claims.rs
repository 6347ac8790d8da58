//! Claims that had no test that could fail (docs/testing.md, "Claims that had no test that
//! could fail"): Kinesis whole-request 5xx, retry counts per dependency, `LEASE_RESOURCE`,
//! a lost takeover race, the future-cursor tolerance at its boundary, a missing stream,
//! SQL in Envisionware and Redshift values, and `run --every`'s retries and stops.
//!
//! The counts come from outside the poller: the local stack's request log and fault rules
//! (`scripts/local-stack/moto_server.py`, 5) and loopback listeners that count connections.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::net::TcpListener;

use crate::closure::Poller;
use crate::process::{RUN_LIMIT, kill_after, output_of, output_within};
use crate::stopping::poller;
use crate::support::{TestEnv, by_key, many_rows, p, row, s3_client};

const DEFAULT_LEASE_KEY: &str = "poller/state.json.lease";

/// Sets a fault rule on the local stack (moto_server.py, 5).
async fn fault(env: &TestEnv, rule: Value) {
    let url = format!("{}/_pcr/faults", env.stack.aws_endpoint.trim_end_matches('/'));
    let answer = reqwest::Client::new().post(url).json(&rule).send().await.expect("fault rule");
    assert!(answer.status().is_success(), "fault rule refused: {}", answer.text().await.unwrap_or_default());
}

/// The local stack's log of the S3 object requests to a bucket, or the Kinesis calls to a
/// stream, whose name contains `scope`.
async fn requests(env: &TestEnv, scope: &str) -> Vec<Value> {
    let url = format!("{}/_pcr/requests", env.stack.aws_endpoint.trim_end_matches('/'));
    let answer =
        reqwest::Client::new().get(url).query(&[("scope", scope)]).send().await.expect("request log");
    answer.json::<Vec<Value>>().await.expect("request log as JSON")
}

/// `(operation, status)` of the logged calls of `operation` (and of `key`, for S3).
fn calls(log: &[Value], operation: &str, key: Option<&str>) -> Vec<(String, i64)> {
    log.iter()
        .filter(|e| e["operation"] == operation && key.is_none_or(|k| e["key"] == k))
        .map(|e| (e["operation"].as_str().unwrap_or_default().to_string(), e["status"].as_i64().unwrap_or(0)))
        .collect()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn last_line(stderr: &str) -> &str {
    stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default()
}

/// A loopback port that accepts each connection and closes it at once, counting them.
async fn closing_port() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(sock);
        }
    });
    (port, count)
}

#[tokio::test]
async fn kinesis_whole_request_500_and_503_are_transient_retried_and_counted_in_the_summary() {
    for status in [500, 503] {
        let env = TestEnv::new().await;
        env.insert_rows(&many_rows(5)).await;
        // Three whole-request failures: with RETRY_ATTEMPTS=2 the SDK tries each call twice,
        // so the first call fails (500, 500), the poller retries it once (500, then 200).
        fault(
            &env,
            json!({"service": "kinesis", "scope": env.name, "operation": "PutRecords", "status": status, "count": 3}),
        )
        .await;
        let out = output_within(&mut poller(&env, &[("RETRY_ATTEMPTS", "2")]), RUN_LIMIT);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(0), "{status}: {stderr}");
        assert!(stderr.contains(" retries=1 "), "{status}: the summary counts the retry: {stderr}");
        assert!(stderr.contains("PutRecords failed; retrying"), "{status}: {stderr}");
        let puts = calls(&requests(&env, &env.name).await, "PutRecords", None);
        let statuses: Vec<i64> = puts.iter().map(|(_, s)| *s).collect();
        assert_eq!(statuses, vec![status, status, status, 200], "{status}");
        let sent = env.sent().await;
        assert_eq!((sent.len(), by_key(&sent).len()), (5, 5), "{status}: every record once");
        assert_eq!(env.cursor().await.unwrap().key, 5);
        env.cleanup().await;
    }
}

// Multi-threaded: the counting listener must accept while this thread waits on the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dependency_is_tried_retry_attempts_times() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;

    // S3: the cursor read answered 500 every time.
    fault(
        &env,
        json!({"service": "s3", "scope": format!("^{}$", env.bucket), "key": "^poller/state\\.json$", "operation": "GET", "status": 500}),
    )
    .await;
    let out = output_within(&mut poller(&env, &[("RETRY_ATTEMPTS", "3")]), RUN_LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let gets = calls(&requests(&env, &env.bucket).await, "GET", Some("poller/state.json"));
    assert_eq!(gets.len(), 3, "S3 GetObject tried RETRY_ATTEMPTS (3) times: {gets:?}");
    fault(&env, json!({"service": "s3", "scope": format!("^{}$", env.bucket)})).await;

    // Envisionware (MariaDB), Sierra and Redshift (PostgreSQL): a server that closes every
    // connection.
    for (variable, name) in [
        ("ENVISIONWARE_DB_PORT", "Envisionware"),
        ("SIERRA_DB_PORT", "Sierra"),
        ("REDSHIFT_DB_PORT", "Redshift"),
    ] {
        let (port, accepted) = closing_port().await;
        let port = port.to_string();
        let out = output_within(
            &mut poller(
                &env,
                &[(variable, port.as_str()), ("RETRY_ATTEMPTS", "3"), ("IGNORE_CACHE", "true")],
            ),
            RUN_LIMIT,
        );
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "{name}: connections tried, RETRY_ATTEMPTS=3: {stderr}"
        );
    }
    assert!(env.sent().await.is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn lease_resource_is_the_key_the_lease_object_is_written_at() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(400)).await;
    let key = "elsewhere/poller.lease";
    let s3 = s3_client(&env.sdk);
    let slow =
        [("LEASE_RESOURCE", key), ("KINESIS_BATCH_SIZE", "20"), ("KINESIS_MAX_RECORDS_PER_SECOND", "200")];
    let child = poller(&env, &slow).spawn().unwrap();
    let _bound = kill_after(child.id(), RUN_LIMIT);
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        assert!(Instant::now() < deadline, "no lease object at {key} within 60 s");
        if let Ok(o) = s3.get_object().bucket(&env.bucket).key(key).send().await {
            break String::from_utf8(o.body.collect().await.unwrap().into_bytes().to_vec()).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lease: Value = serde_json::from_str(&body).unwrap();
    assert!(lease["owner"].is_string() && lease["expires_at"].is_string(), "{body}");
    let out = tokio::task::spawn_blocking(move || output_of(child, RUN_LIMIT)).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(s3.get_object().bucket(&env.bucket).key(key).send().await.is_err(), "released at exit");
    // Every lease request of the run went to that key.
    let log = requests(&env, &env.bucket).await;
    assert!(log.iter().any(|e| e["key"] == key && e["operation"] == "DELETE"));
    assert!(!log.iter().any(|e| e["key"] == DEFAULT_LEASE_KEY), "the default key is never touched");

    // A holder at that key refuses a run; one at the default key does not matter.
    let held = r#"{"owner": "other-task", "acquired_at": "2026-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z"}"#;
    s3.put_object().bucket(&env.bucket).key(key).body(held.as_bytes().to_vec().into()).send().await.unwrap();
    let out = output_within(&mut poller(&env, &[("LEASE_RESOURCE", key)]), RUN_LIMIT);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(last_line(&stderr).contains(&format!("s3://{}/{key} (owner other-task", env.bucket)), "{stderr}");
    env.cleanup().await;
}

#[tokio::test]
async fn two_takers_of_a_stale_lease_one_wins_and_the_other_exits_3_sending_nothing() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(300)).await;
    // Paced to about 3 s, so that the winner still holds the lease when the loser's
    // takeover arrives.
    let paced = [("KINESIS_BATCH_SIZE", "20"), ("KINESIS_MAX_RECORDS_PER_SECOND", "100")];
    let stale = r#"{"owner": "crashed-task", "acquired_at": "2020-01-01T00:00:00Z", "expires_at": "2020-01-01T01:00:00Z"}"#;
    s3_client(&env.sdk)
        .put_object()
        .bucket(&env.bucket)
        .key(DEFAULT_LEASE_KEY)
        .body(stale.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    // Each read of the lease is answered 1.5 s late (with what it held when it arrived), so
    // the second runner, started 0.3 s after the first, also reads the stale lease before
    // the first one's takeover: both take it over with If-Match on the same ETag.
    fault(
        &env,
        json!({"service": "s3", "scope": format!("^{}$", env.bucket), "key": "\\.lease$", "operation": "GET", "delay_ms": 1500}),
    )
    .await;
    let first = poller(&env, &paced).spawn().unwrap();
    let _b1 = kill_after(first.id(), RUN_LIMIT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = poller(&env, &paced).spawn().unwrap();
    let _b2 = kill_after(second.id(), RUN_LIMIT);
    let (a, b) = tokio::join!(
        tokio::task::spawn_blocking(move || output_of(first, RUN_LIMIT)),
        tokio::task::spawn_blocking(move || output_of(second, RUN_LIMIT)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(3)], "first: {}\nsecond: {}", stderr_of(&a), stderr_of(&b));
    let loser = if a.status.code() == Some(3) { stderr_of(&a) } else { stderr_of(&b) };
    let line = last_line(&loser);
    assert!(line.contains("another runner holds the lease"), "{loser}");
    assert!(!line.contains("crashed-task"), "names the winner, not the stale holder: {line}");
    assert!(line.contains("this run sent nothing"), "{line}");
    // The race happened: the two takeovers (PUT with If-Match) met the same ETag, one won (200)
    // and the other lost (412).
    let log = requests(&env, &env.bucket).await;
    let takeovers: Vec<i64> = log
        .iter()
        .filter(|e| e["key"] == DEFAULT_LEASE_KEY && e["operation"] == "PUT" && e["if_match"] == true)
        .take(2)
        .map(|e| e["status"].as_i64().unwrap_or(0))
        .collect();
    let mut sorted = takeovers.clone();
    sorted.sort();
    assert_eq!(sorted, vec![200, 412], "two takeovers, one lost the race: {takeovers:?}");
    // The loser sent nothing: every record is on the stream exactly once.
    let sent = env.sent().await;
    assert_eq!((sent.len(), by_key(&sent).len()), (300, 300));
    fault(&env, json!({"service": "s3", "scope": format!("^{}$", env.bucket)})).await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_future_cursor_tolerance_is_two_hours_to_the_second() {
    let env = TestEnv::new().await;
    env.insert_rows(&[row(1, Some("23333000000001"), "2024-06-01 09:00:00")]).await;
    let poller = Poller::new(&env).await;
    // Exactly 2 hours ahead of Envisionware's clock: accepted (nothing newer to send).
    let at_tolerance = r#"{"pcr_key": "7", "pcr_date_time": "2024-06-01 12:00:00"}"#;
    env.put_cursor_object(at_tolerance).await;
    let summary = poller.run_at("2024-06-01 10:00:00").await.unwrap();
    assert_eq!(summary.records(), 0);
    // One second more: refused, exit 1, the cursor left as it was.
    let over = r#"{"pcr_key": "7", "pcr_date_time": "2024-06-01 12:00:01"}"#;
    env.put_cursor_object(over).await;
    let err = poller.run_at("2024-06-01 10:00:00").await.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(
        err.to_string().contains(
            "cursor store: the cursor (2024-06-01 12:00:01) is more than 2 hours ahead of Envisionware's clock (2024-06-01 10:00:00); rows written until then would be skipped"
        ),
        "{err}"
    );
    assert_eq!(env.cursor_object().await.as_deref(), Some(over));
    assert!(env.sent().await.is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn a_run_to_a_missing_stream_fails_and_leaves_the_cursor_untouched() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(5)).await;
    let before = r#"{"pcr_key": "1", "pcr_date_time": "2024-06-01 10:00:00"}"#;
    env.put_cursor_object(before).await;
    let missing = format!("arn:aws:kinesis:us-east-1:123456789012:stream/{}-missing", env.name);
    let out = output_within(&mut poller(&env, &[("KINESIS_STREAM_ARN", missing.as_str())]), RUN_LIMIT);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = last_line(&stderr);
    assert!(line.contains(" ERROR ") && line.ends_with("exit_code=1"), "{stderr}");
    assert!(line.contains("ResourceNotFound") || line.contains("not found"), "{line}");
    assert_eq!(env.cursor_object().await.as_deref(), Some(before), "cursor body unchanged");
    env.cleanup().await;
}

#[tokio::test]
async fn sql_in_envisionware_and_redshift_values_is_carried_as_data() {
    let env = TestEnv::new().await;
    let drop_ew = "'; DROP TABLE strad_bci; --";
    // (postal_code is VARCHAR(16) in the warehouse)
    let drop_rs = "');DROP TABLE p";
    // A patron whose Redshift row holds SQL in both columns, and Envisionware rows with SQL
    // in the barcode (unknown to Sierra), the branch and the area.
    env.insert_patron(4242, "23333000004242", Some(10), Some(1), Some("mm")).await;
    env.insert_geo(4242, drop_rs, "1' OR '1'='1").await;
    let mut known = row(1, Some("23333000004242"), "2024-07-01 08:00:00");
    known.branch = Some(drop_ew.into());
    let mut unknown = row(2, Some(drop_ew), "2024-07-01 08:00:01");
    unknown.area = Some("x'); DELETE FROM strad_bci; --".into());
    env.insert_rows(&[known, unknown]).await;

    env.run(&[]).await.unwrap();
    let recs = by_key(&env.sent().await);
    assert_eq!(recs.len(), 2);
    let found = &recs[&p("1")];
    assert_eq!(found.patron_retrieval_status.as_deref(), Some("found"));
    assert_eq!(found.postal_code.as_deref(), Some(drop_rs));
    assert_eq!(found.geoid.as_deref(), Some("1' OR '1'='1"));
    assert_eq!(found.branch.as_deref(), Some(drop_ew));
    let missing = &recs[&p("2")];
    assert_eq!(missing.patron_retrieval_status.as_deref(), Some("missing"));
    assert_eq!(
        missing.patron_id,
        p(&format!("barcode {drop_ew}")),
        "the barcode's pseudonym: it reached the lookup as a value"
    );
    assert_eq!(missing.area.as_deref(), Some("x'); DELETE FROM strad_bci; --"));

    // Every table is intact.
    let mut my = sqlx::MySqlConnection::connect(&env.mysql_url()).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM strad_bci").fetch_one(&mut my).await.unwrap();
    assert_eq!(n, 2);
    let mut rs = sqlx::PgConnection::connect(&env.redshift_url()).await.unwrap();
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM patron_info_{}_rs", env.name))
        .fetch_one(&mut rs)
        .await
        .unwrap();
    assert_eq!(n, 1);
    env.cleanup().await;
}

// Multi-threaded: the counting listener must accept while this thread waits on the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_every_retries_a_failed_run_and_stops_on_exit_2_and_4() {
    // A failed run (Sierra closes every connection) is logged and retried at the next
    // interval: three runs in about 2.5 s at --every 1s, then SIGTERM stops it (exit 6).
    // The signal is sent right after the third "waiting for the next run" line, so that it
    // lands between runs: a signal that lands while a run is failing ends the command with
    // that run's failure (exit 1), which is a different claim.
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    let (port, accepted) = closing_port().await;
    let port = port.to_string();
    let mut cmd = poller(&env, &[("SIERRA_DB_PORT", port.as_str()), ("RETRY_ATTEMPTS", "1")]);
    cmd.args(["run", "--every", "1s"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let _bound = kill_after(child.id(), RUN_LIMIT);
    let stderr_pipe = child.stderr.take().unwrap();
    let (waits_tx, waits_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            if line.contains("waiting for the next run") {
                let _ = waits_tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let pid = child.id();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        for n in 0..3 {
            let left = deadline.saturating_duration_since(Instant::now());
            waits_rx.recv_timeout(left).unwrap_or_else(|_| panic!("{n} waits, not 3, within 60 s"));
        }
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    })
    .await
    .unwrap();
    assert!(accepted.load(Ordering::SeqCst) >= 3, "every run reached Sierra");
    let out = tokio::task::spawn_blocking(move || output_of(child, RUN_LIMIT)).await.unwrap();
    let stderr = reader.join().unwrap();
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.matches("(trying again at the next interval)").count() >= 3, "{stderr}");
    assert!(stderr.matches("waiting for the next run").count() >= 3, "{stderr}");
    assert!(env.sent().await.is_empty());

    // A configuration error (exit 2) stops it at once.
    let mut cmd = poller(&env, &[("KINESIS_BATCH_SIZE", "0")]);
    cmd.args(["run", "--every", "1s"]);
    let out = output_within(&mut cmd, Duration::from_secs(60));
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("waiting for the next run"), "{stderr}");
    env.cleanup().await;

    // A cursor another writer moved (exit 4) stops it too.
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(600)).await;
    let mut cmd = poller(&env, &crate::stopping::PACED);
    cmd.args(["run", "--every", "1s"]);
    let child = cmd.spawn().unwrap();
    let _bound = kill_after(child.id(), RUN_LIMIT);
    crate::stopping::wait_for_first_cursor(&env).await;
    let other = r#"{"pcr_key": "3", "pcr_date_time": "2024-06-01 10:00:00"}"#;
    env.put_cursor_object(other).await;
    let out = tokio::task::spawn_blocking(move || output_of(child, RUN_LIMIT)).await.unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(!stderr.contains("waiting for the next run"), "stopped after the first run: {stderr}");
    assert_eq!(env.cursor_object().await.as_deref(), Some(other));
    env.cleanup().await;
}

/// The ECS container credentials endpoint on loopback: answers every request with the
/// credentials moto takes, counting the requests.
async fn container_credentials_endpoint() -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body = r#"{"AccessKeyId": "testing", "SecretAccessKey": "testing", "Token": "container-token", "Expiration": "2999-01-01T00:00:00Z"}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}/v2/credentials/task-role"), count)
}

// Multi-threaded: the endpoint must answer while this thread waits on the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_takes_its_credentials_from_the_ecs_task_role_endpoint() {
    // The SDK is built without its default features (Cargo.toml); the ECS task role is how
    // the scheduled task gets credentials, so a run must still find them there.
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    let (uri, served) = container_credentials_endpoint().await;
    let home = std::env::temp_dir().join(format!("pcr-it-ecs-{}", env.name));
    std::fs::create_dir_all(&home).unwrap();
    let empty = home.join("empty-aws-file");
    std::fs::write(&empty, "").unwrap();
    let mut cmd = poller(&env, &[]);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", &home)
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri);
    let out = output_within(&mut cmd, RUN_LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(served.load(Ordering::SeqCst) >= 1, "the container credentials endpoint was asked");
    assert_eq!(env.sent().await.len(), 3);
    let _ = std::fs::remove_dir_all(&home);
    env.cleanup().await;
}
