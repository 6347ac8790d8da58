//! Where reservations come from: Envisionware's `strad_bci` table, read in keyset order
//! after the cursor.

pub mod envisionware;

use std::future::Future;

use chrono::NaiveDateTime;

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

    /// What the retention watchdog needs: the oldest row's time and the database's own
    /// `NOW()` (the clock `pcrDateTime` is written in). `None` when the source cannot tell.
    fn retention(&self) -> impl Future<Output = Result<Option<Retention>, DbError>> + Send {
        async { Ok(None) }
    }
}

/// The span of time a source still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The oldest dated row, if any.
    pub oldest: Option<NaiveDateTime>,
    /// The database's clock.
    pub now: NaiveDateTime,
    /// The newest `pcrDateTime` a read at `now` returns: `now` less the settle delay.
    /// Once a run has read everything, every row stamped up to this time has been seen.
    pub readable_through: NaiveDateTime,
}
