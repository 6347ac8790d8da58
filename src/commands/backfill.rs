//! `backfill --from T1 --to T2`: sends the reservations of `[T1, T2)` with a cursor
//! object of its own (next to `S3_RESOURCE`, named after the range), leaving the main
//! cursor alone. Backfills of disjoint ranges can run side by side, each on its own
//! machine or ECS task; an interrupted backfill resumes from its own cursor.

use crate::stop::StopToken;
use chrono::NaiveDateTime;

use crate::app::{self, AppError};
use crate::cli::ConfigArgs;
use crate::db::DbError;
use crate::domain::{Cursor, Reservation, format_date_time};
use crate::pipeline::{RunOptions, Stages};
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
pub async fn backfill(config: &ConfigArgs, from: NaiveDateTime, to: NaiveDateTime) -> Result<(), AppError> {
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
    let location = format!("{}/{}", settings.s3_bucket, key);
    tracing::info!(
        from = %format_date_time(from),
        to = %format_date_time(to),
        cursor = %location,
        "backfill starts (the main cursor is not touched)"
    );
    let connected = app::connect(&settings).await?;
    let store = S3CursorStore::new(app::s3_client(&sdk, &aws), settings.s3_bucket.clone(), key);
    // The first time, create the backfill's own cursor at the start of the range; later,
    // or when another task of the same range got there first, it exists and is kept. It is
    // created without reading it first: a role without s3:ListBucket gets 403, not 404,
    // for a missing object.
    if store.create(start_of(from)).await? {
        tracing::debug!(cursor = %location, "backfill cursor created at the start of the range");
    }
    let progress = match TerminalProgress::on_terminal(None) {
        Some(_) => {
            let total = connected.envisionware.count_after(start_of(from), Some(to)).await.ok();
            TerminalProgress::on_terminal(total)
        }
        None => None,
    };
    let pseudonymizer = app::pseudonymizer(&settings)?;
    let mut stages = Stages {
        source: Bounded::new(connected.envisionware, to),
        sierra: connected.sierra,
        redshift: connected.redshift,
        store: Some(store),
        sender: Some(Sender::new(
            Kinesis::new(&sdk, settings.kinesis_stream_arn.clone()),
            settings.retry,
            settings.kinesis_records_per_second,
        )),
        pseudonymizer,
        encoder: connected.encoder,
    };
    let stop = StopToken::with_grace(settings.stop_timeout);
    stop.listen_for_signals();
    // The retention watchdog does not apply: `Bounded` does not report retention, as a
    // range that starts before Envisionware's oldest row is a deliberate choice here.
    let options = RunOptions {
        stop,
        start_cursor: Some(start_of(from)),
        cursor_location: location,
        progress: progress.as_ref().map(TerminalProgress::hook),
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
}
