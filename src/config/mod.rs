//! Configuration: `config/<ENVIRONMENT>.yaml` plus the process environment plus flags,
//! validated into [`Settings`] before anything else happens (behaviour §2).
//!
//! Precedence, highest first: command-line flags, the process environment, the file
//! (`PLAINTEXT_VARIABLES`, or `ENCRYPTED_VARIABLES` decrypted with KMS). A variable set in
//! the environment is taken as plain text even when the file has it encrypted, and is
//! then never sent to KMS.
//!
//! Loading has two phases: [`RawConfig`] gathers the text of every variable and checks
//! that the required ones exist; [`RawConfig::resolve`] decrypts and validates them.

pub mod kms;
pub(crate) mod variables;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::domain::Cursor;
use crate::pseudonym::{Kernel, Salt};
use crate::retry::RetryPolicy;
use variables::{Kind, Requirement, Variable};

/// A configuration problem. Every message names the variable, never its value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid.
    #[error("{path}: {reason}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Required variables are not set anywhere.
    #[error("required variable{} not set: {} (set {} in the file's PLAINTEXT_VARIABLES or ENCRYPTED_VARIABLES, or in the environment)", if .0.len() > 1 { "s" } else { "" }, .0.join(", "), if .0.len() > 1 { "them" } else { "it" })]
    Missing(Vec<&'static str>),
    /// A variable's value is not acceptable.
    #[error("{name}: {reason}")]
    Invalid {
        /// The variable.
        name: String,
        /// What is wrong with it (never the value).
        reason: String,
    },
    /// KMS could not decrypt a variable.
    #[error("{name}: KMS could not decrypt it: {reason}")]
    Kms {
        /// The variable.
        name: String,
        /// KMS's answer (without the ciphertext or plaintext).
        reason: String,
    },
}

fn invalid(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name: name.to_string(), reason: reason.into() }
}

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

    fn parse(name: &str, text: &str) -> Result<Self, ConfigError> {
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

/// Where a variable's text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Flag,
    Environment,
    Plaintext,
}

/// Phase one: the text of every variable, before decryption and validation.
#[derive(Clone)]
pub struct RawConfig {
    /// Plain values with their origin.
    plain: BTreeMap<String, (String, Origin)>,
    /// Ciphertexts of encrypted variables not overridden by a flag or the environment.
    encrypted: BTreeMap<String, String>,
}

impl fmt::Debug for RawConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawConfig")
            .field("plain", &self.plain.keys().collect::<Vec<_>>())
            .field("encrypted", &self.encrypted.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The configuration file for `ENVIRONMENT=<name>`: `config/<name>.yaml`.
pub(crate) fn default_path(environment: &str) -> PathBuf {
    Path::new("config").join(format!("{environment}.yaml"))
}

impl RawConfig {
    /// The secrets (passwords, the salt, the AWS secret key and session token) given a
    /// non-empty value with `--set`, where any user of the machine can read them in the
    /// process list.
    pub fn secrets_on_command_line(&self) -> Vec<&'static str> {
        variables::VARIABLES
            .iter()
            .filter(|v| v.secrecy == variables::Secrecy::Secret)
            .filter(|v| matches!(self.plain.get(v.name), Some((value, Origin::Flag)) if !value.is_empty()))
            .map(|v| v.name)
            .collect()
    }

    /// `KMS_KEY_ID`, the key every ciphertext must be under (plain text only: it is needed
    /// before anything is decrypted).
    pub(crate) fn kms_key_id(&self) -> Result<Option<String>, ConfigError> {
        let name = variables::KMS_KEY_ID.name;
        if self.encrypted.contains_key(name) {
            return Err(invalid(
                name,
                "must be in PLAINTEXT_VARIABLES or the environment: it is needed to decrypt the others",
            ));
        }
        Ok(self.plain(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string))
    }

    /// The AWS settings visible before decryption.
    pub(crate) fn aws_settings(&self) -> crate::aws::AwsSettings {
        use crate::config::variables::{self as var, Variable};
        let text =
            |v: &Variable| self.plain(v.name).map(str::trim).filter(|t| !t.is_empty()).map(str::to_string);
        crate::aws::AwsSettings {
            region: text(&var::AWS_REGION),
            profile: text(&var::AWS_PROFILE),
            endpoint_url: text(&var::AWS_ENDPOINT_URL),
            credentials: match (text(&var::AWS_ACCESS_KEY_ID), text(&var::AWS_SECRET_ACCESS_KEY)) {
                (Some(access_key_id), Some(secret)) => Some(crate::aws::StaticCredentials {
                    access_key_id,
                    secret_access_key: secrecy::SecretString::from(secret),
                    session_token: text(&var::AWS_SESSION_TOKEN).map(secrecy::SecretString::from),
                }),
                _ => None,
            },
            // An invalid value falls back to the default here; validation reports it later.
            max_attempts: text(&var::RETRY_ATTEMPTS)
                .and_then(|v| v.parse().ok())
                .or_else(|| var::RETRY_ATTEMPTS.default.and_then(|d| d.parse().ok()))
                .unwrap_or(1),
        }
    }

    /// Gathers variables from the file at `path` (if given), the environment (through
    /// `env`, so tests need not touch the process), and `flags`.
    pub fn gather(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::File { path: path.to_path_buf(), source })?;
                yaml::parse(&text).map_err(|reason| ConfigError::Yaml { path: path.to_path_buf(), reason })?
            }
            None => yaml::ConfigFile::default(),
        };
        Ok(Self::from_parts(file, env, flags))
    }

    /// Merges a parsed file, the environment and flags by precedence.
    pub fn from_parts(
        file: yaml::ConfigFile,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &BTreeMap<String, String>,
    ) -> Self {
        let mut plain = BTreeMap::new();
        for (k, v) in file.plaintext {
            plain.insert(k, (v, Origin::Plaintext));
        }
        let mut encrypted = file.encrypted;
        for name in variables::VARIABLES
            .iter()
            .map(|v| v.name)
            .chain(encrypted.keys().map(String::as_str).collect::<Vec<_>>())
        {
            if let Some(v) = env(name) {
                plain.insert(name.to_string(), (v, Origin::Environment));
            }
        }
        for (k, v) in flags {
            plain.insert(k.clone(), (v.clone(), Origin::Flag));
        }
        // A plain value (file, environment or flag) wins over a ciphertext only when it
        // came from a higher-precedence source than the file.
        encrypted.retain(|k, _| !matches!(plain.get(k), Some((_, Origin::Flag | Origin::Environment))));
        for k in encrypted.keys() {
            if matches!(plain.get(k), Some((_, Origin::Plaintext))) {
                tracing::warn!(variable = %k, "set in both PLAINTEXT_VARIABLES and ENCRYPTED_VARIABLES; using the encrypted value");
                plain.remove(k);
            }
        }
        Self { plain, encrypted }
    }

    /// The plain text of a variable, if set (encrypted ones are not available yet).
    pub(crate) fn plain(&self, name: &str) -> Option<&str> {
        self.plain.get(name).map(|(v, _)| v.as_str())
    }

    fn is_set(&self, name: &str) -> bool {
        self.plain.contains_key(name) || self.encrypted.contains_key(name)
    }

    /// Whether `IGNORE_CACHE` is on (false when unset or invalid; validation reports it).
    fn ignores_cache(&self) -> bool {
        let name = variables::IGNORE_CACHE.name;
        self.plain(name).and_then(|v| parse_bool(name, v).ok()).unwrap_or(false)
    }

    /// Names of encrypted variables that will be decrypted.
    pub(crate) fn encrypted_names(&self) -> impl Iterator<Item = &str> {
        self.encrypted.keys().map(String::as_str)
    }

    /// Decrypts one encrypted variable, for commands that need nothing else.
    pub(crate) async fn decrypt_one(
        &self,
        name: &str,
        kms: &impl kms::Decrypter,
    ) -> Result<SecretString, ConfigError> {
        let one: BTreeMap<String, String> =
            self.encrypted.get(name).map(|c| (name.to_string(), c.clone())).into_iter().collect();
        match kms::decrypt_all(kms, &one).await?.pop() {
            Some((_, v)) => Ok(v),
            None => Err(invalid(name, "is not in ENCRYPTED_VARIABLES")),
        }
    }

    /// Checks that every required variable is set somewhere, before any network call.
    pub fn check_required(&self) -> Result<(), ConfigError> {
        let ignore_cache = self.ignores_cache();
        let missing: Vec<&'static str> = variables::VARIABLES
            .iter()
            .filter(|v| match v.required {
                Requirement::Always => true,
                Requirement::UnlessCacheIgnored => !ignore_cache,
                Requirement::Optional => false,
            })
            .map(|v| v.name)
            .filter(|n| !self.is_set(n))
            .collect();
        if missing.is_empty() { Ok(()) } else { Err(ConfigError::Missing(missing)) }
    }

    /// Phase two: decrypts the encrypted variables with `kms` and validates everything.
    pub async fn resolve(mut self, kms: &impl kms::Decrypter) -> Result<Settings, ConfigError> {
        self.check_required()?;
        let mut values =
            WipedOnDrop(std::mem::take(&mut self.plain).into_iter().map(|(k, (v, _))| (k, v)).collect());
        let decrypted = kms::decrypt_all(kms, &self.encrypted).await?;
        for (name, plaintext) in decrypted {
            values.insert(name, plaintext.expose_secret().to_string());
        }
        // `values` wipes its plain copies when it goes out of scope, on success or error.
        validate(&Vars(&values))
    }
}

impl Drop for RawConfig {
    /// Wipes the plain text of every variable (passwords and the salt may be among them).
    fn drop(&mut self) {
        for (v, _) in self.plain.values_mut() {
            zeroize::Zeroize::zeroize(v);
        }
    }
}

/// Variable texts that are overwritten with zeros when dropped.
struct WipedOnDrop(BTreeMap<String, String>);

impl std::ops::Deref for WipedOnDrop {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for WipedOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for WipedOnDrop {
    fn drop(&mut self) {
        for v in self.0.values_mut() {
            zeroize::Zeroize::zeroize(v);
        }
    }
}

/// Variables whose values are not secrets even when the file encrypts them.
/// The gathered texts, read through the variables' descriptions in [`variables`].
struct Vars<'a>(&'a BTreeMap<String, String>);

impl Vars<'_> {
    fn get(&self, var: &Variable) -> Option<&str> {
        self.0.get(var.name).map(String::as_str)
    }

    fn required(&self, var: &Variable) -> Result<&str, ConfigError> {
        match self.get(var).map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v),
            Some(_) => Err(invalid(var.name, "is empty")),
            None => Err(invalid(var.name, "is not set")),
        }
    }

    /// The value when set and not empty; never the default.
    fn optional(&self, var: &Variable) -> Option<&str> {
        self.get(var).map(str::trim).filter(|v| !v.is_empty())
    }

    /// The value when set and not empty, else the variable's default.
    fn or_default(&self, var: &Variable) -> Option<&str> {
        self.optional(var).or(var.default)
    }

    fn number<T: std::str::FromStr>(&self, var: &Variable) -> Result<T, ConfigError> {
        debug_assert!(
            matches!(var.kind, Kind::Number | Kind::Port | Kind::Seconds | Kind::Hours | Kind::Milliseconds),
            "{} is not a number",
            var.name
        );
        match self.or_default(var) {
            Some(v) => v.parse().map_err(|_| invalid(var.name, "must be a whole number")),
            None => self.required(var).map(|_| unreachable!("required() fails for an empty value")),
        }
    }

    fn boolean(&self, var: &Variable) -> Result<bool, ConfigError> {
        debug_assert_eq!(var.kind, Kind::Boolean, "{} is not a boolean", var.name);
        self.or_default(var).map_or(Ok(false), |v| parse_bool(var.name, v))
    }

    /// Whole seconds; zero is refused when `at_least_one`.
    fn seconds(&self, var: &Variable, at_least_one: bool) -> Result<Duration, ConfigError> {
        debug_assert_eq!(var.kind, Kind::Seconds, "{} is not in seconds", var.name);
        let s: u64 = self.number(var)?;
        if at_least_one && s == 0 {
            return Err(invalid(var.name, "must be at least 1 second"));
        }
        Ok(Duration::from_secs(s))
    }

    /// Whole hours; zero is refused when `at_least_one`.
    fn hours(&self, var: &Variable, at_least_one: bool) -> Result<Duration, ConfigError> {
        debug_assert_eq!(var.kind, Kind::Hours, "{} is not in hours", var.name);
        let h: u64 = self.number(var)?;
        if at_least_one && h == 0 {
            return Err(invalid(var.name, "must be at least 1 hour"));
        }
        Ok(Duration::from_secs(h.saturating_mul(3600)))
    }

    fn db(&self, db: &variables::Database) -> Result<DbSettings, ConfigError> {
        let port: u16 = self.number(&db.port)?;
        if port == 0 {
            return Err(invalid(db.port.name, "must be a port number 1..65535"));
        }
        Ok(DbSettings {
            host: self.required(&db.host)?.to_string(),
            port,
            database: self.required(&db.name)?.to_string(),
            user: self.required(&db.user)?.to_string(),
            password: SecretString::from(self.get(&db.password).unwrap_or_default().to_string()),
            ssl_mode: match self.or_default(&db.ssl_mode) {
                Some(v) => SslMode::parse(db.ssl_mode.name, v)?,
                None => SslMode::Prefer,
            },
            ssl_root_cert: self.optional(&db.ssl_root_cert).map(PathBuf::from),
        })
    }
}

/// Booleans: true/false in any case, 1/0, and YAML 1.1's yes/no/on/off (which the
/// original's YAML library read as booleans). Anything else is an error, never false.
pub(crate) fn parse_bool(name: &str, text: &str) -> Result<bool, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(invalid(name, "must be true or false (or 1/0)")),
    }
}

fn validate(v: &Vars<'_>) -> Result<Settings, ConfigError> {
    use variables as var;
    // Checked in this order, so the first problem reported stays the same.
    let ignore_cache = v.boolean(&var::IGNORE_CACHE)?;
    let (kinesis_batch_size, envisionware_batch_size) = batch_sizes(v)?;
    let salt = Salt::parse(v.required(&var::BCRYPT_SALT)?)
        .map_err(|e| invalid(var::BCRYPT_SALT.name, e.to_string()))?;
    let redshift_patron_table = redshift_patron_table(v)?;
    let (s3_bucket, s3_resource) = cursor_object(v, ignore_cache)?;
    let start_cursor = start_cursor(v)?;
    let max_batches = max_batches(v)?;
    let log_level = parse_log_level(v.optional(&var::LOG_LEVEL))?;
    let schema_url = schema_url(v)?;
    let retry = retry_policy(v)?;
    let (envisionware_retention, late_row_window) = late_row_window(v)?;
    let lease_resource = match v.optional(&var::LEASE_RESOURCE) {
        Some(k) => k.to_string(),
        None if s3_resource.is_empty() => String::new(),
        None => format!("{s3_resource}.lease"),
    };
    Ok(Settings {
        aws_region: v.required(&var::AWS_REGION)?.to_string(),
        envisionware: v.db(&var::ENVISIONWARE_DB)?,
        sierra: v.db(&var::SIERRA_DB)?,
        redshift: v.db(&var::REDSHIFT_DB)?,
        redshift_patron_table,
        kinesis_stream_arn: v.required(&var::KINESIS_STREAM_ARN)?.to_string(),
        kinesis_batch_size,
        kinesis_records_per_second: v.number(&var::KINESIS_MAX_RECORDS_PER_SECOND)?,
        envisionware_batch_size,
        salt,
        s3_bucket,
        s3_resource,
        schema_url,
        log_level,
        max_batches,
        ignore_cache,
        ignore_kinesis: v.boolean(&var::IGNORE_KINESIS)?,
        start_cursor,
        pseudonym_threads: v.number(&var::PSEUDONYM_THREADS)?,
        pseudonym_kernel: pseudonym_kernel(v)?,
        retry,
        connect_timeout: v.seconds(&var::DB_CONNECT_TIMEOUT_SECONDS, true)?,
        statement_timeout: v.seconds(&var::DB_STATEMENT_TIMEOUT_SECONDS, true)?,
        schema_timeout: v.seconds(&var::SCHEMA_TIMEOUT_SECONDS, true)?,
        lease_resource,
        lease_ttl: v.seconds(&var::LEASE_TTL_SECONDS, true)?,
        settle_delay: v.seconds(&var::SETTLE_DELAY_SECONDS, false)?,
        cursor_max_age: v.hours(&var::CURSOR_MAX_AGE_HOURS, false)?,
        envisionware_retention,
        late_row_window,
        stop_timeout: v.seconds(&var::STOP_TIMEOUT_SECONDS, true)?,
    })
}

/// `ENVISIONWARE_RETENTION_HOURS` (at least 1) and `LATE_ROW_WINDOW_HOURS` (0, off, or below
/// the retention, so that purging never shrinks the window between two runs).
fn late_row_window(v: &Vars<'_>) -> Result<(Duration, Duration), ConfigError> {
    use variables as var;
    let retention = v.hours(&var::ENVISIONWARE_RETENTION_HOURS, true)?;
    let window = v.hours(&var::LATE_ROW_WINDOW_HOURS, false)?;
    if window >= retention {
        return Err(invalid(
            var::LATE_ROW_WINDOW_HOURS.name,
            "must be below ENVISIONWARE_RETENTION_HOURS (rows older than the retention are purged, which would read as deleted rows); 0 turns it off",
        ));
    }
    Ok((retention, window))
}

/// `KINESIS_BATCH_SIZE` (1 to 500, the PutRecords limit) and `ENVISIONWARE_BATCH_SIZE` (at
/// least 1).
fn batch_sizes(v: &Vars<'_>) -> Result<(usize, usize), ConfigError> {
    use variables as var;
    let kinesis: usize = v.number(&var::KINESIS_BATCH_SIZE)?;
    if !(1..=500).contains(&kinesis) {
        return Err(invalid(
            var::KINESIS_BATCH_SIZE.name,
            "must be between 1 and 500 (the PutRecords limit)",
        ));
    }
    let envisionware: usize = v.number(&var::ENVISIONWARE_BATCH_SIZE)?;
    if envisionware == 0 {
        return Err(invalid(var::ENVISIONWARE_BATCH_SIZE.name, "must be at least 1"));
    }
    Ok((kinesis, envisionware))
}

/// The Redshift table of patrons: `patron_info` for `production`, else
/// `patron_info_<REDSHIFT_DB_NAME>`. The name becomes part of SQL text, so it may hold only
/// letters, digits and `_`.
fn redshift_patron_table(v: &Vars<'_>) -> Result<String, ConfigError> {
    use variables as var;
    let name = v.required(&var::REDSHIFT_DB_NAME)?;
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(invalid(
            var::REDSHIFT_DB_NAME.name,
            "may hold only letters, digits and _ (it names a table)",
        ));
    }
    Ok(if name == "production" { "patron_info".to_string() } else { format!("patron_info_{name}") })
}

/// `S3_BUCKET` and `S3_RESOURCE`: required unless the cache is ignored.
fn cursor_object(v: &Vars<'_>, ignore_cache: bool) -> Result<(String, String), ConfigError> {
    use variables as var;
    Ok(if ignore_cache {
        (
            v.optional(&var::S3_BUCKET).unwrap_or_default().to_string(),
            v.optional(&var::S3_RESOURCE).unwrap_or_default().to_string(),
        )
    } else {
        (v.required(&var::S3_BUCKET)?.to_string(), v.required(&var::S3_RESOURCE)?.to_string())
    })
}

/// The start cursor from `PCR_DATE_TIME`/`PCR_KEY`, when either is set (the other takes its
/// default).
fn start_cursor(v: &Vars<'_>) -> Result<Option<Cursor>, ConfigError> {
    use variables as var;
    if v.optional(&var::PCR_DATE_TIME).is_none() && v.optional(&var::PCR_KEY).is_none() {
        return Ok(None);
    }
    let date_time = v
        .or_default(&var::PCR_DATE_TIME)
        .and_then(crate::domain::parse_naive_date_time)
        .ok_or_else(|| invalid(var::PCR_DATE_TIME.name, "must be a date-time like 2023-01-01 00:00:00"))?;
    Ok(Some(Cursor { date_time, key: v.number(&var::PCR_KEY)? }))
}

/// `MAX_BATCHES`: unset for no limit, else a whole number of at least 1.
fn max_batches(v: &Vars<'_>) -> Result<Option<u64>, ConfigError> {
    use variables as var;
    match v.optional(&var::MAX_BATCHES).map(str::parse::<u64>) {
        None => Ok(None),
        Some(Ok(n)) if n > 0 => Ok(Some(n)),
        Some(_) => Err(invalid(var::MAX_BATCHES.name, "must be a whole number of at least 1")),
    }
}

/// `PC_RESERVE_SCHEMA_URL`: an https:// URL, or http:// to a loopback address.
fn schema_url(v: &Vars<'_>) -> Result<String, ConfigError> {
    use variables as var;
    let url = v.required(&var::PC_RESERVE_SCHEMA_URL)?;
    crate::encode::check_schema_url(url)
        .map_err(|reason| invalid(var::PC_RESERVE_SCHEMA_URL.name, reason))?;
    Ok(url.to_string())
}

/// `RETRY_ATTEMPTS` (at least 1) and `RETRY_BASE_DELAY_MS`; backoff is capped at 20 s.
fn retry_policy(v: &Vars<'_>) -> Result<RetryPolicy, ConfigError> {
    use variables as var;
    let attempts: u32 = v.number(&var::RETRY_ATTEMPTS)?;
    if attempts == 0 {
        return Err(invalid(var::RETRY_ATTEMPTS.name, "must be at least 1"));
    }
    let base_delay_ms: u64 = v.number(&var::RETRY_BASE_DELAY_MS)?;
    Ok(RetryPolicy {
        attempts,
        base_delay: Duration::from_millis(base_delay_ms),
        max_delay: crate::retry::MAX_BACKOFF,
    })
}

/// The schema request's timeout (`SCHEMA_TIMEOUT_SECONDS`) and retry policy
/// (`RETRY_ATTEMPTS`, `RETRY_BASE_DELAY_MS`) from their texts alone, defaults included, as a
/// run reads them: for commands that fetch the schema without validating everything
/// (`decode`).
pub(crate) fn schema_fetch(
    values: &BTreeMap<String, String>,
) -> Result<(Duration, RetryPolicy), ConfigError> {
    let v = Vars(values);
    Ok((v.seconds(&variables::SCHEMA_TIMEOUT_SECONDS, true)?, retry_policy(&v)?))
}

/// `PSEUDONYM_KERNEL`: unset for the default kernel.
fn pseudonym_kernel(v: &Vars<'_>) -> Result<Kernel, ConfigError> {
    use variables as var;
    match v.optional(&var::PSEUDONYM_KERNEL) {
        None => Ok(Kernel::DEFAULT),
        Some(k) => Kernel::parse(k).ok_or_else(|| {
            invalid(var::PSEUDONYM_KERNEL.name, "must be crate, lanes1, lanes2, lanes3 or lanes4")
        }),
    }
}

/// `LOG_LEVEL`'s text (unset or empty: the default), as a level.
pub(crate) fn parse_log_level(text: Option<&str>) -> Result<LogLevel, ConfigError> {
    let text =
        text.map(str::trim).filter(|t| !t.is_empty()).or(variables::LOG_LEVEL.default).unwrap_or("info");
    LogLevel::parse(text).ok_or_else(|| {
        invalid(variables::LOG_LEVEL.name, "must be one of debug, info, warning, error, critical")
    })
}

/// `LOG_FORMAT`'s text (unset or empty: the default): whether log lines are JSON.
pub(crate) fn parse_log_format_is_json(text: Option<&str>) -> Result<bool, ConfigError> {
    let text =
        text.map(str::trim).filter(|t| !t.is_empty()).or(variables::LOG_FORMAT.default).unwrap_or("text");
    match text.to_ascii_lowercase().as_str() {
        "text" => Ok(false),
        "json" => Ok(true),
        _ => Err(invalid(variables::LOG_FORMAT.name, "must be text or json")),
    }
}

#[cfg(test)]
pub(crate) mod documented_defaults_tests;

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn complete_plaintext() -> BTreeMap<String, String> {
        [
            ("AWS_REGION", "us-east-1"),
            ("ENVISIONWARE_DB_HOST", "127.0.0.1"),
            ("ENVISIONWARE_DB_PORT", "3306"),
            ("ENVISIONWARE_DB_NAME", "lasttwodays"),
            ("ENVISIONWARE_DB_USER", "u"),
            ("ENVISIONWARE_DB_PASSWORD", "ew-password"),
            ("SIERRA_DB_HOST", "127.0.0.1"),
            ("SIERRA_DB_PORT", "5432"),
            ("SIERRA_DB_NAME", "iii"),
            ("SIERRA_DB_USER", "u"),
            ("SIERRA_DB_PASSWORD", "sierra-password"),
            ("REDSHIFT_DB_HOST", "127.0.0.1"),
            ("REDSHIFT_DB_NAME", "dev"),
            ("REDSHIFT_DB_USER", "u"),
            ("REDSHIFT_DB_PASSWORD", "rs-password"),
            ("KINESIS_STREAM_ARN", "arn:aws:kinesis:us-east-1:123456789012:stream/s"),
            ("KINESIS_BATCH_SIZE", "500"),
            ("ENVISIONWARE_BATCH_SIZE", "1000"),
            ("BCRYPT_SALT", "$2b$04$abcdefghijklmnopqrstuu"),
            ("S3_BUCKET", "b"),
            ("S3_RESOURCE", "r.json"),
            ("PC_RESERVE_SCHEMA_URL", "http://127.0.0.1:1/schema"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The values a test configured for variables that hold secrets, which must never reach
    /// a log line: the non-empty ones the table marks secret, in `plaintext` (the file's
    /// plain values) or `decrypted` (what the test's KMS answers for the encrypted ones),
    /// and the decrypted ones it does not mark public.
    pub(crate) fn configured_secrets(
        plaintext: &BTreeMap<String, String>,
        decrypted: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let secrecy = |name: &str| variables::find(name).map(|v| v.secrecy);
        let plain = plaintext.iter().filter(|(n, _)| secrecy(n) == Some(variables::Secrecy::Secret));
        let encrypted = decrypted.iter().filter(|(n, _)| secrecy(n) != Some(variables::Secrecy::Public));
        plain.chain(encrypted).filter(|(_, v)| !v.is_empty()).map(|(_, v)| v.clone()).collect()
    }

    fn settings_with(changes: &[(&str, Option<&str>)]) -> Result<Settings, ConfigError> {
        let mut plaintext = complete_plaintext();
        for (k, v) in changes {
            match v {
                Some(v) => plaintext.insert(k.to_string(), v.to_string()),
                None => plaintext.remove(*k),
            };
        }
        let raw = RawConfig::from_parts(
            yaml::ConfigFile { plaintext, encrypted: BTreeMap::new() },
            &|_| None,
            &BTreeMap::new(),
        );
        futures_lite_block_on(raw.resolve(&kms::NoDecrypter))
    }

    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    /// The shipped `config/<env>.yaml` (the Python service's values) are read and their
    /// plain values validate. The encrypted ones are replaced through the environment
    /// (which wins over the file), so nothing is sent to a decrypter: `NoDecrypter`
    /// refuses any ciphertext.
    #[test]
    fn the_shipped_configuration_files_validate_with_their_secrets_from_the_environment() {
        let complete = complete_plaintext();
        for env in ["devel", "qa", "production"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(default_path(env));
            let text = std::fs::read_to_string(&path).unwrap();
            let file = yaml::parse(&text).unwrap();
            assert_eq!(file.encrypted.len(), 11, "{env}: {:?}", file.encrypted.keys());
            let encrypted: Vec<String> = file.encrypted.keys().cloned().collect();
            let env_var = |name: &str| encrypted.iter().any(|n| n == name).then(|| complete[name].clone());
            let raw = RawConfig::from_parts(file, &env_var, &BTreeMap::new());
            assert_eq!(raw.encrypted_names().count(), 0, "{env}");
            let s = futures_lite_block_on(raw.resolve(&kms::NoDecrypter))
                .unwrap_or_else(|e| panic!("{env}: {e}"));
            assert_eq!(s.envisionware.port, 3306, "{env}");
            assert_eq!(s.sierra.port, 1032, "{env}");
            assert_eq!(s.ignore_cache, env == "devel", "{env}");
            if env == "devel" {
                let start = s.start_cursor.map(|c| format!("{} {}", c.date_time, c.key));
                assert_eq!(start.as_deref(), Some("2023-01-01 00:00:00 0"));
            }
        }
    }

    #[test]
    fn a_complete_file_validates_with_the_documented_defaults() {
        let s = settings_with(&[]).unwrap();
        assert_eq!(s.redshift.port, 5439);
        assert_eq!(s.redshift.ssl_mode, SslMode::VerifyFull);
        assert_eq!(s.sierra.ssl_mode, SslMode::Prefer);
        assert_eq!(s.redshift_patron_table, "patron_info_dev");
        assert_eq!(s.kinesis_records_per_second, 1000);
        assert!(!s.ignore_cache && !s.ignore_kinesis);
        assert_eq!(s.max_batches, None);
        assert_eq!(s.log_level, LogLevel::Info);
        let prod = settings_with(&[("REDSHIFT_DB_NAME", Some("production"))]).unwrap();
        assert_eq!(prod.redshift_patron_table, "patron_info");
    }

    #[test]
    fn lease_stop_settle_and_watchdog_defaults_and_checks() {
        let s = settings_with(&[]).unwrap();
        assert_eq!(s.lease_resource, "r.json.lease");
        assert_eq!(s.lease_ttl, Duration::from_secs(120));
        assert_eq!(s.stop_timeout, Duration::from_secs(20));
        assert_eq!(s.settle_delay, Duration::ZERO);
        assert_eq!(s.cursor_max_age, Duration::from_secs(24 * 3600));
        let s = settings_with(&[
            ("LEASE_RESOURCE", Some("locks/poller")),
            ("SETTLE_DELAY_SECONDS", Some("3600")),
            ("CURSOR_MAX_AGE_HOURS", Some("6")),
        ])
        .unwrap();
        assert_eq!(s.lease_resource, "locks/poller");
        assert_eq!(s.settle_delay, Duration::from_secs(3600));
        assert_eq!(s.cursor_max_age, Duration::from_secs(6 * 3600));
        for (name, value) in [
            ("LEASE_TTL_SECONDS", "0"),
            ("STOP_TIMEOUT_SECONDS", "soon"),
            ("SETTLE_DELAY_SECONDS", "-1"),
            ("CURSOR_MAX_AGE_HOURS", "a day"),
        ] {
            let err = settings_with(&[(name, Some(value))]).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn missing_variables_are_named_together() {
        let err = settings_with(&[("SIERRA_DB_HOST", None), ("BCRYPT_SALT", None)]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("SIERRA_DB_HOST") && text.contains("BCRYPT_SALT"), "{text}");
    }

    #[test]
    fn s3_names_may_be_empty_only_when_the_cache_is_ignored() {
        assert!(settings_with(&[("S3_BUCKET", Some(""))]).is_err());
        let s =
            settings_with(&[("S3_BUCKET", Some("")), ("S3_RESOURCE", None), ("IGNORE_CACHE", Some("True"))])
                .unwrap();
        assert!(s.ignore_cache);
    }

    #[test]
    fn booleans_are_strict() {
        for (text, want) in [("True", true), ("true", true), ("1", true), ("FALSE", false), ("0", false)] {
            assert_eq!(settings_with(&[("IGNORE_KINESIS", Some(text))]).unwrap().ignore_kinesis, want);
        }
        let err = settings_with(&[("IGNORE_KINESIS", Some("maybe"))]).unwrap_err();
        assert!(err.to_string().starts_with("IGNORE_KINESIS"), "{err}");
    }

    #[test]
    fn numbers_and_ranges_are_checked_by_name() {
        for (name, value) in [
            ("KINESIS_BATCH_SIZE", "501"),
            ("KINESIS_BATCH_SIZE", "0"),
            ("KINESIS_BATCH_SIZE", "lots"),
            ("ENVISIONWARE_BATCH_SIZE", "0"),
            ("ENVISIONWARE_DB_PORT", "70000"),
            ("MAX_BATCHES", "0"),
            ("LOG_LEVEL", "loud"),
            ("REDSHIFT_DB_SSLMODE", "sometimes"),
            ("REDSHIFT_DB_NAME", "dev; drop table x"),
            ("PCR_DATE_TIME", "yesterday"),
            ("PCR_KEY", "x"),
            ("PC_RESERVE_SCHEMA_URL", "ftp://x"),
            // Plain http only to a loopback address (the local stack).
            ("PC_RESERVE_SCHEMA_URL", "http://platform.example.org/api/v0.1/current-schemas/PcReserve"),
            ("PSEUDONYM_KERNEL", "fastest"),
        ] {
            let err = settings_with(&[(name, Some(value))]).unwrap_err();
            assert!(err.to_string().starts_with(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn a_bad_salt_is_reported_without_its_value() {
        let err = settings_with(&[("BCRYPT_SALT", Some("$2b$07$abcdefghijklmnopqrstuv"))]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("BCRYPT_SALT"), "{text}");
        assert!(!text.contains("abcdefghij"), "{text}");
    }

    #[test]
    fn pcr_variables_make_the_start_cursor() {
        let s =
            settings_with(&[("PCR_DATE_TIME", Some("2023-04-04 04:00:00 +0000")), ("PCR_KEY", Some("40"))])
                .unwrap();
        assert_eq!(s.start_cursor, Some(Cursor::parse("2023-04-04 04:00:00", "40").unwrap()));
    }

    #[test]
    fn environment_beats_file_and_flags_beat_both() {
        let file = yaml::ConfigFile { plaintext: complete_plaintext(), encrypted: BTreeMap::new() };
        let env = |name: &str| {
            (name == "KINESIS_BATCH_SIZE" || name == "ENVISIONWARE_BATCH_SIZE").then(|| "7".to_string())
        };
        let flags: BTreeMap<String, String> =
            [("ENVISIONWARE_BATCH_SIZE".to_string(), "9".to_string())].into();
        let raw = RawConfig::from_parts(file, &env, &flags);
        let s = futures_lite_block_on(raw.resolve(&kms::NoDecrypter)).unwrap();
        assert_eq!(s.kinesis_batch_size, 7);
        assert_eq!(s.envisionware_batch_size, 9);
    }

    #[test]
    fn secrets_given_with_set_are_named_and_other_flags_are_not() {
        let file = yaml::ConfigFile { plaintext: complete_plaintext(), encrypted: BTreeMap::new() };
        let env = |name: &str| (name == "SIERRA_DB_PASSWORD").then(|| "from-env".to_string());
        let flags: BTreeMap<String, String> = [
            ("BCRYPT_SALT", "$2b$04$abcdefghijklmnopqrstuu"),
            ("ENVISIONWARE_DB_PASSWORD", "pw"),
            ("REDSHIFT_DB_PASSWORD", ""),
            ("ENVISIONWARE_BATCH_SIZE", "9"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let raw = RawConfig::from_parts(file, &env, &flags);
        assert_eq!(raw.secrets_on_command_line(), ["ENVISIONWARE_DB_PASSWORD", "BCRYPT_SALT"]);
    }

    /// The variables of the README's configuration table, each with whether it is
    /// required: `ENVISIONWARE_DB_HOST`, `_PORT` expands to `ENVISIONWARE_DB_PORT`, and
    /// `*_DB_SSLMODE` to the three databases' names.
    fn documented_variables() -> Vec<(String, bool)> {
        let readme = include_str!("../../README.md");
        let table = readme
            .split("| variable | required | notes |")
            .nth(1)
            .expect("the README's configuration table")
            .split("\n\n")
            .next()
            .unwrap_or_default();
        let mut out = Vec::new();
        for line in table.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let required = cells[2] == "yes";
            let names: Vec<&str> = cells[1].split('`').skip(1).step_by(2).collect();
            let stem = names[0].rsplit_once('_').map_or("", |(stem, _)| stem);
            for name in &names {
                if let Some(rest) = name.strip_prefix('*') {
                    for db in ["ENVISIONWARE", "SIERRA", "REDSHIFT"] {
                        out.push((format!("{db}{rest}"), required));
                    }
                } else if name.starts_with('_') {
                    out.push((format!("{stem}{name}"), required));
                } else {
                    out.push((name.to_string(), required));
                }
            }
        }
        out
    }

    /// What a variable changes, as text: from the validated settings, or (for the
    /// variables read before validation) from the gathered configuration.
    type Observe = fn(&RawConfig, &Settings) -> String;

    /// One row of [`optional_variable_effects`] (the closure becomes an [`Observe`]).
    fn effect(
        name: &'static str,
        value: &'static str,
        expected: &'static str,
        observe: Observe,
    ) -> (&'static str, &'static str, &'static str, Observe) {
        (name, value, expected, observe)
    }

    /// Every optional variable, a value different from its default, and what it must
    /// change. `REDSHIFT_DB_PORT` is documented in the notes of `REDSHIFT_DB_*`.
    fn optional_variable_effects() -> Vec<(&'static str, &'static str, &'static str, Observe)> {
        vec![
            effect("AWS_PROFILE", "pcr-admin", "Some(\"pcr-admin\")", |r, _| {
                format!("{:?}", r.aws_settings().profile)
            }),
            effect("AWS_ENDPOINT_URL", "http://127.0.0.1:9", "Some(\"http://127.0.0.1:9\")", |r, _| {
                format!("{:?}", r.aws_settings().endpoint_url)
            }),
            // Static credentials take effect only as a pair; each one alone must still be
            // read from the environment (the SDK's chain reads the pair there too).
            effect("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE", "Some(\"AKIAEXAMPLE\")", |r, _| {
                format!("{:?}", r.plain("AWS_ACCESS_KEY_ID"))
            }),
            effect("AWS_SECRET_ACCESS_KEY", "shh", "Some(3)", |r, _| {
                format!("{:?}", r.plain("AWS_SECRET_ACCESS_KEY").map(str::len))
            }),
            effect("AWS_SESSION_TOKEN", "token", "Some(5)", |r, _| {
                format!("{:?}", r.plain("AWS_SESSION_TOKEN").map(str::len))
            }),
            effect("KMS_KEY_ID", "alias/pcr", "Ok(Some(\"alias/pcr\"))", |r, _| {
                format!("{:?}", r.kms_key_id().map_err(|e| e.to_string()))
            }),
            effect("ENVISIONWARE_DB_SSLMODE", "require", "Require", |_, s| {
                format!("{:?}", s.envisionware.ssl_mode)
            }),
            effect("SIERRA_DB_SSLMODE", "verify-full", "VerifyFull", |_, s| {
                format!("{:?}", s.sierra.ssl_mode)
            }),
            effect("REDSHIFT_DB_SSLMODE", "disable", "Disable", |_, s| format!("{:?}", s.redshift.ssl_mode)),
            effect("ENVISIONWARE_DB_SSLROOTCERT", "/ca/e.pem", "Some(\"/ca/e.pem\")", |_, s| {
                format!("{:?}", s.envisionware.ssl_root_cert)
            }),
            effect("SIERRA_DB_SSLROOTCERT", "/ca/s.pem", "Some(\"/ca/s.pem\")", |_, s| {
                format!("{:?}", s.sierra.ssl_root_cert)
            }),
            effect("REDSHIFT_DB_SSLROOTCERT", "/ca/r.pem", "Some(\"/ca/r.pem\")", |_, s| {
                format!("{:?}", s.redshift.ssl_root_cert)
            }),
            effect("REDSHIFT_DB_PORT", "5440", "5440", |_, s| s.redshift.port.to_string()),
            effect("KINESIS_MAX_RECORDS_PER_SECOND", "0", "0", |_, s| {
                s.kinesis_records_per_second.to_string()
            }),
            effect("LOG_LEVEL", "debug", "Debug", |_, s| format!("{:?}", s.log_level)),
            effect("LOG_FORMAT", "json", "Some(\"json\")", |r, _| format!("{:?}", r.plain("LOG_FORMAT"))),
            effect("MAX_BATCHES", "3", "Some(3)", |_, s| format!("{:?}", s.max_batches)),
            effect("IGNORE_CACHE", "true", "true", |_, s| s.ignore_cache.to_string()),
            effect("IGNORE_KINESIS", "yes", "true", |_, s| s.ignore_kinesis.to_string()),
            effect("PCR_DATE_TIME", "2024-05-01 10:00:00", "2024-05-01 10:00:00 0", |_, s| {
                s.start_cursor.map_or("None".into(), |c| format!("{} {}", c.date_time, c.key))
            }),
            effect("PCR_KEY", "40", "2023-01-01 00:00:00 40", |_, s| {
                s.start_cursor.map_or("None".into(), |c| format!("{} {}", c.date_time, c.key))
            }),
            effect("PSEUDONYM_THREADS", "3", "3", |_, s| s.pseudonym_threads.to_string()),
            effect("PSEUDONYM_KERNEL", "crate", "Crate", |_, s| format!("{:?}", s.pseudonym_kernel)),
            effect("RETRY_ATTEMPTS", "9", "9", |_, s| s.retry.attempts.to_string()),
            effect("RETRY_BASE_DELAY_MS", "5", "5ms", |_, s| format!("{:?}", s.retry.base_delay)),
            effect("DB_CONNECT_TIMEOUT_SECONDS", "7", "7s", |_, s| format!("{:?}", s.connect_timeout)),
            effect("DB_STATEMENT_TIMEOUT_SECONDS", "8", "8s", |_, s| format!("{:?}", s.statement_timeout)),
            effect("SCHEMA_TIMEOUT_SECONDS", "9", "9s", |_, s| format!("{:?}", s.schema_timeout)),
            effect("LEASE_RESOURCE", "locks/p", "locks/p", |_, s| s.lease_resource.clone()),
            effect("LEASE_TTL_SECONDS", "30", "30s", |_, s| format!("{:?}", s.lease_ttl)),
            effect("STOP_TIMEOUT_SECONDS", "5", "5s", |_, s| format!("{:?}", s.stop_timeout)),
            effect("SETTLE_DELAY_SECONDS", "3600", "3600s", |_, s| format!("{:?}", s.settle_delay)),
            effect("CURSOR_MAX_AGE_HOURS", "6", "21600s", |_, s| format!("{:?}", s.cursor_max_age)),
            effect("ENVISIONWARE_RETENTION_HOURS", "72", "259200s", |_, s| {
                format!("{:?}", s.envisionware_retention)
            }),
            effect("LATE_ROW_WINDOW_HOURS", "6", "21600s", |_, s| format!("{:?}", s.late_row_window)),
        ]
    }

    #[test]
    fn every_documented_variable_is_read_from_the_environment() {
        let documented = documented_variables();
        assert!(documented.len() >= 40, "the README table was not parsed: {documented:?}");
        for (name, _) in &documented {
            assert!(
                variables::find(name).is_some(),
                "{name} is documented but not read from the environment"
            );
        }
    }

    /// The notes cell of the README table's row that documents `name`.
    fn documented_notes(name: &str) -> Option<String> {
        let readme = include_str!("../../README.md");
        let table = readme.split("| variable | required | notes |").nth(1)?.split("\n\n").next()?;
        table.lines().filter(|l| l.starts_with("| `")).find_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let names: Vec<&str> = cells[1].split('`').skip(1).step_by(2).collect();
            let stem = names[0].rsplit_once('_').map_or("", |(stem, _)| stem);
            let documents = |n: &&str| {
                *n == name
                    || n.strip_prefix('*').is_some_and(|rest| name.ends_with(rest))
                    || (n.starts_with('_') && format!("{stem}{n}") == name)
            };
            names.iter().any(documents).then(|| cells[3].to_string())
        })
    }

    #[test]
    fn the_readme_table_and_the_variable_table_agree() {
        let documented = documented_variables();
        let described: Vec<(String, bool)> = variables::VARIABLES
            .iter()
            .map(|v| (v.name.to_string(), v.required != Requirement::Optional))
            .collect();
        assert_eq!(
            documented, described,
            "the README's configuration table (left) and src/config/variables.rs (right) disagree \
             on the names, their order or whether they are required"
        );
        for v in variables::VARIABLES.iter().filter(|v| v.kind != Kind::Boolean) {
            if let Some(default) = v.default {
                let notes = documented_notes(v.name).unwrap_or_default();
                assert!(
                    notes.contains(default),
                    "{}: the README's notes do not give the default {default}: {notes}",
                    v.name
                );
            }
        }
    }

    #[test]
    fn only_the_described_variables_are_required_and_secret() {
        let nothing = RawConfig::from_parts(yaml::ConfigFile::default(), &|_| None, &BTreeMap::new());
        match nothing.check_required() {
            Err(ConfigError::Missing(names)) => {
                assert_eq!(names.len(), 22, "{names:?}");
                assert_eq!(names[..2], ["AWS_REGION", "ENVISIONWARE_DB_HOST"], "{names:?}");
                assert_eq!(names[19..], ["PC_RESERVE_SCHEMA_URL", "S3_BUCKET", "S3_RESOURCE"], "{names:?}");
            }
            other => panic!("{other:?}"),
        }
        let mut secrets = configured_secrets(&complete_plaintext(), &BTreeMap::new());
        secrets.sort_unstable();
        assert_eq!(
            secrets,
            ["$2b$04$abcdefghijklmnopqrstuu", "ew-password", "rs-password", "sierra-password"]
        );
    }

    #[test]
    fn each_optional_variable_takes_effect_set_in_the_environment_alone() {
        let effects = optional_variable_effects();
        for (name, required) in documented_variables() {
            if !required {
                assert!(
                    effects.iter().any(|(n, ..)| *n == name),
                    "{name} is documented as optional but has no row in optional_variable_effects()"
                );
            }
        }
        let file = || yaml::ConfigFile { plaintext: complete_plaintext(), encrypted: BTreeMap::new() };
        for (name, value, expected, observe) in effects {
            assert!(!complete_plaintext().contains_key(name), "{name} must not be in the file");
            let observed = |env: &dyn Fn(&str) -> Option<String>| {
                let raw = RawConfig::from_parts(file(), env, &BTreeMap::new());
                let settings = futures_lite_block_on(raw.clone().resolve(&kms::NoDecrypter))
                    .unwrap_or_else(|e| panic!("{name}={value}: {e}"));
                observe(&raw, &settings)
            };
            let with = observed(&|n| (n == name).then(|| value.to_string()));
            assert_eq!(with, expected, "{name}={value} set in the environment");
            let without = observed(&|_| None);
            assert_ne!(without, expected, "{name}: the default already gives {expected}");
        }
    }

    #[test]
    fn a_flag_beats_the_environment_which_beats_the_file_for_log_format() {
        let mut plaintext = complete_plaintext();
        plaintext.insert("LOG_FORMAT".into(), "text".into());
        let file = || yaml::ConfigFile { plaintext: plaintext.clone(), encrypted: BTreeMap::new() };
        let env = |n: &str| (n == "LOG_FORMAT").then(|| "json".to_string());
        let raw = RawConfig::from_parts(file(), &env, &BTreeMap::new());
        assert_eq!(raw.plain("LOG_FORMAT"), Some("json"));
        let flags: BTreeMap<String, String> = [("LOG_FORMAT".to_string(), "text".to_string())].into();
        let raw = RawConfig::from_parts(file(), &env, &flags);
        assert_eq!(raw.plain("LOG_FORMAT"), Some("text"));
    }

    /// A decrypter that answers every ciphertext with `plain-` + its base64.
    struct EchoDecrypter;

    impl kms::Decrypter for EchoDecrypter {
        async fn decrypt(&self, ciphertext: Vec<u8>) -> Result<Vec<u8>, String> {
            Ok([b"plain-".as_slice(), &ciphertext].concat())
        }
    }

    /// Answers like [`EchoDecrypter`] but fails on ciphertexts starting with `bad`, and
    /// records how many decrypts were in flight at once.
    #[derive(Default)]
    struct CountingDecrypter {
        in_flight: std::sync::atomic::AtomicUsize,
        max_in_flight: std::sync::atomic::AtomicUsize,
    }

    impl kms::Decrypter for CountingDecrypter {
        async fn decrypt(&self, ciphertext: Vec<u8>) -> Result<Vec<u8>, String> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.max_in_flight.fetch_max(now, SeqCst);
            tokio::task::yield_now().await;
            self.in_flight.fetch_sub(1, SeqCst);
            if ciphertext.starts_with(b"bad") {
                return Err("InvalidCiphertextException".into());
            }
            Ok([b"plain-".as_slice(), &ciphertext].concat())
        }
    }

    #[tokio::test]
    async fn decrypts_all_at_once_and_names_the_first_failing_variable() {
        use base64::Engine as _;
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        let kms = CountingDecrypter::default();
        let names = ["A_HOST", "B_USER", "C_PASSWORD", "D_SALT"];
        let ok: BTreeMap<String, String> = names.iter().map(|n| (n.to_string(), b64(n))).collect();
        let out = kms::decrypt_all(&kms, &ok).await.unwrap();
        let plain: Vec<String> = out.iter().map(|(_, v)| v.expose_secret().to_string()).collect();
        assert_eq!(plain, ["plain-A_HOST", "plain-B_USER", "plain-C_PASSWORD", "plain-D_SALT"]);
        assert_eq!(kms.max_in_flight.load(std::sync::atomic::Ordering::SeqCst), 4);

        let mut failing = ok.clone();
        failing.insert("D_SALT".into(), b64("bad-1"));
        failing.insert("B_USER".into(), b64("bad-2"));
        match kms::decrypt_all(&kms, &failing).await {
            Err(ConfigError::Kms { name, .. }) => assert_eq!(name, "B_USER"),
            other => panic!("{:?}", other.map(|v| v.len())),
        }
    }

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
