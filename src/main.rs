//! `pc-reserve-poller`: parses the command line, sets up logging, runs the command and
//! maps its outcome to an exit code with one line naming the failing stage.

use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use pc_reserve_poller::app::{self, AppError};
use pc_reserve_poller::cli::{Cli, Command, RunArgs};
use pc_reserve_poller::config::{ConfigError, LogLevel};
use pc_reserve_poller::logging;
use pc_reserve_poller::pseudonym::{Kernel, measure_single_core, pseudonym};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pc-reserve-poller: error: startup: cannot start the async runtime: {e}");
            return ExitCode::from(app::EXIT_FAILURE);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "failed");
            eprintln!("pc-reserve-poller: error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), AppError> {
    match cli.command {
        None => run(&cli.config, RunArgs::default()).await,
        Some(Command::Run(args)) => run(&cli.config, args).await,
        Some(Command::Pseudonymize { values }) => pseudonymize(&cli.config, values).await,
        Some(Command::BenchHash { cost, kernel, seconds }) => bench_hash(cost, kernel.as_deref(), seconds),
    }
}

/// Reads the log settings from the gathered configuration and installs the logger.
fn init_logging(raw: &pc_reserve_poller::config::RawConfig) -> Result<(), ConfigError> {
    let level = match raw.plain("LOG_LEVEL").map(str::trim).filter(|v| !v.is_empty()) {
        None => LogLevel::Info,
        Some(text) => LogLevel::parse(text).ok_or_else(|| ConfigError::Invalid {
            name: "LOG_LEVEL".into(),
            reason: "must be one of debug, info, warning, error, critical".into(),
        })?,
    };
    let json = match raw.plain("LOG_FORMAT").map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) if v.is_empty() || v == "text" => false,
        Some(v) if v == "json" => true,
        Some(_) => {
            return Err(ConfigError::Invalid {
                name: "LOG_FORMAT".into(),
                reason: "must be text or json".into(),
            });
        }
    };
    logging::init(level, json);
    Ok(())
}

async fn run(config: &pc_reserve_poller::cli::ConfigArgs, args: RunArgs) -> Result<(), AppError> {
    let source = config.source(Some(&args));
    let raw = app::gather(&source)?;
    init_logging(&raw)?;
    match &source.path {
        Some(path) => tracing::info!(config = %path.display(), "configuration file"),
        None => tracing::info!("no ENVIRONMENT or --config: reading variables from the environment only"),
    }
    let (settings, sdk, aws) = app::load(raw).await?;
    let summary = app::run_once(&settings, &sdk, &aws).await?;
    tracing::info!(%summary, "run finished");
    Ok(())
}

async fn pseudonymize(
    config: &pc_reserve_poller::cli::ConfigArgs,
    values: Vec<String>,
) -> Result<(), AppError> {
    let raw = app::gather(&config.source(None))?;
    init_logging(&raw)?;
    let salt = app::load_salt(raw).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let write_err = |e: std::io::Error| AppError::Startup(format!("cannot write to standard output: {e}"));
    if values.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| AppError::Startup(format!("cannot read standard input: {e}")))?;
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
fn bench_hash(cost: u32, kernel: Option<&str>, seconds: f64) -> Result<(), AppError> {
    let kernel = match kernel {
        None => Kernel::DEFAULT,
        Some(k) => Kernel::parse(k).ok_or_else(|| {
            AppError::Startup(format!("unknown kernel {k:?}: crate, lanes1, lanes2, lanes3 or lanes4"))
        })?,
    };
    let rate = measure_single_core(kernel, cost, seconds).map_err(|e| AppError::Startup(e.to_string()))?;
    println!(
        "{{\"kernel\": \"{kernel:?}\", \"cost\": {cost}, \"hashes\": {}, \"seconds\": {:.3}, \"hashes_per_second\": {:.1}}}",
        rate.hashes,
        rate.seconds,
        rate.per_second()
    );
    Ok(())
}
