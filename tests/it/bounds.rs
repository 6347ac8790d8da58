//! Bounded inputs: each bound fed one byte over it (and, where it matters, exactly at it).
//! The S3 cursor and lease objects (4096 bytes), the schema response (256 KiB) and its
//! redirects; secrets on the command line; a lease owner that would forge a log line.

use pc_reserve_poller::app::AppError;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::binary::{run_bin, tempdir, write_config};
use crate::support::{TestEnv, many_rows, s3_client};

/// `text` padded with spaces (still the same JSON) to exactly `len` bytes.
fn padded(text: &str, len: usize) -> String {
    format!("{text}{}", " ".repeat(len - text.len()))
}

#[tokio::test]
async fn a_cursor_object_one_byte_over_4096_is_refused_naming_it_and_nothing_is_written() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    let cursor = r#"{"pcr_key": "0", "pcr_date_time": "2024-06-01 10:00:00"}"#;
    let over = padded(cursor, 4097);
    env.put_cursor_object(&over).await;
    let err = env.run(&[]).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.exit_code(), 1);
    assert!(
        text.starts_with(&format!(
            "cursor store: s3://{}/{}: the object is 4097 bytes, more than the 4096 bytes it may hold; it was not read",
            env.bucket, env.cursor_key
        )),
        "{text}"
    );
    assert!(env.sent().await.is_empty());
    assert_eq!(env.cursor_object().await.as_deref(), Some(over.as_str()), "nothing written");

    // At the cap it is read (and is the cursor it holds).
    env.put_cursor_object(&padded(cursor, 4096)).await;
    let summary = env.run(&[]).await.unwrap();
    assert_eq!(summary.reservations, 3);
    env.cleanup().await;
}

#[tokio::test]
async fn a_lease_object_one_byte_over_4096_is_refused_naming_it_and_nothing_is_written() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    env.put_cursor_object(r#"{"pcr_key": "0", "pcr_date_time": "2024-06-01 10:00:00"}"#).await;
    let lease_key = format!("{}.lease", env.cursor_key);
    let s3 = s3_client(&env.sdk);
    let put = |body: String| {
        let s3 = s3.clone();
        let (bucket, key) = (env.bucket.clone(), lease_key.clone());
        async move { s3.put_object().bucket(bucket).key(key).body(body.into_bytes().into()).send().await.unwrap() }
    };
    // An expired lease: taken over when it can be read.
    let expired = r#"{"owner": "crashed", "acquired_at": "2024-01-01T00:00:00Z", "expires_at": "2024-01-01T00:02:00Z"}"#;
    put(padded(expired, 4097)).await;
    let err = env.run(&[]).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "lease: s3://{}/{lease_key}: the object is 4097 bytes, more than the 4096 bytes it may hold; it was not read",
            env.bucket
        )),
        "{text}"
    );
    assert!(matches!(err, AppError::Lease(_)), "{err:?}");
    assert!(env.sent().await.is_empty());
    let body = s3.get_object().bucket(&env.bucket).key(&lease_key).send().await.unwrap();
    assert_eq!(body.body.collect().await.unwrap().into_bytes().len(), 4097, "the lease is untouched");

    put(padded(expired, 4096)).await;
    assert_eq!(env.run(&[]).await.unwrap().reservations, 3);
    env.cleanup().await;
}

/// An HTTP server on loopback answering every request with `head` (status line and
/// headers, without the blank line) and `body`; `content-length` when `with_length`,
/// else the body runs to the end of the connection.
async fn http(head: String, body: Vec<u8>, with_length: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let (head, body) = (head.clone(), body.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let length =
                    if with_length { format!("content-length: {}\r\n", body.len()) } else { String::new() };
                let response = format!("{head}\r\n{length}connection: close\r\n\r\n");
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    format!("http://{addr}/api/v0.1/current-schemas/PcReserve")
}

/// The reference schema response, padded with spaces (still the same JSON) to `len` bytes.
fn schema_response(len: usize) -> Vec<u8> {
    let body =
        std::str::from_utf8(include_bytes!("../fixtures/PcReserve-schema-response.json")).unwrap().trim_end();
    padded(body, len).into_bytes()
}

#[tokio::test]
async fn a_schema_response_one_byte_over_256_kib_is_refused() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    for with_length in [true, false] {
        let url = http(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json".into(),
            schema_response(262_145),
            with_length,
        )
        .await;
        let err = env
            .run(&[("PC_RESERVE_SCHEMA_URL", Some(&url)), ("RETRY_ATTEMPTS", Some("3"))])
            .await
            .unwrap_err();
        let expected = if with_length {
            "schema: schema endpoint: the response is 262145 bytes, more than the 262144 bytes a schema response may hold"
        } else {
            "schema: schema endpoint: the response is more than the 262144 bytes a schema response may hold"
        };
        assert_eq!(err.to_string(), expected);
        assert!(env.sent().await.is_empty());
    }
    // At the cap it is read.
    let url =
        http("HTTP/1.1 200 OK\r\ncontent-type: application/json".into(), schema_response(262_144), false)
            .await;
    assert_eq!(env.run(&[("PC_RESERVE_SCHEMA_URL", Some(&url))]).await.unwrap().reservations, 3);
    env.cleanup().await;
}

#[tokio::test]
async fn a_schema_redirect_is_not_followed() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    // The redirect leads to the real schema: following it would succeed.
    let head = format!("HTTP/1.1 302 Found\r\nlocation: {}", env.stack.schema_url);
    let url = http(head, Vec::new(), true).await;
    let err = env.run(&[("PC_RESERVE_SCHEMA_URL", Some(&url))]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "schema: schema endpoint: HTTP 302 Found: redirects are not followed; set PC_RESERVE_SCHEMA_URL to the address that answers"
    );
    assert!(env.sent().await.is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn a_secret_given_with_set_draws_a_warning_and_a_lease_owner_cannot_forge_a_line() {
    let env = TestEnv::new().await;
    let dir = tempdir();
    let config = write_config(&env, &dir, &[]).await;
    let config = config.to_str().unwrap();
    // The salt, given on the command line: a WARN naming the variable, never its value.
    let salt = env.variables()["BCRYPT_SALT"].clone();
    let out =
        run_bin(&["-c", config, "--set", &format!("BCRYPT_SALT={salt}"), "pseudonymize", "x"], &env, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warning = stderr.lines().find(|l| l.contains("WARN")).unwrap_or_else(|| panic!("no WARN: {stderr}"));
    assert!(
        warning.contains("a secret given with --set is visible to every user of this machine in the process list; set it in the environment or the file's ENCRYPTED_VARIABLES instead variable=\"BCRYPT_SALT\""),
        "{warning}"
    );
    assert!(!stderr.contains(&salt[7..]), "{stderr}");
    // In the environment: no warning.
    let out = run_bin(&["-c", config, "pseudonymize", "x"], &env, None);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("WARN"));

    // A lease held by an owner whose name carries a newline and a forged log line.
    let forged = "2026-12-01T00:00:00.000000Z  INFO run finished summary=batches=0";
    // A line feed (the failure line joins a message's lines), then a carriage return and a
    // terminal escape that would wipe what came before on a screen (escaped by the writer).
    let owner = format!("vm/1/x\n{forged}\r\u{1b}[2Kcleared");
    let lease = serde_json::json!({"owner": owner, "acquired_at": "2026-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z"});
    s3_client(&env.sdk)
        .put_object()
        .bucket(&env.bucket)
        .key(format!("{}.lease", env.cursor_key))
        .body(lease.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    let out = run_bin(&["-c", config, "run"], &env, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(!stderr.lines().any(|l| l.starts_with(forged)), "a forged line: {stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.contains(" WARN lease: another runner holds the lease s3://"), "{last}");
    // Escaped as `\r\x1b` by tracing-subscriber's own formatter, or as `\r\u{1b}` by the
    // writer (src/logging.rs) for what reaches it unescaped.
    assert!(last.contains(&format!("(owner vm/1/x {forged}\\r\\")), "kept on its line, escaped: {last}");
    assert!(last.contains("[2Kcleared, until 2999-01-01T00:00:00Z)"), "{last}");
    assert!(!stderr.contains('\r') && !stderr.contains('\u{1b}'), "{stderr:?}");
    std::fs::remove_dir_all(&dir).unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn kms_key_id_pins_the_key_of_the_encrypted_variables() {
    use base64::Engine as _;
    let env = TestEnv::new().await;
    let dir = tempdir();
    // A key of its own, which did not encrypt the file.
    let (_, other) = crate::binary::kms_key(&env).await;
    let config = write_config(&env, &dir, &[("KMS_KEY_ID", other.as_str())]).await;
    let text = std::fs::read_to_string(&config).unwrap();
    let out = run_bin(&["-c", config.to_str().unwrap(), "check"], &env, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "BCRYPT_SALT: KMS could not decrypt it: the ciphertext was made under another key than KMS_KEY_ID ({other}): IncorrectKeyException"
        )),
        "{stdout}"
    );
    // The key that did: moto's ciphertext starts with its key id (36 characters).
    let salt_line = text.lines().find(|l| l.trim_start().starts_with("BCRYPT_SALT:")).unwrap();
    let blob =
        base64::engine::general_purpose::STANDARD.decode(salt_line.split(": ").nth(1).unwrap()).unwrap();
    let key = String::from_utf8(blob[..36].to_vec()).unwrap();
    std::fs::write(&config, text.replace(&format!("KMS_KEY_ID: '{other}'"), &format!("KMS_KEY_ID: '{key}'")))
        .unwrap();
    let out = run_bin(&["-c", config.to_str().unwrap(), "pseudonymize", "x"], &env, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
    env.cleanup().await;
}
