//! What the agent prints. With `--json`, stdout carries only protocol events
//! ([`Event`], one JSON object per line); without it, people read stderr.

use std::io::Write;

use crate::protocol::{Event, Phase, Warning};

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
    pub fn event(self, event: &Event) {
        if self.json && !self.quiet {
            let mut line = serde_json::to_vec(event).expect("events serialize");
            line.push(b'\n');
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&line);
            let _ = stdout.flush();
        }
    }

    /// A step began: a `phase` event.
    pub fn phase(self, phase: &str, detail: impl Into<String>) {
        self.event(&Event::Phase(Phase {
            phase: phase.to_owned(),
            detail: detail.into(),
        }));
    }

    /// Something went wrong without failing the command: a `warning` event, or a
    /// line for a person.
    pub fn warn(self, message: &str) {
        self.say(format!("warning: {message}"));
        self.event(&Event::Warning(Warning {
            message: message.to_owned(),
        }));
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
