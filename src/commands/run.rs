//! `run`: one poll, or one per interval with `--every`; `--dry-run` writes to a file
//! instead of Kinesis and leaves the S3 cursor alone; `--metrics emf` prints the summary
//! as CloudWatch metrics. The summary line is logged after every run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;

use crate::app::{self, AppError};
use crate::aws::AwsSettings;
use crate::cli::{ConfigArgs, RunArgs};
use crate::config::Settings;
use crate::domain::Cursor;
use crate::dry_run::{DryRunFormat, FileSink};
use crate::metrics;
use crate::pipeline::{ProgressHook, RunError, RunOptions, RunSummary};
use crate::progress::TerminalProgress;
use crate::retry::RetryPolicy;
use crate::sink::Sender;
use crate::state::{CursorStore as _, S3CursorStore};
use crate::stop::StopToken;

/// The `Environment` dimension of metrics: the environment name, else the file's stem.
fn environment_name(config: &ConfigArgs) -> String {
    config
        .environment
        .clone()
        .or_else(|| {
            config.config.as_ref().and_then(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "default".into())
}

/// `run` (also the default command).
pub async fn run(config: &ConfigArgs, args: RunArgs) -> Result<(), AppError> {
    let source = config.source(Some(&args));
    let raw = super::gather_and_log_source(config, &source, true)?;
    let (settings, sdk, aws) = app::load(raw).await?;
    let environment = environment_name(config);
    let stop = StopToken::with_grace(settings.stop_timeout);
    stop.listen_for_signals();
    let Some(interval) = args.every else {
        return once(&settings, &sdk, &aws, &args, &environment, stop).await.map(|_| ());
    };
    loop {
        let started = Instant::now();
        match once(&settings, &sdk, &aws, &args, &environment, stop.clone()).await {
            Ok(_) => {}
            Err(e @ (AppError::Config(_) | AppError::Usage(_))) => return Err(e),
            Err(e) if e.exit_code() == app::EXIT_CONFLICT => return Err(e),
            Err(e) if stop.reason().is_some() => return Err(e),
            // One ERROR line per failed run, in the shape of the line that ends a failed
            // command (`docs/deploying.md`, "The failure line"), without an exit code: the loop goes on.
            Err(e) => tracing::error!(stage = %e.stage(), "{e} (trying again at the next interval)"),
        }
        if stop.reason().is_some() {
            return Err(AppError::Stopped);
        }
        let wait = interval.saturating_sub(started.elapsed());
        tracing::info!(next_in_s = wait.as_secs(), "waiting for the next run");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.stopped() => {
                tracing::info!("signal received while waiting: stopping");
                return Err(AppError::Stopped);
            }
        }
    }
}

async fn once(
    settings: &Settings,
    sdk: &SdkConfig,
    aws: &AwsSettings,
    args: &RunArgs,
    environment: &str,
    stop: StopToken,
) -> Result<RunSummary, AppError> {
    let progress = TerminalProgress::counting(async {
        match start_cursor(settings, sdk, aws).await.ok().flatten() {
            Some(c) => backlog(settings, c).await,
            None => None,
        }
    })
    .await;
    let hook = progress.as_ref().map(TerminalProgress::hook);
    let result = if args.dry_run {
        let output = args.output.clone().unwrap_or_else(|| default_output(args.format));
        dry_run(settings, sdk, aws, args.format, &output, hook, stop).await
    } else {
        app::run_once_with(settings, sdk, aws, hook, stop).await
    };
    if let Some(p) = &progress {
        p.finish();
    }
    match result {
        Ok(mut summary) => {
            if let Some(after) = summary.cursor_after {
                summary.cursor_lag = cursor_lag(settings, after).await;
            }
            tracing::info!(%summary, "run finished");
            if args.metrics.is_some() {
                metrics::emit(&metrics::run_document(environment, &summary));
            }
            Ok(summary)
        }
        Err(e) => {
            if args.metrics.is_some() {
                let doc = if e.exit_code() == app::EXIT_LEASE_HELD {
                    metrics::refused_document(environment)
                } else {
                    metrics::failure_document(environment)
                };
                metrics::emit(&doc);
            }
            Err(e)
        }
    }
}

/// The default `--output` of a dry run.
pub(crate) fn default_output(format: DryRunFormat) -> PathBuf {
    PathBuf::from(match format {
        DryRunFormat::Jsonl => "dry-run.jsonl",
        DryRunFormat::Avro => "dry-run.avro",
    })
}

/// Where a run would start: the S3 cursor, else `PCR_DATE_TIME`/`PCR_KEY`.
async fn start_cursor(
    settings: &Settings,
    sdk: &SdkConfig,
    aws: &AwsSettings,
) -> Result<Option<Cursor>, AppError> {
    if settings.ignore_cache {
        return Ok(Some(settings.start_cursor.unwrap_or_else(Cursor::default_start)));
    }
    let store = app::cursor_store(settings, app::s3_client(sdk, aws), aws.target());
    Ok(store.load().await?.or(settings.start_cursor))
}

/// Reservations after `cursor` (for the progress bar), `None` when unknown.
async fn backlog(settings: &Settings, cursor: Cursor) -> Option<u64> {
    let source = app::connect_envisionware(settings, &RetryPolicy::none()).await.ok()?;
    let n = source.count_after(cursor, None).await.ok();
    source.close().await;
    n
}

/// How far `cursor` is behind Envisionware's newest reservation.
async fn cursor_lag(settings: &Settings, cursor: Cursor) -> Option<Duration> {
    let source = app::connect_envisionware(settings, &settings.retry).await.ok()?;
    let newest = source.newest().await;
    source.close().await;
    match newest {
        Ok(n) => super::lag(cursor, n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot measure the cursor lag");
            None
        }
    }
}

/// A full run whose records go to a file; neither Kinesis nor the S3 cursor is touched.
pub(crate) async fn dry_run(
    settings: &Settings,
    sdk: &SdkConfig,
    aws: &AwsSettings,
    format: DryRunFormat,
    output: &std::path::Path,
    progress: Option<ProgressHook>,
    stop: StopToken,
) -> Result<RunSummary, AppError> {
    let start = start_cursor(settings, sdk, aws)
        .await?
        .ok_or_else(|| RunError::NoCursor(format!("{}/{}", settings.s3_bucket, settings.s3_resource)))?;
    let connected = app::connect(settings).await?;
    let encoder = connected.encoder.clone();
    let sink = FileSink::create(&encoder, format, output)?;
    let pseudonymizer = app::pseudonymizer(settings)?;
    let options = RunOptions { start_cursor: Some(start), progress, stop, ..app::run_options(settings) };
    let sender = Sender::new(sink, RetryPolicy::none(), 0);
    let mut stages =
        connected.into_stages(&options.retries, |ew| ew, None::<S3CursorStore>, Some(sender), pseudonymizer);
    let result = crate::pipeline::run(&mut stages, &options).await;
    if let Some(sender) = &stages.sender {
        sender.inner().finish()?;
    }
    let summary = result?;
    tracing::info!(
        output = %output.display(),
        records = summary.records(),
        "dry run: records written to the file; nothing sent, cursor unchanged"
    );
    Ok(summary)
}
