//! The operator tools behind the subcommands: `run` (with `--dry-run`, `--every`,
//! `--metrics`), `check`, `cursor`, `decode`, `backfill`, `reconcile`. Each loads only
//! the configuration it needs and prints its answer on standard output; logs go to
//! standard error.

pub mod backfill;
pub mod check;
pub mod cursor;
pub mod decode;
pub mod reconcile;
pub mod run;

use std::time::Duration;

use chrono::NaiveDateTime;

use crate::app::{self, AppError};
use crate::cli::ConfigArgs;
use crate::config::{ConfigError, RawConfig};
use crate::domain::Cursor;

/// Gathers the configuration (phase one), installs the logger it asks for and logs at
/// DEBUG where the configuration comes from (the tools: their answers would otherwise
/// start with it).
pub fn gather_and_log(config: &ConfigArgs, source: &app::ConfigSource) -> Result<RawConfig, AppError> {
    gather_and_log_source(config, source, false)
}

/// [`gather_and_log`], logging where the configuration comes from once: at INFO when
/// `announce` (runs), else at DEBUG.
pub fn gather_and_log_source(
    config: &ConfigArgs,
    source: &app::ConfigSource,
    announce: bool,
) -> Result<RawConfig, AppError> {
    let raw = app::gather(source)?;
    init_logging(&raw)?;
    match (&source.path, announce) {
        (Some(path), true) => tracing::info!(config = %path.display(), "configuration file"),
        (Some(path), false) => tracing::debug!(config = %path.display(), "configuration file"),
        (None, true) => {
            tracing::info!("no ENVIRONMENT or --config: reading variables from the environment only")
        }
        (None, false) if config.environment.is_none() => {
            tracing::debug!("no ENVIRONMENT or --config: reading variables from the environment only")
        }
        (None, false) => {}
    }
    Ok(raw)
}

/// Reads the log settings from the gathered configuration and installs the logger.
pub fn init_logging(raw: &RawConfig) -> Result<(), ConfigError> {
    use crate::config::variables::{LOG_FORMAT, LOG_LEVEL};
    let level = crate::config::parse_log_level(raw.plain(LOG_LEVEL.name))?;
    let json = crate::config::parse_log_format_is_json(raw.plain(LOG_FORMAT.name))?;
    crate::logging::init(level, json);
    Ok(())
}

/// Parses a date-time given on the command line: `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DDTHH:MM:SS`
/// or a bare date (midnight).
pub fn parse_date_time_arg(text: &str) -> Result<NaiveDateTime, String> {
    crate::domain::parse_naive_date_time(text).ok_or_else(|| {
        format!("`{}` is not a date-time like 2024-05-01 or '2024-05-01 13:00:00'", text.trim())
    })
}

/// Formats a duration for people: `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// Cursor lag: how far `cursor` is behind the newest reservation (zero when caught up).
pub fn lag(cursor: Cursor, newest: Option<NaiveDateTime>) -> Option<Duration> {
    newest.map(|n| (n - cursor.date_time).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_dates_and_durations() {
        assert_eq!(parse_date_time_arg("2024-05-01").unwrap().to_string(), "2024-05-01 00:00:00");
        assert_eq!(parse_date_time_arg("2024-05-01T13:00:05").unwrap().to_string(), "2024-05-01 13:00:05");
        assert!(parse_date_time_arg("yesterday").is_err());
        assert_eq!(human_duration(Duration::from_secs(3725)), "1h 2m");
        assert_eq!(human_duration(Duration::from_secs(59)), "59s");
    }
}
