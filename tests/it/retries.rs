//! Retries and timeouts against the local stack: `RETRY_ATTEMPTS` is the number of tries
//! of a failing dependency (transient answers only), and `SCHEMA_TIMEOUT_SECONDS`,
//! `DB_CONNECT_TIMEOUT_SECONDS` and `DB_STATEMENT_TIMEOUT_SECONDS` bound a silent or slow
//! one. Every wait is bounded; elapsed times are asserted as ranges around the setting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::support::{TestEnv, many_rows};

/// An HTTP server on loopback answering every request with `status`, counting requests.
async fn failing_schema_endpoint(status: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v0.1/current-schemas/PcReserve", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                counter.fetch_add(1, Ordering::SeqCst);
                let response =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}");
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, count)
}

#[tokio::test]
async fn retry_attempts_is_the_number_of_tries_of_a_failing_dependency() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(2)).await;
    // A 500 is transient: tried RETRY_ATTEMPTS times. A 404 is not: tried once.
    for (status, attempts, expected) in [
        ("500 Internal Server Error", "1", 1),
        ("500 Internal Server Error", "3", 3),
        ("429 Too Many Requests", "2", 2),
        ("404 Not Found", "3", 1),
    ] {
        let (url, count) = failing_schema_endpoint(status).await;
        let err = env
            .run(&[("PC_RESERVE_SCHEMA_URL", Some(&url)), ("RETRY_ATTEMPTS", Some(attempts))])
            .await
            .unwrap_err();
        let code = &status[..3];
        assert!(err.to_string().starts_with(&format!("schema: schema endpoint: HTTP {code}")), "{err}");
        assert_eq!(count.load(Ordering::SeqCst), expected, "{status}, RETRY_ATTEMPTS={attempts}");
    }
    assert!(env.sent().await.is_empty());
    env.cleanup().await;
}

/// A TCP port that accepts connections and never answers.
async fn silent_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    port
}

#[tokio::test]
async fn schema_and_db_connect_timeouts_bound_a_silent_dependency() {
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(2)).await;
    let port = silent_port().await.to_string();
    let url = format!("http://127.0.0.1:{port}/api/v0.1/current-schemas/PcReserve");

    let started = Instant::now();
    let err = env
        .run(&[
            ("PC_RESERVE_SCHEMA_URL", Some(&url)),
            ("SCHEMA_TIMEOUT_SECONDS", Some("1")),
            ("RETRY_ATTEMPTS", Some("1")),
        ])
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.to_string().starts_with("schema: "), "{err}");
    // 1 s, not the default 60 s.
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(8), "{took:?}: {err}");

    let started = Instant::now();
    let err = env
        .run(&[
            ("ENVISIONWARE_DB_PORT", Some(&port)),
            ("DB_CONNECT_TIMEOUT_SECONDS", Some("1")),
            ("RETRY_ATTEMPTS", Some("1")),
        ])
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.to_string().starts_with("Envisionware: cannot connect"), "{err}");
    // 1 s, not the default 30 s.
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(15), "{took:?}: {err}");
    assert!(env.sent().await.is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn db_statement_timeout_seconds_cancels_a_slow_sierra_query() {
    use sqlx::{Connection as _, Executor as _};
    let env = TestEnv::new().await;
    env.insert_rows(&many_rows(3)).await;
    // Sierra's phrase_entry answers after 3 s.
    let mut pg = sqlx::PgConnection::connect(&env.sierra_url()).await.unwrap();
    pg.execute("DROP TABLE sierra_view.phrase_entry CASCADE").await.unwrap();
    pg.execute(
        "CREATE VIEW sierra_view.phrase_entry AS SELECT 1::bigint AS id, 1::bigint AS record_id, \
         'b'::varchar AS index_tag, ('none' || pg_sleep(3)::text)::varchar AS index_entry",
    )
    .await
    .unwrap();
    drop(pg);
    let started = Instant::now();
    let err = env
        .run(&[("DB_STATEMENT_TIMEOUT_SECONDS", Some("1")), ("RETRY_ATTEMPTS", Some("1"))])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("Sierra"), "{text}");
    // The server's own statement_timeout and the poller's timer race, both set from the
    // variable: either ends the query.
    assert!(
        text.contains("statement timed out after 1s")
            || text.contains("57014: canceling statement due to statement timeout"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "cancelled before the 3 s query ended");
    assert!(env.sent().await.is_empty());
    assert_eq!(env.cursor_object().await, None, "nothing acknowledged, no cursor");
    // The same query under the default (300 s) completes.
    env.run(&[("RETRY_ATTEMPTS", Some("1"))]).await.unwrap();
    assert_eq!(env.sent().await.len(), 3);
    env.cleanup().await;
}
