//! The read stage: Envisionware, then Sierra, one batch ahead of the hashing.

use std::time::Instant;

use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::{RunError, RunOptions, StageBusy, batch_span};
use crate::domain::Cursor;
use crate::enrich::PatronDirectory;
use crate::records::{PendingRecord, lookup_patrons};
use crate::source::ReservationSource;

/// A batch read from Envisionware and looked up in Sierra: what the read stage hands the
/// hashing stage.
pub(super) struct MatchedBatch {
    /// The batch's number in the run, from 1.
    pub(super) n: u64,
    /// Its reservations in cursor order, each with its Sierra match.
    pub(super) records: Vec<PendingRecord>,
}

/// What the read stage did.
#[derive(Debug, Default)]
pub(super) struct ReadTotals {
    /// Batches read.
    pub(super) batches: u64,
    /// Reservations read.
    pub(super) reservations: u64,
    /// Whether reading stopped because Envisionware had nothing more (caught up).
    pub(super) drained: bool,
}

/// Reads batches after the cursor and looks their barcodes up in Sierra. The next batch
/// is read only once the hashing stage has taken the previous one.
pub(super) struct ReadStage<'a, Src, Pat> {
    pub(super) source: &'a Src,
    pub(super) sierra: &'a Pat,
    /// Batch size, `MAX_BATCHES` and the stop token.
    pub(super) options: &'a RunOptions,
    /// Where the stage's busy time is counted.
    pub(super) busy: &'a StageBusy,
    /// To the hashing stage.
    pub(super) output: mpsc::Sender<MatchedBatch>,
}

impl<Src: ReservationSource, Pat: PatronDirectory> ReadStage<'_, Src, Pat> {
    /// Reads from `start` until Envisionware has nothing more, `MAX_BATCHES` is reached,
    /// a stop is requested or the hashing stage is gone.
    pub(super) async fn run(self, start: Cursor) -> Result<ReadTotals, RunError> {
        let (options, stop, busy) = (self.options, &self.options.stop, self.busy);
        let mut totals = ReadTotals::default();
        let mut after = start;
        loop {
            if options.max_batches.is_some_and(|max| totals.batches >= max) {
                tracing::info!(batches = totals.batches, "MAX_BATCHES reached");
                break;
            }
            if stop.reason().is_some() {
                break;
            }
            let Ok(slot) = self.output.reserve().await else { break };
            let t = Instant::now();
            let Some(rows) =
                stop.bounded(self.source.read_after(after, options.envisionware_batch_size)).await
            else {
                break;
            };
            let rows = rows.map_err(RunError::Source)?;
            busy.add(&busy.envisionware, t);
            if rows.is_empty() {
                totals.drained = true;
                break;
            }
            totals.batches += 1;
            totals.reservations += rows.len() as u64;
            let last_batch = rows.len() < options.envisionware_batch_size;
            if let Some(last) = rows.last() {
                after = last.cursor();
            }
            let t = Instant::now();
            let span = batch_span(totals.batches, rows.len());
            let Some(records) = stop.bounded(lookup_patrons(rows, self.sierra).instrument(span)).await else {
                break;
            };
            let records = records?;
            busy.add(&busy.sierra, t);
            slot.send(MatchedBatch { n: totals.batches, records });
            if last_batch {
                totals.drained = true;
                break;
            }
        }
        Ok(totals)
    }
}
