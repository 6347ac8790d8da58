//! Where reservations come from: Envisionware's `strad_bci` table, read in keyset order
//! after the cursor.

pub mod envisionware;

use std::future::Future;

use crate::db::DbError;
use crate::domain::{Cursor, Reservation};

/// A source of reservations in `(pcrDateTime, pcrKey)` order.
pub trait ReservationSource {
    /// At most `limit` reservations strictly after `after`, in cursor order.
    fn read_after(
        &self,
        after: Cursor,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Reservation>, DbError>> + Send;
}
