//! The validated settings: [`Settings`], one [`DbSettings`] per database, [`SslMode`]
//! and [`LogLevel`]. Their `Debug` never shows a password or the salt.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::{ConfigError, invalid};
use crate::domain::Cursor;
use crate::pseudonym::{Kernel, Salt};
use crate::retry::RetryPolicy;

/// How a database connection uses TLS (libpq's `sslmode` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, unverified.
    Prefer,
    /// TLS, certificate not verified.
    Require,
    /// TLS, certificate chain verified against the CA bundle.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    /// The mode's name as `*_DB_SSLMODE` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate is verified (chain, and for `verify-full` the name).
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }

    pub(super) fn parse(name: &str, text: &str) -> Result<Self, ConfigError> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" | "verify_ca" => Self::VerifyCa,
            "verify-full" | "verify_full" | "verify_identity" => Self::VerifyFull,
            _ => {
                return Err(invalid(name, "must be one of disable, prefer, require, verify-ca, verify-full"));
            }
        })
    }
}

/// Connection settings of one database.
#[derive(Clone)]
pub struct DbSettings {
    /// Host name or address.
    pub host: String,
    /// TCP port of the server (`*_DB_PORT`).
    pub port: u16,
    /// Database to connect to (`*_DB_NAME`).
    pub database: String,
    /// Login role (`*_DB_USER`).
    pub user: String,
    /// `*_DB_PASSWORD`; never printed or logged.
    pub password: SecretString,
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full` (`*_DB_SSLMODE`).
    pub ssl_mode: SslMode,
    /// CA bundle for `verify-ca`/`verify-full`; the system roots when unset.
    pub ssl_root_cert: Option<PathBuf>,
}

impl fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSettings")
            .field("port", &self.port)
            .field("database", &self.database)
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

/// `LOG_LEVEL` values, with the original's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything.
    Debug,
    /// The default.
    Info,
    /// `warning` in the original's terms.
    Warning,
    /// Errors only.
    Error,
    /// The original's `critical`; errors only here.
    Critical,
}

impl LogLevel {
    /// Parses a `LOG_LEVEL` value (any case; `warn` and `trace` are accepted too).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "debug" | "trace" => Self::Debug,
            "info" => Self::Info,
            "warning" | "warn" => Self::Warning,
            "error" => Self::Error,
            "critical" | "fatal" => Self::Critical,
            _ => return None,
        })
    }

    /// The matching tracing filter directive.
    pub(crate) fn directive(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warning => "warn",
            Self::Error | Self::Critical => "error",
        }
    }
}

/// Validated settings for one run.
#[derive(Clone)]
pub struct Settings {
    /// `AWS_REGION`.
    pub aws_region: String,
    /// `ENVISIONWARE_DB_*`.
    pub envisionware: DbSettings,
    /// `SIERRA_DB_*`.
    pub sierra: DbSettings,
    /// `REDSHIFT_DB_*`.
    pub redshift: DbSettings,
    /// The Redshift table with postal codes and census tracts (from `REDSHIFT_DB_NAME`).
    pub redshift_patron_table: String,
    /// `KINESIS_STREAM_ARN`.
    pub kinesis_stream_arn: String,
    /// `KINESIS_BATCH_SIZE`: records per PutRecords request (1..=500).
    pub kinesis_batch_size: usize,
    /// `KINESIS_MAX_RECORDS_PER_SECOND`: pacing; 0 turns it off. Default 1000.
    pub kinesis_records_per_second: u32,
    /// `ENVISIONWARE_BATCH_SIZE`: rows read per query.
    pub envisionware_batch_size: usize,
    /// `BCRYPT_SALT`.
    pub salt: Salt,
    /// `S3_BUCKET` (empty only when the cache is ignored).
    pub s3_bucket: String,
    /// `S3_RESOURCE`: the cursor object's key.
    pub s3_resource: String,
    /// `PC_RESERVE_SCHEMA_URL`.
    pub schema_url: String,
    /// `LOG_LEVEL`.
    pub log_level: LogLevel,
    /// `MAX_BATCHES`: stop after this many Envisionware batches.
    pub max_batches: Option<u64>,
    /// `IGNORE_CACHE`: neither read nor write the S3 cursor.
    pub ignore_cache: bool,
    /// `IGNORE_KINESIS`: do everything but send.
    pub ignore_kinesis: bool,
    /// `PCR_DATE_TIME`/`PCR_KEY`, when either is set: the start when the cache is ignored,
    /// and the start when the cursor object does not exist yet.
    pub start_cursor: Option<Cursor>,
    /// `PSEUDONYM_THREADS`: bcrypt threads; 0 (the default) means one per core.
    pub pseudonym_threads: usize,
    /// `PSEUDONYM_KERNEL`: `crate` or `lanes1`..`lanes4` (default [`Kernel::DEFAULT`]).
    pub pseudonym_kernel: Kernel,
    /// `RETRY_ATTEMPTS` and `RETRY_BASE_DELAY_MS`: the policy for transient failures.
    pub retry: RetryPolicy,
    /// `DB_CONNECT_TIMEOUT_SECONDS` (default 30).
    pub connect_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_SECONDS` (default 300, the original's Sierra cap).
    pub statement_timeout: Duration,
    /// `SCHEMA_TIMEOUT_SECONDS` (default 60, the original's), per attempt.
    pub schema_timeout: Duration,
    /// `LEASE_RESOURCE`: the lease object's key in `S3_BUCKET` (default `<S3_RESOURCE>.lease`).
    pub lease_resource: String,
    /// `LEASE_TTL_SECONDS` (default 120): how long a lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// `SETTLE_DELAY_SECONDS` (default 0, off): read only rows this much older than the
    /// database's `NOW()`.
    pub settle_delay: Duration,
    /// `CURSOR_MAX_AGE_HOURS` (default 24): warn when the cursor is older.
    pub cursor_max_age: Duration,
    /// `ENVISIONWARE_RETENTION_HOURS` (default 48, Envisionware's two days): how long
    /// Envisionware keeps a row; a row can have been purged unread only when the poller
    /// was last caught up longer ago than this.
    pub envisionware_retention: Duration,
    /// `LATE_ROW_WINDOW_HOURS` (default 3, 0 is off, below `ENVISIONWARE_RETENTION_HOURS`):
    /// the trailing window behind the cursor in which rows that appear late are counted.
    pub late_row_window: Duration,
    /// `STOP_TIMEOUT_SECONDS` (default 20): how long a request in flight may still take
    /// after SIGTERM/SIGINT.
    pub stop_timeout: Duration,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("aws_region", &self.aws_region)
            .field("kinesis_batch_size", &self.kinesis_batch_size)
            .field("envisionware_batch_size", &self.envisionware_batch_size)
            .field("max_batches", &self.max_batches)
            .field("ignore_cache", &self.ignore_cache)
            .field("ignore_kinesis", &self.ignore_kinesis)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use secrecy::ExposeSecret as _;

    use super::*;
    use crate::config::test_support::{
        EchoDecrypter, complete_plaintext, configured_secrets, futures_lite_block_on, settings_with,
    };
    use crate::config::{RawConfig, kms, yaml};

    fn assert_zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}

    #[test]
    fn decrypted_values_are_redacted_and_wiped_on_drop() {
        assert_zeroized_on_drop::<SecretString>();
        assert_zeroized_on_drop::<Salt>();
        let encrypted: BTreeMap<String, String> =
            [("SIERRA_DB_PASSWORD".to_string(), "c2VjcmV0LXZhbHVl".to_string())].into();
        let decrypted = futures_lite_block_on(kms::decrypt_all(&EchoDecrypter, &encrypted)).unwrap();
        assert_eq!(decrypted[0].1.expose_secret(), "plain-secret-value");
        let shown = format!("{decrypted:?}");
        assert!(!shown.contains("secret-value") && shown.contains("REDACTED"), "{shown}");

        // Through the whole configuration too: neither Settings nor DbSettings shows it.
        let mut plaintext = complete_plaintext();
        plaintext.remove("SIERRA_DB_PASSWORD");
        let raw =
            RawConfig::from_parts(yaml::ConfigFile { plaintext, encrypted }, &|_| None, &BTreeMap::new());
        let s = futures_lite_block_on(raw.resolve(&EchoDecrypter)).unwrap();
        assert_eq!(s.sierra.password.expose_secret(), "plain-secret-value");
        let decrypted = [("SIERRA_DB_PASSWORD".to_string(), "plain-secret-value".to_string())].into();
        assert!(configured_secrets(&BTreeMap::new(), &decrypted).contains(&"plain-secret-value".to_string()));
        let shown = format!("{s:?} {:?} {:?} {}", s.sierra, s.salt, s.salt);
        assert!(!shown.contains("secret-value") && !shown.contains("abcdefghij"), "{shown}");
    }

    #[test]
    fn secrets_are_known_and_never_debug_printed() {
        let s = settings_with(&[]).unwrap();
        let secrets = configured_secrets(&complete_plaintext(), &BTreeMap::new());
        assert!(secrets.iter().any(|v| v == "sierra-password"));
        assert!(secrets.iter().any(|v| v == "$2b$04$abcdefghijklmnopqrstuu"));
        let shown = format!("{s:?} {:?}", s.sierra);
        for secret in secrets {
            assert!(!shown.contains(&secret), "{shown}");
        }
    }
}
