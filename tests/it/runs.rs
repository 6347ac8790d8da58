//! Whole runs through the library against the local stack: the rules of behaviour §4
//! end to end, batching, MAX_BATCHES, IGNORE_CACHE, resuming, tie groups, and
//! `PSEUDONYM_KERNEL=crate` on one thread giving the pseudonyms bcrypt itself computes.

use crate::support::{SALT, TestEnv, by_key, dt, p, row};
use pc_reserve_poller::app::AppError;
use pc_reserve_poller::domain::{Cursor, RetrievalStatus};
use pc_reserve_poller::pipeline::RunError;

#[tokio::test]
async fn a_run_applies_every_rule_of_section_4() {
    let env = TestEnv::new().await;
    // Sierra: a plain patron with Redshift data, one without, a barcode shared by two
    // patrons, a patron with conflicting rows, home library variants, a barcode that
    // itself starts with `b`, a barcode with a quote, a patron whose view barcode differs.
    env.insert_patron(1001, "23333000000001", Some(10), Some(1), Some("sa   ")).await;
    env.insert_geo(1001, "10018", "36061011300").await;
    env.insert_patron(1002, "23333000000002", Some(3), Some(2), Some("none")).await;
    env.insert_phrase(1003, "23333000000003").await;
    env.insert_phrase(1004, "23333000000003").await;
    env.insert_patron(1005, "23333000000005", Some(10), Some(1), Some("mm")).await;
    env.insert_patron_row(1005, Some("23333000000005"), Some(11), Some(1), Some("mm")).await;
    env.insert_patron(1006, "23333000000006", Some(1), None, Some("  ")).await;
    env.insert_patron(1007, "b2333300000007", Some(2), Some(3), Some("hu")).await;
    env.insert_patron(1008, "2333'3000008", Some(4), Some(4), Some("ag")).await;
    env.insert_phrase(1009, "23333000000009").await;
    env.insert_patron_row(1009, Some("99999999999999"), Some(5), Some(6), Some("jm")).await;
    env.insert_geo(1009, "10451", "36005000100").await;
    env.insert_geo(1009, "10452", "36005000200").await;
    env.insert_patron_row(1010, Some("23333000000010"), Some(7), Some(7), Some("ew")).await;
    let long = format!("2{}", "9".repeat(70));

    let mut rows = vec![
        row(1, Some("23333000000001"), "2024-05-01 09:00:00"),
        row(2, Some("23333000000002"), "2024-05-01 09:05:00"),
        row(3, Some("23333000000003"), "2024-05-01 09:10:00"),
        row(4, Some("23333000000005"), "2024-05-01 09:15:00"),
        row(5, Some("23333000000006"), "2024-05-01 09:20:00"),
        row(6, Some("b2333300000007"), "2024-05-01 09:25:00"),
        row(7, Some("2333'3000008"), "2024-05-01 09:30:00"),
        row(8, Some("23333000000009"), "2024-05-01 09:35:00"),
        row(9, Some("25555000000123"), "2024-05-01 09:40:00"),
        row(10, Some("21111000000000"), "2024-05-01 09:45:00"),
        row(11, None, "2024-05-01 09:50:00"),
        row(12, Some(""), "2024-05-01 09:55:00"),
        row(13, Some(&long), "2024-05-01 23:59:59"),
        row(14, Some("23333000000010"), "2024-05-02 00:00:00"),
        row(15, Some("'; DROP TABLE strad_bci; --"), "2024-05-02 00:00:01"),
    ];
    rows[0].branch = Some("Biblioteca Hispánica — Ñ".into());
    rows[1].minutes = None;
    rows[1].area = None;
    rows[1].staff_override = Some("StaffOverride".into());
    let mut undated = row(99, Some("23333000000001"), "2024-05-01 09:00:00");
    undated.date_time = None;
    rows.push(undated);
    env.insert_rows(&rows).await;

    let summary = env.run(&[]).await.unwrap();
    assert_eq!(summary.reservations, 15);
    assert_eq!(summary.batches, 1);
    let sent = env.sent().await;
    assert_eq!(sent.len(), 15, "one record per dated reservation");
    let recs = by_key(&sent);
    let rec = |k: i64| &recs[&p(&k.to_string())];

    let r = rec(1);
    assert_eq!(r.patron_id, p("1001"));
    assert_eq!(r.patron_retrieval_status.as_deref(), Some("found"));
    assert_eq!(
        (r.ptype_code, r.pcode3, r.patron_home_library_code.as_deref()),
        (Some(10), Some(1), Some("sa"))
    );
    assert_eq!((r.postal_code.as_deref(), r.geoid.as_deref()), (Some("10018"), Some("36061011300")));
    assert_eq!(r.transaction_et.as_deref(), Some("2024-05-01"));
    assert_eq!(r.branch.as_deref(), Some("Biblioteca Hispánica — Ñ"));
    assert_eq!(
        (r.minutes_used, r.area.as_deref(), r.staff_override.as_deref()),
        (Some(45), Some("Floor 2"), None)
    );

    let r = rec(2);
    assert_eq!(
        (r.patron_home_library_code.as_deref(), r.postal_code.as_deref()),
        (None, None),
        "'none' is NULL; not in Redshift"
    );
    assert_eq!(
        (r.minutes_used, r.area.as_deref(), r.staff_override.as_deref()),
        (None, None, Some("StaffOverride"))
    );

    let r = rec(3);
    assert_eq!(
        r.patron_retrieval_status.as_deref(),
        Some("missing"),
        "a barcode shared by two patrons maps to none"
    );
    assert_eq!(r.patron_id, p("barcode 23333000000003"));

    let r = rec(4);
    assert_eq!(
        (r.patron_id.as_str(), r.ptype_code, r.pcode3),
        (p("1005").as_str(), None, None),
        "conflicting rows"
    );
    assert_eq!(r.patron_home_library_code, None);

    assert_eq!(rec(5).patron_home_library_code, None, "blank home library");
    assert_eq!(rec(5).pcode3, None);
    assert_eq!(
        (rec(6).patron_id.as_str(), rec(6).ptype_code),
        (p("1007").as_str(), Some(2)),
        "leading b kept"
    );
    assert_eq!(
        (rec(7).patron_id.as_str(), rec(7).ptype_code),
        (p("1008").as_str(), Some(4)),
        "quote in barcode"
    );

    let r = rec(8);
    assert_eq!((r.patron_id.as_str(), r.ptype_code), (p("1009").as_str(), Some(5)), "id-only match");
    assert_eq!((r.postal_code.as_deref(), r.geoid.as_deref()), (None, None), "duplicated in Redshift");

    assert_eq!(rec(9).patron_retrieval_status.as_deref(), Some("guest_pass"));
    assert_eq!(rec(9).patron_id, p("barcode 25555000000123"));
    assert_eq!(rec(10).patron_retrieval_status.as_deref(), Some("missing"));
    assert_eq!(rec(11).patron_id, p("barcode "), "NULL barcode");
    assert_eq!(rec(11).patron_retrieval_status.as_deref(), Some("missing"));
    assert_eq!(rec(12).patron_id, p("barcode "), "empty barcode");
    assert_eq!(rec(13).patron_id, p(&format!("barcode {long}")), "long barcode: first 72 bytes");
    assert_eq!(rec(13).transaction_et.as_deref(), Some("2024-05-01"));
    assert_eq!(
        rec(14).patron_retrieval_status.as_deref(),
        Some("missing"),
        "patron row without phrase entry"
    );
    assert_eq!(rec(15).patron_id, p("barcode '; DROP TABLE strad_bci; --"));

    assert_eq!(env.cursor().await, Some(Cursor { date_time: dt("2024-05-02 00:00:01"), key: 15 }));
    // The table survived the adversarial barcode and a second run finds nothing new.
    let again = env.run(&[]).await.unwrap();
    assert_eq!(again.reservations, 0);
    env.cleanup().await;
}

use crate::support::many_rows as many;

#[tokio::test]
async fn several_batches_send_everything_once_and_leave_the_cursor_on_the_last() {
    let env = TestEnv::new().await;
    for i in 0..7 {
        env.insert_patron(5000 + i, &format!("2333300000{i:04}"), Some(10), Some(1), Some("sa")).await;
    }
    env.insert_rows(&many(25)).await;
    let summary =
        env.run(&[("ENVISIONWARE_BATCH_SIZE", Some("10")), ("KINESIS_BATCH_SIZE", Some("4"))]).await.unwrap();
    assert_eq!((summary.batches, summary.reservations, summary.records()), (3, 25, 25));
    assert_eq!(summary.requests, 3 + 3 + 2);
    assert_eq!(summary.by_status.get(&RetrievalStatus::Found), Some(&25));
    assert_eq!(summary.pseudonyms_computed, 25 + 7, "each key and each patron hashed once");
    let sent = by_key(&env.sent().await);
    assert_eq!(sent.len(), 25);
    for k in 1..=25 {
        assert!(sent.contains_key(&p(&k.to_string())), "key {k} missing");
    }
    assert_eq!(
        env.cursor_object().await.as_deref(),
        Some(r#"{"pcr_key": "25", "pcr_date_time": "2024-06-01 10:00:08"}"#)
    );
    env.cleanup().await;
}

#[tokio::test]
async fn max_batches_stops_early_and_the_next_run_resumes_without_duplicates() {
    let env = TestEnv::new().await;
    env.insert_rows(&many(25)).await;
    let first =
        env.run(&[("ENVISIONWARE_BATCH_SIZE", Some("10")), ("MAX_BATCHES", Some("2"))]).await.unwrap();
    assert_eq!((first.batches, first.records()), (2, 20));
    assert_eq!(env.cursor().await.map(|c| c.key), Some(20));
    let second =
        env.run(&[("ENVISIONWARE_BATCH_SIZE", Some("10")), ("MAX_BATCHES", Some("2"))]).await.unwrap();
    assert_eq!((second.batches, second.records()), (1, 5));
    assert_eq!(by_key(&env.sent().await).len(), 25);
    env.cleanup().await;
}

#[tokio::test]
async fn ignore_cache_starts_at_the_pcr_variables_and_writes_no_cursor() {
    let env = TestEnv::new().await;
    env.insert_rows(&many(12)).await;
    // Rows 1-3 share 10:00:00, 4-6 share 10:00:01: start inside the second tie group.
    let s = env
        .run(&[
            ("IGNORE_CACHE", Some("True")),
            ("S3_BUCKET", Some("")),
            ("S3_RESOURCE", None),
            ("PCR_DATE_TIME", Some("2024-06-01 10:00:01 +0000")),
            ("PCR_KEY", Some("4")),
        ])
        .await
        .unwrap();
    assert_eq!(s.records(), 8);
    let sent = by_key(&env.sent().await);
    assert!(!sent.contains_key(&p("4")) && sent.contains_key(&p("5")));
    assert_eq!(env.cursor_object().await, None);
    env.cleanup().await;
}

#[tokio::test]
async fn an_empty_source_sends_nothing_and_succeeds() {
    let env = TestEnv::new().await;
    let s = env.run(&[]).await.unwrap();
    assert_eq!((s.batches, s.records()), (0, 0));
    assert!(env.sent().await.is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn resumes_from_a_cursor_written_by_the_original() {
    let env = TestEnv::new().await;
    env.insert_rows(&many(9)).await;
    env.put_cursor_object(r#"{"pcr_key": "5", "pcr_date_time": "2024-06-01 10:00:01+00:00"}"#).await;
    let s = env.run(&[("PCR_DATE_TIME", None), ("PCR_KEY", None)]).await.unwrap();
    assert_eq!(s.records(), 4, "6, 7, 8, 9");
    let sent = by_key(&env.sent().await);
    for k in 6..=9 {
        assert!(sent.contains_key(&p(&k.to_string())));
    }
    assert_eq!(env.cursor().await.map(|c| c.key), Some(9));
    env.cleanup().await;
}

#[tokio::test]
async fn a_tie_group_across_batch_boundaries_is_sent_exactly_once() {
    let env = TestEnv::new().await;
    let rows: Vec<_> = (1..=9).map(|k| row(k * 10, Some("21111"), "2024-06-01 12:00:00")).collect();
    env.insert_rows(&rows).await;
    let s =
        env.run(&[("ENVISIONWARE_BATCH_SIZE", Some("4")), ("KINESIS_BATCH_SIZE", Some("3"))]).await.unwrap();
    assert_eq!((s.batches, s.records()), (3, 9));
    assert_eq!(by_key(&env.sent().await).len(), 9);
    env.cleanup().await;
}

#[tokio::test]
async fn ignore_kinesis_sends_nothing_but_moves_the_cursor() {
    let env = TestEnv::new().await;
    env.insert_rows(&many(5)).await;
    let s = env.run(&[("IGNORE_KINESIS", Some("true"))]).await.unwrap();
    assert_eq!((s.records(), s.requests), (5, 0));
    assert!(env.sent().await.is_empty());
    assert_eq!(env.cursor().await.map(|c| c.key), Some(5));
    env.cleanup().await;
}

#[tokio::test]
async fn a_missing_cursor_object_without_a_start_is_an_error() {
    let env = TestEnv::new().await;
    env.insert_rows(&many(3)).await;
    let err = env.run(&[("PCR_DATE_TIME", None), ("PCR_KEY", None)]).await.unwrap_err();
    assert!(matches!(err, AppError::Run(RunError::NoCursor(_))), "{err}");
    assert!(err.to_string().contains("PCR_DATE_TIME"), "{err}");
    assert!(env.sent().await.is_empty());
    env.cleanup().await;
}

/// The pseudonym of `input` computed with the bcrypt crate directly.
fn bcrypt_pseudonym(input: &[u8]) -> String {
    use base64::Engine as _;
    let raw = bcrypt::BASE_64.decode(&SALT[7..]).unwrap();
    let salt: [u8; 16] = raw.as_slice().try_into().unwrap();
    let full = bcrypt::hash_with_salt(input, 4, salt).unwrap().format_for_version(bcrypt::Version::TwoB);
    full[29..].to_string()
}

#[tokio::test]
async fn a_run_with_pseudonym_kernel_crate_and_one_thread_sends_the_same_pseudonyms() {
    let env = TestEnv::new().await;
    env.insert_rows(&many(9)).await;
    let summary =
        env.run(&[("PSEUDONYM_KERNEL", Some("crate")), ("PSEUDONYM_THREADS", Some("1"))]).await.unwrap();
    assert_eq!(summary.records(), 9);
    let sent = by_key(&env.sent().await);
    let expected: Vec<String> = (1..=9).map(|k| bcrypt_pseudonym(k.to_string().as_bytes())).collect();
    assert_eq!(
        sent.keys().cloned().collect::<std::collections::BTreeSet<_>>(),
        expected.into_iter().collect()
    );
    env.cleanup().await;
}
