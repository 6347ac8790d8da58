//! Log output: human-readable lines on stderr, or JSON lines with `LOG_FORMAT=json`.
//! No log line carries a barcode, patron id, pcrKey, salt or secret; pseudonyms may.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::LogLevel;

/// Installs the global subscriber. Dependencies' chatter is held at warn unless the
/// level is debug; the AWS SDK's own log lines (its credential-chain and retry warnings
/// carry debug dumps of whole errors) only show at debug: the poller says what failed in
/// its own words, once, in the error that ends the run.
pub(crate) fn init(level: LogLevel, json: bool) {
    let directive = level.directive();
    let filter = if level == LogLevel::Debug {
        // The SDK and drivers log request details at debug/trace; keep them at info.
        format!("info,apache_avro=error,pc_reserve_poller={directive}")
    } else {
        // apache_avro warns about the schema's single-branch unions, which are the
        // warehouse's own choice and must stay as they are. `aws` is a prefix: aws_config,
        // aws_smithy_*, aws_sdk_*, aws_runtime.
        format!("warn,aws=off,apache_avro=error,pc_reserve_poller={directive}")
    };
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| BarAwareStderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let installed = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
    if json && installed.is_ok() {
        JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

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
