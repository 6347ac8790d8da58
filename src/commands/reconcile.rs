//! `reconcile --date D`: Envisionware's reservations of a day against the warehouse's
//! records for it (Redshift `pc_reserve`, suffixed like `patron_info`), and the
//! difference, like the warehouse's daily alarm.

use chrono::NaiveDate;

use crate::app::{self, AppError};
use crate::cli::ConfigArgs;
use crate::db::{connect_mysql, connect_pg, pg_options, with_timeout};

/// The counts of one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciliation {
    /// The day (`transaction_et`).
    pub date: NaiveDate,
    /// Reservations Envisionware holds for the day (`pcrDateTime` on that date).
    pub envisionware: u64,
    /// Rows the warehouse table holds for the day.
    pub warehouse_rows: u64,
    /// Distinct `key`s among them (re-sent duplicates counted once).
    pub warehouse_keys: u64,
    /// The warehouse table.
    pub table: String,
}

impl std::fmt::Display for Reconciliation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let diff = i128::from(self.envisionware) - i128::from(self.warehouse_keys);
        writeln!(f, "date          {}", self.date)?;
        writeln!(f, "envisionware  {} reservations", self.envisionware)?;
        writeln!(
            f,
            "warehouse     {} distinct keys ({} rows) in {}",
            self.warehouse_keys, self.warehouse_rows, self.table
        )?;
        let verdict = match diff {
            0 => "in step".to_string(),
            d if d > 0 => format!("{d} reservation(s) not in the warehouse"),
            d => format!("{} more key(s) in the warehouse than in Envisionware", -d),
        };
        write!(f, "difference    {diff} ({verdict})")
    }
}

/// The warehouse table: `pc_reserve` for production, else `pc_reserve_<REDSHIFT_DB_NAME>`.
pub fn pc_reserve_table(patron_table: &str) -> String {
    patron_table.replacen("patron_info", "pc_reserve", 1)
}

/// `reconcile`.
pub async fn reconcile(config: &ConfigArgs, date: NaiveDate) -> Result<(), AppError> {
    let raw = super::gather_and_log(config, &config.source(None))?;
    let (settings, _, _) = app::load(raw).await?;
    let start = date.and_hms_opt(0, 0, 0).ok_or_else(|| AppError::Usage("invalid date".into()))?;
    let end = start + chrono::Duration::days(1);
    let ew = connect_mysql(&settings.envisionware, settings.connect_timeout, &settings.retry)
        .await
        .map_err(|source| AppError::Connect { what: "Envisionware", source })?;
    let rs = connect_pg(
        "Redshift connect",
        pg_options(&settings.redshift, true, settings.statement_timeout),
        settings.connect_timeout,
        &settings.retry,
    )
    .await
    .map_err(|source| AppError::Connect { what: "Redshift", source })?;
    let envisionware: i64 = with_timeout(
        settings.statement_timeout,
        sqlx::query_scalar("SELECT COUNT(*) FROM strad_bci WHERE pcrDateTime >= ? AND pcrDateTime < ?")
            .bind(start)
            .bind(end)
            .fetch_one(&ew),
    )
    .await
    .map_err(|e| AppError::Tool(format!("Envisionware: {e}")))?;
    // The table name derives from REDSHIFT_DB_NAME, which the configuration restricts to
    // letters, digits and `_`.
    let table = pc_reserve_table(&settings.redshift_patron_table);
    let sql = format!(
        "SELECT COUNT(*), COUNT(DISTINCT key) FROM {table} WHERE CAST(transaction_et AS DATE) = CAST($1 AS DATE)"
    );
    let (rows, keys): (i64, i64) = with_timeout(
        settings.statement_timeout,
        // Unnamed, as every Redshift statement (see `db::pg_options`).
        sqlx::query_as(&sql).persistent(false).bind(date.format("%Y-%m-%d").to_string()).fetch_one(&rs),
    )
    .await
    .map_err(|e| AppError::Tool(format!("Redshift: {table}: {e}")))?;
    let report = Reconciliation {
        date,
        envisionware: u64::try_from(envisionware).unwrap_or(0),
        warehouse_rows: u64::try_from(rows).unwrap_or(0),
        warehouse_keys: u64::try_from(keys).unwrap_or(0),
        table,
    };
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warehouse_table_follows_patron_info() {
        assert_eq!(pc_reserve_table("patron_info"), "pc_reserve");
        assert_eq!(pc_reserve_table("patron_info_qa"), "pc_reserve_qa");
    }
}
