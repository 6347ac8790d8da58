//! Fuzz target: see `pc_reserve_poller::fuzz_checks::schema_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pc_reserve_poller::fuzz_checks::schema_response(data));
