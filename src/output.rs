//! What goes to stdout (data: plain lines, or JSON Lines `{"type":…,"data":…}`) and
//! to stderr (everything for people: notes, warnings, progress).

use std::io::{IsTerminal, Write};

use serde::Serialize;

/// Prints one JSON Lines event on stdout.
pub fn json_event(kind: &str, data: &impl Serialize) {
    #[derive(Serialize)]
    struct Event<'a, T> {
        r#type: &'a str,
        data: &'a T,
    }
    let line =
        serde_json::to_string(&Event { r#type: kind, data }).expect("events always serialize");
    println!("{line}");
}

/// Prints a warning for people on stderr.
pub fn warn(message: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "warning: {message}");
}

/// Prints a note for people on stderr.
pub fn note(message: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Whether progress bars may be drawn: stderr is a terminal and they were not
/// turned off.
pub fn progress_allowed(no_progress: bool) -> bool {
    !no_progress && std::io::stderr().is_terminal()
}

/// `1 file`, `2 files`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else if let Some(stem) = noun.strip_suffix('y') {
        format!("{n} {stem}ies")
    } else {
        format!("{n} {noun}s")
    }
}

/// `1.5 MiB`-style sizes for people.
pub fn human_bytes(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_naturally() {
        assert_eq!(super::human_bytes(0), "0 B");
        assert_eq!(super::human_bytes(1536), "1.50 KiB");
        assert_eq!(super::count(1, "symlink"), "1 symlink");
        assert_eq!(super::count(0, "file"), "0 files");
        assert_eq!(super::count(2, "directory"), "2 directories");
    }
}
