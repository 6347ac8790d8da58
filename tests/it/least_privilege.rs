//! Least privilege, proved: a moto of this test's own enforces IAM (moto authorises every
//! request against the caller's policies once `INITIAL_NO_AUTH_ACTION_COUNT` requests have
//! passed; `scripts/local-stack/iam_users.py` sets it to 0 after the setup). Two policies:
//! `deploy/iam-policy.json`, the scheduled task's role (a run, `check`, `cursor`), and
//! `deploy/iam-operator-policy.json`, what an operator's tools need besides (`backfill`,
//! `decode`, `check`'s stream description). Every command runs with the credentials of an
//! IAM user holding exactly one of them (placeholders filled), then, for every statement,
//! a user holding all but that one: the command that needs it fails with a message naming
//! the missing permission (or, for `check`'s stream description, says it was not checked).
//!
//! The server is `scripts/local-stack/moto_server.py` (so KMS and Kinesis are authorised against their
//! real ARNs, and a missing key is 403 without `s3:ListBucket`), started on a free port
//! with `--exit-with-parent` and killed when the test ends.

use std::collections::BTreeMap;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::binary::{tempdir, write_config};
use crate::s3_real_answers::{run_as, text};
use crate::support::{Stack, TestEnv, dt, many_rows, sdk_as};
use pc_reserve_poller::domain::Cursor;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A moto server of the test's own; killed on drop.
struct OwnMoto {
    child: Child,
    endpoint: String,
}

impl OwnMoto {
    fn start() -> Self {
        let python = format!("{REPO}/.venv/bin/python");
        assert!(
            std::path::Path::new(&python).exists(),
            "{python} is missing: run scripts/local-stack.sh up first"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("pcr-iam-moto-{port}.log"))).unwrap();
        let child = Command::new(python)
            .args([
                &format!("{REPO}/scripts/local-stack/moto_server.py"),
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .arg("--exit-with-parent")
            .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not answer on {endpoint} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, endpoint }
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The IAM users of `scripts/local-stack/iam_users.py`: `(access key id, secret)`.
struct Users {
    policy: serde_json::Value,
    admin: (String, String),
    full: (String, String),
    without: BTreeMap<String, (String, String)>,
}

fn pair(v: &serde_json::Value) -> (String, String) {
    (v[0].as_str().unwrap().to_string(), v[1].as_str().unwrap().to_string())
}

/// The scheduled task's policy.
const TASK: &str = "deploy/iam-policy.json";
/// The operator's policy.
const OPERATOR: &str = "deploy/iam-operator-policy.json";

/// Sets up an IAM-enforcing moto with this test's bucket, stream, KMS-encrypted
/// configuration and users of `policy`; Envisionware holds 10 reservations.
async fn setup(policy: &str) -> (OwnMoto, TestEnv, String, Users, std::path::PathBuf) {
    let moto = OwnMoto::start();
    let stack = Stack { aws_endpoint: moto.endpoint.clone(), ..Stack::from_env() };
    let mut env = TestEnv::with_stack(stack).await;
    env.insert_rows(&many_rows(10)).await;
    let dir = tempdir();
    let cfg = write_config(&env, &dir, &[]).await.to_str().unwrap().to_string();
    let kms = aws_sdk_kms::Client::new(&env.sdk);
    let keys = kms.list_keys().send().await.unwrap();
    let key_id = keys.keys()[0].key_id().unwrap().to_string();
    let stem = env.cursor_key.strip_suffix(".json").unwrap().to_string();
    let out = Command::new(format!("{REPO}/.venv/bin/python"))
        .arg(format!("{REPO}/scripts/local-stack/iam_users.py"))
        .args(["--endpoint", &moto.endpoint, "--policy", &format!("{REPO}/{policy}")])
        .args(["--set", "REGION=us-east-1", "--set", "ACCOUNT_ID=123456789012"])
        .args(["--set", &format!("CONFIG_KMS_KEY_ID={key_id}")])
        .args(["--set", &format!("CURSOR_BUCKET={}", env.bucket)])
        .args(["--set", &format!("CURSOR_KEY={}", env.cursor_key)])
        .args(["--set", &format!("CURSOR_KEY_STEM={stem}")])
        .args(["--set", &format!("STREAM_NAME={}", env.name)])
        .arg("--enforce")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let users: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let users = Users {
        policy: users["policy"].clone(),
        admin: pair(&users["admin"]),
        full: pair(&users["full"]),
        without: users["without"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), pair(v))).collect(),
    };
    // From here on every request is authorised: the test reads with the admin user.
    env.sdk = sdk_as(&moto.endpoint, &users.admin.0, &users.admin.1).await;
    (moto, env, cfg, users, dir)
}

#[tokio::test]
async fn every_command_runs_with_exactly_the_shipped_policy() {
    let (moto, env, cfg, users, dir) = setup(TASK).await;
    let (id, secret) = &users.full;
    let run = |args: &[&str]| {
        let out: Output = run_as(&[&["-c", cfg.as_str()][..], args].concat(), &moto.endpoint, id, secret);
        out
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    };

    // The policy grants no s3:ListBucket: with no cursor yet, S3 answers 403 and the run
    // says how to create the cursor.
    let out = run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("may not exist yet"), "{}", text(&out.stderr));

    ok(&["cursor", "set", "--date-time", "2024-06-01 10:00:00", "--key", "0", "--yes"]);
    assert!(ok(&["cursor", "show"]).contains("pcr_key       0"));
    // The task may not describe the stream: check says so and passes.
    let check = ok(&["check"]);
    assert!(check.lines().all(|l| !l.starts_with("✗ ")), "{check}");
    let kinesis = check.lines().find(|l| l.starts_with("✓ Kinesis")).unwrap();
    assert!(
        kinesis.ends_with("not checked: this role may not describe the stream (kinesis:DescribeStreamSummary is in deploy/iam-operator-policy.json, not the task's policy); a run's PutRecords needs only kinesis:PutRecords"),
        "{kinesis}"
    );
    let output = dir.join("dry.jsonl");
    ok(&["run", "--dry-run", "--output", output.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 10);
    ok(&["run"]);
    assert_eq!(env.sent().await.len(), 10);
    assert_eq!(env.cursor().await, Some(Cursor { date_time: dt("2024-06-01 10:00:03"), key: 10 }));
    ok(&["run"]);
    assert!(
        ok(&["reconcile", "--date", "2024-06-01", "--tolerance", "10"])
            .contains("envisionware  10 reservations")
    );
    // What only the operator may do.
    let out = run(&["decode", "--from-start", "--limit", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("needs kinesis:ListShards on"), "{}", text(&out.stderr));
    let out = run(&["backfill", "--from", "2024-06-01", "--to", "2024-06-01 10:00:01"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("s3:PutObject"), "{}", text(&out.stderr));
    env.cleanup().await;

    // The operator's policy: every tool, the stream described.
    let (moto, env, cfg, users, _dir) = setup(OPERATOR).await;
    let (id, secret) = &users.full;
    let ok = |args: &[&str]| {
        let out: Output = run_as(&[&["-c", cfg.as_str()][..], args].concat(), &moto.endpoint, id, secret);
        assert!(out.status.success(), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    };
    ok(&["cursor", "set", "--date-time", "2024-06-01 10:00:00", "--key", "0", "--yes"]);
    let check = ok(&["check"]);
    assert!(check.lines().any(|l| l.starts_with("✓ Kinesis") && l.contains(" ACTIVE, ")), "{check}");
    ok(&["run"]);
    assert_eq!(env.sent().await.len(), 10);
    ok(&["backfill", "--from", "2024-06-01", "--to", "2024-06-01 10:00:01"]);
    assert_eq!(env.sent().await.len(), 13, "the 3 reservations of 10:00:00 again");
    assert_eq!(ok(&["decode", "--from-start", "--limit", "2"]).lines().count(), 2);
    env.cleanup().await;
}

/// A command, the exit code it must end with, and what one of its lines must say.
type Case = (Vec<&'static str>, i32, &'static str);

#[tokio::test]
async fn removing_any_statement_fails_the_command_that_needs_it_naming_the_permission() {
    for policy in [TASK, OPERATOR] {
        without_each_statement(policy).await;
    }
}

async fn without_each_statement(policy: &str) {
    let (moto, env, cfg, users, _dir) = setup(policy).await;
    // A cursor to start from, written with the full policy.
    let full = run_as(
        &["-c", &cfg, "cursor", "set", "--date-time", "2024-06-01 10:00:00", "--key", "0", "--yes"],
        &moto.endpoint,
        &users.full.0,
        &users.full.1,
    );
    assert!(full.status.success(), "{}", text(&full.stderr));

    // Statement -> (command, exit code, what its output must say).
    let cases: BTreeMap<&str, Vec<Case>> = BTreeMap::from([
        (
            "DecryptTheConfiguration",
            vec![
                (vec!["check"], 7, "the role or user running the poller needs kms:Decrypt on"),
                (vec!["run"], 2, "the role or user running the poller needs kms:Decrypt on"),
            ],
        ),
        (
            "ReadAndWriteTheCursors",
            vec![
                (vec!["cursor", "show"], 1, "s3:GetObject"),
                (
                    vec!["cursor", "set", "--date-time", "2023-01-02 00:00:00", "--key", "0", "--yes"],
                    1,
                    "the role or user running the poller needs s3:PutObject on arn:aws:s3:::",
                ),
            ],
        ),
        (
            "HoldTheLease",
            vec![(vec!["run"], 1, "the role or user running the poller needs s3:PutObject on arn:aws:s3:::")],
        ),
        (
            "SendRecords",
            vec![(
                vec!["run"],
                1,
                "the role or user running the poller needs kinesis:PutRecords on arn:aws:kinesis:",
            )],
        ),
        ("CheckTheStream", vec![(vec!["check"], 0, "not checked: this role may not describe the stream")]),
        (
            "DecodeTheStream",
            vec![(
                vec!["decode", "--from-start"],
                1,
                "the role or user running the poller needs kinesis:ListShards on",
            )],
        ),
    ]);
    let sids: Vec<&str> =
        users.policy["Statement"].as_array().unwrap().iter().map(|s| s["Sid"].as_str().unwrap()).collect();
    assert!(
        sids.iter().all(|sid| cases.contains_key(sid)),
        "every statement of {policy} has a case here: {sids:?}"
    );
    for sid in sids {
        let (id, secret) = &users.without[sid];
        for (command, code, says) in &cases[sid] {
            let out =
                run_as(&[&["-c", cfg.as_str()][..], command.as_slice()].concat(), &moto.endpoint, id, secret);
            let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert_eq!(out.status.code(), Some(*code), "without {sid}, {command:?}: {all}");
            let line = all
                .lines()
                .find(|l| l.contains(says))
                .unwrap_or_else(|| panic!("without {sid}, {command:?}: no line says {says:?}:\n{all}"));
            println!("without {sid}, {command:?} exits {code}: {line}");
            if sid == "HoldTheLease" {
                assert!(line.contains(".lease"), "{line}");
            }
        }
    }
    // Nothing was sent and the cursor did not move.
    assert!(env.sent().await.is_empty());
    assert_eq!(env.cursor().await, Some(Cursor { date_time: dt("2024-06-01 10:00:00"), key: 0 }));
    env.cleanup().await;
}
