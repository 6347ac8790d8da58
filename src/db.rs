//! Database connections shared by the source and the enrichment stages: TLS modes,
//! connect and statement timeouts, retries of transient failures, and error text that
//! never echoes a row value or a bound parameter.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::Connection as _;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode};

use crate::config::{DbSettings, SslMode};
use crate::retry::{RetryCount, RetryPolicy, retry};

/// A database failure, already scrubbed of values.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    /// What went wrong, with quoted values and long digit runs removed.
    pub message: String,
    /// Whether trying again may help (connection loss, timeouts, pool exhaustion).
    pub transient: bool,
}

impl DbError {
    /// Wraps a driver error: keeps its kind and SQLSTATE, scrubs its text.
    pub fn from_sqlx(err: &sqlx::Error) -> Self {
        let transient = matches!(
            err,
            sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
        ) || matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| is_transient_sqlstate(&c)));
        let message = match err {
            sqlx::Error::Database(db) => format!(
                "database error{}: {}",
                db.code().map(|c| format!(" {c}")).unwrap_or_default(),
                scrub(db.message())
            ),
            sqlx::Error::ColumnDecode { index, .. } => {
                format!("cannot decode column {index} (an unexpected type or an invalid value)")
            }
            other if other.to_string().contains(CLEARTEXT_REFUSED) => CLEARTEXT_REFUSED_TEXT.to_string(),
            other => scrub(&other.to_string()),
        };
        Self { message, transient }
    }

    /// A statement that did not finish within the statement timeout.
    pub(crate) fn timed_out(after: Duration) -> Self {
        Self { message: format!("statement timed out after {}s", after.as_secs()), transient: true }
    }
}

/// SQLSTATEs worth a retry: connection failures, serialization, admin shutdown, lock
/// waits, MySQL's "server has gone away" family.
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("40")
        || code == "57P01"
        || code == "57P02"
        || code == "57P03"
        || code == "53300"
}

/// Removes what a database message may echo: quoted values and runs of 5+ digits
/// (barcodes, patron ids, keys), keeping the message's shape for debugging.
pub(crate) fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                // Skip to the matching quote (or the end), leaving a marker.
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
                out.push(c);
                out.push('…');
                out.push(c);
            }
            d if d.is_ascii_digit() => {
                let mut run = String::from(d);
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_digit() {
                        run.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if run.len() >= 5 { out.push_str("#####") } else { out.push_str(&run) }
            }
            other => out.push(other),
        }
    }
    out
}

/// Runs a query future under the statement timeout, scrubbing its error.
pub(crate) async fn with_timeout<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(DbError::from_sqlx(&e)),
        Err(_) => Err(DbError::timed_out(timeout)),
    }
}

/// Checks, for `check`, that the result column `name` of a prepared statement decodes as
/// `T`, the type the run reads it as (a query that matches nothing has no row whose
/// values could show a wrong type).
pub(crate) fn expect_column<DB, T>(columns: &[DB::Column], name: &str) -> Result<(), DbError>
where
    DB: sqlx::Database,
    T: sqlx::Type<DB>,
{
    use sqlx::{Column as _, TypeInfo as _};
    let column = columns.iter().find(|c| c.name() == name).ok_or_else(|| DbError {
        message: format!("the statement returns no column {name}"),
        transient: false,
    })?;
    if T::compatible(column.type_info()) {
        Ok(())
    } else {
        Err(DbError {
            message: format!(
                "column {name} is {}, which a run cannot read as {}",
                column.type_info().name(),
                T::type_info().name()
            ),
            transient: false,
        })
    }
}

/// Prefixes a database error with what was being done (`check` names the statement).
pub(crate) fn context(what: &str) -> impl Fn(DbError) -> DbError + '_ {
    move |e| DbError { message: format!("{what}: {}", e.message), transient: e.transient }
}

/// What a database connection negotiated: encrypted or not, the TLS version, and (from
/// the configured mode, which the driver enforces) what was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsReport {
    /// The configured `*_DB_SSLMODE`.
    pub mode: SslMode,
    /// Whether the session is encrypted; `None` when the server cannot say (Redshift under
    /// `prefer`).
    pub encrypted: Option<bool>,
    /// The protocol version the server reports (`TLSv1.3`), when it reports one.
    pub version: Option<String>,
}

impl TlsReport {
    /// One phrase for `check` and the start-of-run warning, e.g. `TLSv1.3, certificate and
    /// host name verified (verify-full)` or `off, the server offered none (prefer)`.
    pub fn describe(&self) -> String {
        let mode = self.mode.name();
        let version = self.version.as_deref().unwrap_or("TLS (version not reported)");
        match (self.encrypted, self.mode) {
            (Some(false), SslMode::Disable) => format!("off ({mode})"),
            (Some(false), _) => format!("off, the server offered none ({mode})"),
            (None, _) => format!("unknown, the server does not report it ({mode})"),
            (Some(true), SslMode::VerifyFull) => {
                format!("{version}, certificate and host name verified ({mode})")
            }
            (Some(true), SslMode::VerifyCa) => {
                format!("{version}, certificate verified, host name not ({mode})")
            }
            (Some(true), _) => format!("{version}, not verified ({mode})"),
        }
    }

    /// The report as JSON, for `check --format json`.
    pub fn to_json(&self) -> serde_json::Value {
        let encrypted = self.encrypted == Some(true);
        serde_json::json!({
            "mode": self.mode.name(),
            "encrypted": self.encrypted,
            "version": self.version,
            "certificate_verified": encrypted && self.mode.verifies(),
            "host_name_verified": encrypted && self.mode == SslMode::VerifyFull,
        })
    }

    /// What the mode alone tells: `disable` is plain, `require` and `verify-*` are TLS
    /// (version unknown), `prefer` is unknown.
    fn from_mode(mode: SslMode) -> Self {
        let encrypted = match mode {
            SslMode::Disable => Some(false),
            SslMode::Prefer => None,
            _ => Some(true),
        };
        Self { mode, encrypted, version: None }
    }

    /// Whether the connection is verified TLS (else a run warns).
    pub fn verified(&self) -> bool {
        self.encrypted == Some(true) && self.mode.verifies()
    }
}

/// What Envisionware's connection negotiated: `Ssl_version` of the session (empty when not
/// encrypted; MySQL and MariaDB,
/// <https://dev.mysql.com/doc/refman/8.0/en/server-status-variables.html#statvar_Ssl_version>).
/// When the server does not answer the question, a mode that requires TLS still tells
/// that the session is encrypted (the driver does not go on without it).
pub async fn mysql_tls(pool: &MySqlPool, mode: SslMode, timeout: Duration) -> TlsReport {
    let row = with_timeout(
        timeout,
        sqlx::query_as::<_, (String, String)>("SHOW SESSION STATUS LIKE 'Ssl_version'").fetch_optional(pool),
    )
    .await;
    match row {
        Ok(Some((_, version))) => {
            let version = Some(version).filter(|v| !v.is_empty());
            TlsReport { mode, encrypted: Some(version.is_some()), version }
        }
        _ => TlsReport::from_mode(mode),
    }
}

/// What a PostgreSQL (Sierra) or Redshift connection negotiated: `pg_stat_ssl` of the
/// session's own backend. Redshift has no `pg_stat_ssl`; its `STL_CONNECTION_LOG` records
/// each session's TLS version (`sslversion`) and is tried next. When neither answers, a
/// mode that requires TLS (`require`, `verify-*`) still tells that the session is
/// encrypted, since the driver refuses to go on without it; under `prefer` it is unknown.
pub async fn pg_tls(pool: &PgPool, mode: SslMode, timeout: Duration) -> TlsReport {
    let stat = with_timeout(
        timeout,
        sqlx::query_as::<_, (bool, Option<String>)>(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        // Unnamed, as every Redshift statement (see `pg_options`).
        .persistent(false)
        .fetch_optional(pool),
    )
    .await;
    if let Ok(Some((ssl, version))) = stat {
        return TlsReport { mode, encrypted: Some(ssl), version: version.filter(|v| !v.is_empty()) };
    }
    // Redshift: https://docs.aws.amazon.com/redshift/latest/dg/r_STL_CONNECTION_LOG.html
    // (a user sees its own sessions' rows; the newest row of this backend's pid is this
    // session's, as a pid is reused only by a later session).
    let log = with_timeout(
        timeout,
        sqlx::query_as::<_, (Option<String>,)>(
            "SELECT TRIM(sslversion) FROM stl_connection_log WHERE pid = pg_backend_pid() ORDER BY recordtime DESC LIMIT 1",
        )
        .persistent(false)
        .fetch_optional(pool),
    )
    .await;
    match log {
        Ok(Some((version,))) => {
            let version = version.filter(|v| !v.is_empty());
            TlsReport { mode, encrypted: Some(version.is_some()), version }
        }
        _ => TlsReport::from_mode(mode),
    }
}

/// Logs one WARN line for a database whose connection is not verified TLS, saying what it
/// negotiated and which variable to change.
pub fn warn_if_unverified(database: &str, variable_stem: &str, report: &TlsReport) {
    if report.verified() {
        return;
    }
    tracing::warn!(
        database,
        tls = %report.describe(),
        "database connection not verified: the password and every value can be read or changed on the way; set {variable_stem}_SSLMODE=verify-full ({variable_stem}_SSLROOTCERT for a CA of its own)"
    );
}

/// Prepared statements Sierra keeps per connection. A run uses two; the cache closes the
/// least recently used one beyond this, so they never pile up on a long-lived connection
/// (with the cache off, sqlx would allocate a new named statement for every persistent
/// query and never close it).
pub(crate) const SIERRA_STATEMENT_CACHE: usize = 16;

/// Connection options for Envisionware (MySQL/MariaDB).
pub(crate) fn mysql_options(db: &DbSettings) -> MySqlConnectOptions {
    let mut opts = MySqlConnectOptions::new()
        .host(&db.host)
        .port(db.port)
        .username(&db.user)
        .password(db.password.expose_secret())
        .database(&db.database)
        .charset("utf8mb4")
        // Leave the server's time zone and SQL mode alone: pcrDateTime is a naive local
        // time and NOW() must be the server's own clock.
        .timezone(None)
        .pipes_as_concat(false)
        .no_engine_substitution(false)
        // A server may ask for the password in clear text (mysql_clear_password, e.g. for
        // PAM or LDAP accounts): sent only over verified TLS; otherwise the driver refuses
        // the request and `connect_mysql` says which variable to change.
        .enable_cleartext_plugin(db.ssl_mode.verifies())
        .ssl_mode(match db.ssl_mode {
            SslMode::Disable => MySqlSslMode::Disabled,
            SslMode::Prefer => MySqlSslMode::Preferred,
            SslMode::Require => MySqlSslMode::Required,
            SslMode::VerifyCa => MySqlSslMode::VerifyCa,
            SslMode::VerifyFull => MySqlSslMode::VerifyIdentity,
        });
    if let Some(ca) = &db.ssl_root_cert {
        opts = opts.ssl_ca(ca);
    }
    opts
}

/// Connection options for Sierra (PostgreSQL) or, with `redshift`, for Redshift, which
/// rejects `extra_float_digits` and server-side statement options at startup.
///
/// Sierra keeps a bounded statement cache ([`SIERRA_STATEMENT_CACHE`]). Redshift's has
/// none and every Redshift query is sent unnamed (`persistent(false)`): its IN-lists
/// change with the batch, and a persistent query without a cache would leave a named
/// statement behind on the connection each time.
pub fn pg_options(db: &DbSettings, redshift: bool, statement_timeout: Duration) -> PgConnectOptions {
    let mut opts = PgConnectOptions::new_without_pgpass()
        .host(&db.host)
        .port(db.port)
        .username(&db.user)
        .password(db.password.expose_secret())
        .database(&db.database)
        .ssl_mode(match db.ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
    if let Some(ca) = &db.ssl_root_cert {
        opts = opts.ssl_root_cert(ca);
    }
    if redshift {
        opts = opts.extra_float_digits(None).statement_cache_capacity(0);
    } else {
        opts = opts
            .statement_cache_capacity(SIERRA_STATEMENT_CACHE)
            .application_name("pc-reserve-poller")
            .options([("statement_timeout", format!("{}", statement_timeout.as_millis()))]);
    }
    opts
}

/// Installs ring as the process-wide rustls crypto provider (once).
///
/// The AWS SDK links aws-lc-rs and sqlx links ring, so rustls cannot pick a default by
/// itself; sqlx's `verify-ca` verifier asks for the default and would panic without one.
pub(crate) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error means another provider is already installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Opens a small MySQL pool, retrying transient connection failures.
pub async fn connect_mysql(
    db: &DbSettings,
    connect_timeout: Duration,
    policy: &RetryPolicy,
) -> Result<MySqlPool, DbError> {
    install_crypto_provider();
    let opts = mysql_options(db);
    // Connecting comes before a run's reading: its retries are logged, not counted.
    retry(
        policy,
        &RetryCount::default(),
        "Envisionware connect",
        |e: &DbError| e.transient,
        || {
            let opts = opts.clone();
            async move {
                // One plain connection first: a refused or rejected connection answers at
                // once with its cause, where the pool would keep trying until its timeout
                // and then report only that it timed out.
                let probe = with_timeout(connect_timeout, MySqlConnection::connect_with(&opts)).await?;
                let _ = probe.close().await;
                MySqlPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(connect_timeout)
                    .connect_with(opts)
                    .await
                    .map_err(|e| DbError::from_sqlx(&e))
            }
        },
    )
    .await
}

/// What sqlx-mysql says when a server asks for `mysql_clear_password` and the plugin is
/// off (`protocol/connect/auth_switch.rs`).
const CLEARTEXT_REFUSED: &str = "mysql_cleartext_plugin disabled";

/// Said when the server asked for the password in clear text over a connection that is
/// not verified TLS (only MySQL's driver can be told to refuse).
const CLEARTEXT_REFUSED_TEXT: &str = "the server asked for the password in clear text (mysql_clear_password), which is sent only over verified TLS: refused; set ENVISIONWARE_DB_SSLMODE=verify-full (ENVISIONWARE_DB_SSLROOTCERT for the server's CA)";

/// Opens a small PostgreSQL pool, retrying transient connection failures.
pub async fn connect_pg(
    what: &str,
    opts: PgConnectOptions,
    connect_timeout: Duration,
    policy: &RetryPolicy,
) -> Result<PgPool, DbError> {
    install_crypto_provider();
    // Connecting comes before a run's reading: its retries are logged, not counted.
    retry(
        policy,
        &RetryCount::default(),
        what,
        |e: &DbError| e.transient,
        || {
            let opts = opts.clone();
            async move {
                // As for MySQL: the cause of a refused connection, at once.
                let probe = with_timeout(connect_timeout, PgConnection::connect_with(&opts)).await?;
                let _ = probe.close().await;
                PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(connect_timeout)
                    .connect_with(opts)
                    .await
                    .map_err(|e| DbError::from_sqlx(&e))
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_quoted_values_and_long_numbers() {
        let s = scrub(r#"invalid input syntax for type bigint: "2333301234567" near 'b25555' at 12"#);
        assert_eq!(s, r#"invalid input syntax for type bigint: "…" near '…' at 12"#);
        assert_eq!(scrub("key 1234567 of 42"), "key ##### of 42");
    }
}
