//! The run loop (SPEC section 3), the one place where the stages meet:
//!
//! `cursor store -> Envisionware batch -> records (Sierra, pseudonyms, Redshift) ->
//! Avro datums -> Kinesis requests -> cursor store`.
//!
//! The cursor moves after every acknowledged request, to the last reservation of that
//! request, never past a record Kinesis has not acknowledged.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::db::DbError;
use crate::domain::{Cursor, RetrievalStatus, format_date_time};
use crate::encode::{AvroEncoder, EncodeError};
use crate::enrich::{GeoDirectory, PatronDirectory};
use crate::pseudonym::Pseudonymizer;
use crate::records::{BuildError, build_records};
use crate::sink::{OutgoingRecord, PutRecords, Sender, SinkError, plan_requests};
use crate::source::ReservationSource;
use crate::state::{CursorStore, StateError};
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
    Sink(#[from] SinkError),
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
    /// Envisionware no longer holds rows right after the cursor.
    #[error(
        "Envisionware: retention lost: its oldest reservation ({oldest}) is newer than the cursor ({cursor}); reservations in between were purged before they were sent. Recover them from a backup, then move the cursor by hand"
    )]
    RetentionLost {
        /// The oldest `pcrDateTime` Envisionware holds.
        oldest: String,
        /// The cursor's `pcrDateTime`.
        cursor: String,
    },
}

/// The stages a run uses. Each is a trait object of its stage so tests can swap in fakes.
#[derive(Debug)]
pub struct Stages<Src, Pat, Geo, Store, Put> {
    /// Envisionware.
    pub source: Src,
    /// Sierra.
    pub sierra: Pat,
    /// Redshift.
    pub redshift: Geo,
    /// The cursor store; `None` when the cache is ignored.
    pub store: Option<Store>,
    /// The Kinesis sender; `None` when Kinesis is ignored.
    pub sender: Option<Sender<Put>>,
    /// Pseudonyms.
    pub pseudonymizer: Pseudonymizer,
    /// Avro.
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
    /// Called after every batch with what the run has done so far (progress bars).
    pub progress: Option<ProgressHook>,
}

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
    pub by_status: BTreeMap<&'static str, u64>,
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
}

impl RunSummary {
    /// Records sent in all.
    pub fn records(&self) -> u64 {
        self.by_status.values().sum()
    }
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cursor =
            |c: Option<Cursor>| c.map(|c| format_date_time(c.date_time)).unwrap_or_else(|| "-".into());
        write!(
            f,
            "batches={} reservations={} records={} found={} guest_pass={} missing={} requests={} resent={} retries={} pseudonyms_computed={} memo_hits={} cursor_before=\"{}\" cursor_after=\"{}\" cursor_lag={} duration={:.3}s",
            self.batches,
            self.reservations,
            self.records(),
            self.by_status.get("found").unwrap_or(&0),
            self.by_status.get("guest_pass").unwrap_or(&0),
            self.by_status.get("missing").unwrap_or(&0),
            self.requests,
            self.resent,
            self.retries,
            self.pseudonyms_computed,
            self.pseudonym_memo_hits,
            cursor(self.cursor_before),
            cursor(self.cursor_after),
            self.cursor_lag.map_or_else(|| "-".into(), |d| format!("{}s", d.as_secs())),
            self.duration.as_secs_f64(),
        )
    }
}

/// Performs one run: batches until the source is drained or `max_batches` is reached.
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
    let mut summary = RunSummary::default();
    let stored = match &stages.store {
        Some(store) => store.load().await?,
        None => None,
    };
    let mut cursor = match (stored, &stages.store) {
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
    summary.cursor_before = Some(cursor);
    tracing::info!(cursor = %format_date_time(cursor.date_time), "run starts");
    if stored.is_some() {
        check_retention(&stages.source, cursor, options.cursor_max_age).await?;
    }
    let stopped =
        |reason, cursor: Cursor| RunError::Stopped { reason, cursor: format_date_time(cursor.date_time) };

    let computed_before = stages.pseudonymizer.stats();
    let retries_before = crate::retry::retries_so_far();
    loop {
        if options.max_batches.is_some_and(|max| summary.batches >= max) {
            tracing::info!(batches = summary.batches, "MAX_BATCHES reached");
            break;
        }
        if let Some(reason) = options.stop.reason() {
            return Err(stopped(reason, cursor));
        }
        let batch = options
            .stop
            .bounded(stages.source.read_after(cursor, options.envisionware_batch_size))
            .await
            .ok_or_else(|| stopped(options.stop.reason().unwrap_or(StopReason::Terminate), cursor))?
            .map_err(RunError::Source)?;
        if batch.is_empty() {
            break;
        }
        summary.batches += 1;
        summary.reservations += batch.len() as u64;
        let span = tracing::info_span!("batch", n = summary.batches, rows = batch.len());
        let _guard = span.enter();

        let built = options
            .stop
            .bounded(build_records(&batch, &stages.sierra, &stages.redshift, &stages.pseudonymizer))
            .await
            .ok_or_else(|| stopped(options.stop.reason().unwrap_or(StopReason::Terminate), cursor))??;
        let outgoing = built
            .iter()
            .map(|b| {
                Ok(OutgoingRecord {
                    data: stages.encoder.encode(&b.record)?,
                    partition_key: b.record.key.clone(),
                })
            })
            .collect::<Result<Vec<_>, EncodeError>>()?;
        for range in plan_requests(&outgoing, options.kinesis_batch_size)? {
            if let Some(reason) = options.stop.reason() {
                return Err(stopped(reason, cursor));
            }
            if let Some(sender) = stages.sender.as_mut() {
                options.stop.bounded(sender.send_all(&outgoing[range.clone()])).await.ok_or_else(
                    || stopped(options.stop.reason().unwrap_or(StopReason::Terminate), cursor),
                )??;
                summary.requests += 1;
            }
            for b in &built[range.clone()] {
                *summary.by_status.entry(status_name(b.status)).or_default() += 1;
            }
            cursor = batch[range.end - 1].cursor();
            if let Some(store) = &stages.store {
                store.save(cursor).await?;
            }
        }
        tracing::info!(
            records = built.len(),
            cursor = %format_date_time(cursor.date_time),
            "batch done"
        );
        if let Some(hook) = &options.progress {
            (hook.0)(Progress { reservations: summary.reservations, cursor });
        }
        if batch.len() < options.envisionware_batch_size {
            break;
        }
    }
    let stats = stages.pseudonymizer.stats();
    summary.pseudonyms_computed = stats.computed - computed_before.computed;
    summary.pseudonym_memo_hits = stats.memo_hits - computed_before.memo_hits;
    summary.resent = stages.sender.as_ref().map_or(0, |s| s.resent);
    summary.retries = crate::retry::retries_so_far().saturating_sub(retries_before);
    summary.cursor_after = Some(cursor);
    summary.duration = started.elapsed();
    Ok(summary)
}

/// The retention watchdog: warns when the cursor is older than `max_age` by the
/// database's own clock, fails when Envisionware's oldest row is newer than the cursor,
/// and when the cursor is well ahead of the clock.
async fn check_retention<Src: ReservationSource>(
    source: &Src,
    cursor: Cursor,
    max_age: Duration,
) -> Result<(), RunError> {
    let Some(retention) = source.retention().await.map_err(RunError::Source)? else {
        return Ok(());
    };
    if let Some(oldest) = retention.oldest
        && oldest > cursor.date_time
    {
        return Err(RunError::RetentionLost {
            oldest: format_date_time(oldest),
            cursor: format_date_time(cursor.date_time),
        });
    }
    // Two hours of tolerance: November's repeated hour legitimately puts a cursor up to an
    // hour ahead of the clock.
    if cursor.date_time > retention.now + chrono::TimeDelta::hours(2) {
        return Err(RunError::CursorInFuture {
            cursor: format_date_time(cursor.date_time),
            now: format_date_time(retention.now),
        });
    }
    let age = retention.now - cursor.date_time;
    if age.to_std().is_ok_and(|age| age > max_age) {
        tracing::warn!(
            cursor = %format_date_time(cursor.date_time),
            age_hours = age.num_minutes() as f64 / 60.0,
            max_age_hours = max_age.as_secs_f64() / 3600.0,
            "the cursor is older than CURSOR_MAX_AGE_HOURS: has the poller stopped running? Envisionware keeps only about two days"
        );
    }
    Ok(())
}

fn status_name(s: RetrievalStatus) -> &'static str {
    s.as_str()
}
