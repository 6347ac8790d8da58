//! The cursor in S3: `{"pcr_key": "...", "pcr_date_time": "..."}` in `S3_BUCKET` at
//! `S3_RESOURCE`, the same object the original service reads and writes (behaviour §8).
//!
//! Writes are conditional: `If-Match` on the ETag this run last saw, or
//! `If-None-Match: *` when the object did not exist, so a second writer is detected
//! instead of silently moving the cursor backwards.
//!
//! Beside the cursor, and without touching its JSON (the original reads the same object),
//! the object carries in its metadata ([`CAUGHT_UP_METADATA`]) how far the last caught-up
//! read saw: Envisionware's clock at that read. The retention watchdog uses it to tell an
//! empty table from rows purged before they were read.

use std::future::Future;
use std::sync::Mutex;

use aws_sdk_s3::primitives::ByteStream;
use chrono::NaiveDateTime;

use crate::domain::{Cursor, CursorError, format_date_time, parse_naive_date_time};

/// The user-defined metadata key (`x-amz-meta-caught-up-through` on the wire) holding the
/// Envisionware time (`YYYY-MM-DD HH:MM:SS`, its naive local clock) up to which the last
/// caught-up read saw every row.
pub const CAUGHT_UP_METADATA: &str = "caught-up-through";

/// A cursor-store failure.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// S3 could not be reached or refused the request.
    #[error("s3://{bucket}/{key}: {message}")]
    S3 {
        /// Bucket.
        bucket: String,
        /// Object key.
        key: String,
        /// What S3 said.
        message: String,
    },
    /// The object exists but is not a cursor.
    #[error("s3://{bucket}/{key} is not a valid cursor object: {source}")]
    Malformed {
        /// Bucket.
        bucket: String,
        /// Object key.
        key: String,
        /// Why.
        #[source]
        source: CursorError,
    },
    /// Someone else wrote the cursor since this run read it.
    #[error(
        "s3://{bucket}/{key} was changed by another writer since this run read it; stopping so two pollers do not send the same records"
    )]
    Conflict {
        /// Bucket.
        bucket: String,
        /// Object key.
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
}

/// The S3 cursor object.
#[derive(Debug)]
pub struct S3CursorStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    /// The ETag of the object as this run last read or wrote it; `Some(None)` when it
    /// was read as absent.
    etag: Mutex<Option<Option<String>>>,
    /// The caught-up mark: read with the object, written with every save.
    caught_up: Mutex<Option<NaiveDateTime>>,
}

impl S3CursorStore {
    /// A store for `s3://bucket/key`.
    pub fn new(client: aws_sdk_s3::Client, bucket: String, key: String) -> Self {
        Self { client, bucket, key, etag: Mutex::new(None), caught_up: Mutex::new(None) }
    }

    /// Keeps the caught-up mark of an object's metadata (an unreadable one counts as
    /// absent: the watchdog is then as strict as without a mark).
    fn remember_caught_up(&self, metadata: Option<&std::collections::HashMap<String, String>>) {
        let mark = metadata.and_then(|m| m.get(CAUGHT_UP_METADATA)).and_then(|t| parse_naive_date_time(t));
        *self.caught_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = mark;
    }

    /// The metadata a save writes: the caught-up mark, if any.
    fn caught_up_metadata(&self) -> Option<std::collections::HashMap<String, String>> {
        let mark = *self.caught_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        mark.map(|t| [(CAUGHT_UP_METADATA.to_string(), format_date_time(t))].into())
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
            Err(e) => return Err(self.s3_error(crate::aws::error_text(&e))),
        };
        let etag = out.e_tag().map(str::to_string);
        self.remember_caught_up(out.metadata());
        let body = out.body.collect().await.map_err(|e| self.s3_error(e.to_string()))?.into_bytes();
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
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .set_metadata(self.caught_up_metadata())
            .body(ByteStream::from(cursor.to_json().into_bytes()));
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
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                if status == Some(412) || status == Some(409) {
                    Err(StateError::Conflict { bucket: self.bucket.clone(), key: self.key.clone() })
                } else {
                    Err(self.s3_error(crate::aws::error_text(&e)))
                }
            }
        }
    }

    fn caught_up_through(&self) -> Option<NaiveDateTime> {
        *self.caught_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_caught_up_through(&self, through: NaiveDateTime) {
        *self.caught_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(through);
    }
}

/// A cursor kept in memory: for `IGNORE_CACHE` runs and tests.
#[derive(Debug, Default)]
pub struct MemoryCursorStore {
    cursor: Mutex<Option<Cursor>>,
    /// Every cursor saved, in order.
    pub saved: Mutex<Vec<Cursor>>,
    /// The caught-up mark.
    caught_up: Mutex<Option<NaiveDateTime>>,
}

impl MemoryCursorStore {
    /// A store holding `cursor`.
    pub fn new(cursor: Option<Cursor>) -> Self {
        Self { cursor: Mutex::new(cursor), saved: Mutex::new(Vec::new()), caught_up: Mutex::new(None) }
    }
}

impl CursorStore for MemoryCursorStore {
    async fn load(&self) -> Result<Option<Cursor>, StateError> {
        Ok(*self.cursor.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    async fn save(&self, cursor: Cursor) -> Result<(), StateError> {
        *self.cursor.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cursor);
        self.saved.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(cursor);
        Ok(())
    }

    fn caught_up_through(&self) -> Option<NaiveDateTime> {
        *self.caught_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_caught_up_through(&self, through: NaiveDateTime) {
        *self.caught_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(through);
    }
}
