//! The `pc-reserve-poller` binary as operators run it: a YAML file whose secrets are
//! real KMS ciphertexts (moto), exit codes, and the one-line error.

use std::process::{Command, Output};

use base64::Engine as _;

use crate::support::{SALT, TestEnv, by_key, many_rows, p};

pub const BIN: &str = env!("CARGO_BIN_EXE_pc-reserve-poller");

pub(crate) async fn kms_key(env: &TestEnv) -> (aws_sdk_kms::Client, String) {
    let kms = aws_sdk_kms::Client::new(&env.sdk);
    let key = kms.create_key().send().await.unwrap().key_metadata.unwrap().key_id;
    (kms, key)
}

pub(crate) async fn encrypt(kms: &aws_sdk_kms::Client, key: &str, plaintext: &str) -> String {
    let out = kms
        .encrypt()
        .key_id(key)
        .plaintext(aws_sdk_kms::primitives::Blob::new(plaintext.as_bytes()))
        .send()
        .await
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(out.ciphertext_blob.unwrap().into_inner())
}

/// Writes a config file like the original's: secrets encrypted, the rest plain.
pub async fn write_config(
    env: &TestEnv,
    dir: &std::path::Path,
    overrides: &[(&str, &str)],
) -> std::path::PathBuf {
    let (kms, key) = kms_key(env).await;
    let encrypted = [
        "ENVISIONWARE_DB_HOST",
        "ENVISIONWARE_DB_USER",
        "ENVISIONWARE_DB_PASSWORD",
        "SIERRA_DB_HOST",
        "SIERRA_DB_USER",
        "SIERRA_DB_PASSWORD",
        "REDSHIFT_DB_HOST",
        "REDSHIFT_DB_USER",
        "REDSHIFT_DB_PASSWORD",
        "KINESIS_STREAM_ARN",
        "BCRYPT_SALT",
    ];
    let mut vars = env.variables();
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    let mut plain = String::from("---\nPLAINTEXT_VARIABLES:\n");
    let mut secret = String::from("ENCRYPTED_VARIABLES:\n");
    for (k, v) in &vars {
        if k == "AWS_ENDPOINT_URL" {
            continue;
        }
        if encrypted.contains(&k.as_str()) {
            secret.push_str(&format!("  {k}: {}\n", encrypt(&kms, &key, v).await));
        } else {
            plain.push_str(&format!("  {k}: '{}'\n", v.replace('\'', "''")));
        }
    }
    let path = dir.join("test.yaml");
    std::fs::write(&path, format!("{plain}{secret}...\n")).unwrap();
    path
}

pub fn run_bin(args: &[&str], env: &TestEnv, stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("ENVIRONMENT")
        .env("AWS_ENDPOINT_URL", &env.stack.aws_endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    crate::process::output_of(child, crate::process::RUN_LIMIT)
}

pub fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pcr-it-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_run_from_a_yaml_file_with_kms_secrets() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(7)).await;
    let dir = tempdir();
    let config = write_config(&env, &dir, &[]).await;
    let out = run_bin(&["--config", config.to_str().unwrap()], &env, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("run finished") && stderr.contains("records=7"), "{stderr}");
    assert_eq!(by_key(&env.sent().await).len(), 7);
    // No secret or identifier in the output.
    for secret in ["pcr_admin", SALT, "23333000"] {
        assert!(!stderr.contains(secret), "{secret} leaked: {stderr}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn pseudonymize_prints_only_pseudonyms() {
    let env = TestEnv::new().await;
    let dir = tempdir();
    let config = write_config(&env, &dir, &[]).await;
    let cfg = config.to_str().unwrap();
    let out = run_bin(&["-c", cfg, "pseudonymize", "1000000000123", "barcode 25555000000000"], &env, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n{}\n", p("1000000000123"), p("barcode 25555000000000"))
    );
    let out = run_bin(&["-c", cfg, "pseudonymize"], &env, Some("111\n222\n"));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{}\n{}\n", p("111"), p("222")));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("111"));
    env.cleanup().await;
}

#[tokio::test]
async fn configuration_errors_exit_2_naming_the_variable() {
    let env = TestEnv::new().await;
    let dir = tempdir();
    let config = write_config(&env, &dir, &[("KINESIS_BATCH_SIZE", "900")]).await;
    let out = run_bin(&["-c", config.to_str().unwrap()], &env, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("configuration: KINESIS_BATCH_SIZE"), "{stderr}");

    // A ciphertext KMS cannot decrypt names its variable and prints no value.
    let text = std::fs::read_to_string(&config).unwrap();
    let broken = text.replacen("BCRYPT_SALT: ", "BCRYPT_SALT: AAAA", 1);
    std::fs::write(&config, broken).unwrap();
    let out = run_bin(&["-c", config.to_str().unwrap()], &env, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("BCRYPT_SALT: KMS could not decrypt it"), "{stderr}");

    std::fs::write(&config, "PLAINTEXT_VARIABLES: [\n").unwrap();
    let out = run_bin(&["-c", config.to_str().unwrap()], &env, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid YAML"));

    let out = run_bin(&["-c", "/nonexistent/config.yaml"], &env, None);
    assert_eq!(out.status.code(), Some(2));
    env.cleanup().await;
}

#[test]
fn help_teaches_with_examples() {
    let out =
        crate::process::output_within(Command::new(BIN).arg("--help"), std::time::Duration::from_secs(60));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Examples:") && text.contains("Exit codes"), "{text}");
}

/// The binary with nothing of the calling shell: no AWS variables, a home without
/// `~/.aws`, empty shared config and credentials files, no instance metadata. `vars` are
/// added.
fn run_isolated(args: &[&str], dir: &std::path::Path, vars: &[(&str, &str)]) -> Output {
    let empty = dir.join("empty-aws-file");
    std::fs::write(&empty, "").unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(std::process::Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Standard error's lines, and the checks every failure must pass: the last line is the
/// only one not logged at INFO (or DEBUG), it is the one error line (logged at ERROR), and
/// no line carries an SDK debug dump.
fn failure_lines(out: &Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<String> = stderr.lines().map(str::to_string).collect();
    let (last, before) = lines.split_last().unwrap_or_else(|| panic!("no output: {stderr}"));
    assert!(last.contains("Z ERROR "), "last line: {stderr}");
    for line in before {
        assert!(
            line.contains(" INFO ") || line.contains(" DEBUG "),
            "a line besides the error: {line}\n{stderr}"
        );
    }
    for dump in ["CredentialsNotLoaded", "Some(", "DispatchFailure", "ConnectorError", "source:"] {
        assert!(!stderr.contains(dump), "SDK debug output ({dump}): {stderr}");
    }
    let error_lines = lines.iter().filter(|l| l.to_ascii_lowercase().contains("error")).count();
    assert_eq!(error_lines, 1, "the error is printed once: {stderr}");
    lines
}

#[tokio::test]
async fn without_credentials_one_line_names_the_chain_tried_and_the_fixes() {
    let env = TestEnv::new().await;
    let dir = tempdir();
    let config = write_config(&env, &dir, &[]).await;
    let endpoint = env.stack.aws_endpoint.clone();
    let out = run_isolated(&["-c", config.to_str().unwrap()], &dir, &[("AWS_ENDPOINT_URL", &endpoint)]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = failure_lines(&out);
    let last = lines.last().unwrap();
    assert!(last.contains(" ERROR configuration: "), "{last}");
    assert!(last.ends_with(" stage=configuration exit_code=2"), "{last}");
    for part in [
        "KMS could not decrypt it: no AWS credentials found (tried AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the profile in ~/.aws/config and ~/.aws/credentials",
        "the ECS task role and the EC2 instance role",
        "set AWS_PROFILE (after `aws sso login` for an SSO profile), export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with a task role",
    ] {
        assert!(last.contains(part), "{part}: {last}");
    }

    // With JSON logs: JSON lines only, one at ERROR, no SDK dump in any of them.
    let config = write_config(&env, &dir, &[("LOG_FORMAT", "json")]).await;
    let out = run_isolated(&["-c", config.to_str().unwrap()], &dir, &[("AWS_ENDPOINT_URL", &endpoint)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let levels: Vec<String> = stderr
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"));
            v["level"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(levels.iter().filter(|l| *l == "ERROR").count(), 1, "{stderr}");
    assert!(levels.iter().all(|l| l == "INFO" || l == "ERROR"), "{stderr}");
    assert!(stderr.contains("no AWS credentials found"), "{stderr}");
    for dump in ["CredentialsNotLoaded", "Some(", "DispatchFailure", "ConnectorError"] {
        assert!(!stderr.contains(dump), "SDK debug output ({dump}): {stderr}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_aws_endpoint_is_named_in_one_line() {
    let env = TestEnv::new().await;
    let dir = tempdir();
    let config = write_config(&env, &dir, &[]).await;
    let vars = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let out = run_isolated(&["-c", config.to_str().unwrap()], &dir, &vars);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = failure_lines(&out);
    let last = lines.last().unwrap();
    assert!(
        last.contains("KMS could not decrypt it: kms:Decrypt: cannot reach http://127.0.0.1:1 (AWS_ENDPOINT_URL): Connection refused"),
        "{last}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn each_error_is_printed_once_in_text_and_in_json() {
    let env = TestEnv::new().await;
    let dir = tempdir();
    let config = write_config(&env, &dir, &[("KINESIS_BATCH_SIZE", "900")]).await;
    let out = run_bin(&["-c", config.to_str().unwrap()], &env, None);
    assert_eq!(out.status.code(), Some(2));
    let lines = failure_lines(&out);
    assert_eq!(lines.join("\n").matches("KINESIS_BATCH_SIZE").count(), 1, "{lines:?}");

    // With JSON logs every line is JSON, and the error is one of them, at ERROR.
    let config = write_config(&env, &dir, &[("KINESIS_BATCH_SIZE", "900"), ("LOG_FORMAT", "json")]).await;
    let out = run_bin(&["-c", config.to_str().unwrap()], &env, None);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert_eq!(errors[0]["exit_code"], 2, "{stderr}");
    assert_eq!(stderr.matches("KINESIS_BATCH_SIZE").count(), 1, "{stderr}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_run_names_its_configuration_file_once_even_at_debug() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    let dir = tempdir();
    let config = write_config(&env, &dir, &[("LOG_LEVEL", "debug")]).await;
    let out = run_bin(&["-c", config.to_str().unwrap()], &env, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("configuration file").count(), 1, "{stderr}");
    env.cleanup().await;
}
