//! Sierra and Redshift as they really are, against the local stack: Redshift columns
//! that are not text, prepared statements on long-lived connections, and `check`
//! running the statements of a run.

use std::time::Duration;

use pc_reserve_poller::db::pg_options;
use pc_reserve_poller::enrich::redshift::Redshift;
use pc_reserve_poller::enrich::sierra::Sierra;
use pc_reserve_poller::enrich::{GeoDirectory as _, PatronDirectory as _};
use pc_reserve_poller::retry::RetryPolicy;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, Executor as _};

use crate::binary::{run_bin, tempdir, write_config};
use crate::support::{TestEnv, many_rows, p, row};

#[tokio::test]
async fn redshift_postal_codes_and_geoids_of_other_types_reach_the_records_as_text() {
    let env = TestEnv::new().await;
    // A cluster whose postal_code is an integer and geoid a number.
    let table = format!("patron_info_{}_rs", env.name);
    let mut rs = sqlx::PgConnection::connect(&env.redshift_url()).await.unwrap();
    rs.execute(format!("DROP TABLE {table}").as_str()).await.unwrap();
    rs.execute(
        format!("CREATE TABLE {table} (patron_id VARCHAR(64), postal_code INTEGER, geoid NUMERIC(11, 0))")
            .as_str(),
    )
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {table} (patron_id, postal_code, geoid) VALUES ($1, 10451, 36005000100)"
    ))
    .bind(p("1009"))
    .execute(&mut rs)
    .await
    .unwrap();
    env.insert_patron(1009, "25555000000009", Some(10), Some(1), Some("bx")).await;
    env.insert_rows(&[row(1, Some("25555000000009"), "2024-06-01 10:00:00")]).await;
    let s = env.run(&[]).await.unwrap();
    assert_eq!(s.records(), 1);
    let sent = env.sent().await;
    assert_eq!(
        (sent[0].postal_code.as_deref(), sent[0].geoid.as_deref()),
        (Some("10451"), Some("36005000100"))
    );
    env.cleanup().await;
}

/// A pool of exactly one connection, so that counting `pg_prepared_statements` after the
/// lookups counts what they left on the connection they used.
async fn one_connection(options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new().max_connections(1).min_connections(1).connect_with(options).await.unwrap()
}

/// Named prepared statements open on the pool's one connection (the count itself is sent
/// unnamed, so it adds none).
async fn prepared_statements(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_prepared_statements")
        .persistent(false)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// 40 Sierra lookups, each finding its patron (so both statements run every time).
async fn forty_sierra_lookups(pool: PgPool) {
    let sierra = Sierra::new(pool, Duration::from_secs(30), RetryPolicy::none());
    for k in 0..40 {
        let barcode = format!("2333300000{k:04}");
        let found = sierra.patrons_by_barcode(std::slice::from_ref(&barcode)).await.unwrap();
        assert_eq!(found.len(), 1, "lookup {k}");
    }
}

#[tokio::test]
async fn prepared_statements_do_not_pile_up_on_a_long_lived_connection() {
    let env = TestEnv::new().await;
    for k in 0..40 {
        env.insert_patron(5000 + k, &format!("2333300000{k:04}"), Some(10), None, None).await;
    }
    let settings = env.settings(&[]).await;
    // Sierra as a run connects to it: its two statements, prepared once and reused.
    let sierra_options = pg_options(&settings.sierra, false, settings.statement_timeout);
    let pool = one_connection(sierra_options.clone()).await;
    forty_sierra_lookups(pool.clone()).await;
    assert_eq!(prepared_statements(&pool).await, 2, "Sierra keeps its two statements");
    pool.close().await;
    // The hazard this guards against: the same persistent queries with the driver's
    // statement cache off leave a new named statement behind every time.
    let pool = one_connection(sierra_options.statement_cache_capacity(0)).await;
    forty_sierra_lookups(pool.clone()).await;
    assert_eq!(prepared_statements(&pool).await, 80, "two per lookup without a cache");
    pool.close().await;

    // Redshift: IN-lists of every length, all sent unnamed; nothing stays behind.
    let pool = one_connection(pg_options(&settings.redshift, true, settings.statement_timeout)).await;
    let redshift = Redshift::new(
        pool.clone(),
        format!("patron_info_{}_rs", env.name),
        Duration::from_secs(30),
        RetryPolicy::none(),
    );
    for n in 1..=40 {
        let ids: Vec<String> = (0..n).map(|k| p(&k.to_string())).collect();
        redshift.geo_by_patron(&ids).await.unwrap();
    }
    assert_eq!(prepared_statements(&pool).await, 0, "Redshift keeps no named statement");
    pool.close().await;
    env.cleanup().await;
}

fn lines(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn check_runs_the_statements_of_a_run_and_shows_a_type_schema_or_permission_problem() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    let dir = tempdir();
    let config = write_config(&env, &dir, &[]).await;
    let config = config.to_str().unwrap();
    let out = run_bin(&["-c", config, "check"], &env, None);
    let stdout = lines(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", lines(&out.stderr));
    let table = format!("patron_info_{}_rs", env.name);
    for (name, text) in [
        (
            "Envisionware",
            "connected; the keyset read and the retention query run, their columns decode".to_string(),
        ),
        (
            "Sierra",
            "connected; the phrase_entry and patron_view lookups run, their columns decode".to_string(),
        ),
        ("Redshift", format!("connected; the {table} lookup runs, its columns decode")),
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("✓ {name}"))
                && l.ends_with(&format!("{text}; TLS: off (disable)"))),
            "{name}: {stdout}"
        );
    }
    // Nothing was read as a reservation or sent.
    assert!(env.sent().await.is_empty());
    assert_eq!(env.cursor_object().await, None);

    // A Redshift user without SELECT on the table: a permission problem, shown by check.
    let role = format!("{}_reader", env.name);
    let mut rs = sqlx::PgConnection::connect(&env.redshift_url()).await.unwrap();
    rs.execute(format!("CREATE ROLE {role} LOGIN PASSWORD 'no-grants-here'").as_str()).await.unwrap();
    let out = run_bin(
        &[
            "-c",
            config,
            "--set",
            &format!("REDSHIFT_DB_USER={role}"),
            "--set",
            "REDSHIFT_DB_PASSWORD=no-grants-here",
            "check",
        ],
        &env,
        None,
    );
    rs.execute(format!("DROP ROLE {role}").as_str()).await.unwrap();
    let stdout = lines(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}{}", lines(&out.stderr));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("✗ Redshift") && l.contains(&format!("{table}: database error 42501"))),
        "{stdout}"
    );

    // Sierra's patron ids become 4-byte integers (a run reads 8-byte ones), Redshift
    // loses its geoid column, Envisionware its pcrArea: each is a cross, naming the
    // column, and exit code 7.
    let mut sierra = sqlx::PgConnection::connect(&env.sierra_url()).await.unwrap();
    sierra.execute("ALTER TABLE sierra_view.patron_view ALTER COLUMN id TYPE INTEGER").await.unwrap();
    rs.execute(format!("ALTER TABLE {table} RENAME COLUMN geoid TO geo_id").as_str()).await.unwrap();
    let mut ew = sqlx::MySqlConnection::connect(&env.mysql_url()).await.unwrap();
    ew.execute("ALTER TABLE strad_bci CHANGE pcrArea pcr_area VARCHAR(255)").await.unwrap();
    let out = run_bin(&["-c", config, "check"], &env, None);
    let stdout = lines(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}{}", lines(&out.stderr));
    let cross = |name: &str, part: &str| {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("✗ {name}")) && l.contains(part)),
            "{name} should fail with {part}: {stdout}"
        );
    };
    cross("Sierra", "patron_view lookup: column id is INT4, which a run cannot read as INT8");
    cross("Redshift", &format!("{table}: database error 42703"));
    cross("Envisionware", "keyset read: database error 42S22");
    env.cleanup().await;
}
