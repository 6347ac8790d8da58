//! The line that ends a command which did not succeed (`docs/deploying.md`, "The failure line"): with
//! text and JSON logs, whatever the command, a failure (exit codes 1, 2, 7, ...) leaves
//! exactly one line at level ERROR, written through the logger in the configured format,
//! naming the stage, the cause and the exit code; a run refused by the lease (exit 3) one
//! WARN line and no ERROR; a stop by SIGTERM (exit 6) one INFO line and no ERROR. The
//! CloudWatch Logs metric filters `[time, level = "ERROR", ...]` (text) and
//! `{ $.level = "ERROR" }` (JSON) select exactly these lines.

use std::process::{Command, Output, Stdio};

use crate::process::{RUN_LIMIT, kill_after, output_of, output_within};
use crate::stopping::wait_for_first_cursor;
use crate::support::{TestEnv, many_rows};

const BIN: &str = env!("CARGO_BIN_EXE_pc-reserve-poller");

/// The binary with a clean environment: `PATH`, dummy AWS keys, then `vars`.
fn poller(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// The stack's variables (plain, from the environment) plus `extra`.
fn stack_vars(env: &TestEnv, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = env.variables();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    vars.into_iter().collect()
}

fn run(args: &[&str], vars: &[(String, String)]) -> Output {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    output_within(&mut poller(args, &vars), RUN_LIMIT)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    Text,
    Json,
}

impl Format {
    fn value(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// One log line: its level word and the whole line.
struct Line {
    level: String,
    text: String,
    json: Option<serde_json::Value>,
}

/// Standard error's lines with their level. With JSON logs every line must be a JSON
/// object; with text logs the level is the word after the timestamp
/// (`2026-01-01T00:00:00.000000Z ERROR ...`), and a line without one (clap's usage hint)
/// has none.
fn log_lines(out: &Output, format: Format) -> Vec<Line> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .map(|l| match format {
            Format::Json => {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}\n{stderr}"));
                Line {
                    level: v["level"].as_str().unwrap_or_default().to_string(),
                    text: l.into(),
                    json: Some(v),
                }
            }
            Format::Text => {
                let mut words = l.split_whitespace();
                let level = match words.next() {
                    Some(time) if time.len() >= 20 && time.as_bytes()[4] == b'-' && time.ends_with('Z') => {
                        words.next().unwrap_or_default().to_string()
                    }
                    _ => String::new(),
                };
                Line { level, text: l.into(), json: None }
            }
        })
        .collect()
}

/// The exit code is `code`; the last line is at `level`, names `stage` and the exit code
/// in the format's shape and its cause contains `cause`; no line is at ERROR unless
/// `level` is ERROR, and then that one only.
fn assert_last_line(out: &Output, format: Format, level: &str, stage: &str, code: i32, cause: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{format:?}: {stderr}");
    let lines = log_lines(out, format);
    let errors = lines.iter().filter(|l| l.level == "ERROR").count();
    assert_eq!(errors, usize::from(level == "ERROR"), "{format:?}: lines at ERROR: {stderr}");
    let last = lines.last().unwrap_or_else(|| panic!("no output"));
    assert_eq!(last.level, level, "{format:?}: the last line is at {level}: {stderr}");
    match format {
        Format::Text => {
            assert!(last.text.contains(&format!(" {level} {stage}: ")), "{}", last.text);
            assert!(last.text.ends_with(&format!(" stage={stage} exit_code={code}")), "{}", last.text);
        }
        Format::Json => {
            let v = last.json.as_ref().unwrap();
            assert_eq!(v["level"], level, "{}", last.text);
            assert_eq!(v["stage"], stage, "{}", last.text);
            assert_eq!(v["exit_code"], code, "{}", last.text);
            assert!(v["message"].as_str().unwrap().starts_with(&format!("{stage}: ")), "{}", last.text);
            assert!(v["timestamp"].is_string(), "{}", last.text);
        }
    }
    assert!(last.text.contains(cause), "{format:?}: cause {cause:?}: {}", last.text);
}

#[test]
fn a_configuration_file_that_cannot_be_read_fails_with_one_error_line_in_the_format_of_the_environment() {
    let dir = crate::binary::tempdir();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "PLAINTEXT_VARIABLES: [\n  unclosed\n").unwrap();
    let bad = bad.to_str().unwrap();
    for format in [Format::Text, Format::Json] {
        for args in [
            vec!["-c", bad],
            vec!["-c", bad, "check"],
            vec!["-c", bad, "cursor", "show"],
            vec!["-c", bad, "decode", "--from-start", "--limit", "1"],
        ] {
            let out = output_within(&mut poller(&args, &[("LOG_FORMAT", format.value())]), RUN_LIMIT);
            assert_last_line(&out, format, "ERROR", "configuration", 2, "invalid YAML at line");
        }
        // A file that does not exist.
        let missing = dir.join("missing.yaml");
        let out = output_within(
            &mut poller(&["-c", missing.to_str().unwrap(), "run"], &[("LOG_FORMAT", format.value())]),
            RUN_LIMIT,
        );
        assert_last_line(&out, format, "ERROR", "configuration", 2, "cannot read");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_invalid_log_level_is_reported_in_the_log_format_the_file_asks_for() {
    let dir = crate::binary::tempdir();
    let path = dir.join("levels.yaml");
    std::fs::write(&path, "PLAINTEXT_VARIABLES:\n  LOG_FORMAT: json\n  LOG_LEVEL: loud\n").unwrap();
    let out = output_within(&mut poller(&["-c", path.to_str().unwrap(), "check"], &[]), RUN_LIMIT);
    assert_last_line(&out, Format::Json, "ERROR", "configuration", 2, "LOG_LEVEL");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_command_line_clap_refuses_fails_with_one_error_line() {
    for format in [Format::Text, Format::Json] {
        let vars = [("LOG_FORMAT", format.value())];
        let out = output_within(&mut poller(&["run", "--no-such-flag"], &vars), RUN_LIMIT);
        assert_last_line(&out, format, "ERROR", "usage", 2, "unexpected argument '--no-such-flag' found");
        let out =
            output_within(&mut poller(&["decode", "--from-start", "--limit", "many"], &vars), RUN_LIMIT);
        assert_last_line(&out, format, "ERROR", "usage", 2, "invalid value 'many' for '--limit <N>'");
        // clap's message over several lines becomes one: what is missing is in it.
        let out = output_within(&mut poller(&["decode"], &vars), RUN_LIMIT);
        assert_last_line(
            &out,
            format,
            "ERROR",
            "usage",
            2,
            "the following required arguments were not provided: <",
        );
    }
    // A command without its subcommand: clap's help, then the one ERROR line.
    let out = output_within(&mut poller(&["cursor"], &[]), RUN_LIMIT);
    assert_last_line(&out, Format::Text, "ERROR", "usage", 2, "usage: a subcommand is required (see --help)");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: pc-reserve-poller cursor"));
    // --help is not a failure: exit 0, nothing at ERROR.
    let out = output_within(&mut poller(&["--help"], &[]), RUN_LIMIT);
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("ERROR"));
}

#[tokio::test]
async fn an_unreachable_database_fails_run_and_dry_run_with_one_error_line() {
    let env = TestEnv::new().await;
    for format in [Format::Text, Format::Json] {
        let vars = stack_vars(
            &env,
            &[("ENVISIONWARE_DB_PORT", "1"), ("RETRY_ATTEMPTS", "2"), ("LOG_FORMAT", format.value())],
        );
        // Two attempts: the retry's WARN line comes before the one ERROR line.
        let out = run(&["run"], &vars);
        assert_last_line(&out, format, "ERROR", "Envisionware", 1, "cannot connect");
        let out = run(&["run", "--dry-run", "--ignore-cache", "--output", "-"], &vars);
        assert_last_line(&out, format, "ERROR", "Envisionware", 1, "cannot connect");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_failing_check_exits_7_with_one_error_line() {
    let env = TestEnv::new().await;
    for format in [Format::Text, Format::Json] {
        let vars = stack_vars(&env, &[("S3_BUCKET", "pcr-no-such-bucket"), ("LOG_FORMAT", format.value())]);
        let out = run(&["check"], &vars);
        assert_last_line(&out, format, "ERROR", "check", 7, "1 of the dependencies failed");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_run_refused_by_the_lease_ends_with_one_warn_line_and_no_error() {
    let env = TestEnv::new().await;
    let holder = r#"{"owner": "other-task", "acquired_at": "2026-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z"}"#;
    crate::support::s3_client(&env.sdk)
        .put_object()
        .bucket(&env.bucket)
        .key(format!("{}.lease", env.cursor_key))
        .body(holder.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    for format in [Format::Text, Format::Json] {
        let vars = stack_vars(&env, &[("LOG_FORMAT", format.value())]);
        let out = run(&["run", "--metrics", "emf"], &vars);
        assert_last_line(&out, format, "WARN", "lease", 3, "lease: another runner holds the lease s3://");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_stop_by_sigterm_ends_with_one_info_line_and_no_error() {
    for format in [Format::Text, Format::Json] {
        let env = TestEnv::new().await;
        env.insert_rows(&many_rows(3)).await;
        let vars = stack_vars(&env, &[("LOG_FORMAT", format.value())]);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let child = poller(&["run", "--every", "1h"], &vars)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _bound = kill_after(child.id(), RUN_LIMIT);
        // The first run has saved its cursor; the loop then waits an hour.
        wait_for_first_cursor(&env).await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let out = tokio::task::spawn_blocking(move || output_of(child, RUN_LIMIT)).await.unwrap();
        assert_last_line(&out, format, "INFO", "run", 6, "run: stopped");
        env.cleanup().await;
    }
}
