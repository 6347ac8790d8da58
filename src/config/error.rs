//! The configuration error and its constructor for an invalid value.

use std::path::PathBuf;

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

/// An invalid value of `name`: `reason` says what is wrong, never the value.
pub(crate) fn invalid(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name: name.to_string(), reason: reason.into() }
}
