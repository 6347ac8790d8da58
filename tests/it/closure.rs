//! Closures against the local stack: Envisionware keeps about two days, so after a long
//! closure its oldest row is newer than the cursor although nothing was lost. The caught-up
//! mark beside the cursor (S3 object metadata) tells that from rows purged before they
//! were read. Envisionware's clock is played with `SET timestamp` on the one connection
//! the run reads through, and its purge is played with a `DELETE`.

use std::time::Duration;

use pc_reserve_poller::app::{self, AppError};
use pc_reserve_poller::pipeline::{RunError, RunSummary, Stages, run};
use pc_reserve_poller::retry::RetryPolicy;
use pc_reserve_poller::sink::{Kinesis, Sender};
use pc_reserve_poller::source::envisionware::Envisionware;
use pc_reserve_poller::state::S3CursorStore;
use sqlx::mysql::MySqlPoolOptions;

use crate::support::{TestEnv, by_key, dt, p, row, s3_client};

/// The poller with Envisionware's clock in the test's hands: every run reads through one
/// connection whose `NOW()` is pinned with `SET timestamp`; the rest of the stages are
/// the real ones (Sierra, Redshift, Kinesis and the S3 cursor on the local stack).
pub(crate) struct Poller<'a> {
    env: &'a TestEnv,
    clock: sqlx::MySqlPool,
}

impl<'a> Poller<'a> {
    pub(crate) async fn new(env: &'a TestEnv) -> Self {
        let clock = MySqlPoolOptions::new().max_connections(1).connect(&env.mysql_url()).await.unwrap();
        sqlx::query("SET time_zone = '+00:00'").execute(&clock).await.unwrap();
        Self { env, clock }
    }

    /// Sets Envisionware's clock, then purges what it keeps no longer: rows more than 48
    /// hours old, as Envisionware does.
    async fn at(&self, local: &str) {
        sqlx::query("SET timestamp = UNIX_TIMESTAMP(?)").bind(dt(local)).execute(&self.clock).await.unwrap();
        sqlx::query("DELETE FROM strad_bci WHERE pcrDateTime < NOW() - INTERVAL 48 HOUR")
            .execute(&self.clock)
            .await
            .unwrap();
    }

    /// One run at Envisionware's time `local`, with a fresh cursor store as a new process
    /// would have.
    pub(crate) async fn run_at(&self, local: &str) -> Result<RunSummary, AppError> {
        self.at(local).await;
        let settings = self.env.settings(&[]).await;
        let connected = app::connect(&settings).await?;
        let source = Envisionware::new(self.clock.clone(), Duration::from_secs(30), RetryPolicy::none());
        let mut stages = Stages {
            source,
            sierra: connected.sierra,
            redshift: connected.redshift,
            store: Some(S3CursorStore::new(
                s3_client(&self.env.sdk),
                self.env.stack.aws().target(),
                self.env.bucket.clone(),
                self.env.cursor_key.clone(),
            )),
            sender: Some(Sender::new(
                Kinesis::new(&self.env.sdk, self.env.stack.aws().target(), self.env.stream_arn.clone()),
                settings.retry,
                0,
            )),
            pseudonymizer: app::pseudonymizer(&settings)?,
            encoder: connected.encoder,
        };
        Ok(run(&mut stages, &app::run_options(&settings)).await?)
    }
}

/// The caught-up mark in the cursor object's metadata (`x-amz-meta-caught-up-through`).
async fn caught_up_mark(env: &TestEnv) -> Option<String> {
    let head =
        s3_client(&env.sdk).head_object().bucket(&env.bucket).key(&env.cursor_key).send().await.unwrap();
    head.metadata().and_then(|m| m.get("caught-up-through")).cloned()
}

/// Friday evening: three reservations, read at 18:00.
async fn friday(env: &TestEnv, poller: &Poller<'_>) {
    env.insert_rows(&[
        row(1, Some("21111"), "2026-03-06 17:00:00"),
        row(2, Some("21112"), "2026-03-06 17:01:00"),
        row(3, Some("21113"), "2026-03-06 17:02:00"),
    ])
    .await;
    assert_eq!(poller.run_at("2026-03-06 18:00:00").await.unwrap().records(), 3);
    assert_eq!(caught_up_mark(env).await.as_deref(), Some("2026-03-06 18:00:00"));
}

#[tokio::test]
async fn a_three_day_closure_with_runs_finding_nothing_then_new_rows_passes() {
    let env = TestEnv::new().await;
    let poller = Poller::new(&env).await;
    friday(&env, &poller).await;
    // Closed from Friday evening to Tuesday morning. The scheduled runs go on and find
    // nothing; by Sunday evening Envisionware has purged Friday's rows and is empty.
    for t in [
        "2026-03-07 06:00:00",
        "2026-03-07 18:00:00",
        "2026-03-08 06:00:00",
        "2026-03-08 18:00:00",
        "2026-03-09 06:00:00",
        "2026-03-09 18:00:00",
        "2026-03-10 06:00:00",
    ] {
        let s = poller.run_at(t).await.unwrap_or_else(|e| panic!("run at {t}: {e}"));
        assert_eq!(s.records(), 0, "run at {t}");
        assert_eq!(caught_up_mark(&env).await.as_deref(), Some(t), "the mark follows each run");
    }
    // The cursor object's JSON is still the original's, on Friday's last row.
    assert_eq!(
        env.cursor_object().await.as_deref(),
        Some(r#"{"pcr_key": "3", "pcr_date_time": "2026-03-06 17:02:00"}"#)
    );
    // Tuesday: the library reopens. The oldest row is newer than the cursor, but the
    // last run was caught up four hours ago: nothing lay in between.
    env.insert_rows(&[
        row(4, Some("21114"), "2026-03-10 09:00:00"),
        row(5, Some("21115"), "2026-03-10 09:30:00"),
    ])
    .await;
    let s = poller.run_at("2026-03-10 10:00:00").await.unwrap();
    assert_eq!(s.records(), 2);
    assert_eq!(
        env.cursor_object().await.as_deref(),
        Some(r#"{"pcr_key": "5", "pcr_date_time": "2026-03-10 09:30:00"}"#)
    );
    assert_eq!(caught_up_mark(&env).await.as_deref(), Some("2026-03-10 10:00:00"));
    let sent = by_key(&env.sent().await);
    assert_eq!(sent.len(), 5);
    assert!((1..=5).all(|k| sent.contains_key(&p(&k.to_string()))));
    env.cleanup().await;
}

#[tokio::test]
async fn a_poller_stopped_for_three_days_while_rows_were_purged_still_fails_with_exit_5() {
    let env = TestEnv::new().await;
    let poller = Poller::new(&env).await;
    friday(&env, &poller).await;
    // The poller stops. Saturday's rows are written, then purged on Monday; Monday's
    // rows are written.
    env.insert_rows(&[
        row(4, Some("21114"), "2026-03-07 10:00:00"),
        row(5, Some("21115"), "2026-03-07 10:30:00"),
    ])
    .await;
    env.insert_rows(&[row(6, Some("21116"), "2026-03-09 10:00:00")]).await;
    let cursor_before = env.cursor_object().await;
    // Monday noon: the last caught-up read was 66 hours ago, more than the 48-hour window.
    let err = poller.run_at("2026-03-09 12:00:00").await.unwrap_err();
    assert!(matches!(err, AppError::Run(RunError::RetentionLost { .. })), "{err}");
    assert_eq!(err.exit_code(), 5);
    let text = err.to_string();
    for part in ["2026-03-09 10:00:00", "2026-03-06 17:02:00", "last caught up through 2026-03-06 18:00:00"] {
        assert!(text.contains(part), "{part}: {text}");
    }
    // Nothing sent beyond Friday's rows, the cursor and its mark untouched.
    assert_eq!(by_key(&env.sent().await).len(), 3);
    assert_eq!(env.cursor_object().await, cursor_before);
    assert_eq!(caught_up_mark(&env).await.as_deref(), Some("2026-03-06 18:00:00"));
    env.cleanup().await;
}

#[tokio::test]
async fn a_cursor_written_without_a_mark_is_judged_as_before() {
    let env = TestEnv::new().await;
    let poller = Poller::new(&env).await;
    friday(&env, &poller).await;
    poller.run_at("2026-03-09 06:00:00").await.unwrap();
    // The original service writes the cursor: same JSON, no metadata.
    env.put_cursor_object(r#"{"pcr_key": "3", "pcr_date_time": "2026-03-06 17:02:00"}"#).await;
    assert_eq!(caught_up_mark(&env).await, None);
    env.insert_rows(&[row(4, Some("21114"), "2026-03-09 09:00:00")]).await;
    let err = poller.run_at("2026-03-09 10:00:00").await.unwrap_err();
    assert_eq!(err.exit_code(), 5, "{err}");
    assert!(err.to_string().contains("no caught-up mark"), "{err}");
    env.cleanup().await;
}

#[tokio::test]
async fn cursor_set_keeps_the_caught_up_mark() {
    let env = TestEnv::new().await;
    let poller = Poller::new(&env).await;
    friday(&env, &poller).await;
    let dir = crate::binary::tempdir();
    let config = crate::binary::write_config(&env, &dir, &[]).await;
    let set =
        ["-c", config.to_str().unwrap(), "cursor", "set", "--date-time", "2026-03-06 17:00:00", "--key", "1"];
    let out = crate::binary::run_bin(&[&set[..], &["--yes"]].concat(), &env, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        env.cursor_object().await.as_deref(),
        Some(r#"{"pcr_key": "1", "pcr_date_time": "2026-03-06 17:00:00"}"#)
    );
    assert_eq!(caught_up_mark(&env).await.as_deref(), Some("2026-03-06 18:00:00"));
    env.cleanup().await;
}
