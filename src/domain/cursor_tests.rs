//! The cursor's text forms, case by case (README, "The cursor"): the offsets and
//! fractions the original wrote are read and dropped, never applied; what is read is
//! written back in the original's exact bytes.

use super::*;

fn dt(text: &str) -> Option<String> {
    parse_naive_date_time(text).map(format_date_time)
}

#[test]
fn every_offset_form_is_dropped_not_applied() {
    for text in [
        "2023-04-04 04:00:00",
        "2023-04-04 04:00:00+0000",
        "2023-04-04 04:00:00 +0000",
        "2023-04-04 04:00:00-0500",
        "2023-04-04 04:00:00 +00:00",
        "2023-04-04 04:00:00-05:00",
        "2023-04-04 04:00:00+05",
        "2023-04-04 04:00:00Z",
        "2023-04-04T04:00:00Z",
        "2023-04-04T04:00:00 Z",
        " 2023-04-04 04:00:00 ",
    ] {
        assert_eq!(dt(text).as_deref(), Some("2023-04-04 04:00:00"), "{text:?}");
    }
}

#[test]
fn dates_minutes_and_fractions_read_as_the_original_wrote_them() {
    assert_eq!(dt("2023-04-04").as_deref(), Some("2023-04-04 00:00:00"), "a bare date's -04 is no offset");
    assert_eq!(dt("2023-04-04 04:05").as_deref(), Some("2023-04-04 04:05:00"));
    assert_eq!(dt("2023-04-04T04:05").as_deref(), Some("2023-04-04 04:05:00"));
    assert_eq!(dt("2023-04-04 04:05:06.5").as_deref(), Some("2023-04-04 04:05:06.500000"));
    assert_eq!(dt("2023-04-04 04:05:06.1234567+0000").as_deref(), Some("2023-04-04 04:05:06.123456"));
    assert_eq!(dt("2023-04-04 04:05:06.000000").as_deref(), Some("2023-04-04 04:05:06"));
    for bad in [
        "",
        "2023-04-04 04:00:00+00:0x",
        "2023-04-04 04:00:00 +12345678",
        "04:00:00",
        "2023-13-01",
        "yesterday",
    ] {
        assert_eq!(dt(bad), None, "{bad:?}");
    }
}

#[test]
fn cursor_objects_parse_to_exact_fields_and_write_the_original_bytes() {
    let c = Cursor::parse("2023-04-04 04:00:00 +0000", " 40000000 ").unwrap();
    assert_eq!(c.key, 40_000_000);
    assert_eq!(format_date_time(c.date_time), "2023-04-04 04:00:00");
    assert_eq!(c.to_json(), r#"{"pcr_key": "40000000", "pcr_date_time": "2023-04-04 04:00:00"}"#);
    let numeric =
        Cursor::from_json(br#"{"pcr_key": 7, "pcr_date_time": "2024-06-01 10:00:00.250000"}"#).unwrap();
    assert_eq!(numeric.key, 7);
    assert_eq!(numeric.to_json(), r#"{"pcr_key": "7", "pcr_date_time": "2024-06-01 10:00:00.250000"}"#);
    assert!(matches!(Cursor::parse("2023-04-04 04:00:00", "4x"), Err(CursorError::Key)));
    assert!(matches!(Cursor::parse("soon", "4"), Err(CursorError::DateTime)));
    assert!(matches!(Cursor::from_json(b"{}"), Err(CursorError::Json(_))));
    // README: the start without a cursor object defaults to 2023-01-01 00:00:00, key 0.
    let start = Cursor::default_start();
    assert_eq!((format_date_time(start.date_time).as_str(), start.key), ("2023-01-01 00:00:00", 0));
    // Order: by date-time, then key.
    let a = Cursor::parse("2024-06-01 10:00:00", "9").unwrap();
    let b = Cursor::parse("2024-06-01 10:00:00", "10").unwrap();
    let later = Cursor::parse("2024-06-01 10:00:01", "1").unwrap();
    assert!(a < b && b < later);
}
