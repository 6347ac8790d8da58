//! Kinesis: `PutRecords` by stream ARN, at most `KINESIS_BATCH_SIZE` records and 5 MB a
//! request, resending only the records Kinesis failed, paced to a configurable rate.

use std::future::Future;
use std::ops::Range;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use crate::retry::{RetryCount, RetryPolicy};

/// Kinesis's limit on one request's payload (data plus partition keys).
pub(crate) const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;
/// Kinesis's limit on one record (data plus partition key).
pub(crate) const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Attempts in a row without any record acknowledged before the run fails. Throttling
/// fails records at random: with 30% of entries refused, the last record of a request
/// failed 5 times in a row about once in 400 requests (0.3^5) and ended a healthy run;
/// at 10 it is about once in 170,000. With the backoff doubling from
/// `RETRY_BASE_DELAY_MS` (capped at 20 s), a stream that accepts nothing fails the run
/// after about half a minute.
pub(crate) const ATTEMPTS_WITHOUT_PROGRESS: u32 = 10;

/// One record to send.
#[derive(Debug, Clone)]
pub struct OutgoingRecord {
    /// The Avro datum.
    pub data: Vec<u8>,
    /// The partition key: the record's pseudonymous `key`, which spreads records evenly
    /// over shards and sends a re-sent duplicate to the same shard as its original.
    pub partition_key: String,
}

impl OutgoingRecord {
    fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Why records could not be sent: Kinesis failed, or the file a dry run writes in its
/// place did.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Kinesis failed.
    #[error(transparent)]
    Kinesis(#[from] SinkError),
    /// The dry run's output file failed (its message names itself).
    #[error(transparent)]
    File(#[from] crate::dry_run::DryRunError),
}

/// A Kinesis failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The whole request failed.
    #[error("{message}")]
    Request {
        /// What the SDK said.
        message: String,
        /// Whether a retry may help (throttling, 5xx, network).
        transient: bool,
    },
    /// Records kept failing.
    #[error(
        "{failed} of {total} records still failing after {attempts} attempts without progress (last error: {last_error})"
    )]
    NoProgress {
        /// Records not acknowledged.
        failed: usize,
        /// Records in the request.
        total: usize,
        /// Attempts made in a row without progress.
        attempts: u32,
        /// The last per-record error code or request error.
        last_error: String,
    },
    /// A record cannot be sent at all.
    #[error("a record of {size} bytes is larger than Kinesis's 1 MiB limit (key pseudonym {key})")]
    TooLarge {
        /// The encoded record's size in bytes.
        size: usize,
        /// Its partition key (the pseudonymous `key`).
        key: String,
    },
}

/// The per-record outcome of one `PutRecords` call: `None` for acknowledged, else the
/// error code.
pub(crate) type PutOutcome = Vec<Option<String>>;

/// One `PutRecords` call (a trait so tests can inject failures).
pub trait PutRecords {
    /// Sends `records` in one request.
    fn put_records(
        &self,
        records: &[OutgoingRecord],
    ) -> impl Future<Output = Result<PutOutcome, SendError>> + Send;
}

/// The real Kinesis client.
#[derive(Debug, Clone)]
pub struct Kinesis {
    client: aws_sdk_kinesis::Client,
    target: crate::aws::AwsTarget,
    stream_arn: String,
}

impl Kinesis {
    /// A client for the stream with this ARN; `target` is where `sdk` sends calls (for
    /// error messages).
    pub fn new(sdk: &aws_config::SdkConfig, target: crate::aws::AwsTarget, stream_arn: String) -> Self {
        Self { client: aws_sdk_kinesis::Client::new(sdk), target, stream_arn }
    }
}

impl PutRecords for Kinesis {
    async fn put_records(&self, records: &[OutgoingRecord]) -> Result<PutOutcome, SendError> {
        let entries = records
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(r.data.clone()))
                    .partition_key(&r.partition_key)
                    .build()
                    .map_err(|e| SinkError::Request { message: e.to_string(), transient: false })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .put_records()
            .stream_arn(&self.stream_arn)
            .set_records(Some(entries))
            .send()
            .await
            .map_err(|e| {
                let transient = is_retriable_error(&e);
                SinkError::Request {
                    message: crate::permissions::describe(
                        &e,
                        &self.target,
                        "kinesis:PutRecords",
                        &self.stream_arn,
                    ),
                    transient,
                }
            })?;
        let outcome: PutOutcome = out.records().iter().map(|r| r.error_code().map(str::to_string)).collect();
        if outcome.len() != records.len() {
            return Err(SinkError::Request {
                message: format!("Kinesis answered {} results for {} records", outcome.len(), records.len()),
                transient: true,
            }
            .into());
        }
        Ok(outcome)
    }
}

/// Splits records into request-sized ranges: at most `batch_size` records and
/// [`MAX_REQUEST_BYTES`] each. Refuses a record over [`MAX_RECORD_BYTES`].
pub(crate) fn plan_requests(
    records: &[OutgoingRecord],
    batch_size: usize,
) -> Result<Vec<Range<usize>>, SinkError> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, r) in records.iter().enumerate() {
        if r.size() > MAX_RECORD_BYTES {
            return Err(SinkError::TooLarge { size: r.size(), key: r.partition_key.clone() });
        }
        if i > start && (i - start == batch_size || bytes + r.size() > MAX_REQUEST_BYTES) {
            ranges.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += r.size();
    }
    if start < records.len() {
        ranges.push(start..records.len());
    }
    Ok(ranges)
}

/// Sends requests with partial-failure resends and pacing.
#[derive(Debug)]
pub struct Sender<P> {
    put: P,
    policy: RetryPolicy,
    retries: RetryCount,
    records_per_second: u32,
    window_start: Instant,
    sent_in_window: u64,
    /// Resends of failed records so far (for the run summary).
    pub resent: u64,
}

impl<P: PutRecords> Sender<P> {
    /// A sender; `records_per_second` 0 turns pacing off.
    pub fn new(put: P, policy: RetryPolicy, records_per_second: u32) -> Self {
        Self {
            put,
            policy,
            retries: RetryCount::default(),
            records_per_second,
            window_start: Instant::now(),
            sent_in_window: 0,
            resent: 0,
        }
    }

    /// Counts this sender's re-attempts in `retries` (the run's count).
    pub fn counting(self, retries: &RetryCount) -> Self {
        Self { retries: retries.clone(), ..self }
    }

    /// The underlying client.
    pub(crate) fn inner(&self) -> &P {
        &self.put
    }

    /// Sends one request's worth of records and returns when every one is acknowledged.
    /// Failed records alone are resent, with backoff; the call fails when
    /// [`ATTEMPTS_WITHOUT_PROGRESS`] attempts in a row acknowledge nothing, or at once on
    /// a request error that is not transient.
    pub(crate) async fn send_all(&mut self, records: &[OutgoingRecord]) -> Result<(), SendError> {
        let mut pending: Vec<usize> = (0..records.len()).collect();
        let mut stalled = 0u32;
        let mut first = true;
        while !pending.is_empty() {
            self.pace(pending.len()).await;
            let batch: Vec<OutgoingRecord> = pending.iter().map(|&i| records[i].clone()).collect();
            if !first {
                self.resent += batch.len() as u64;
                self.retries.add_one();
            }
            first = false;
            let last_error = match self.put.put_records(&batch).await {
                Ok(outcome) => {
                    let before = pending.len();
                    let mut last = String::new();
                    pending = pending
                        .iter()
                        .zip(outcome)
                        .filter_map(|(&i, code)| {
                            code.map(|c| {
                                last = c;
                                i
                            })
                        })
                        .collect();
                    if pending.len() < before {
                        stalled = 0;
                    }
                    if pending.is_empty() {
                        break;
                    }
                    tracing::warn!(failed = pending.len(), of = before, error_code = %last, "Kinesis failed some records; resending only those");
                    if pending.len() < before {
                        tokio::time::sleep(self.policy.backoff(1)).await;
                        continue;
                    }
                    last
                }
                Err(SendError::Kinesis(SinkError::Request { message, transient: true })) => {
                    tracing::warn!(error = %message, "PutRecords failed; retrying");
                    message
                }
                Err(other) => return Err(other),
            };
            stalled += 1;
            if stalled >= ATTEMPTS_WITHOUT_PROGRESS {
                return Err(SinkError::NoProgress {
                    failed: pending.len(),
                    total: records.len(),
                    attempts: stalled,
                    last_error,
                }
                .into());
            }
            tokio::time::sleep(self.policy.backoff(stalled)).await;
        }
        Ok(())
    }

    /// Waits so that no more than `records_per_second` records leave per second.
    async fn pace(&mut self, n: usize) {
        if self.records_per_second == 0 {
            return;
        }
        let elapsed = self.window_start.elapsed();
        if elapsed >= Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.sent_in_window = 0;
        }
        let allowed_at =
            Duration::from_secs_f64(self.sent_in_window as f64 / f64::from(self.records_per_second));
        let elapsed = self.window_start.elapsed();
        if allowed_at > elapsed {
            tokio::time::sleep(allowed_at - elapsed).await;
        }
        self.sent_in_window += n as u64;
    }
}

/// Whether a whole `PutRecords` request that failed is worth sending again: throttling
/// (`ProvisionedThroughputExceededException`, `KMSThrottlingException`), a 5xx answer
/// (`InternalFailure`, `ServiceUnavailable`), or no answer at all (the connection failed,
/// timed out, or the answer could not be read). Anything else (a refused permission, a
/// missing stream, a malformed request) fails the same way again.
fn is_retriable_error(
    e: &aws_sdk_kinesis::error::SdkError<
        aws_sdk_kinesis::operation::put_records::PutRecordsError,
        aws_sdk_kinesis::config::http::HttpResponse,
    >,
) -> bool {
    use aws_sdk_kinesis::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            err.is_provisioned_throughput_exceeded_exception()
                || err.is_kms_throttling_exception()
                || s.raw().status().is_server_error()
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn rec(size: usize, key: &str) -> OutgoingRecord {
        OutgoingRecord { data: vec![0; size], partition_key: key.into() }
    }

    #[test]
    fn requests_respect_count_and_byte_limits() {
        let small: Vec<OutgoingRecord> = (0..1001).map(|i| rec(100, &i.to_string())).collect();
        let plan = plan_requests(&small, 500).unwrap();
        assert_eq!(plan, vec![0..500, 500..1000, 1000..1001]);
        let big: Vec<OutgoingRecord> = (0..12).map(|_| rec(1_000_000, "k")).collect();
        let plan = plan_requests(&big, 500).unwrap();
        assert!(plan.iter().all(|r| r.len() <= 5), "{plan:?}");
        assert_eq!(plan.iter().map(|r| r.len()).sum::<usize>(), 12);
        assert!(matches!(
            plan_requests(&[rec(MAX_RECORD_BYTES + 1, "k")], 500),
            Err(SinkError::TooLarge { .. })
        ));
    }

    /// Fails the records whose data starts with a byte in `fail_first` on their first
    /// `times` attempts.
    struct Flaky {
        calls: Mutex<Vec<usize>>,
        fail_times: usize,
    }

    impl PutRecords for Flaky {
        async fn put_records(&self, records: &[OutgoingRecord]) -> Result<PutOutcome, SendError> {
            let mut calls = self.calls.lock().unwrap();
            calls.push(records.len());
            let attempt = calls.len();
            Ok(records
                .iter()
                .map(|r| {
                    (r.data[0] % 2 == 1 && attempt <= self.fail_times)
                        .then(|| "ProvisionedThroughputExceededException".to_string())
                })
                .collect())
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy { attempts: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) }
    }

    #[tokio::test]
    async fn only_failed_records_are_resent() {
        let records: Vec<OutgoingRecord> =
            (0..10u8).map(|i| OutgoingRecord { data: vec![i], partition_key: "k".into() }).collect();
        let retries = RetryCount::default();
        let mut s =
            Sender::new(Flaky { calls: Mutex::new(vec![]), fail_times: 2 }, fast(), 0).counting(&retries);
        s.send_all(&records).await.unwrap();
        assert_eq!(*s.inner().calls.lock().unwrap(), vec![10, 5, 5]);
        assert_eq!(s.resent, 10);
        assert_eq!(retries.get(), 2);
    }

    #[tokio::test]
    async fn no_progress_fails_after_the_bound() {
        let records: Vec<OutgoingRecord> =
            (0..4u8).map(|i| OutgoingRecord { data: vec![i], partition_key: "k".into() }).collect();
        let mut s = Sender::new(Flaky { calls: Mutex::new(vec![]), fail_times: 100 }, fast(), 0);
        // Bounded: a sender that never gives up fails here instead of hanging.
        let err = tokio::time::timeout(Duration::from_secs(30), s.send_all(&records))
            .await
            .expect("gave up within 30 s")
            .unwrap_err();
        assert!(
            matches!(
                err,
                SendError::Kinesis(SinkError::NoProgress { failed: 2, total: 4, attempts: 10, .. })
            ),
            "{err}"
        );
        // docs/delivery.md: "the run fails (cursor intact) only after 10 attempts in a row without
        // progress". The first call made progress (2 of 4); then 10 in a row did not.
        assert_eq!(*s.inner().calls.lock().unwrap(), [4, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
    }

    #[tokio::test]
    async fn nine_attempts_without_progress_then_success_do_not_fail() {
        let records: Vec<OutgoingRecord> =
            (0..4u8).map(|i| OutgoingRecord { data: vec![i], partition_key: "k".into() }).collect();
        // Attempt 1 acknowledges 2 of 4, attempts 2-10 (nine in a row) acknowledge
        // nothing, attempt 11 acknowledges the rest: under the bound of 10, so no failure.
        let mut s = Sender::new(Flaky { calls: Mutex::new(vec![]), fail_times: 10 }, fast(), 0);
        s.send_all(&records).await.unwrap();
        assert_eq!(s.inner().calls.lock().unwrap().len(), 11);
        assert_eq!(s.resent, 20, "ten resends of the 2 failed records");
    }

    /// Answers every request with a transient request error.
    struct Down {
        calls: Mutex<usize>,
    }

    impl PutRecords for Down {
        async fn put_records(&self, _records: &[OutgoingRecord]) -> Result<PutOutcome, SendError> {
            *self.calls.lock().unwrap() += 1;
            Err(SinkError::Request { message: "connection reset".into(), transient: true }.into())
        }
    }

    #[tokio::test]
    async fn a_stream_that_answers_nothing_fails_after_10_attempts() {
        let records = vec![rec(10, "k"); 3];
        let mut s = Sender::new(Down { calls: Mutex::new(0) }, fast(), 0);
        // Bounded: a sender that never gives up fails here instead of hanging.
        let err = tokio::time::timeout(Duration::from_secs(30), s.send_all(&records))
            .await
            .expect("gave up within 30 s")
            .unwrap_err();
        assert!(
            matches!(
                err,
                SendError::Kinesis(SinkError::NoProgress { failed: 3, total: 3, attempts: 10, .. })
            ),
            "{err}"
        );
        assert_eq!(*s.inner().calls.lock().unwrap(), 10);
    }

    /// Counts the records of every request and acknowledges them all.
    struct Accepting {
        calls: Mutex<Vec<usize>>,
    }

    impl PutRecords for Accepting {
        async fn put_records(&self, records: &[OutgoingRecord]) -> Result<PutOutcome, SendError> {
            self.calls.lock().unwrap().push(records.len());
            Ok(vec![None; records.len()])
        }
    }

    #[tokio::test]
    async fn kinesis_max_records_per_second_paces_requests_and_zero_turns_pacing_off() {
        let chunk = vec![rec(10, "k"); 50];
        // 300 records at 100 a second, 50 a request: the requests leave at 0, 0.5, 1.0
        // (a new one-second window), 1.0, 1.5 and 2.0 s.
        let mut paced = Sender::new(Accepting { calls: Mutex::new(vec![]) }, fast(), 100);
        let started = Instant::now();
        // Bounded: a pacing that waits far too long fails here instead of hanging.
        tokio::time::timeout(Duration::from_secs(10), async {
            for _ in 0..6 {
                paced.send_all(&chunk).await.unwrap();
            }
        })
        .await
        .expect("300 records at 100/s sent within 10 s");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1900), "300 records at 100/s took only {took:?}");
        // ...and not much more: each wait ends when the window allows the next request.
        assert!(took < Duration::from_millis(3000), "300 records at 100/s took {took:?}, not about 2 s");
        assert_eq!(*paced.inner().calls.lock().unwrap(), [50; 6]);

        let mut unpaced = Sender::new(Accepting { calls: Mutex::new(vec![]) }, fast(), 0);
        let started = Instant::now();
        for _ in 0..6 {
            unpaced.send_all(&chunk).await.unwrap();
        }
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1000), "0 must turn pacing off, took {took:?}");
    }

    #[test]
    fn requests_are_cut_at_kinesis_batch_size_and_at_5_mib() {
        // README: "KINESIS_BATCH_SIZE: records per PutRecords request, 1..500" and the
        // PutRecords limit of 5 MiB a request, 1 MiB a record.
        let seven: Vec<OutgoingRecord> = (0..7).map(|i| rec(10, &i.to_string())).collect();
        assert_eq!(plan_requests(&seven, 3).unwrap(), vec![0..3, 3..6, 6..7]);
        assert_eq!(plan_requests(&seven, 7).unwrap(), vec![0..7]);
        assert_eq!(plan_requests(&seven, 1).unwrap().len(), 7);
        assert_eq!(plan_requests(&[], 3).unwrap(), Vec::<Range<usize>>::new());
        // A record of exactly 1 MiB (data plus key) is allowed; one byte more is not.
        let key = "k";
        assert!(plan_requests(&[rec(1024 * 1024 - key.len(), key)], 500).is_ok());
        assert!(plan_requests(&[rec(1024 * 1024 - key.len() + 1, key)], 500).is_err());
        // Five records of 1 MiB fill a request of 5 MiB exactly; the sixth starts another.
        let full: Vec<OutgoingRecord> = (0..6).map(|_| rec(1024 * 1024 - key.len(), key)).collect();
        assert_eq!(plan_requests(&full, 500).unwrap(), vec![0..5, 5..6]);
    }
}
