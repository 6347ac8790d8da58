//! `cursor show` and `cursor set`: read the S3 cursor with its age and backlog, or move
//! it with the same conditional write runs use. `cursor show --format json` prints the
//! report as one JSON object, with the late rows counted since the last caught-up run.

use std::io::{BufRead as _, Write as _};
use std::time::Duration;

use crate::app::{self, AppError, StartupError, ToolError};
use crate::cli::{ConfigArgs, OutputFormat};
use crate::config::Settings;
use crate::domain::{Cursor, format_date_time};
use crate::source::{ReservationSource as _, WindowBounds};
use crate::state::{CursorStore as _, LateWindow, S3CursorStore, StateError};

/// What `cursor show` prints.
#[derive(Debug)]
pub(crate) struct CursorReport {
    /// `s3://bucket/key`.
    pub location: String,
    /// The cursor, if the object exists.
    pub cursor: Option<Cursor>,
    /// When the object was last written (UTC), if known.
    pub written: Option<chrono::DateTime<chrono::Utc>>,
    /// Reservations after the cursor.
    pub behind: u64,
    /// Newest reservation in Envisionware.
    pub newest: Option<chrono::NaiveDateTime>,
    /// The late-row window recorded beside the cursor and how many rows it holds now.
    pub late: Option<(LateWindow, u64)>,
}

impl CursorReport {
    /// Rows that appeared in the recorded window since it was counted (`None`: no window).
    fn late_rows(&self) -> Option<u64> {
        self.late.map(|(w, now)| now.saturating_sub(w.rows))
    }

    /// Rows that went from the recorded window since it was counted (`None`: no window).
    fn deleted_rows(&self) -> Option<u64> {
        self.late.map(|(w, now)| w.rows.saturating_sub(now))
    }
}

impl std::fmt::Display for CursorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "cursor        {}", self.location)?;
        match self.cursor {
            None => writeln!(
                f,
                "state         does not exist yet (the first run starts at PCR_DATE_TIME/PCR_KEY)"
            )?,
            Some(c) => {
                writeln!(f, "pcr_date_time {}", format_date_time(c.date_time))?;
                writeln!(f, "pcr_key       {}", c.key)?;
            }
        }
        if let Some(w) = self.written {
            let age = (chrono::Utc::now() - w).to_std().unwrap_or(Duration::ZERO);
            writeln!(
                f,
                "written       {} ({} ago)",
                w.format("%Y-%m-%d %H:%M:%S UTC"),
                crate::progress::human_duration(age)
            )?;
        }
        let newest = self.newest.map_or_else(|| "none".into(), format_date_time);
        let lag = match (self.cursor, self.newest) {
            (Some(c), n) => super::lag(c, n).map_or_else(|| "-".into(), crate::progress::human_duration),
            (None, _) => "-".into(),
        };
        writeln!(f, "behind        {} reservation(s) after it; newest {newest}; lag {lag}", self.behind)?;
        match (self.late, self.late_rows(), self.deleted_rows()) {
            (Some((w, _)), Some(late), Some(deleted)) => write!(
                f,
                "late rows     {late} appeared, {deleted} deleted in ({}, {}] since the last caught-up run counted {}",
                format_date_time(w.after),
                format_date_time(w.through.date_time),
                w.rows
            ),
            _ => write!(
                f,
                "late rows     - (no window recorded beside the cursor; the next caught-up run records one)"
            ),
        }
    }
}

impl CursorReport {
    /// The `--format json` object. Times are Envisionware's (`pcr_date_time`, `newest`) or
    /// UTC in RFC 3339 (`written`); `lag_seconds` is how far the cursor is behind the
    /// newest reservation, null without a cursor or reservations.
    pub(crate) fn to_json(&self, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
        let secs = |d: Duration| d.as_secs();
        serde_json::json!({
            "location": self.location,
            "exists": self.cursor.is_some(),
            "pcr_date_time": self.cursor.map(|c| format_date_time(c.date_time)),
            "pcr_key": self.cursor.map(|c| c.key.to_string()),
            "written": self.written.map(|w| w.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "written_age_seconds": self.written.map(|w| secs((now - w).to_std().unwrap_or(Duration::ZERO))),
            "behind": self.behind,
            "newest": self.newest.map(format_date_time),
            "lag_seconds": self.cursor.and_then(|c| super::lag(c, self.newest)).map(secs),
            "late_rows": self.late_rows(),
            "deleted_rows": self.deleted_rows(),
            "late_window": self.late.map(|(w, _)| serde_json::json!({
                "after": format_date_time(w.after),
                "through": format_date_time(w.through.date_time),
                "through_key": w.through.key.to_string(),
                "rows": w.rows,
            })),
        })
    }
}

async fn settings_and_store(
    config: &ConfigArgs,
) -> Result<(Settings, S3CursorStore, aws_sdk_s3::Client), AppError> {
    let raw = super::gather_and_log(config, &config.source(None))?;
    let (settings, sdk, aws) = app::load(raw).await?;
    if settings.ignore_cache {
        return Err(AppError::Usage("IGNORE_CACHE is set: there is no cursor object to show or set".into()));
    }
    let client = app::s3_client(&sdk, &aws);
    let store = app::cursor_store(&settings, client.clone(), aws.target());
    Ok((settings, store, client))
}

/// `cursor show`, as aligned lines or one JSON object.
pub async fn show(config: &ConfigArgs, format: OutputFormat) -> Result<(), AppError> {
    let (settings, store, client) = settings_and_store(config).await?;
    let cursor = store.load().await?;
    let written = match cursor {
        None => None,
        Some(_) => client
            .head_object()
            .bucket(&settings.s3_bucket)
            .key(&settings.s3_resource)
            .send()
            .await
            .ok()
            .and_then(|h| h.last_modified().and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0))),
    };
    let source = app::connect_envisionware(&settings, &settings.retry).await?;
    let from = cursor.or(settings.start_cursor).unwrap_or_else(Cursor::default_start);
    let envisionware = ToolError::Envisionware;
    let behind = source.count_after(from, None).await.map_err(envisionware)?;
    let newest = source.newest().await.map_err(envisionware)?;
    let late = match store.late_window() {
        Some(w) => {
            let bounds = WindowBounds { after: w.after, through: w.through };
            source.count_windows(bounds, bounds).await.map_err(envisionware)?.map(|(now, _)| (w, now))
        }
        None => None,
    };
    let report = CursorReport {
        location: format!("s3://{}/{}", settings.s3_bucket, settings.s3_resource),
        cursor,
        written,
        behind,
        newest,
        late,
    };
    match format {
        OutputFormat::Text => println!("{report}"),
        OutputFormat::Json => println!("{}", report.to_json(chrono::Utc::now())),
    }
    Ok(())
}

/// `cursor set`: moves the cursor to `(date_time, key)`. Moving forward past rows that
/// were never sent needs `force`; without `yes` it asks on the terminal.
pub async fn set(
    config: &ConfigArgs,
    date_time: &str,
    key: &str,
    yes: bool,
    force: bool,
) -> Result<(), AppError> {
    let target = Cursor::parse(date_time, key).map_err(|e| AppError::Usage(format!("cursor set: {e}")))?;
    let (settings, store, _) = settings_and_store(config).await?;
    let location = format!("s3://{}/{}", settings.s3_bucket, settings.s3_resource);
    // Without s3:ListBucket a missing object reads as 403: then the object is created
    // with `If-None-Match: *` below, which fails if it does exist after all.
    let (current, unreadable) = match store.load().await {
        Ok(current) => (current, None),
        Err(e @ StateError::Unreadable { .. }) => (None, Some(e)),
        Err(e) => return Err(e.into()),
    };
    let from = current.or(settings.start_cursor);
    if let Some(from) = from.filter(|f| target > *f) {
        let source = app::connect_envisionware(&settings, &settings.retry).await?;
        let envisionware = ToolError::Envisionware;
        let skipped = source.count_after(from, None).await.map_err(envisionware)?
            - source.count_after(target, None).await.map_err(envisionware)?;
        if skipped > 0 && !force {
            return Err(ToolError::WouldSkip(skipped).into());
        }
        if skipped > 0 {
            tracing::warn!(skipped, "moving the cursor past reservations that were never sent (--force)");
        }
    }
    let before = current.map_or_else(
        || "(no cursor object)".into(),
        |c| format!("{} key {}", format_date_time(c.date_time), c.key),
    );
    let after = format!("{} key {}", format_date_time(target.date_time), target.key);
    if !yes {
        eprint!("Move {location} from {before} to {after}? Type yes to confirm: ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).map_err(StartupError::Stdin)?;
        if !answer.ends_with('\n') {
            // End of input (a script, a closed pipe): end the prompt's line, so the next
            // line on standard error starts on its own.
            eprintln!();
        }
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            return Err(ToolError::NotConfirmed.into());
        }
    }
    match unreadable {
        None => store.save(target).await?,
        Some(StateError::Unreadable { message, .. }) => {
            if !store.create(target).await? {
                return Err(ToolError::CursorUnreadable {
                    location: location.clone(),
                    message,
                    object_arn: crate::permissions::s3_object_arn(&settings.s3_bucket, &settings.s3_resource),
                }
                .into());
            }
        }
        Some(other) => return Err(other.into()),
    }
    println!("{location}: {before} -> {after}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_as_json_carries_every_field_and_nulls_without_a_cursor() {
        let t = |s: &str| crate::domain::parse_naive_date_time(s).unwrap();
        let written = chrono::DateTime::from_timestamp(1_717_236_000, 0).unwrap(); // 2024-06-01 10:00:00 UTC
        let report = CursorReport {
            location: "s3://b/k.json".into(),
            cursor: Some(Cursor { date_time: t("2024-06-01 10:00:00"), key: 3 }),
            written: Some(written),
            behind: 4,
            newest: Some(t("2024-06-01 10:00:02")),
            late: Some((
                LateWindow {
                    after: t("2024-06-01 07:00:00"),
                    through: Cursor { date_time: t("2024-06-01 10:00:00"), key: 3 },
                    rows: 5,
                },
                6,
            )),
        };
        let now = written + chrono::Duration::seconds(90);
        assert_eq!(
            report.to_json(now).to_string(),
            r#"{"behind":4,"deleted_rows":0,"exists":true,"lag_seconds":2,"late_rows":1,"late_window":{"after":"2024-06-01 07:00:00","rows":5,"through":"2024-06-01 10:00:00","through_key":"3"},"location":"s3://b/k.json","newest":"2024-06-01 10:00:02","pcr_date_time":"2024-06-01 10:00:00","pcr_key":"3","written":"2024-06-01T10:00:00Z","written_age_seconds":90}"#
        );
        let empty = CursorReport {
            location: "s3://b/k.json".into(),
            cursor: None,
            written: None,
            behind: 0,
            newest: None,
            late: None,
        };
        assert_eq!(
            empty.to_json(now).to_string(),
            r#"{"behind":0,"deleted_rows":null,"exists":false,"lag_seconds":null,"late_rows":null,"late_window":null,"location":"s3://b/k.json","newest":null,"pcr_date_time":null,"pcr_key":null,"written":null,"written_age_seconds":null}"#
        );
        assert!(
            report.to_string().ends_with(
                "\nlate rows     1 appeared, 0 deleted in (2024-06-01 07:00:00, 2024-06-01 10:00:00] since the last caught-up run counted 5"
            ),
            "{report}"
        );
    }
}
