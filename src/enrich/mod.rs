//! Who made each reservation: Sierra maps barcodes to patrons and their attributes,
//! Redshift maps pseudonymous patron ids to postal codes and census tracts. This module
//! holds the matching rules of behaviour §4 as pure functions; the submodules fetch.

pub mod redshift;
pub mod sierra;

use std::collections::{HashMap, HashSet};
use std::future::Future;

use crate::db::DbError;

/// One `sierra_view.phrase_entry` row that matched a looked-up barcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PhraseEntry {
    /// `index_tag || index_entry`, i.e. `b` followed by the barcode.
    pub tagged_barcode: String,
    /// `record_id`: the Sierra patron id.
    pub record_id: i64,
}

/// One `sierra_view.patron_view` row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PatronRow {
    /// `id`: the patron id.
    pub id: i64,
    /// `barcode` on the patron record (may differ from the phrase entry's).
    pub barcode: Option<String>,
    /// `ptype_code`.
    pub ptype_code: Option<i32>,
    /// `pcode3`.
    pub pcode3: Option<i32>,
    /// Home library code, already trimmed, NULL when empty or `none`.
    pub home_library_code: Option<String>,
}

/// What Sierra says about one barcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatronMatch {
    /// The Sierra patron id.
    pub patron_id: i64,
    /// Patron type, NULL when unknown or ambiguous.
    pub ptype_code: Option<i32>,
    /// Home region, NULL when unknown or ambiguous.
    pub pcode3: Option<i32>,
    /// Home library, NULL when unknown or ambiguous.
    pub home_library_code: Option<String>,
}

/// What Redshift says about one pseudonymous patron id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Geo {
    /// The patron's postal code as `patron_info` holds it.
    pub postal_code: Option<String>,
    /// Census tract.
    pub geoid: Option<String>,
}

/// One `patron_info` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GeoRow {
    /// Pseudonymous patron id (NULL rows are ignored).
    pub patron_id: Option<String>,
    /// The patron's postal code as `patron_info` holds it.
    pub postal_code: Option<String>,
    /// Census tract.
    pub geoid: Option<String>,
}

/// Sierra, as the pipeline sees it.
pub trait PatronDirectory {
    /// Looks up distinct, non-empty barcodes; answers only those that map to a patron.
    fn patrons_by_barcode(
        &self,
        barcodes: &[String],
    ) -> impl Future<Output = Result<HashMap<String, PatronMatch>, DbError>> + Send;
}

/// Redshift, as the pipeline sees it.
pub trait GeoDirectory {
    /// Looks up distinct pseudonymous patron ids; answers only those with exactly one row.
    fn geo_by_patron(
        &self,
        pseudonyms: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Geo>, DbError>> + Send;
}

/// Rule 1: barcode -> patron id. Identical pairs collapse; a barcode that maps to more
/// than one distinct patron id maps to none. Only the one-character tag is removed.
pub(crate) fn patron_ids_by_barcode(entries: &[PhraseEntry]) -> HashMap<String, i64> {
    let mut ids: HashMap<&str, HashSet<i64>> = HashMap::new();
    for e in entries {
        let mut chars = e.tagged_barcode.chars();
        if chars.next() != Some('b') {
            continue;
        }
        ids.entry(chars.as_str()).or_default().insert(e.record_id);
    }
    ids.into_iter()
        .filter_map(|(barcode, ids)| {
            let mut it = ids.into_iter();
            match (it.next(), it.next()) {
                (Some(id), None) => Some((barcode.to_string(), id)),
                _ => None,
            }
        })
        .collect()
}

/// Rules 2 and 3: for each barcode with a patron id, prefer patron rows whose id and
/// barcode both match, else the rows whose id matches; rows that agree on every
/// attribute collapse; if more than one remains the attributes are NULL.
pub(crate) fn match_patrons(ids: &HashMap<String, i64>, rows: &[PatronRow]) -> HashMap<String, PatronMatch> {
    let mut by_id: HashMap<i64, Vec<&PatronRow>> = HashMap::new();
    for r in rows {
        by_id.entry(r.id).or_default().push(r);
    }
    ids.iter()
        .map(|(barcode, &patron_id)| {
            let candidates = by_id.get(&patron_id).map(Vec::as_slice).unwrap_or_default();
            let exact: Vec<&PatronRow> = candidates
                .iter()
                .copied()
                .filter(|r| r.barcode.as_deref() == Some(barcode.as_str()))
                .collect();
            let chosen = if exact.is_empty() { candidates.to_vec() } else { exact };
            let mut distinct: Vec<(Option<i32>, Option<i32>, Option<&str>)> =
                chosen.iter().map(|r| (r.ptype_code, r.pcode3, r.home_library_code.as_deref())).collect();
            distinct.sort_unstable();
            distinct.dedup();
            let m = match distinct.as_slice() {
                [(ptype_code, pcode3, home)] => PatronMatch {
                    patron_id,
                    ptype_code: *ptype_code,
                    pcode3: *pcode3,
                    home_library_code: home.map(str::to_string),
                },
                _ => PatronMatch { patron_id, ptype_code: None, pcode3: None, home_library_code: None },
            };
            (barcode.clone(), m)
        })
        .collect()
}

/// The Redshift rule: NULL patron ids are ignored; an id on more than one row gets no
/// data at all (returned in the second list, for a warning).
pub(crate) fn geo_by_patron(rows: Vec<GeoRow>) -> (HashMap<String, Geo>, Vec<String>) {
    let mut seen: HashMap<String, (Geo, usize)> = HashMap::new();
    for r in rows {
        let Some(id) = r.patron_id else { continue };
        let entry = seen.entry(id).or_insert_with(|| (Geo::default(), 0));
        entry.0 = Geo { postal_code: r.postal_code, geoid: r.geoid };
        entry.1 += 1;
    }
    let mut duplicated = Vec::new();
    let unique = seen
        .into_iter()
        .filter_map(|(id, (geo, n))| {
            if n == 1 {
                Some((id, geo))
            } else {
                duplicated.push(id);
                None
            }
        })
        .collect();
    duplicated.sort_unstable();
    (unique, duplicated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tagged: &str, id: i64) -> PhraseEntry {
        PhraseEntry { tagged_barcode: tagged.into(), record_id: id }
    }

    fn row(id: i64, barcode: &str, ptype: i32, home: Option<&str>) -> PatronRow {
        PatronRow {
            id,
            barcode: Some(barcode.into()),
            ptype_code: Some(ptype),
            pcode3: Some(1),
            home_library_code: home.map(String::from),
        }
    }

    #[test]
    fn a_barcode_maps_to_its_one_patron_and_identical_pairs_collapse() {
        let ids = patron_ids_by_barcode(&[entry("b111", 1), entry("b111", 1), entry("b222", 2)]);
        assert_eq!(ids.get("111"), Some(&1));
        assert_eq!(ids.get("222"), Some(&2));
    }

    #[test]
    fn a_barcode_shared_by_two_patrons_maps_to_none() {
        let ids = patron_ids_by_barcode(&[entry("b111", 1), entry("b111", 2)]);
        assert!(ids.is_empty());
    }

    #[test]
    fn only_the_one_character_tag_is_removed() {
        let ids = patron_ids_by_barcode(&[entry("bb123", 5), entry("x999", 6)]);
        assert_eq!(ids.get("b123"), Some(&5));
        assert_eq!(ids.len(), 1);
    }

    #[test]
    fn rows_matching_id_and_barcode_win_over_id_only() {
        let ids: HashMap<String, i64> = [("111".to_string(), 1)].into();
        let rows = [row(1, "111", 10, Some("sa")), row(1, "999", 20, Some("mm"))];
        let m = &match_patrons(&ids, &rows)["111"];
        assert_eq!((m.ptype_code, m.home_library_code.as_deref()), (Some(10), Some("sa")));
    }

    #[test]
    fn id_only_matches_are_used_when_no_barcode_matches() {
        let ids: HashMap<String, i64> = [("111".to_string(), 1)].into();
        let m = &match_patrons(&ids, &[row(1, "999", 20, None)])["111"];
        assert_eq!(m.ptype_code, Some(20));
    }

    #[test]
    fn identical_rows_collapse_and_conflicting_rows_null_the_attributes() {
        let ids: HashMap<String, i64> = [("111".to_string(), 1), ("222".to_string(), 2)].into();
        let rows = [
            row(1, "111", 10, Some("sa")),
            row(1, "111", 10, Some("sa")),
            row(2, "222", 10, Some("sa")),
            row(2, "222", 11, Some("sa")),
        ];
        let m = match_patrons(&ids, &rows);
        assert_eq!(m["111"].ptype_code, Some(10));
        assert_eq!(
            m["222"],
            PatronMatch { patron_id: 2, ptype_code: None, pcode3: None, home_library_code: None }
        );
    }

    #[test]
    fn a_patron_id_without_rows_is_still_a_match_with_null_attributes() {
        let ids: HashMap<String, i64> = [("111".to_string(), 1)].into();
        let m = &match_patrons(&ids, &[])["111"];
        assert_eq!(m.patron_id, 1);
        assert_eq!(m.ptype_code, None);
    }

    #[test]
    fn redshift_duplicates_get_nothing_and_null_ids_are_ignored() {
        let geo = |id: Option<&str>, zip: &str| GeoRow {
            patron_id: id.map(String::from),
            postal_code: Some(zip.into()),
            geoid: Some("g".into()),
        };
        let (unique, dup) = geo_by_patron(vec![
            geo(Some("a"), "1"),
            geo(Some("b"), "2"),
            geo(Some("b"), "3"),
            geo(None, "4"),
        ]);
        assert_eq!(unique.len(), 1);
        assert_eq!(unique["a"].postal_code.as_deref(), Some("1"));
        assert_eq!(dup, vec!["b".to_string()]);
    }
}
