//! `backfill --from T1 --to T2`: sends the reservations of `[T1, T2)` with a cursor
//! object of its own (next to `S3_RESOURCE`, named after the range), leaving the main
//! cursor alone. Backfills of disjoint ranges can run side by side, each on its own
//! machine or ECS task; an interrupted backfill resumes from its own cursor.
//!
//! `backfill --only-missing` sends only the rows of the range whose pseudonymous `key` is
//! not among the records on the stream (read from [`STREAM_LOOKBACK`] before `T1`): the
//! delivery of late rows (`docs/delivery.md`, "Late rows behind the cursor"). It keeps no cursor object:
//! comparing with the stream makes it safe to run again.

use std::collections::HashSet;

use crate::stop::StopToken;
use chrono::NaiveDateTime;

use crate::app::{self, AppError, ToolError};
use crate::cli::ConfigArgs;
use crate::db::DbError;
use crate::domain::{Cursor, Reservation, format_date_time};
use crate::pipeline::RunOptions;
use crate::progress::TerminalProgress;
use crate::sink::{Kinesis, Sender};
use crate::source::ReservationSource;
use crate::state::S3CursorStore;

/// A source that ends before `until`: rows at or after it are never returned.
#[derive(Debug)]
pub(crate) struct Bounded<S> {
    inner: S,
    until: NaiveDateTime,
}

impl<S> Bounded<S> {
    /// `inner`, cut at `until` (exclusive).
    pub(crate) fn new(inner: S, until: NaiveDateTime) -> Self {
        Self { inner, until }
    }
}

impl<S: ReservationSource + Sync> ReservationSource for Bounded<S> {
    async fn read_after(&self, after: Cursor, limit: usize) -> Result<Vec<Reservation>, DbError> {
        let mut rows = self.inner.read_after(after, limit).await?;
        // Rows come in cursor order: everything from the first one at `until` on is out.
        if let Some(cut) = rows.iter().position(|r| r.date_time >= self.until) {
            rows.truncate(cut);
        }
        Ok(rows)
    }
}

/// A source that leaves out the rows whose `pcrKey` is in `skip`, still returning full
/// batches while more rows follow (the read stage takes a short batch for the last one).
#[derive(Debug)]
pub(crate) struct Skipping<S> {
    inner: S,
    skip: HashSet<i64>,
}

impl<S: ReservationSource + Sync> ReservationSource for Skipping<S> {
    async fn read_after(&self, after: Cursor, limit: usize) -> Result<Vec<Reservation>, DbError> {
        let mut kept = Vec::new();
        let mut after = after;
        loop {
            let want = limit - kept.len();
            let rows = self.inner.read_after(after, want).await?;
            let read = rows.len();
            if let Some(last) = rows.last() {
                after = last.cursor();
            }
            kept.extend(rows.into_iter().filter(|r| !self.skip.contains(&r.key)));
            if read < want || kept.len() == limit {
                return Ok(kept);
            }
        }
    }
}

/// How long before `T1` (read as UTC) `--only-missing` starts reading the stream. A row is
/// sent after it is stamped, and its stamp is New York time, at most 5 hours behind UTC: a
/// day before covers that, any clock skew between Envisionware and AWS, and keeps the read
/// short. The stream's retention (24 hours unless raised) bounds it anyway: older records
/// are gone, and what the stream no longer holds cannot be compared.
pub(crate) const STREAM_LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The cursor object of the backfill of `[from, to)`: `<S3_RESOURCE without .json>
/// .backfill-<from>-<to>.json`.
pub(crate) fn cursor_key(resource: &str, from: NaiveDateTime, to: NaiveDateTime) -> String {
    let stem = resource.strip_suffix(".json").unwrap_or(resource);
    format!("{stem}.backfill-{}-{}.json", from.format("%Y%m%dT%H%M%S"), to.format("%Y%m%dT%H%M%S"))
}

/// Where a backfill of `[from, ...)` starts: before every reservation at `from`
/// (Envisionware keys are positive).
pub(crate) fn start_of(from: NaiveDateTime) -> Cursor {
    Cursor { date_time: from, key: -1 }
}

/// Sends the reservations of `[from, to)` again, resumably: progress is kept in the range's
/// own cursor object; the main cursor is not touched.
pub async fn backfill(
    config: &ConfigArgs,
    from: NaiveDateTime,
    to: NaiveDateTime,
    only_missing: bool,
) -> Result<(), AppError> {
    if from >= to {
        return Err(AppError::Usage("backfill: --from must be before --to".into()));
    }
    let raw = super::gather_and_log(config, &config.source(None))?;
    let (settings, sdk, aws) = app::load(raw).await?;
    if settings.ignore_cache || settings.ignore_kinesis {
        return Err(AppError::Usage(
            "backfill: IGNORE_CACHE/IGNORE_KINESIS are not supported; use run --dry-run to try a range"
                .into(),
        ));
    }
    let key = cursor_key(&settings.s3_resource, from, to);
    let location = if only_missing {
        "none (--only-missing sends what the stream lacks and keeps no cursor)".to_string()
    } else {
        format!("{}/{}", settings.s3_bucket, key)
    };
    tracing::info!(
        from = %format_date_time(from),
        to = %format_date_time(to),
        cursor = %location,
        "backfill starts (the main cursor is not touched)"
    );
    let connected = app::connect(&settings).await?;
    let pseudonymizer = app::pseudonymizer(&settings)?;
    let (store, skip) = if only_missing {
        let skip =
            already_on_the_stream(&settings, &sdk, &aws.target(), &connected, &pseudonymizer, from, to)
                .await?;
        (None, skip)
    } else {
        let store =
            S3CursorStore::new(app::s3_client(&sdk, &aws), aws.target(), settings.s3_bucket.clone(), key);
        // The first time, create the backfill's own cursor at the start of the range;
        // later, or when another task of the same range got there first, it exists and is
        // kept. It is created without reading it first: a role without s3:ListBucket gets
        // 403, not 404, for a missing object.
        if store.create(start_of(from)).await? {
            tracing::debug!(cursor = %location, "backfill cursor created at the start of the range");
        }
        (Some(store), HashSet::new())
    };
    let progress = TerminalProgress::counting(async {
        connected.envisionware.count_after(start_of(from), Some(to)).await.ok()
    })
    .await;
    let retries = crate::retry::RetryCount::default();
    let sender = Sender::new(
        Kinesis::new(&sdk, aws.target(), settings.kinesis_stream_arn.clone()),
        settings.retry,
        settings.kinesis_records_per_second,
    );
    let mut stages = connected.into_stages(
        &retries,
        |ew| Skipping { inner: Bounded::new(ew, to), skip },
        store,
        Some(sender),
        pseudonymizer,
    );
    let stop = StopToken::with_grace(settings.stop_timeout);
    stop.listen_for_signals();
    // The retention watchdog does not apply: `Bounded` does not report retention, as a
    // range that starts before Envisionware's oldest row is a deliberate choice here. Nor
    // do late rows: they are counted behind the main cursor only.
    let options = RunOptions {
        stop,
        late_row_window: std::time::Duration::ZERO,
        start_cursor: Some(start_of(from)),
        cursor_location: location,
        progress: progress.as_ref().map(TerminalProgress::hook),
        retries,
        ..app::run_options(&settings)
    };
    let result = crate::pipeline::run(&mut stages, &options).await;
    if let Some(p) = &progress {
        p.finish();
    }
    let summary = result?;
    tracing::info!(%summary, "backfill finished");
    Ok(())
}

/// The `pcrKey`s of the rows of `[from, to)` whose record is already on the stream: the
/// pseudonymous `key` of every record the stream received since [`STREAM_LOOKBACK`] before
/// `from`, against the pseudonym of each row's `pcrKey`.
async fn already_on_the_stream(
    settings: &crate::config::Settings,
    sdk: &aws_config::SdkConfig,
    target: &crate::aws::AwsTarget,
    connected: &app::Connected,
    pseudonymizer: &crate::pseudonym::Pseudonymizer,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<HashSet<i64>, AppError> {
    let since = (from - STREAM_LOOKBACK).and_utc();
    let mut on_stream = HashSet::new();
    let mut collect = |datum: &[u8], origin: &dyn std::fmt::Display| -> Result<bool, AppError> {
        let record = connected
            .encoder
            .decode(datum)
            .map_err(|source| ToolError::OnStream { origin: origin.to_string(), source })?;
        on_stream.insert(record.key);
        Ok(true)
    };
    super::decode::from_stream(
        sdk,
        target,
        &settings.kinesis_stream_arn,
        &super::decode::DecodeFrom::Since(since),
        &mut collect,
    )
    .await?;
    let range = Bounded::new(connected.envisionware.clone(), to);
    let mut keys = Vec::new();
    let mut after = start_of(from);
    loop {
        let rows = range
            .read_after(after, settings.envisionware_batch_size)
            .await
            .map_err(ToolError::Envisionware)?;
        let Some(last) = rows.last() else { break };
        after = last.cursor();
        let short = rows.len() < settings.envisionware_batch_size;
        keys.extend(rows.iter().map(|r| r.key));
        if short {
            break;
        }
    }
    let job = crate::pseudonym::PseudonymJob {
        unique: keys.iter().map(i64::to_string).collect(),
        recurring: Vec::new(),
    };
    let pseudonyms = pseudonymizer.pseudonymize_job(job).await.unique;
    let skip: HashSet<i64> =
        keys.iter().zip(&pseudonyms).filter(|(_, p)| on_stream.contains(*p)).map(|(k, _)| *k).collect();
    tracing::info!(
        stream_since = %since.format("%Y-%m-%dT%H:%M:%SZ"),
        records_on_stream = on_stream.len(),
        rows_in_range = keys.len(),
        already_sent = skip.len(),
        to_send = keys.len() - skip.len(),
        "backfill --only-missing: rows of the range compared with the stream"
    );
    Ok(skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_range_has_its_own_cursor_object() {
        let t = |s: &str| crate::domain::parse_naive_date_time(s).unwrap();
        assert_eq!(
            cursor_key("poller/state.json", t("2024-01-01"), t("2024-02-01")),
            "poller/state.backfill-20240101T000000-20240201T000000.json"
        );
        assert_eq!(start_of(t("2024-01-01")).key, -1);
    }

    /// Keys 1..=n, one a second.
    struct Keys(i64);

    impl ReservationSource for Keys {
        async fn read_after(&self, after: Cursor, limit: usize) -> Result<Vec<Reservation>, DbError> {
            let t0 = crate::domain::parse_naive_date_time("2026-03-06 10:00:00").unwrap();
            Ok((1..=self.0)
                .map(|k| Reservation {
                    key: k,
                    barcode: None,
                    minutes_used: None,
                    date_time: t0 + chrono::TimeDelta::seconds(k),
                    branch: None,
                    area: None,
                    staff_override: None,
                })
                .filter(|r| r.cursor() > after)
                .take(limit)
                .collect())
        }
    }

    #[tokio::test]
    async fn skipping_still_fills_every_batch_but_the_last() {
        let s = Skipping { inner: Keys(10), skip: [2, 3, 4, 5, 9].into() };
        let keys = |rows: Vec<Reservation>| rows.iter().map(|r| r.key).collect::<Vec<_>>();
        let first =
            s.read_after(start_of(crate::domain::parse_naive_date_time("2026-03-06").unwrap()), 3).await;
        let first = keys(first.unwrap());
        assert_eq!(first, [1, 6, 7], "a full batch although four of the first seven rows are skipped");
        let after =
            Keys(10).read_after(start_of(crate::domain::parse_naive_date_time("2026-03-06").unwrap()), 7);
        let seventh = after.await.unwrap()[6].cursor();
        assert_eq!(keys(s.read_after(seventh, 3).await.unwrap()), [8, 10], "short: the last batch");
    }
}
