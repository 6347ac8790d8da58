//! Log output: human-readable lines on stderr, or JSON lines with `LOG_FORMAT=json`.
//! No log line carries a barcode, patron id, pcrKey, salt or secret; pseudonyms may.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::LogLevel;

/// Installs the global subscriber. Dependencies' chatter is held at warn unless the
/// level is debug.
pub fn init(level: LogLevel, json: bool) {
    let directive = level.directive();
    let filter = if level == LogLevel::Debug {
        // The SDK and drivers log request details at debug/trace; keep them at info.
        format!("info,apache_avro=error,pc_reserve_poller={directive}")
    } else {
        // apache_avro warns about the schema's single-branch unions, which are the
        // warehouse's own choice and must stay as they are.
        format!("warn,apache_avro=error,pc_reserve_poller={directive}")
    };
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}
