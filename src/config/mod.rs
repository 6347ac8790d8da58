//! Configuration: `config/<ENVIRONMENT>.yaml` plus the process environment plus flags,
//! validated into [`Settings`] before anything else happens (SPEC section 2).
//!
//! Precedence, highest first: command-line flags, the process environment, the file
//! (`PLAINTEXT_VARIABLES`, or `ENCRYPTED_VARIABLES` decrypted with KMS). A variable set in
//! the environment is taken as plain text even when the file has it encrypted, and is
//! then never sent to KMS.
//!
//! Loading has two phases: [`RawConfig`] gathers the text of every variable and checks
//! that the required ones exist; [`RawConfig::resolve`] decrypts and validates them.

pub mod kms;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::domain::Cursor;
use crate::pseudonym::{Kernel, Salt};
use crate::retry::RetryPolicy;

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
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// User name.
    pub user: String,
    /// Password (never printed).
    pub password: SecretString,
    /// TLS mode.
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
    pub fn parse(text: &str) -> Option<Self> {
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
    pub fn directive(self) -> &'static str {
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
    /// `SCHEMA_TIMEOUT_SECONDS` (default 10).
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
    /// `STOP_TIMEOUT_SECONDS` (default 20): how long a request in flight may still take
    /// after SIGTERM/SIGINT.
    pub stop_timeout: Duration,
    /// Variables that hold secrets: their values must never reach a log line.
    secrets: Vec<SecretString>,
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

impl Settings {
    /// Every secret value of this configuration (decrypted variables, passwords, salt), so
    /// tests and scrubbers can check that none of them is printed.
    pub fn secret_values(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().map(|s| s.expose_secret())
    }
}

/// Variables every run needs.
const REQUIRED: [&str; 21] = [
    "AWS_REGION",
    "ENVISIONWARE_DB_HOST",
    "ENVISIONWARE_DB_PORT",
    "ENVISIONWARE_DB_NAME",
    "ENVISIONWARE_DB_USER",
    "ENVISIONWARE_DB_PASSWORD",
    "SIERRA_DB_HOST",
    "SIERRA_DB_PORT",
    "SIERRA_DB_NAME",
    "SIERRA_DB_USER",
    "SIERRA_DB_PASSWORD",
    "REDSHIFT_DB_HOST",
    "REDSHIFT_DB_NAME",
    "REDSHIFT_DB_USER",
    "REDSHIFT_DB_PASSWORD",
    "KINESIS_STREAM_ARN",
    "KINESIS_BATCH_SIZE",
    "ENVISIONWARE_BATCH_SIZE",
    "BCRYPT_SALT",
    "PC_RESERVE_SCHEMA_URL",
    "S3_BUCKET",
];

/// Variables required unless the cache is ignored.
const REQUIRED_FOR_CACHE: [&str; 2] = ["S3_BUCKET", "S3_RESOURCE"];

/// Every variable this program reads (anything else in the file is reported at debug).
pub const KNOWN: [&str; 50] = [
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "ENVISIONWARE_DB_HOST",
    "ENVISIONWARE_DB_PORT",
    "ENVISIONWARE_DB_NAME",
    "ENVISIONWARE_DB_USER",
    "ENVISIONWARE_DB_PASSWORD",
    "ENVISIONWARE_DB_SSLMODE",
    "ENVISIONWARE_DB_SSLROOTCERT",
    "SIERRA_DB_HOST",
    "SIERRA_DB_PORT",
    "SIERRA_DB_NAME",
    "SIERRA_DB_USER",
    "SIERRA_DB_PASSWORD",
    "SIERRA_DB_SSLMODE",
    "SIERRA_DB_SSLROOTCERT",
    "REDSHIFT_DB_HOST",
    "REDSHIFT_DB_PORT",
    "REDSHIFT_DB_NAME",
    "REDSHIFT_DB_USER",
    "REDSHIFT_DB_PASSWORD",
    "REDSHIFT_DB_SSLMODE",
    "REDSHIFT_DB_SSLROOTCERT",
    "KINESIS_STREAM_ARN",
    "KINESIS_BATCH_SIZE",
    "KINESIS_MAX_RECORDS_PER_SECOND",
    "ENVISIONWARE_BATCH_SIZE",
    "BCRYPT_SALT",
    "S3_BUCKET",
    "S3_RESOURCE",
    "PC_RESERVE_SCHEMA_URL",
    "LOG_LEVEL",
    "MAX_BATCHES",
    "IGNORE_CACHE",
    "IGNORE_KINESIS",
    "PCR_DATE_TIME",
    "PCR_KEY",
    "PSEUDONYM_THREADS",
    "PSEUDONYM_KERNEL",
    "RETRY_ATTEMPTS",
    "RETRY_BASE_DELAY_MS",
    "DB_CONNECT_TIMEOUT_SECONDS",
    "DB_STATEMENT_TIMEOUT_SECONDS",
    "SCHEMA_TIMEOUT_SECONDS",
    "LEASE_RESOURCE",
    "LEASE_TTL_SECONDS",
    "SETTLE_DELAY_SECONDS",
    "CURSOR_MAX_AGE_HOURS",
    "STOP_TIMEOUT_SECONDS",
];

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
pub fn default_path(environment: &str) -> PathBuf {
    Path::new("config").join(format!("{environment}.yaml"))
}

impl RawConfig {
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
        for name in KNOWN.iter().copied().chain(encrypted.keys().map(String::as_str).collect::<Vec<_>>()) {
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
    pub fn plain(&self, name: &str) -> Option<&str> {
        self.plain.get(name).map(|(v, _)| v.as_str())
    }

    fn is_set(&self, name: &str) -> bool {
        self.plain.contains_key(name) || self.encrypted.contains_key(name)
    }

    /// Whether `IGNORE_CACHE` is on (false when unset or invalid; validation reports it).
    fn ignores_cache(&self) -> bool {
        self.plain("IGNORE_CACHE").and_then(|v| parse_bool("IGNORE_CACHE", v).ok()).unwrap_or(false)
    }

    /// Names of encrypted variables that will be decrypted.
    pub fn encrypted_names(&self) -> impl Iterator<Item = &str> {
        self.encrypted.keys().map(String::as_str)
    }

    /// Decrypts one encrypted variable, for commands that need nothing else.
    pub async fn decrypt_one(
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
        let missing: Vec<&'static str> = REQUIRED
            .iter()
            .chain(REQUIRED_FOR_CACHE.iter())
            .copied()
            .filter(|n| !(ignore_cache && REQUIRED_FOR_CACHE.contains(n)))
            .filter(|n| !self.is_set(n))
            .fold(Vec::new(), |mut acc, n| {
                if !acc.contains(&n) {
                    acc.push(n);
                }
                acc
            });
        if missing.is_empty() { Ok(()) } else { Err(ConfigError::Missing(missing)) }
    }

    /// Phase two: decrypts the encrypted variables with `kms` and validates everything.
    pub async fn resolve(mut self, kms: &impl kms::Decrypter) -> Result<Settings, ConfigError> {
        self.check_required()?;
        let mut values =
            WipedOnDrop(std::mem::take(&mut self.plain).into_iter().map(|(k, (v, _))| (k, v)).collect());
        let mut secrets: Vec<SecretString> = Vec::new();
        let decrypted = kms::decrypt_all(kms, &self.encrypted).await?;
        for (name, plaintext) in decrypted {
            let text = plaintext.expose_secret().to_string();
            if !text.is_empty() && !is_public_variable(&name) {
                secrets.push(plaintext);
            }
            values.insert(name, text);
        }
        for name in ["ENVISIONWARE_DB_PASSWORD", "SIERRA_DB_PASSWORD", "REDSHIFT_DB_PASSWORD", "BCRYPT_SALT"]
        {
            if let Some(v) = values.get(name).filter(|v| !v.is_empty()) {
                secrets.push(SecretString::from(v.clone()));
            }
        }
        // `values` wipes its plain copies when it goes out of scope, on success or error.
        validate(&Vars(&values), secrets)
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
fn is_public_variable(name: &str) -> bool {
    matches!(name, "KINESIS_STREAM_ARN" | "AWS_REGION")
}

struct Vars<'a>(&'a BTreeMap<String, String>);

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str, ConfigError> {
        match self.get(name).map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v),
            Some(_) => Err(invalid(name, "is empty")),
            None => Err(invalid(name, "is not set")),
        }
    }

    fn optional(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: Option<T>) -> Result<T, ConfigError> {
        match (self.optional(name), default) {
            (Some(v), _) => v.parse().map_err(|_| invalid(name, "must be a whole number")),
            (None, Some(d)) => Ok(d),
            (None, None) => self.required(name).map(|_| unreachable!("required() fails for an empty value")),
        }
    }

    fn boolean(&self, name: &str) -> Result<bool, ConfigError> {
        self.optional(name).map_or(Ok(false), |v| parse_bool(name, v))
    }

    fn db(
        &self,
        prefix: &str,
        default_port: Option<u16>,
        default_ssl: SslMode,
    ) -> Result<DbSettings, ConfigError> {
        let var = |s: &str| format!("{prefix}_DB_{s}");
        let port: u16 = self.number(&var("PORT"), default_port)?;
        if port == 0 {
            return Err(invalid(&var("PORT"), "must be a port number 1..65535"));
        }
        Ok(DbSettings {
            host: self.required(&var("HOST"))?.to_string(),
            port,
            database: self.required(&var("NAME"))?.to_string(),
            user: self.required(&var("USER"))?.to_string(),
            password: SecretString::from(self.get(&var("PASSWORD")).unwrap_or_default().to_string()),
            ssl_mode: match self.optional(&var("SSLMODE")) {
                Some(v) => SslMode::parse(&var("SSLMODE"), v)?,
                None => default_ssl,
            },
            ssl_root_cert: self.optional(&var("SSLROOTCERT")).map(PathBuf::from),
        })
    }
}

/// Booleans: true/false in any case, 1/0, and YAML 1.1's yes/no/on/off (which the
/// original's YAML library read as booleans). Anything else is an error, never false.
pub fn parse_bool(name: &str, text: &str) -> Result<bool, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(invalid(name, "must be true or false (or 1/0)")),
    }
}

fn validate(v: &Vars<'_>, secrets: Vec<SecretString>) -> Result<Settings, ConfigError> {
    let ignore_cache = v.boolean("IGNORE_CACHE")?;
    let kinesis_batch_size: usize = v.number("KINESIS_BATCH_SIZE", None)?;
    if !(1..=500).contains(&kinesis_batch_size) {
        return Err(invalid("KINESIS_BATCH_SIZE", "must be between 1 and 500 (the PutRecords limit)"));
    }
    let envisionware_batch_size: usize = v.number("ENVISIONWARE_BATCH_SIZE", None)?;
    if envisionware_batch_size == 0 {
        return Err(invalid("ENVISIONWARE_BATCH_SIZE", "must be at least 1"));
    }
    let salt = Salt::parse(v.required("BCRYPT_SALT")?).map_err(|e| invalid("BCRYPT_SALT", e.to_string()))?;
    let redshift_name = v.required("REDSHIFT_DB_NAME")?;
    if !redshift_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(invalid("REDSHIFT_DB_NAME", "may hold only letters, digits and _ (it names a table)"));
    }
    let redshift_patron_table = if redshift_name == "production" {
        "patron_info".to_string()
    } else {
        format!("patron_info_{redshift_name}")
    };
    let (s3_bucket, s3_resource) = if ignore_cache {
        (
            v.optional("S3_BUCKET").unwrap_or_default().to_string(),
            v.optional("S3_RESOURCE").unwrap_or_default().to_string(),
        )
    } else {
        (v.required("S3_BUCKET")?.to_string(), v.required("S3_RESOURCE")?.to_string())
    };
    let start_cursor = match (v.optional("PCR_DATE_TIME"), v.optional("PCR_KEY")) {
        (None, None) => None,
        (dt, key) => {
            let default = Cursor::default_start();
            let date_time = match dt {
                Some(t) => crate::domain::parse_naive_date_time(t).ok_or_else(|| {
                    invalid("PCR_DATE_TIME", "must be a date-time like 2023-01-01 00:00:00")
                })?,
                None => default.date_time,
            };
            let key = match key {
                Some(k) => k.parse().map_err(|_| invalid("PCR_KEY", "must be a whole number"))?,
                None => default.key,
            };
            Some(Cursor { date_time, key })
        }
    };
    let max_batches = match v.optional("MAX_BATCHES") {
        None => None,
        Some(t) => match t.parse::<u64>() {
            Ok(0) | Err(_) => return Err(invalid("MAX_BATCHES", "must be a whole number of at least 1")),
            Ok(n) => Some(n),
        },
    };
    let log_level = match v.optional("LOG_LEVEL") {
        None => LogLevel::Info,
        Some(t) => LogLevel::parse(t)
            .ok_or_else(|| invalid("LOG_LEVEL", "must be one of debug, info, warning, error, critical"))?,
    };
    let schema_url = v.required("PC_RESERVE_SCHEMA_URL")?;
    if !(schema_url.starts_with("http://") || schema_url.starts_with("https://")) {
        return Err(invalid("PC_RESERVE_SCHEMA_URL", "must be an http:// or https:// URL"));
    }
    let attempts: u32 = v.number("RETRY_ATTEMPTS", Some(4))?;
    if attempts == 0 {
        return Err(invalid("RETRY_ATTEMPTS", "must be at least 1"));
    }
    let base_delay_ms: u64 = v.number("RETRY_BASE_DELAY_MS", Some(200))?;
    let seconds = |name: &str, default: u64| -> Result<Duration, ConfigError> {
        let s: u64 = v.number(name, Some(default))?;
        if s == 0 {
            return Err(invalid(name, "must be at least 1 second"));
        }
        Ok(Duration::from_secs(s))
    };
    let lease_resource = match v.optional("LEASE_RESOURCE") {
        Some(k) => k.to_string(),
        None if s3_resource.is_empty() => String::new(),
        None => format!("{s3_resource}.lease"),
    };
    Ok(Settings {
        aws_region: v.required("AWS_REGION")?.to_string(),
        envisionware: v.db("ENVISIONWARE", None, SslMode::Prefer)?,
        sierra: v.db("SIERRA", None, SslMode::Prefer)?,
        redshift: v.db("REDSHIFT", Some(5439), SslMode::VerifyFull)?,
        redshift_patron_table,
        kinesis_stream_arn: v.required("KINESIS_STREAM_ARN")?.to_string(),
        kinesis_batch_size,
        kinesis_records_per_second: v.number("KINESIS_MAX_RECORDS_PER_SECOND", Some(1000))?,
        envisionware_batch_size,
        salt,
        s3_bucket,
        s3_resource,
        schema_url: schema_url.to_string(),
        log_level,
        max_batches,
        ignore_cache,
        ignore_kinesis: v.boolean("IGNORE_KINESIS")?,
        start_cursor,
        pseudonym_threads: v.number("PSEUDONYM_THREADS", Some(0))?,
        pseudonym_kernel: match v.optional("PSEUDONYM_KERNEL") {
            None => Kernel::DEFAULT,
            Some(k) => Kernel::parse(k).ok_or_else(|| {
                invalid("PSEUDONYM_KERNEL", "must be crate, lanes1, lanes2, lanes3 or lanes4")
            })?,
        },
        retry: RetryPolicy {
            attempts,
            base_delay: Duration::from_millis(base_delay_ms),
            max_delay: Duration::from_secs(20),
        },
        connect_timeout: seconds("DB_CONNECT_TIMEOUT_SECONDS", 30)?,
        statement_timeout: seconds("DB_STATEMENT_TIMEOUT_SECONDS", 300)?,
        schema_timeout: seconds("SCHEMA_TIMEOUT_SECONDS", 10)?,
        lease_resource,
        lease_ttl: seconds("LEASE_TTL_SECONDS", 120)?,
        settle_delay: Duration::from_secs(v.number("SETTLE_DELAY_SECONDS", Some(0))?),
        cursor_max_age: Duration::from_secs(
            v.number::<u64>("CURSOR_MAX_AGE_HOURS", Some(24))?.saturating_mul(3600),
        ),
        stop_timeout: seconds("STOP_TIMEOUT_SECONDS", 20)?,
        secrets,
    })
}

#[cfg(test)]
mod documented_defaults_tests;

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
        assert!(s.secret_values().any(|v| v == "plain-secret-value"));
        let shown = format!("{s:?} {:?} {:?} {}", s.sierra, s.salt, s.salt);
        assert!(!shown.contains("secret-value") && !shown.contains("abcdefghij"), "{shown}");
    }

    #[test]
    fn secrets_are_known_and_never_debug_printed() {
        let s = settings_with(&[]).unwrap();
        let secrets: Vec<&str> = s.secret_values().collect();
        assert!(secrets.contains(&"sierra-password"));
        assert!(secrets.contains(&"$2b$04$abcdefghijklmnopqrstuu"));
        let shown = format!("{s:?} {:?}", s.sierra);
        for secret in secrets {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
