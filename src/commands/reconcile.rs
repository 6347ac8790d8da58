//! `reconcile --date D`: Envisionware's reservations of a day against the warehouse's
//! records for it (Redshift `pc_reserve`, suffixed like `patron_info`), and the
//! difference, like the warehouse's daily alarm. A difference larger than the tolerance
//! fails with its own exit code, so a scheduled check can alarm on it; `--format json`
//! prints the counts as one JSON object.

use chrono::NaiveDate;

use crate::app::{self, AppError, ToolError};
use crate::cli::{ConfigArgs, OutputFormat, ReconcileDay};
#[cfg(test)]
use crate::enrich::redshift::pc_reserve_table;

/// The counts of one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reconciliation {
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

impl Reconciliation {
    /// Envisionware's reservations minus the warehouse's distinct keys (negative when the
    /// warehouse holds more).
    pub(crate) fn difference(&self) -> i128 {
        i128::from(self.envisionware) - i128::from(self.warehouse_keys)
    }

    /// What the difference means, in words.
    pub(crate) fn verdict(&self) -> String {
        match self.difference() {
            0 => "in step".to_string(),
            d if d > 0 => format!("{d} reservation(s) not in the warehouse"),
            d => format!("{} more key(s) in the warehouse than in Envisionware", -d),
        }
    }

    /// Whether the difference, either way, is at most `tolerance`.
    pub(crate) fn within(&self, tolerance: u64) -> bool {
        self.difference().unsigned_abs() <= u128::from(tolerance)
    }

    /// The `--format json` object.
    pub(crate) fn to_json(&self, tolerance: u64) -> serde_json::Value {
        // Both counts come from SQL COUNT(*) (an i64), so the clamp never bites; it keeps
        // the conversion total.
        let difference = self.difference().clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        serde_json::json!({
            "date": self.date.format("%Y-%m-%d").to_string(),
            "envisionware": self.envisionware,
            "warehouse_keys": self.warehouse_keys,
            "warehouse_rows": self.warehouse_rows,
            "table": self.table,
            "difference": i64::try_from(difference).unwrap_or_default(),
            "tolerance": tolerance,
            "within_tolerance": self.within(tolerance),
        })
    }
}

impl std::fmt::Display for Reconciliation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "date          {}", self.date)?;
        writeln!(f, "envisionware  {} reservations", self.envisionware)?;
        writeln!(
            f,
            "warehouse     {} distinct keys ({} rows) in {}",
            self.warehouse_keys, self.warehouse_rows, self.table
        )?;
        write!(f, "difference    {} ({})", self.difference(), self.verdict())
    }
}

/// `reconcile`: prints the counts (text or JSON), then fails with
/// [`AppError::ReconcileDifference`] when the difference is larger than `tolerance`.
pub async fn reconcile(
    config: &ConfigArgs,
    day: ReconcileDay,
    tolerance: u64,
    format: OutputFormat,
) -> Result<(), AppError> {
    let raw = super::gather_and_log(config, &config.source(None))?;
    let (settings, _, _) = app::load(raw).await?;
    let ew_error = ToolError::Envisionware;
    let source = app::connect_envisionware(&settings, &settings.retry).await?;
    let date = match day {
        ReconcileDay::On(date) => date,
        // Envisionware's own date: its clock is the one reservations are stamped in.
        ReconcileDay::DaysAgo(days) => {
            source.today().await.map_err(ew_error)? - chrono::Duration::days(i64::from(days))
        }
    };
    let warehouse = app::connect_redshift(&settings).await?;
    let envisionware = source.count_on(date).await.map_err(ew_error)?;
    let table = warehouse.pc_reserve_table();
    let (rows, keys) = warehouse
        .count_sent_on(date)
        .await
        .map_err(|source| ToolError::Redshift { table: table.clone(), source })?;
    let report = Reconciliation { date, envisionware, warehouse_rows: rows, warehouse_keys: keys, table };
    match format {
        OutputFormat::Text => println!("{report}"),
        OutputFormat::Json => println!("{}", report.to_json(tolerance)),
    }
    if report.within(tolerance) {
        Ok(())
    } else {
        Err(AppError::ReconcileDifference {
            difference: report.difference(),
            tolerance,
            missing: report.verdict(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(envisionware: u64, keys: u64) -> Reconciliation {
        Reconciliation {
            date: NaiveDate::from_ymd_opt(2024, 6, 1).unwrap(),
            envisionware,
            warehouse_rows: keys + 1,
            warehouse_keys: keys,
            table: "pc_reserve_qa".into(),
        }
    }

    #[test]
    fn the_tolerance_bounds_the_difference_either_way() {
        assert!(day(6, 6).within(0));
        assert!(!day(6, 4).within(1) && day(6, 4).within(2));
        assert!(!day(4, 6).within(1) && day(4, 6).within(2));
        assert_eq!(day(4, 6).verdict(), "2 more key(s) in the warehouse than in Envisionware");
        assert_eq!(
            day(6, 4).to_json(1).to_string(),
            r#"{"date":"2024-06-01","difference":2,"envisionware":6,"table":"pc_reserve_qa","tolerance":1,"warehouse_keys":4,"warehouse_rows":5,"within_tolerance":false}"#
        );
    }

    #[test]
    fn the_warehouse_table_follows_patron_info() {
        assert_eq!(pc_reserve_table("patron_info"), "pc_reserve");
        assert_eq!(pc_reserve_table("patron_info_qa"), "pc_reserve_qa");
    }
}
