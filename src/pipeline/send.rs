//! The sending stage: Redshift, Avro, then Kinesis and the cursor, one request at a time,
//! the cursor saved after each. Redshift and Avro take milliseconds a batch, so they share
//! this stage (one batch fewer in memory).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::hash::{BatchStart, Hashed};
use super::{Progress, RunError, RunOptions, StageBusy, batch_span, cut_short, stopped};
use crate::domain::{Cursor, RetrievalStatus};
use crate::encode::{AvroEncoder, EncodeError};
use crate::enrich::{Geo, GeoDirectory};
use crate::records::{BuiltRecord, PendingRecord, assemble_records, lookup_geo};
use crate::sink::{OutgoingRecord, PutRecords, Sender, SinkError, plan_requests};
use crate::state::CursorStore;

/// What the sending stage did.
#[derive(Debug)]
pub(super) struct Sent {
    /// The cursor as last saved (the run's start until a request is acknowledged).
    pub(super) cursor: Cursor,
    /// Records sent, by retrieval status.
    pub(super) by_status: BTreeMap<RetrievalStatus, u64>,
    /// Requests acknowledged.
    pub(super) requests: u64,
    /// Records resent after partial failures.
    pub(super) resent: u64,
    /// Reservations sent so far (for progress).
    pub(super) reservations: u64,
}

impl From<Cursor> for Sent {
    /// Nothing sent yet, the cursor at `start`.
    fn from(start: Cursor) -> Self {
        Self { cursor: start, by_status: BTreeMap::new(), requests: 0, resent: 0, reservations: 0 }
    }
}

/// Sends what the hashing stage hands on, batch by batch.
pub(super) struct SendStage<'a, Geos, Store, Put> {
    pub(super) redshift: &'a Geos,
    pub(super) encoder: &'a AvroEncoder,
    /// Kinesis; `None` when Kinesis is ignored.
    pub(super) sender: &'a mut Option<Sender<Put>>,
    /// The cursor store; `None` when the cache is ignored.
    pub(super) store: &'a Option<Store>,
    /// Request size, progress hook and the stop token.
    pub(super) options: &'a RunOptions,
    /// Where the stage's busy time is counted.
    pub(super) busy: &'a StageBusy,
    /// From the hashing stage.
    pub(super) input: mpsc::Receiver<Hashed>,
    /// What was sent so far.
    pub(super) sent: Sent,
}

impl<Geos: GeoDirectory, Store: CursorStore, Put: PutRecords> SendStage<'_, Geos, Store, Put> {
    /// Sends batches until the hashing stage is done (the hashing stage hands on each
    /// batch's start, then its chunks, which [`Self::send_batch`] takes).
    pub(super) async fn run(mut self) -> Result<Sent, RunError> {
        while let Some(Hashed::Batch(batch)) = self.input.recv().await {
            self.send_batch(batch).await?;
        }
        self.sent.resent = self.sender.as_ref().map_or(0, |s| s.resent);
        Ok(self.sent)
    }

    /// Asks Redshift about the batch's found patrons, then builds, encodes and sends its
    /// chunks as they come.
    async fn send_batch(&mut self, batch: BatchStart) -> Result<(), RunError> {
        let span = batch_span(batch.n, batch.rows);
        let stop = &self.options.stop;
        let t = Instant::now();
        let geo = stop
            .bounded(lookup_geo(&batch.found_ids, self.redshift).instrument(span.clone()))
            .await
            .ok_or_else(|| cut_short(stop, self.sent.cursor))??;
        self.busy.add(&self.busy.redshift, t);
        let mut rows_left = batch.rows;
        while rows_left > 0 {
            let Some(Hashed::Chunk(chunk)) = self.input.recv().await else { break };
            rows_left = rows_left.saturating_sub(chunk.len());
            self.send_chunk(chunk, &geo).instrument(span.clone()).await?;
            if rows_left == 0 {
                span.in_scope(|| self.batch_done());
            }
        }
        Ok(())
    }

    /// Builds and encodes a chunk's records, then sends them a request at a time.
    async fn send_chunk(
        &mut self,
        chunk: Vec<PendingRecord>,
        geo: &HashMap<String, Geo>,
    ) -> Result<(), RunError> {
        let t = Instant::now();
        let encoded = Encoded::new(assemble_records(chunk, geo), self.encoder)?;
        self.busy.add(&self.busy.avro, t);
        for request in encoded.requests(self.options.kinesis_batch_size)? {
            self.send_request(request).await?;
        }
        self.sent.reservations += encoded.receipts.len() as u64;
        Ok(())
    }

    /// Sends one request (unless Kinesis is ignored) and, once it is acknowledged, counts
    /// its records and saves the cursor at its last one.
    async fn send_request(&mut self, request: Request<'_>) -> Result<(), RunError> {
        let stop = &self.options.stop;
        if let Some(reason) = stop.reason() {
            return Err(stopped(reason, self.sent.cursor));
        }
        if let Some(sender) = self.sender.as_mut() {
            let t = Instant::now();
            stop.bounded(sender.send_all(request.records))
                .await
                .ok_or_else(|| cut_short(stop, self.sent.cursor))??;
            self.busy.add(&self.busy.kinesis, t);
            self.sent.requests += 1;
        }
        for receipt in request.receipts {
            *self.sent.by_status.entry(receipt.status).or_default() += 1;
        }
        if let Some(last) = request.receipts.last() {
            self.sent.cursor = last.cursor;
        }
        if let Some(store) = self.store.as_ref() {
            let t = Instant::now();
            store.save(self.sent.cursor).await?;
            self.busy.add(&self.busy.cursor, t);
        }
        Ok(())
    }

    /// Logs the end of a batch and reports progress.
    fn batch_done(&self) {
        tracing::info!(cursor = %crate::domain::format_date_time(self.sent.cursor.date_time), "batch done");
        if let Some(hook) = &self.options.progress {
            (hook.0)(Progress { reservations: self.sent.reservations, cursor: self.sent.cursor });
        }
    }
}

/// A chunk ready to send: one Avro datum per reservation, and beside it what the cursor
/// and the summary need once it is acknowledged.
struct Encoded {
    outgoing: Vec<OutgoingRecord>,
    receipts: Vec<Receipt>,
}

/// What an acknowledged record moves: the cursor, and the count of its status.
struct Receipt {
    cursor: Cursor,
    status: RetrievalStatus,
}

/// One `PutRecords` request's worth of an [`Encoded`] chunk.
struct Request<'a> {
    records: &'a [OutgoingRecord],
    receipts: &'a [Receipt],
}

impl Encoded {
    /// Encodes the records, in order; their pseudonymous `key` is the partition key.
    fn new(built: Vec<BuiltRecord>, encoder: &AvroEncoder) -> Result<Self, EncodeError> {
        let mut outgoing = Vec::with_capacity(built.len());
        let mut receipts = Vec::with_capacity(built.len());
        for b in built {
            outgoing.push(OutgoingRecord { data: encoder.encode(&b.record)?, partition_key: b.record.key });
            receipts.push(Receipt { cursor: b.cursor, status: b.status });
        }
        Ok(Self { outgoing, receipts })
    }

    /// The chunk cut into requests of at most `batch_size` records and Kinesis's byte
    /// limits, in order.
    fn requests(&self, batch_size: usize) -> Result<Vec<Request<'_>>, SinkError> {
        Ok(plan_requests(&self.outgoing, batch_size)?
            .into_iter()
            .map(|range| Request { records: &self.outgoing[range.clone()], receipts: &self.receipts[range] })
            .collect())
    }
}
