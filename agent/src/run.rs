//! Running the app's programs — hooks, restart commands, health commands — with a
//! timeout, their output streamed back line by line as `output` events (or printed,
//! by hand), and never on the agent's own stdout, which carries the protocol.
//!
//! Each program runs in its own process group, so a timeout kills everything it
//! started. A program that leaves a daemon holding its output open is not waited
//! for: once the program itself exits, the rest of its output is read for a moment
//! and then abandoned.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::protocol::{Event, OutputLine};

use crate::output::Output;

/// How long output is still read after the program exits.
const DRAIN: Duration = Duration::from_millis(200);

/// How a program did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// It could not be started.
    #[error("cannot start it: {0}")]
    Spawn(#[source] std::io::Error),
    /// It exited unsuccessfully.
    #[error("it {status}{}", last_line(.last))]
    Failed {
        /// `exited with status 3`, `was killed by signal 9`.
        status: String,
        /// Its last line of output, if any.
        last: Option<String>,
    },
    /// It ran past its timeout and was killed.
    #[error("it did not finish within {}, and was killed", humantime::format_duration(*.0))]
    Timeout(Duration),
}

fn last_line(last: &Option<String>) -> String {
    last.as_ref()
        .map_or(String::new(), |line| format!(" (last output: {line})"))
}

/// Runs `command` for `stage` (`pre_activate`, `restart web`, …), streaming its
/// output, killing it after `timeout`.
pub fn run(
    stage: &str,
    mut command: Command,
    timeout: Duration,
    out: Output,
) -> Result<(), RunError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(RunError::Spawn)?;
    let (tx, rx) = mpsc::channel::<(&'static str, String)>();
    let streams: [(&'static str, Option<Box<dyn Read + Send>>); 2] = [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ];
    for (name, stream) in streams {
        let Some(stream) = stream else { continue };
        let tx = tx.clone();
        // Detached: a daemon the program started may keep the pipe open forever.
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                if tx.send((name, line)).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let mut last = None;
    let mut exited = None;
    let mut drain_until = None;
    loop {
        let now = Instant::now();
        let until = drain_until.unwrap_or(deadline).min(deadline);
        if now >= until {
            break;
        }
        match rx.recv_timeout((until - now).min(Duration::from_millis(50))) {
            Ok((stream, line)) => {
                if out.is_json() {
                    out.event(&Event::Output(OutputLine {
                        stage: stage.to_owned(),
                        stream: stream.to_owned(),
                        line: line.clone(),
                    }));
                } else {
                    out.say(format!("  {stage}: {line}"));
                }
                if !line.trim().is_empty() {
                    last = Some(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) if exited.is_some() => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if exited.is_none()
            && let Ok(Some(status)) = child.try_wait()
        {
            exited = Some(status);
            drain_until = Some(Instant::now() + DRAIN);
        }
    }
    let status = match exited {
        Some(status) => status,
        None => {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            return Err(RunError::Timeout(timeout));
        }
    };
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    let status = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "failed".to_owned(),
    };
    Err(RunError::Failed { status, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn success_failure_and_timeout() {
        let out = Output::new(true).quiet();
        run(
            "t",
            sh("echo hi; echo err >&2"),
            Duration::from_secs(5),
            out,
        )
        .unwrap();
        let err = run("t", sh("echo boom; exit 3"), Duration::from_secs(5), out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it exited with status 3 (last output: boom)"
        );
        let started = Instant::now();
        let err = run("t", sh("sleep 30"), Duration::from_millis(300), out).unwrap_err();
        assert!(matches!(err, RunError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_daemon_holding_the_output_open_is_not_waited_for() {
        let started = Instant::now();
        run(
            "t",
            sh("sleep 2 & echo started"),
            Duration::from_secs(20),
            Output::new(true).quiet(),
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
}
