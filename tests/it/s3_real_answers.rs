//! S3 as it really answers, on the local stack's moto (`scripts/local-stack/moto_server.py`):
//!
//! - a GET or HEAD of a missing key is 403 AccessDenied to a caller without
//!   `s3:ListBucket` (the poller's task role): runs, `cursor set`, `backfill` and the lease
//!   never depend on reading a missing object, and a first run without a cursor says how
//!   to create one;
//! - an answer lost after S3 committed a write (the wrapper commits, then answers 500; the
//!   SDK's retry fails its own precondition) is recognised as the run's own write: runs
//!   finish with exit 0 and the right cursor.

use std::process::{Command, Output};

use crate::binary::{BIN, tempdir, write_config};
use crate::support::{TestEnv, dt, many_rows, s3_client, sdk_as};
use pc_reserve_poller::domain::Cursor;

/// The access key id the wrapper treats as lacking `s3:ListBucket` (its default
/// `PCR_MOTO_WITHOUT_LISTBUCKET`).
pub const WITHOUT_LISTBUCKET: &str = "AKIAPCRWITHOUTLIST01";

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the binary against `endpoint` with the given credentials.
pub(crate) fn run_as(args: &[&str], endpoint: &str, key_id: &str, secret: &str) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("ENVIRONMENT")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Status and error code of a GET and a HEAD of `key`.
async fn read_missing(sdk: &aws_config::SdkConfig, bucket: &str, key: &str) -> (u16, u16) {
    let s3 = s3_client(sdk);
    let get = s3.get_object().bucket(bucket).key(key).send().await.unwrap_err();
    let head = s3.head_object().bucket(bucket).key(key).send().await.unwrap_err();
    let status =
        |r: Option<&aws_sdk_s3::config::http::HttpResponse>| r.map(|r| r.status().as_u16()).unwrap_or(0);
    (status(get.raw_response()), status(head.raw_response()))
}

/// Fails with a clear message when the local stack's moto predates the wrapper's
/// missing-key emulation.
pub(crate) async fn require_missing_key_emulation(env: &TestEnv) {
    let sdk = sdk_as(&env.stack.aws_endpoint, WITHOUT_LISTBUCKET, "any").await;
    let (get, _) = read_missing(&sdk, &env.bucket, "no-such-key").await;
    assert_eq!(
        get, 403,
        "moto answers a missing key with {get} to a caller without s3:ListBucket: it was started before scripts/local-stack/moto_server.py learned to answer 403; restart it (scripts/local-stack.sh down && scripts/local-stack.sh up)"
    );
}

/// Turns the wrapper's lost answers on (or off with rate 0) for `bucket`; returns the
/// seed it uses.
pub(crate) async fn lose_answers(endpoint: &str, bucket: &str, rate: f64, seed: u64) -> u64 {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{endpoint}/_pcr/lost-responses"))
        .json(&serde_json::json!({ "bucket": bucket, "rate": rate, "seed": seed }))
        .send()
        .await
        .expect("the moto wrapper's control endpoint")
        .error_for_status()
        .expect("the moto wrapper accepts the rule")
        .json()
        .await
        .unwrap();
    println!("lost answers for bucket {bucket}: rate {rate}, seed {seed} ({answer})");
    seed
}

/// How many answers the wrapper lost in `bucket`.
async fn lost_count(endpoint: &str, bucket: &str) -> u64 {
    let rules: serde_json::Value =
        reqwest::get(format!("{endpoint}/_pcr/lost-responses")).await.unwrap().json().await.unwrap();
    rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["bucket"] == bucket)
        .and_then(|r| r["lost"].as_u64())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_missing_key_is_403_without_list_bucket_and_404_with_it() {
    let env = TestEnv::new().await;
    require_missing_key_emulation(&env).await;
    let without = sdk_as(&env.stack.aws_endpoint, WITHOUT_LISTBUCKET, "any").await;
    assert_eq!(read_missing(&without, &env.bucket, "poller/state.json").await, (403, 403));
    // The tests' own credentials keep s3:ListBucket: 404 NoSuchKey.
    assert_eq!(read_missing(&env.sdk, &env.bucket, "poller/state.json").await, (404, 404));
    // An object that exists reads the same for both.
    env.put_cursor_object(r#"{"pcr_key": "1", "pcr_date_time": "2024-01-01 00:00:00"}"#).await;
    let got = s3_client(&without).get_object().bucket(&env.bucket).key(&env.cursor_key).send().await;
    assert!(got.is_ok(), "{got:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn without_list_bucket_no_command_reads_a_missing_object_and_a_first_run_says_how_to_create_the_cursor()
{
    let env = TestEnv::new().await;
    require_missing_key_emulation(&env).await;
    env.insert_rows(&many_rows(10)).await;
    let dir = tempdir();
    let cfg = write_config(&env, &dir, &[]).await;
    let cfg = cfg.to_str().unwrap();
    let endpoint = env.stack.aws_endpoint.clone();
    let run =
        |args: &[&str]| run_as(&[&["-c", cfg][..], args].concat(), &endpoint, WITHOUT_LISTBUCKET, "any");

    // No cursor object: S3 answers 403, and the run says what that may mean, on one line.
    let out = run(&["run"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = stderr.lines().find(|l| l.contains("may not exist yet")).unwrap_or_else(|| panic!("{stderr}"));
    // The line `docs/deploying.md` shows (section "Deploying").
    let readme = format!(
        "cursor store: s3://{}/poller/state.json: AccessDenied: Access Denied: the cursor object may not exist yet (without s3:ListBucket on the bucket S3 answers 403 for a missing object), or the role lacks s3:GetObject on it; to start from a given point create it with `pc-reserve-poller cursor set --date-time 'YYYY-MM-DD HH:MM:SS' --key N`",
        env.bucket
    );
    assert!(line.contains(&format!(" ERROR {readme} stage=cursor store exit_code=1")), "{line}");
    assert!(env.sent().await.is_empty());
    let out = run(&["check"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("✗ ") && l.contains("S3 cursor") && l.contains("may not exist yet")),
        "{stdout}"
    );

    // `cursor set` creates it without reading it.
    let out = run(&["cursor", "set", "--date-time", "2024-06-01 10:00:00", "--key", "0", "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(no cursor object) -> 2024-06-01 10:00:00 key 0"),
        "{}",
        text(&out.stdout)
    );

    // Two runs: each creates the lease (the previous one deleted it) without reading it.
    for _ in 0..2 {
        let out = run(&["run"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert_eq!(env.sent().await.len(), 10);
    assert_eq!(env.cursor().await, Some(Cursor { date_time: dt("2024-06-01 10:00:03"), key: 10 }));
    let out = run(&["check"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let out = run(&["cursor", "show"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("pcr_key       10"), "{}", text(&out.stdout));

    // A backfill creates its own cursor object without reading it first.
    let out = run(&["backfill", "--from", "2024-06-01", "--to", "2024-06-02"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.sent().await.len(), 20);
    // The lease is gone after every clean run.
    let (get, _) = read_missing(&env.sdk, &env.bucket, "poller/state.json.lease").await;
    assert_eq!(get, 404);
    env.cleanup().await;
}

#[tokio::test]
async fn answers_lost_after_committed_cursor_and_lease_writes_are_recognised_as_the_runs_own() {
    let env = TestEnv::new().await;
    require_missing_key_emulation(&env).await;
    env.insert_rows(&many_rows(12)).await;
    let endpoint = env.stack.aws_endpoint.clone();
    // Every write's answer is lost: the lease creation, its renewals (every second with a
    // 3 s lease, over a run paced to about 3 s), the 6 cursor saves (2 records per request)
    // and the release all commit, answer 500, and their retry fails its precondition.
    lose_answers(&endpoint, &env.bucket, 1.0, 1).await;
    let changes = [
        ("KINESIS_BATCH_SIZE", Some("2")),
        ("KINESIS_MAX_RECORDS_PER_SECOND", Some("4")),
        ("LEASE_TTL_SECONDS", Some("3")),
    ];
    let summary = env.run(&changes).await.expect("the run finishes despite the lost answers");
    assert_eq!(summary.records(), 12);
    assert_eq!(env.cursor().await, Some(Cursor { date_time: dt("2024-06-01 10:00:03"), key: 12 }));
    let sent = env.sent().await;
    assert_eq!(sent.len(), 12, "every record once");
    // 1 creation + 6 saves + 1 release at least (renewals come on top).
    let lost = lost_count(&endpoint, &env.bucket).await;
    assert!(lost >= 8, "lost answers: {lost}");
    let (get, _) = read_missing(&env.sdk, &env.bucket, "poller/state.json.lease").await;
    assert_eq!(get, 404, "the release was recognised too");

    // The tools, through the binary, at a random rate with a printed seed.
    let seed = lose_answers(&endpoint, &env.bucket, 0.5, rand::random::<u32>().into()).await;
    let dir = tempdir();
    let cfg = write_config(&env, &dir, &[("KINESIS_BATCH_SIZE", "2")]).await;
    let cfg = cfg.to_str().unwrap();
    let out = run_as(
        &["-c", cfg, "cursor", "set", "--date-time", "2024-06-01 10:00:01", "--key", "6", "--yes"],
        &endpoint,
        "testing",
        "testing",
    );
    assert!(out.status.success(), "seed {seed}: {}", text(&out.stderr));
    let out = run_as(&["-c", cfg, "run"], &endpoint, "testing", "testing");
    assert!(out.status.success(), "seed {seed}: {}", text(&out.stderr));
    assert_eq!(
        env.cursor().await,
        Some(Cursor { date_time: dt("2024-06-01 10:00:03"), key: 12 }),
        "seed {seed}"
    );
    assert_eq!(env.sent().await.len(), 18, "seed {seed}: the 6 records after the moved-back cursor again");
    let out = run_as(
        &["-c", cfg, "backfill", "--from", "2024-06-01", "--to", "2024-06-01 10:00:02"],
        &endpoint,
        "testing",
        "testing",
    );
    assert!(out.status.success(), "seed {seed}: {}", text(&out.stderr));
    assert_eq!(env.sent().await.len(), 24, "seed {seed}: the 6 records before 10:00:02");
    lose_answers(&endpoint, &env.bucket, 0.0, 0).await;
    env.cleanup().await;
}
