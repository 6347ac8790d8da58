//! Log output: human-readable lines on stderr, or JSON lines with `LOG_FORMAT=json`.
//! No log line carries a barcode, patron id, pcrKey, salt or secret; pseudonyms may.
//!
//! A command that ends with an error ends with one line through the logger
//! ([`report_outcome`]): at ERROR for a failure, at WARN for a run refused by the lease
//! (exit code 3), at INFO for a stop by signal (exit code 6).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::app::{self, AppError};
use crate::config::LogLevel;

/// The target of the line that ends a failed command: always shown, whatever `LOG_LEVEL`.
const OUTCOME: &str = "pcr_outcome";

/// Installs the global subscriber. Dependencies' chatter is held at warn unless the
/// level is debug; the AWS SDK's own log lines (its credential-chain and retry warnings
/// carry debug dumps of whole errors) only show at debug: the poller says what failed in
/// its own words, once, in the error that ends the run.
pub(crate) fn init(level: LogLevel, json: bool) {
    let directive = level.directive();
    let filter = if level == LogLevel::Debug {
        // The SDK and drivers log request details at debug/trace; keep them at info.
        format!("info,apache_avro=error,pc_reserve_poller={directive},{OUTCOME}=info")
    } else {
        // apache_avro warns about the schema's single-branch unions, which are the
        // warehouse's own choice and must stay as they are. `aws` is a prefix: aws_config,
        // aws_smithy_*, aws_sdk_*, aws_runtime.
        format!("warn,aws=off,apache_avro=error,pc_reserve_poller={directive},{OUTCOME}=info")
    };
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| BarAwareStderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let installed = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
    if installed.is_ok() {
        INSTALLED.store(true, std::sync::atomic::Ordering::Relaxed);
        if json {
            JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Installs the logger when the command failed before it could (a configuration file that
/// cannot be read, an invalid `LOG_LEVEL`, a usage error): at info, in the format
/// `LOG_FORMAT` asks for in the process environment (text when unset or invalid).
pub fn init_fallback() {
    if INSTALLED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let format = std::env::var(crate::config::variables::LOG_FORMAT.name).ok();
    let json = crate::config::parse_log_format_is_json(format.as_deref()).unwrap_or(false);
    init(LogLevel::Info, json);
}

/// Logs the one line that ends a command that did not succeed, in the configured format,
/// naming the stage, the cause and the exit code: the message `<stage>: <cause>` with the
/// fields `stage` and `exit_code`. A failure is logged at ERROR (the only ERROR line of the
/// command), a run refused by the lease (exit code 3) at WARN, a stop by SIGTERM/SIGINT
/// (exit code 6, how ECS stops every task) at INFO. Installs the fallback logger first if
/// none is installed yet.
pub fn report_outcome(err: &AppError) {
    init_fallback();
    let code = err.exit_code();
    let stage = err.stage();
    // One line, even when a dependency's message spans several.
    let text = err.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    // Most messages start with their stage already (`configuration: ...`); the others
    // (`another runner holds the lease ...`, `stopped ...`) get it in front.
    let message = if text.starts_with(&format!("{stage}: ")) { text } else { format!("{stage}: {text}") };
    match code {
        app::EXIT_STOPPED => tracing::info!(target: OUTCOME, stage = %stage, exit_code = code, "{message}"),
        app::EXIT_LEASE_HELD => {
            tracing::warn!(target: OUTCOME, stage = %stage, exit_code = code, "{message}")
        }
        _ => tracing::error!(target: OUTCOME, stage = %stage, exit_code = code, "{message}"),
    }
}

/// Whether a logger is installed.
static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether JSON logging is installed.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether every line on standard error must be JSON (`LOG_FORMAT=json` is installed), so
/// nothing may be printed there but through the logger.
pub fn json_logs() -> bool {
    JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Standard error, written so that a progress line on screen stays below the log lines.
struct BarAwareStderr;

impl std::io::Write for BarAwareStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::progress::write_around_bar(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
