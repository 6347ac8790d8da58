//! The real binary under stops and watchdog faults. SIGTERM mid-run: the request in flight finishes,
//! the cursor is saved on the last acknowledged record, the lease is released, the exit
//! code is 6, and the next run completes with nothing lost.

use std::process::{Command, Stdio};

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
