//! The documentation's examples, run: every ```` ```console ```` block of `README.md`, of
//! the pages it links to (`docs/operating.md`, `docs/deploying.md`, `CONTRIBUTING.md`) and
//! of `docs/switch-over.md` (the switch-over runbook) is executed by `trycmd` against the
//! local stack and the demo data, and its output compared with what the page shows (`[..]`
//! and `...` stand for what varies: times, durations, pseudonyms of this machine's salt,
//! counts that depend on the demo's size and date).
//!
//! The commands run as a new user types them, from the repository root, with nothing
//! sourced: the AWS and poller variables of the calling shell are removed, so
//! `config/local.yaml` alone must reach the local stack. The examples that send or move a
//! cursor use the scratch stream and bucket `pcr-scratch`, emptied first.
//!
//! trycmd runs the files of one `TestCases` side by side. The README and the runbook run
//! together: the runbook's examples take no lease on the main cursor and keep their scratch
//! cursors under keys of their own (`switch-over/`). The other pages share the main lease
//! and the scratch stream with the README (their examples were written as one sequence), so
//! each runs after it, one page at a time, in `PAGES_IN_TURN`'s order.
//!
//! Runs only with `PCR_README_TESTS=1` after `scripts/demo.sh` (scripts/test.sh does so
//! after its demo step); otherwise it says so and passes. `TRYCMD=overwrite` with the same
//! command rewrites the pages' outputs from the actual ones (wildcards are kept where
//! they still match).

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_pc-reserve-poller");

/// The pages whose examples share state with the README's, run one after another in this
/// order once the README and the runbook are done.
const PAGES_IN_TURN: [&str; 3] = ["docs/operating.md", "docs/deploying.md", "CONTRIBUTING.md"];

/// Variables of the calling shell that would make the examples work by accident.
const SHELL_VARIABLES: [&str; 13] = [
    "ENVIRONMENT",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "IGNORE_CACHE",
    "IGNORE_KINESIS",
    "MAX_BATCHES",
];

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("readme: `{program}` is not on PATH"))
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if std::env::var("PCR_README_TESTS").as_deref() != Ok("1") {
        println!(
            "readme: skipped (set PCR_README_TESTS=1 after scripts/demo.sh to run the README's examples)"
        );
        return;
    }
    assert!(
        root.join("config/local.yaml").is_file() && root.join(".venv/bin/python").is_file(),
        "readme: the local stack is not set up: run scripts/demo.sh first"
    );
    let scratch = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/local-stack/local_aws.py"))
        .arg("scratch")
        .current_dir(root)
        .status()
        .expect("readme: cannot run scripts/local-stack/local_aws.py");
    assert!(scratch.success(), "readme: could not empty the scratch stream and bucket");
    let _ = std::fs::remove_file(root.join("would-send.jsonl"));

    // `timeout` in the README starts the binary by name, as a user's shell would.
    let bin_dir = Path::new(BIN).parent().expect("a binary lives in a directory");
    let path = std::env::join_paths(
        std::iter::once(bin_dir.to_path_buf())
            .chain(std::env::var_os("PATH").iter().flat_map(std::env::split_paths)),
    )
    .expect("PATH entries contain no separator");
    // SAFETY: no other thread exists yet (this target has no test harness, and trycmd
    // starts its threads below), so changing the environment races with nothing.
    unsafe {
        for name in SHELL_VARIABLES {
            std::env::remove_var(name);
        }
        std::env::set_var("PATH", path);
    }

    let cases = |pages: &[&str]| {
        let cases = trycmd::TestCases::new();
        cases
            .register_bin("pc-reserve-poller", Path::new(BIN))
            .register_bin("head", which("head"))
            .register_bin("timeout", which("timeout"))
            .timeout(std::time::Duration::from_secs(120));
        for page in pages {
            cases.case(root.join(page));
        }
        cases.run();
    };
    cases(&["README.md", "docs/switch-over.md"]);
    for page in PAGES_IN_TURN {
        cases(&[page]);
    }
    let _ = std::fs::remove_file(root.join("would-send.jsonl"));
}
