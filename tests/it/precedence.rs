//! Precedence through the real binary: a variable set in the process environment beats
//! the file, and `--set` beats the environment (`LOG_FORMAT`, which the logger reads
//! before anything else).

use std::process::{Command, Output};

use crate::binary::{BIN, tempdir, write_config};
use crate::support::{TestEnv, many_rows};

/// The binary with `extra` in its environment and nothing else of the configuration
/// outside the file (the test process's own `LOG_FORMAT`, if any, is removed).
fn run_with_env(args: &[&str], env: &TestEnv, extra: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("ENVIRONMENT")
        .env_remove("LOG_FORMAT")
        .env("AWS_ENDPOINT_URL", &env.stack.aws_endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(std::process::Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().map(str::to_string).collect()
}

fn is_json(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object())
}

#[tokio::test]
async fn log_format_json_in_the_environment_alone_gives_json_log_lines() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    let dir = tempdir();
    // The file says text; the environment says json and wins.
    let config = write_config(&env, &dir, &[("LOG_FORMAT", "text")]).await;
    let config = config.to_str().unwrap();
    let out = run_with_env(&["-c", config, "run"], &env, &[("LOG_FORMAT", "json")]);
    let lines = stderr_lines(&out);
    assert!(out.status.success(), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("run finished")), "{lines:#?}");
    for line in &lines {
        assert!(is_json(line), "not a JSON log line: {line}");
    }
    // Without the environment the file's text format holds.
    let out = run_with_env(&["-c", config, "run"], &env, &[]);
    let lines = stderr_lines(&out);
    assert!(out.status.success(), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("run finished")), "{lines:#?}");
    assert!(lines.iter().all(|l| !is_json(l)), "{lines:#?}");
    // And --set beats the environment.
    let out =
        run_with_env(&["-c", config, "--set", "LOG_FORMAT=text", "run"], &env, &[("LOG_FORMAT", "json")]);
    let lines = stderr_lines(&out);
    assert!(out.status.success(), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("run finished")), "{lines:#?}");
    assert!(lines.iter().all(|l| !is_json(l)), "{lines:#?}");
    env.cleanup().await;
}
