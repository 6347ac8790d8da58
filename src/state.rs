//! The cursor in S3: `{"pcr_key": "...", "pcr_date_time": "..."}` in `S3_BUCKET` at
//! `S3_RESOURCE`, the same object the original service reads and writes (behaviour §8).
//!
//! Writes are conditional: `If-Match` on the ETag this run last saw, or
//! `If-None-Match: *` when the object did not exist, so a second writer is detected
//! instead of silently moving the cursor backwards. A write whose answer was lost after
//! S3 committed it (a 500 or a timeout; the SDK's retry of the same conditional request
//! then fails its precondition with 412, or 409 ConditionalRequestConflict) is recognised
//! by reading the object back: the same body is this run's own write, whose ETag is
//! adopted; anything else is another writer.
//!
//! A role without `s3:ListBucket` gets 403 AccessDenied, not 404, for a missing object
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html>): [`S3CursorStore::load`]
//! then fails with [`StateError::Unreadable`], which says the object may not exist and how to
//! create it (`cursor set`), and [`S3CursorStore::create`] creates an object without reading it.
//!
//! Beside the cursor, and without touching its JSON (the original reads the same object),
//! the object carries in its metadata ([`CAUGHT_UP_METADATA`]) how far the last caught-up
//! read saw: Envisionware's clock at that read. The retention watchdog uses it to tell an
//! empty table from rows purged before they were read. It also carries the late-row
//! window ([`LateWindow`]): how many rows Envisionware held just behind the cursor when the
//! last caught-up run ended, which the next one counts again (`docs/delivery.md`, "Late
//! rows behind the cursor").

use std::future::Future;
use std::sync::Mutex;

use aws_sdk_s3::primitives::ByteStream;
use chrono::NaiveDateTime;

use crate::aws::{CappedReadError, STATE_OBJECT_MAX_BYTES};
use crate::domain::{Cursor, CursorError, format_date_time, parse_naive_date_time};

/// The user-defined metadata key (`x-amz-meta-caught-up-through` on the wire) holding the
/// Envisionware time (`YYYY-MM-DD HH:MM:SS`, its naive local clock) up to which the last
/// caught-up read saw every row.
pub(crate) const CAUGHT_UP_METADATA: &str = "caught-up-through";

/// Metadata key: the late-row window's lower bound (exclusive), `YYYY-MM-DD HH:MM:SS`.
pub(crate) const LATE_AFTER_METADATA: &str = "late-window-after";
/// Metadata key: the `pcrDateTime` of the late-row window's upper bound (inclusive).
pub(crate) const LATE_THROUGH_METADATA: &str = "late-window-through";
/// Metadata key: the `pcrKey` of the late-row window's upper bound (inclusive).
pub(crate) const LATE_THROUGH_KEY_METADATA: &str = "late-window-through-key";
/// Metadata key: how many rows the late-row window held when it was counted.
pub(crate) const LATE_ROWS_METADATA: &str = "late-window-rows";

/// The trailing window behind a cursor and how many rows Envisionware held in it when a
/// caught-up run ended: rows with `after < pcrDateTime` and `(pcrDateTime, pcrKey) <=
/// through` in cursor order. Stored beside the cursor; the next caught-up run counts the
/// same bounds again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateWindow {
    /// Lower bound, exclusive: the cursor's time less `LATE_ROW_WINDOW_HOURS`.
    pub after: NaiveDateTime,
    /// Upper bound, inclusive: the cursor at the end of the run.
    pub through: Cursor,
    /// Rows counted in the window.
    pub rows: u64,
}

impl LateWindow {
    /// The window's four metadata entries.
    fn to_metadata(self) -> [(String, String); 4] {
        [
            (LATE_AFTER_METADATA.to_string(), format_date_time(self.after)),
            (LATE_THROUGH_METADATA.to_string(), format_date_time(self.through.date_time)),
            (LATE_THROUGH_KEY_METADATA.to_string(), self.through.key.to_string()),
            (LATE_ROWS_METADATA.to_string(), self.rows.to_string()),
        ]
    }

    /// The window read from an object's metadata; `None` unless all four entries are there
    /// and readable (a cursor written by the original service has none).
    fn from_metadata(m: &std::collections::HashMap<String, String>) -> Option<Self> {
        Some(Self {
            after: parse_naive_date_time(m.get(LATE_AFTER_METADATA)?)?,
            through: Cursor {
                date_time: parse_naive_date_time(m.get(LATE_THROUGH_METADATA)?)?,
                key: m.get(LATE_THROUGH_KEY_METADATA)?.parse().ok()?,
            },
            rows: m.get(LATE_ROWS_METADATA)?.parse().ok()?,
        })
    }
}

/// A cursor-store failure.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// S3 could not be reached or refused the request.
    #[error("s3://{bucket}/{key}: {message}")]
    S3 {
        /// The bucket that holds the cursor object.
        bucket: String,
        /// The cursor object's key in that bucket.
        key: String,
        /// What S3 said.
        message: String,
    },
    /// The object exists but is not a cursor.
    #[error("s3://{bucket}/{key} is not a valid cursor object: {source}")]
    Malformed {
        /// The bucket that holds the cursor object.
        bucket: String,
        /// The cursor object's key in that bucket.
        key: String,
        /// What in the object is not a cursor.
        #[source]
        source: CursorError,
    },
    /// The object is larger than a cursor object can be: it was not read, and nothing
    /// is written over it.
    #[error(
        "s3://{bucket}/{key}: {message}; a cursor object is about 60 bytes of JSON: nothing was written, move it aside or fix it (`pc-reserve-poller cursor set`)"
    )]
    TooLarge {
        /// The bucket that holds the cursor object.
        bucket: String,
        /// The cursor object's key in that bucket.
        key: String,
        /// The size and the cap.
        message: String,
    },
    /// S3 refused to read the object (403): to a role without `s3:ListBucket` this is
    /// also the answer for an object that does not exist.
    #[error(
        "s3://{bucket}/{key}: {message}: the cursor object may not exist yet (without s3:ListBucket on the bucket S3 answers 403 for a missing object), or the role lacks s3:GetObject on it; to start from a given point create it with `pc-reserve-poller cursor set --date-time 'YYYY-MM-DD HH:MM:SS' --key N`"
    )]
    Unreadable {
        /// The bucket that holds the cursor object.
        bucket: String,
        /// The cursor object's key in that bucket.
        key: String,
        /// What S3 said.
        message: String,
    },
    /// Someone else wrote the cursor since this run read it.
    #[error(
        "s3://{bucket}/{key} was changed by another writer since this run read it; stopping so two pollers do not send the same records"
    )]
    Conflict {
        /// The bucket that holds the cursor object.
        bucket: String,
        /// The cursor object's key in that bucket.
        key: String,
    },
}

/// Loads and saves the cursor (a trait so the pipeline can be tested in memory).
pub trait CursorStore {
    /// The stored cursor, or `None` when there is none yet.
    fn load(&self) -> impl Future<Output = Result<Option<Cursor>, StateError>> + Send;
    /// Stores `cursor`, failing with [`StateError::Conflict`] if another writer moved it.
    /// The caught-up mark last loaded or set goes with it.
    fn save(&self, cursor: Cursor) -> impl Future<Output = Result<(), StateError>> + Send;

    /// The Envisionware time up to which the last caught-up read saw every row, as stored
    /// beside the cursor (read by [`Self::load`]); `None` when the cursor was written
    /// without it (by the original service, or by hand).
    fn caught_up_through(&self) -> Option<NaiveDateTime> {
        None
    }

    /// Sets the caught-up mark that the next [`Self::save`] stores beside the cursor.
    fn set_caught_up_through(&self, _through: NaiveDateTime) {}

    /// The late-row window stored beside the cursor (read by [`Self::load`]); `None` when
    /// the cursor was written without one.
    fn late_window(&self) -> Option<LateWindow> {
        None
    }

    /// Sets the late-row window that the next [`Self::save`] stores beside the cursor.
    fn set_late_window(&self, _window: LateWindow) {}
}

/// The S3 cursor object.
#[derive(Debug)]
pub struct S3CursorStore {
    client: aws_sdk_s3::Client,
    target: crate::aws::AwsTarget,
    bucket: String,
    key: String,
    /// The ETag of the object as this run last read or wrote it; `Some(None)` when it
    /// was read as absent.
    etag: Mutex<Option<Option<String>>>,
    /// The caught-up mark: read with the object, written with every save.
    caught_up: Mutex<Option<NaiveDateTime>>,
    /// The late-row window: read with the object, written with every save.
    late: Mutex<Option<LateWindow>>,
}

impl S3CursorStore {
    /// A store for `s3://bucket/key`; `target` is where `client` sends calls (for error
    /// messages).
    pub fn new(
        client: aws_sdk_s3::Client,
        target: crate::aws::AwsTarget,
        bucket: String,
        key: String,
    ) -> Self {
        Self {
            client,
            target,
            bucket,
            key,
            etag: Mutex::new(None),
            caught_up: Mutex::new(None),
            late: Mutex::new(None),
        }
    }

    /// Keeps the caught-up mark and the late-row window of an object's metadata (an
    /// unreadable mark counts as absent: the watchdog is then as strict as without one; an
    /// unreadable window likewise: late rows are then not measured until the next one).
    fn remember_caught_up(&self, metadata: Option<&std::collections::HashMap<String, String>>) {
        let mark = metadata.and_then(|m| m.get(CAUGHT_UP_METADATA)).and_then(|t| parse_naive_date_time(t));
        *self.caught_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = mark;
        let late = metadata.and_then(LateWindow::from_metadata);
        *self.late.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = late;
    }

    /// The metadata a save writes: the caught-up mark and the late-row window, those known.
    fn caught_up_metadata(&self) -> Option<std::collections::HashMap<String, String>> {
        let mark = *self.caught_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let late = *self.late.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut m: std::collections::HashMap<String, String> =
            mark.map(|t| (CAUGHT_UP_METADATA.to_string(), format_date_time(t))).into_iter().collect();
        m.extend(late.into_iter().flat_map(LateWindow::to_metadata));
        (!m.is_empty()).then_some(m)
    }

    /// A PutObject of `body` to the cursor object, carrying the caught-up mark; the caller
    /// adds the condition.
    fn put_cursor(&self, body: &str) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .set_metadata(self.caught_up_metadata())
            .body(ByteStream::from(body.as_bytes().to_vec()))
    }

    /// Reads a cursor object's body, at most [`STATE_OBJECT_MAX_BYTES`].
    async fn read_body(&self, length: Option<i64>, body: ByteStream) -> Result<Vec<u8>, StateError> {
        crate::aws::read_capped(length, body, STATE_OBJECT_MAX_BYTES).await.map_err(|e| match e {
            CappedReadError::TooLarge { .. } => StateError::TooLarge {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                message: e.describe("the object", STATE_OBJECT_MAX_BYTES),
            },
            CappedReadError::Read(_) => self.s3_error(e.describe("the object", STATE_OBJECT_MAX_BYTES)),
        })
    }

    fn s3_error(&self, message: String) -> StateError {
        StateError::S3 { bucket: self.bucket.clone(), key: self.key.clone(), message }
    }

    fn remember(&self, etag: Option<String>) {
        *self.etag.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(etag);
    }
}

impl CursorStore for S3CursorStore {
    async fn load(&self) -> Result<Option<Cursor>, StateError> {
        let got = self.client.get_object().bucket(&self.bucket).key(&self.key).send().await;
        let out = match got {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                self.remember(None);
                return Ok(None);
            }
            Err(e)
                if crate::permissions::is_access_denied(
                    aws_sdk_s3::error::ProvideErrorMetadata::code(&e),
                    crate::permissions::status(&e),
                ) =>
            {
                // S3's own words only: the error itself says what the denial may mean
                // and what to do, which a generic denial text would contradict.
                use aws_sdk_s3::error::ProvideErrorMetadata as _;
                let message = match (e.code(), e.message()) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    (Some(code), None) => code.to_string(),
                    _ => "HTTP 403".to_string(),
                };
                return Err(StateError::Unreadable {
                    bucket: self.bucket.clone(),
                    key: self.key.clone(),
                    message,
                });
            }
            Err(e) => return Err(self.s3_error(crate::aws::error_text(&e, &self.target))),
        };
        let etag = out.e_tag().map(str::to_string);
        self.remember_caught_up(out.metadata());
        let body = self.read_body(out.content_length(), out.body).await?;
        let cursor = Cursor::from_json(&body).map_err(|source| StateError::Malformed {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            source,
        })?;
        self.remember(etag);
        Ok(Some(cursor))
    }

    async fn save(&self, cursor: Cursor) -> Result<(), StateError> {
        let expected = self.etag.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut put = self.put_cursor(&cursor.to_json());
        put = match expected {
            Some(Some(etag)) => put.if_match(etag),
            Some(None) => put.if_none_match("*"),
            None => put,
        };
        match put.send().await {
            Ok(out) => {
                self.remember(out.e_tag().map(str::to_string));
                Ok(())
            }
            Err(e) => match crate::permissions::status(&e) {
                Some(412 | 409) => self.adopt_own_write(&cursor.to_json()).await,
                // The SDK retried and every answer was lost. A write of an unchanged body
                // (the caught-up mark saved at the end of a run) keeps its ETag, so its
                // retries pass their precondition and can all lose their answers: when the
                // object now holds exactly this write, body and mark, it was committed.
                Some(500..=599) => match self.adopt_own_write(&cursor.to_json()).await {
                    Ok(()) => Ok(()),
                    Err(_) => Err(self.s3_error(self.describe_put_error(&e))),
                },
                _ => Err(self.s3_error(self.describe_put_error(&e))),
            },
        }
    }

    fn caught_up_through(&self) -> Option<NaiveDateTime> {
        *self.caught_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_caught_up_through(&self, through: NaiveDateTime) {
        *self.caught_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(through);
    }

    fn late_window(&self) -> Option<LateWindow> {
        *self.late.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_late_window(&self, window: LateWindow) {
        *self.late.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(window);
    }
}

impl S3CursorStore {
    /// Creates the object holding `cursor` only if it does not exist (`If-None-Match: *`),
    /// without reading it first. Returns true when this call created it (or its own
    /// committed creation was retried), false when it already existed; either way the
    /// next [`CursorStore::save`] writes on the object's current ETag after a
    /// [`CursorStore::load`].
    pub(crate) async fn create(&self, cursor: Cursor) -> Result<bool, StateError> {
        let body = cursor.to_json();
        let put = self.put_cursor(&body).if_none_match("*");
        match put.send().await {
            Ok(out) => {
                self.remember(out.e_tag().map(str::to_string));
                Ok(true)
            }
            Err(e) => match crate::permissions::status(&e) {
                Some(412 | 409) => match self.adopt_own_write(&body).await {
                    Ok(()) => Ok(true),
                    Err(StateError::Conflict { .. }) => Ok(false),
                    Err(other) => Err(other),
                },
                _ => Err(self.s3_error(self.describe_put_error(&e))),
            },
        }
    }

    fn describe_put_error<E>(
        &self,
        e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> String
    where
        E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + Send + Sync + 'static,
    {
        crate::permissions::describe(
            e,
            &self.target,
            "s3:PutObject",
            &crate::permissions::s3_object_arn(&self.bucket, &self.key),
        )
    }

    /// After a failed precondition or lost answers: reads the object back; when it holds
    /// exactly `sent` and this store's metadata (the caught-up mark and the late-row
    /// window), this run's own write was committed and its answer lost, so its ETag is
    /// adopted.
    async fn adopt_own_write(&self, sent: &str) -> Result<(), StateError> {
        let read_back = async {
            let out =
                self.client.get_object().bucket(&self.bucket).key(&self.key).send().await.map_err(|e| {
                    crate::permissions::describe(
                        &e,
                        &self.target,
                        "s3:GetObject",
                        &crate::permissions::s3_object_arn(&self.bucket, &self.key),
                    )
                })?;
            let etag = out.e_tag().map(str::to_string);
            let mark = out.metadata().cloned().unwrap_or_default();
            let body = crate::aws::read_capped(out.content_length(), out.body, STATE_OBJECT_MAX_BYTES)
                .await
                .map_err(|e| e.describe("the object", STATE_OBJECT_MAX_BYTES))?;
            Ok::<_, String>((body, etag, mark))
        };
        let (body, etag, mark) = read_back.await.map_err(|message| {
            self.s3_error(format!(
                "the write's precondition failed and reading the object back failed: {message}"
            ))
        })?;
        let sent_mark = self.caught_up_metadata().unwrap_or_default();
        if is_own_write(&body, sent) && mark == sent_mark {
            tracing::debug!("the cursor write was committed and its answer lost; adopting it");
            self.remember(etag);
            Ok(())
        } else {
            Err(StateError::Conflict { bucket: self.bucket.clone(), key: self.key.clone() })
        }
    }
}

/// Whether the object read back after a failed precondition is the write this run sent
/// (its answer lost, the SDK's retry refused): the same body.
pub(crate) fn is_own_write(stored: &[u8], sent: &str) -> bool {
    stored == sent.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_body_is_taken_for_this_runs_own_write() {
        let sent = r#"{"pcr_key":"41","pcr_date_time":"2026-01-01 00:00:00"}"#;
        assert!(is_own_write(sent.as_bytes(), sent));
        assert!(!is_own_write(br#"{"pcr_key":"40","pcr_date_time":"2026-01-01 00:00:00"}"#, sent));
        assert!(!is_own_write(b"", sent));
    }

    #[test]
    fn the_late_window_round_trips_through_metadata_and_needs_all_four_entries() {
        let t = |s: &str| parse_naive_date_time(s).unwrap();
        let w = LateWindow {
            after: t("2026-03-06 14:02:00"),
            through: Cursor { date_time: t("2026-03-06 17:02:00"), key: 3 },
            rows: 3,
        };
        let m: std::collections::HashMap<String, String> = w.to_metadata().into_iter().collect();
        assert_eq!(m["late-window-after"], "2026-03-06 14:02:00");
        assert_eq!(m["late-window-through"], "2026-03-06 17:02:00");
        assert_eq!(m["late-window-through-key"], "3");
        assert_eq!(m["late-window-rows"], "3");
        assert_eq!(LateWindow::from_metadata(&m), Some(w));
        let mut partial = m.clone();
        partial.remove("late-window-rows");
        assert_eq!(LateWindow::from_metadata(&partial), None);
    }

    #[test]
    fn the_unreadable_error_says_the_object_may_be_missing_and_how_to_create_it() {
        let e = StateError::Unreadable {
            bucket: "b".into(),
            key: "k.json".into(),
            message: "AccessDenied: Access Denied".into(),
        };
        let text = e.to_string();
        assert!(!text.contains('\n'));
        assert!(text.contains("s3://b/k.json: AccessDenied: Access Denied"), "{text}");
        assert!(text.contains("may not exist yet"), "{text}");
        assert!(text.contains("s3:ListBucket") && text.contains("s3:GetObject"), "{text}");
        assert!(text.contains("cursor set --date-time"), "{text}");
    }
}
