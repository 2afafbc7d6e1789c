//! THE printer: everything `ship` prints goes through one [`Printer`], which decides
//! what each mode shows and where.
//!
//! - stdout is data: tables and result lines in the text modes, JSON Lines events
//!   (`{"type":…,"data":…}`) with `--json`;
//! - stderr is for people: notes, progress (one bar per in-flight host on a
//!   terminal, timestamped `12:00:01 web1: transferring …` lines otherwise),
//!   warnings and errors. `--quiet` keeps only warnings and errors there.
//!
//! A printer writes to a [`Console`]: the process's stdout and stderr, or buffers, so
//! that a test can run a command in-process and read what it printed.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::json;

/// A shared writer.
type Sink = Arc<Mutex<dyn Write + Send>>;

/// Where output goes: stdout and stderr, and whether stderr is a terminal.
#[derive(Clone)]
pub struct Console {
    out: Sink,
    err: Sink,
    terminal: bool,
}

/// What a [`Console::buffers`] console received.
#[derive(Clone, Default)]
pub struct Buffers {
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

impl Buffers {
    /// What was printed on stdout.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("not poisoned")).into_owned()
    }

    /// What was printed on stderr.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().expect("not poisoned")).into_owned()
    }
}

/// Appends to a shared buffer.
struct Into(Arc<Mutex<Vec<u8>>>);

impl Write for Into {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Console {
    /// The process's stdout and stderr.
    pub fn stdio() -> Console {
        Console {
            out: Arc::new(Mutex::new(std::io::stdout())),
            err: Arc::new(Mutex::new(std::io::stderr())),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Buffers, for running a command in-process.
    pub fn buffers() -> (Console, Buffers) {
        let buffers = Buffers::default();
        let console = Console {
            out: Arc::new(Mutex::new(Into(buffers.out.clone()))),
            err: Arc::new(Mutex::new(Into(buffers.err.clone()))),
            terminal: false,
        };
        (console, buffers)
    }

    /// Whether progress bars can be drawn (stderr is a terminal).
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    fn write(sink: &Sink, text: &str) {
        let mut sink = sink.lock().expect("not poisoned");
        let _ = sink.write_all(text.as_bytes());
        let _ = sink.flush();
    }
}

/// How much is printed, and in what form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On a terminal: progress bars.
    Human,
    /// Not on a terminal (or `--no-progress`): timestamped lines.
    Plain,
    /// `--json`: JSON Lines on stdout.
    Json,
    /// `--quiet`: data on stdout; only warnings and errors on stderr.
    Quiet,
}

impl Mode {
    /// The mode the flags and the console ask for.
    pub fn choose(json: bool, quiet: bool, no_progress: bool, console: &Console) -> Mode {
        if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if console.is_terminal() && !no_progress {
            Mode::Human
        } else {
            Mode::Plain
        }
    }
}

/// Prints for one command; shared by the host threads.
#[derive(Clone)]
pub struct Printer {
    console: Console,
    mode: Mode,
    bars: Option<Arc<Bars>>,
    /// Whether hosts' progress is shown.
    progress: bool,
}

/// One bar per in-flight host.
struct Bars {
    multi: MultiProgress,
    hosts: Mutex<Vec<(String, ProgressBar)>>,
}

impl Printer {
    /// A printer in `mode` on `console`.
    pub fn new(console: Console, mode: Mode) -> Printer {
        let bars = (mode == Mode::Human).then(|| {
            Arc::new(Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                hosts: Mutex::new(Vec::new()),
            })
        });
        Printer {
            console,
            mode,
            bars,
            progress: true,
        }
    }

    /// The same printer, showing no host's progress (for commands whose result is
    /// the report: status, history, check).
    pub fn without_progress(&self) -> Printer {
        Printer {
            progress: false,
            ..self.clone()
        }
    }

    /// Whether output is JSON Lines.
    pub fn is_json(&self) -> bool {
        self.mode == Mode::Json
    }

    /// Whether progress bars are drawn.
    pub fn draws_bars(&self) -> bool {
        self.mode == Mode::Human
    }

    /// Data on stdout (the text modes; `--json` prints [`event`](Self::event)s).
    pub fn data(&self, text: &str) {
        if !self.is_json() {
            Console::write(&self.console.out, text);
        }
    }

    /// One JSON Lines event on stdout (`--json` only).
    pub fn event(&self, kind: &str, data: &impl Serialize) {
        if self.is_json() {
            #[derive(Serialize)]
            struct Event<'a, T> {
                r#type: &'a str,
                data: &'a T,
            }
            let mut line = serde_json::to_string(&Event { r#type: kind, data })
                .expect("events always serialize");
            line.push('\n');
            Console::write(&self.console.out, &line);
        }
    }

    /// A note for people on stderr (not with `--quiet`).
    pub fn note(&self, message: impl std::fmt::Display) {
        if self.mode != Mode::Quiet {
            self.to_people(&message.to_string());
        }
    }

    /// A note on how a fleet run goes (a wave starts, a revert begins): beside the
    /// hosts' progress, as `HH:MM:SS ship: …` lines, or a `note` event with
    /// `--json`; not with `--quiet`.
    pub fn progress(&self, message: impl std::fmt::Display) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Json => self.event("note", &json!({"message": message.to_string()})),
            Mode::Plain => self.line("ship", &message.to_string()),
            Mode::Human => self.to_people(&message.to_string()),
        }
    }

    /// A warning on stderr, in every mode.
    pub fn warn(&self, message: impl std::fmt::Display) {
        self.to_people(&format!("warning: {message}"));
    }

    /// An error, rendered, on stderr, in every mode.
    pub fn error(&self, rendered: &str) {
        Console::write(&self.console.err, rendered);
    }

    /// `host` entered `phase` (connect, hello, transfer, activate, …).
    pub fn phase(&self, host: &str, phase: &str, detail: &str) {
        if !self.progress {
            return;
        }
        let text = format!("{phase}{}", suffix(detail));
        match self.mode {
            Mode::Human => self.bar(host).set_message(text),
            Mode::Plain => self.line(host, &text),
            Mode::Json => self.event(
                "phase",
                &json!({"host": host, "phase": phase, "detail": detail}),
            ),
            Mode::Quiet => {}
        }
    }

    /// `host` has sent `sent` of `total` bytes.
    pub fn bytes(&self, host: &str, sent: u64, total: u64) {
        if !self.progress {
            return;
        }
        match self.mode {
            Mode::Human => {
                let bar = self.bar(host);
                bar.set_length(total);
                bar.set_position(sent);
            }
            Mode::Json => self.event(
                "progress",
                &json!({"host": host, "sent": sent, "total": total}),
            ),
            Mode::Plain | Mode::Quiet => {}
        }
    }

    /// A line of output from one of the app's programs on `host` (`stage` is the
    /// hook or service it came from).
    pub fn output(&self, host: &str, stage: &str, text: &str) {
        if !self.progress {
            return;
        }
        match self.mode {
            Mode::Human => self.to_people(&format!("{host} [{stage}] {text}")),
            Mode::Plain => self.line(host, &format!("[{stage}] {text}")),
            Mode::Json => self.event(
                "output",
                &json!({"host": host, "stage": stage, "line": text}),
            ),
            Mode::Quiet => {}
        }
    }

    /// `host` is done with this run: `ok`, a summary, and its result for `--json`.
    pub fn finished(&self, host: &str, ok: bool, summary: &str, result: &impl Serialize) {
        if !self.progress {
            return;
        }
        match self.mode {
            Mode::Human => {
                let bars = self.bars.as_ref().expect("bars in human mode");
                let mut hosts = bars.hosts.lock().expect("not poisoned");
                if let Some(i) = hosts.iter().position(|(h, _)| h == host) {
                    let (_, bar) = hosts.remove(i);
                    bar.finish_and_clear();
                    bars.multi.remove(&bar);
                }
                drop(hosts);
                let mark = if ok { "ok  " } else { "FAIL" };
                self.to_people(&format!("{mark} {host}: {summary}"));
            }
            Mode::Plain => self.line(host, summary),
            Mode::Json => self.event(
                "host",
                &json!({"host": host, "ok": ok, "summary": summary, "result": result}),
            ),
            Mode::Quiet => {}
        }
    }

    /// A line on stderr, above the bars when they are drawn.
    fn to_people(&self, text: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(text);
            }
            None => Console::write(&self.console.err, &format!("{text}\n")),
        }
    }

    /// `HH:MM:SS host: message` on stderr.
    fn line(&self, host: &str, message: &str) {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        self.to_people(&format!("{h:02}:{m:02}:{s:02} {host}: {message}"));
    }

    fn bar(&self, host: &str) -> ProgressBar {
        let bars = self.bars.as_ref().expect("bars in human mode");
        let mut hosts = bars.hosts.lock().expect("not poisoned");
        if let Some((_, bar)) = hosts.iter().find(|(h, _)| h == host) {
            return bar.clone();
        }
        let bar = bars.multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} {msg:<24} {bar:20} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(host.to_owned());
        hosts.push((host.to_owned(), bar.clone()));
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

/// `1 file`, `2 files`, `2 directories`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else if let Some(stem) = noun.strip_suffix('y') {
        format!("{n} {stem}ies")
    } else {
        format!("{n} {noun}s")
    }
}

/// A plain text table: columns padded to their widest cell, the last one free.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let line: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    (*c).to_owned()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push(header.to_vec());
    for row in rows {
        push(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_naturally() {
        assert_eq!(count(1, "symlink"), "1 symlink");
        assert_eq!(count(0, "file"), "0 files");
        assert_eq!(count(2, "directory"), "2 directories");
    }

    #[test]
    fn tables_pad_all_but_the_last_column() {
        let t = table(
            &["HOST", "RESULT", "DETAIL"],
            &[
                vec!["web1".into(), "ok".into(), "v1 -> v2".into()],
                vec!["web10".into(), "FAILED".into(), "connect: refused".into()],
            ],
        );
        assert_eq!(
            t,
            "HOST   RESULT  DETAIL\nweb1   ok      v1 -> v2\nweb10  FAILED  connect: refused\n"
        );
    }

    #[test]
    fn each_mode_prints_where_it_should() {
        for (mode, out, err) in [
            (
                Mode::Plain,
                "data\n",
                "a note\nHH:MM:SS ship: wave 1\nwarning: careful\n",
            ),
            (Mode::Quiet, "data\n", "warning: careful\n"),
            (
                Mode::Json,
                "{\"type\":\"x\",\"data\":1}\n{\"type\":\"note\",\"data\":{\"message\":\"wave 1\"}}\n",
                "a note\nwarning: careful\n",
            ),
        ] {
            let (console, buffers) = Console::buffers();
            let printer = Printer::new(console, mode);
            printer.data("data\n");
            printer.event("x", &1);
            printer.note("a note");
            printer.progress("wave 1");
            printer.warn("careful");
            assert_eq!(buffers.stdout(), out, "{mode:?}");
            let err_seen: String = buffers
                .stderr()
                .lines()
                .map(|l| match l.split_once(' ') {
                    Some((time, rest)) if time.len() == 8 && time.as_bytes()[2] == b':' => {
                        format!("HH:MM:SS {rest}\n")
                    }
                    _ => format!("{l}\n"),
                })
                .collect();
            assert_eq!(err_seen, err, "{mode:?}");
        }
    }
}
