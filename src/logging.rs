//! Log output: human-readable lines on stderr, or JSON lines with `LOG_FORMAT=json`.
//! No log line carries a barcode, patron id, pcrKey, salt or secret; pseudonyms may.
//! In text mode every control character inside a line (a newline or carriage return in a
//! lease owner read from S3 or in a server's error text, a terminal escape) is written
//! escaped, so a value from outside cannot forge or hide a log line; JSON lines escape
//! them by construction.
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
    let ansi = std::io::stderr().is_terminal();
    let escape = if json {
        Escape::None
    } else if ansi {
        Escape::KeepColours
    } else {
        Escape::All
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || BarAwareStderr { escape })
        .with_target(false)
        .with_ansi(ansi);
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

// These two flags stay process-wide, unlike a run's retry count or its AWS endpoint: the
// tracing subscriber they describe is itself process-wide (installed once, global), and no
// run's outcome depends on them, only how its lines are written.

/// Whether a logger is installed.
static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether JSON logging is installed.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether every line on standard error must be JSON (`LOG_FORMAT=json` is installed), so
/// nothing may be printed there but through the logger.
pub fn json_logs() -> bool {
    JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed)
}

/// How the text writer treats control characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// JSON lines: the encoder has escaped them already.
    None,
    /// Text on a terminal: escape all but the logger's own colour codes (`ESC [ digits m`).
    KeepColours,
    /// Text to a file or pipe: escape all.
    All,
}

/// Writes `text` with every control character but a final newline escaped (`\n`, `\r`,
/// `\t`, `\u{1b}`, ...), so that one log event stays one line whatever its values hold.
/// With `keep_colours`, the SGR colour sequences the logger itself writes on a terminal
/// (`ESC [` digits and `;` `m`) pass unchanged.
pub fn escape_controls(text: &str, keep_colours: bool) -> std::borrow::Cow<'_, str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let is_control = |c: char| c.is_control();
    if !body.chars().any(is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = body;
    while let Some(c) = rest.chars().next() {
        if keep_colours && c == '\u{1b}' {
            if let Some(sgr) = sgr_prefix(rest) {
                out.push_str(sgr);
                rest = &rest[sgr.len()..];
                continue;
            }
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_control(c) => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    if body.len() < text.len() {
        out.push('\n');
    }
    std::borrow::Cow::Owned(out)
}

/// The SGR sequence (`ESC [` digits or `;`, then `m`) at the start of `text`, if any.
fn sgr_prefix(text: &str) -> Option<&str> {
    let after = text.strip_prefix("\u{1b}[")?;
    let params = after.find(|c: char| !(c.is_ascii_digit() || c == ';'))?;
    after[params..].starts_with('m').then(|| &text[..2 + params + 1])
}

/// Standard error, written so that a progress line on screen stays below the log lines;
/// in text mode with control characters escaped.
struct BarAwareStderr {
    escape: Escape,
}

impl std::io::Write for BarAwareStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over each event whole, as one write of valid UTF-8.
        match (self.escape, std::str::from_utf8(buf)) {
            (Escape::None, _) | (_, Err(_)) => crate::progress::write_around_bar(buf)?,
            (escape, Ok(text)) => {
                let line = escape_controls(text, escape == Escape::KeepColours);
                crate::progress::write_around_bar(line.as_bytes())?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_from_outside_cannot_forge_a_text_log_line() {
        let forged =
            "2026-12-01T00:00:00Z  INFO lease taken owner=x\n2026-12-01T00:00:01Z  INFO run finished\n";
        assert_eq!(
            escape_controls(forged, false),
            "2026-12-01T00:00:00Z  INFO lease taken owner=x\\n2026-12-01T00:00:01Z  INFO run finished\n"
        );
        assert_eq!(
            escape_controls("a\rb\u{1b}]0;title\u{7}\u{85}c\n", false),
            "a\\rb\\u{1b}]0;title\\u{7}\\u{85}c\n"
        );
        assert_eq!(escape_controls("tab\there", false), "tab\\there");
        // The logger's own colours pass on a terminal, nothing else does.
        assert_eq!(
            escape_controls("\u{1b}[32m INFO\u{1b}[0m owner=\u{1b}[2Jx\n", true),
            "\u{1b}[32m INFO\u{1b}[0m owner=\\u{1b}[2Jx\n"
        );
        assert_eq!(escape_controls("\u{1b}[32m INFO\u{1b}[0m\n", false), "\\u{1b}[32m INFO\\u{1b}[0m\n");
        // A clean line is not copied.
        assert!(matches!(escape_controls("plain line\n", false), std::borrow::Cow::Borrowed(_)));
    }
}
