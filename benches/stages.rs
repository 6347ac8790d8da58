//! Micro-benchmarks of the CPU stages: pseudonymisation (each kernel, one core), Avro
//! encoding of one record, and record building (Redshift join and assembly of a
//! 1,000-reservation batch, pseudonyms already computed).
//!
//! `cargo bench --bench stages` measures; `cargo test --all-targets` runs each once as a
//! smoke test (a few milliseconds), so CI only pays for building it.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use pc_reserve_poller::db::DbError;
use pc_reserve_poller::domain::Reservation;
use pc_reserve_poller::encode::AvroEncoder;
use pc_reserve_poller::enrich::{Geo, GeoDirectory, PatronMatch};
use pc_reserve_poller::pseudonym::{Kernel, measure_single_core};
use pc_reserve_poller::records::{PendingRecord, assemble_records, found_patron_ids, lookup_geo};

/// Redshift with a fixed answer for every id.
struct AllFound;

impl GeoDirectory for AllFound {
    async fn geo_by_patron(&self, ids: &[String]) -> Result<HashMap<String, Geo>, DbError> {
        Ok(ids
            .iter()
            .map(|i| {
                (i.clone(), Geo { postal_code: Some("10018".into()), geoid: Some("36061011300".into()) })
            })
            .collect())
    }
}

/// Runs `f` repeatedly for about `budget` (once when `budget` is zero); prints time per call.
fn measure(name: &str, budget: Duration, per_call: &str, mut f: impl FnMut()) {
    let started = Instant::now();
    let mut calls = 0u64;
    loop {
        f();
        calls += 1;
        if started.elapsed() >= budget {
            break;
        }
    }
    let each = started.elapsed().as_secs_f64() / calls as f64;
    println!(
        "{name:<42} {:>12.3} us/{per_call} {:>12.1} {per_call}/s ({calls} calls)",
        each * 1e6,
        1.0 / each
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let budget = if bench { Duration::from_secs(2) } else { Duration::ZERO };

    for cost in [4, 7] {
        for kernel in Kernel::ALL {
            let seconds = if bench { 3.0 } else { 0.0 };
            if !bench && cost > 4 {
                continue;
            }
            let rate = match measure_single_core(kernel, cost, seconds) {
                Ok(r) => r,
                Err(e) => panic!("benchmark salt refused: {e}"),
            };
            println!(
                "{:<42} {:>12.1} hashes/s on one core ({} hashes)",
                format!("pseudonym cost {cost} {kernel:?}"),
                rate.per_second(),
                rate.hashes
            );
        }
    }

    let schema = include_str!("../tests/fixtures/PcReserve-schema.avsc");
    let encoder = match AvroEncoder::from_schema_text(schema) {
        Ok(e) => e,
        Err(e) => panic!("fixture schema refused: {e}"),
    };
    let date_time = NaiveDateTime::parse_from_str("2023-07-04 13:45:10", "%Y-%m-%d %H:%M:%S").ok();
    let Some(date_time) = date_time else { panic!("fixed date does not parse") };
    // A batch as the hashing stage hands it on: Sierra matches and pseudonyms computed.
    let records: Vec<PendingRecord> = (0..1000)
        .map(|i| PendingRecord {
            row: Reservation {
                key: 41_000_000 + i,
                barcode: Some(format!("23333{:09}", i % 150)),
                minutes_used: Some(45),
                date_time,
                branch: Some("Stavros Niarchos Foundation Library (SNFL)".into()),
                area: Some("Floor 2".into()),
                staff_override: None,
            },
            patron: (i % 10 != 0).then(|| PatronMatch {
                patron_id: 481_000_000_000 + i % 150,
                ptype_code: Some(10),
                pcode3: Some(2),
                home_library_code: Some("sa".into()),
            }),
            patron_id: format!("p{:0>30}", i % 150),
            key: format!("{i:0>31}"),
        })
        .collect();
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => panic!("no runtime: {e}"),
    };
    let mut built = Vec::new();
    // What the sending stage does with a batch: Redshift once, then the records.
    measure("build records (batch of 1000)", budget, "batch", || {
        let geo = match runtime.block_on(lookup_geo(&found_patron_ids(&records), &AllFound)) {
            Ok(g) => g,
            Err(e) => panic!("Redshift lookup failed: {e}"),
        };
        built = assemble_records(records.clone(), &geo);
        black_box(&built);
    });
    let record = &built[1].record;
    measure("Avro encode (one record)", budget, "record", || {
        black_box(encoder.encode(black_box(record)).map(|d| d.len()).unwrap_or(0));
    });
}
