//! `pseudonymize` (the pseudonym of a value, with the configured salt) and `bench-hash`
//! (the single-core bcrypt rate of a hashing kernel).

use std::io::{BufRead as _, Write as _};

use crate::app::{self, AppError, StartupError};
use crate::pseudonym::{Kernel, measure_single_core, pseudonym};

/// `pseudonymize`: the pseudonym of each value given, else of each line of standard input,
/// one per line, with the configured `BCRYPT_SALT`.
pub async fn pseudonymize(config: &crate::cli::ConfigArgs, values: Vec<String>) -> Result<(), AppError> {
    let raw = app::gather(&config.source(None))?;
    super::init_logging(&raw)?;
    let salt = app::load_salt(raw).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let write_err = StartupError::Stdout;
    if values.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(StartupError::Stdin)?;
            writeln!(out, "{}", pseudonym(&salt, line.trim_end_matches('\r').as_bytes()))
                .map_err(write_err)?;
        }
    } else {
        for v in values {
            writeln!(out, "{}", pseudonym(&salt, v.as_bytes())).map_err(write_err)?;
        }
    }
    Ok(())
}

/// Prints one JSON line: the single-core hash rate of a kernel at a cost.
pub fn bench_hash(cost: u32, kernel: Option<&str>, seconds: f64) -> Result<(), AppError> {
    let kernel = match kernel {
        None => Kernel::DEFAULT,
        Some(k) => Kernel::parse(k).ok_or_else(|| StartupError::UnknownKernel(k.to_string()))?,
    };
    let rate = measure_single_core(kernel, cost, seconds).map_err(StartupError::Bench)?;
    println!(
        "{{\"kernel\": \"{kernel:?}\", \"cost\": {cost}, \"hashes\": {}, \"seconds\": {:.3}, \"hashes_per_second\": {:.1}}}",
        rate.hashes,
        rate.seconds,
        rate.per_second()
    );
    Ok(())
}
