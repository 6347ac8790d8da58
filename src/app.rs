//! Wires the real stages from validated settings: AWS clients, database pools, the
//! checked schema, then hands them to the run loop. Also the small commands that need
//! only part of the configuration (`pseudonymize`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_config::SdkConfig;

use crate::aws::{AwsSettings, AwsTarget, s3_path_style, sdk_config};
use crate::config::kms::KmsDecrypter;
use crate::config::{ConfigError, RawConfig, Settings};
use crate::db::{DbError, connect_mysql, connect_pg, pg_options};
use crate::encode::{EncodeError, fetch_encoder};
use crate::enrich::redshift::Redshift;
use crate::enrich::sierra::Sierra;
use crate::lease::{Lease, LeaseError, S3LeaseStore, owner_name};
use crate::pipeline::{RunError, RunOptions, RunSummary, Stages, run};
use crate::pseudonym::{Pseudonymizer, Salt};
use crate::retry::{RetryCount, RetryPolicy};
use crate::sink::{Kinesis, Sender};
use crate::source::envisionware::Envisionware;
use crate::state::S3CursorStore;
use crate::stop::{StopReason, StopToken};

/// Exit code: the run failed (a dependency or the data).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the configuration or the command line is wrong; nothing was done.
pub(crate) const EXIT_CONFIG: u8 = 2;
/// Exit code: another runner holds the lease (or took it during this run); this run sent
/// nothing more.
pub const EXIT_LEASE_HELD: u8 = 3;
/// Exit code: another writer changed the cursor; this run stopped without sending more.
pub(crate) const EXIT_CONFLICT: u8 = 4;
/// Exit code: Envisionware's oldest row is newer than the cursor: reservations were
/// purged before they were sent.
pub const EXIT_RETENTION_LOST: u8 = 5;
/// Exit code: stopped by SIGTERM or SIGINT after saving the cursor of what was acknowledged.
pub const EXIT_STOPPED: u8 = 6;
/// Exit code: `check` found a failing dependency.
pub(crate) const EXIT_CHECK_FAILED: u8 = 7;
/// Exit code: `reconcile` found a difference larger than its tolerance.
pub(crate) const EXIT_RECONCILE_DIFFERENCE: u8 = 8;

mod failures;
pub use failures::{StartupError, ToolError};

/// A failed command, named by its stage.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The schema could not be fetched or does not fit.
    #[error("schema: {0}")]
    Schema(#[source] EncodeError),
    /// A database could not be reached.
    #[error(
        "{what}: cannot connect: {source} (check {}_DB_HOST, _PORT, _USER, _PASSWORD and that the database accepts connections)",
        what.to_ascii_uppercase()
    )]
    Connect {
        /// Envisionware, Sierra or Redshift.
        what: &'static str,
        /// Why.
        #[source]
        source: DbError,
    },
    /// Something local failed (thread pool, I/O).
    #[error("startup: {0}")]
    Startup(#[from] StartupError),
    /// The lease could not be taken.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The run loop failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Reading or writing the cursor object outside a run (cursor tools).
    #[error("cursor store: {0}")]
    State(#[from] crate::state::StateError),
    /// A tool failed; the message names the stage.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The command line asks for something impossible; nothing was done.
    #[error("usage: {0}")]
    Usage(String),
    /// `check` found failing dependencies (they were printed).
    #[error("check: {0} of the dependencies failed")]
    CheckFailed(usize),
    /// `reconcile` found a difference larger than `--tolerance` (the counts were printed).
    #[error("reconcile: the difference ({difference}) is larger than the tolerance ({tolerance}): {missing}")]
    ReconcileDifference {
        /// Envisionware's reservations minus the warehouse's distinct keys.
        difference: i128,
        /// The largest difference, either way, that passes.
        tolerance: u64,
        /// What the difference means, in words.
        missing: String,
    },
    /// The dry run's file could not be created or closed.
    #[error(transparent)]
    DryRun(#[from] crate::dry_run::DryRunError),
    /// SIGTERM or SIGINT stopped the command after the cursor was saved.
    #[error("stopped by a signal; the cursor is saved")]
    Stopped,
}

impl AppError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => EXIT_CONFIG,
            Self::Run(RunError::State(crate::state::StateError::Conflict { .. }))
            | Self::State(crate::state::StateError::Conflict { .. }) => EXIT_CONFLICT,
            Self::Lease(LeaseError::Held { .. }) => EXIT_LEASE_HELD,
            Self::Run(RunError::Stopped { reason: StopReason::LeaseLost, .. }) => EXIT_LEASE_HELD,
            Self::Run(RunError::Stopped { .. }) | Self::Stopped => EXIT_STOPPED,
            Self::Run(RunError::RetentionLost { .. }) => EXIT_RETENTION_LOST,
            Self::Usage(_) => EXIT_CONFIG,
            Self::CheckFailed(_) => EXIT_CHECK_FAILED,
            Self::ReconcileDifference { .. } => EXIT_RECONCILE_DIFFERENCE,
            _ => EXIT_FAILURE,
        }
    }

    /// The stage that failed, as the message starts (`configuration`, `schema`,
    /// `Envisionware`, `cursor store`, `check`, ...): the `stage` field of the line that
    /// ends a failed command (`docs/deploying.md`, "The failure line").
    pub fn stage(&self) -> String {
        let fixed = match self {
            Self::Config(_) => "configuration",
            Self::Schema(_) => "schema",
            Self::Connect { what, .. } => what,
            Self::Startup(_) => "startup",
            Self::Lease(_) => "lease",
            Self::State(_) => "cursor store",
            Self::Usage(_) => "usage",
            Self::CheckFailed(_) => "check",
            Self::ReconcileDifference { .. } => "reconcile",
            Self::Stopped | Self::Run(RunError::Stopped { .. }) => "run",
            Self::Tool(e) => e.stage(),
            // Their messages start with the stage's name: `Envisionware: ...`,
            // `cursor store: ...`, `dry-run output: ...`.
            Self::Run(_) | Self::DryRun(_) => {
                let text = self.to_string();
                return match text.split_once(": ") {
                    Some((stage, _)) if !stage.is_empty() && stage.len() <= 40 => stage.to_string(),
                    _ => "run".to_string(),
                };
            }
        };
        fixed.to_string()
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The YAML file, if any.
    pub path: Option<PathBuf>,
    /// `NAME=VALUE` overrides from flags.
    pub flags: BTreeMap<String, String>,
}

/// Phase one of the configuration: the file, environment and flags, no network yet.
pub fn gather(source: &ConfigSource) -> Result<RawConfig, ConfigError> {
    RawConfig::gather(source.path.as_deref(), &|name| std::env::var(name).ok(), &source.flags)
}

/// Phase two: decrypts and validates; returns the settings and the shared AWS config.
pub(crate) async fn load(raw: RawConfig) -> Result<(Settings, SdkConfig, AwsSettings), ConfigError> {
    raw.check_required()?;
    let aws = raw.aws_settings();
    let sdk = sdk_config(&aws).await;
    let key_id = raw.kms_key_id()?;
    let settings = raw.resolve(&KmsDecrypter::new(&sdk, aws.target(), key_id)).await?;
    Ok((settings, sdk, aws))
}

/// One variable's text, for commands that need only a few: its plain value, else the
/// file's ciphertext decrypted with KMS (the SDK configuration is loaded only then, by
/// `sdk`); `None` when it is set neither way.
pub(crate) async fn plain_or_decrypted(
    raw: &RawConfig,
    name: &str,
    sdk: impl AsyncFnOnce() -> (SdkConfig, AwsTarget),
) -> Result<Option<secrecy::SecretString>, ConfigError> {
    if let Some(v) = raw.plain(name) {
        return Ok(Some(secrecy::SecretString::from(v.to_string())));
    }
    if !raw.encrypted_names().any(|n| n == name) {
        return Ok(None);
    }
    let (sdk, target) = sdk().await;
    raw.decrypt_one(name, &KmsDecrypter::new(&sdk, target, raw.kms_key_id()?)).await.map(Some)
}

/// Resolves only `BCRYPT_SALT` (decrypting it if needed), for `pseudonymize`.
pub async fn load_salt(raw: RawConfig) -> Result<Salt, ConfigError> {
    let aws = raw.aws_settings();
    let name = crate::config::variables::BCRYPT_SALT.name;
    let salt_text = plain_or_decrypted(&raw, name, async || (sdk_config(&aws).await, aws.target()))
        .await?
        .ok_or_else(|| ConfigError::Missing(vec![name]))?;
    use secrecy::ExposeSecret as _;
    Salt::parse(salt_text.expose_secret().trim_end_matches(['\r', '\n']).trim_start())
        .map_err(|e| ConfigError::Invalid { name: name.into(), reason: e.to_string() })
}

/// The real stages that talk to databases and the schema endpoint, connected.
#[derive(Debug)]
pub struct Connected {
    /// The checked schema's encoder.
    pub encoder: crate::encode::AvroEncoder,
    /// Reads reservations from Envisionware (MySQL).
    pub envisionware: Envisionware,
    /// Looks patrons up by barcode in Sierra (PostgreSQL).
    pub sierra: Sierra,
    /// Looks postal codes and census tracts up by pseudonymous patron id in Redshift.
    pub redshift: Redshift,
}

impl Connected {
    /// The run's stages: the readers on these connections, `source` wrapping the
    /// Envisionware reader (the identity for a run, a bounded range for a backfill), and
    /// the given cursor store, sender and pseudonymizer. Every reader and the sender count
    /// their retries in `retries` (the run's count).
    pub(crate) fn into_stages<Src, Store, Put: crate::sink::PutRecords>(
        self,
        retries: &RetryCount,
        source: impl FnOnce(Envisionware) -> Src,
        store: Option<Store>,
        sender: Option<Sender<Put>>,
        pseudonymizer: Pseudonymizer,
    ) -> Stages<Src, Sierra, Redshift, Store, Put> {
        Stages {
            source: source(self.envisionware.counting(retries)),
            sierra: self.sierra.counting(retries),
            redshift: self.redshift.counting(retries),
            store,
            sender: sender.map(|s| s.counting(retries)),
            pseudonymizer,
            encoder: self.encoder,
        }
    }
}

/// Fetches the schema and opens the three database pools, all at once.
pub async fn connect(settings: &Settings) -> Result<Connected, AppError> {
    let (encoder, envisionware, sierra_pool, redshift) = tokio::try_join!(
        async {
            fetch_encoder(&settings.schema_url, settings.schema_timeout, &settings.retry)
                .await
                .map_err(AppError::Schema)
        },
        connect_envisionware(settings, &settings.retry),
        async {
            connect_pg(
                "Sierra connect",
                pg_options(&settings.sierra, false, settings.statement_timeout),
                settings.connect_timeout,
                &settings.retry,
            )
            .await
            .map_err(|source| AppError::Connect { what: "Sierra", source })
        },
        connect_redshift(settings),
    )?;
    // One WARN per database whose connection is not verified TLS, saying what it got.
    let timeout = settings.connect_timeout;
    let (e, s, r) = tokio::join!(
        crate::db::mysql_tls(envisionware.pool(), settings.envisionware.ssl_mode, timeout),
        crate::db::pg_tls(&sierra_pool, settings.sierra.ssl_mode, timeout),
        crate::db::pg_tls(redshift.pool(), settings.redshift.ssl_mode, timeout),
    );
    crate::db::warn_if_unverified("Envisionware", "ENVISIONWARE_DB", &e);
    crate::db::warn_if_unverified("Sierra", "SIERRA_DB", &s);
    crate::db::warn_if_unverified("Redshift", "REDSHIFT_DB", &r);
    Ok(Connected {
        encoder,
        envisionware,
        sierra: Sierra::new(sierra_pool, settings.statement_timeout, settings.retry),
        redshift,
    })
}

/// Opens Envisionware's pool as a run does (connections retried by `retry`) and returns the
/// reader on it: the run's source, and what the tools ask their questions through.
pub(crate) async fn connect_envisionware(
    settings: &Settings,
    retry: &RetryPolicy,
) -> Result<Envisionware, AppError> {
    let pool = connect_mysql(&settings.envisionware, settings.connect_timeout, retry)
        .await
        .map_err(|source| AppError::Connect { what: "Envisionware", source })?;
    Ok(Envisionware::new(pool, settings.statement_timeout, settings.retry)
        .with_settle_delay(settings.settle_delay))
}

/// Opens Redshift's pool as a run does and returns the lookup on it: the run's, and the
/// warehouse counts `reconcile` asks for.
pub(crate) async fn connect_redshift(settings: &Settings) -> Result<Redshift, AppError> {
    let pool = connect_pg(
        "Redshift connect",
        pg_options(&settings.redshift, true, settings.statement_timeout),
        settings.connect_timeout,
        &settings.retry,
    )
    .await
    .map_err(|source| AppError::Connect { what: "Redshift", source })?;
    Ok(Redshift::new(
        pool,
        settings.redshift_patron_table.clone(),
        settings.statement_timeout,
        settings.retry,
    ))
}

/// The store of the run's cursor (`S3_RESOURCE` in `S3_BUCKET`).
pub(crate) fn cursor_store(settings: &Settings, s3: aws_sdk_s3::Client, target: AwsTarget) -> S3CursorStore {
    S3CursorStore::new(s3, target, settings.s3_bucket.clone(), settings.s3_resource.clone())
}

/// The pseudonymizer the settings ask for: salt, thread count and kernel.
pub fn pseudonymizer(settings: &Settings) -> Result<Pseudonymizer, AppError> {
    Pseudonymizer::with_kernel(settings.salt.clone(), settings.pseudonym_threads, settings.pseudonym_kernel)
        .map_err(|e| StartupError::ThreadPool(e).into())
}

/// An S3 client honouring the endpoint's addressing style.
pub(crate) fn s3_client(sdk: &SdkConfig, aws: &AwsSettings) -> aws_sdk_s3::Client {
    let s3_conf = aws_sdk_s3::config::Builder::from(sdk).force_path_style(s3_path_style(aws)).build();
    aws_sdk_s3::Client::from_conf(s3_conf)
}

/// The run options the settings give: no progress hook, and a stop token nobody sets
/// unless the caller replaces it.
pub fn run_options(settings: &Settings) -> RunOptions {
    RunOptions {
        envisionware_batch_size: settings.envisionware_batch_size,
        kinesis_batch_size: settings.kinesis_batch_size,
        max_batches: settings.max_batches,
        start_cursor: settings.start_cursor,
        cursor_location: format!("{}/{}", settings.s3_bucket, settings.s3_resource),
        stop: StopToken::with_grace(settings.stop_timeout),
        cursor_max_age: settings.cursor_max_age,
        retention_window: settings.envisionware_retention,
        late_row_window: settings.late_row_window,
        progress: None,
        retries: crate::retry::RetryCount::default(),
    }
}

/// Performs one run with the real stages, without progress and not listening for signals
/// ([`run_once_with`] with neither; what the integration tests call).
pub async fn run_once(
    settings: &Settings,
    sdk: &SdkConfig,
    aws: &AwsSettings,
) -> Result<RunSummary, AppError> {
    run_once_with(settings, sdk, aws, None, StopToken::with_grace(settings.stop_timeout)).await
}

/// Performs one run with the real stages, calling `progress` after every batch and
/// stopping early when `stop` is set. Unless the cursor is ignored, the run first takes
/// the lease next to the cursor (exit code 3 when another runner holds it), keeps it
/// renewed, and releases it at the end, whatever the outcome.
pub(crate) async fn run_once_with(
    settings: &Settings,
    sdk: &SdkConfig,
    aws: &AwsSettings,
    progress: Option<crate::pipeline::ProgressHook>,
    stop: StopToken,
) -> Result<RunSummary, AppError> {
    let s3 = s3_client(sdk, aws);
    if settings.ignore_cache {
        let connected = connect_unless_stopped(settings, &stop).await?;
        return run_connected(settings, sdk, aws, s3, connected, progress, stop).await;
    }
    let store = S3LeaseStore::new(
        s3.clone(),
        aws.target(),
        settings.s3_bucket.clone(),
        settings.lease_resource.clone(),
    );
    // The lease and the connections do not depend on each other: both at once. Nothing is
    // read or sent before the lease is held.
    let (lease, connected) = tokio::join!(
        Lease::acquire(store, owner_name(), settings.lease_ttl, chrono::Utc::now()),
        connect_unless_stopped(settings, &stop)
    );
    let mut lease = lease?;
    tracing::info!(owner = %lease.record().owner, "lease taken");
    lease.keep_renewed(stop.clone());
    let outcome = match connected {
        Ok(connected) => run_connected(settings, sdk, aws, s3, connected, progress, stop).await,
        Err(e) => Err(e),
    };
    lease.release().await;
    outcome
}

/// [`connect`], given up at once when a stop is requested (nothing has been sent yet).
async fn connect_unless_stopped(settings: &Settings, stop: &StopToken) -> Result<Connected, AppError> {
    let mut startup_stop = stop.clone();
    startup_stop.grace = std::time::Duration::ZERO;
    startup_stop.bounded(connect(settings)).await.ok_or_else(|| {
        AppError::Run(RunError::Stopped {
            reason: stop.reason().unwrap_or(StopReason::Terminate),
            cursor: "not moved".into(),
        })
    })?
}

/// Runs the pipeline on stages built from `connected` (and the cursor store and Kinesis
/// sender the settings ask for).
async fn run_connected(
    settings: &Settings,
    sdk: &SdkConfig,
    aws: &AwsSettings,
    s3: aws_sdk_s3::Client,
    connected: Connected,
    progress: Option<crate::pipeline::ProgressHook>,
    stop: StopToken,
) -> Result<RunSummary, AppError> {
    let options = RunOptions { progress, stop, ..run_options(settings) };
    let retries = &options.retries;
    let store = (!settings.ignore_cache).then(|| cursor_store(settings, s3, aws.target()));
    let sender = (!settings.ignore_kinesis).then(|| {
        Sender::new(
            Kinesis::new(sdk, aws.target(), settings.kinesis_stream_arn.clone()),
            settings.retry,
            settings.kinesis_records_per_second,
        )
    });
    let pseudonymizer = pseudonymizer(settings)?;
    let mut stages = connected.into_stages(retries, |ew| ew, store, sender, pseudonymizer);
    Ok(run(&mut stages, &options).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::documented_defaults_tests::with;

    #[test]
    fn pseudonym_threads_sizes_the_hashing_pool_and_0_means_one_per_core() {
        let three = pseudonymizer(&with(&[("PSEUDONYM_THREADS", "3")]).unwrap()).unwrap();
        assert_eq!(three.threads(), 3);
        let default = pseudonymizer(&with(&[]).unwrap()).unwrap();
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        assert_eq!(default.threads(), cores, "README: one per core by default");
    }

    #[test]
    fn each_failure_names_its_stage_and_its_message_starts_with_it() {
        let cases: Vec<(AppError, &str)> = vec![
            (AppError::Config(ConfigError::Missing(vec!["AWS_REGION"])), "configuration"),
            (AppError::Schema(EncodeError::Fetch("HTTP 500".into())), "schema"),
            (StartupError::UnknownKernel("lanes9".into()).into(), "startup"),
            (ToolError::Kinesis("gone".into()).into(), "Kinesis"),
            (ToolError::NotConfirmed.into(), "cursor set"),
            (
                ToolError::OnStream {
                    origin: "shard-0 #1".into(),
                    source: crate::encode::DecodeError::TooLarge(1),
                }
                .into(),
                "backfill --only-missing",
            ),
            (ToolError::LineTooLong { path: "d.txt".into(), line: 2, max_bytes: 3 }.into(), "decode"),
            (AppError::CheckFailed(3), "check"),
            (AppError::Usage("unexpected argument".into()), "usage"),
            (
                AppError::Lease(LeaseError::S3 { location: "b/k.lease".into(), message: "denied".into() }),
                "lease",
            ),
            (AppError::Run(RunError::NoCursor("b/k".into())), "cursor store"),
            (AppError::DryRun(crate::dry_run::DryRunError::Closed), "dry-run output"),
        ];
        for (err, stage) in cases {
            assert_eq!(err.stage(), stage, "{err}");
            assert!(err.to_string().starts_with(&format!("{stage}: ")), "{err}");
        }
        // Not failures: their lines get the stage in front (logging::report_outcome).
        assert_eq!(AppError::Stopped.stage(), "run");
        let held = LeaseError::Held { location: "b/k".into(), owner: "o".into(), expires_at: "t".into() };
        assert_eq!(AppError::Lease(held).stage(), "lease");
    }
}
