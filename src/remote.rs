//! `ship-agent` on one host, as `ship` talks to it: finding (or installing) the agent,
//! and one typed call per request of [`agent::protocol`]. Every call goes through the
//! host's [`Transport`], built from an argv of validated values; every line the agent
//! answers is parsed as a protocol [`Event`], and the reply as the request's own type,
//! so a reply of the wrong shape is a protocol error naming the host.

use std::io::Read;
use std::path::PathBuf;

use agent::protocol::{
    self, Activate, Check, Event, Failure, FailureKind, HelloReply, History, HostSettings,
    Received, Record, Request, Rollback, Switched,
};
use manifests::{Sha256, Version};

use crate::fleet::Options;
use crate::inventory::{Host, Reach};
use crate::transport::local::Local;
use crate::transport::ssh::Ssh;
use crate::transport::{Transport, TransportError};

/// Why a call to the agent did not give a result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The transport failed (connection, host key, auth, session).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The agent refused or failed.
    #[error("{}", .0.message)]
    Failed(Box<Failure>),
    /// No usable agent on the host and none could be installed.
    #[error("no usable ship-agent on the host: {0}")]
    NoAgent(String),
    /// The agent's answer broke the protocol.
    #[error("ship-agent on {host} broke the protocol: {what}")]
    Protocol {
        /// The host.
        host: String,
        /// What was wrong.
        what: String,
    },
    /// The agent ended without a closing event.
    #[error("ship-agent ended without a result ({}){}", match signal { Some(s) => format!("killed by signal {s}"), None => format!("exit {code}") }, if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    NoResult {
        /// Its exit status.
        code: i32,
        /// The signal that ended it, when one did.
        signal: Option<String>,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// The agent on one host.
pub struct RemoteAgent {
    transport: Box<dyn Transport>,
    root: String,
    /// The host's inventory name, which the agent uses in its messages.
    host: String,
    /// `--env-file` and `--set` for the calls that run the app's programs.
    settings: HostSettings,
    /// The agent's command on the host: a guess until `hello` has found it.
    program: Option<String>,
    /// Whether `hello` has found (or installed) the agent.
    found: bool,
    local: bool,
    /// Who is deploying.
    operator: String,
    /// ship's own agent.
    agent_binary: PathBuf,
}

impl RemoteAgent {
    /// Connects to `host` (over SSH, or not at all for a local host).
    pub fn connect(host: &Host, options: &Options) -> Result<RemoteAgent, CallError> {
        let (transport, local): (Box<dyn Transport>, bool) = match &host.reach {
            Reach::Local => (Box::new(Local), true),
            Reach::Ssh(target) => (
                Box::new(Ssh::connect(target, options.accept_new_keys)?),
                false,
            ),
        };
        Ok(RemoteAgent {
            transport,
            root: host.root.clone(),
            host: host.name.to_string(),
            settings: HostSettings {
                env_file: host.env_file.clone(),
                set: host.env.clone().into_iter().collect(),
            },
            program: None,
            found: false,
            local,
            operator: options.operator.clone(),
            agent_binary: options.agent_binary.clone(),
        })
    }

    /// Where the agent is looked for, most likely first.
    fn candidates(&self) -> Vec<String> {
        if self.local {
            vec![self.agent_binary.display().to_string()]
        } else {
            vec![
                agent::installed_agent(&self.root).display().to_string(),
                "ship-agent".to_owned(),
            ]
        }
    }

    /// The first exchange: finds a usable agent (installing ship's own where the host
    /// has none, or one that speaks another protocol) and returns its hello.
    pub fn hello(&mut self) -> Result<HelloReply, CallError> {
        let last = match self.probe()? {
            Ok(hello) => return Ok(hello),
            Err(why) => why,
        };
        if self.local {
            return Err(CallError::NoAgent(last));
        }
        let binary = &self.agent_binary;
        let unreadable = |e: std::io::Error| {
            CallError::NoAgent(format!(
                "{last}; and ship's own agent cannot be read from {}: {e}",
                binary.display()
            ))
        };
        // Streamed from the file: a fleet installed at once holds no copy per host.
        let mut file = std::fs::File::open(binary).map_err(unreadable)?;
        let metadata = file.metadata().map_err(unreadable)?;
        if !metadata.is_file() {
            return Err(unreadable(std::io::Error::other("not a file")));
        }
        let bytes = metadata.len();
        let installed = self.candidates()[0].clone();
        tracing::debug!(path = %installed, bytes, "installing ship-agent");
        self.transport.install(&mut file, &installed)?;
        self.program = Some(installed);
        let hello = self.run_agent(&protocol::Hello, None, &mut |_| {})?;
        self.found = true;
        Ok(hello)
    }

    /// Says hello to the agent where it usually is, installing nothing: its hello,
    /// or (inner `Err`) why no usable agent answered.
    pub fn probe(&mut self) -> Result<Result<HelloReply, String>, CallError> {
        let mut last = String::new();
        for program in self.candidates() {
            self.program = Some(program);
            match self.run_agent(&protocol::Hello, None, &mut |_| {}) {
                Ok(hello) => {
                    self.found = true;
                    return Ok(Ok(hello));
                }
                Err(CallError::NoAgent(why)) => last = why,
                Err(e) => return Err(e),
            }
        }
        Ok(Err(last))
    }

    /// Streams `artifact` (or, with `delta`, a delta stream, made against the
    /// manifest `base` when given) into `receive`, requiring the release's payload
    /// digest.
    pub fn receive(
        &mut self,
        artifact: &mut (dyn Read + Send),
        payload: &Sha256,
        delta: bool,
        base: Option<protocol::Base>,
        signing: &protocol::Signing,
    ) -> Result<Received, CallError> {
        let request = protocol::Receive {
            expect_payload: payload.clone(),
            delta,
            base,
            signing: signing.clone(),
        };
        self.call(&request, Input::Stream(artifact), &mut |event| {
            if let Event::Progress(p) = event {
                tracing::debug!(files = p.files, bytes = p.bytes, "received");
            }
        })
    }

    /// Has the host check what the release needs (`needs`, as `check` does), then
    /// fetch the artifact of `pull` from the store and receive it, requiring the
    /// release's payload digest: a host's whole staging in one call. The URL goes on
    /// stdin, out of the host's process list and ship's logs. Where the agent is
    /// missing (or speaks another protocol), `hello` installs ship's own first.
    pub fn fetch(
        &mut self,
        pull: &crate::fleet::Pull,
        payload: &Sha256,
        needs: Check,
        signing: &protocol::Signing,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Received, CallError> {
        let source = serde_json::to_vec(&protocol::Source {
            url: pull.url.clone(),
        })
        .expect("a URL serializes");
        let request = protocol::Fetch {
            expect_digest: pull.digest.clone(),
            expect_payload: payload.clone(),
            needs: Check {
                host: self.settings.clone(),
                ..needs
            },
            signing: signing.clone(),
        };
        self.call(&request, Input::Bytes(&source), on_event)
    }

    /// Which of `contents` the host lacks (those its releases have were hashed just
    /// now; a copy that differs from its manifest is reported as a warning).
    pub fn missing(
        &mut self,
        contents: Vec<Sha256>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Vec<Sha256>, CallError> {
        let wanted = serde_json::to_vec(&protocol::Wanted { contents })
            .expect("a list of digests serializes");
        Ok(self
            .call(&protocol::Have, Input::Bytes(&wanted), on_event)?
            .missing)
    }

    /// Activates `version`, then prunes to `keep` releases when given; the agent's
    /// events (phases, hook output) go to
    /// `on_event`.
    pub fn activate(
        &mut self,
        version: &Version,
        keep: Option<u32>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Switched, CallError> {
        let request = Activate {
            version: version.clone(),
            host: self.settings.clone(),
            keep,
        };
        self.call(&request, Input::None, on_event)
    }

    /// Rolls back, to `to` or the previous release; events as for `activate`.
    pub fn rollback(
        &mut self,
        to: Option<&Version>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Switched, CallError> {
        let request = Rollback {
            to: to.cloned(),
            host: self.settings.clone(),
        };
        self.call(&request, Input::None, on_event)
    }

    /// Preflight alone: the lock, and what `check` names (its host settings are the
    /// host's own).
    pub fn check(&mut self, check: Check) -> Result<protocol::Preflight, CallError> {
        let request = Check {
            host: self.settings.clone(),
            ..check
        };
        self.call(&request, Input::None, &mut |_| {})
    }

    /// Journals the metric analysis of the release the host runs.
    pub fn judged(&mut self, judgement: &protocol::Judgement) -> Result<(), CallError> {
        let bytes = serde_json::to_vec(judgement).expect("a judgement serializes");
        self.call(&protocol::Judge, Input::Bytes(&bytes), &mut |_| {})
            .map(drop)
    }

    /// The keys the host trusts, after `change` when given.
    pub fn trust(
        &mut self,
        change: Option<&protocol::TrustChange>,
    ) -> Result<protocol::TrustReply, CallError> {
        match change {
            None => self.call(&protocol::TrustList, Input::None, &mut |_| {}),
            Some(change) => {
                let bytes = serde_json::to_vec(change).expect("a trust change serializes");
                self.call(&protocol::TrustApply, Input::Bytes(&bytes), &mut |_| {})
            }
        }
    }

    /// Checks the services of the current release, once each.
    pub fn health(&mut self) -> Result<protocol::Checked, CallError> {
        let request = protocol::Health {
            host: self.settings.clone(),
        };
        self.call(&request, Input::None, &mut |_| {})
    }

    /// The journal's records.
    pub fn history(&mut self) -> Result<Vec<Record>, CallError> {
        let mut records = Vec::new();
        self.call(&History, Input::None, &mut |event| {
            if let Event::Record(record) = event {
                records.push(record.clone());
            }
        })?;
        Ok(records)
    }

    /// Runs a request. Without a `hello` first, the agent is tried where it usually
    /// is; only if it is not there does `hello` look further (and install it), so a
    /// rollback costs one round trip.
    fn call<R: Request>(
        &mut self,
        request: &R,
        mut input: Input<'_>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<R::Reply, CallError> {
        if self.program.is_none() {
            self.program = self.candidates().into_iter().next();
        }
        match self.run_with(request, &mut input, on_event) {
            // A stream is not sent twice: part of it may be gone. (Deploys that
            // stream say hello before they transfer.)
            Err(CallError::NoAgent(_)) if !self.found && !matches!(input, Input::Stream(_)) => {
                self.hello()?;
                self.run_with(request, &mut input, on_event)
            }
            other => other,
        }
    }

    /// [`RemoteAgent::run_agent`] fed `input`.
    fn run_with<R: Request>(
        &mut self,
        request: &R,
        input: &mut Input<'_>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<R::Reply, CallError> {
        match input {
            Input::None => self.run_agent(request, None, on_event),
            Input::Bytes(bytes) => {
                self.run_agent(request, Some(&mut std::io::Cursor::new(*bytes)), on_event)
            }
            Input::Stream(stream) => self.run_agent(request, Some(&mut **stream), on_event),
        }
    }

    /// Runs `ship-agent --json --protocol N <command> --root ROOT <args>`; every
    /// event goes to `on_event`; returns the `done` event's reply.
    fn run_agent<R: Request>(
        &mut self,
        request: &R,
        stdin: Option<&mut (dyn Read + Send)>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<R::Reply, CallError> {
        let program = self.program.clone().expect("a candidate is set");
        // The operator's name goes into the host's journal, and the host's inventory
        // name into the agent's messages; `env` carries them without needing the SSH
        // server to accept environment variables.
        let mut argv = vec![
            "env".to_owned(),
            format!("SHIP_USER={}", self.operator),
            format!("SHIP_HOST={}", self.host),
            program.clone(),
            "--json".to_owned(),
            "--protocol".to_owned(),
            protocol::VERSION.to_string(),
            R::COMMAND.to_owned(),
            "--root".to_owned(),
            self.root.clone(),
        ];
        argv.extend(request.args());
        tracing::debug!(command = %crate::quote::command_line(&redacted(&argv)), "run");
        let mut done = None;
        let mut failed = None;
        let mut theirs = None;
        let mut broken = None;
        let finished = self.transport.run(&argv, stdin, &mut |line| {
            let event = match serde_json::from_str::<Event>(line) {
                Ok(event) => event,
                // Before the agent speaks, a line is the host's (a login shell's
                // banner); after, its stdout is the protocol's alone.
                Err(_) if theirs.is_none() && !line.starts_with('{') => {
                    tracing::debug!(line, "ignored before the agent spoke");
                    return;
                }
                Err(e) => {
                    broken.get_or_insert_with(|| format!("{e} in {:?}", shorten(line)));
                    return;
                }
            };
            match &event {
                Event::Agent(info) => theirs = Some(info.protocol),
                Event::Done(data) => done = Some(data.clone()),
                Event::Failed(failure) => failed = Some(failure.clone()),
                _ => {}
            }
            on_event(&event);
        })?;
        tracing::debug!(command = R::COMMAND, exit = finished.code, "finished");
        let protocol_error = |what: String| CallError::Protocol {
            host: self.host.clone(),
            what,
        };
        // An agent of another protocol is replaced, whatever else it said: this comes
        // before the broken lines, since an older agent's `failed` event has another
        // shape (the `agent` event keeps its shape across protocols).
        if let Some(theirs) = theirs.filter(|&p| p != protocol::VERSION) {
            return Err(CallError::NoAgent(format!(
                "{program} speaks protocol {theirs}, ship speaks {}",
                protocol::VERSION
            )));
        }
        if let Some(what) = broken {
            return Err(protocol_error(what));
        }
        if let Some(data) = done.filter(|_| finished.code == 0) {
            return serde_json::from_value(data).map_err(|e| {
                protocol_error(format!("its reply to {} does not parse: {e}", R::COMMAND))
            });
        }
        if let Some(failure) = failed {
            if failure.kind == FailureKind::ProtocolMismatch {
                return Err(CallError::NoAgent(format!(
                    "{program}: {}",
                    failure.message
                )));
            }
            return Err(CallError::Failed(Box::new(failure)));
        }
        let stderr = finished.stderr.trim().to_owned();
        if finished.code == 127 || (theirs.is_none() && finished.code == 2) {
            // Not installed, or too old to know the protocol's flags.
            return Err(CallError::NoAgent(format!(
                "{program}: {}",
                stderr.lines().last().unwrap_or("not found")
            )));
        }
        Err(CallError::NoResult {
            code: finished.code,
            signal: finished.signal,
            stderr,
        })
    }
}

/// What a request is fed on stdin.
enum Input<'a> {
    None,
    /// A document ship holds whole (a URL, a list of digests): sent again when the
    /// agent had to be installed first.
    Bytes(&'a [u8]),
    /// A stream (an artifact), sent once.
    Stream(&'a mut (dyn Read + Send)),
}

/// `argv` with the values of `--set NAME=VALUE` hidden (they may be secrets), for
/// the log.
fn redacted(argv: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(argv.len());
    for arg in argv {
        let hidden = match (out.last().map(String::as_str), arg.split_once('=')) {
            (Some("--set"), Some((name, _))) => format!("{name}=…"),
            _ => arg.clone(),
        };
        out.push(hidden);
    }
    out
}

/// The start of a long line, for a message.
fn shorten(line: &str) -> &str {
    match line.char_indices().nth(120) {
        Some((end, _)) => &line[..end],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_log_hides_the_values_of_host_variables() {
        let argv: Vec<String> = [
            "ship-agent",
            "activate",
            "v2",
            "--set",
            "DATABASE_URL=postgres://app:s3cret@db/app",
            "--env-file",
            "shared/.env",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            super::redacted(&argv).join(" "),
            "ship-agent activate v2 --set DATABASE_URL=… --env-file shared/.env"
        );
    }
}
