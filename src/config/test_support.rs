//! Fixtures shared by the configuration's tests: a complete configuration, the secrets
//! it holds, and decrypters that answer without KMS.

use std::collections::BTreeMap;

use super::{ConfigError, RawConfig, Settings, kms, variables, yaml};

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

pub(crate) fn settings_with(changes: &[(&str, Option<&str>)]) -> Result<Settings, ConfigError> {
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

pub(crate) fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

/// A decrypter that answers every ciphertext with `plain-` + its base64.
pub(crate) struct EchoDecrypter;

impl kms::Decrypter for EchoDecrypter {
    async fn decrypt(&self, ciphertext: Vec<u8>) -> Result<Vec<u8>, String> {
        Ok([b"plain-".as_slice(), &ciphertext].concat())
    }
}
