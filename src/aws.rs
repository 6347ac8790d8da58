//! The shared AWS configuration: region and profile from the merged configuration, the
//! standard credential chain, `AWS_ENDPOINT_URL` for local emulators, and bounded
//! timeouts and retries on every client.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// What the AWS clients need to know before the rest of the configuration is validated.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// `AWS_REGION` (from flags, environment or file).
    pub region: Option<String>,
    /// `AWS_PROFILE`, which the original's README tells users to put in the file.
    pub profile: Option<String>,
    /// `AWS_ENDPOINT_URL` when set in the file or flags (the SDK reads the environment's
    /// own value by itself).
    pub endpoint_url: Option<String>,
    /// Attempts per AWS call, the first included.
    pub max_attempts: u32,
}

/// Loads the SDK configuration every client shares.
pub async fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts.max(1)))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(Duration::from_secs(120))
                .build(),
        );
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Whether S3 must use path-style addressing: with a custom endpoint (a local emulator on
/// an IP address has no virtual-host names).
pub fn s3_path_style(settings: &AwsSettings) -> bool {
    settings.endpoint_url.is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
}

/// An AWS SDK error on one line: the service's error code and message when the service
/// answered, else the whole cause chain (timeouts, connection failures). Never the raw
/// response, which would make a log line of several kilobytes.
pub fn error_text<E>(err: &E) -> String
where
    E: std::error::Error + aws_sdk_kms::error::ProvideErrorMetadata,
{
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => aws_sdk_kms::error::DisplayErrorContext(err).to_string(),
    }
}
