//! How fleet commands show what happens on each host: a line per event with a
//! timestamp (`12:00:01 web1: transferring …`) when stderr is not a terminal,
//! indicatif bars (one per in-flight host) when it is, or JSON Lines events on stdout
//! with `--json`. Reporters are shared by the host threads.

use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

/// The ways progress is shown.
pub enum Reporter {
    /// Plain timestamped lines on stderr.
    Lines,
    /// One bar per in-flight host on stderr.
    Bars {
        multi: MultiProgress,
        bars: Mutex<Vec<(String, ProgressBar)>>,
    },
    /// JSON Lines events on stdout.
    Json,
    /// Nothing (used for status and history, whose result is the report).
    Quiet,
}

impl Reporter {
    /// Bars on a terminal (unless `no_progress`), JSON with `json`, lines otherwise.
    pub fn new(json: bool, no_progress: bool) -> Reporter {
        if json {
            Reporter::Json
        } else if crate::output::progress_allowed(no_progress) {
            Reporter::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: Mutex::new(Vec::new()),
            }
        } else {
            Reporter::Lines
        }
    }

    /// `host` entered `phase` (connect, hello, transfer, activate, …).
    pub fn phase(&self, host: &str, phase: &str, detail: &str) {
        match self {
            Reporter::Lines => line(host, &format!("{phase}{}", suffix(detail))),
            Reporter::Bars { .. } => {
                let bar = self.bar(host);
                bar.set_message(format!("{phase}{}", suffix(detail)));
            }
            Reporter::Json => crate::output::json_event(
                "phase",
                &json!({"host": host, "phase": phase, "detail": detail}),
            ),
            Reporter::Quiet => {}
        }
    }

    /// `host` has sent `sent` of `total` bytes.
    pub fn bytes(&self, host: &str, sent: u64, total: u64) {
        match self {
            Reporter::Bars { .. } => {
                let bar = self.bar(host);
                bar.set_length(total);
                bar.set_position(sent);
            }
            Reporter::Json => crate::output::json_event(
                "progress",
                &json!({"host": host, "sent": sent, "total": total}),
            ),
            Reporter::Lines | Reporter::Quiet => {}
        }
    }

    /// A line of output from one of the app's programs on `host` (`stage` is the
    /// hook or service it came from).
    pub fn output(&self, host: &str, stage: &str, text: &str) {
        match self {
            Reporter::Lines => line(host, &format!("[{stage}] {text}")),
            Reporter::Bars { multi, .. } => {
                let _ = multi.println(format!("{host} [{stage}] {text}"));
            }
            Reporter::Json => crate::output::json_event(
                "output",
                &json!({"host": host, "stage": stage, "line": text}),
            ),
            Reporter::Quiet => {}
        }
    }

    /// `host` is done with this run: `ok` and a summary.
    pub fn finished(&self, host: &str, ok: bool, summary: &str, data: &Value) {
        match self {
            Reporter::Lines => line(host, summary),
            Reporter::Bars { multi, bars } => {
                let mut bars = bars.lock().expect("not poisoned");
                if let Some(i) = bars.iter().position(|(h, _)| h == host) {
                    let (_, bar) = bars.remove(i);
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
                let mark = if ok { "ok  " } else { "FAIL" };
                let _ = multi.println(format!("{mark} {host}: {summary}"));
            }
            Reporter::Json => crate::output::json_event(
                "host",
                &json!({"host": host, "ok": ok, "summary": summary, "result": data}),
            ),
            Reporter::Quiet => {}
        }
    }

    /// A line about the whole run.
    pub fn note(&self, message: &str) {
        match self {
            Reporter::Lines => line("ship", message),
            Reporter::Bars { multi, .. } => {
                let _ = multi.println(message);
            }
            Reporter::Json => crate::output::json_event("note", &json!({"message": message})),
            Reporter::Quiet => {}
        }
    }

    fn bar(&self, host: &str) -> ProgressBar {
        let Reporter::Bars { multi, bars } = self else {
            unreachable!("bars only")
        };
        let mut bars = bars.lock().expect("not poisoned");
        if let Some((_, bar)) = bars.iter().find(|(h, _)| h == host) {
            return bar.clone();
        }
        let bar = multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} {msg:<24} {bar:20} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(host.to_owned());
        bars.push((host.to_owned(), bar.clone()));
        bar
    }
}

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" {detail}")
    }
}

/// `HH:MM:SS host: message` on stderr.
fn line(host: &str, message: &str) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let _ = writeln!(std::io::stderr(), "{h:02}:{m:02}:{s:02} {host}: {message}");
}
