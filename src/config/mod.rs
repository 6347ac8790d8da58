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

mod error;
pub mod kms;
mod raw;
mod settings;
mod validate;
pub(crate) mod variables;
pub mod yaml;

#[cfg(test)]
pub(crate) mod documented_defaults_tests;
#[cfg(test)]
mod readme_table_tests;
#[cfg(test)]
pub(crate) mod test_support;

pub use error::ConfigError;
pub(crate) use error::invalid;
pub use raw::RawConfig;
pub(crate) use raw::default_path;
pub use settings::{DbSettings, LogLevel, Settings, SslMode};
pub(crate) use validate::{parse_log_format_is_json, parse_log_level, schema_fetch};
