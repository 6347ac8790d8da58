//! Every configuration variable, described once: its name, whether a run needs it, its
//! default, how its text is read, whether its value is a secret, and one line on what it
//! does. The loader's lists (required, known, secret), the defaults validation falls back
//! on, the `--help` variable list and the README table's check all derive from
//! [`VARIABLES`].

use std::fmt::Write as _;

/// Whether a run needs a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requirement {
    /// Every run needs it (set somewhere, even if empty: validation then says "is empty").
    Always,
    /// Needed unless `IGNORE_CACHE` is on (the cursor object's location).
    UnlessCacheIgnored,
    /// Optional.
    Optional,
}

/// Whether a variable's value must stay out of every log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrecy {
    /// Always a secret, wherever it comes from.
    Secret,
    /// A secret when the file encrypts it (`ENCRYPTED_VARIABLES`).
    WhenEncrypted,
    /// Never a secret, even when the file encrypts it.
    Public,
}

/// How a variable's text is read (the parser validation applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Text; empty counts as unset.
    Text,
    /// Text that may be empty (a database password).
    Password,
    /// A TCP port, 1..65535.
    Port,
    /// A whole number.
    Number,
    /// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
    Boolean,
    /// Whole seconds.
    Seconds,
    /// Whole hours.
    Hours,
    /// Whole milliseconds.
    Milliseconds,
    /// One of these words (aliases accepted where the notes say so).
    Choice(&'static [&'static str]),
    /// An `http://` or `https://` URL.
    Url,
    /// A file path.
    Path,
    /// A naive date-time, `YYYY-MM-DD HH:MM:SS`.
    DateTime,
    /// A bcrypt salt, `$2b$NN$` and 22 salt characters.
    Salt,
}

impl Kind {
    /// How `--help` names the kind.
    pub(crate) fn describe(self) -> String {
        match self {
            Self::Text => "text".into(),
            Self::Password => "secret text".into(),
            Self::Port => "port".into(),
            Self::Number => "number".into(),
            Self::Boolean => "true/false".into(),
            Self::Seconds => "seconds".into(),
            Self::Hours => "hours".into(),
            Self::Milliseconds => "milliseconds".into(),
            Self::Choice(words) => words.join("|"),
            Self::Url => "URL".into(),
            Self::Path => "path".into(),
            Self::DateTime => "date-time".into(),
            Self::Salt => "bcrypt salt".into(),
        }
    }
}

/// One configuration variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Variable {
    /// The name, as in the file and the environment.
    pub name: &'static str,
    /// Whether a run needs it.
    pub required: Requirement,
    /// The value used when it is unset, as text (parsed like a set value).
    pub default: Option<&'static str>,
    /// How its text is read.
    pub kind: Kind,
    /// Whether its value is a secret.
    pub secrecy: Secrecy,
    /// What it does, in one line.
    pub doc: &'static str,
}

/// Declares one constant per variable (named as the variable) and [`VARIABLES`].
macro_rules! variables {
    ($($name:ident: $required:ident, $kind:expr, $default:expr, $secrecy:ident, $doc:literal;)*) => {
        $(
            #[doc = concat!("`", stringify!($name), "`: ", $doc)]
            pub(crate) const $name: Variable = Variable {
                name: stringify!($name),
                required: Requirement::$required,
                default: $default,
                kind: $kind,
                secrecy: Secrecy::$secrecy,
                doc: $doc,
            };
        )*
        /// Every variable this program reads, in the order of the README's table.
        pub(crate) const VARIABLES: &[Variable] = &[$($name),*];
    };
}

const SSL_MODES: &[&str] = &["disable", "prefer", "require", "verify-ca", "verify-full"];

variables! {
    AWS_REGION: Always, Kind::Text, None, Public, "region of KMS, S3 and Kinesis";
    AWS_PROFILE: Optional, Kind::Text, None, WhenEncrypted, "AWS profile for every AWS client, the KMS one included";
    AWS_ENDPOINT_URL: Optional, Kind::Text, None, WhenEncrypted, "a local emulator (S3 then uses path-style addressing)";
    AWS_ACCESS_KEY_ID: Optional, Kind::Text, None, WhenEncrypted, "static credentials (with AWS_SECRET_ACCESS_KEY); otherwise the default chain";
    AWS_SECRET_ACCESS_KEY: Optional, Kind::Password, None, Secret, "static credentials (with AWS_ACCESS_KEY_ID)";
    AWS_SESSION_TOKEN: Optional, Kind::Password, None, Secret, "session token of the static credentials";
    KMS_KEY_ID: Optional, Kind::Text, None, Public, "the KMS key of ENCRYPTED_VARIABLES (ID, ARN or alias); others are refused";
    ENVISIONWARE_DB_HOST: Always, Kind::Text, None, WhenEncrypted, "Envisionware (MySQL) host";
    ENVISIONWARE_DB_PORT: Always, Kind::Port, None, WhenEncrypted, "Envisionware port";
    ENVISIONWARE_DB_NAME: Always, Kind::Text, None, WhenEncrypted, "Envisionware database";
    ENVISIONWARE_DB_USER: Always, Kind::Text, None, WhenEncrypted, "Envisionware user";
    ENVISIONWARE_DB_PASSWORD: Always, Kind::Password, None, Secret, "Envisionware password";
    SIERRA_DB_HOST: Always, Kind::Text, None, WhenEncrypted, "Sierra (PostgreSQL) host";
    SIERRA_DB_PORT: Always, Kind::Port, None, WhenEncrypted, "Sierra port";
    SIERRA_DB_NAME: Always, Kind::Text, None, WhenEncrypted, "Sierra database";
    SIERRA_DB_USER: Always, Kind::Text, None, WhenEncrypted, "Sierra user";
    SIERRA_DB_PASSWORD: Always, Kind::Password, None, Secret, "Sierra password";
    REDSHIFT_DB_HOST: Always, Kind::Text, None, WhenEncrypted, "Redshift host";
    REDSHIFT_DB_NAME: Always, Kind::Text, None, WhenEncrypted, "Redshift database; the table is patron_info (production) or patron_info_<name>";
    REDSHIFT_DB_USER: Always, Kind::Text, None, WhenEncrypted, "Redshift user";
    REDSHIFT_DB_PASSWORD: Always, Kind::Password, None, Secret, "Redshift password";
    REDSHIFT_DB_PORT: Optional, Kind::Port, Some("5439"), WhenEncrypted, "Redshift port";
    ENVISIONWARE_DB_SSLMODE: Optional, Kind::Choice(SSL_MODES), Some("prefer"), WhenEncrypted, "Envisionware TLS mode";
    SIERRA_DB_SSLMODE: Optional, Kind::Choice(SSL_MODES), Some("prefer"), WhenEncrypted, "Sierra TLS mode";
    REDSHIFT_DB_SSLMODE: Optional, Kind::Choice(SSL_MODES), Some("verify-full"), WhenEncrypted, "Redshift TLS mode";
    ENVISIONWARE_DB_SSLROOTCERT: Optional, Kind::Path, None, WhenEncrypted, "Envisionware CA bundle (default: the system's roots)";
    SIERRA_DB_SSLROOTCERT: Optional, Kind::Path, None, WhenEncrypted, "Sierra CA bundle (default: the system's roots)";
    REDSHIFT_DB_SSLROOTCERT: Optional, Kind::Path, None, WhenEncrypted, "Redshift CA bundle (default: the system's roots)";
    KINESIS_STREAM_ARN: Always, Kind::Text, None, Public, "the stream records are sent to";
    KINESIS_BATCH_SIZE: Always, Kind::Number, None, WhenEncrypted, "records per PutRecords request, 1..500";
    KINESIS_MAX_RECORDS_PER_SECOND: Optional, Kind::Number, Some("1000"), WhenEncrypted, "pacing (one shard's limit); 0 turns it off";
    ENVISIONWARE_BATCH_SIZE: Always, Kind::Number, None, WhenEncrypted, "rows per Envisionware query";
    BCRYPT_SALT: Always, Kind::Salt, None, Secret, "the salt of every pseudonym";
    PC_RESERVE_SCHEMA_URL: Always, Kind::Url, None, WhenEncrypted, "Platform API endpoint answering {\"data\": {\"schema\": \"...\"}}";
    S3_BUCKET: UnlessCacheIgnored, Kind::Text, None, WhenEncrypted, "bucket of the cursor object";
    S3_RESOURCE: UnlessCacheIgnored, Kind::Text, None, WhenEncrypted, "key of the cursor object";
    LOG_LEVEL: Optional, Kind::Choice(&["debug", "info", "warning", "error", "critical"]), Some("info"), WhenEncrypted, "log level";
    LOG_FORMAT: Optional, Kind::Choice(&["text", "json"]), Some("text"), WhenEncrypted, "log line format";
    MAX_BATCHES: Optional, Kind::Number, None, WhenEncrypted, "stop after this many batches";
    IGNORE_CACHE: Optional, Kind::Boolean, Some("false"), WhenEncrypted, "neither read nor write the S3 cursor";
    IGNORE_KINESIS: Optional, Kind::Boolean, Some("false"), WhenEncrypted, "do everything but send";
    PCR_DATE_TIME: Optional, Kind::DateTime, Some("2023-01-01 00:00:00"), WhenEncrypted, "start cursor's time (with IGNORE_CACHE, or when no cursor object exists yet)";
    PCR_KEY: Optional, Kind::Number, Some("0"), WhenEncrypted, "start cursor's pcrKey";
    PSEUDONYM_THREADS: Optional, Kind::Number, Some("0"), WhenEncrypted, "bcrypt threads; 0 is one per core";
    PSEUDONYM_KERNEL: Optional, Kind::Choice(&["lanes4", "lanes1", "lanes2", "lanes3", "crate"]), Some("lanes4"), WhenEncrypted, "bcrypt implementation; all give identical pseudonyms";
    RETRY_ATTEMPTS: Optional, Kind::Number, Some("4"), WhenEncrypted, "attempts per transient failure, at least 1";
    RETRY_BASE_DELAY_MS: Optional, Kind::Milliseconds, Some("200"), WhenEncrypted, "first backoff (exponential, full jitter)";
    DB_CONNECT_TIMEOUT_SECONDS: Optional, Kind::Seconds, Some("30"), WhenEncrypted, "database connection timeout";
    DB_STATEMENT_TIMEOUT_SECONDS: Optional, Kind::Seconds, Some("300"), WhenEncrypted, "database statement timeout";
    SCHEMA_TIMEOUT_SECONDS: Optional, Kind::Seconds, Some("60"), WhenEncrypted, "schema request timeout (each attempt)";
    LEASE_RESOURCE: Optional, Kind::Text, None, WhenEncrypted, "the lease object's key in S3_BUCKET (default <S3_RESOURCE>.lease)";
    LEASE_TTL_SECONDS: Optional, Kind::Seconds, Some("120"), WhenEncrypted, "how long a lease lasts unless renewed";
    STOP_TIMEOUT_SECONDS: Optional, Kind::Seconds, Some("20"), WhenEncrypted, "after SIGTERM/SIGINT, how long the request in flight may take";
    SETTLE_DELAY_SECONDS: Optional, Kind::Seconds, Some("0"), WhenEncrypted, "read only rows this much older than Envisionware's NOW(); 0 is off";
    CURSOR_MAX_AGE_HOURS: Optional, Kind::Hours, Some("24"), WhenEncrypted, "warn when not caught up for this long";
    ENVISIONWARE_RETENTION_HOURS: Optional, Kind::Hours, Some("48"), WhenEncrypted, "how long Envisionware keeps a row";
    LATE_ROW_WINDOW_HOURS: Optional, Kind::Hours, Some("3"), WhenEncrypted, "count rows appearing this far behind the cursor; 0 is off; below ENVISIONWARE_RETENTION_HOURS";
}

/// The connection variables of one database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Database {
    /// `*_DB_HOST`.
    pub host: Variable,
    /// `*_DB_PORT`.
    pub port: Variable,
    /// `*_DB_NAME`.
    pub name: Variable,
    /// `*_DB_USER`.
    pub user: Variable,
    /// `*_DB_PASSWORD`.
    pub password: Variable,
    /// `*_DB_SSLMODE`.
    pub ssl_mode: Variable,
    /// `*_DB_SSLROOTCERT`.
    pub ssl_root_cert: Variable,
}

/// Envisionware's connection variables.
pub(crate) const ENVISIONWARE_DB: Database = Database {
    host: ENVISIONWARE_DB_HOST,
    port: ENVISIONWARE_DB_PORT,
    name: ENVISIONWARE_DB_NAME,
    user: ENVISIONWARE_DB_USER,
    password: ENVISIONWARE_DB_PASSWORD,
    ssl_mode: ENVISIONWARE_DB_SSLMODE,
    ssl_root_cert: ENVISIONWARE_DB_SSLROOTCERT,
};

/// Sierra's connection variables.
pub(crate) const SIERRA_DB: Database = Database {
    host: SIERRA_DB_HOST,
    port: SIERRA_DB_PORT,
    name: SIERRA_DB_NAME,
    user: SIERRA_DB_USER,
    password: SIERRA_DB_PASSWORD,
    ssl_mode: SIERRA_DB_SSLMODE,
    ssl_root_cert: SIERRA_DB_SSLROOTCERT,
};

/// Redshift's connection variables.
pub(crate) const REDSHIFT_DB: Database = Database {
    host: REDSHIFT_DB_HOST,
    port: REDSHIFT_DB_PORT,
    name: REDSHIFT_DB_NAME,
    user: REDSHIFT_DB_USER,
    password: REDSHIFT_DB_PASSWORD,
    ssl_mode: REDSHIFT_DB_SSLMODE,
    ssl_root_cert: REDSHIFT_DB_SSLROOTCERT,
};

/// The variable named `name`, if this program reads it.
#[cfg(test)]
pub(crate) fn find(name: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|v| v.name == name)
}

/// The variable list of `--help`: per variable, a line with its name, kind, and whether it
/// is required or its default, then an indented line on what it does.
pub(crate) fn help_text() -> String {
    let mut out = String::from("Variables (file, environment or --set):\n");
    for v in VARIABLES {
        let need = match (v.required, v.default) {
            (Requirement::Always, _) => "required".to_string(),
            (Requirement::UnlessCacheIgnored, _) => "required unless IGNORE_CACHE".to_string(),
            (Requirement::Optional, Some(d)) => format!("default {d}"),
            (Requirement::Optional, None) => "optional".to_string(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "  {}: {}, {}\n      {}", v.name, v.kind.describe(), need, v.doc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_default_is_one_of_its_choices() {
        for (i, v) in VARIABLES.iter().enumerate() {
            assert!(!VARIABLES[..i].iter().any(|w| w.name == v.name), "{} is described twice", v.name);
            if let (Kind::Choice(words), Some(d)) = (v.kind, v.default) {
                assert!(words.contains(&d), "{}: default {d} is not one of {words:?}", v.name);
            }
            if v.required != Requirement::Optional {
                assert_eq!(v.default, None, "{} is required and has a default", v.name);
            }
        }
    }

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let help = help_text();
        assert_eq!(help.lines().count(), 2 * VARIABLES.len() + 1, "{help}");
        assert!(
            help.contains("  KINESIS_MAX_RECORDS_PER_SECOND: number, default 1000\n      pacing"),
            "{help}"
        );
        assert!(help.contains("  BCRYPT_SALT: bcrypt salt, required\n"), "{help}");
        assert!(help.contains("  S3_RESOURCE: text, required unless IGNORE_CACHE\n"), "{help}");
        assert!(help.lines().all(|l| l.len() <= 100), "clap would wrap a line: {help}");
    }
}
