//! The values that flow through a run: the [`Cursor`] kept in S3, a [`Reservation`] read
//! from Envisionware, and the [`PcReserveRecord`] sent to Kinesis.

use std::fmt;

use chrono::{NaiveDate, NaiveDateTime, Timelike as _};
use serde::{Deserialize, Serialize};

/// Where a run resumes: the last reservation already sent, in `(pcrDateTime, pcrKey)` order.
///
/// `pcrDateTime` is a naive New York wall-clock time and is never shifted by a time zone.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    /// `pcrDateTime` of the last reservation sent.
    pub date_time: NaiveDateTime,
    /// `pcrKey` of the last reservation sent.
    pub key: i64,
}

/// Why a cursor could not be read. Holds no cursor value (a pcrKey is an identifier).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    /// The object is not the JSON map the poller writes.
    #[error("not a JSON object with string fields pcr_key and pcr_date_time: {0}")]
    Json(String),
    /// `pcr_date_time` is not a date-time.
    #[error("pcr_date_time is not a date-time like `2023-04-04 04:00:00`")]
    DateTime,
    /// `pcr_key` is not a whole number.
    #[error("pcr_key is not a whole number")]
    Key,
}

/// The S3 object's JSON, as the original service writes it (both fields are strings).
#[derive(Serialize, Deserialize)]
struct CursorJson {
    pcr_key: KeyText,
    pcr_date_time: String,
}

/// `pcr_key` is written as a string; a number is accepted on read.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum KeyText {
    Text(String),
    Number(i64),
}

impl Cursor {
    /// The cursor used when nothing else says where to start: `2023-01-01 00:00:00`, key 0.
    pub(crate) fn default_start() -> Self {
        Self {
            date_time: NaiveDate::from_ymd_opt(2023, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                // A fixed, valid calendar date.
                .unwrap_or_default(),
            key: 0,
        }
    }

    /// Builds a cursor from the textual date-time and key (S3 object or `PCR_*` settings).
    pub(crate) fn parse(date_time: &str, key: &str) -> Result<Self, CursorError> {
        Ok(Self {
            date_time: parse_naive_date_time(date_time).ok_or(CursorError::DateTime)?,
            key: key.trim().parse().map_err(|_| CursorError::Key)?,
        })
    }

    /// Reads the S3 cursor object, including what the original service wrote.
    pub fn from_json(bytes: &[u8]) -> Result<Self, CursorError> {
        let raw: CursorJson = serde_json::from_slice(bytes).map_err(|e| CursorError::Json(e.to_string()))?;
        let key = match raw.pcr_key {
            KeyText::Text(t) => t,
            KeyText::Number(n) => n.to_string(),
        };
        Self::parse(&raw.pcr_date_time, &key)
    }

    /// The S3 object's JSON, byte-compatible with the original service.
    pub(crate) fn to_json(self) -> String {
        // Same bytes as Python's `json.dumps` of the original's dict.
        format!(r#"{{"pcr_key": "{}", "pcr_date_time": "{}"}}"#, self.key, format_date_time(self.date_time))
    }
}

impl fmt::Debug for Cursor {
    /// Shows the date-time only: a pcrKey is an identifier and stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({}, key redacted)", format_date_time(self.date_time))
    }
}

/// Python's `str(datetime)`: `YYYY-MM-DD HH:MM:SS`, plus six fractional digits only
/// when the microseconds are not zero.
pub(crate) fn format_date_time(dt: NaiveDateTime) -> String {
    if dt.and_utc().timestamp_subsec_micros() == 0 {
        dt.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        dt.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    }
}

/// Parses `YYYY-MM-DD[ T]HH:MM[:SS[.fff]]` with an optional offset (`Z`, `+0000`,
/// `+00:00`, ` +0000`), or a bare date. The offset is dropped, never applied:
/// Envisionware times are naive local times. Fractions finer than a microsecond are cut
/// to microseconds, the precision of MySQL's DATETIME, Python's datetime and the cursor
/// object, so what is read is exactly what is written back.
pub(crate) fn parse_naive_date_time(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim();
    let without_offset = strip_offset(text);
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(without_offset, fmt) {
            let nanos = dt.and_utc().timestamp_subsec_nanos();
            return dt.with_nanosecond(nanos - nanos % 1_000);
        }
    }
    NaiveDate::parse_from_str(without_offset, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0))
}

fn strip_offset(text: &str) -> &str {
    if let Some(t) = text.strip_suffix('Z') {
        return t.trim_end();
    }
    // A trailing `+HHMM`, `-HHMM`, `+HH:MM` or `+HH` after the time part.
    let bytes = text.as_bytes();
    for len in [6usize, 5, 3] {
        if bytes.len() > len + 10 {
            let start = bytes.len() - len;
            // Work on bytes: the tail may cut a multi-byte character (no offset then).
            let tail = &bytes[start..];
            let sign = tail[0];
            let rest = &tail[1..];
            let digits_ok = match len {
                6 => rest[2] == b':' && rest.iter().filter(|&&b| b != b':').all(u8::is_ascii_digit),
                _ => rest.iter().all(u8::is_ascii_digit),
            };
            // An ASCII sign at `start` means `start` is a character boundary.
            // A date's own `-` sits at index 4 or 7; an offset follows the time part.
            if (sign == b'+' || sign == b'-') && digits_ok && text[..start].contains(':') {
                return text[..start].trim_end();
            }
        }
    }
    text
}

/// One row of Envisionware's `strad_bci`, as read after the cursor.
#[derive(Clone, PartialEq, Eq)]
pub struct Reservation {
    /// `pcrKey`: unique, the second part of the cursor order.
    pub key: i64,
    /// `pcrUserID`: the patron's barcode (or a guest pass), possibly NULL or empty.
    pub barcode: Option<String>,
    /// `pcrMinutesUsed`.
    pub minutes_used: Option<i64>,
    /// `pcrDateTime`, naive New York time.
    pub date_time: NaiveDateTime,
    /// `pcrBranch`.
    pub branch: Option<String>,
    /// `pcrArea`.
    pub area: Option<String>,
    /// `pcrUserData1`.
    pub staff_override: Option<String>,
}

impl Reservation {
    /// The cursor that points at this reservation.
    pub fn cursor(&self) -> Cursor {
        Cursor { date_time: self.date_time, key: self.key }
    }
}

impl fmt::Debug for Reservation {
    /// Identifiers are redacted: Debug output may end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("date_time", &self.date_time)
            .field("minutes_used", &self.minutes_used)
            .field("branch", &self.branch)
            .finish_non_exhaustive()
    }
}

/// How a reservation's patron was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RetrievalStatus {
    /// The barcode maps to exactly one Sierra patron id.
    Found,
    /// Not found, and the barcode starts with `25555`.
    GuestPass,
    /// Not found otherwise (including NULL or empty barcodes).
    Missing,
}

impl RetrievalStatus {
    /// The text written to the record.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Found => "found",
            Self::GuestPass => "guest_pass",
            Self::Missing => "missing",
        }
    }
}

/// One `PcReserve` record, fields in schema order (behaviour §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcReserveRecord {
    /// Pseudonym of the Sierra patron id, or of `barcode <barcode>` when not found.
    pub patron_id: String,
    /// `found`, `guest_pass` or `missing`.
    pub patron_retrieval_status: Option<String>,
    /// Sierra `ptype_code`.
    pub ptype_code: Option<i32>,
    /// Sierra home library code, trimmed; NULL for empty or `none`.
    pub patron_home_library_code: Option<String>,
    /// Sierra `pcode3`.
    pub pcode3: Option<i32>,
    /// Redshift postal code.
    pub postal_code: Option<String>,
    /// Redshift census tract.
    pub geoid: Option<String>,
    /// Pseudonym of `pcrKey`: stable and unique, so consumers can de-duplicate on it.
    pub key: String,
    /// `pcrMinutesUsed`.
    pub minutes_used: Option<i32>,
    /// The date part of `pcrDateTime`, `YYYY-MM-DD`.
    pub transaction_et: Option<String>,
    /// `pcrBranch`.
    pub branch: Option<String>,
    /// `pcrArea`.
    pub area: Option<String>,
    /// `pcrUserData1`.
    pub staff_override: Option<String>,
}

#[cfg(test)]
mod cursor_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn reads_what_the_original_wrote() {
        let c =
            Cursor::from_json(br#"{"pcr_key": "40000000", "pcr_date_time": "2023-04-04 04:00:00"}"#).unwrap();
        assert_eq!(c.key, 40_000_000);
        assert_eq!(c.date_time, dt("2023-04-04 04:00:00"));
    }

    #[test]
    fn sub_microsecond_fractions_are_cut_so_the_cursor_round_trips() {
        // Found by the cursor fuzz target (fuzz/regressions/cursor/crash-99c71b4b...).
        let c = Cursor::from_json(br#"{"pcr_key": 4, "pcr_date_time": "2023-04-04 04:00:03.2401056+00:00"}"#)
            .unwrap();
        assert_eq!(format_date_time(c.date_time), "2023-04-04 04:00:03.240105");
        assert_eq!(Cursor::from_json(c.to_json().as_bytes()).unwrap(), c);
    }

    #[test]
    fn non_ascii_near_the_end_is_an_error_not_a_panic() {
        // Found by the cursor fuzz target (fuzz/regressions/cursor/crash-35ee3f4b...).
        for text in
            ["2023-04-04 04:0\\\\\u{bb00}1e:", "2023-04-04 04:00:00 \u{e9}1234", "2023-04-04 04:00+\u{e9}"]
        {
            assert_eq!(parse_naive_date_time(text), None, "{text:?}");
        }
    }

    #[test]
    fn accepts_offsets_fractions_and_numeric_keys_without_shifting() {
        for (text, want) in [
            ("2023-01-01 00:00:00 +0000", "2023-01-01 00:00:00"),
            ("2023-01-01 00:00:00+00:00", "2023-01-01 00:00:00"),
            ("2023-01-01 05:00:00-05:00", "2023-01-01 05:00:00"),
            ("2023-01-01T00:00:00Z", "2023-01-01 00:00:00"),
            ("2023-04-04 04:00:00.250000", "2023-04-04 04:00:00.25"),
            ("2023-04-04", "2023-04-04 00:00:00"),
        ] {
            assert_eq!(parse_naive_date_time(text), Some(dt(want)), "{text}");
        }
        let c = Cursor::from_json(br#"{"pcr_key": 7, "pcr_date_time": "2023-04-04 04:00:00"}"#).unwrap();
        assert_eq!(c.key, 7);
    }

    #[test]
    fn writes_the_original_shape() {
        let c = Cursor::parse("2023-04-04 04:00:00", "40000000").unwrap();
        assert_eq!(c.to_json(), r#"{"pcr_key": "40000000", "pcr_date_time": "2023-04-04 04:00:00"}"#);
        let frac = Cursor::parse("2023-04-04 04:00:00.5", "1").unwrap();
        assert!(frac.to_json().contains("2023-04-04 04:00:00.500000"));
        assert_eq!(Cursor::from_json(frac.to_json().as_bytes()).unwrap(), frac);
    }

    #[test]
    fn refuses_malformed_cursors() {
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            br#"{"pcr_key": "1"}"#,
            br#"{"pcr_key": "x", "pcr_date_time": "2023-04-04 04:00:00"}"#,
            br#"{"pcr_key": "1", "pcr_date_time": "yesterday"}"#,
        ] {
            assert!(Cursor::from_json(bad).is_err());
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let c = Cursor::parse("2023-04-04 04:00:00", "40000000").unwrap();
        assert!(!format!("{c:?}").contains("40000000"));
    }
}
