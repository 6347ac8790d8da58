//! Fuzz target: see `pc_reserve_poller::fuzz_checks::avro_datum`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pc_reserve_poller::fuzz_checks::avro_datum(data));
