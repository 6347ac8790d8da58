//! Redshift: pseudonymous patron id -> postal code and census tract, from `patron_info`
//! (or `patron_info_<REDSHIFT_DB_NAME>`). Redshift has no array type, so the ids are
//! bound as scalar text parameters in chunks, in an unnamed statement. `postal_code` and
//! `geoid` are cast to `VARCHAR` in the query: they are not text columns in every
//! cluster, and the original sent whatever came back in its text form. Text parameters
//! and text results have the same bytes in the binary format the driver asks for, so
//! nothing depends on Redshift's binary encodings.

use std::collections::HashMap;
use std::time::Duration;

use chrono::NaiveDate;

use sqlx::postgres::{PgPool, Postgres};
use sqlx::{Executor as _, Row as _, Statement as _};

use super::{Geo, GeoDirectory, GeoRow, geo_by_patron};
use crate::db::{DbError, context, expect_column, with_timeout};
use crate::retry::{RetryCount, RetryPolicy, retry};

/// The warehouse table: `pc_reserve` for production, else `pc_reserve_<REDSHIFT_DB_NAME>`.
pub(crate) fn pc_reserve_table(patron_table: &str) -> String {
    patron_table.replacen("patron_info", "pc_reserve", 1)
}

/// Parameters per Redshift query.
const CHUNK: usize = 500;

/// What `check` looks up: no pseudonym (bcrypt's alphabet has no space or colon).
const NO_SUCH_PATRON: &str = "check: no such patron";

/// The Redshift lookup.
#[derive(Debug, Clone)]
pub struct Redshift {
    pool: PgPool,
    table: String,
    statement_timeout: Duration,
    retry: RetryPolicy,
    retries: RetryCount,
}

impl Redshift {
    /// The pool the lookups run on (to ask the connection what it negotiated).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A lookup on an open pool. `table` was validated as an identifier by the
    /// configuration (it cannot be a bound parameter).
    pub fn new(pool: PgPool, table: String, statement_timeout: Duration, retry: RetryPolicy) -> Self {
        Self { pool, table, statement_timeout, retry, retries: RetryCount::default() }
    }

    /// Counts this lookup's retries in `retries` (the run's count).
    pub fn counting(self, retries: &RetryCount) -> Self {
        Self { retries: retries.clone(), ..self }
    }

    /// The warehouse table the sent records land in, beside the patron table.
    pub(crate) fn pc_reserve_table(&self) -> String {
        pc_reserve_table(&self.table)
    }

    /// The warehouse's rows for `date` (`transaction_et`) in [`Self::pc_reserve_table`],
    /// and the distinct `key`s among them. Not retried: `reconcile` asks once.
    pub(crate) async fn count_sent_on(&self, date: NaiveDate) -> Result<(u64, u64), DbError> {
        // The table name derives from REDSHIFT_DB_NAME, which the configuration restricts
        // to letters, digits and `_`.
        let sql = format!(
            "SELECT COUNT(*), COUNT(DISTINCT key) FROM {} WHERE CAST(transaction_et AS DATE) = CAST($1 AS DATE)",
            self.pc_reserve_table()
        );
        let (rows, keys): (i64, i64) = with_timeout(
            self.statement_timeout,
            // Unnamed, as every Redshift statement (see `db::pg_options`).
            sqlx::query_as(&sql)
                .persistent(false)
                .bind(date.format("%Y-%m-%d").to_string())
                .fetch_one(&self.pool),
        )
        .await?;
        Ok((u64::try_from(rows).unwrap_or(0), u64::try_from(keys).unwrap_or(0)))
    }

    fn query_text(&self, n: usize) -> String {
        let params: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        format!(
            "SELECT patron_id, CAST(postal_code AS VARCHAR) AS postal_code, CAST(geoid AS VARCHAR) AS geoid \
             FROM {} WHERE patron_id IN ({})",
            self.table,
            params.join(", ")
        )
    }
}

impl Redshift {
    /// What `check` runs: the lookup exactly as a run sends it, for an id that matches
    /// nothing, then its result columns checked against the types a run decodes them as.
    /// The column check prepares a named statement, so its connection is closed after.
    pub(crate) async fn probe(&self) -> Result<(), DbError> {
        let lookup = context(&self.table);
        self.geo_by_patron(&[NO_SUCH_PATRON.to_string()]).await.map_err(&lookup)?;
        let mut conn = with_timeout(self.statement_timeout, self.pool.acquire()).await?;
        let sql = self.query_text(1);
        let statement = with_timeout(self.statement_timeout, conn.prepare(&sql)).await.map_err(&lookup)?;
        let columns = statement.columns();
        for name in ["patron_id", "postal_code", "geoid"] {
            expect_column::<Postgres, Option<String>>(columns, name).map_err(&lookup)?;
        }
        drop(statement);
        let _ = conn.close().await;
        Ok(())
    }
}

impl GeoDirectory for Redshift {
    async fn geo_by_patron(&self, pseudonyms: &[String]) -> Result<HashMap<String, Geo>, DbError> {
        let mut rows = Vec::new();
        for chunk in pseudonyms.chunks(CHUNK) {
            let sql = self.query_text(chunk.len());
            let fetched = retry(
                &self.retry,
                &self.retries,
                "Redshift",
                |e: &DbError| e.transient,
                || {
                    let mut q = sqlx::query(&sql).persistent(false);
                    for p in chunk {
                        q = q.bind(p.as_str());
                    }
                    with_timeout(self.statement_timeout, q.fetch_all(&self.pool))
                },
            )
            .await?;
            for r in &fetched {
                rows.push(GeoRow {
                    patron_id: r.try_get("patron_id").map_err(|e| DbError::from_sqlx(&e))?,
                    postal_code: r.try_get("postal_code").map_err(|e| DbError::from_sqlx(&e))?,
                    geoid: r.try_get("geoid").map_err(|e| DbError::from_sqlx(&e))?,
                });
            }
        }
        let (unique, duplicated) = geo_by_patron(rows);
        if !duplicated.is_empty() {
            // Pseudonyms may be logged; raw identifiers may not.
            tracing::warn!(
                pseudonymous_patron_ids = ?duplicated,
                "patron ids on more than one Redshift row: no postal code or geoid for them"
            );
        }
        Ok(unique)
    }
}
