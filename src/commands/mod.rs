//! The operator tools behind the subcommands: `run` (with `--dry-run`, `--every`,
//! `--metrics`), `check`, `cursor`, `decode`, `backfill`, `reconcile`, `pseudonymize`,
//! `bench-hash`. Each loads only
//! the configuration it needs and prints its answer on standard output; logs go to
//! standard error.

pub mod backfill;
pub mod check;
pub mod cursor;
pub mod decode;
pub mod pseudonymize;
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
pub(crate) fn gather_and_log(config: &ConfigArgs, source: &app::ConfigSource) -> Result<RawConfig, AppError> {
    gather_and_log_source(config, source, false)
}

/// [`gather_and_log`], logging where the configuration comes from once: at INFO when
/// `announce` (runs), else at DEBUG.
pub(crate) fn gather_and_log_source(
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

/// Reads the log settings from the gathered configuration and installs the logger. With a
/// valid `LOG_FORMAT` and an invalid `LOG_LEVEL`, the logger is installed in that format at
/// info before the error is returned, so that the line reporting it has the format asked for.
pub fn init_logging(raw: &RawConfig) -> Result<(), ConfigError> {
    use crate::config::variables::{LOG_FORMAT, LOG_LEVEL};
    let json = crate::config::parse_log_format_is_json(raw.plain(LOG_FORMAT.name))?;
    let level = match crate::config::parse_log_level(raw.plain(LOG_LEVEL.name)) {
        Ok(level) => level,
        Err(e) => {
            crate::logging::init(crate::config::LogLevel::Info, json);
            return Err(e);
        }
    };
    crate::logging::init(level, json);
    for name in raw.secrets_on_command_line() {
        tracing::warn!(
            variable = name,
            "a secret given with --set is visible to every user of this machine in the process list; set it in the environment or the file's ENCRYPTED_VARIABLES instead"
        );
    }
    Ok(())
}

/// Cursor lag: how far `cursor` is behind the newest reservation (zero when caught up).
pub(crate) fn lag(cursor: Cursor, newest: Option<NaiveDateTime>) -> Option<Duration> {
    newest.map(|n| (n - cursor.date_time).to_std().unwrap_or(Duration::ZERO))
}
