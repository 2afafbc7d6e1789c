//! The local transport: `ship-agent` as a subprocess of `ship`, on this machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::{Finished, Transport, TransportError};

/// Runs commands on this machine.
#[derive(Debug, Default)]
pub struct Local;

impl Transport for Local {
    fn run(
        &mut self,
        argv: &[String],
        stdin: Option<&mut (dyn Read + Send)>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Finished, TransportError> {
        let session = |what: String| move |source| TransportError::Session { what, source };
        let (program, args) = argv.split_first().expect("a command");
        let child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: Ctrl-C on ship's terminal must not kill an agent
            // in the middle of a step; ship lets it finish.
            .process_group(0)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Finished {
                    code: 127,
                    signal: None,
                    stderr: format!("{program}: not found"),
                });
            }
            Err(e) => return Err(session(format!("cannot start {program}"))(e)),
        };
        let child_stdin = child.stdin.take();
        let mut child_stderr = child.stderr.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        std::thread::scope(|scope| {
            let feeder = scope.spawn(move || -> std::io::Result<()> {
                if let (Some(input), Some(mut pipe)) = (stdin, child_stdin) {
                    // The agent may stop reading early (a refusal): not an error here;
                    // its own report says why.
                    match std::io::copy(input, &mut pipe) {
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                        other => {
                            other?;
                        }
                    }
                    let _ = pipe.flush();
                }
                Ok(())
            });
            let errors = scope.spawn(move || {
                let mut text = String::new();
                let _ = child_stderr.read_to_string(&mut text);
                text
            });
            for line in stdout.lines() {
                let line = line.map_err(session(format!("reading from {program}")))?;
                on_line(&line);
            }
            let fed = feeder.join().expect("the feeder does not panic");
            let stderr = errors.join().expect("the stderr reader does not panic");
            let status = child
                .wait()
                .map_err(session(format!("waiting for {program}")))?;
            fed.map_err(session(format!("feeding {program}")))?;
            Ok(Finished {
                code: status.code().unwrap_or(-1),
                signal: std::os::unix::process::ExitStatusExt::signal(&status).map(|n| {
                    nix::sys::signal::Signal::try_from(n).map_or_else(
                        |_| n.to_string(),
                        |s| s.as_str().trim_start_matches("SIG").to_owned(),
                    )
                }),
                stderr,
            })
        })
    }

    fn install(
        &mut self,
        _content: &mut (dyn Read + Send),
        path: &str,
    ) -> Result<(), TransportError> {
        // The local agent is the one built beside `ship`; nothing to install.
        Err(TransportError::Session {
            what: format!("the local transport does not install agents ({path})"),
            source: std::io::Error::from(std::io::ErrorKind::Unsupported),
        })
    }
}
