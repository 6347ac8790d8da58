//! Reads Envisionware (MySQL) `strad_bci` after the cursor, with bound parameters only.

use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::Row as _;
use sqlx::mysql::MySqlPool;

use super::ReservationSource;
use crate::db::{DbError, with_timeout};
use crate::domain::{Cursor, Reservation};
use crate::retry::{RetryPolicy, retry};

/// Rows strictly after `(dt, key)` in `(pcrDateTime, pcrKey)` order. The first condition
/// lets the server use an index on `(pcrDateTime, pcrKey)`; rows with a NULL
/// `pcrDateTime` have no place in that order and are never selected.
const READ_AFTER: &str = "SELECT CAST(pcrKey AS SIGNED) AS pcr_key, pcrUserID, \
     CAST(pcrMinutesUsed AS SIGNED) AS minutes, pcrDateTime, pcrBranch, pcrArea, pcrUserData1 \
     FROM strad_bci \
     WHERE pcrDateTime >= ? AND (pcrDateTime > ? OR pcrKey > ?) \
     ORDER BY pcrDateTime, pcrKey \
     LIMIT ?";

/// The Envisionware reader.
#[derive(Debug, Clone)]
pub struct Envisionware {
    pool: MySqlPool,
    statement_timeout: Duration,
    retry: RetryPolicy,
}

impl Envisionware {
    /// A reader on an open pool.
    pub fn new(pool: MySqlPool, statement_timeout: Duration, retry: RetryPolicy) -> Self {
        Self { pool, statement_timeout, retry }
    }

    /// The pool, for tools that run their own queries.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
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
            "Envisionware",
            |e: &DbError| e.transient,
            || {
                with_timeout(
                    self.statement_timeout,
                    sqlx::query(READ_AFTER)
                        .bind(after.date_time)
                        .bind(after.date_time)
                        .bind(after.key)
                        .bind(limit)
                        .fetch_all(&self.pool),
                )
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
}
