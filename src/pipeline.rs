//! The run loop (behaviour §3, `docs/behaviour.md`), the one place where the stages meet:
//!
//! `cursor store -> Envisionware batch -> records (Sierra, pseudonyms, Redshift) ->
//! Avro datums -> Kinesis requests -> cursor store`.
//!
//! The stages of consecutive batches run at the same time (see [`run`]); each is a struct
//! with a `run` method in a module of its own (`read`, `hash`, `send`), and a reservation
//! travels through them as one [`crate::records::PendingRecord`]. The cursor moves after
//! every acknowledged request, to the last reservation of that request, never past a
//! record Kinesis has not acknowledged. What a run reports (progress, summary, busy
//! times) is in `summary`.

mod hash;
mod read;
mod send;
mod summary;

use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use tokio::sync::mpsc;

use self::hash::HashStage;
use self::read::{ReadStage, ReadTotals};
use self::send::{SendStage, Sent};
use self::summary::StageBusy;
pub use self::summary::{Progress, ProgressHook, RunSummary};
use crate::db::DbError;
use crate::domain::{Cursor, format_date_time};
use crate::encode::{AvroEncoder, EncodeError};
use crate::enrich::{GeoDirectory, PatronDirectory};
use crate::pseudonym::Pseudonymizer;
use crate::records::BuildError;
use crate::sink::{PutRecords, SendError, Sender, SinkError};
use crate::source::{ReservationSource, Retention, WindowBounds};
use crate::state::{CursorStore, LateWindow, StateError};
use crate::stop::{StopReason, StopToken};

/// A failed run, named by the stage that failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Reading or writing the cursor.
    #[error("cursor store: {0}")]
    State(#[from] StateError),
    /// No cursor object and no `PCR_DATE_TIME`/`PCR_KEY` to start from.
    #[error(
        "cursor store: s3://{0} does not exist; set PCR_DATE_TIME and PCR_KEY to say where the first run starts (or create it with the original's format)"
    )]
    NoCursor(String),
    /// Reading Envisionware.
    #[error("Envisionware: {0}")]
    Source(#[source] DbError),
    /// Looking patrons up.
    #[error("{0}")]
    Build(#[from] BuildError),
    /// Encoding a record.
    #[error("Avro: {0}")]
    Encode(#[from] EncodeError),
    /// Sending to Kinesis.
    #[error("Kinesis: {0}")]
    Sink(#[source] SinkError),
    /// Writing a dry run's output: the file sink's own error, which names itself.
    #[error(transparent)]
    Output(crate::dry_run::DryRunError),
    /// A stop was requested (signal or lost lease); the cursor is on the last
    /// acknowledged record.
    #[error("stopped ({reason}); the cursor is saved on the last acknowledged record ({cursor})")]
    Stopped {
        /// Why.
        reason: StopReason,
        /// The cursor as saved (`pcrDateTime`).
        cursor: String,
    },
    /// The stored cursor is ahead of the database's clock: rows written before that time
    /// would be skipped.
    #[error(
        "cursor store: the cursor ({cursor}) is more than 2 hours ahead of Envisionware's clock ({now}); rows written until then would be skipped. Fix the cursor object by hand"
    )]
    CursorInFuture {
        /// The cursor's `pcrDateTime`.
        cursor: String,
        /// The database's `NOW()`.
        now: String,
    },
    /// Envisionware no longer holds rows right after the cursor, and the poller has not
    /// been caught up recently enough to know that there were none.
    #[error(
        "Envisionware: retention lost: its oldest reservation ({oldest}) is newer than the cursor ({cursor}) and {caught_up}; reservations in between were purged before they were sent. Recover them from a backup, then move the cursor by hand"
    )]
    RetentionLost {
        /// The oldest `pcrDateTime` Envisionware holds.
        oldest: String,
        /// The cursor's `pcrDateTime`.
        cursor: String,
        /// When the poller was last caught up, against the retention window.
        caught_up: String,
    },
}

impl From<SinkError> for RunError {
    fn from(e: SinkError) -> Self {
        Self::Sink(e)
    }
}

impl From<SendError> for RunError {
    /// The file a dry run writes in Kinesis's place keeps its own message.
    fn from(e: SendError) -> Self {
        match e {
            SendError::Kinesis(e) => Self::Sink(e),
            SendError::File(e) => Self::Output(e),
        }
    }
}

/// The stages a run uses, each a type parameter bound by its stage's trait (static dispatch,
/// no trait objects), so tests can swap in fakes.
#[derive(Debug)]
pub struct Stages<Src, Pat, Geo, Store, Put> {
    /// Where reservations are read (Envisionware in production).
    pub source: Src,
    /// Patron lookup by barcode (Sierra in production).
    pub sierra: Pat,
    /// Postal code and census tract lookup by pseudonym (Redshift in production).
    pub redshift: Geo,
    /// The cursor store; `None` when the cache is ignored.
    pub store: Option<Store>,
    /// The Kinesis sender; `None` when Kinesis is ignored.
    pub sender: Option<Sender<Put>>,
    /// Turns identifiers into bcrypt pseudonyms with the run's salt and memo.
    pub pseudonymizer: Pseudonymizer,
    /// Encodes records as Avro datums of the checked schema.
    pub encoder: AvroEncoder,
}

/// The knobs of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Rows per Envisionware query.
    pub envisionware_batch_size: usize,
    /// Records per PutRecords request.
    pub kinesis_batch_size: usize,
    /// Stop after this many batches.
    pub max_batches: Option<u64>,
    /// Where to start when the cache is ignored or holds no cursor yet.
    pub start_cursor: Option<Cursor>,
    /// Where the cursor lives, for messages (`bucket/key`).
    pub cursor_location: String,
    /// Set by a signal or a lost lease: checked before each read and each send.
    pub stop: StopToken,
    /// `CURSOR_MAX_AGE_HOURS`: warn when the stored cursor is older than this.
    pub cursor_max_age: Duration,
    /// `ENVISIONWARE_RETENTION_HOURS`: how long Envisionware keeps a row. A row can have
    /// been purged before it was read only when the last caught-up read is older.
    pub retention_window: Duration,
    /// `LATE_ROW_WINDOW_HOURS`: the trailing window behind the cursor whose rows a caught-up
    /// run counts, to find rows that appeared behind the cursor; zero turns it off.
    pub late_row_window: Duration,
    /// Called after every batch with what the run has done so far (progress bars).
    pub progress: Option<ProgressHook>,
    /// The run's retry count, which its stages add to (`counting`): the summary's
    /// `retries`.
    pub retries: crate::retry::RetryCount,
}

fn batch_span(n: u64, rows: usize) -> tracing::Span {
    tracing::info_span!("batch", n, rows)
}

/// The run stopped for `reason`; the cursor is saved at `cursor`.
fn stopped(reason: StopReason, cursor: Cursor) -> RunError {
    RunError::Stopped { reason, cursor: format_date_time(cursor.date_time) }
}

/// A stage whose work in flight was cut short by a stop (after the grace period).
fn cut_short(stop: &StopToken, cursor: Cursor) -> RunError {
    stopped(stop.reason().unwrap_or(StopReason::Terminate), cursor)
}

/// Performs one run: batches until the source is drained or `max_batches` is reached.
///
/// The stages overlap: while batch `k` is hashed on the pseudonymizer's pool, batch `k+1`
/// is read from Envisionware and looked up in Sierra, and the finished chunks of batch `k`
/// (or the last ones of `k-1`) are encoded and sent. The hashing stage hashes a batch's
/// patrons first and hands their pseudonymous ids on, so Redshift is asked about them
/// while the keys hash; then it hashes the keys one Kinesis request's worth at a time,
/// handing each chunk on as soon as it is done. Stages hand work on through channels of
/// one slot, and a batch is read only when the hashing stage has taken the one before, so
/// at most two batches and two chunks are in memory (one batch being read or waiting, one
/// being hashed; a chunk waiting to be sent and one being sent). Sending is sequential
/// (one `PutRecords` request in flight) and the cursor is saved after each acknowledged
/// request, so it only ever covers a contiguous acknowledged prefix. When a stage fails, the stages before it stop, the
/// stages after it finish what they already have (so what was read and hashed is still
/// sent and the cursor covers it), and the run reports the failure.
pub async fn run<Src, Pat, Geo, Store, Put>(
    stages: &mut Stages<Src, Pat, Geo, Store, Put>,
    options: &RunOptions,
) -> Result<RunSummary, RunError>
where
    Src: ReservationSource,
    Pat: PatronDirectory,
    Geo: GeoDirectory,
    Store: CursorStore,
    Put: PutRecords,
{
    let started = Instant::now();
    let (stored, start) = starting_cursor(stages.store.as_ref(), options).await?;
    tracing::info!(cursor = %format_date_time(start.date_time), "run starts");
    // Envisionware's clock before the first read: when this run reads until nothing is
    // left, every row stamped up to `readable_through` has been seen.
    let retention = match &stages.store {
        Some(_) => stages.source.retention().await.map_err(RunError::Source)?,
        None => None,
    };
    if let (Some(retention), Some(_)) = (retention, stored) {
        let caught_up = stages.store.as_ref().and_then(|s| s.caught_up_through());
        check_retention(retention, start, caught_up, options)?;
    }
    let computed_before = stages.pseudonymizer.stats();

    let busy = StageBusy::default();
    let (read, sent) = run_stages(stages, options, start, &busy).await;
    tracing::info!(busy = %busy, "time each stage was busy");
    // The failure nearest the cursor is the one to report: a stage after a failed one
    // only stops because its input stopped.
    let sent = sent?;
    let read = read?;
    // A stop that ended reading early (or cut a stage short) is reported as a stop, with
    // the cursor of what was acknowledged.
    if let Some(reason) = options.stop.reason() {
        return Err(stopped(reason, sent.cursor));
    }
    // Caught up: record beside the cursor how far this run saw, also when it found
    // nothing (a closure), so the retention watchdog knows the table was merely empty.
    // A cursor object that does not exist and was not created stays absent.
    let mut late = None;
    if let (true, Some(store), Some(retention)) = (read.drained, stages.store.as_ref(), retention)
        && (stored.is_some() || sent.cursor != start)
    {
        // The late-row count goes into the same write as the mark.
        late = count_late_rows(&stages.source, store, retention, sent.cursor, options).await;
        save_caught_up_mark(store, retention, sent.cursor).await?;
    }

    let stats = stages.pseudonymizer.stats();
    Ok(RunSummary {
        batches: read.batches,
        reservations: read.reservations,
        by_status: sent.by_status,
        requests: sent.requests,
        resent: sent.resent,
        retries: options.retries.get(),
        cursor_before: Some(start),
        cursor_after: Some(sent.cursor),
        pseudonyms_computed: stats.computed - computed_before.computed,
        pseudonym_memo_hits: stats.memo_hits - computed_before.memo_hits,
        duration: started.elapsed(),
        cursor_lag: None,
        late_rows: late.map(|(late, _)| late),
        deleted_rows: late.map(|(_, deleted)| deleted),
    })
}

/// The command that delivers the rows of a late-row window which the stream does not hold:
/// `backfill` takes `[from, to)`, the window is `(after, through]`, so `to` is one second
/// past `through` (Envisionware's times have whole seconds).
pub(crate) fn delivery_command(window: WindowBounds) -> String {
    format!(
        "pc-reserve-poller backfill --only-missing --from '{}' --to '{}'",
        format_date_time(window.after),
        format_date_time(window.through.date_time + chrono::TimeDelta::seconds(1))
    )
}

/// At the end of a caught-up run, before the mark is saved: counts again the late-row
/// window recorded beside the cursor and counts the new one behind `cursor`, in one
/// statement; sets the new window on `store` for the save that follows and returns how
/// many rows appeared in the old window (late) and how many went (deleted).
///
/// `None` (not measured) when the window is off (no query is sent), when the cursor carries
/// no window yet (written by the original service: the new one is recorded), when the old
/// window reaches back past `ENVISIONWARE_RETENTION_HOURS` (the purge may have shrunk it),
/// or when the count fails, which is a warning: the old window is then kept for the next
/// run. Never changes what was sent or the cursor.
async fn count_late_rows(
    source: &impl ReservationSource,
    store: &impl CursorStore,
    retention: Retention,
    cursor: Cursor,
    options: &RunOptions,
) -> Option<(u64, u64)> {
    let width = chrono::TimeDelta::from_std(options.late_row_window).ok()?;
    if width.is_zero() {
        return None;
    }
    let new = WindowBounds { after: cursor.date_time.checked_sub_signed(width)?, through: cursor };
    let purged_before = chrono::TimeDelta::from_std(options.retention_window)
        .ok()
        .and_then(|r| retention.now.checked_sub_signed(r))
        .unwrap_or(NaiveDateTime::MIN);
    let old = match store.late_window() {
        Some(old) if old.after < purged_before => {
            tracing::info!(
                window_after = %format_date_time(old.after),
                "the recorded late-row window reaches back past ENVISIONWARE_RETENTION_HOURS: late rows not measured this run"
            );
            None
        }
        other => other,
    };
    let old_bounds = old.map_or(new, |o| WindowBounds { after: o.after, through: o.through });
    let (old_rows, new_rows) = match source.count_windows(old_bounds, new).await {
        Ok(Some(counts)) => counts,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "could not count the rows behind the cursor: late rows not measured this run");
            return None;
        }
    };
    store.set_late_window(LateWindow { after: new.after, through: new.through, rows: new_rows });
    let old = old?;
    let late = old_rows.saturating_sub(old.rows);
    let deleted = old.rows.saturating_sub(old_rows);
    let range = format!(
        "({}, {}]",
        format_date_time(old_bounds.after),
        format_date_time(old_bounds.through.date_time)
    );
    if late > 0 {
        tracing::warn!(
            late_rows = late,
            range = %range,
            command = %delivery_command(old_bounds),
            "rows appeared behind the cursor after it had passed them and were not sent; to deliver them run the command given"
        );
    }
    if deleted > 0 {
        tracing::warn!(
            deleted_rows = deleted,
            range = %range,
            "rows were deleted behind the cursor since the last caught-up run"
        );
    }
    Some((late, deleted))
}

/// The stored cursor (`None`: no cursor object, or the cache is ignored) and the cursor
/// the run starts from: the stored one, else `PCR_DATE_TIME`/`PCR_KEY` (creating the
/// cursor object), else, with the cache ignored, the default start.
async fn starting_cursor(
    store: Option<&impl CursorStore>,
    options: &RunOptions,
) -> Result<(Option<Cursor>, Cursor), RunError> {
    let stored = match store {
        Some(store) => store.load().await?,
        None => None,
    };
    let start = match (stored, store) {
        (Some(c), _) => c,
        (None, None) => options.start_cursor.unwrap_or_else(Cursor::default_start),
        (None, Some(_)) => match options.start_cursor {
            Some(c) => {
                tracing::warn!(
                    location = %options.cursor_location,
                    "no cursor object yet; starting from PCR_DATE_TIME/PCR_KEY and creating it"
                );
                c
            }
            None => return Err(RunError::NoCursor(options.cursor_location.clone())),
        },
    };
    Ok((stored, start))
}

/// Runs the read, hash and send stages side by side, linked by channels of one slot,
/// until all three have finished; returns what reading and sending did.
async fn run_stages<Src, Pat, Geo, Store, Put>(
    stages: &mut Stages<Src, Pat, Geo, Store, Put>,
    options: &RunOptions,
    start: Cursor,
    busy: &StageBusy,
) -> (Result<ReadTotals, RunError>, Result<Sent, RunError>)
where
    Src: ReservationSource,
    Pat: PatronDirectory,
    Geo: GeoDirectory,
    Store: CursorStore,
    Put: PutRecords,
{
    let Stages { source, sierra, redshift, store, sender, pseudonymizer, encoder } = stages;
    let (matched_tx, matched_rx) = mpsc::channel(1);
    let (hashed_tx, hashed_rx) = mpsc::channel(1);
    let read = ReadStage { source: &*source, sierra: &*sierra, options, busy, output: matched_tx };
    let hash =
        HashStage { pseudonymizer: &*pseudonymizer, options, busy, input: matched_rx, output: hashed_tx };
    let send = SendStage {
        redshift: &*redshift,
        encoder: &*encoder,
        sender,
        store: &*store,
        options,
        busy,
        input: hashed_rx,
        sent: Sent::from(start),
    };
    let (read, (), sent) = tokio::join!(read.run(start), hash.run(), send.run());
    (read, sent)
}

/// Caught up: saves, beside `cursor`, that this run saw every row Envisionware held when
/// it started.
async fn save_caught_up_mark(
    store: &impl CursorStore,
    retention: Retention,
    cursor: Cursor,
) -> Result<(), RunError> {
    store.set_caught_up_through(retention.readable_through);
    store.save(cursor).await?;
    tracing::debug!(
        caught_up_through = %format_date_time(retention.readable_through),
        "caught up; mark saved beside the cursor"
    );
    Ok(())
}

/// The retention watchdog, before the first read.
///
/// Fails when Envisionware's oldest row is newer than the cursor, unless the poller was
/// caught up recently enough to know that nothing lay in between: a caught-up read at
/// `caught_up` saw every row stamped until then, and a row stamped later is purged only
/// `retention_window` after its stamp, so while `now - caught_up` is within the window no
/// row after the cursor can be gone: the table was merely empty (a closure). Without a
/// mark (a cursor written by the original service) it fails as soon as the oldest row is
/// newer than the cursor. Also fails when the cursor is well ahead of the clock, and warns
/// when the poller has not been caught up for `cursor_max_age` (the cursor's age when
/// there is no mark).
fn check_retention(
    retention: Retention,
    cursor: Cursor,
    caught_up: Option<NaiveDateTime>,
    options: &RunOptions,
) -> Result<(), RunError> {
    let within = |since: NaiveDateTime, limit: Duration| {
        (retention.now - since).to_std().map_or(true, |elapsed| elapsed <= limit)
    };
    if let Some(oldest) = retention.oldest
        && oldest > cursor.date_time
    {
        let window_hours = options.retention_window.as_secs() / 3600;
        match caught_up {
            Some(through) if within(through, options.retention_window) => {
                tracing::info!(
                    oldest = %format_date_time(oldest),
                    caught_up_through = %format_date_time(through),
                    "Envisionware's oldest reservation is newer than the cursor, but the poller was caught up within ENVISIONWARE_RETENTION_HOURS: nothing lay in between"
                );
            }
            mark => {
                let caught_up = match mark {
                    Some(through) => format!(
                        "the poller was last caught up through {} (Envisionware's clock now {}: more than ENVISIONWARE_RETENTION_HOURS={window_hours} ago)",
                        format_date_time(through),
                        format_date_time(retention.now)
                    ),
                    None => "the cursor object carries no caught-up mark (written by another program or before it had one)".into(),
                };
                return Err(RunError::RetentionLost {
                    oldest: format_date_time(oldest),
                    cursor: format_date_time(cursor.date_time),
                    caught_up,
                });
            }
        }
    }
    // Two hours of tolerance: November's repeated hour legitimately puts a cursor up to an
    // hour ahead of the clock.
    if cursor.date_time > retention.now + chrono::TimeDelta::hours(2) {
        return Err(RunError::CursorInFuture {
            cursor: format_date_time(cursor.date_time),
            now: format_date_time(retention.now),
        });
    }
    let last_seen = caught_up.map_or(cursor.date_time, |through| through.max(cursor.date_time));
    if !within(last_seen, options.cursor_max_age) {
        let age = retention.now - last_seen;
        tracing::warn!(
            cursor = %format_date_time(cursor.date_time),
            age_hours = age.num_minutes() as f64 / 60.0,
            max_age_hours = options.cursor_max_age.as_secs_f64() / 3600.0,
            "the cursor is older than CURSOR_MAX_AGE_HOURS and no run has been caught up since: has the poller stopped running? Envisionware keeps only about two days"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::NaiveDateTime;

    use super::*;
    use crate::domain::Reservation;
    use crate::enrich::{Geo, PatronMatch};
    use crate::pseudonym::Salt;
    use crate::retry::RetryPolicy;
    use crate::sink::{OutgoingRecord, PutOutcome};
    use crate::test_support::MemoryCursorStore;

    /// `n` reservations with keys 1..=n, one second apart.
    struct Rows(Vec<Reservation>);

    impl ReservationSource for Rows {
        async fn read_after(&self, after: Cursor, limit: usize) -> Result<Vec<Reservation>, DbError> {
            Ok(self.0.iter().filter(|r| r.cursor() > after).take(limit).cloned().collect())
        }
    }

    /// Sierra knowing every barcode; fails on the call number `fail_on` (1-based).
    struct Sierra {
        calls: AtomicUsize,
        fail_on: usize,
    }

    impl PatronDirectory for Sierra {
        async fn patrons_by_barcode(
            &self,
            barcodes: &[String],
        ) -> Result<HashMap<String, PatronMatch>, DbError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_on {
                return Err(DbError { message: "connection reset".into(), transient: false });
            }
            Ok(barcodes
                .iter()
                .map(|b| {
                    let id = b.trim_start_matches('b').parse().unwrap_or(0);
                    let m = PatronMatch {
                        patron_id: id,
                        ptype_code: Some(10),
                        pcode3: None,
                        home_library_code: None,
                    };
                    (b.clone(), m)
                })
                .collect())
        }
    }

    /// Redshift knowing nobody; records how many ids each call asked about.
    #[derive(Default)]
    struct NoGeo(Mutex<Vec<usize>>);

    impl GeoDirectory for NoGeo {
        async fn geo_by_patron(&self, ids: &[String]) -> Result<HashMap<String, Geo>, DbError> {
            self.0.lock().unwrap().push(ids.len());
            Ok(HashMap::new())
        }
    }

    /// Kinesis that records every request and how many were in flight at once.
    #[derive(Default)]
    struct Recorder {
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        requests: Mutex<Vec<Vec<String>>>,
    }

    impl PutRecords for &Recorder {
        async fn put_records(&self, records: &[OutgoingRecord]) -> Result<PutOutcome, SendError> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            self.requests.lock().unwrap().push(records.iter().map(|r| r.partition_key.clone()).collect());
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(vec![None; records.len()])
        }
    }

    fn rows(n: i64) -> Rows {
        let t0 = NaiveDateTime::parse_from_str("2024-05-01 00:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
        Rows(
            (1..=n)
                .map(|k| Reservation {
                    key: k,
                    barcode: Some(format!("b{}", 100 + k % 7)),
                    minutes_used: Some(30),
                    date_time: t0 + chrono::Duration::seconds(k),
                    branch: None,
                    area: None,
                    staff_override: None,
                })
                .collect(),
        )
    }

    fn stages(
        n: i64,
        fail_on: usize,
        kinesis: &Recorder,
    ) -> Stages<Rows, Sierra, NoGeo, MemoryCursorStore, &Recorder> {
        let salt = Salt::parse("$2b$04$abcdefghijklmnopqrstuu").unwrap();
        let fast = RetryPolicy {
            attempts: 1,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        Stages {
            source: rows(n),
            sierra: Sierra { calls: AtomicUsize::new(0), fail_on },
            redshift: NoGeo::default(),
            store: Some(MemoryCursorStore::new(None)),
            sender: Some(Sender::new(kinesis, fast, 0)),
            pseudonymizer: Pseudonymizer::new(salt, 2).unwrap(),
            encoder: AvroEncoder::from_schema_text(include_str!("../tests/fixtures/PcReserve-schema.avsc"))
                .unwrap(),
        }
    }

    fn options() -> RunOptions {
        RunOptions {
            envisionware_batch_size: 10,
            kinesis_batch_size: 4,
            max_batches: None,
            start_cursor: Some(Cursor::default_start()),
            cursor_location: "test".into(),
            stop: StopToken::with_grace(Duration::from_secs(20)),
            cursor_max_age: Duration::from_secs(24 * 3600),
            retention_window: Duration::from_secs(48 * 3600),
            late_row_window: Duration::ZERO,
            progress: None,
            retries: crate::retry::RetryCount::default(),
        }
    }

    #[tokio::test]
    async fn pipelined_run_sends_everything_in_order_one_request_at_a_time() {
        let kinesis = Recorder::default();
        let mut s = stages(45, 0, &kinesis);
        let summary = run(&mut s, &options()).await.unwrap();
        assert_eq!((summary.batches, summary.reservations, summary.records()), (5, 45, 45));
        assert_eq!(kinesis.max_in_flight.load(Ordering::SeqCst), 1);
        // Requests of at most 4 records, never across a batch, in order.
        let requests = kinesis.requests.lock().unwrap();
        assert_eq!(
            requests.iter().map(Vec::len).collect::<Vec<_>>(),
            [4, 4, 2, 4, 4, 2, 4, 4, 2, 4, 4, 2, 4, 1]
        );
        let salt = s.pseudonymizer.salt().clone();
        let sent: Vec<&String> = requests.iter().flatten().collect();
        for (k, key) in (1..=45).zip(&sent) {
            assert_eq!(**key, crate::pseudonym::pseudonym(&salt, k.to_string().as_bytes()));
        }
        // The cursor was saved after every request, each time at the request's last row.
        let saved = s.store.as_ref().unwrap().saved.lock().unwrap().clone();
        let ends = [4, 8, 10, 14, 18, 20, 24, 28, 30, 34, 38, 40, 44, 45];
        assert_eq!(saved.iter().map(|c| c.key).collect::<Vec<_>>(), ends);
        assert_eq!(summary.cursor_after.unwrap().key, 45);
        // 45 keys and the 7 distinct patrons.
        assert_eq!(summary.pseudonyms_computed, 52);
        // Keys are hashed a request's worth at a time, but Redshift is asked once a batch,
        // about the batch's distinct patrons (7 in every batch of 10).
        assert_eq!(*s.redshift.0.lock().unwrap(), [7, 7, 7, 7, 5]);
    }

    #[tokio::test]
    async fn a_failing_stage_still_sends_the_batches_before_it_and_the_cursor_covers_them() {
        let kinesis = Recorder::default();
        let mut s = stages(45, 3, &kinesis);
        let err = run(&mut s, &options()).await.unwrap_err();
        assert!(err.to_string().starts_with("Sierra:"), "{err}");
        // Batches 1 and 2 were read, hashed and sent; nothing of batch 3 was.
        let sent: usize = kinesis.requests.lock().unwrap().iter().map(Vec::len).sum();
        assert_eq!(sent, 20);
        let saved = s.store.as_ref().unwrap().saved.lock().unwrap().clone();
        assert_eq!(saved.last().unwrap().key, 20);
    }

    #[tokio::test]
    async fn a_dry_run_output_failure_reads_as_the_file_sinks_own_error_without_kinesis() {
        let encoder =
            AvroEncoder::from_schema_text(include_str!("../tests/fixtures/PcReserve-schema.avsc")).unwrap();
        let dir = std::env::temp_dir().join(format!("pcr-pipeline-dry-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = crate::dry_run::FileSink::create(
            &encoder,
            crate::dry_run::DryRunFormat::Jsonl,
            &dir.join("out.jsonl"),
        )
        .unwrap();
        file.finish().unwrap();
        let kinesis = Recorder::default();
        let s = stages(3, 0, &kinesis);
        let mut s = Stages {
            source: s.source,
            sierra: s.sierra,
            redshift: s.redshift,
            store: s.store,
            sender: Some(Sender::new(file, RetryPolicy::none(), 0)),
            pseudonymizer: s.pseudonymizer,
            encoder: s.encoder,
        };
        let err = run(&mut s, &options()).await.unwrap_err();
        assert!(matches!(err, RunError::Output(crate::dry_run::DryRunError::Closed)), "{err:?}");
        assert_eq!(err.to_string(), "dry-run output: the file is already closed");
        assert!(s.store.as_ref().unwrap().saved.lock().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_kinesis_failure_still_names_kinesis() {
        let err = RunError::from(SinkError::Request { message: "connection reset".into(), transient: false });
        assert_eq!(err.to_string(), "Kinesis: connection reset");
    }

    fn at(text: &str) -> NaiveDateTime {
        crate::domain::parse_naive_date_time(text).unwrap()
    }

    /// Envisionware at `now` holding rows from `oldest`, no settle delay.
    fn held(oldest: Option<&str>, now: &str) -> Retention {
        Retention { oldest: oldest.map(at), now: at(now), readable_through: at(now) }
    }

    #[test]
    fn the_watchdog_tells_an_empty_table_from_rows_purged_unread() {
        let cursor = Cursor { date_time: at("2026-03-01 18:00:00"), key: 9 };
        let o = options(); // a 48-hour window
        // Closed three days, caught up every run: rows from the reopening only. Passes.
        let reopened = held(Some("2026-03-04 09:00:00"), "2026-03-04 10:00:00");
        check_retention(reopened, cursor, Some(at("2026-03-04 09:45:00")), &o).unwrap();
        // Exactly 48 hours since the last caught-up read: still nothing can be gone.
        check_retention(reopened, cursor, Some(at("2026-03-02 10:00:00")), &o).unwrap();
        // One second more: a row stamped just after that read may have been purged.
        let err = check_retention(reopened, cursor, Some(at("2026-03-02 09:59:59")), &o).unwrap_err();
        assert!(matches!(err, RunError::RetentionLost { .. }), "{err}");
        assert!(err.to_string().contains("last caught up through 2026-03-02 09:59:59"), "{err}");
        // No mark (the original's cursor): as strict as ever.
        let err = check_retention(reopened, cursor, None, &o).unwrap_err();
        assert!(err.to_string().contains("no caught-up mark"), "{err}");
        // An empty table or rows still after the cursor: never a loss, mark or not.
        check_retention(held(None, "2026-03-09 10:00:00"), cursor, None, &o).unwrap();
        check_retention(held(Some("2026-03-01 17:00:00"), "2026-03-02 10:00:00"), cursor, None, &o).unwrap();
    }

    /// A source with no rows whose clock reads `now`.
    struct Empty(NaiveDateTime);

    impl ReservationSource for Empty {
        async fn read_after(&self, _after: Cursor, _limit: usize) -> Result<Vec<Reservation>, DbError> {
            Ok(Vec::new())
        }

        async fn retention(&self) -> Result<Option<Retention>, DbError> {
            Ok(Some(Retention { oldest: None, now: self.0, readable_through: self.0 }))
        }
    }

    #[tokio::test]
    async fn a_run_that_finds_nothing_still_saves_its_caught_up_mark() {
        let kinesis = Recorder::default();
        let s = stages(0, 0, &kinesis);
        let cursor = Cursor { date_time: at("2026-03-01 18:00:00"), key: 9 };
        let mut s = Stages {
            source: Empty(at("2026-03-03 12:00:00")),
            sierra: s.sierra,
            redshift: s.redshift,
            store: Some(MemoryCursorStore::new(Some(cursor))),
            sender: s.sender,
            pseudonymizer: s.pseudonymizer,
            encoder: s.encoder,
        };
        let summary = run(&mut s, &options()).await.unwrap();
        assert_eq!(summary.records(), 0);
        let store = s.store.as_ref().unwrap();
        assert_eq!(*store.saved.lock().unwrap(), [cursor], "the same cursor, saved once with the mark");
        assert_eq!(store.caught_up_through(), Some(at("2026-03-03 12:00:00")));
        // With no cursor object and nothing read, nothing is created.
        let mut s = Stages { store: Some(MemoryCursorStore::new(None)), ..s };
        run(&mut s, &options()).await.unwrap();
        assert!(s.store.as_ref().unwrap().saved.lock().unwrap().is_empty());
    }

    /// A source with no rows, a clock at `now`, and window counts answered from `held`
    /// (rows per window), recording every count asked for.
    struct Counted {
        now: NaiveDateTime,
        held: fn(WindowBounds) -> u64,
        asked: Mutex<Vec<(WindowBounds, WindowBounds)>>,
    }

    impl ReservationSource for Counted {
        async fn read_after(&self, _after: Cursor, _limit: usize) -> Result<Vec<Reservation>, DbError> {
            Ok(Vec::new())
        }

        async fn retention(&self) -> Result<Option<Retention>, DbError> {
            Ok(Some(Retention { oldest: None, now: self.now, readable_through: self.now }))
        }

        async fn count_windows(
            &self,
            old: WindowBounds,
            new: WindowBounds,
        ) -> Result<Option<(u64, u64)>, DbError> {
            self.asked.lock().unwrap().push((old, new));
            Ok(Some(((self.held)(old), (self.held)(new))))
        }
    }

    #[tokio::test]
    async fn late_rows_are_the_growth_of_the_recorded_window_unless_the_purge_may_have_reached_it() {
        let cursor = Cursor { date_time: at("2026-03-06 17:02:00"), key: 3 };
        let recorded = LateWindow { after: at("2026-03-06 14:02:00"), through: cursor, rows: 3 };
        let late = |now: &'static str, window_hours: u64| async move {
            let store = MemoryCursorStore::new(Some(cursor));
            store.set_late_window(recorded);
            let source = Counted { now: at(now), held: |_| 4, asked: Mutex::new(Vec::new()) };
            let o = RunOptions { late_row_window: Duration::from_secs(window_hours * 3600), ..options() };
            let clock = Retention { oldest: None, now: source.now, readable_through: source.now };
            let found = count_late_rows(&source, &store, clock, cursor, &o).await;
            let asked = source.asked.into_inner().unwrap();
            (found, asked, store.late_window())
        };
        // The recorded window (3 rows) holds 4 now: 1 late row; the new window is recorded.
        let (found, asked, stored) = late("2026-03-07 09:00:00", 3).await;
        assert_eq!(found, Some((1, 0)));
        let new = WindowBounds { after: at("2026-03-06 14:02:00"), through: cursor };
        assert_eq!(asked, [(WindowBounds { after: recorded.after, through: cursor }, new)]);
        assert_eq!(stored, Some(LateWindow { rows: 4, ..recorded }));
        // 48 hours after the window's start the purge may have reached it: not measured,
        // but the new window is still recorded.
        let (found, asked, stored) = late("2026-03-08 14:02:01", 3).await;
        assert_eq!(found, None);
        assert_eq!(asked.len(), 1);
        assert_eq!(stored.map(|w| w.rows), Some(4));
        // Off: no count at all, the recorded window kept as it was.
        let (found, asked, stored) = late("2026-03-07 09:00:00", 0).await;
        assert_eq!((found, asked.len(), stored), (None, 0, Some(recorded)));
    }
}
