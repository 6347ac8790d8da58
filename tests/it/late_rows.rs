//! Late rows behind the cursor, against the local stack: rows that appear (or go) behind
//! the cursor after a caught-up run passed them are counted by the next caught-up run in
//! the window recorded beside the cursor (`docs/delivery.md`, "Late rows behind the cursor"), and
//! `backfill --only-missing` delivers them without duplicating the others.
//!
//! The rows are dated March 2026, so the runs raise `ENVISIONWARE_RETENTION_HOURS` and
//! `CURSOR_MAX_AGE_HOURS` to ten years: the data is "within retention" and the only
//! warnings are the ones under test.

use std::process::Output;
use std::time::{Duration, Instant};

use pc_reserve_poller::app;
use pc_reserve_poller::db::DbError;
use pc_reserve_poller::domain::{Cursor, Reservation};
use pc_reserve_poller::pipeline::{Stages, run};
use pc_reserve_poller::retry::RetryPolicy;
use pc_reserve_poller::sink::{Kinesis, Sender};
use pc_reserve_poller::source::envisionware::{COUNT_WINDOWS, Envisionware};
use pc_reserve_poller::source::{ReservationSource, Retention, WindowBounds};
use pc_reserve_poller::state::S3CursorStore;
use sqlx::{Connection as _, Executor as _, Row as _};

use crate::binary::{run_bin, tempdir, write_config};
use crate::support::{TestEnv, by_key, dt, p, row, s3_client};

/// Ten years: rows of March 2026 stay "within retention" and the cursor never "too old".
const DECADE_HOURS: &str = "87600";

/// The WARN of the late row of [`friday_then_a_late_row`], from the level on.
const LATE_WARN: &str = "WARN rows appeared behind the cursor after it had passed them and were not sent; to deliver them run the command given late_rows=1 range=(2026-03-06 14:02:00, 2026-03-06 17:02:00] command=pc-reserve-poller backfill --only-missing --from '2026-03-06 14:02:00' --to '2026-03-06 17:02:01'";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A configuration file for `env` with the decade-long retention and `overrides`.
async fn config(env: &TestEnv, overrides: &[(&str, &str)]) -> (std::path::PathBuf, String) {
    let dir = tempdir();
    let mut all =
        vec![("ENVISIONWARE_RETENTION_HOURS", DECADE_HOURS), ("CURSOR_MAX_AGE_HOURS", DECADE_HOURS)];
    all.extend_from_slice(overrides);
    let path = write_config(env, &dir, &all).await;
    let s = path.to_str().unwrap().to_string();
    (dir, s)
}

/// `pc-reserve-poller -c CONFIG ARGS...`, which must exit 0.
fn ok(cfg: &str, args: &[&str], env: &TestEnv) -> Output {
    let out = run_bin(&[&["-c", cfg][..], args].concat(), env, None);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
    out
}

/// The `summary=` of the `run finished` line.
fn summary(out: &Output) -> String {
    let stderr = text(&out.stderr);
    let line = stderr.lines().find(|l| l.contains("INFO run finished summary=")).unwrap_or_else(|| {
        panic!("no run finished line:\n{stderr}");
    });
    line.split_once("summary=").unwrap().1.to_string()
}

/// Every WARN line, from the level on, but the start-of-run warnings about unverified
/// database connections (the local stack's databases use `disable`; `tests/it/tls.rs`).
fn warnings(out: &Output) -> Vec<String> {
    text(&out.stderr)
        .lines()
        .filter(|l| !l.contains("WARN database connection not verified: "))
        .filter_map(|l| l.find("WARN ").map(|i| l[i..].to_string()))
        .collect()
}

/// The late-row window's metadata on the cursor object, in a fixed order.
async fn window_metadata(env: &TestEnv) -> Vec<(String, String)> {
    let head =
        s3_client(&env.sdk).head_object().bucket(&env.bucket).key(&env.cursor_key).send().await.unwrap();
    let m = head.metadata().cloned().unwrap_or_default();
    ["late-window-after", "late-window-through", "late-window-through-key", "late-window-rows"]
        .iter()
        .filter_map(|k| m.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

/// Friday: three reservations, sent by a first run that records the window
/// `(14:02:00, 17:02:00 key 3]` holding 3 rows.
async fn friday(env: &TestEnv, cfg: &str) {
    env.insert_rows(&[
        row(1, Some("21111"), "2026-03-06 17:00:00"),
        row(2, Some("21112"), "2026-03-06 17:01:00"),
        row(3, Some("21113"), "2026-03-06 17:02:00"),
    ])
    .await;
    let out = ok(cfg, &["run"], env);
    let s = summary(&out);
    assert!(s.contains("records=3 "), "{s}");
    assert!(s.contains(" late_rows=- deleted_rows=- "), "a new cursor object: not measured yet: {s}");
    assert_eq!(
        window_metadata(env).await,
        [
            ("late-window-after".to_string(), "2026-03-06 14:02:00".to_string()),
            ("late-window-through".into(), "2026-03-06 17:02:00".into()),
            ("late-window-through-key".into(), "3".into()),
            ("late-window-rows".into(), "3".into()),
        ]
    );
}

/// Friday, then a row stamped 16:30, behind the cursor, committed after the run.
async fn friday_then_a_late_row(env: &TestEnv, cfg: &str) {
    friday(env, cfg).await;
    env.insert_rows(&[row(10, Some("21110"), "2026-03-06 16:30:00")]).await;
}

#[tokio::test]
async fn a_row_inserted_behind_the_cursor_is_reported_as_exactly_1_late_row_with_its_range() {
    let env = TestEnv::new().await;
    let (_dir, cfg) = config(&env, &[]).await;
    friday_then_a_late_row(&env, &cfg).await;
    let cursor_before = env.cursor_object().await;

    // cursor show counts the recorded window now.
    let show = ok(&cfg, &["cursor", "show"], &env);
    assert!(
        text(&show.stdout).ends_with(
            "\nlate rows     1 appeared, 0 deleted in (2026-03-06 14:02:00, 2026-03-06 17:02:00] since the last caught-up run counted 3\n"
        ),
        "{}",
        text(&show.stdout)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&ok(&cfg, &["cursor", "show", "--format", "json"], &env).stdout).unwrap();
    assert_eq!((json["late_rows"].clone(), json["deleted_rows"].clone()), (1.into(), 0.into()));

    let out = ok(&cfg, &["run", "--metrics", "emf"], &env);
    assert_eq!(warnings(&out), [LATE_WARN]);
    let s = summary(&out);
    assert!(s.contains("records=0 ") && s.contains(" late_rows=1 deleted_rows=0 "), "{s}");
    let emf: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!((emf["LateRows"].clone(), emf["DeletedRows"].clone()), (1.into(), 0.into()));
    // Detection changes neither what is sent nor the cursor.
    assert_eq!(env.cursor_object().await, cursor_before);
    assert_eq!(by_key(&env.sent().await).len(), 3);
    // The new window holds the late row: the next run reports nothing more.
    assert_eq!(window_metadata(&env).await[3], ("late-window-rows".into(), "4".into()));
    let out = ok(&cfg, &["run"], &env);
    assert!(summary(&out).contains(" late_rows=0 deleted_rows=0 "), "{}", summary(&out));
    assert!(warnings(&out).is_empty(), "{:?}", warnings(&out));
    env.cleanup().await;
}

#[tokio::test]
async fn the_delivery_command_sends_the_late_row_once_and_nothing_else() {
    let env = TestEnv::new().await;
    let (_dir, cfg) = config(&env, &[]).await;
    friday_then_a_late_row(&env, &cfg).await;
    let out = ok(&cfg, &["run"], &env);
    assert_eq!(warnings(&out), [LATE_WARN]);
    // The command of the WARN line, as an operator pastes it.
    let args = ["backfill", "--only-missing", "--from", "2026-03-06 14:02:00", "--to", "2026-03-06 17:02:01"];
    let out = ok(&cfg, &args, &env);
    let stderr = text(&out.stderr);
    assert!(stderr.lines().any(|l| l.ends_with("rows_in_range=4 already_sent=3 to_send=1")), "{stderr}");
    let sent = env.sent().await;
    assert_eq!(sent.len(), 4, "three of Friday's run and the late row");
    let sent = by_key(&sent); // fails on a duplicate key
    for k in ["1", "2", "3", "10"] {
        assert!(sent.contains_key(&p(k)), "key {k} missing");
    }
    assert_eq!(sent[&p("10")].transaction_et.as_deref(), Some("2026-03-06"));
    // Run again: the stream holds every row of the range; nothing is sent.
    let out = ok(&cfg, &args, &env);
    let stderr = text(&out.stderr);
    assert!(stderr.lines().any(|l| l.ends_with("rows_in_range=4 already_sent=4 to_send=0")), "{stderr}");
    assert_eq!(env.sent().await.len(), 4);
    // The main cursor is untouched.
    assert_eq!(
        env.cursor_object().await.as_deref(),
        Some(r#"{"pcr_key": "3", "pcr_date_time": "2026-03-06 17:02:00"}"#)
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_row_deleted_behind_the_cursor_is_reported_as_1_deleted_row() {
    let env = TestEnv::new().await;
    let (_dir, cfg) = config(&env, &[]).await;
    friday(&env, &cfg).await;
    let mut my = sqlx::MySqlConnection::connect(&env.mysql_url()).await.unwrap();
    my.execute("DELETE FROM strad_bci WHERE pcrKey = 2").await.unwrap();
    let out = ok(&cfg, &["run", "--metrics", "emf"], &env);
    assert_eq!(
        warnings(&out),
        [
            "WARN rows were deleted behind the cursor since the last caught-up run deleted_rows=1 range=(2026-03-06 14:02:00, 2026-03-06 17:02:00]"
        ]
    );
    assert!(summary(&out).contains(" late_rows=0 deleted_rows=1 "), "{}", summary(&out));
    let emf: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!((emf["LateRows"].clone(), emf["DeletedRows"].clone()), (0.into(), 1.into()));
    env.cleanup().await;
}

#[tokio::test]
async fn a_closure_with_no_new_rows_reports_0_late_rows() {
    let env = TestEnv::new().await;
    let (_dir, cfg) = config(&env, &[]).await;
    friday(&env, &cfg).await;
    for _ in 0..2 {
        let out = ok(&cfg, &["run", "--metrics", "emf"], &env);
        let s = summary(&out);
        assert!(s.contains("records=0 ") && s.contains(" late_rows=0 deleted_rows=0 "), "{s}");
        assert!(warnings(&out).is_empty(), "{:?}", warnings(&out));
        let emf: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
        assert_eq!((emf["LateRows"].clone(), emf["DeletedRows"].clone()), (0.into(), 0.into()));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&ok(&cfg, &["cursor", "show", "--format", "json"], &env).stdout).unwrap();
    assert_eq!((json["late_rows"].clone(), json["deleted_rows"].clone()), (0.into(), 0.into()));
    env.cleanup().await;
}

#[tokio::test]
async fn a_cursor_written_by_the_python_service_reports_nothing_first_then_counts() {
    let env = TestEnv::new().await;
    let (_dir, cfg) = config(&env, &[]).await;
    env.insert_rows(&[
        row(1, Some("21111"), "2026-03-06 17:00:00"),
        row(2, Some("21112"), "2026-03-06 17:01:00"),
        row(3, Some("21113"), "2026-03-06 17:02:00"),
    ])
    .await;
    // The original service sent the three rows and wrote its cursor: no metadata.
    env.put_cursor_object(r#"{"pcr_key": "3", "pcr_date_time": "2026-03-06 17:02:00"}"#).await;
    env.insert_rows(&[row(10, Some("21110"), "2026-03-06 16:30:00")]).await;
    let show = ok(&cfg, &["cursor", "show", "--format", "json"], &env);
    let json: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(
        (json["late_rows"].clone(), json["late_window"].clone()),
        (serde_json::Value::Null, serde_json::Value::Null)
    );
    // First run: nothing to compare with (the late row is already in the table).
    let out = ok(&cfg, &["run", "--metrics", "emf"], &env);
    assert!(summary(&out).contains(" late_rows=- deleted_rows=- "), "{}", summary(&out));
    assert!(warnings(&out).is_empty(), "{:?}", warnings(&out));
    let emf: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert!(emf.get("LateRows").is_none() && emf.get("DeletedRows").is_none(), "{emf}");
    assert_eq!(window_metadata(&env).await[3], ("late-window-rows".into(), "4".into()));
    // From then on it counts.
    env.insert_rows(&[row(11, Some("21119"), "2026-03-06 16:45:00")]).await;
    let out = ok(&cfg, &["run"], &env);
    assert!(summary(&out).contains(" late_rows=1 deleted_rows=0 "), "{}", summary(&out));
    assert_eq!(warnings(&out).len(), 1, "{:?}", warnings(&out));
    env.cleanup().await;
}

/// `SELECT_COMMANDS` of `user` in MariaDB's user statistics (`userstat`).
async fn selects_of(admin: &mut sqlx::MySqlConnection, user: &str) -> i64 {
    sqlx::query(
        "SELECT CAST(SELECT_COMMANDS AS SIGNED) FROM information_schema.USER_STATISTICS WHERE USER = ?",
    )
    .bind(user)
    .fetch_optional(&mut *admin)
    .await
    .unwrap()
    .map_or(0, |r| r.get::<i64, _>(0))
}

#[tokio::test]
async fn with_the_window_at_0_a_run_sends_no_extra_query() {
    let env = TestEnv::new().await;
    // Envisionware through a user of the test's own, whose statements MariaDB counts.
    let user = format!("{}_ew", env.name);
    let mut admin = sqlx::MySqlConnection::connect(&env.stack.mysql_admin).await.unwrap();
    let userstat: String =
        sqlx::query_scalar("SELECT CAST(@@global.userstat AS CHAR)").fetch_one(&mut admin).await.unwrap();
    admin.execute("SET GLOBAL userstat = 1").await.unwrap();
    for host in ["%", "localhost", "127.0.0.1"] {
        admin
            .execute(format!("CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY 'pw'").as_str())
            .await
            .unwrap();
        admin.execute(format!("GRANT SELECT ON {}.* TO '{user}'@'{host}'", env.name).as_str()).await.unwrap();
    }
    let creds = [("ENVISIONWARE_DB_USER", user.as_str()), ("ENVISIONWARE_DB_PASSWORD", "pw")];
    let (_d0, off) = config(&env, &[creds[0], creds[1], ("LATE_ROW_WINDOW_HOURS", "0")]).await;
    let (_d3, on) = config(&env, &[creds[0], creds[1]]).await;
    env.insert_rows(&[
        row(1, Some("21111"), "2026-03-06 17:00:00"),
        row(2, Some("21112"), "2026-03-06 17:01:00"),
    ])
    .await;
    let out = ok(&off, &["run"], &env);
    assert!(summary(&out).contains(" late_rows=- deleted_rows=- "), "{}", summary(&out));
    assert!(window_metadata(&env).await.is_empty(), "W=0 records no window");
    // Two runs that find nothing, identical but for the window.
    let before = selects_of(&mut admin, &user).await;
    let out = ok(&off, &["run"], &env);
    assert!(summary(&out).contains(" late_rows=- deleted_rows=- "), "{}", summary(&out));
    let with_0 = selects_of(&mut admin, &user).await - before;
    let before = selects_of(&mut admin, &user).await;
    ok(&on, &["run"], &env);
    let with_3 = selects_of(&mut admin, &user).await - before;
    println!("SELECT statements of a run: {with_0} with LATE_ROW_WINDOW_HOURS=0, {with_3} with 3");
    assert!(with_0 > 0, "the counter counts this user's statements");
    assert_eq!(with_3, with_0 + 1, "one COUNT with the window on, none with it off");
    admin
        .execute(format!("SET GLOBAL userstat = {}", if userstat == "1" { 1 } else { 0 }).as_str())
        .await
        .unwrap();
    for host in ["%", "localhost", "127.0.0.1"] {
        let _ = admin.execute(format!("DROP USER IF EXISTS '{user}'@'{host}'").as_str()).await;
    }
    env.cleanup().await;
}

/// Envisionware whose reads and clock are the real ones but whose count goes to a closed
/// pool, so it fails as a lost connection does.
struct CountFails {
    reads: Envisionware,
    counts: Envisionware,
}

impl ReservationSource for CountFails {
    async fn read_after(&self, after: Cursor, limit: usize) -> Result<Vec<Reservation>, DbError> {
        self.reads.read_after(after, limit).await
    }

    async fn retention(&self) -> Result<Option<Retention>, DbError> {
        self.reads.retention().await
    }

    async fn count_windows(
        &self,
        old: WindowBounds,
        new: WindowBounds,
    ) -> Result<Option<(u64, u64)>, DbError> {
        self.counts.count_windows(old, new).await
    }
}

/// A writer the test reads back: the run's log lines.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_count_is_a_warning_and_the_run_succeeds() {
    use tracing::instrument::WithSubscriber as _;
    let env = TestEnv::new().await;
    let (_dir, cfg) = config(&env, &[]).await;
    friday_then_a_late_row(&env, &cfg).await;
    let metadata_before = window_metadata(&env).await;
    let settings = env
        .settings(&[
            ("ENVISIONWARE_RETENTION_HOURS", Some(DECADE_HOURS)),
            ("CURSOR_MAX_AGE_HOURS", Some(DECADE_HOURS)),
        ])
        .await;
    let connected = app::connect(&settings).await.unwrap();
    let closed = sqlx::mysql::MySqlPoolOptions::new().connect(&env.mysql_url()).await.unwrap();
    closed.close().await;
    let mut stages = Stages {
        source: CountFails {
            reads: connected.envisionware,
            counts: Envisionware::new(closed, Duration::from_secs(5), RetryPolicy::none()),
        },
        sierra: connected.sierra,
        redshift: connected.redshift,
        store: Some(S3CursorStore::new(
            s3_client(&env.sdk),
            env.stack.aws().target(),
            env.bucket.clone(),
            env.cursor_key.clone(),
        )),
        sender: Some(Sender::new(
            Kinesis::new(&env.sdk, env.stack.aws().target(), env.stream_arn.clone()),
            settings.retry,
            0,
        )),
        pseudonymizer: app::pseudonymizer(&settings).unwrap(),
        encoder: connected.encoder,
    };
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_target(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let summary = run(&mut stages, &app::run_options(&settings))
        .with_subscriber(subscriber)
        .await
        .expect("a failed count does not fail the run (exit code 0)");
    assert_eq!((summary.late_rows, summary.deleted_rows), (None, None));
    assert!(summary.to_string().contains(" late_rows=- deleted_rows=- "), "{summary}");
    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let warns: Vec<&str> = log.lines().filter_map(|l| l.find("WARN ").map(|i| &l[i..])).collect();
    assert_eq!(warns.len(), 1, "{log}");
    assert!(
        warns[0].starts_with(
            "WARN could not count the rows behind the cursor: late rows not measured this run error="
        ),
        "{log}"
    );
    // The recorded window is kept: the next run that can count still sees the late row.
    assert_eq!(window_metadata(&env).await, metadata_before);
    let out = ok(&cfg, &["run"], &env);
    assert_eq!(warnings(&out), [LATE_WARN]);
    env.cleanup().await;
}

/// Two days of reservations: 100,000 rows, one every 1.728 s (rounded to the second, so
/// about a third of the seconds hold two rows).
async fn two_days(env: &TestEnv) {
    let mut my = sqlx::MySqlConnection::connect(&env.mysql_url()).await.unwrap();
    let start = dt("2026-03-05 00:00:00");
    for chunk in (1..=100_000i64).collect::<Vec<_>>().chunks(2_000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|k| {
                let t = start + chrono::TimeDelta::milliseconds(k * 1_728);
                format!(
                    "({k}, '2333300000{:04}', 45, '{}', 'Mid-Manhattan', 'Floor 2')",
                    k % 997,
                    t.format("%Y-%m-%d %H:%M:%S")
                )
            })
            .collect();
        // Generated numbers and dates only: no outside value reaches this text.
        my.execute(
            format!(
                "INSERT INTO strad_bci (pcrKey, pcrUserID, pcrMinutesUsed, pcrDateTime, pcrBranch, pcrArea) VALUES {}",
                values.join(",")
            )
            .as_str(),
        )
        .await
        .unwrap();
    }
    my.execute("ANALYZE TABLE strad_bci").await.unwrap();
}

/// EXPLAIN of the count of the default 3-hour window at the end of the second day, with
/// the previous window an hour earlier; returns (type, key, rows) of the plan.
async fn explain_count(my: &mut sqlx::MySqlConnection) -> (String, Option<String>, i64) {
    let (old, new) = windows();
    let row = sqlx::query(&format!("EXPLAIN {COUNT_WINDOWS}"))
        .bind(old.after)
        .bind(old.through.date_time)
        .bind(old.through.date_time)
        .bind(old.through.key)
        .bind(new.after)
        .bind(new.through.date_time)
        .bind(new.through.date_time)
        .bind(new.through.key)
        .bind(old.after)
        .bind(new.through.date_time)
        .fetch_one(&mut *my)
        .await
        .unwrap();
    let text = |c: &str| {
        row.try_get::<Option<String>, _>(c).ok().flatten().or_else(|| {
            row.try_get::<Option<Vec<u8>>, _>(c)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
    };
    let rows = text("rows").and_then(|r| r.parse().ok()).unwrap_or(-1);
    (text("type").unwrap_or_default(), text("key"), rows)
}

/// The previous window (ending 22:00 on the second day) and the new one (ending 23:00).
fn windows() -> (WindowBounds, WindowBounds) {
    let w = |through: &str| WindowBounds {
        after: dt(through) - chrono::TimeDelta::hours(3),
        through: Cursor { date_time: dt(through), key: i64::MAX },
    };
    (w("2026-03-06 22:00:00"), w("2026-03-06 23:00:00"))
}

/// Median time of `n` counts.
async fn time_count(source: &Envisionware, n: usize) -> (Duration, (u64, u64)) {
    let (old, new) = windows();
    let mut times = Vec::new();
    let mut counts = (0, 0);
    for _ in 0..n {
        let t = Instant::now();
        counts = source.count_windows(old, new).await.unwrap().unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    (times[n / 2], counts)
}

#[tokio::test]
async fn the_count_is_one_range_scan_of_the_cursor_index_on_two_days_of_rows() {
    let env = TestEnv::new().await;
    two_days(&env).await;
    let mut my = sqlx::MySqlConnection::connect(&env.mysql_url()).await.unwrap();
    let pool =
        sqlx::mysql::MySqlPoolOptions::new().max_connections(1).connect(&env.mysql_url()).await.unwrap();
    let source = Envisionware::new(pool, Duration::from_secs(30), RetryPolicy::none());
    // Rows one every 1.728 s: 3 hours hold 6,250 rows; 21:00..22:00 and 22:00..23:00 are
    // counted by the old and the new window.
    let (with_index, counts) = time_count(&source, 11).await;
    assert_eq!(counts, (6_250, 6_250));
    let (kind, key, rows) = explain_count(&mut my).await;
    assert_eq!((kind.as_str(), key.as_deref()), ("range", Some("strad_bci_cursor")), "rows {rows}");
    assert!(rows < 20_000, "the plan reads the 4 hours of both windows, not the table: {rows}");
    // Without the index (if the real table lacked it): the whole table.
    my.execute("ALTER TABLE strad_bci DROP INDEX strad_bci_cursor").await.unwrap();
    my.execute("ANALYZE TABLE strad_bci").await.unwrap();
    let (kind_without, _, rows_without) = explain_count(&mut my).await;
    let (without_index, counts_without) = time_count(&source, 11).await;
    assert_eq!(counts_without, counts);
    assert_eq!(kind_without, "ALL");
    println!(
        "COUNT of two late-row windows on 100,000 rows: median {:.2} ms with the (pcrDateTime, pcrKey) index (plan: range, {rows} rows), {:.2} ms without it (plan: ALL, {rows_without} rows)",
        with_index.as_secs_f64() * 1e3,
        without_index.as_secs_f64() * 1e3,
    );
    env.cleanup().await;
}
