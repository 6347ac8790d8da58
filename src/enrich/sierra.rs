//! Sierra (PostgreSQL): barcode -> patron id (`phrase_entry`) -> patron attributes
//! (`patron_view`), both with bound array parameters.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::{PgPool, Postgres};
use sqlx::{Executor as _, Row as _, Statement as _};

use super::{PatronDirectory, PatronMatch, PatronRow, PhraseEntry, match_patrons, patron_ids_by_barcode};
use crate::db::{DbError, context, expect_column, with_timeout};
use crate::retry::{RetryCount, RetryPolicy, retry};

/// Phrase entries whose tagged form equals one of `$1` (`'b' || barcode`).
const PHRASE_ENTRIES: &str = "SELECT index_tag || index_entry AS tagged, record_id \
     FROM sierra_view.phrase_entry \
     WHERE index_tag || index_entry = ANY($1) \
       AND index_tag IS NOT NULL AND index_entry IS NOT NULL AND record_id IS NOT NULL";

/// Patron rows for the patron ids in `$1`; the home library code is trimmed and an
/// empty or `none` value becomes NULL on the server already.
const PATRONS: &str = "SELECT id, barcode, ptype_code::int AS ptype_code, pcode3::int AS pcode3, \
     CASE WHEN TRIM(home_library_code) = '' OR TRIM(home_library_code) = 'none' THEN NULL \
          ELSE TRIM(home_library_code) END AS home_library_code \
     FROM sierra_view.patron_view WHERE id = ANY($1)";

/// The Sierra lookup.
#[derive(Debug, Clone)]
pub struct Sierra {
    pool: PgPool,
    statement_timeout: Duration,
    retry: RetryPolicy,
    retries: RetryCount,
}

impl Sierra {
    /// A lookup on an open pool.
    pub fn new(pool: PgPool, statement_timeout: Duration, retry: RetryPolicy) -> Self {
        Self { pool, statement_timeout, retry, retries: RetryCount::default() }
    }

    /// Counts this lookup's retries in `retries` (the run's count).
    pub fn counting(self, retries: &RetryCount) -> Self {
        Self { retries: retries.clone(), ..self }
    }

    /// What `check` runs: both lookups exactly as a run sends them, with arrays that
    /// match nothing, then the result columns of both statements checked against the
    /// types a run decodes them as.
    pub(crate) async fn probe(&self) -> Result<(), DbError> {
        self.phrase_entries(&[]).await.map_err(context("phrase_entry lookup"))?;
        self.patron_rows(&[]).await.map_err(context("patron_view lookup"))?;
        let mut conn = with_timeout(self.statement_timeout, self.pool.acquire()).await?;
        let phrase = with_timeout(self.statement_timeout, conn.prepare(PHRASE_ENTRIES))
            .await
            .map_err(context("phrase_entry lookup"))?;
        let columns = phrase.columns();
        expect_column::<Postgres, String>(columns, "tagged").map_err(context("phrase_entry lookup"))?;
        expect_column::<Postgres, i64>(columns, "record_id").map_err(context("phrase_entry lookup"))?;
        let patrons = with_timeout(self.statement_timeout, conn.prepare(PATRONS))
            .await
            .map_err(context("patron_view lookup"))?;
        let columns = patrons.columns();
        let patron_view = context("patron_view lookup");
        expect_column::<Postgres, i64>(columns, "id").map_err(&patron_view)?;
        expect_column::<Postgres, Option<String>>(columns, "barcode").map_err(&patron_view)?;
        expect_column::<Postgres, Option<i32>>(columns, "ptype_code").map_err(&patron_view)?;
        expect_column::<Postgres, Option<i32>>(columns, "pcode3").map_err(&patron_view)?;
        expect_column::<Postgres, Option<String>>(columns, "home_library_code").map_err(&patron_view)?;
        Ok(())
    }

    async fn phrase_entries(&self, tagged: &[String]) -> Result<Vec<PhraseEntry>, DbError> {
        let rows = retry(
            &self.retry,
            &self.retries,
            "Sierra",
            |e: &DbError| e.transient,
            || {
                with_timeout(
                    self.statement_timeout,
                    sqlx::query(PHRASE_ENTRIES).bind(tagged).fetch_all(&self.pool),
                )
            },
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PhraseEntry { tagged_barcode: r.try_get("tagged")?, record_id: r.try_get("record_id")? })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| DbError::from_sqlx(&e))
    }

    async fn patron_rows(&self, ids: &[i64]) -> Result<Vec<PatronRow>, DbError> {
        let rows = retry(
            &self.retry,
            &self.retries,
            "Sierra",
            |e: &DbError| e.transient,
            || with_timeout(self.statement_timeout, sqlx::query(PATRONS).bind(ids).fetch_all(&self.pool)),
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PatronRow {
                    id: r.try_get("id")?,
                    barcode: r.try_get("barcode")?,
                    ptype_code: r.try_get("ptype_code")?,
                    pcode3: r.try_get("pcode3")?,
                    home_library_code: r.try_get("home_library_code")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| DbError::from_sqlx(&e))
    }
}

impl PatronDirectory for Sierra {
    async fn patrons_by_barcode(&self, barcodes: &[String]) -> Result<HashMap<String, PatronMatch>, DbError> {
        if barcodes.is_empty() {
            return Ok(HashMap::new());
        }
        let tagged: Vec<String> = barcodes.iter().map(|b| format!("b{b}")).collect();
        let ids = patron_ids_by_barcode(&self.phrase_entries(&tagged).await?);
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut distinct: Vec<i64> = ids.values().copied().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let rows = self.patron_rows(&distinct).await?;
        Ok(match_patrons(&ids, &rows))
    }
}
