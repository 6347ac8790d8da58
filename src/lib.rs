//! # pc-reserve-poller
//!
//! Reads new PC reservations from Envisionware, looks their patrons up in Sierra and
//! Redshift, replaces every identifier by a bcrypt pseudonym, encodes each reservation
//! as an Avro `PcReserve` record and sends it to Kinesis, keeping its cursor in S3.
//!
//! ```text
//!  config (YAML + env + flags, KMS)          schema (Platform API)
//!        |                                          |
//!  state::S3CursorStore --cursor--> source::envisionware --reservations-->
//!  records (enrich::sierra, pseudonym, enrich::redshift) --PcReserveRecord-->
//!  encode::AvroEncoder --datums--> sink::Sender (Kinesis) --acknowledged--> state (cursor)
//! ```
//!
//! [`pipeline::run`] is the only place where the stages meet; [`app`] wires the real
//! ones from [`config::Settings`].

pub mod app;
pub mod aws;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod domain;
pub(crate) mod dry_run;
pub mod encode;
pub mod enrich;
/// Property checks behind the fuzz targets (`fuzz/`, which enables the `fuzz` feature).
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz_checks;
pub(crate) mod lease;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod permissions;
pub mod pipeline;
pub(crate) mod progress;
pub mod pseudonym;
pub mod records;
pub mod retry;
pub mod sink;
pub mod source;
pub mod state;
pub(crate) mod stop;
#[cfg(test)]
pub(crate) mod test_support;
