//! A progress line on standard error (reservations done, rate, ETA) for runs started
//! from a terminal; nothing at all when standard error is not a terminal.

use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pipeline::{Progress, ProgressHook};

/// The bar line on screen, if any: log lines clear it, print, and draw it again below.
/// Process-wide because standard error is: the logger, which is global too, writes
/// through it; no run's outcome depends on it.
static ON_SCREEN: Mutex<Option<String>> = Mutex::new(None);

/// Writes `bytes` (whole log lines) to standard error, keeping the progress line, if one
/// is on screen, below them.
pub(crate) fn write_around_bar(bytes: &[u8]) -> std::io::Result<()> {
    let bar = ON_SCREEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut err = std::io::stderr().lock();
    match bar.as_deref() {
        None => err.write_all(bytes),
        Some(line) => {
            err.write_all(b"\r\x1b[2K")?;
            err.write_all(bytes)?;
            if bytes.ends_with(b"\n") {
                err.write_all(line.as_bytes())?;
            }
            err.flush()
        }
    }
}

/// Draws the bar; shared by the hook the run loop calls.
#[derive(Debug)]
struct Bar {
    total: Option<u64>,
    started: Instant,
    drawn: bool,
}

/// A progress display, or nothing when standard error is not a terminal.
#[derive(Debug, Clone)]
pub(crate) struct TerminalProgress {
    bar: Arc<Mutex<Bar>>,
}

impl TerminalProgress {
    /// A display expecting `total` reservations (unknown: no percentage or ETA); `None`
    /// when standard error is not a terminal.
    pub(crate) fn on_terminal(total: Option<u64>) -> Option<Self> {
        std::io::stderr()
            .is_terminal()
            .then(|| Self { bar: Arc::new(Mutex::new(Bar { total, started: Instant::now(), drawn: false })) })
    }

    /// A display for a run started from a terminal, expecting the number of reservations
    /// `total` counts (unknown: no percentage or ETA); `None`, without counting, when
    /// standard error is not a terminal.
    pub(crate) async fn counting(total: impl std::future::Future<Output = Option<u64>>) -> Option<Self> {
        match Self::on_terminal(None) {
            Some(_) => Self::on_terminal(total.await),
            None => None,
        }
    }

    /// The hook to give the run loop.
    pub(crate) fn hook(&self) -> ProgressHook {
        let bar = Arc::clone(&self.bar);
        ProgressHook(Arc::new(move |p: Progress| {
            let mut bar = bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            bar.drawn = true;
            let line = render(bar.total, p.reservations, bar.started.elapsed().as_secs_f64());
            let mut on_screen = ON_SCREEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut err = std::io::stderr().lock();
            // Progress is decoration: a failed write to the terminal is ignored.
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
            *on_screen = Some(line);
        }))
    }

    /// Ends the line so later output starts on a fresh one.
    pub(crate) fn finish(&self) {
        let bar = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut on_screen = ON_SCREEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if bar.drawn && on_screen.take().is_some() {
            eprintln!();
        }
    }
}

/// One line: `[#####.....]  52% 5200/10000 reservations  950/s  ETA 5s`.
pub(crate) fn render(total: Option<u64>, done: u64, elapsed_secs: f64) -> String {
    let rate = if elapsed_secs > 0.0 { done as f64 / elapsed_secs } else { 0.0 };
    match total.filter(|t| *t > 0) {
        Some(total) => {
            let done_c = done.min(total);
            let width = 30u64;
            let filled = (done_c * width / total) as usize;
            let eta = if rate > 0.0 { ((total - done_c) as f64 / rate).round() as u64 } else { 0 };
            format!(
                "[{}{}] {:>3}% {done}/{total} reservations  {rate:.0}/s  ETA {}",
                "#".repeat(filled),
                ".".repeat(width as usize - filled),
                done_c * 100 / total,
                human_duration(Duration::from_secs(eta)),
            )
        }
        None => format!("{done} reservations  {rate:.0}/s"),
    }
}

/// Formats a duration for people: `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub(crate) fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_share_rate_and_eta() {
        let line = render(Some(1000), 500, 5.0);
        assert!(line.starts_with("[###############...............]  50% 500/1000"), "{line}");
        assert!(line.contains("100/s") && line.ends_with("ETA 5s"), "{line}");
        assert_eq!(render(None, 10, 0.0), "10 reservations  0/s");
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human_duration(Duration::from_secs(3725)), "1h 2m");
        assert_eq!(human_duration(Duration::from_secs(59)), "59s");
    }
}
