//! The hashing stage: bcrypt on the pseudonymizer's pool (this task only waits for it).

use std::future::Future;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::read::MatchedBatch;
use super::{RunOptions, StageBusy, batch_span};
use crate::pseudonym::Pseudonymizer;
use crate::records::{PendingRecord, found_patron_ids, hash_keys, hash_patrons};

/// What the hashing stage hands the sending stage, in order: each batch's
/// [`Hashed::Batch`], then its chunks.
pub(super) enum Hashed {
    /// A new batch begins.
    Batch(BatchStart),
    /// The next chunk of the batch (at most one Kinesis request's worth), every pseudonym
    /// computed.
    Chunk(Vec<PendingRecord>),
}

/// The start of a batch: what the sending stage needs before its chunks arrive.
pub(super) struct BatchStart {
    /// The batch's number in the run.
    pub(super) n: u64,
    /// Its reservations, in all its chunks.
    pub(super) rows: usize,
    /// The distinct pseudonymous ids of its found patrons, to look up in Redshift before
    /// its records are built.
    pub(super) found_ids: Vec<String>,
}

/// Hashes each batch: first its patrons (so Redshift can be asked about them while the
/// keys are hashed), then its keys one Kinesis request's worth at a time, each chunk
/// handed on as soon as it is hashed: sending overlaps hashing even within a batch, and
/// after the last hash only one request is left to send.
pub(super) struct HashStage<'a> {
    /// The bcrypt pool and memo.
    pub(super) pseudonymizer: &'a Pseudonymizer,
    /// Chunk size and the stop token.
    pub(super) options: &'a RunOptions,
    /// Where the stage's busy time is counted.
    pub(super) busy: &'a StageBusy,
    /// From the read stage.
    pub(super) input: mpsc::Receiver<MatchedBatch>,
    /// To the sending stage.
    pub(super) output: mpsc::Sender<Hashed>,
}

impl HashStage<'_> {
    /// Hashes batches until the read stage is done, a stop cuts hashing short or the
    /// sending stage is gone.
    pub(super) async fn run(mut self) {
        while let Some(batch) = self.input.recv().await {
            if self.hash_batch(batch).await.is_none() {
                break;
            }
        }
    }

    /// Hashes one batch and hands it on; `None` when a stop cut it short or the sending
    /// stage is gone.
    async fn hash_batch(&self, batch: MatchedBatch) -> Option<()> {
        let MatchedBatch { n, mut records } = batch;
        let span = batch_span(n, records.len());
        self.timed(hash_patrons(&mut records, self.pseudonymizer).instrument(span.clone())).await?;
        let start = BatchStart { n, rows: records.len(), found_ids: found_patron_ids(&records) };
        self.output.send(Hashed::Batch(start)).await.ok()?;
        let chunk_len = self.options.kinesis_batch_size.max(1);
        let mut records = records.into_iter();
        while records.len() > 0 {
            let mut chunk: Vec<PendingRecord> = records.by_ref().take(chunk_len).collect();
            self.timed(hash_keys(&mut chunk, self.pseudonymizer).instrument(span.clone())).await?;
            self.output.send(Hashed::Chunk(chunk)).await.ok()?;
        }
        Some(())
    }

    /// Waits for one hashing job, counting its time; `None` when a stop cut it short.
    async fn timed(&self, job: impl Future<Output = ()>) -> Option<()> {
        let t = Instant::now();
        self.options.stop.bounded(job).await?;
        self.busy.add(&self.busy.bcrypt, t);
        Some(())
    }
}
