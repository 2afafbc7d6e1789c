//! What the agent prints. With `--json`, stdout carries only protocol events, one
//! JSON object per line (`{"type":…,"data":…}`); without it, people read stderr.

use std::io::Write;

use serde::Serialize;

/// The protocol version this agent speaks. It changes when a command or a field
/// that `ship` relies on is added, so that hosts with an older agent get ship's own
/// (3: `health`).
pub const PROTOCOL: u32 = 4;

/// Where a command reports to.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
    quiet: bool,
}

impl Output {
    /// JSON events on stdout when `json`, human text on stderr otherwise.
    pub fn new(json: bool) -> Output {
        Output { json, quiet: false }
    }

    /// The same, saying nothing at all (for output that would only repeat itself,
    /// such as a health command retried every second).
    pub fn quiet(self) -> Output {
        Output {
            quiet: true,
            ..self
        }
    }

    /// Whether events are JSON.
    pub fn is_json(self) -> bool {
        self.json
    }

    /// Emits a protocol event (JSON mode only).
    pub fn event(self, kind: &str, data: &impl Serialize) {
        if self.json && !self.quiet {
            #[derive(Serialize)]
            struct Event<'a, T> {
                r#type: &'a str,
                data: &'a T,
            }
            let mut line =
                serde_json::to_vec(&Event { r#type: kind, data }).expect("events serialize");
            line.push(b'\n');
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&line);
            let _ = stdout.flush();
        }
    }

    /// Tells a person (human mode only).
    pub fn say(self, message: impl std::fmt::Display) {
        if !self.json && !self.quiet {
            let _ = writeln!(std::io::stderr(), "{message}");
        }
    }
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::human_bytes(10), "10 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(5 << 30), "5.0 GiB");
    }
}
