//! Bounded waits on the real binary: a child that outlives its limit is killed, so a
//! regression that hangs fails its test (with the exit status of a killed process)
//! instead of hanging the suite.

use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long one run of the binary may take in the tests unless a test says otherwise.
pub const RUN_LIMIT: Duration = Duration::from_secs(180);

/// Kills the child (SIGKILL) if it is still running when `limit` has passed; dropping the
/// guard (after the wait) disarms it.
pub struct KillAfter {
    _disarm: mpsc::Sender<()>,
}

/// Arms a [`KillAfter`] for the process `pid`.
pub fn kill_after(pid: u32, limit: Duration) -> KillAfter {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
            eprintln!("process {pid} still running after {limit:?}: killing it");
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    });
    KillAfter { _disarm: tx }
}

/// `child.wait_with_output()`, killing the child after `limit`.
pub fn output_of(child: Child, limit: Duration) -> Output {
    let _guard = kill_after(child.id(), limit);
    child.wait_with_output().expect("wait for the child")
}

/// `cmd.output()` (stdout and stderr captured, stdin closed), killing the child after
/// `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the binary");
    output_of(child, limit)
}
