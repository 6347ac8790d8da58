//! `pc-reserve-poller`: parses the command line, runs the command and maps its outcome to
//! an exit code with one log line naming the failing stage, the cause and the exit code
//! (`logging::report_outcome`).

use std::process::ExitCode;

use clap::Parser as _;
use pc_reserve_poller::app::AppError;
use pc_reserve_poller::cli::{Cli, Command, CursorCommand, RunArgs};
use pc_reserve_poller::commands::{self, decode::DecodeFrom};
use pc_reserve_poller::logging;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print on standard output and exit 0.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => return usage_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let err = AppError::Startup(pc_reserve_poller::app::StartupError::Runtime(e));
            logging::report_outcome(&err);
            return ExitCode::from(err.exit_code());
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            logging::report_outcome(&err);
            ExitCode::from(err.exit_code())
        }
    }
}

/// A command line clap refuses: one line through the logger, `usage: <what is wrong>` at
/// ERROR with exit code 2. With text logs clap's hints (`Usage: ...`, `tip: ...`) come
/// first, as lines of their own; with JSON logs they are left out, so standard error stays
/// JSON.
fn usage_error(e: &clap::Error) -> ExitCode {
    let rendered = e.render().to_string();
    // clap's message: `error: <what>` (its details may follow on indented lines), then
    // hints (`tip: ...`, `Usage: ...`, `For more information, ...`).
    let is_hint = |l: &str| {
        let l = l.trim_start();
        l.starts_with("tip:") || l.starts_with("Usage:") || l.starts_with("For more information")
    };
    // A command given without its subcommand: clap renders the command's help, all hint.
    let help_only = e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand;
    let hint_start = if help_only { 0 } else { rendered.lines().position(is_hint).unwrap_or(usize::MAX) };
    let cause: Vec<&str> =
        rendered.lines().take(hint_start).map(str::trim).filter(|l| !l.is_empty()).collect();
    let cause = cause.join(" ");
    let cause = match cause.strip_prefix("error: ").unwrap_or(&cause) {
        "" => "a subcommand is required (see --help)".to_string(),
        cause => cause.to_string(),
    };
    logging::init_fallback();
    if !logging::json_logs() {
        let hints: Vec<&str> = rendered.lines().skip(hint_start).collect();
        let hints = hints.join("\n");
        let hints = hints.trim();
        if !hints.is_empty() {
            eprintln!("{hints}");
        }
    }
    let err = AppError::Usage(cause);
    logging::report_outcome(&err);
    ExitCode::from(err.exit_code())
}

async fn dispatch(cli: Cli) -> Result<(), AppError> {
    let config = &cli.config;
    match cli.command {
        None => commands::run::run(config, RunArgs::default()).await,
        Some(Command::Run(args)) => commands::run::run(config, args).await,
        Some(Command::Pseudonymize { values }) => commands::pseudonymize::pseudonymize(config, values).await,
        Some(Command::Check { format }) => commands::check::check(config, format).await,
        Some(Command::Cursor(CursorCommand::Show { format })) => commands::cursor::show(config, format).await,
        Some(Command::Cursor(CursorCommand::Set { date_time, key, yes, force })) => {
            commands::cursor::set(config, &date_time, &key, yes, force).await
        }
        Some(Command::Decode { from_start: _, since, file, limit }) => {
            let from = match (since, file) {
                (_, Some(path)) => DecodeFrom::File(path),
                (Some(t), None) => DecodeFrom::Since(t),
                (None, None) => DecodeFrom::Start,
            };
            commands::decode::decode(config, from, limit).await
        }
        Some(Command::Backfill { from, to, only_missing }) => {
            commands::backfill::backfill(config, from, to, only_missing).await
        }
        Some(Command::Reconcile { date, tolerance, format }) => {
            commands::reconcile::reconcile(config, date, tolerance, format).await
        }
        Some(Command::BenchHash { cost, kernel, seconds }) => {
            commands::pseudonymize::bench_hash(cost, kernel.as_deref(), seconds)
        }
    }
}
