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
