//! Nothing leaks, nothing injects: the binary at the most verbose log level and on every
//! failure path it can be pushed into prints no barcode, patron id, pcrKey, salt,
//! password or decrypted secret; an adversarial dataset goes through the whole poller
//! with every SQL value bound, yields the records bcrypt itself predicts and leaves
//! every table intact.

use std::io::{Read as _, Write as _};
use std::process::Output;

use base64::Engine as _;
use sqlx::{Connection as _, Executor as _};

use crate::binary::{run_bin, tempdir, write_config};
use crate::support::{Row, SALT, TestEnv, by_key, row};

const EW_PASSWORD: &str = "Ew-S3cret-Pa55word!";
const SIERRA_PASSWORD: &str = "Sierra-S3cret-Pa55word!";
const REDSHIFT_PASSWORD: &str = "Redshift-S3cret-Pa55word!";

/// The pseudonym of `input`, computed with the bcrypt crate directly (not the poller's
/// own code): `$2b$`, cost and salt removed, inputs cut at 72 bytes by bcrypt.
fn bcrypt_pseudonym(input: &[u8]) -> String {
    let raw = bcrypt::BASE_64.decode(&SALT[7..]).unwrap();
    let salt: [u8; 16] = raw.as_slice().try_into().unwrap();
    let full = bcrypt::hash_with_salt(input, 4, salt).unwrap().format_for_version(bcrypt::Version::TwoB);
    full[29..].to_string()
}

/// What a seeded environment must never print.
struct Seeded {
    forbidden: Vec<String>,
    reservations: usize,
    ew_user: String,
}

/// Six patrons with Redshift rows, 14 reservations (two by unknown barcodes) with
/// distinctive keys, and an Envisionware user with a password.
async fn seed(env: &TestEnv) -> Seeded {
    let mut forbidden: Vec<String> = vec![
        SALT.into(),
        SALT[7..].into(),
        EW_PASSWORD.into(),
        SIERRA_PASSWORD.into(),
        REDSHIFT_PASSWORD.into(),
    ];
    let mut barcodes = Vec::new();
    for i in 0..6i64 {
        let id = 481_516_230_000 + i;
        let barcode = format!("29871{:09}", 40_000 + i);
        env.insert_patron(id, &barcode, Some(10), Some(1), Some("mm")).await;
        env.insert_geo(id, "10018", "36061011300").await;
        forbidden.push(id.to_string());
        forbidden.push(barcode.clone());
        barcodes.push(barcode);
    }
    let mut rows: Vec<Row> = Vec::new();
    for k in 0..14i64 {
        let key = 7_340_000_001 + k;
        let barcode =
            if k % 7 == 6 { format!("25550{:09}", 77_000 + k) } else { barcodes[k as usize % 6].clone() };
        forbidden.push(key.to_string());
        forbidden.push(barcode.clone());
        rows.push(row(key, Some(&barcode), &format!("2024-06-01 10:00:{k:02}")));
    }
    env.insert_rows(&rows).await;

    // An Envisionware account with a real password, so a wrong one can be refused.
    let ew_user = format!("{}_u", env.name);
    let mut my = sqlx::MySqlConnection::connect(&env.stack.mysql_admin).await.unwrap();
    for host in ["%", "localhost", "127.0.0.1"] {
        my.execute(
            format!("CREATE USER IF NOT EXISTS '{ew_user}'@'{host}' IDENTIFIED BY '{EW_PASSWORD}'").as_str(),
        )
        .await
        .unwrap();
        my.execute(format!("GRANT ALL ON {}.* TO '{ew_user}'@'{host}'", env.name).as_str()).await.unwrap();
    }
    forbidden.push(ew_user.clone());
    forbidden.sort();
    forbidden.dedup();
    Seeded { forbidden, reservations: rows.len(), ew_user }
}

async fn drop_user(env: &TestEnv, user: &str) {
    if let Ok(mut my) = sqlx::MySqlConnection::connect(&env.stack.mysql_admin).await {
        for host in ["%", "localhost", "127.0.0.1"] {
            let _ = my.execute(format!("DROP USER IF EXISTS '{user}'@'{host}'").as_str()).await;
        }
    }
}

/// Fails when any forbidden value appears in the process's stdout or stderr.
fn assert_nothing_leaks(what: &str, out: &Output, forbidden: &[String]) {
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for f in forbidden {
        assert!(!text.contains(f.as_str()), "{what}: `{f}` appears in the output:\n{text}");
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The overrides every binary run of these tests uses.
fn overrides<'a>(
    seeded: &'a Seeded,
    level: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("LOG_LEVEL", level),
        ("ENVISIONWARE_DB_USER", seeded.ew_user.as_str()),
        ("ENVISIONWARE_DB_PASSWORD", EW_PASSWORD),
        ("SIERRA_DB_PASSWORD", SIERRA_PASSWORD),
        ("REDSHIFT_DB_PASSWORD", REDSHIFT_PASSWORD),
        ("ENVISIONWARE_BATCH_SIZE", "4"),
        ("KINESIS_BATCH_SIZE", "3"),
    ];
    v.extend_from_slice(extra);
    v
}

#[tokio::test]
async fn a_verbose_multi_batch_run_prints_no_identifier_or_secret() {
    let env = TestEnv::new().await;
    let seeded = seed(&env).await;
    let dir = tempdir();

    // Debug for two batches, then trace for the rest: both levels, several batches and
    // PutRecords requests each, the cursor read and written in between.
    let config = write_config(&env, &dir, &overrides(&seeded, "debug", &[("MAX_BATCHES", "2")])).await;
    let out = run_bin(&["--config", config.to_str().unwrap()], &env, None);
    assert!(out.status.success(), "{}", stderr(&out));
    // Proof that debug logging was on: a line at DEBUG level (an INFO line proves nothing).
    assert!(has_level(&stderr(&out), "DEBUG"), "no DEBUG line: {}", stderr(&out));
    assert_nothing_leaks("debug run", &out, &seeded.forbidden);

    let config = write_config(&env, &dir, &overrides(&seeded, "trace", &[])).await;
    let out = run_bin(&["--config", config.to_str().unwrap()], &env, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(has_level(&stderr(&out), "DEBUG"), "no DEBUG line at trace: {}", stderr(&out));
    assert_nothing_leaks("trace run", &out, &seeded.forbidden);

    let json = write_config(&env, &dir, &overrides(&seeded, "debug", &[("LOG_FORMAT", "json")])).await;
    let out = run_bin(&["--config", json.to_str().unwrap()], &env, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(r#""level":"DEBUG""#), "no DEBUG JSON line: {}", stderr(&out));
    assert_nothing_leaks("json run", &out, &seeded.forbidden);

    assert_eq!(by_key(&env.sent().await).len(), seeded.reservations);
    drop_user(&env, &seeded.ew_user).await;
    env.cleanup().await;
}

/// Whether a text log line at `level` is in `stderr` (the level is the line's first or
/// second word, after the timestamp).
fn has_level(stderr: &str, level: &str) -> bool {
    stderr.lines().any(|l| l.split_whitespace().take(2).any(|w| w == level))
}

/// Serves `response` (a whole HTTP response) to every connection on a loopback port.
fn serve_forever(response: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(response.as_bytes());
        }
    });
    format!("http://{addr}/api/v0.1/current-schemas/PcReserve")
}

#[tokio::test]
async fn every_failure_path_prints_no_identifier_or_secret() {
    let env = TestEnv::new().await;
    let mut seeded = seed(&env).await;
    let dir = tempdir();
    let wrong_password = "Wr0ng-Pa55word-Never-Printed";
    seeded.forbidden.push(wrong_password.into());
    let odd = "29871X00040099";
    seeded.forbidden.push(odd.into());

    let failing_run = |what: &'static str, extra: Vec<(&'static str, String)>| {
        let env = &env;
        let dir = &dir;
        let seeded = &seeded;
        async move {
            let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let config = write_config(env, dir, &overrides(seeded, "debug", &extra)).await;
            let out = run_bin(&["--config", config.to_str().unwrap()], env, None);
            assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
            assert_nothing_leaks(what, &out, &seeded.forbidden);
            stderr(&out)
        }
    };

    // A wrong database password.
    let text = failing_run("wrong password", vec![("ENVISIONWARE_DB_PASSWORD", wrong_password.into())]).await;
    assert!(text.contains("Envisionware"), "{text}");

    // The schema endpoint answers 500, then garbage.
    let url = serve_forever(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\noops!",
    );
    let text = failing_run("schema 500", vec![("PC_RESERVE_SCHEMA_URL", url)]).await;
    assert!(text.contains("schema"), "{text}");
    let url = serve_forever(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 35\r\nconnection: close\r\n\r\n{\"data\": {\"schema\": \"\\u0000{[}\"}}xx",
    );
    let text = failing_run("schema garbage", vec![("PC_RESERVE_SCHEMA_URL", url)]).await;
    assert!(text.contains("schema"), "{text}");

    // The Kinesis stream does not exist.
    let gone = env.stream_arn.replace(&env.name, &format!("{}_gone", env.name));
    let text = failing_run("missing stream", vec![("KINESIS_STREAM_ARN", gone)]).await;
    assert!(text.contains("Kinesis"), "{text}");

    // The cursor's bucket does not exist.
    let text = failing_run("missing bucket", vec![("S3_BUCKET", format!("{}-gone", env.bucket))]).await;
    assert!(text.contains("lease") && text.contains("NoSuchBucket"), "{text}");
    assert!(!text.contains("ServiceError") && text.lines().count() < 10, "one short error line: {text}");

    // Redshift's table was dropped.
    let mut rs = sqlx::PgConnection::connect(&env.redshift_url()).await.unwrap();
    rs.execute(format!("DROP TABLE patron_info_{}_rs", env.name).as_str()).await.unwrap();
    let text = failing_run("dropped table", vec![]).await;
    assert!(text.contains("Redshift"), "{text}");

    // Sierra fails on a value: PostgreSQL quotes the offending text in its message.
    env.insert_phrase(481_516_239_999, odd).await;
    let mut sierra = sqlx::PgConnection::connect(&env.sierra_url()).await.unwrap();
    sierra.execute("ALTER TABLE sierra_view.phrase_entry RENAME TO phrase_entry_t").await.unwrap();
    sierra
        .execute(
            "CREATE VIEW sierra_view.phrase_entry AS SELECT record_id, index_tag, \
             (index_entry::bigint)::text AS index_entry FROM sierra_view.phrase_entry_t",
        )
        .await
        .unwrap();
    let text = failing_run("SQL error with a value", vec![]).await;
    assert!(text.contains("Sierra") && text.contains("22P02"), "{text}");

    // A row Envisionware cannot hand over as the poller expects (a text date-time).
    let mut my = sqlx::MySqlConnection::connect(&env.mysql_url()).await.unwrap();
    my.execute("ALTER TABLE strad_bci MODIFY pcrDateTime VARCHAR(64) NULL").await.unwrap();
    let text = failing_run("bad row", vec![]).await;
    assert!(text.contains("Envisionware"), "{text}");

    assert!(env.sent().await.is_empty(), "no failure path sent anything");
    drop_user(&env, &seeded.ew_user).await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_adversarial_dataset_yields_exact_records_and_leaves_every_table_intact() {
    let env = TestEnv::new().await;
    let mut my = sqlx::MySqlConnection::connect(&env.mysql_url()).await.unwrap();
    // Wider columns, where Envisionware's schema allows it: long text and raw bytes.
    my.execute("ALTER TABLE strad_bci MODIFY pcrUserID TEXT NULL, MODIFY pcrBranch VARBINARY(255) NULL")
        .await
        .unwrap();
    let mut sierra = sqlx::PgConnection::connect(&env.sierra_url()).await.unwrap();
    sierra.execute("ALTER TABLE sierra_view.phrase_entry ALTER COLUMN index_entry TYPE TEXT").await.unwrap();

    let long = "7".repeat(10_000);
    // Barcodes Sierra knows (patron id 9000 + index), then ones it does not.
    let known = [
        "O'Brien\"s",
        r"back\slash\\",
        r"\'; DROP TABLE strad_bci; --",
        "'; DROP TABLE strad_bci; --",
        "100%_match",
        "tab\tnew\nline\rbell\x07del\x7f",
        "b'); DELETE FROM sierra_view.patron_view; --",
        "$1 $2 ? :name",
        "2333",
    ];
    let unknown = ["%", "_", "2333%", "233_", "%2333%", "' OR '1'='1", "\u{0001}\u{001f}", &long, ""];
    for (i, b) in known.iter().enumerate() {
        env.insert_patron(9000 + i as i64, b, Some(10 + i as i32), Some(1), Some("mm")).await;
    }
    let mut rows = Vec::new();
    for (i, b) in known.iter().chain(unknown.iter()).enumerate() {
        let mut r = row(1 + i as i64, Some(b), &format!("2024-07-01 08:00:{i:02}"));
        r.area = Some((*b).chars().take(255).collect());
        rows.push(r);
    }
    let null_key = rows.len() as i64 + 1;
    rows.push(row(null_key, None, "2024-07-01 08:01:00"));
    env.insert_rows(&rows).await;
    // A branch with bytes that are not UTF-8, and one with a NUL byte.
    sqlx::query("UPDATE strad_bci SET pcrBranch = ? WHERE pcrKey = 1")
        .bind(b"Mid\xff\xfeManhattan".as_slice())
        .execute(&mut my)
        .await
        .unwrap();
    sqlx::query("UPDATE strad_bci SET pcrBranch = ? WHERE pcrKey = 2")
        .bind(b"nul\x00byte".as_slice())
        .execute(&mut my)
        .await
        .unwrap();

    let summary = env.run(&[("ENVISIONWARE_BATCH_SIZE", Some("7")), ("KINESIS_BATCH_SIZE", Some("3"))]).await;
    let summary = summary.unwrap();
    assert_eq!(summary.reservations, rows.len() as u64);
    let recs = by_key(&env.sent().await);
    assert_eq!(recs.len(), rows.len());
    let rec = |k: usize| &recs[&bcrypt_pseudonym(k.to_string().as_bytes())];

    for (i, b) in known.iter().enumerate() {
        let r = rec(i + 1);
        assert_eq!(r.patron_retrieval_status.as_deref(), Some("found"), "{b:?}");
        assert_eq!(r.patron_id, bcrypt_pseudonym((9000 + i).to_string().as_bytes()), "{b:?}");
        assert_eq!(r.ptype_code, Some(10 + i as i32), "{b:?}");
        assert_eq!(r.area.as_deref(), Some(*b), "{b:?}");
    }
    for (j, b) in unknown.iter().enumerate() {
        let r = rec(known.len() + j + 1);
        let want = if b.starts_with("2555") { "guest_pass" } else { "missing" };
        assert_eq!(r.patron_retrieval_status.as_deref(), Some(want), "{b:?}");
        assert_eq!(r.patron_id, bcrypt_pseudonym(format!("barcode {b}").as_bytes()), "{b:?}");
    }
    let r = rec(null_key as usize);
    assert_eq!(r.patron_id, bcrypt_pseudonym(b"barcode "), "NULL barcode");
    assert_eq!(rec(1).branch.as_deref(), Some("Mid\u{fffd}\u{fffd}Manhattan"), "lossy UTF-8");
    assert_eq!(rec(2).branch.as_deref(), Some("nul\u{0}byte"));

    // Every table is intact: same row counts, nothing dropped or deleted.
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM strad_bci").fetch_one(&mut my).await.unwrap();
    assert_eq!(n, rows.len() as i64);
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM sierra_view.patron_view").fetch_one(&mut sierra).await.unwrap();
    assert_eq!(n, known.len() as i64);
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM sierra_view.phrase_entry").fetch_one(&mut sierra).await.unwrap();
    assert_eq!(n, known.len() as i64);
    let again = env.run(&[]).await.unwrap();
    assert_eq!(again.reservations, 0, "the cursor is on the last row and the table still answers");
    env.cleanup().await;
}
