//! Crash safety against the local stack: the lease (one runner at a time), exit 4 when
//! another writer moves the cursor mid-run, the retention watchdog, and the settle delay's
//! cover for late commits and November's repeated hour.

use std::time::Duration;

use pc_reserve_poller::app::AppError;
use pc_reserve_poller::db::DbError;
use pc_reserve_poller::domain::Cursor;
use pc_reserve_poller::pipeline::RunError;
use pc_reserve_poller::retry::RetryPolicy;
use pc_reserve_poller::source::ReservationSource as _;
use pc_reserve_poller::source::envisionware::Envisionware;
use sqlx::mysql::MySqlPoolOptions;

use crate::process::{RUN_LIMIT, kill_after, output_of};
use crate::stopping::{PACED, poller, wait_for_first_cursor};
use crate::support::{TestEnv, by_key, dt, many_rows, p, row, s3_client};

const LEASE_KEY: &str = "poller/state.json.lease";

async fn put_lease(env: &TestEnv, owner: &str, expires_at: &str) {
    let body = format!(
        r#"{{"owner": "{owner}", "acquired_at": "2026-01-01T00:00:00Z", "expires_at": "{expires_at}"}}"#
    );
    s3_client(&env.sdk)
        .put_object()
        .bucket(&env.bucket)
        .key(LEASE_KEY)
        .body(body.into_bytes().into())
        .send()
        .await
        .unwrap();
}

async fn lease_body(env: &TestEnv) -> Option<String> {
    let out = s3_client(&env.sdk).get_object().bucket(&env.bucket).key(LEASE_KEY).send().await.ok()?;
    Some(String::from_utf8(out.body.collect().await.unwrap().into_bytes().to_vec()).unwrap())
}

#[tokio::test]
async fn a_run_is_refused_while_another_runner_holds_the_lease() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(5)).await;
    put_lease(&env, "other-task", "2999-01-01T00:00:00Z").await;
    let err = env.run(&[]).await.unwrap_err();
    assert!(matches!(err, AppError::Lease(_)), "{err}");
    assert_eq!(err.exit_code(), 3);
    assert!(err.to_string().contains("other-task"), "{err}");
    assert!(env.sent().await.is_empty(), "the loser sends nothing");
    assert_eq!(env.cursor_object().await, None);
    assert!(lease_body(&env).await.unwrap().contains("other-task"), "the holder's lease stays");
    env.cleanup().await;
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_released_at_the_end() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(5)).await;
    put_lease(&env, "crashed-task", "2020-01-01T00:00:00Z").await;
    let s = env.run(&[]).await.unwrap();
    assert_eq!(s.records(), 5);
    assert_eq!(lease_body(&env).await, None, "released at exit");
    // And the next run takes a fresh lease.
    assert_eq!(env.run(&[]).await.unwrap().records(), 0);
    env.cleanup().await;
}

#[tokio::test]
async fn ignore_cache_runs_take_no_lease() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    put_lease(&env, "other-task", "2999-01-01T00:00:00Z").await;
    let s = env.run(&[("IGNORE_CACHE", Some("true"))]).await.unwrap();
    assert_eq!(s.records(), 3);
    env.cleanup().await;
}

#[tokio::test]
async fn a_lease_at_a_configured_key_is_honoured() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    put_lease(&env, "other-task", "2999-01-01T00:00:00Z").await;
    // The default key is held, but this run is told to use another one.
    let s = env.run(&[("LEASE_RESOURCE", Some("elsewhere.lease"))]).await.unwrap();
    assert_eq!(s.records(), 3);
    env.cleanup().await;
}

#[tokio::test]
async fn retention_lost_fails_with_its_own_exit_code_and_sends_nothing() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(5)).await; // 2024-06-01 10:00:00 onwards
    let before = r#"{"pcr_key": "77", "pcr_date_time": "2024-05-20 08:00:00"}"#;
    env.put_cursor_object(before).await;
    let err = env.run(&[]).await.unwrap_err();
    assert!(matches!(err, AppError::Run(RunError::RetentionLost { .. })), "{err}");
    assert_eq!(err.exit_code(), 5);
    let text = err.to_string();
    assert!(text.contains("2024-06-01 10:00:00") && text.contains("2024-05-20 08:00:00"), "{text}");
    assert!(env.sent().await.is_empty());
    assert_eq!(env.cursor_object().await.as_deref(), Some(before), "cursor untouched");
    env.cleanup().await;
}

#[tokio::test]
async fn an_old_cursor_with_its_rows_still_there_only_warns() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(5)).await;
    // Cursor years old (older than CURSOR_MAX_AGE_HOURS) but Envisionware still holds
    // the row it points at: a warning, and the run goes on.
    env.put_cursor_object(r#"{"pcr_key": "1", "pcr_date_time": "2024-06-01 10:00:00"}"#).await;
    let s = env.run(&[("CURSOR_MAX_AGE_HOURS", Some("1"))]).await.unwrap();
    assert_eq!(s.records(), 4);
    env.cleanup().await;
}

#[tokio::test]
async fn the_first_run_from_pcr_date_time_is_not_a_retention_loss() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(2)).await;
    // PCR_DATE_TIME (2023-01-01) is far before the oldest row, but there is no cursor yet.
    assert_eq!(env.run(&[]).await.unwrap().records(), 2);
    env.cleanup().await;
}

#[tokio::test]
async fn settle_delay_leaves_rows_younger_than_the_delay_for_a_later_run() {
    let env = TestEnv::new().await;
    let mut c = <sqlx::MySqlConnection as sqlx::Connection>::connect(&env.mysql_url()).await.unwrap();
    let now: chrono::NaiveDateTime = sqlx::query_scalar("SELECT NOW()").fetch_one(&mut c).await.unwrap();
    let fmt = |t: chrono::NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
    env.insert_rows(&[
        row(1, Some("21111"), &fmt(now - chrono::TimeDelta::hours(2))),
        row(2, Some("21111"), &fmt(now - chrono::TimeDelta::minutes(10))),
    ])
    .await;
    let s = env.run(&[("SETTLE_DELAY_SECONDS", Some("3600"))]).await.unwrap();
    assert_eq!(s.records(), 1);
    assert_eq!(env.cursor().await.map(|c| c.key), Some(1));
    // Time passes (a shorter delay stands in for it): the young row follows, once.
    let s = env.run(&[("SETTLE_DELAY_SECONDS", Some("60"))]).await.unwrap();
    assert_eq!(s.records(), 1);
    assert_eq!(by_key(&env.sent().await).len(), 2);
    env.cleanup().await;
}

/// A source on one connection whose `NOW()` is pinned with `SET timestamp`, so a test can
/// play the database's clock forward (and, for DST, back) like the real one.
struct Clocked {
    pool: sqlx::MySqlPool,
    source: Envisionware,
}

impl Clocked {
    async fn new(env: &TestEnv, settle: Duration) -> Self {
        let pool = MySqlPoolOptions::new().max_connections(1).connect(&env.mysql_url()).await.unwrap();
        sqlx::query("SET time_zone = '+00:00'").execute(&pool).await.unwrap();
        let source = Envisionware::new(pool.clone(), Duration::from_secs(30), RetryPolicy::none())
            .with_settle_delay(settle);
        Self { pool, source }
    }

    async fn at(&self, local: &str) {
        sqlx::query("SET timestamp = UNIX_TIMESTAMP(?)").bind(dt(local)).execute(&self.pool).await.unwrap();
    }

    /// One poll as the pipeline does it: read after the cursor, move it to the last row.
    async fn poll(&self, cursor: &mut Cursor) -> Result<Vec<i64>, DbError> {
        let rows = self.source.read_after(*cursor, 1000).await?;
        if let Some(last) = rows.last() {
            *cursor = last.cursor();
        }
        Ok(rows.iter().map(|r| r.key).collect())
    }
}

async fn late_commit_scenario(env: &TestEnv, settle: Duration) -> Vec<i64> {
    let db = Clocked::new(env, settle).await;
    let mut cursor = Cursor { date_time: dt("2026-03-10 00:00:00"), key: 0 };
    let mut seen = Vec::new();
    env.insert_rows(&[
        row(1, Some("21111"), "2026-03-10 09:00:00"),
        row(2, Some("21111"), "2026-03-10 09:58:00"),
    ])
    .await;
    db.at("2026-03-10 10:00:00").await;
    seen.extend(db.poll(&mut cursor).await.unwrap());
    // A row stamped 09:55 whose transaction commits only at 10:01.
    env.insert_rows(&[row(3, Some("21111"), "2026-03-10 09:55:00")]).await;
    for t in ["2026-03-10 10:05:00", "2026-03-10 10:10:00", "2026-03-10 11:00:00"] {
        db.at(t).await;
        seen.extend(db.poll(&mut cursor).await.unwrap());
    }
    seen
}

#[tokio::test]
async fn hazard_a_late_commit_is_missed_without_settle_delay_and_caught_with_it() {
    let env = TestEnv::new().await;
    assert_eq!(late_commit_scenario(&env, Duration::ZERO).await, vec![1, 2], "row 3 is behind the cursor");
    env.cleanup().await;
    let env = TestEnv::new().await;
    let mut seen = late_commit_scenario(&env, Duration::from_secs(600)).await;
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2, 3], "a 10-minute delay covers a 6-minute commit lag");
    env.cleanup().await;
}

async fn dst_repeat_scenario(env: &TestEnv, settle: Duration) -> Vec<i64> {
    // 2026-11-01: New York clocks go 01:59:59 EDT -> 01:00:00 EST; Envisionware writes
    // naive local times, so 01:00-01:59 happens twice.
    let db = Clocked::new(env, settle).await;
    let mut cursor = Cursor { date_time: dt("2026-11-01 00:00:00"), key: 0 };
    let mut seen = Vec::new();
    env.insert_rows(&[
        row(1, Some("21111"), "2026-11-01 00:30:00"),
        row(2, Some("21111"), "2026-11-01 01:10:00"), // first pass (EDT)
        row(3, Some("21111"), "2026-11-01 01:50:00"), // first pass (EDT)
    ])
    .await;
    db.at("2026-11-01 01:55:00").await; // EDT
    seen.extend(db.poll(&mut cursor).await.unwrap());
    env.insert_rows(&[
        row(4, Some("21111"), "2026-11-01 01:05:00"), // second pass (EST)
        row(5, Some("21111"), "2026-11-01 01:40:00"), // second pass (EST)
    ])
    .await;
    for t in ["2026-11-01 01:45:00", "2026-11-01 02:30:00", "2026-11-01 03:00:00", "2026-11-01 04:00:00"] {
        db.at(t).await; // EST from here on
        seen.extend(db.poll(&mut cursor).await.unwrap());
    }
    seen
}

#[tokio::test]
async fn hazard_the_repeated_november_hour_is_missed_without_settle_delay_and_caught_with_an_hour() {
    let env = TestEnv::new().await;
    assert_eq!(dst_repeat_scenario(&env, Duration::ZERO).await, vec![1, 2, 3], "rows 4, 5 are lost");
    env.cleanup().await;
    let env = TestEnv::new().await;
    let mut seen = dst_repeat_scenario(&env, Duration::from_secs(3600)).await;
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2, 3, 4, 5], "a one-hour delay covers the repeated hour");
    env.cleanup().await;
}

#[tokio::test]
async fn signal_free_runs_keep_the_record_for_every_key() {
    // Sanity: the lease does not change what a plain run sends.
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(4)).await;
    env.run(&[]).await.unwrap();
    let sent = by_key(&env.sent().await);
    assert!((1..=4).all(|k| sent.contains_key(&p(&k.to_string()))));
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
