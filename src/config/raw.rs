//! Phase one of loading: [`RawConfig`] gathers the text of every variable from the file,
//! the environment and flags, merges them by precedence and checks that the required ones
//! exist; [`RawConfig::resolve`] then decrypts and validates them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::validate::{Vars, parse_bool, validate};
use super::variables::{self, Requirement};
use super::{ConfigError, Settings, invalid, kms, yaml};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{complete_plaintext, configured_secrets, futures_lite_block_on};

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
}
