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

    /// The rows in each of two late-row windows, counted together (one statement for
    /// Envisionware); `None` when the source cannot count. Never retried: a failed count
    /// only leaves late rows unmeasured for one run.
    fn count_windows(
        &self,
        _old: WindowBounds,
        _new: WindowBounds,
    ) -> impl Future<Output = Result<Option<(u64, u64)>, DbError>> + Send {
        async { Ok(None) }
    }
}

/// A late-row window's bounds: rows with `after < pcrDateTime` and `(pcrDateTime, pcrKey)
/// <= through` in cursor order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowBounds {
    /// Lower bound on `pcrDateTime`, exclusive.
    pub after: NaiveDateTime,
    /// Upper bound in cursor order, inclusive.
    pub through: Cursor,
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
