//! Builds `PcReserve` records from a batch of reservations (SPEC section 4): Sierra for
//! the batch's distinct barcodes, one bcrypt pseudonym per distinct value, Redshift for
//! the distinct pseudonymous patron ids of found patrons.

use std::collections::HashMap;

use crate::db::DbError;
use crate::domain::{PcReserveRecord, Reservation, RetrievalStatus};
use crate::enrich::{Geo, GeoDirectory, PatronDirectory, PatronMatch};
use crate::pseudonym::{PseudonymJob, PseudonymResult, Pseudonymizer};

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

/// A built record with what the run summary counts.
#[derive(Debug, Clone)]
pub struct BuiltRecord {
    /// The record.
    pub record: PcReserveRecord,
    /// Its retrieval status.
    pub status: RetrievalStatus,
}

/// The retrieval status of a barcode: `found` when it mapped to a patron id, else
/// `guest_pass` for `25555...`, else `missing` (NULL and empty barcodes included).
pub fn retrieval_status(barcode: Option<&str>, found: bool) -> RetrievalStatus {
    match barcode {
        _ if found => RetrievalStatus::Found,
        Some(b) if b.starts_with(GUEST_PASS_PREFIX) => RetrievalStatus::GuestPass,
        _ => RetrievalStatus::Missing,
    }
}

/// Builds one record per reservation, in order: [`lookup_patrons`], the batch's
/// pseudonyms ([`pseudonym_job`]), then [`finish_records`]. The pipeline runs these
/// three steps of different batches at the same time.
pub async fn build_records(
    batch: &[Reservation],
    sierra: &impl PatronDirectory,
    redshift: &impl GeoDirectory,
    pseudonymizer: &Pseudonymizer,
) -> Result<Vec<BuiltRecord>, BuildError> {
    let matches = lookup_patrons(batch, sierra).await?;
    let pseudonyms = pseudonymizer.pseudonymize_job(pseudonym_job(batch, &matches)).await;
    finish_records(batch, &matches, pseudonyms, redshift).await
}

/// The Sierra match of each reservation, in order (`None`: not found), asking Sierra once
/// for the batch's distinct non-empty barcodes.
pub async fn lookup_patrons(
    batch: &[Reservation],
    sierra: &impl PatronDirectory,
) -> Result<Vec<Option<PatronMatch>>, BuildError> {
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
        .iter()
        .map(|r| r.barcode.as_deref().filter(|b| !b.is_empty()).and_then(|b| patrons.get(b).cloned()))
        .collect())
}

/// The pseudonym inputs of a batch: each reservation's key (unique in a run) and its
/// patron (the Sierra patron id, else `barcode <barcode>`; these recur).
pub fn pseudonym_job(batch: &[Reservation], matches: &[Option<PatronMatch>]) -> PseudonymJob {
    PseudonymJob { unique: key_inputs(batch), recurring: patron_inputs(batch, matches) }
}

/// The reservation keys of a batch, as pseudonym inputs (unique in a run).
pub fn key_inputs(batch: &[Reservation]) -> Vec<String> {
    batch.iter().map(|r| r.key.to_string()).collect()
}

/// The patron of each reservation, as pseudonym input: the Sierra patron id, else
/// `barcode <barcode>` (these recur from batch to batch).
pub fn patron_inputs(batch: &[Reservation], matches: &[Option<PatronMatch>]) -> Vec<String> {
    batch
        .iter()
        .zip(matches)
        .map(|(r, m)| match m {
            Some(m) => m.patron_id.to_string(),
            None => format!("barcode {}", r.barcode.as_deref().unwrap_or_default()),
        })
        .collect()
}

/// The distinct pseudonymous ids of the found patrons among `matches` (what Redshift is
/// asked about), given each reservation's patron pseudonym.
pub fn found_patron_ids(matches: &[Option<PatronMatch>], patron_ids: &[String]) -> Vec<String> {
    let mut found: Vec<String> =
        matches.iter().zip(patron_ids).filter(|(m, _)| m.is_some()).map(|(_, id)| id.clone()).collect();
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

/// Looks the found patrons up in Redshift (once for the batch's distinct pseudonymous
/// ids) and assembles the records, in order.
pub async fn finish_records(
    batch: &[Reservation],
    matches: &[Option<PatronMatch>],
    pseudonyms: PseudonymResult,
    redshift: &impl GeoDirectory,
) -> Result<Vec<BuiltRecord>, BuildError> {
    let PseudonymResult { unique: keys, recurring: patron_ids } = pseudonyms;
    let geo = lookup_geo(&found_patron_ids(matches, &patron_ids), redshift).await?;
    Ok(assemble_records(batch, matches, keys, patron_ids, &geo))
}

/// One record per reservation, in order, from its Sierra match, its key and patron
/// pseudonyms, and `geo` (Redshift's answer for the found patrons' pseudonymous ids).
pub fn assemble_records(
    batch: &[Reservation],
    matches: &[Option<PatronMatch>],
    keys: Vec<String>,
    patron_ids: Vec<String>,
    geo: &HashMap<String, Geo>,
) -> Vec<BuiltRecord> {
    let mut out_of_range = 0usize;
    let records = batch
        .iter()
        .zip(matches)
        .zip(keys.into_iter().zip(patron_ids))
        .map(|((r, m), (key, patron_id))| {
            let status = retrieval_status(r.barcode.as_deref(), m.is_some());
            let g = m.as_ref().and_then(|_| geo.get(&patron_id));
            let minutes_used = r.minutes_used.and_then(|n| {
                let v = i32::try_from(n).ok();
                out_of_range += usize::from(v.is_none());
                v
            });
            BuiltRecord {
                status,
                record: PcReserveRecord {
                    patron_retrieval_status: Some(status.as_str().to_string()),
                    ptype_code: m.as_ref().and_then(|m| m.ptype_code),
                    patron_home_library_code: m.as_ref().and_then(|m| m.home_library_code.clone()),
                    pcode3: m.as_ref().and_then(|m| m.pcode3),
                    postal_code: g.and_then(|g| g.postal_code.clone()),
                    geoid: g.and_then(|g| g.geoid.clone()),
                    key,
                    minutes_used,
                    transaction_et: Some(r.date_time.format("%Y-%m-%d").to_string()),
                    branch: r.branch.clone(),
                    area: r.area.clone(),
                    staff_override: r.staff_override.clone(),
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
    records
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

    async fn build(
        batch: &[Reservation],
        sierra: HashMap<String, PatronMatch>,
        geo: HashMap<String, Geo>,
    ) -> (Vec<BuiltRecord>, Vec<Vec<String>>, Vec<Vec<String>>) {
        let s = FakeSierra(sierra, Default::default());
        let r = FakeRedshift(geo, Default::default());
        let out = build_records(batch, &s, &r, &Pseudonymizer::new(salt(), 2).unwrap()).await.unwrap();
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
        let out = build_records(&batch, &s, &r, &pz).await.unwrap();
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
