//! The README's configuration table against the variable table in
//! [`variables`](super::variables): the same names in the same order, the same required
//! ones, each default in the notes, and every optional variable taking effect.

use std::collections::BTreeMap;

use super::test_support::{complete_plaintext, futures_lite_block_on};
use super::variables::{self, Kind, Requirement};
use super::{RawConfig, Settings, kms, yaml};

/// One row of the README's configuration table: the variables it documents, whether
/// they are required, and its notes.
struct Row {
    names: Vec<String>,
    required: bool,
    notes: String,
}

/// The rows of the README's configuration table, with the names expanded:
/// `ENVISIONWARE_DB_HOST`, `_PORT` expands to `ENVISIONWARE_DB_PORT`, and `*_DB_SSLMODE` to
/// the three databases' names.
fn readme_rows() -> Vec<Row> {
    let readme = include_str!("../../README.md");
    let table = readme
        .split("| variable | required | notes |")
        .nth(1)
        .expect("the README's configuration table")
        .split("\n\n")
        .next()
        .unwrap_or_default();
    let mut rows = Vec::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let written: Vec<&str> = cells[1].split('`').skip(1).step_by(2).collect();
        let stem = written[0].rsplit_once('_').map_or("", |(stem, _)| stem);
        let mut names = Vec::new();
        for name in &written {
            if let Some(rest) = name.strip_prefix('*') {
                for db in ["ENVISIONWARE", "SIERRA", "REDSHIFT"] {
                    names.push(format!("{db}{rest}"));
                }
            } else if name.starts_with('_') {
                names.push(format!("{stem}{name}"));
            } else {
                names.push(name.to_string());
            }
        }
        rows.push(Row { names, required: cells[2] == "yes", notes: cells[3].to_string() });
    }
    rows
}

/// The variables of the README's configuration table, each with whether it is required.
fn documented_variables() -> Vec<(String, bool)> {
    readme_rows()
        .into_iter()
        .flat_map(|row| row.names.into_iter().map(move |name| (name, row.required)))
        .collect()
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
        effect("SIERRA_DB_SSLMODE", "verify-full", "VerifyFull", |_, s| format!("{:?}", s.sierra.ssl_mode)),
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
        effect("KINESIS_MAX_RECORDS_PER_SECOND", "0", "0", |_, s| s.kinesis_records_per_second.to_string()),
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
        assert!(variables::find(name).is_some(), "{name} is documented but not read from the environment");
    }
}

/// The notes cell of the README table's row that documents `name`.
fn documented_notes(name: &str) -> Option<String> {
    readme_rows().into_iter().find(|row| row.names.iter().any(|n| n == name)).map(|row| row.notes)
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
