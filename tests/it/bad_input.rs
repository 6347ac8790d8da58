//! Bad input end to end: each case ends with one clear line and loses nothing (the cursor
//! never moves past an unsent record). Invalid YAML and a wrong KMS ciphertext are in
//! `binary.rs` (`configuration_errors_exit_2_naming_the_variable`).

use pc_reserve_poller::app::AppError;
use pc_reserve_poller::pipeline::RunError;
use sqlx::{Connection as _, Executor as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{TestEnv, by_key, many_rows, p, row};

/// Asserts the error is one line and the run sent nothing and kept the cursor.
async fn nothing_lost(env: &TestEnv, err: &AppError, cursor_before: Option<&str>) {
    let text = err.to_string();
    eprintln!("outcome: {text}");
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(env.sent().await.is_empty(), "nothing sent");
    assert_eq!(env.cursor_object().await.as_deref(), cursor_before, "cursor untouched");
}

#[tokio::test]
async fn a_truncated_cursor_object_stops_the_run() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    let bad = r#"{"pcr_key": "1", "pcr_date_ti"#;
    env.put_cursor_object(bad).await;
    let err = env.run(&[]).await.unwrap_err();
    assert!(err.to_string().contains("is not a valid cursor object"), "{err}");
    assert_eq!(err.exit_code(), 1);
    nothing_lost(&env, &err, Some(bad)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_malformed_cursor_object_stops_the_run() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    let bad = r#"{"pcr_key": "one", "pcr_date_time": "yesterday"}"#;
    env.put_cursor_object(bad).await;
    let err = env.run(&[]).await.unwrap_err();
    assert!(err.to_string().contains("is not a valid cursor object"), "{err}");
    nothing_lost(&env, &err, Some(bad)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_cursor_in_the_future_stops_the_run() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    let future = r#"{"pcr_key": "1", "pcr_date_time": "2999-01-01 00:00:00"}"#;
    env.put_cursor_object(future).await;
    let err = env.run(&[]).await.unwrap_err();
    assert!(matches!(err, AppError::Run(RunError::CursorInFuture { .. })), "{err}");
    assert!(err.to_string().contains("ahead of Envisionware's clock"), "{err}");
    nothing_lost(&env, &err, Some(future)).await;
    env.cleanup().await;
}

/// An HTTP server on loopback answering every request with `status` and `body`.
async fn fixed_http(status: &'static str, body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/api/v0.1/current-schemas/PcReserve")
}

async fn schema_case(status: &'static str, body: String, expect: &str) {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    let url = fixed_http(status, body).await;
    let err = env.run(&[("PC_RESERVE_SCHEMA_URL", Some(&url))]).await.unwrap_err();
    assert!(matches!(err, AppError::Schema(_)), "{err}");
    assert!(err.to_string().starts_with("schema: ") && err.to_string().contains(expect), "{err}");
    nothing_lost(&env, &err, None).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_schema_endpoint_answering_500_stops_the_run() {
    schema_case("500 Internal Server Error", "{}".into(), "HTTP 500").await;
}

#[tokio::test]
async fn a_schema_endpoint_answering_garbage_stops_the_run() {
    schema_case(
        "200 OK",
        "<html>maintenance</html>".into(),
        "schema: schema response is malformed: not JSON (",
    )
    .await;
}

#[tokio::test]
async fn an_incompatible_schema_stops_the_run() {
    let schema = r#"{"type": "record", "name": "PcReserve", "fields": [{"name": "key", "type": "string"}]}"#;
    let body = serde_json::json!({"data": {"schema": schema}}).to_string();
    schema_case("200 OK", body, "schema: schema is incompatible: it lacks the field ").await;
}

#[tokio::test]
async fn null_very_long_and_non_utf8_values_are_sent_and_nothing_is_skipped() {
    let env = TestEnv::new().await;
    let mut c = sqlx::MySqlConnection::connect(&env.mysql_url()).await.unwrap();
    c.execute("ALTER TABLE strad_bci MODIFY pcrBranch VARBINARY(255) NULL").await.unwrap();
    let mut nulls = row(1, None, "2024-06-01 10:00:00");
    (nulls.minutes, nulls.branch, nulls.area, nulls.staff_override) = (None, None, None, None);
    let mut long = row(2, Some(&"7".repeat(255)), "2024-06-01 10:00:01");
    long.area = Some("é".repeat(255));
    env.insert_rows(&[nulls, long]).await;
    sqlx::query("INSERT INTO strad_bci (pcrKey, pcrUserID, pcrDateTime, pcrBranch) VALUES (3, '2111', '2024-06-01 10:00:02', x'4D6964FF4D616E')")
        .execute(&mut c)
        .await
        .unwrap();
    let s = env.run(&[]).await.unwrap();
    assert_eq!(s.records(), 3);
    let sent = by_key(&env.sent().await);
    assert_eq!(sent[&p("1")].branch, None);
    assert_eq!(sent[&p("1")].patron_retrieval_status.as_deref(), Some("missing"));
    assert_eq!(sent[&p("2")].area.as_deref(), Some("é".repeat(255).as_str()));
    assert_eq!(sent[&p("3")].branch.as_deref(), Some("Mid\u{FFFD}Man"), "invalid byte replaced");
    assert_eq!(env.cursor().await.map(|c| c.key), Some(3));
    env.cleanup().await;
}

#[tokio::test]
async fn a_record_too_large_for_kinesis_stops_the_run_before_its_batch_is_sent() {
    let env = TestEnv::new().await;
    let mut c = sqlx::MySqlConnection::connect(&env.mysql_url()).await.unwrap();
    c.execute("ALTER TABLE strad_bci MODIFY pcrArea LONGTEXT NULL").await.unwrap();
    let mut rows = many_rows(6);
    rows[4].area = Some("x".repeat(1_100_000));
    env.insert_rows(&rows).await;
    // Batches of 2: rows 1-4 go out, the batch holding row 5 is refused whole.
    let err = env.run(&[("ENVISIONWARE_BATCH_SIZE", Some("2"))]).await.unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("Kinesis: a record of") && text.contains("1 MiB"), "{text}");
    assert!(!text.contains('\n'));
    assert_eq!(by_key(&env.sent().await).len(), 4);
    assert_eq!(env.cursor().await.map(|c| c.key), Some(4), "the cursor stops before the unsent record");
    env.cleanup().await;
}
