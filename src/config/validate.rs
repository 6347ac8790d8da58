//! Phase two's checks: the gathered texts, read through the variables' descriptions,
//! become [`Settings`] or the first problem found, in a fixed order.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::variables::{self, Kind, Variable};
use super::{ConfigError, DbSettings, LogLevel, Settings, SslMode, invalid};
use crate::domain::Cursor;
use crate::pseudonym::{Kernel, Salt};
use crate::retry::RetryPolicy;

/// The gathered texts, read through the variables' descriptions in [`variables`].
pub(super) struct Vars<'a>(pub(super) &'a BTreeMap<String, String>);

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

pub(super) fn validate(v: &Vars<'_>) -> Result<Settings, ConfigError> {
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
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::test_support::{complete_plaintext, futures_lite_block_on, settings_with};
    use crate::config::{RawConfig, default_path, kms, yaml};

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
}
