//! Tests that need what a machine may lack (root, sshd). Such a test asks
//! [`runs_here`] first: where the need is met it runs; under CI (`CI` set) a need
//! that is not met fails the test; elsewhere the test is skipped, saying why, and
//! the skip is appended to the file `SHIP_TEST_SKIPS` names, so that `scripts/test`
//! counts it as skipped rather than passed. (Shared by the harnesses of `tests/` and
//! `agent/tests/`.)

use std::io::Write;

/// Whether the effective user is root.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0")
}

/// Whether the calling test can run here: `met`, or else it fails under CI and is
/// skipped (and recorded as skipped) elsewhere; `need` says what it needs.
pub fn runs_here(met: bool, need: &str) -> bool {
    if met {
        return true;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test} cannot run here: it needs {need}");
    }
    eprintln!("skipped: {test} needs {need}");
    if let Some(path) = std::env::var_os("SHIP_TEST_SKIPS") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("the skip list opens");
        writeln!(file, "{test}\tneeds {need}").expect("the skip list takes a line");
    }
    false
}
