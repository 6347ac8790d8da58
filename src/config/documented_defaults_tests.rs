//! The README's configuration table, variable by variable: each default as the README
//! states it (literals, not the code's constants), what a set value changes, the YAML
//! 1.1 booleans, and an environment value that replaces an encrypted one without asking
//! KMS.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use secrecy::ExposeSecret as _;

use super::test_support::{complete_plaintext, configured_secrets};
use super::validate::parse_bool;
use super::*;
use crate::pseudonym::Kernel;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

/// Settings from a complete configuration with `changes` applied (also used by `app`'s tests).
pub(crate) fn with(changes: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let mut plaintext = complete_plaintext();
    for (k, v) in changes {
        plaintext.insert(k.to_string(), v.to_string());
    }
    let raw = RawConfig::from_parts(
        yaml::ConfigFile { plaintext, encrypted: BTreeMap::new() },
        &|_| None,
        &BTreeMap::new(),
    );
    block_on(raw.resolve(&kms::NoDecrypter))
}

/// A decrypter that counts its calls and answers `from-kms`.
#[derive(Default)]
struct CountingKms {
    calls: AtomicUsize,
}

impl kms::Decrypter for CountingKms {
    async fn decrypt(&self, _ciphertext: Vec<u8>) -> Result<Vec<u8>, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(b"from-kms".to_vec())
    }
}

#[test]
fn retry_and_timeout_variables_default_to_the_readme_values() {
    let s = with(&[]).unwrap();
    // README: "4 attempts, exponential backoff with full jitter from 200 ms".
    assert_eq!(s.retry.attempts, 4);
    assert_eq!(s.retry.base_delay, Duration::from_millis(200));
    assert_eq!(s.retry.max_delay, Duration::from_secs(20));
    // README: DB_CONNECT_TIMEOUT_SECONDS, DB_STATEMENT_TIMEOUT_SECONDS, SCHEMA_TIMEOUT_SECONDS: 30, 300, 60.
    assert_eq!(s.connect_timeout, Duration::from_secs(30));
    assert_eq!(s.statement_timeout, Duration::from_secs(300));
    assert_eq!(s.schema_timeout, Duration::from_secs(60));
}

#[test]
fn retry_and_timeout_variables_take_the_values_set() {
    let s = with(&[
        ("RETRY_ATTEMPTS", "7"),
        ("RETRY_BASE_DELAY_MS", "35"),
        ("DB_CONNECT_TIMEOUT_SECONDS", "3"),
        ("DB_STATEMENT_TIMEOUT_SECONDS", "45"),
        ("SCHEMA_TIMEOUT_SECONDS", "2"),
    ])
    .unwrap();
    assert_eq!(s.retry.attempts, 7);
    assert_eq!(s.retry.base_delay, Duration::from_millis(35));
    assert_eq!(s.connect_timeout, Duration::from_secs(3));
    assert_eq!(s.statement_timeout, Duration::from_secs(45));
    assert_eq!(s.schema_timeout, Duration::from_secs(2));
    // RETRY_ATTEMPTS=1 means no retry; 0 and non-numbers are refused by name.
    assert_eq!(with(&[("RETRY_ATTEMPTS", "1")]).unwrap().retry.attempts, 1);
    for (name, value) in [
        ("RETRY_ATTEMPTS", "0"),
        ("RETRY_ATTEMPTS", "four"),
        ("RETRY_BASE_DELAY_MS", "-5"),
        ("DB_CONNECT_TIMEOUT_SECONDS", "0"),
        ("DB_STATEMENT_TIMEOUT_SECONDS", "0"),
        ("SCHEMA_TIMEOUT_SECONDS", "0"),
        ("SCHEMA_TIMEOUT_SECONDS", "1.5"),
    ] {
        let err = with(&[(name, value)]).unwrap_err();
        assert!(err.to_string().starts_with(name), "{name}={value}: {err}");
    }
}

#[test]
fn kinesis_max_records_per_second_defaults_to_1000_and_0_turns_pacing_off() {
    assert_eq!(with(&[]).unwrap().kinesis_records_per_second, 1000);
    assert_eq!(with(&[("KINESIS_MAX_RECORDS_PER_SECOND", "0")]).unwrap().kinesis_records_per_second, 0);
    assert_eq!(with(&[("KINESIS_MAX_RECORDS_PER_SECOND", "250")]).unwrap().kinesis_records_per_second, 250);
    let err = with(&[("KINESIS_MAX_RECORDS_PER_SECOND", "fast")]).unwrap_err();
    assert!(err.to_string().starts_with("KINESIS_MAX_RECORDS_PER_SECOND"), "{err}");
}

#[test]
fn pseudonym_threads_and_kernel_default_and_parse() {
    let s = with(&[]).unwrap();
    // README: "default one per core" (0 asks the pool for one thread per core) and
    // `lanes4` by default.
    assert_eq!(s.pseudonym_threads, 0);
    assert_eq!(s.pseudonym_kernel, Kernel::Lanes4);
    assert_eq!(with(&[("PSEUDONYM_THREADS", "3")]).unwrap().pseudonym_threads, 3);
    for (text, kernel) in [
        ("crate", Kernel::Crate),
        ("lanes1", Kernel::Lanes1),
        ("lanes2", Kernel::Lanes2),
        ("lanes3", Kernel::Lanes3),
        ("lanes4", Kernel::Lanes4),
    ] {
        assert_eq!(with(&[("PSEUDONYM_KERNEL", text)]).unwrap().pseudonym_kernel, kernel, "{text}");
    }
    let err = with(&[("PSEUDONYM_THREADS", "many")]).unwrap_err();
    assert!(err.to_string().starts_with("PSEUDONYM_THREADS"), "{err}");
}

#[test]
fn yaml_1_1_yes_no_on_off_are_booleans_in_any_case() {
    for (text, want) in [
        ("yes", true),
        ("Yes", true),
        ("YES", true),
        ("on", true),
        ("On", true),
        ("no", false),
        ("No", false),
        ("off", false),
        ("OFF", false),
        ("TRUE", true),
        ("False", false),
    ] {
        let s = with(&[("IGNORE_KINESIS", text), ("IGNORE_CACHE", text)]).unwrap();
        assert_eq!((s.ignore_kinesis, s.ignore_cache), (want, want), "{text}");
    }
    for text in ["y", "n", "2", "enabled", "yess", "truthy"] {
        let err = with(&[("IGNORE_KINESIS", text)]).unwrap_err();
        assert!(err.to_string().starts_with("IGNORE_KINESIS"), "{text}: {err}");
    }
    // Straight from a YAML file: PyYAML (YAML 1.1) reads an unquoted yes as a boolean.
    let file = yaml::parse("PLAINTEXT_VARIABLES:\n  IGNORE_KINESIS: yes\n  IGNORE_CACHE: off\n").unwrap();
    assert!(parse_bool("IGNORE_KINESIS", &file.plaintext["IGNORE_KINESIS"]).unwrap());
    assert!(!parse_bool("IGNORE_CACHE", &file.plaintext["IGNORE_CACHE"]).unwrap());
}

#[test]
fn an_environment_value_overrides_an_encrypted_one_without_a_kms_call() {
    let mut plaintext = complete_plaintext();
    plaintext.remove("BCRYPT_SALT");
    plaintext.remove("SIERRA_DB_PASSWORD");
    let encrypted: BTreeMap<String, String> = [
        ("BCRYPT_SALT".to_string(), "c2FsdC1jaXBoZXJ0ZXh0".to_string()),
        ("SIERRA_DB_PASSWORD".to_string(), "cGFzc3dvcmQtY2lwaGVydGV4dA==".to_string()),
    ]
    .into();
    let env = |name: &str| (name == "BCRYPT_SALT").then(|| "$2b$04$zyxwvutsrqponmlkjihgfe".to_string());
    let raw = RawConfig::from_parts(yaml::ConfigFile { plaintext, encrypted }, &env, &BTreeMap::new());
    let names: Vec<&str> = raw.encrypted_names().collect();
    assert_eq!(names, ["SIERRA_DB_PASSWORD"], "the environment's BCRYPT_SALT is not sent to KMS");
    let kms = CountingKms::default();
    let s = block_on(raw.resolve(&kms)).unwrap();
    // One decrypt (the password); the salt came from the environment as plain text.
    assert_eq!(kms.calls.load(Ordering::SeqCst), 1);
    assert_eq!(s.sierra.password.expose_secret(), "from-kms");
    let env_salt = crate::pseudonym::Salt::parse("$2b$04$zyxwvutsrqponmlkjihgfe").unwrap();
    assert_eq!(crate::pseudonym::pseudonym(&s.salt, b"x"), crate::pseudonym::pseudonym(&env_salt, b"x"));

    // Nothing encrypted is left once the environment sets every encrypted variable: no call.
    let mut plaintext = complete_plaintext();
    plaintext.remove("BCRYPT_SALT");
    let encrypted: BTreeMap<String, String> =
        [("BCRYPT_SALT".to_string(), "c2FsdC1jaXBoZXJ0ZXh0".to_string())].into();
    let raw = RawConfig::from_parts(yaml::ConfigFile { plaintext, encrypted }, &env, &BTreeMap::new());
    let kms = CountingKms::default();
    block_on(raw.resolve(&kms)).unwrap();
    assert_eq!(kms.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn every_sslmode_and_log_level_reads_as_documented() {
    for (text, mode) in [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
        ("VERIFY-FULL", SslMode::VerifyFull),
    ] {
        let s = with(&[
            ("ENVISIONWARE_DB_SSLMODE", text),
            ("SIERRA_DB_SSLMODE", text),
            ("REDSHIFT_DB_SSLMODE", text),
        ])
        .unwrap();
        assert_eq!(
            (s.envisionware.ssl_mode, s.sierra.ssl_mode, s.redshift.ssl_mode),
            (mode, mode, mode),
            "{text}"
        );
    }
    // README: defaults `prefer` (Envisionware, Sierra) and `verify-full` (Redshift).
    let s = with(&[]).unwrap();
    assert_eq!(s.envisionware.ssl_mode, SslMode::Prefer);
    assert_eq!(s.sierra.ssl_mode, SslMode::Prefer);
    assert_eq!(s.redshift.ssl_mode, SslMode::VerifyFull);
    for (text, level) in [
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warning", LogLevel::Warning),
        ("error", LogLevel::Error),
        ("critical", LogLevel::Critical),
        ("DEBUG", LogLevel::Debug),
    ] {
        assert_eq!(with(&[("LOG_LEVEL", text)]).unwrap().log_level, level, "{text}");
    }
    assert_eq!(LogLevel::Debug.directive(), "debug");
    assert_eq!(LogLevel::Info.directive(), "info");
    assert_eq!(LogLevel::Warning.directive(), "warn");
    assert_eq!(LogLevel::Critical.directive(), "error");
}

#[test]
fn each_database_reads_its_own_variables() {
    let s = with(&[
        ("ENVISIONWARE_DB_PORT", "3307"),
        ("SIERRA_DB_PORT", "1032"),
        ("REDSHIFT_DB_PORT", "5440"),
        ("SIERRA_DB_HOST", "sierra.example"),
        ("REDSHIFT_DB_SSLROOTCERT", "/etc/ca.pem"),
    ])
    .unwrap();
    assert_eq!((s.envisionware.port, s.sierra.port, s.redshift.port), (3307, 1032, 5440));
    assert_eq!(s.sierra.host, "sierra.example");
    assert_eq!(s.envisionware.host, "127.0.0.1");
    assert_eq!((s.envisionware.database.as_str(), s.sierra.database.as_str()), ("lasttwodays", "iii"));
    assert_eq!(s.envisionware.password.expose_secret(), "ew-password");
    assert_eq!(s.redshift.ssl_root_cert.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
    assert_eq!(s.sierra.ssl_root_cert, None);
    // README: `REDSHIFT_DB_PORT` defaults to 5439; the others have no default.
    assert_eq!(with(&[]).unwrap().redshift.port, 5439);
    for name in ["ENVISIONWARE_DB_PORT", "SIERRA_DB_PORT", "REDSHIFT_DB_PORT"] {
        let err = with(&[(name, "0")]).unwrap_err();
        assert!(err.to_string().starts_with(name), "{err}");
    }
}

#[test]
fn batch_sizes_accept_their_documented_bounds() {
    // README: KINESIS_BATCH_SIZE 1..500.
    assert_eq!(with(&[("KINESIS_BATCH_SIZE", "1")]).unwrap().kinesis_batch_size, 1);
    assert_eq!(with(&[("KINESIS_BATCH_SIZE", "500")]).unwrap().kinesis_batch_size, 500);
    assert_eq!(with(&[("ENVISIONWARE_BATCH_SIZE", "1")]).unwrap().envisionware_batch_size, 1);
    assert_eq!(with(&[("MAX_BATCHES", "1")]).unwrap().max_batches, Some(1));
    assert_eq!(with(&[("MAX_BATCHES", "12")]).unwrap().max_batches, Some(12));
}

#[test]
fn an_empty_required_value_is_named_as_empty() {
    let err = with(&[("KINESIS_STREAM_ARN", "  ")]).unwrap_err();
    assert_eq!(err.to_string(), "KINESIS_STREAM_ARN: is empty");
    // Values are trimmed.
    assert_eq!(with(&[("AWS_REGION", " us-east-2 ")]).unwrap().aws_region, "us-east-2");
}

#[test]
fn decrypted_stream_arn_and_region_are_not_secrets_but_passwords_are() {
    let mut plaintext = complete_plaintext();
    for name in ["KINESIS_STREAM_ARN", "AWS_REGION", "REDSHIFT_DB_USER"] {
        plaintext.remove(name);
    }
    let encrypted: BTreeMap<String, String> = ["KINESIS_STREAM_ARN", "AWS_REGION", "REDSHIFT_DB_USER"]
        .iter()
        .map(|n| (n.to_string(), "QUJD".to_string()))
        .collect();
    let raw = RawConfig::from_parts(yaml::ConfigFile { plaintext, encrypted }, &|_| None, &BTreeMap::new());
    let kms = CountingKms::default();
    let s = block_on(raw.resolve(&kms)).unwrap();
    assert_eq!(kms.calls.load(Ordering::SeqCst), 3);
    assert_eq!(s.kinesis_stream_arn, "from-kms");
    let decrypted: BTreeMap<String, String> = ["KINESIS_STREAM_ARN", "AWS_REGION", "REDSHIFT_DB_USER"]
        .iter()
        .map(|n| (n.to_string(), "from-kms".to_string()))
        .collect();
    let secrets = configured_secrets(&complete_plaintext(), &decrypted);
    // The user name decrypted by KMS is a secret (one entry); the stream ARN and the
    // region are not (they appear in logs), so "from-kms" is listed once, not three times.
    assert_eq!(secrets.iter().filter(|v| *v == "from-kms").count(), 1, "{}", secrets.len());
    assert!(secrets.iter().any(|v| v == "rs-password"));
    assert!(secrets.iter().any(|v| v == "$2b$04$abcdefghijklmnopqrstuu"));
}

#[test]
fn pcr_key_alone_starts_at_the_default_date_time() {
    let s = with(&[("PCR_KEY", "41")]).unwrap();
    assert_eq!(s.start_cursor, Some(crate::domain::Cursor::parse("2023-01-01 00:00:00", "41").unwrap()));
    let s = with(&[("PCR_DATE_TIME", "2024-02-03 04:05:06")]).unwrap();
    assert_eq!(s.start_cursor, Some(crate::domain::Cursor::parse("2024-02-03 04:05:06", "0").unwrap()));
    assert_eq!(with(&[]).unwrap().start_cursor, None);
}

#[test]
fn without_the_cursor_there_is_no_lease_key_and_no_kms_client_refuses_ciphertexts() {
    // IGNORE_CACHE without S3_RESOURCE: no cursor object, so no `<S3_RESOURCE>.lease`.
    let mut plaintext = complete_plaintext();
    plaintext.remove("S3_RESOURCE");
    plaintext.insert("IGNORE_CACHE".into(), "true".into());
    let raw = RawConfig::from_parts(
        yaml::ConfigFile { plaintext, encrypted: BTreeMap::new() },
        &|_| None,
        &BTreeMap::new(),
    );
    let s = block_on(raw.resolve(&kms::NoDecrypter)).unwrap();
    assert_eq!(s.lease_resource, "");
    // A ciphertext with no KMS client configured is an error naming the variable.
    let mut plaintext = complete_plaintext();
    plaintext.remove("SIERRA_DB_PASSWORD");
    let encrypted: BTreeMap<String, String> = [("SIERRA_DB_PASSWORD".to_string(), "QUJD".to_string())].into();
    let raw = RawConfig::from_parts(yaml::ConfigFile { plaintext, encrypted }, &|_| None, &BTreeMap::new());
    let err = block_on(raw.resolve(&kms::NoDecrypter)).unwrap_err();
    assert!(err.to_string().starts_with("SIERRA_DB_PASSWORD"), "{err}");
}

#[test]
fn the_cursor_variables_are_required_unless_the_cache_is_ignored() {
    let raw = |drop: &[&str], ignore_cache: bool| {
        let mut plaintext = complete_plaintext();
        for name in drop {
            plaintext.remove(*name);
        }
        if ignore_cache {
            plaintext.insert("IGNORE_CACHE".into(), "True".into());
        }
        RawConfig::from_parts(
            yaml::ConfigFile { plaintext, encrypted: BTreeMap::new() },
            &|_| None,
            &BTreeMap::new(),
        )
    };
    let err = raw(&["S3_BUCKET"], false).check_required().unwrap_err();
    assert!(err.to_string().contains("S3_BUCKET"), "{err}");
    raw(&["S3_BUCKET", "S3_RESOURCE"], true).check_required().unwrap();
    // Ignoring the cache excuses only the cursor's variables.
    let err = raw(&["S3_BUCKET", "AWS_REGION"], true).check_required().unwrap_err();
    assert!(err.to_string().contains("AWS_REGION") && !err.to_string().contains("S3_BUCKET"), "{err}");
}

#[test]
fn decrypt_one_decrypts_only_the_variable_asked_for() {
    let encrypted: BTreeMap<String, String> = [("BCRYPT_SALT".to_string(), "QUJD".to_string())].into();
    let raw = RawConfig::from_parts(
        yaml::ConfigFile { plaintext: complete_plaintext(), encrypted },
        &|_| None,
        &BTreeMap::new(),
    );
    let kms = CountingKms::default();
    assert_eq!(block_on(raw.decrypt_one("BCRYPT_SALT", &kms)).unwrap().expose_secret(), "from-kms");
    assert_eq!(kms.calls.load(Ordering::SeqCst), 1);
    let err = block_on(raw.decrypt_one("SIERRA_DB_PASSWORD", &kms)).unwrap_err();
    assert_eq!(err.to_string(), "SIERRA_DB_PASSWORD: is not in ENCRYPTED_VARIABLES");
    assert_eq!(kms.calls.load(Ordering::SeqCst), 1, "nothing else sent to KMS");
}

#[test]
fn the_late_row_window_defaults_to_3_hours_is_off_at_0_and_stays_below_the_retention() {
    // README: "default 3; 0 turns it off; must be below ENVISIONWARE_RETENTION_HOURS".
    assert_eq!(with(&[]).unwrap().late_row_window, Duration::from_secs(3 * 3600));
    assert_eq!(with(&[("LATE_ROW_WINDOW_HOURS", "0")]).unwrap().late_row_window, Duration::ZERO);
    with(&[("LATE_ROW_WINDOW_HOURS", "47")]).unwrap();
    for (window, retention) in [("48", "48"), ("49", "48"), ("5", "4")] {
        let err = with(&[("LATE_ROW_WINDOW_HOURS", window), ("ENVISIONWARE_RETENTION_HOURS", retention)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("LATE_ROW_WINDOW_HOURS: must be below ENVISIONWARE_RETENTION_HOURS"),
            "{window}/{retention}: {err}"
        );
    }
}
