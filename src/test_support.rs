//! In-memory stand-ins for the S3 stores, for unit tests only: a lease store with S3's
//! conditional-write semantics and a cursor store that records every save.

use std::sync::{Arc, Mutex};

use chrono::NaiveDateTime;

use crate::domain::Cursor;
use crate::lease::{Deleted, LeaseError, LeaseStore, Written};
use crate::state::{CursorStore, LateWindow, StateError};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An object's body and ETag.
type StoredObject = (Vec<u8>, String);

/// An in-memory lease store with S3's conditional semantics (for unit tests).
#[derive(Debug, Default, Clone)]
pub(crate) struct MemoryLeaseStore {
    pub(crate) object: Arc<Mutex<Option<StoredObject>>>,
    pub(crate) version: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) lost_answers: Arc<std::sync::atomic::AtomicU32>,
    pub(crate) missing_reads: Arc<std::sync::atomic::AtomicU32>,
}

impl MemoryLeaseStore {
    fn next_etag(&self) -> String {
        format!("\"v{}\"", self.version.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
    }

    /// Overwrites the object unconditionally (a test stands in for another runner).
    pub(crate) fn force(&self, body: &str) {
        let etag = self.next_etag();
        *lock(&self.object) = Some((body.as_bytes().to_vec(), etag));
    }

    /// The current body, if any.
    pub(crate) fn body(&self) -> Option<String> {
        lock(&self.object).as_ref().map(|(b, _)| String::from_utf8_lossy(b).into_owned())
    }

    /// The next `n` writes (create, replace, delete) are committed and their answer is
    /// lost: the caller sees what the SDK's retry of the same conditional request would
    /// get (412 for a write, 404 for a delete), as from S3 after a 500.
    pub(crate) fn lose_answers(&self, n: u32) {
        self.lost_answers.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many reads found no object (S3 would have answered them 403 without
    /// `s3:ListBucket`).
    pub(crate) fn missing_reads(&self) -> u32 {
        self.missing_reads.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn answer_lost(&self) -> bool {
        self.lost_answers
            .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| {
                n.checked_sub(1)
            })
            .is_ok()
    }
}

impl LeaseStore for MemoryLeaseStore {
    fn location(&self) -> String {
        "memory/lease".into()
    }

    async fn read(&self) -> Result<Option<(Vec<u8>, String)>, LeaseError> {
        let obj = lock(&self.object).clone();
        if obj.is_none() {
            self.missing_reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(obj)
    }

    async fn create(&self, body: String) -> Result<Written, LeaseError> {
        let mut obj = lock(&self.object);
        if obj.is_some() {
            return Ok(Written::PreconditionFailed);
        }
        let etag = self.next_etag();
        *obj = Some((body.into_bytes(), etag.clone()));
        if self.answer_lost() {
            return Ok(Written::PreconditionFailed);
        }
        Ok(Written::Ok(etag))
    }

    async fn replace(&self, etag: &str, body: String) -> Result<Written, LeaseError> {
        let mut obj = lock(&self.object);
        match obj.as_ref() {
            Some((_, current)) if current == etag => {
                let etag = self.next_etag();
                *obj = Some((body.into_bytes(), etag.clone()));
                if self.answer_lost() {
                    return Ok(Written::PreconditionFailed);
                }
                Ok(Written::Ok(etag))
            }
            _ => Ok(Written::PreconditionFailed),
        }
    }

    async fn delete(&self, etag: &str) -> Result<Deleted, LeaseError> {
        let mut obj = lock(&self.object);
        match obj.as_ref() {
            Some((_, current)) if current == etag => {
                *obj = None;
                if self.answer_lost() {
                    return Ok(Deleted::Gone);
                }
                Ok(Deleted::Ok)
            }
            Some(_) => Ok(Deleted::Changed),
            None => Ok(Deleted::Gone),
        }
    }
}

/// A cursor kept in memory, for unit tests.
#[derive(Debug, Default)]
pub(crate) struct MemoryCursorStore {
    cursor: Mutex<Option<Cursor>>,
    /// Every cursor saved, in order.
    pub saved: Mutex<Vec<Cursor>>,
    caught_up: Mutex<Option<NaiveDateTime>>,
    late: Mutex<Option<LateWindow>>,
}

impl MemoryCursorStore {
    /// A store holding `cursor`.
    pub(crate) fn new(cursor: Option<Cursor>) -> Self {
        Self {
            cursor: Mutex::new(cursor),
            saved: Mutex::new(Vec::new()),
            caught_up: Mutex::new(None),
            late: Mutex::new(None),
        }
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

    fn late_window(&self) -> Option<LateWindow> {
        *self.late.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_late_window(&self, window: LateWindow) {
        *self.late.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(window);
    }
}
