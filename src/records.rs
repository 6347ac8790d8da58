//! Builds `PcReserve` records from a batch of reservations (behaviour §4, `docs/behaviour.md`): Sierra for
//! the batch's distinct barcodes, one bcrypt pseudonym per distinct value, Redshift for
//! the distinct pseudonymous patron ids of found patrons.
//!
//! Each reservation travels as one [`PendingRecord`], filled in step by step in the order
//! the pipeline runs them: [`lookup_patrons`], [`hash_patrons`], [`found_patron_ids`] and
//! [`lookup_geo`] once a batch, [`hash_keys`] and [`assemble_records`] once a chunk.

use std::collections::HashMap;

use crate::db::DbError;
use crate::domain::{Cursor, PcReserveRecord, Reservation, RetrievalStatus};
use crate::enrich::{Geo, GeoDirectory, PatronDirectory, PatronMatch};
use crate::pseudonym::{PseudonymJob, Pseudonymizer};

/// Barcodes of guest passes start with this.
const GUEST_PASS_PREFIX: &str = "25555";

/// Which lookup failed while building records.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Sierra lookup failed.
    #[error("Sierra: {0}")]
    Sierra(#[source] DbError),
    /// The Redshift lookup failed.
    #[error("Redshift: {0}")]
    Redshift(#[source] DbError),
}

/// One reservation on its way to becoming a record: its row and its Sierra match, then
/// its pseudonyms as they are computed.
#[derive(Debug, Clone)]
pub struct PendingRecord {
    /// The `strad_bci` row as read.
    pub row: Reservation,
    /// Its Sierra match (`None`: not found).
    pub patron: Option<PatronMatch>,
    /// The pseudonym of its patron, set by [`hash_patrons`] (empty until then).
    pub patron_id: String,
    /// The pseudonym of its key, set by [`hash_keys`] (empty until then).
    pub key: String,
}

/// A built record with what the run summary counts.
#[derive(Debug, Clone)]
pub struct BuiltRecord {
    /// The record as it will be encoded and sent.
    pub record: PcReserveRecord,
    /// How the patron lookups went, counted per status in the run summary.
    pub status: RetrievalStatus,
    /// Its reservation's cursor: where the cursor moves once the record is acknowledged.
    pub cursor: Cursor,
}

/// The retrieval status of a barcode: `found` when it mapped to a patron id, else
/// `guest_pass` for `25555...`, else `missing` (NULL and empty barcodes included).
pub(crate) fn retrieval_status(barcode: Option<&str>, found: bool) -> RetrievalStatus {
    match barcode {
        _ if found => RetrievalStatus::Found,
        Some(b) if b.starts_with(GUEST_PASS_PREFIX) => RetrievalStatus::GuestPass,
        _ => RetrievalStatus::Missing,
    }
}

/// One [`PendingRecord`] per reservation, in order, with its Sierra match (`None`: not
/// found), asking Sierra once for the batch's distinct non-empty barcodes.
pub(crate) async fn lookup_patrons(
    batch: Vec<Reservation>,
    sierra: &impl PatronDirectory,
) -> Result<Vec<PendingRecord>, BuildError> {
    let mut barcodes: Vec<String> = batch
        .iter()
        .filter_map(|r| r.barcode.as_deref())
        .filter(|b| !b.is_empty())
        .map(str::to_string)
        .collect();
    barcodes.sort_unstable();
    barcodes.dedup();
    let patrons = sierra.patrons_by_barcode(&barcodes).await.map_err(BuildError::Sierra)?;
    Ok(batch
        .into_iter()
        .map(|row| {
            let patron =
                row.barcode.as_deref().filter(|b| !b.is_empty()).and_then(|b| patrons.get(b).cloned());
            PendingRecord { row, patron, patron_id: String::new(), key: String::new() }
        })
        .collect())
}

/// Sets each record's patron pseudonym. The patron, as pseudonym input, is the Sierra
/// patron id, else `barcode <barcode>`; these recur from batch to batch, so the
/// pseudonymizer remembers them.
pub(crate) async fn hash_patrons(records: &mut [PendingRecord], pseudonymizer: &Pseudonymizer) {
    let patrons = records
        .iter()
        .map(|r| match &r.patron {
            Some(m) => m.patron_id.to_string(),
            None => format!("barcode {}", r.row.barcode.as_deref().unwrap_or_default()),
        })
        .collect();
    let job = PseudonymJob { unique: Vec::new(), recurring: patrons };
    let hashed = pseudonymizer.pseudonymize_job(job).await.recurring;
    for (record, patron_id) in records.iter_mut().zip(hashed) {
        record.patron_id = patron_id;
    }
}

/// Sets each record's key pseudonym. Keys are unique in a run: hashed, never remembered.
pub(crate) async fn hash_keys(records: &mut [PendingRecord], pseudonymizer: &Pseudonymizer) {
    let job = PseudonymJob {
        unique: records.iter().map(|r| r.row.key.to_string()).collect(),
        recurring: Vec::new(),
    };
    let hashed = pseudonymizer.pseudonymize_job(job).await.unique;
    for (record, key) in records.iter_mut().zip(hashed) {
        record.key = key;
    }
}

/// The distinct pseudonymous ids of the found patrons among `records` (what Redshift is
/// asked about), once [`hash_patrons`] has set them.
pub fn found_patron_ids(records: &[PendingRecord]) -> Vec<String> {
    let mut found: Vec<String> =
        records.iter().filter(|r| r.patron.is_some()).map(|r| r.patron_id.clone()).collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// Looks pseudonymous patron ids up in Redshift (no query when there are none).
pub async fn lookup_geo(
    found_ids: &[String],
    redshift: &impl GeoDirectory,
) -> Result<HashMap<String, Geo>, BuildError> {
    if found_ids.is_empty() {
        return Ok(HashMap::new());
    }
    redshift.geo_by_patron(found_ids).await.map_err(BuildError::Redshift)
}

/// One record per reservation, in order, from its Sierra match, its key and patron
/// pseudonyms, and `geo` (Redshift's answer for the found patrons' pseudonymous ids).
pub fn assemble_records(records: Vec<PendingRecord>, geo: &HashMap<String, Geo>) -> Vec<BuiltRecord> {
    let mut out_of_range = 0usize;
    let built = records
        .into_iter()
        .map(|pending| {
            let PendingRecord { row, patron, patron_id, key } = pending;
            let status = retrieval_status(row.barcode.as_deref(), patron.is_some());
            let g = patron.as_ref().and_then(|_| geo.get(&patron_id));
            let minutes_used = row.minutes_used.and_then(|n| {
                let v = i32::try_from(n).ok();
                out_of_range += usize::from(v.is_none());
                v
            });
            BuiltRecord {
                status,
                cursor: row.cursor(),
                record: PcReserveRecord {
                    patron_retrieval_status: Some(status.as_str().to_string()),
                    ptype_code: patron.as_ref().and_then(|m| m.ptype_code),
                    patron_home_library_code: patron.as_ref().and_then(|m| m.home_library_code.clone()),
                    pcode3: patron.as_ref().and_then(|m| m.pcode3),
                    postal_code: g.and_then(|g| g.postal_code.clone()),
                    geoid: g.and_then(|g| g.geoid.clone()),
                    key,
                    minutes_used,
                    transaction_et: Some(row.date_time.format("%Y-%m-%d").to_string()),
                    branch: row.branch,
                    area: row.area,
                    staff_override: row.staff_override,
                    patron_id,
                },
            }
        })
        .collect();
    if out_of_range > 0 {
        tracing::warn!(
            reservations = out_of_range,
            "pcrMinutesUsed outside Avro's int range: written as null"
        );
    }
    built
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pseudonym::{Salt, pseudonym};
    use chrono::NaiveDateTime;

    /// Sierra with a fixed answer, recording what it was asked.
    struct FakeSierra(HashMap<String, PatronMatch>, std::sync::Mutex<Vec<Vec<String>>>);

    impl PatronDirectory for FakeSierra {
        async fn patrons_by_barcode(
            &self,
            barcodes: &[String],
        ) -> Result<HashMap<String, PatronMatch>, DbError> {
            self.1.lock().unwrap().push(barcodes.to_vec());
            Ok(barcodes.iter().filter_map(|b| self.0.get(b).map(|m| (b.clone(), m.clone()))).collect())
        }
    }

    struct FakeRedshift(HashMap<String, Geo>, std::sync::Mutex<Vec<Vec<String>>>);

    impl GeoDirectory for FakeRedshift {
        async fn geo_by_patron(&self, ids: &[String]) -> Result<HashMap<String, Geo>, DbError> {
            self.1.lock().unwrap().push(ids.to_vec());
            Ok(ids.iter().filter_map(|i| self.0.get(i).map(|g| (i.clone(), g.clone()))).collect())
        }
    }

    fn salt() -> Salt {
        Salt::parse("$2b$04$abcdefghijklmnopqrstuu").unwrap()
    }

    fn p(text: &str) -> String {
        pseudonym(&salt(), text.as_bytes())
    }

    fn reservation(key: i64, barcode: Option<&str>) -> Reservation {
        Reservation {
            key,
            barcode: barcode.map(String::from),
            minutes_used: Some(30),
            date_time: NaiveDateTime::parse_from_str("2023-07-04 13:45:10", "%Y-%m-%d %H:%M:%S").unwrap(),
            branch: Some("Biblioteca Hispánica".into()),
            area: None,
            staff_override: None,
        }
    }

    fn patron(id: i64) -> PatronMatch {
        PatronMatch {
            patron_id: id,
            ptype_code: Some(10),
            pcode3: Some(2),
            home_library_code: Some("sa".into()),
        }
    }

    /// The steps the pipeline runs for a batch sent as one chunk, in its order.
    async fn build_with(
        batch: &[Reservation],
        sierra: &FakeSierra,
        redshift: &FakeRedshift,
        pseudonymizer: &Pseudonymizer,
    ) -> Vec<BuiltRecord> {
        let mut records = lookup_patrons(batch.to_vec(), sierra).await.unwrap();
        hash_patrons(&mut records, pseudonymizer).await;
        let geo = lookup_geo(&found_patron_ids(&records), redshift).await.unwrap();
        hash_keys(&mut records, pseudonymizer).await;
        assemble_records(records, &geo)
    }

    async fn build(
        batch: &[Reservation],
        sierra: HashMap<String, PatronMatch>,
        geo: HashMap<String, Geo>,
    ) -> (Vec<BuiltRecord>, Vec<Vec<String>>, Vec<Vec<String>>) {
        let s = FakeSierra(sierra, Default::default());
        let r = FakeRedshift(geo, Default::default());
        let out = build_with(batch, &s, &r, &Pseudonymizer::new(salt(), 2).unwrap()).await;
        (out, s.1.into_inner().unwrap(), r.1.into_inner().unwrap())
    }

    #[tokio::test]
    async fn found_patron_with_redshift_data() {
        let geo: HashMap<String, Geo> =
            [(p("111"), Geo { postal_code: Some("10018".into()), geoid: Some("36061011300".into()) })].into();
        let (out, _, _) =
            build(&[reservation(7, Some("2333300001"))], [("2333300001".into(), patron(111))].into(), geo)
                .await;
        let r = &out[0].record;
        assert_eq!(r.patron_id, p("111"));
        assert_eq!(r.key, p("7"));
        assert_eq!(r.patron_retrieval_status.as_deref(), Some("found"));
        assert_eq!(
            (r.ptype_code, r.pcode3, r.patron_home_library_code.as_deref()),
            (Some(10), Some(2), Some("sa"))
        );
        assert_eq!((r.postal_code.as_deref(), r.geoid.as_deref()), (Some("10018"), Some("36061011300")));
        assert_eq!(r.transaction_et.as_deref(), Some("2023-07-04"));
        assert_eq!(r.minutes_used, Some(30));
        assert_eq!(r.branch.as_deref(), Some("Biblioteca Hispánica"));
        assert_eq!(r.area, None);
    }

    #[tokio::test]
    async fn found_in_sierra_but_not_in_redshift() {
        let (out, _, asked) = build(
            &[reservation(7, Some("2333300001"))],
            [("2333300001".into(), patron(111))].into(),
            HashMap::new(),
        )
        .await;
        let r = &out[0].record;
        assert_eq!(r.patron_retrieval_status.as_deref(), Some("found"));
        assert_eq!((r.postal_code.as_deref(), r.geoid.as_deref()), (None, None));
        assert_eq!(asked, vec![vec![p("111")]]);
    }

    #[tokio::test]
    async fn guest_pass_and_missing_use_the_barcode_pseudonym_and_skip_redshift() {
        let batch = [
            reservation(1, Some("25555000000000")),
            reservation(2, Some("2133300012345")),
            reservation(3, None),
            reservation(4, Some("")),
            reservation(5, Some("it's")),
        ];
        let (out, sierra_asked, redshift_asked) = build(&batch, HashMap::new(), HashMap::new()).await;
        let statuses: Vec<&str> =
            out.iter().map(|b| b.record.patron_retrieval_status.as_deref().unwrap()).collect();
        assert_eq!(statuses, ["guest_pass", "missing", "missing", "missing", "missing"]);
        assert_eq!(out[0].record.patron_id, p("barcode 25555000000000"));
        assert_eq!(out[2].record.patron_id, p("barcode "));
        assert_eq!(out[3].record.patron_id, p("barcode "));
        assert_eq!(out[4].record.patron_id, p("barcode it's"));
        for b in &out {
            assert_eq!((b.record.ptype_code, b.record.postal_code.as_ref()), (None, None));
        }
        // Sierra is asked for distinct non-empty barcodes; Redshift not at all.
        assert_eq!(sierra_asked[0].len(), 3);
        assert!(redshift_asked.is_empty());
    }

    #[tokio::test]
    async fn sierra_and_redshift_returning_nothing() {
        let (out, _, _) = build(&[reservation(1, Some("2333300001"))], HashMap::new(), HashMap::new()).await;
        assert_eq!(out[0].status, RetrievalStatus::Missing);
    }

    #[tokio::test]
    async fn a_returning_patron_is_looked_up_and_hashed_once() {
        let batch: Vec<Reservation> = (1..=5).map(|k| reservation(k, Some("2333300001"))).collect();
        let s = FakeSierra([("2333300001".into(), patron(111))].into(), Default::default());
        let r = FakeRedshift(HashMap::new(), Default::default());
        let pz = Pseudonymizer::new(salt(), 2).unwrap();
        let out = build_with(&batch, &s, &r, &pz).await;
        assert_eq!(out.len(), 5);
        assert_eq!(s.1.lock().unwrap()[0], vec!["2333300001".to_string()]);
        assert_eq!(r.1.lock().unwrap()[0], vec![p("111")]);
        assert_eq!(pz.stats().computed, 6, "5 keys + 1 patron");
    }

    #[test]
    fn a_found_guest_pass_barcode_is_found() {
        assert_eq!(retrieval_status(Some("25555123"), true), RetrievalStatus::Found);
        assert_eq!(retrieval_status(Some("2555"), false), RetrievalStatus::Missing);
    }
}
