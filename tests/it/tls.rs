//! TLS to Sierra and Redshift against a PostgreSQL server of the tests' own with a
//! throwaway CA (`scripts/local-stack/tls-postgres.sh`, started here when it is not running): every
//! `sslmode`, the right and a wrong host name, the right and an untrusted CA; and a whole
//! run whose Redshift connection uses the default `verify-full`. Envisionware's `require`
//! is checked against the local MariaDB, which offers no TLS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pc_reserve_poller::config::{DbSettings, SslMode};
use pc_reserve_poller::db::{DbError, connect_mysql, connect_pg, pg_options};
use pc_reserve_poller::retry::RetryPolicy;
use secrecy::SecretString;
use sqlx::{Connection as _, Executor as _};

use crate::support::{TestEnv, p, row};

/// The TLS server's port and CA files.
struct TlsServer {
    port: u16,
    ca: PathBuf,
    other_ca: PathBuf,
}

/// Starts the TLS PostgreSQL server (idempotent; quick when it already runs) and reads its address.
fn tls_server() -> TlsServer {
    started_tls_server("tls-postgres.sh", "PG")
}

/// Runs `scripts/local-stack/<script> up` (idempotent; quick when the server already
/// runs) and reads the port and CA files it exports as `PCR_TEST_TLS_<KIND>_*`.
fn started_tls_server(script: &str, kind: &str) -> TlsServer {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-stack").join(script);
    let out = crate::process::output_within(Command::new(path).arg("up"), Duration::from_secs(300));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{script} up failed: {}", String::from_utf8_lossy(&out.stderr));
    let var = |suffix: &str| -> String {
        let name = format!("PCR_TEST_TLS_{kind}_{suffix}");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("{name} not in {text}"))
            .to_string()
    };
    TlsServer { port: var("PORT").parse().unwrap(), ca: var("CA").into(), other_ca: var("OTHER_CA").into() }
}

fn db(server: &TlsServer, host: &str, mode: SslMode, ca: Option<&Path>) -> DbSettings {
    DbSettings {
        host: host.into(),
        port: server.port,
        database: "postgres".into(),
        user: "postgres".into(),
        password: SecretString::from("unused".to_string()),
        ssl_mode: mode,
        ssl_root_cert: ca.map(Path::to_path_buf),
    }
}

/// Connects as Sierra (or Redshift) would; answers whether the session is encrypted.
async fn connect(settings: &DbSettings, redshift: bool) -> Result<bool, DbError> {
    let opts = pg_options(settings, redshift, Duration::from_secs(30));
    let pool = connect_pg("TLS test", opts, Duration::from_secs(10), &RetryPolicy::none()).await?;
    let (ssl,): (bool,) = sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .map_err(|e| DbError::from_sqlx(&e))?;
    pool.close().await;
    Ok(ssl)
}

/// Why a refusal happened: a connection refused at the TCP level, a server without TLS or
/// a wrong password would also give an error, so the reason must be the certificate's.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// The chain does not lead to a trusted CA.
    UntrustedCa,
    /// The certificate does not name the host connected to.
    WrongName,
}

fn assert_refused(got: Result<bool, DbError>, why: Refusal, what: &str) {
    let err = match got {
        Ok(ssl) => panic!("{what}: connected (ssl {ssl}) where a {why:?} refusal was due"),
        Err(e) => e,
    };
    let text = err.message.to_lowercase();
    assert!(text.contains("certificate"), "{what}: not a certificate error: {err}");
    let reason = match why {
        Refusal::UntrustedCa => text.contains("unknownissuer") || text.contains("unknown issuer"),
        Refusal::WrongName => text.contains("not valid for name") || text.contains("notvalidforname"),
    };
    assert!(reason, "{what}: refused, but not for {why:?}: {err}");
}

#[tokio::test]
async fn verify_full_accepts_the_names_in_the_certificate_and_refuses_others() {
    let s = tls_server();
    for redshift in [false, true] {
        for host in ["localhost", "127.0.0.1"] {
            let got = connect(&db(&s, host, SslMode::VerifyFull, Some(&s.ca)), redshift).await;
            assert!(got.as_ref().is_ok_and(|ssl| *ssl), "{host} (redshift {redshift}): {got:?}");
        }
        // 127.0.0.2 reaches the same server but is not in the certificate.
        let got = connect(&db(&s, "127.0.0.2", SslMode::VerifyFull, Some(&s.ca)), redshift).await;
        assert_refused(got, Refusal::WrongName, "verify-full, 127.0.0.2");
        // A CA that did not sign the server's certificate, and the system roots alone.
        let got = connect(&db(&s, "localhost", SslMode::VerifyFull, Some(&s.other_ca)), redshift).await;
        assert_refused(got, Refusal::UntrustedCa, "verify-full, another CA");
        let got = connect(&db(&s, "localhost", SslMode::VerifyFull, None), redshift).await;
        assert_refused(got, Refusal::UntrustedCa, "verify-full, system roots");
    }
}

#[tokio::test]
async fn verify_ca_checks_the_chain() {
    let s = tls_server();
    let got = connect(&db(&s, "localhost", SslMode::VerifyCa, Some(&s.ca)), false).await;
    assert!(got.as_ref().is_ok_and(|ssl| *ssl), "{got:?}");
    let got = connect(&db(&s, "localhost", SslMode::VerifyCa, Some(&s.other_ca)), false).await;
    assert_refused(got, Refusal::UntrustedCa, "verify-ca, another CA");
    // Stricter than libpq today: sqlx 0.8's verify-ca verifier recognises only rustls's
    // older "not valid for name" error, so a name mismatch is still refused. Failing
    // closed is safe; this assertion flags the day it changes.
    let got = connect(&db(&s, "127.0.0.2", SslMode::VerifyCa, Some(&s.ca)), false).await;
    assert_refused(got, Refusal::WrongName, "verify-ca, 127.0.0.2");
}

#[tokio::test]
async fn require_encrypts_without_verifying_and_disable_does_not_encrypt() {
    let s = tls_server();
    for mode in [SslMode::Require, SslMode::Prefer] {
        let got = connect(&db(&s, "127.0.0.2", mode, Some(&s.other_ca)), false).await;
        assert!(got.as_ref().is_ok_and(|ssl| *ssl), "{mode:?}: {got:?}");
    }
    let got = connect(&db(&s, "127.0.0.1", SslMode::Disable, None), true).await;
    assert!(got.as_ref().is_ok_and(|ssl| !*ssl), "disable: {got:?}");
}

#[tokio::test]
async fn envisionware_require_refuses_a_server_without_tls() {
    let env = TestEnv::new().await;
    let settings = env.settings(&[("ENVISIONWARE_DB_SSLMODE", Some("require"))]).await;
    let err = connect_mysql(&settings.envisionware, Duration::from_secs(5), &RetryPolicy::none())
        .await
        .unwrap_err();
    assert!(err.message.to_lowercase().contains("tls") || err.message.contains("SSL"), "{err}");
    for mode in ["disable", "prefer"] {
        let settings = env.settings(&[("ENVISIONWARE_DB_SSLMODE", Some(mode))]).await;
        connect_mysql(&settings.envisionware, Duration::from_secs(5), &RetryPolicy::none()).await.unwrap();
    }
    env.cleanup().await;
}

/// A whole run with Sierra and Redshift on the TLS server: Sierra on `verify-full` with the
/// CA bundle, Redshift on its default mode (no `REDSHIFT_DB_SSLMODE`), which must verify.
#[tokio::test]
async fn a_run_verifies_sierra_and_redshift_by_default_for_redshift() {
    let s = tls_server();
    let env = TestEnv::new().await;
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=require", s.port);
    let mut pg = sqlx::PgConnection::connect(&admin).await.unwrap();
    let (sierra_db, rs_db) = (format!("{}_sierra", env.name), format!("{}_rs", env.name));
    for d in [&sierra_db, &rs_db] {
        pg.execute(format!("CREATE DATABASE {d}").as_str()).await.unwrap();
    }
    let url = |d: &str| format!("postgres://postgres@127.0.0.1:{}/{d}?sslmode=require", s.port);
    let mut sierra = sqlx::PgConnection::connect(&url(&sierra_db)).await.unwrap();
    for sql in crate::support::statements(include_str!("../../scripts/local-stack/sql/sierra.sql")) {
        sierra.execute(sql.as_str()).await.unwrap();
    }
    sierra
        .execute("INSERT INTO sierra_view.phrase_entry (record_id, index_tag, index_entry) VALUES (77, 'b', '23333000000077')")
        .await
        .unwrap();
    sierra
        .execute("INSERT INTO sierra_view.patron_view (id, record_num, barcode, ptype_code, pcode3, home_library_code) VALUES (77, 1, '23333000000077', 3, 4, 'mm')")
        .await
        .unwrap();
    let mut rs = sqlx::PgConnection::connect(&url(&rs_db)).await.unwrap();
    let table = format!("patron_info_{rs_db}");
    let rs_sql = include_str!("../../scripts/local-stack/sql/redshift.sql")
        .replace("{{PATRON_INFO_TABLE}}", &table)
        .replace("{{PC_RESERVE_TABLE}}", &format!("pc_reserve_{rs_db}"));
    for sql in crate::support::statements(&rs_sql) {
        rs.execute(sql.as_str()).await.unwrap();
    }
    sqlx::query(&format!("INSERT INTO {table} (patron_id, postal_code, geoid) VALUES ($1, '10018', '1')"))
        .bind(p("77"))
        .execute(&mut rs)
        .await
        .unwrap();
    env.insert_rows(&[row(1, Some("23333000000077"), "2024-06-01 10:00:00")]).await;

    let port = s.port.to_string();
    let ca = s.ca.to_str().unwrap().to_string();
    let other = s.other_ca.to_str().unwrap().to_string();
    let tls = |rs_ca: &str| -> Vec<(&'static str, Option<String>)> {
        vec![
            ("SIERRA_DB_HOST", Some("localhost".into())),
            ("SIERRA_DB_USER", Some("postgres".into())),
            ("REDSHIFT_DB_USER", Some("postgres".into())),
            ("SIERRA_DB_PORT", Some(port.clone())),
            ("SIERRA_DB_SSLMODE", Some("verify-full".into())),
            ("SIERRA_DB_SSLROOTCERT", Some(ca.clone())),
            ("REDSHIFT_DB_HOST", Some("localhost".into())),
            ("REDSHIFT_DB_PORT", Some(port.clone())),
            ("REDSHIFT_DB_SSLMODE", None),
            ("REDSHIFT_DB_SSLROOTCERT", Some(rs_ca.to_string())),
        ]
    };
    let as_changes =
        |v: &[(&'static str, Option<String>)]| -> Vec<(&'static str, Option<String>)> { v.to_vec() };

    // An untrusted CA for Redshift: its default mode verifies, so the run stops there.
    let bad = as_changes(&tls(&other));
    let bad: Vec<(&str, Option<&str>)> = bad.iter().map(|(k, v)| (*k, v.as_deref())).collect();
    let err = env.run(&bad).await.unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("Redshift: cannot connect"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "refused for its certificate: {text}");
    assert!(env.sent().await.is_empty());

    let good = as_changes(&tls(&ca));
    let good: Vec<(&str, Option<&str>)> = good.iter().map(|(k, v)| (*k, v.as_deref())).collect();
    let summary = env.run(&good).await.unwrap();
    assert_eq!(summary.reservations, 1);
    let sent = env.sent().await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].patron_id, p("77"));
    assert_eq!(sent[0].postal_code.as_deref(), Some("10018"), "Redshift answered over verified TLS");

    drop((sierra, rs));
    for d in [&sierra_db, &rs_db] {
        let _ = pg.execute(format!("DROP DATABASE IF EXISTS {d} WITH (FORCE)").as_str()).await;
    }
    env.cleanup().await;
}

/// What `check` reports and a run warns about: the session's TLS as the server sees it
/// (`pg_stat_ssl`), and what was verified as the mode says.
#[tokio::test]
async fn the_negotiated_tls_is_read_from_the_server_and_described() {
    use pc_reserve_poller::db::pg_tls;
    let s = tls_server();
    let cases = [
        (SslMode::VerifyFull, "localhost", "certificate and host name verified (verify-full)", true),
        (SslMode::VerifyCa, "localhost", "certificate verified, host name not (verify-ca)", true),
        (SslMode::Require, "127.0.0.2", "not verified (require)", false),
        (SslMode::Prefer, "127.0.0.2", "not verified (prefer)", false),
    ];
    for (mode, host, says, verified) in cases {
        let settings = db(&s, host, mode, Some(&s.ca));
        let opts = pg_options(&settings, false, Duration::from_secs(30));
        let pool = connect_pg("TLS test", opts, Duration::from_secs(10), &RetryPolicy::none()).await.unwrap();
        let report = pg_tls(&pool, mode, Duration::from_secs(10)).await;
        pool.close().await;
        assert_eq!(report.encrypted, Some(true), "{mode:?}");
        let version = report.version.clone().expect("the server names the TLS version");
        assert!(version == "TLSv1.3" || version == "TLSv1.2", "{version}");
        assert_eq!(report.describe(), format!("{version}, {says}"));
        assert_eq!(report.verified(), verified, "{mode:?}");
        let json = report.to_json();
        assert_eq!(json["certificate_verified"], verified, "{mode:?}");
        assert_eq!(json["host_name_verified"], mode == SslMode::VerifyFull, "{mode:?}");
    }
    let settings = db(&s, "127.0.0.1", SslMode::Disable, None);
    let opts = pg_options(&settings, true, Duration::from_secs(30));
    let pool = connect_pg("TLS test", opts, Duration::from_secs(10), &RetryPolicy::none()).await.unwrap();
    let report = pg_tls(&pool, SslMode::Disable, Duration::from_secs(10)).await;
    pool.close().await;
    assert_eq!(report.describe(), "off (disable)");
    assert!(!report.verified());
}

/// Reads what is there within 5 s; 0 at the end, on an error or a timeout.
async fn read_within(sock: &mut tokio::net::TcpStream, buf: &mut [u8]) -> usize {
    use tokio::io::AsyncReadExt as _;
    tokio::time::timeout(Duration::from_secs(5), sock.read(buf)).await.ok().and_then(Result::ok).unwrap_or(0)
}

/// A fake MySQL server on loopback without TLS: its greeting offers `plugin`, and after
/// the client's answer it either switches to `mysql_clear_password` (`switch`) or refuses.
/// Returns its port and what it received from the client.
async fn fake_mysql(plugin: &'static str, switch: bool) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
    use tokio::io::AsyncWriteExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let packet = |seq: u8, payload: &[u8]| -> Vec<u8> {
            let len = payload.len() as u32;
            [&len.to_le_bytes()[..3], &[seq], payload].concat()
        };
        // Protocol 10 greeting (MySQL 8.0.18's, from sqlx-mysql's own test) with the SSL
        // capability (0x0800) removed and the plugin replaced.
        let mut greeting = b"\n8.0.18\x00\x19\x00\x00\x00\x114aB0c\x06g\x00\xff\xf7\xff\x02\x00\xff\xc7\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00tL\x03s\x0f[4\rl4. \x00".to_vec();
        greeting.extend_from_slice(plugin.as_bytes());
        greeting.push(0);
        sock.write_all(&packet(0, &greeting)).await.unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        let n = read_within(&mut sock, &mut buf).await;
        received.extend_from_slice(&buf[..n]);
        if switch {
            let mut auth_switch = b"\xfemysql_clear_password\x00".to_vec();
            auth_switch.extend_from_slice(b"abcdefghijabcdefghij\x00");
            let _ = sock.write_all(&packet(2, &auth_switch)).await;
        } else {
            let _ = sock.write_all(&packet(2, b"\xff\x15\x04#28000Access denied")).await;
        }
        // Whatever the client sends next (a cleartext password, if it obeyed).
        loop {
            let n = read_within(&mut sock, &mut buf).await;
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
        received
    });
    (port, task)
}

/// The driver can be told to refuse `mysql_clear_password` when asked by an auth switch
/// (sqlx-mysql's `enable_cleartext_plugin`): the poller enables it only for `verify-ca`
/// and `verify-full`, so over plain TCP the password is never sent and the error names
/// the variable to change. A server that names `mysql_clear_password` in its very first
/// greeting is answered with the password by sqlx-mysql 0.8 whatever the options (its
/// `scramble` of the greeting's plugin does not look at them): the second half pins that
/// limit of the driver, which only `verify-full` avoids (the greeting then comes over TLS
/// from a server whose certificate was checked).
#[tokio::test]
async fn envisionware_refuses_a_cleartext_password_request_over_plain_tcp() {
    let password = "s3cret-Password-77";
    let settings = |port: u16, mode: SslMode| DbSettings {
        host: "127.0.0.1".into(),
        port,
        database: "envisionware".into(),
        user: "pcr".into(),
        password: SecretString::from(password.to_string()),
        ssl_mode: mode,
        ssl_root_cert: None,
    };
    for mode in [SslMode::Prefer, SslMode::Disable] {
        let (port, server) = fake_mysql("mysql_native_password", true).await;
        let err = connect_mysql(&settings(port, mode), Duration::from_secs(5), &RetryPolicy::none())
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            "the server asked for the password in clear text (mysql_clear_password), which is sent only over verified TLS: refused; set ENVISIONWARE_DB_SSLMODE=verify-full (ENVISIONWARE_DB_SSLROOTCERT for the server's CA)",
            "{mode:?}"
        );
        assert!(!err.transient);
        let received = tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
        assert!(
            !received.windows(password.len()).any(|w| w == password.as_bytes()),
            "{mode:?}: the password reached the server"
        );
    }
    // The driver's limit: a greeting that names mysql_clear_password gets the password.
    let (port, server) = fake_mysql("mysql_clear_password", false).await;
    let _ =
        connect_mysql(&settings(port, SslMode::Prefer), Duration::from_secs(5), &RetryPolicy::none()).await;
    let received = tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
    assert!(
        received.windows(password.len()).any(|w| w == password.as_bytes()),
        "sqlx-mysql no longer sends the password to a greeting naming mysql_clear_password: update docs/security.md (Database TLS)"
    );
}

/// `check` shows what each database negotiated, and a run warns once per database whose
/// connection is not verified: here Envisionware on the local MariaDB (no TLS) under the
/// default `prefer`, Sierra with `disable`, Redshift with `require` on the TLS server.
#[tokio::test]
async fn check_shows_the_negotiated_tls_and_a_run_warns_for_each_unverified_database() {
    use crate::binary::{run_bin, tempdir, write_config};
    let s = tls_server();
    let env = TestEnv::new().await;
    let dir = tempdir();
    let port = s.port.to_string();
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=require", s.port);
    let mut pg = sqlx::PgConnection::connect(&admin).await.unwrap();
    let rs_db = format!("{}_rs", env.name);
    pg.execute(format!("CREATE DATABASE {rs_db}").as_str()).await.unwrap();
    let mut rs = sqlx::PgConnection::connect(&format!(
        "postgres://postgres@127.0.0.1:{}/{rs_db}?sslmode=require",
        s.port
    ))
    .await
    .unwrap();
    let rs_sql = include_str!("../../scripts/local-stack/sql/redshift.sql")
        .replace("{{PATRON_INFO_TABLE}}", &format!("patron_info_{rs_db}"))
        .replace("{{PC_RESERVE_TABLE}}", &format!("pc_reserve_{rs_db}"));
    for sql in crate::support::statements(&rs_sql) {
        rs.execute(sql.as_str()).await.unwrap();
    }
    let config = write_config(
        &env,
        &dir,
        &[
            ("ENVISIONWARE_DB_SSLMODE", "prefer"),
            ("SIERRA_DB_SSLMODE", "disable"),
            ("REDSHIFT_DB_HOST", "127.0.0.2"),
            ("REDSHIFT_DB_PORT", &port),
            ("REDSHIFT_DB_USER", "postgres"),
            ("REDSHIFT_DB_NAME", &rs_db),
            ("REDSHIFT_DB_SSLMODE", "require"),
        ],
    )
    .await;
    let config = config.to_str().unwrap();
    let out = run_bin(&["-c", config, "check"], &env, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line =
        |name: &str| stdout.lines().find(|l| l.starts_with(&format!("✓ {name} "))).unwrap().to_string();
    assert!(line("Envisionware").ends_with("; TLS: off, the server offered none (prefer)"), "{stdout}");
    assert!(line("Sierra").ends_with("; TLS: off (disable)"), "{stdout}");
    let redshift = line("Redshift");
    assert!(
        redshift.contains("; TLS: TLSv1.") && redshift.ends_with(", not verified (require)"),
        "{redshift}"
    );
    let out = run_bin(&["-c", config, "check", "--format", "json"], &env, None);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let envisionware = &json["checks"][2];
    assert_eq!(envisionware["name"], "Envisionware");
    assert_eq!(
        envisionware["tls"],
        serde_json::json!({"mode": "prefer", "encrypted": false, "version": null, "certificate_verified": false, "host_name_verified": false})
    );
    assert_eq!(json["checks"][4]["tls"]["encrypted"], true);

    let out = run_bin(&["-c", config, "run"], &env, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warnings: Vec<&str> =
        stderr.lines().filter(|l| l.contains("database connection not verified")).collect();
    assert_eq!(warnings.len(), 3, "{stderr}");
    for (database, variable, tls) in [
        ("Envisionware", "ENVISIONWARE_DB", "off, the server offered none (prefer)"),
        ("Sierra", "SIERRA_DB", "off (disable)"),
        ("Redshift", "REDSHIFT_DB", "not verified (require)"),
    ] {
        let warning = warnings.iter().find(|w| w.contains(&format!("database=\"{database}\""))).unwrap();
        assert!(warning.contains(" WARN "), "{warning}");
        assert!(
            warning.contains(&format!(
                "set {variable}_SSLMODE=verify-full ({variable}_SSLROOTCERT for a CA of its own)"
            )),
            "{warning}"
        );
        assert!(warning.contains(tls), "{warning}");
    }
    drop(rs);
    let _ = pg.execute(format!("DROP DATABASE IF EXISTS {rs_db} WITH (FORCE)").as_str()).await;
    std::fs::remove_dir_all(&dir).unwrap();
    env.cleanup().await;
}

/// The TLS MariaDB server's port and CA files (`scripts/local-stack/tls-mariadb.sh`,
/// started here when it is not running).
fn tls_mariadb() -> TlsServer {
    started_tls_server("tls-mariadb.sh", "MY")
}

/// Connects as Envisionware would and asks the session what it negotiated.
async fn connect_envisionware(
    server: &TlsServer,
    host: &str,
    mode: SslMode,
    ca: Option<&Path>,
) -> Result<pc_reserve_poller::db::TlsReport, DbError> {
    let settings = DbSettings {
        host: host.into(),
        port: server.port,
        database: "mysql".into(),
        user: "pcr".into(),
        password: SecretString::from("pcr-tls".to_string()),
        ssl_mode: mode,
        ssl_root_cert: ca.map(Path::to_path_buf),
    };
    let pool = connect_mysql(&settings, Duration::from_secs(10), &RetryPolicy::none()).await?;
    let report = pc_reserve_poller::db::mysql_tls(&pool, mode, Duration::from_secs(10)).await;
    pool.close().await;
    Ok(report)
}

/// Envisionware against a MariaDB of the tests' own with a throwaway CA: `verify-full`
/// with the CA bundle (`ENVISIONWARE_DB_SSLROOTCERT`) accepts the names in the certificate
/// and refuses another address of the same server, an untrusted CA and the system roots;
/// the weaker modes connect and say what they got.
#[tokio::test]
async fn envisionware_verify_full_works_with_a_ca_bundle_and_refuses_the_rest() {
    let s = tls_mariadb();
    let as_result =
        |r: Result<pc_reserve_poller::db::TlsReport, DbError>| r.map(|t| t.encrypted == Some(true));
    for host in ["localhost", "127.0.0.1"] {
        let report = connect_envisionware(&s, host, SslMode::VerifyFull, Some(&s.ca)).await.unwrap();
        let version = report.version.clone().expect("MariaDB names the TLS version");
        assert_eq!(report.describe(), format!("{version}, certificate and host name verified (verify-full)"));
        assert!(report.verified(), "{host}");
    }
    let got = connect_envisionware(&s, "127.0.0.2", SslMode::VerifyFull, Some(&s.ca)).await;
    assert_refused(as_result(got), Refusal::WrongName, "Envisionware verify-full, 127.0.0.2");
    let got = connect_envisionware(&s, "localhost", SslMode::VerifyFull, Some(&s.other_ca)).await;
    assert_refused(as_result(got), Refusal::UntrustedCa, "Envisionware verify-full, another CA");
    let got = connect_envisionware(&s, "localhost", SslMode::VerifyFull, None).await;
    assert_refused(as_result(got), Refusal::UntrustedCa, "Envisionware verify-full, system roots");
    let got = connect_envisionware(&s, "localhost", SslMode::VerifyCa, Some(&s.other_ca)).await;
    assert_refused(as_result(got), Refusal::UntrustedCa, "Envisionware verify-ca, another CA");
    let report = connect_envisionware(&s, "localhost", SslMode::VerifyCa, Some(&s.ca)).await.unwrap();
    assert!(report.describe().ends_with(", certificate verified, host name not (verify-ca)"), "{report:?}");

    for mode in [SslMode::Require, SslMode::Prefer] {
        let report = connect_envisionware(&s, "127.0.0.2", mode, Some(&s.other_ca)).await.unwrap();
        assert_eq!(report.encrypted, Some(true), "{mode:?}");
        assert!(report.describe().ends_with(&format!(", not verified ({})", mode.name())), "{report:?}");
        assert!(!report.verified());
    }
    let report = connect_envisionware(&s, "127.0.0.1", SslMode::Disable, None).await.unwrap();
    assert_eq!(report.describe(), "off (disable)");
}
