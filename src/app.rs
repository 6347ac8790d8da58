//! Wires the real stages from validated settings: AWS clients, database pools, the
//! checked schema, then hands them to the run loop. Also the small commands that need
//! only part of the configuration (`pseudonymize`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_config::SdkConfig;

use crate::aws::{AwsSettings, s3_path_style, sdk_config};
use crate::config::kms::KmsDecrypter;
use crate::config::{ConfigError, RawConfig, Settings};
use crate::db::{DbError, connect_mysql, connect_pg, pg_options};
use crate::encode::{EncodeError, fetch_encoder};
use crate::enrich::redshift::Redshift;
use crate::enrich::sierra::Sierra;
use crate::pipeline::{RunError, RunOptions, RunSummary, Stages, run};
use crate::pseudonym::{Pseudonymizer, Salt};
use crate::sink::{Kinesis, Sender};
use crate::source::envisionware::Envisionware;
use crate::state::S3CursorStore;

/// Exit code: the run failed (a dependency or the data).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the configuration or the command line is wrong; nothing was done.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code: another writer changed the cursor; this run stopped without sending more.
pub const EXIT_CONFLICT: u8 = 4;

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
    #[error("{what}: cannot connect: {source}")]
    Connect {
        /// Envisionware, Sierra or Redshift.
        what: &'static str,
        /// Why.
        #[source]
        source: DbError,
    },
    /// Something local failed (thread pool, I/O).
    #[error("startup: {0}")]
    Startup(String),
    /// The run loop failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

impl AppError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => EXIT_CONFIG,
            Self::Run(RunError::State(crate::state::StateError::Conflict { .. })) => EXIT_CONFLICT,
            _ => EXIT_FAILURE,
        }
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

/// The AWS settings visible before decryption.
pub fn aws_settings(raw: &RawConfig) -> AwsSettings {
    let text = |n: &str| raw.plain(n).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    AwsSettings {
        region: text("AWS_REGION"),
        profile: text("AWS_PROFILE"),
        endpoint_url: text("AWS_ENDPOINT_URL"),
        max_attempts: text("RETRY_ATTEMPTS").and_then(|v| v.parse().ok()).unwrap_or(4),
    }
}

/// Phase two: decrypts and validates; returns the settings and the shared AWS config.
pub async fn load(raw: RawConfig) -> Result<(Settings, SdkConfig, AwsSettings), ConfigError> {
    raw.check_required()?;
    let aws = aws_settings(&raw);
    let sdk = sdk_config(&aws).await;
    let settings = raw.resolve(&KmsDecrypter::new(&sdk)).await?;
    Ok((settings, sdk, aws))
}

/// Resolves only `BCRYPT_SALT` (decrypting it if needed), for `pseudonymize`.
pub async fn load_salt(raw: RawConfig) -> Result<Salt, ConfigError> {
    let aws = aws_settings(&raw);
    let salt_text = if let Some(v) = raw.plain("BCRYPT_SALT") {
        secrecy::SecretString::from(v.to_string())
    } else if raw.encrypted_names().any(|n| n == "BCRYPT_SALT") {
        let sdk = sdk_config(&aws).await;
        raw.decrypt_one("BCRYPT_SALT", &KmsDecrypter::new(&sdk)).await?
    } else {
        return Err(ConfigError::Missing(vec!["BCRYPT_SALT"]));
    };
    use secrecy::ExposeSecret as _;
    Salt::parse(salt_text.expose_secret().trim_end_matches(['\r', '\n']).trim_start())
        .map_err(|e| ConfigError::Invalid { name: "BCRYPT_SALT".into(), reason: e.to_string() })
}

/// Performs one run with the real stages.
pub async fn run_once(
    settings: &Settings,
    sdk: &SdkConfig,
    aws: &AwsSettings,
) -> Result<RunSummary, AppError> {
    let encoder = fetch_encoder(&settings.schema_url, settings.schema_timeout, &settings.retry)
        .await
        .map_err(AppError::Schema)?;
    let (ew_pool, sierra_pool, redshift_pool) = tokio::try_join!(
        async {
            connect_mysql(&settings.envisionware, settings.connect_timeout, &settings.retry)
                .await
                .map_err(|source| AppError::Connect { what: "Envisionware", source })
        },
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
        async {
            connect_pg(
                "Redshift connect",
                pg_options(&settings.redshift, true, settings.statement_timeout),
                settings.connect_timeout,
                &settings.retry,
            )
            .await
            .map_err(|source| AppError::Connect { what: "Redshift", source })
        },
    )?;
    let store = (!settings.ignore_cache).then(|| {
        let s3_conf = aws_sdk_s3::config::Builder::from(sdk).force_path_style(s3_path_style(aws)).build();
        S3CursorStore::new(
            aws_sdk_s3::Client::from_conf(s3_conf),
            settings.s3_bucket.clone(),
            settings.s3_resource.clone(),
        )
    });
    let sender = (!settings.ignore_kinesis).then(|| {
        Sender::new(
            Kinesis::new(sdk, settings.kinesis_stream_arn.clone()),
            settings.retry,
            settings.kinesis_records_per_second,
        )
    });
    let pseudonymizer = Pseudonymizer::with_kernel(
        settings.salt.clone(),
        settings.pseudonym_threads,
        settings.pseudonym_kernel,
    )
    .map_err(|e| AppError::Startup(format!("bcrypt thread pool: {e}")))?;
    let mut stages = Stages {
        source: Envisionware::new(ew_pool, settings.statement_timeout, settings.retry),
        sierra: Sierra::new(sierra_pool, settings.statement_timeout, settings.retry),
        redshift: Redshift::new(
            redshift_pool,
            settings.redshift_patron_table.clone(),
            settings.statement_timeout,
            settings.retry,
        ),
        store,
        sender,
        pseudonymizer,
        encoder,
    };
    let options = RunOptions {
        envisionware_batch_size: settings.envisionware_batch_size,
        kinesis_batch_size: settings.kinesis_batch_size,
        max_batches: settings.max_batches,
        start_cursor: settings.start_cursor,
        cursor_location: format!("{}/{}", settings.s3_bucket, settings.s3_resource),
    };
    Ok(run(&mut stages, &options).await?)
}
