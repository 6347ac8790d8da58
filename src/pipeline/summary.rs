//! What a run reports: its progress after every batch, its summary at the end, and how
//! long each stage was busy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::domain::{Cursor, RetrievalStatus, format_date_time};

/// What a run has done so far, passed to the [`ProgressHook`] after every batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Reservations read so far.
    pub reservations: u64,
    /// The cursor after the batch.
    pub cursor: Cursor,
}

/// A callback the run loop calls after every batch.
#[derive(Clone)]
pub struct ProgressHook(pub std::sync::Arc<dyn Fn(Progress) + Send + Sync>);

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Envisionware batches read.
    pub batches: u64,
    /// Reservations read.
    pub reservations: u64,
    /// Records sent (or, with Kinesis ignored, built), by retrieval status.
    pub by_status: BTreeMap<RetrievalStatus, u64>,
    /// Kinesis requests acknowledged.
    pub requests: u64,
    /// Records resent after partial failures.
    pub resent: u64,
    /// Retries of transient failures, every dependency together.
    pub retries: u64,
    /// Cursor at the start.
    pub cursor_before: Option<Cursor>,
    /// Cursor at the end.
    pub cursor_after: Option<Cursor>,
    /// bcrypt hashes computed.
    pub pseudonyms_computed: u64,
    /// Pseudonyms answered from the memo.
    pub pseudonym_memo_hits: u64,
    /// Wall time.
    pub duration: Duration,
    /// How far the cursor is behind Envisionware's newest reservation at the end (filled
    /// in by the caller, which can ask Envisionware; `None` when unknown).
    pub cursor_lag: Option<Duration>,
    /// Rows that appeared behind the cursor since the last caught-up run (in the window it
    /// recorded); `None` when not measured.
    pub late_rows: Option<u64>,
    /// Rows that disappeared from that window; `None` when not measured.
    pub deleted_rows: Option<u64>,
}

impl RunSummary {
    /// Records sent in all.
    pub fn records(&self) -> u64 {
        self.by_status.values().sum()
    }

    /// Records sent (or built) with one retrieval status; 0 when none.
    pub(crate) fn count(&self, status: RetrievalStatus) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cursor =
            |c: Option<Cursor>| c.map(|c| format_date_time(c.date_time)).unwrap_or_else(|| "-".into());
        write!(
            f,
            "batches={} reservations={} records={} found={} guest_pass={} missing={} requests={} resent={} retries={} pseudonyms_computed={} memo_hits={} cursor_before=\"{}\" cursor_after=\"{}\" cursor_lag={} late_rows={} deleted_rows={} duration={:.3}s",
            self.batches,
            self.reservations,
            self.records(),
            self.count(RetrievalStatus::Found),
            self.count(RetrievalStatus::GuestPass),
            self.count(RetrievalStatus::Missing),
            self.requests,
            self.resent,
            self.retries,
            self.pseudonyms_computed,
            self.pseudonym_memo_hits,
            cursor(self.cursor_before),
            cursor(self.cursor_after),
            self.cursor_lag.map_or_else(|| "-".into(), |d| format!("{}s", d.as_secs())),
            measured(self.late_rows),
            measured(self.deleted_rows),
            self.duration.as_secs_f64(),
        )
    }
}

/// A count, or `-` when it was not measured.
fn measured(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

/// How long each stage was busy in a run (nanoseconds), to see which one sets the pace.
#[derive(Default)]
pub(super) struct StageBusy {
    pub(super) envisionware: AtomicU64,
    pub(super) sierra: AtomicU64,
    pub(super) bcrypt: AtomicU64,
    pub(super) redshift: AtomicU64,
    pub(super) avro: AtomicU64,
    pub(super) kinesis: AtomicU64,
    pub(super) cursor: AtomicU64,
}

impl StageBusy {
    pub(super) fn add(&self, counter: &AtomicU64, since: Instant) {
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl std::fmt::Display for StageBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        write!(
            f,
            "envisionware={:.3}s sierra={:.3}s bcrypt={:.3}s redshift={:.3}s avro={:.3}s kinesis={:.3}s cursor={:.3}s",
            s(&self.envisionware),
            s(&self.sierra),
            s(&self.bcrypt),
            s(&self.redshift),
            s(&self.avro),
            s(&self.kinesis),
            s(&self.cursor)
        )
    }
}
