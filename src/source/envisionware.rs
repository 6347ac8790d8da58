//! Reads Envisionware (MySQL) `strad_bci` after the cursor, with bound parameters only.

use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use sqlx::mysql::{MySql, MySqlPool};
use sqlx::{Executor as _, Row as _, Statement as _};

use super::{ReservationSource, Retention, WindowBounds};
use crate::db::{DbError, context, expect_column, with_timeout};
use crate::domain::{Cursor, Reservation};
use crate::retry::{RetryCount, RetryPolicy, retry};

/// The keyset condition, written once: rows strictly after `(dt, key)` in
/// `(pcrDateTime, pcrKey)` order, binding `dt`, `dt`, `key`. The first condition lets the
/// server use an index on `(pcrDateTime, pcrKey)`; rows with a NULL `pcrDateTime` have no
/// place in that order and are never selected.
macro_rules! after_cursor {
    () => {
        "pcrDateTime >= ? AND (pcrDateTime > ? OR pcrKey > ?)"
    };
}

/// The columns a run reads, as [`Envisionware::read_after`] decodes them.
macro_rules! reservation_columns {
    () => {
        "SELECT CAST(pcrKey AS SIGNED) AS pcr_key, pcrUserID, \
         CAST(pcrMinutesUsed AS SIGNED) AS minutes, pcrDateTime, pcrBranch, pcrArea, pcrUserData1 \
         FROM strad_bci "
    };
}

/// The next rows after the cursor, in cursor order.
const READ_AFTER: &str =
    concat!(reservation_columns!(), "WHERE ", after_cursor!(), " ORDER BY pcrDateTime, pcrKey LIMIT ?");

/// [`READ_AFTER`] restricted to rows at least `?` seconds older than the database's own
/// `NOW()` (`SETTLE_DELAY_SECONDS`): a row stamped with a time but committed later, or
/// written during November's repeated hour, is still ahead of the cursor when it appears.
const READ_AFTER_SETTLED: &str = concat!(
    reservation_columns!(),
    "WHERE ",
    after_cursor!(),
    " AND pcrDateTime <= NOW() - INTERVAL ? SECOND ORDER BY pcrDateTime, pcrKey LIMIT ?"
);

/// The oldest row and the database's clock, for the retention watchdog.
const RETENTION: &str = "SELECT MIN(pcrDateTime) AS oldest, NOW() AS db_now FROM strad_bci";

/// How many rows a run from the cursor would read.
const COUNT_AFTER: &str = concat!("SELECT COUNT(*) FROM strad_bci WHERE ", after_cursor!());

/// [`COUNT_AFTER`], before a time.
const COUNT_AFTER_BEFORE: &str =
    concat!("SELECT COUNT(*) FROM strad_bci WHERE ", after_cursor!(), " AND pcrDateTime < ?");

/// Whether a row lies in a late-row window, binding its `after`, `through` time twice and
/// `through` key: `after < pcrDateTime` and `(pcrDateTime, pcrKey) <= through`.
macro_rules! in_window {
    () => {
        "pcrDateTime > ? AND (pcrDateTime < ? OR (pcrDateTime = ? AND pcrKey <= ?))"
    };
}

/// The rows of two late-row windows, in one range scan of the `(pcrDateTime, pcrKey)`
/// index: the outer bounds (the earlier `after`, the later `through` time) come last.
pub const COUNT_WINDOWS: &str = concat!(
    "SELECT CAST(COALESCE(SUM(",
    in_window!(),
    "), 0) AS SIGNED) AS old_rows, CAST(COALESCE(SUM(",
    in_window!(),
    "), 0) AS SIGNED) AS new_rows FROM strad_bci WHERE pcrDateTime > ? AND pcrDateTime <= ?"
);

/// The newest reservation's time.
const NEWEST: &str = "SELECT MAX(pcrDateTime) FROM strad_bci";

/// Reservations in `[start, end)`.
const COUNT_BETWEEN: &str = "SELECT COUNT(*) FROM strad_bci WHERE pcrDateTime >= ? AND pcrDateTime < ?";

/// The database's own date (the clock reservations are stamped in: the session keeps the
/// server's time zone, see `db::mysql_options`).
const TODAY: &str = "SELECT CURDATE()";

/// The Envisionware reader.
#[derive(Debug, Clone)]
pub struct Envisionware {
    pool: MySqlPool,
    statement_timeout: Duration,
    retry: RetryPolicy,
    retries: RetryCount,
    settle_delay: Duration,
}

impl Envisionware {
    /// The pool the lookups run on (to ask the connection what it negotiated).
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// A reader on an open pool.
    pub fn new(pool: MySqlPool, statement_timeout: Duration, retry: RetryPolicy) -> Self {
        Self { pool, statement_timeout, retry, retries: RetryCount::default(), settle_delay: Duration::ZERO }
    }

    /// Counts this reader's retries in `retries` (the run's count).
    pub fn counting(self, retries: &RetryCount) -> Self {
        Self { retries: retries.clone(), ..self }
    }

    /// Reads only rows whose `pcrDateTime` is at least `delay` before the database's
    /// `NOW()` (zero, the default, reads everything).
    pub fn with_settle_delay(mut self, delay: Duration) -> Self {
        self.settle_delay = delay;
        self
    }

    /// The keyset read this reader sends: with or without the settle delay.
    fn read_statement(&self) -> &'static str {
        if self.settle_delay.as_secs() == 0 { READ_AFTER } else { READ_AFTER_SETTLED }
    }

    /// What `check` runs: the keyset read exactly as a run sends it, after the last
    /// possible cursor (so it matches nothing), and the retention query; then the result
    /// columns of both checked against the types a run decodes them as.
    pub(crate) async fn probe(&self) -> Result<(), DbError> {
        let keyset = context("keyset read");
        let last = NaiveDate::from_ymd_opt(9999, 12, 31)
            .and_then(|d| d.and_hms_opt(23, 59, 59))
            .ok_or_else(|| DbError { message: "no last date-time".into(), transient: false })?;
        self.read_after(Cursor { date_time: last, key: i64::MAX }, 1).await.map_err(&keyset)?;
        self.retention().await.map_err(context("retention query"))?;
        let mut conn = with_timeout(self.statement_timeout, self.pool.acquire()).await?;
        let read = with_timeout(self.statement_timeout, conn.prepare(self.read_statement()))
            .await
            .map_err(&keyset)?;
        let columns = read.columns();
        expect_column::<MySql, i64>(columns, "pcr_key").map_err(&keyset)?;
        expect_column::<MySql, Option<i64>>(columns, "minutes").map_err(&keyset)?;
        expect_column::<MySql, NaiveDateTime>(columns, "pcrDateTime").map_err(&keyset)?;
        for text in ["pcrUserID", "pcrBranch", "pcrArea", "pcrUserData1"] {
            expect_column::<MySql, Option<Vec<u8>>>(columns, text).map_err(&keyset)?;
        }
        let retention = context("retention query");
        let held = with_timeout(self.statement_timeout, conn.prepare(RETENTION)).await.map_err(&retention)?;
        expect_column::<MySql, Option<NaiveDateTime>>(held.columns(), "oldest").map_err(&retention)?;
        expect_column::<MySql, NaiveDateTime>(held.columns(), "db_now").map_err(&retention)?;
        Ok(())
    }

    /// Counts the reservations strictly after `after` in cursor order, and before `until`
    /// when given (the rows a run from `after` would read). Not retried: the tools ask once.
    pub(crate) async fn count_after(
        &self,
        after: Cursor,
        until: Option<NaiveDateTime>,
    ) -> Result<u64, DbError> {
        let query = sqlx::query_scalar(if until.is_some() { COUNT_AFTER_BEFORE } else { COUNT_AFTER })
            .bind(after.date_time)
            .bind(after.date_time)
            .bind(after.key);
        let query = match until {
            Some(until) => query.bind(until),
            None => query,
        };
        let n: i64 = with_timeout(self.statement_timeout, query.fetch_one(&self.pool)).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The newest `pcrDateTime`, if any.
    pub(crate) async fn newest(&self) -> Result<Option<NaiveDateTime>, DbError> {
        with_timeout(self.statement_timeout, sqlx::query_scalar(NEWEST).fetch_one(&self.pool)).await
    }

    /// Reservations whose `pcrDateTime` falls on `date`.
    pub(crate) async fn count_on(&self, date: NaiveDate) -> Result<u64, DbError> {
        let start = date.and_time(chrono::NaiveTime::MIN);
        let end = start + chrono::Duration::days(1);
        let query = sqlx::query_scalar(COUNT_BETWEEN).bind(start).bind(end);
        let n: i64 = with_timeout(self.statement_timeout, query.fetch_one(&self.pool)).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Envisionware's own date today.
    pub(crate) async fn today(&self) -> Result<NaiveDate, DbError> {
        with_timeout(self.statement_timeout, sqlx::query_scalar(TODAY).fetch_one(&self.pool)).await
    }

    /// Closes the pool (tools that open a reader for one question).
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

/// Text columns are read as bytes and decoded leniently: a stray non-UTF-8 byte must not
/// stop the poller forever.
fn text(row: &sqlx::mysql::MySqlRow, column: &str) -> Result<Option<String>, sqlx::Error> {
    let bytes: Option<Vec<u8>> = row.try_get(column)?;
    Ok(bytes.map(|b| match String::from_utf8(b) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }))
}

impl ReservationSource for Envisionware {
    async fn read_after(&self, after: Cursor, limit: usize) -> Result<Vec<Reservation>, DbError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = retry(
            &self.retry,
            &self.retries,
            "Envisionware",
            |e: &DbError| e.transient,
            || {
                let settle = i64::try_from(self.settle_delay.as_secs()).unwrap_or(i64::MAX);
                let query = sqlx::query(self.read_statement())
                    .bind(after.date_time)
                    .bind(after.date_time)
                    .bind(after.key);
                let query = if settle == 0 { query } else { query.bind(settle) };
                with_timeout(self.statement_timeout, query.bind(limit).fetch_all(&self.pool))
            },
        )
        .await?;
        rows.iter()
            .map(|row| {
                let date_time: NaiveDateTime = row.try_get("pcrDateTime")?;
                Ok(Reservation {
                    key: row.try_get("pcr_key")?,
                    barcode: text(row, "pcrUserID")?,
                    minutes_used: row.try_get("minutes")?,
                    date_time,
                    branch: text(row, "pcrBranch")?,
                    area: text(row, "pcrArea")?,
                    staff_override: text(row, "pcrUserData1")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| DbError::from_sqlx(&e))
    }

    async fn retention(&self) -> Result<Option<Retention>, DbError> {
        let row = retry(
            &self.retry,
            &self.retries,
            "Envisionware",
            |e: &DbError| e.transient,
            || with_timeout(self.statement_timeout, sqlx::query(RETENTION).fetch_one(&self.pool)),
        )
        .await?;
        let oldest: Option<NaiveDateTime> = row.try_get("oldest").map_err(|e| DbError::from_sqlx(&e))?;
        let now: NaiveDateTime = row.try_get("db_now").map_err(|e| DbError::from_sqlx(&e))?;
        let settle = chrono::TimeDelta::from_std(self.settle_delay).unwrap_or(chrono::TimeDelta::MAX);
        let readable_through = now.checked_sub_signed(settle).unwrap_or(NaiveDateTime::MIN);
        Ok(Some(Retention { oldest, now, readable_through }))
    }

    async fn count_windows(
        &self,
        old: WindowBounds,
        new: WindowBounds,
    ) -> Result<Option<(u64, u64)>, DbError> {
        let bind_window = |q: sqlx::query::Query<'static, MySql, sqlx::mysql::MySqlArguments>,
                           w: WindowBounds| {
            q.bind(w.after).bind(w.through.date_time).bind(w.through.date_time).bind(w.through.key)
        };
        let query = bind_window(bind_window(sqlx::query(COUNT_WINDOWS), old), new)
            .bind(old.after.min(new.after))
            .bind(old.through.date_time.max(new.through.date_time));
        let row = with_timeout(self.statement_timeout, query.fetch_one(&self.pool)).await?;
        let count = |column: &str| -> Result<u64, DbError> {
            let n: i64 = row.try_get(column).map_err(|e| DbError::from_sqlx(&e))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(Some((count("old_rows")?, count("new_rows")?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statements as Envisionware receives them: built from one keyset condition, the
    /// same text as when each was written out in full.
    #[test]
    fn the_statements_share_one_keyset_condition() {
        let columns = "SELECT CAST(pcrKey AS SIGNED) AS pcr_key, pcrUserID, CAST(pcrMinutesUsed AS SIGNED) AS minutes, pcrDateTime, pcrBranch, pcrArea, pcrUserData1 FROM strad_bci";
        let keyset = "pcrDateTime >= ? AND (pcrDateTime > ? OR pcrKey > ?)";
        assert_eq!(READ_AFTER, format!("{columns} WHERE {keyset} ORDER BY pcrDateTime, pcrKey LIMIT ?"));
        assert_eq!(
            READ_AFTER_SETTLED,
            format!(
                "{columns} WHERE {keyset} AND pcrDateTime <= NOW() - INTERVAL ? SECOND ORDER BY pcrDateTime, pcrKey LIMIT ?"
            )
        );
        let window = "pcrDateTime > ? AND (pcrDateTime < ? OR (pcrDateTime = ? AND pcrKey <= ?))";
        assert_eq!(
            COUNT_WINDOWS,
            format!(
                "SELECT CAST(COALESCE(SUM({window}), 0) AS SIGNED) AS old_rows, CAST(COALESCE(SUM({window}), 0) AS SIGNED) AS new_rows FROM strad_bci WHERE pcrDateTime > ? AND pcrDateTime <= ?"
            )
        );
        assert_eq!(COUNT_AFTER, format!("SELECT COUNT(*) FROM strad_bci WHERE {keyset}"));
        assert_eq!(
            COUNT_AFTER_BEFORE,
            format!("SELECT COUNT(*) FROM strad_bci WHERE {keyset} AND pcrDateTime < ?")
        );
    }
}
