//! The operator tools through the binary, against the local stack: `check`, `run
//! --dry-run`, `cursor show/set`, the run summary with `--metrics emf` and JSON logs,
//! `decode`, `backfill`, `reconcile`, `run --every` stopped by SIGTERM, and `--help`.

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use sqlx::{Connection as _, Executor as _};

use crate::binary::{BIN, run_bin, tempdir, write_config};
use crate::process::{RUN_LIMIT, output_within};
use crate::stopping::poller;
use crate::support::{TestEnv, by_key, many_rows, p, row};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn config(env: &TestEnv) -> (std::path::PathBuf, String) {
    let dir = tempdir();
    let path = write_config(env, &dir, &[]).await;
    let s = path.to_str().unwrap().to_string();
    (dir, s)
}

#[tokio::test]
async fn check_ticks_every_dependency_and_exits_7_when_one_fails() {
    let env = TestEnv::new().await;
    let (_dir, cfg) = config(&env).await;
    let out = run_bin(&["-c", &cfg, "check"], &env, None);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for name in ["configuration", "schema", "Envisionware", "Sierra", "Redshift", "Kinesis", "S3 cursor"] {
        assert!(stdout.lines().any(|l| l.starts_with("✓ ") && l.contains(name)), "{name}: {stdout}");
    }

    // A database that refuses connections and a stream that does not exist: two crosses.
    let missing_stream = env.stream_arn.replace(&env.name, "no_such_stream");
    let out = run_bin(
        &[
            "-c",
            &cfg,
            "--set",
            "ENVISIONWARE_DB_PORT=1",
            "--set",
            &format!("KINESIS_STREAM_ARN={missing_stream}"),
            "check",
        ],
        &env,
        None,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}{}", text(&out.stderr));
    assert!(stdout.lines().any(|l| l.starts_with("✗ ") && l.contains("Envisionware")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("✗ ") && l.contains("Kinesis")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("✓ ") && l.contains("Sierra")), "{stdout}");

    // The same as one JSON object: every dependency in order, two failures, exit 7.
    let out = run_bin(
        &[
            "-c",
            &cfg,
            "--set",
            "ENVISIONWARE_DB_PORT=1",
            "--set",
            &format!("KINESIS_STREAM_ARN={missing_stream}"),
            "check",
            "--format",
            "json",
        ],
        &env,
        None,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}{}", text(&out.stderr));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["failed"], 2);
    let checks = json["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["configuration", "schema", "Envisionware", "Sierra", "Redshift", "Kinesis", "S3 cursor"]
    );
    let failed: Vec<&str> =
        checks.iter().filter(|c| c["ok"] == false).map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(failed, ["Envisionware", "Kinesis"]);
    assert!(checks[2]["detail"].as_str().unwrap().starts_with("cannot connect"), "{stdout}");
    assert!(checks.iter().all(|c| c["latency_ms"].is_u64()), "{stdout}");
    let out = run_bin(&["-c", &cfg, "check", "--format", "json"], &env, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!((json["ok"].clone(), json["failed"].clone()), (serde_json::json!(true), serde_json::json!(0)));
    // Nothing was sent or written.
    assert!(env.sent().await.is_empty());
    assert_eq!(env.cursor_object().await, None);
    env.cleanup().await;
}

#[tokio::test]
async fn dry_run_writes_json_lines_or_avro_and_touches_neither_kinesis_nor_the_cursor() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(7)).await;
    // One patron found in Sierra with a Redshift address, the others missing.
    env.insert_patron(42, "23333000000001", Some(10), Some(2), Some("mm")).await;
    env.insert_geo(42, "10018", "36061008400").await;
    let (dir, cfg) = config(&env).await;
    let jsonl = dir.join("out.jsonl");
    let out = run_bin(&["-c", &cfg, "run", "--dry-run", "--output", jsonl.to_str().unwrap()], &env, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Standard error is a pipe here: no progress line.
    assert!(!text(&out.stderr).contains("ETA") && !text(&out.stderr).contains('\r'), "{}", text(&out.stderr));
    let lines = std::fs::read_to_string(&jsonl).unwrap();
    let records: Vec<pc_reserve_poller::domain::PcReserveRecord> =
        lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let keys = by_key(&records);
    assert_eq!(keys.len(), 7);
    assert!(keys.contains_key(&p("1")) && keys.contains_key(&p("7")));
    assert_eq!(keys[&p("1")].postal_code.as_deref(), Some("10018"), "{lines}");

    let avro = dir.join("out.avro");
    let out = run_bin(
        &["-c", &cfg, "run", "--dry-run", "--format", "avro", "--output", avro.to_str().unwrap()],
        &env,
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = std::fs::File::open(&avro).unwrap();
    let values: Vec<_> = apache_avro::Reader::new(file).unwrap().map(Result::unwrap).collect();
    assert_eq!(values.len(), 7);

    assert!(env.sent().await.is_empty(), "a dry run sent records");
    assert_eq!(env.cursor_object().await, None, "a dry run wrote the cursor");

    // What the dry run wrote is exactly what a real run then sends.
    let out = run_bin(&["-c", &cfg], &env, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(by_key(&env.sent().await), keys);
    env.cleanup().await;
}

#[tokio::test]
async fn cursor_show_and_set_with_confirmation_and_the_unsent_rows_guard() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(7)).await;
    // Three reservations per second: row 3 is the last one of 10:00:00.
    env.put_cursor_object(r#"{"pcr_key": "3", "pcr_date_time": "2024-06-01 10:00:00"}"#).await;
    let (_dir, cfg) = config(&env).await;
    let out = run_bin(&["-c", &cfg, "cursor", "show"], &env, None);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("pcr_date_time 2024-06-01 10:00:00"), "{stdout}");
    assert!(stdout.contains("4 reservation(s) after it"), "{stdout}");
    assert!(stdout.contains("newest 2024-06-01 10:00:02"), "{stdout}");
    let out = run_bin(&["-c", &cfg, "cursor", "show", "--format", "json"], &env, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(json["exists"], true);
    assert_eq!(json["pcr_date_time"], "2024-06-01 10:00:00");
    assert_eq!(json["pcr_key"], "3");
    assert_eq!(json["behind"], 4);
    assert_eq!(json["newest"], "2024-06-01 10:00:02");
    assert_eq!(json["lag_seconds"], 2);
    assert!(json["location"].as_str().unwrap().starts_with("s3://"), "{json}");
    assert!(
        json["written"].as_str().unwrap().ends_with('Z') && json["written_age_seconds"].is_u64(),
        "{json}"
    );

    // Forward past unsent rows: refused without --force, nothing written.
    let set = ["-c", &cfg, "cursor", "set", "--date-time", "2024-06-01 10:00:02", "--key", "7"];
    let out = run_bin(&[&set[..], &["--yes"]].concat(), &env, None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("would skip 4 reservation(s)"), "{}", text(&out.stderr));
    assert_eq!(env.cursor().await.unwrap().key, 3);

    // Backwards needs only a confirmation; "no" leaves it, "yes" moves it.
    let back = ["-c", &cfg, "cursor", "set", "--date-time", "2024-06-01 10:00:00", "--key", "1"];
    let out = run_bin(&back, &env, Some("no\n"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(env.cursor().await.unwrap().key, 3);
    let out = run_bin(&back, &env, Some("yes\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.cursor().await.unwrap().key, 1);
    assert_eq!(
        env.cursor_object().await.unwrap(),
        r#"{"pcr_key": "1", "pcr_date_time": "2024-06-01 10:00:00"}"#
    );

    // --force skips on purpose.
    let out = run_bin(&[&set[..], &["--yes", "--force"]].concat(), &env, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.cursor().await.unwrap().key, 7);
    env.cleanup().await;
}

#[tokio::test]
async fn cursor_set_exits_4_when_another_writer_moved_the_cursor_meanwhile() {
    use std::io::{Read as _, Write as _};
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    env.put_cursor_object(r#"{"pcr_key": "3", "pcr_date_time": "2024-06-01 10:00:00"}"#).await;
    let (_dir, cfg) = config(&env).await;
    let mut child = Command::new(BIN)
        .args(["-c", &cfg, "cursor", "set", "--date-time", "2024-01-01 00:00:00", "--key", "0"])
        .env_remove("ENVIRONMENT")
        .env("AWS_ENDPOINT_URL", &env.stack.aws_endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _bound = crate::process::kill_after(child.id(), crate::process::RUN_LIMIT);
    // Wait for the question: the cursor (and its ETag) has been read by then.
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8];
    while !String::from_utf8_lossy(&seen).contains("Type yes to confirm") {
        assert_eq!(stderr.read(&mut byte).unwrap(), 1, "{}", text(&seen));
        seen.push(byte[0]);
    }
    // Another writer moves it, then the operator confirms.
    env.put_cursor_object(r#"{"pcr_key": "2", "pcr_date_time": "2024-06-01 10:00:00"}"#).await;
    child.stdin.take().unwrap().write_all(b"yes\n").unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(4), "{rest}");
    assert!(rest.contains("changed by another writer"), "{rest}");
    assert_eq!(env.cursor().await.unwrap().key, 2, "the other writer's cursor was overwritten");
    env.cleanup().await;
}

#[tokio::test]
async fn the_summary_line_json_logs_and_emf_metrics() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(7)).await;
    let (_dir, cfg) = config(&env).await;
    let out = run_bin(&["-c", &cfg, "--set", "LOG_FORMAT=json", "run", "--metrics", "emf"], &env, None);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let mut summary = None;
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "run finished" {
            summary = v["summary"].as_str().map(str::to_string);
        }
    }
    let summary = summary.expect("a run finished line");
    for part in [
        "batches=1",
        "reservations=7",
        "records=7",
        "retries=0",
        "cursor_before=",
        "cursor_lag=0s",
        "duration=",
    ] {
        assert!(summary.contains(part), "{part}: {summary}");
    }
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let emf: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(emf["RecordsSent"], 7);
    assert_eq!(emf["RunsFailed"], 0);
    assert_eq!(emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "PcReservePoller");
    assert!(emf["_aws"]["Timestamp"].is_u64());

    // A failed run: still only JSON on standard error, and a RunsFailed metric.
    let out = run_bin(
        &[
            "-c",
            &cfg,
            "--set",
            "LOG_FORMAT=json",
            "--set",
            "PC_RESERVE_SCHEMA_URL=http://127.0.0.1:1/schema",
            "run",
            "--metrics",
            "emf",
        ],
        &env,
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("schema"), "{stderr}");
    for line in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    let emf: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(emf["RunsFailed"], 1);

    // A run refused by another runner's lease (exit 3) is an expected overlap, not a
    // failure: RunsRefused 1, RunsFailed 0.
    let lease = r#"{"owner": "other-task", "acquired_at": "2026-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z"}"#;
    crate::support::s3_client(&env.sdk)
        .put_object()
        .bucket(&env.bucket)
        .key("poller/state.json.lease")
        .body(lease.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    let out = run_bin(&["-c", &cfg, "run", "--metrics", "emf"], &env, None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let emf: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(
        (emf["RunsRefused"].clone(), emf["RunsFailed"].clone()),
        (serde_json::json!(1), serde_json::json!(0))
    );
    env.cleanup().await;
}

#[tokio::test]
async fn decode_reads_the_stream_and_files_of_datums() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(5)).await;
    let (dir, cfg) = config(&env).await;
    assert!(run_bin(&["-c", &cfg], &env, None).status.success());
    let sent = by_key(&env.sent().await);

    let out = run_bin(&["-c", &cfg, "decode", "--from-start"], &env, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let decoded: Vec<pc_reserve_poller::domain::PcReserveRecord> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(by_key(&decoded), sent);

    let out = run_bin(&["-c", &cfg, "decode", "--from-start", "--limit", "2"], &env, None);
    assert_eq!(text(&out.stdout).lines().count(), 2);
    let out = run_bin(&["-c", &cfg, "decode", "--since", "2100-01-01T00:00:00Z"], &env, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");

    let b64 = base64::engine::general_purpose::STANDARD;
    let datums: String =
        sent.values().map(|r| format!("{}\n", b64.encode(env.encoder.encode(r).unwrap()))).collect();
    let file = dir.join("datums.b64");
    std::fs::write(&file, &datums).unwrap();
    let out = run_bin(&["-c", &cfg, "decode", "--file", file.to_str().unwrap()], &env, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 5);
    let out = run_bin(&["-c", &cfg, "decode", "--file", "-"], &env, Some("bm90IGF2cm8=\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("- line 1"), "{}", text(&out.stderr));
    env.cleanup().await;
}

#[tokio::test]
async fn backfills_of_disjoint_ranges_run_side_by_side_and_leave_the_main_cursor_alone() {
    let env = TestEnv::new().await;
    let mut rows = Vec::new();
    for day in 1..=4i64 {
        for n in 0..3i64 {
            let key = day * 10 + n;
            rows.push(row(key, Some("23333000000001"), &format!("2024-03-0{day} 12:00:0{n}")));
        }
    }
    env.insert_rows(&rows).await;
    let (_dir, cfg) = config(&env).await;
    let spawn = |from: &str, to: &str| {
        Command::new(BIN)
            .args(["-c", &cfg, "--set", "ENVISIONWARE_BATCH_SIZE=2", "backfill", "--from", from, "--to", to])
            .env_remove("ENVIRONMENT")
            .env("AWS_ENDPOINT_URL", &env.stack.aws_endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Days 1 and 2 in one task, day 3 in another, at the same time; day 4 left out.
    let a = spawn("2024-03-01", "2024-03-03");
    let b = spawn("2024-03-03", "2024-03-04");
    for child in [a, b] {
        let out = crate::process::output_of(child, crate::process::RUN_LIMIT);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let sent = by_key(&env.sent().await);
    let expected: Vec<String> = rows.iter().filter(|r| r.key < 40).map(|r| p(&r.key.to_string())).collect();
    assert_eq!(sent.len(), expected.len());
    assert!(expected.iter().all(|k| sent.contains_key(k)));
    assert_eq!(env.cursor_object().await, None, "the main cursor was touched");

    // Each backfill has its own cursor; running one again sends nothing more.
    let s3 = crate::support::s3_client(&env.sdk);
    let own = s3
        .get_object()
        .bucket(&env.bucket)
        .key("poller/state.backfill-20240301T000000-20240303T000000.json")
        .send()
        .await
        .unwrap();
    let own = String::from_utf8(own.body.collect().await.unwrap().into_bytes().to_vec()).unwrap();
    assert_eq!(own, r#"{"pcr_key": "22", "pcr_date_time": "2024-03-02 12:00:02"}"#);
    let out = crate::process::output_of(spawn("2024-03-01", "2024-03-03"), crate::process::RUN_LIMIT);
    assert!(out.status.success());
    assert_eq!(env.sent().await.len(), 9);

    let out = run_bin(&["-c", &cfg, "backfill", "--from", "2024-03-03", "--to", "2024-03-01"], &env, None);
    assert_eq!(out.status.code(), Some(2));
    env.cleanup().await;
}

#[tokio::test]
async fn reconcile_counts_a_day_on_both_sides() {
    let env = TestEnv::new().await;
    let mut rows = many_rows(6);
    rows.push(row(100, Some("23333000000001"), "2024-06-02 09:00:00"));
    env.insert_rows(&rows).await;
    let mut rs = sqlx::PgConnection::connect(&env.redshift_url()).await.unwrap();
    let table = format!("pc_reserve_{}_rs", env.name);
    // Four of the six 2024-06-01 records, one of them twice, and one of another day.
    for key in ["a", "b", "c", "d", "d"] {
        rs.execute(
            sqlx::query(&format!("INSERT INTO {table} (key, transaction_et) VALUES ($1, DATE '2024-06-01')"))
                .bind(key),
        )
        .await
        .unwrap();
    }
    rs.execute(format!("INSERT INTO {table} (key, transaction_et) VALUES ('e', DATE '2024-06-02')").as_str())
        .await
        .unwrap();
    let (_dir, cfg) = config(&env).await;
    // The default tolerance is 0: a difference of 2 exits 8 after printing the counts.
    let out = run_bin(&["-c", &cfg, "reconcile", "--date", "2024-06-01"], &env, None);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(8), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("envisionware  6 reservations"), "{stdout}");
    assert!(stdout.contains("warehouse     4 distinct keys (5 rows)"), "{stdout}");
    assert!(stdout.contains("difference    2 (2 reservation(s) not in the warehouse)"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "reconcile: the difference (2) is larger than the tolerance (0): 2 reservation(s) not in the warehouse"
        ),
        "{stderr}"
    );

    // Within the tolerance: exit 0.
    let out = run_bin(&["-c", &cfg, "reconcile", "--date", "2024-06-01", "--tolerance", "2"], &env, None);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // JSON: one object on standard output, the same exit codes.
    let table = format!("pc_reserve_{}_rs", env.name);
    for (tolerance, code, within) in [("1", Some(8), false), ("2", Some(0), true)] {
        let out = run_bin(
            &["-c", &cfg, "reconcile", "--date", "2024-06-01", "--tolerance", tolerance, "--format", "json"],
            &env,
            None,
        );
        assert_eq!(out.status.code(), code, "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "date": "2024-06-01", "envisionware": 6, "warehouse_keys": 4, "warehouse_rows": 5,
                "table": table, "difference": 2, "tolerance": tolerance.parse::<u64>().unwrap(),
                "within_tolerance": within,
            })
        );
    }

    // More keys in the warehouse than in Envisionware (a day it no longer fully holds)
    // also counts: 2024-06-02 has 1 reservation and 1 key, in step; add 2 more keys.
    for key in ["f", "g"] {
        rs.execute(
            sqlx::query(&format!("INSERT INTO {table} (key, transaction_et) VALUES ($1, DATE '2024-06-02')"))
                .bind(key),
        )
        .await
        .unwrap();
    }
    let out = run_bin(&["-c", &cfg, "reconcile", "--date", "2024-06-02", "--tolerance", "1"], &env, None);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("difference    -2 (2 more key(s) in the warehouse than in Envisionware)"),
        "{}",
        text(&out.stdout)
    );

    // `--date yesterday` is yesterday by Envisionware's clock: three reservations stamped
    // then (and one today, which it must not count) are three not in the warehouse.
    let mut my = sqlx::MySqlConnection::connect(&env.mysql_url()).await.unwrap();
    let yesterday: chrono::NaiveDate =
        sqlx::query_scalar("SELECT CURDATE() - INTERVAL 1 DAY").fetch_one(&mut my).await.unwrap();
    let at = |d: chrono::NaiveDate, t: &str| format!("{} {t}", d.format("%Y-%m-%d"));
    env.insert_rows(&[
        row(201, Some("23333000000201"), &at(yesterday, "00:00:00")),
        row(202, Some("23333000000202"), &at(yesterday, "12:00:00")),
        row(203, Some("23333000000203"), &at(yesterday, "23:59:59")),
        row(204, Some("23333000000204"), &at(yesterday + chrono::Duration::days(1), "00:00:00")),
    ])
    .await;
    let out = run_bin(&["-c", &cfg, "reconcile", "--date", "yesterday", "--format", "json"], &env, None);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(json["date"], serde_json::json!(yesterday.format("%Y-%m-%d").to_string()));
    assert_eq!(json["envisionware"], serde_json::json!(3));
    assert_eq!(json["difference"], serde_json::json!(3));
    let out = run_bin(&["-c", &cfg, "reconcile", "--date", "last-week"], &env, None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("expected YYYY-MM-DD, yesterday or today"), "{}", text(&out.stderr));
    env.cleanup().await;
}

#[tokio::test]
async fn every_keeps_running_until_sigterm_then_exits_6() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(4)).await;
    let (_dir, cfg) = config(&env).await;
    let mut child = Command::new(BIN)
        .args(["-c", &cfg, "run", "--every", "1h"])
        .env_remove("ENVIRONMENT")
        .env("AWS_ENDPOINT_URL", &env.stack.aws_endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _bound = crate::process::kill_after(child.id(), crate::process::RUN_LIMIT);
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "exited early: {seen}");
        seen.push_str(&line);
        if line.contains("waiting for the next run") {
            break;
        }
    }
    assert!(seen.contains("records=4"), "{seen}");
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(6), "{seen}{rest}");
    assert_eq!(env.sent().await.len(), 4);
    env.cleanup().await;
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for args in [
        &["run", "--help"][..],
        &["check", "--help"],
        &["cursor", "--help"],
        &["cursor", "show", "--help"],
        &["cursor", "set", "--help"],
        &["decode", "--help"],
        &["backfill", "--help"],
        &["reconcile", "--help"],
        &["pseudonymize", "--help"],
    ] {
        let out =
            crate::process::output_within(Command::new(BIN).args(args), std::time::Duration::from_secs(60));
        let help = text(&out.stdout);
        assert!(out.status.success() && help.contains("Example"), "{args:?}: {help}");
    }
}

#[test]
fn the_config_templates_parse_and_name_every_required_variable() {
    for name in ["devel", "qa", "production"] {
        let path = std::path::PathBuf::from(format!("config/{name}.yaml"));
        let raw = pc_reserve_poller::config::RawConfig::gather(Some(&path), &|_| None, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        raw.check_required().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// A schema endpoint that accepts connections and never answers; counts the connections.
async fn silent_schema_endpoint() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(sock);
        }
    });
    (format!("http://127.0.0.1:{port}/api/v0.1/current-schemas/PcReserve"), count)
}

#[tokio::test(flavor = "multi_thread")]
async fn decode_fetches_the_schema_with_schema_timeout_seconds_and_the_retry_policy() {
    let (url, connections) = silent_schema_endpoint().await;
    let dir = tempdir();
    let file = dir.join("datums.b64");
    std::fs::write(&file, "bm90IGF2cm8=\n").unwrap();
    let args = ["decode".to_string(), "--file".to_string(), file.to_str().unwrap().to_string()];
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PC_RESERVE_SCHEMA_URL", &url)
            .env("SCHEMA_TIMEOUT_SECONDS", "1")
            .env("RETRY_ATTEMPTS", "2")
            .env("RETRY_BASE_DELAY_MS", "1");
        crate::process::output_within(&mut cmd, crate::process::RUN_LIMIT)
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains(" ERROR schema: schema endpoint: "), "{stderr}");
    assert!(last.ends_with(" stage=schema exit_code=1"), "{stderr}");
    // Two attempts of 1 s each (RETRY_ATTEMPTS=2, SCHEMA_TIMEOUT_SECONDS=1), not one of 10 s.
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2, "{stderr}");
    assert!(
        took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(8),
        "{took:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs `check` with `extra` and returns (exit code, stdout + stderr).
fn check(env: &TestEnv, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = poller(env, extra);
    cmd.arg("check");
    let out = output_within(&mut cmd, RUN_LIMIT);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[tokio::test]
async fn check_exits_7_naming_s3_schema_sierra_or_redshift_when_each_fails() {
    let env = TestEnv::new().await;
    let (code, text) = check(&env, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains('✗'), "{text}");
    for (name, value, line) in [
        ("S3_BUCKET", "pcr-no-such-bucket", "✗ S3 cursor"),
        ("PC_RESERVE_SCHEMA_URL", "http://127.0.0.1:1/api/v0.1/current-schemas/PcReserve", "✗ schema"),
        ("SIERRA_DB_PORT", "1", "✗ Sierra"),
        ("REDSHIFT_DB_PORT", "1", "✗ Redshift"),
    ] {
        let (code, text) = check(&env, &[(name, value)]);
        assert_eq!(code, Some(7), "{name}: {text}");
        assert!(text.lines().any(|l| l.starts_with(line)), "{name}: no `{line}` line in {text}");
        assert_eq!(text.matches('✗').count(), 1, "{name}: only that dependency fails: {text}");
        assert!(text.contains("check: 1 of the dependencies failed"), "{name}: {text}");
    }
    env.cleanup().await;
}
