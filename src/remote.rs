//! `ship-agent` on one host, as `ship` talks to it: finding (or installing) the agent,
//! the protocol (JSON events on its stdout), and one typed call per agent command.
//! Every call goes through the host's [`Transport`], built from an argv of validated
//! values.

use std::io::Read;
use std::path::PathBuf;

use manifests::{Sha256, Version};
use serde_json::Value;

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
    #[error("{message}")]
    Refused {
        /// The agent's error and its causes, on one line.
        message: String,
        /// Facts beside the message (`preflight`, `unhealthy`), or null.
        details: Value,
    },
    /// No usable agent on the host and none could be installed.
    #[error("no usable ship-agent on the host: {0}")]
    NoAgent(String),
    /// The agent's answer made no sense.
    #[error("ship-agent answered without a result (exit {code}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    NoResult {
        /// Its exit status.
        code: i32,
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
    host_args: Vec<String>,
    /// The agent's command on the host: a guess until `hello` has found it.
    program: Option<String>,
    /// Whether `hello` has found (or installed) the agent.
    found: bool,
    local: bool,
}

/// Who is deploying: `SHIP_USER`, else the local user's name.
pub(crate) fn operator() -> String {
    ["SHIP_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .or_else(|| {
            let uid = nix::unistd::getuid();
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The local `ship-agent` binary: `SHIP_AGENT`, else the one beside `ship`.
pub fn local_agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SHIP_AGENT") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .map(|exe| exe.with_file_name("ship-agent"))
        .unwrap_or_else(|_| PathBuf::from("ship-agent"))
}

impl RemoteAgent {
    /// Connects to `host` (over SSH, or not at all for a local host).
    pub fn connect(host: &Host, accept_new_keys: bool) -> Result<RemoteAgent, CallError> {
        let (transport, local): (Box<dyn Transport>, bool) = match &host.reach {
            Reach::Local => (Box::new(Local), true),
            Reach::Ssh(target) => (Box::new(Ssh::connect(target, accept_new_keys)?), false),
        };
        let mut host_args = Vec::new();
        if let Some(file) = &host.env_file {
            host_args.extend(["--env-file".to_owned(), file.clone()]);
        }
        for (name, value) in &host.env {
            host_args.extend(["--set".to_owned(), format!("{name}={value}")]);
        }
        Ok(RemoteAgent {
            transport,
            root: host.root.clone(),
            host: host.name.to_string(),
            host_args,
            program: None,
            found: false,
            local,
        })
    }

    /// Where the agent is looked for, most likely first.
    fn candidates(&self) -> Vec<String> {
        if self.local {
            vec![local_agent_binary().display().to_string()]
        } else {
            vec![
                format!("{}/.ship/bin/ship-agent", self.root.trim_end_matches('/')),
                "ship-agent".to_owned(),
            ]
        }
    }

    /// The first exchange: finds a usable agent (installing ship's own where the host
    /// has none, or one that speaks another protocol) and returns its hello.
    pub fn hello(&mut self) -> Result<Value, CallError> {
        let last = match self.probe()? {
            Ok(hello) => return Ok(hello),
            Err(why) => why,
        };
        if self.local {
            return Err(CallError::NoAgent(last));
        }
        let binary = local_agent_binary();
        let bytes = std::fs::read(&binary).map_err(|e| {
            CallError::NoAgent(format!(
                "{last}; and ship's own agent cannot be read from {}: {e}",
                binary.display()
            ))
        })?;
        let installed = self.candidates()[0].clone();
        self.transport.install(&bytes, &installed)?;
        self.program = Some(installed);
        let hello = self.run_agent("hello", &[], None, &mut |_, _| {})?;
        self.found = true;
        Ok(hello)
    }

    /// Says hello to the agent where it usually is, installing nothing: its hello,
    /// or (inner `Err`) why no usable agent answered.
    pub fn probe(&mut self) -> Result<Result<Value, String>, CallError> {
        let mut last = String::new();
        for program in self.candidates() {
            self.program = Some(program);
            match self.run_agent("hello", &[], None, &mut |_, _| {}) {
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

    /// Streams `artifact` into `receive`, requiring the release's payload digest.
    pub fn receive(
        &mut self,
        artifact: &mut (dyn Read + Send),
        payload: &Sha256,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Value, CallError> {
        let payload = payload.to_string();
        self.call(
            "receive",
            &["--expect-payload".to_owned(), payload],
            Some(artifact),
            progress,
        )
    }

    /// Activates `version`; the agent's events (phases, hook output) go to
    /// `on_event`.
    pub fn activate(
        &mut self,
        version: &Version,
        on_event: &mut dyn FnMut(&str, &Value),
    ) -> Result<Value, CallError> {
        let mut args = vec![version.as_str().to_owned()];
        args.extend(self.host_args.iter().cloned());
        self.call_with_events("activate", &args, None, on_event)
    }

    /// Rolls back, to `to` or the previous release; events as for `activate`.
    pub fn rollback(
        &mut self,
        to: Option<&Version>,
        on_event: &mut dyn FnMut(&str, &Value),
    ) -> Result<Value, CallError> {
        let mut args = Vec::new();
        if let Some(v) = to {
            args.extend(["--to".to_owned(), v.to_string()]);
        }
        args.extend(self.host_args.iter().cloned());
        self.call_with_events("rollback", &args, None, on_event)
    }

    /// Preflight alone: the lock, what `behaviour` requires, the host paths the
    /// release's symlinks point to, and `need_bytes` of disk when given.
    pub fn check(
        &mut self,
        behaviour: &manifests::behaviour::Behaviour,
        host_paths: &[&str],
        need_bytes: Option<u64>,
    ) -> Result<Value, CallError> {
        let mut args = Vec::new();
        for name in &behaviour.requires.env {
            args.extend(["--need-env".to_owned(), name.clone()]);
        }
        for file in &behaviour.requires.files {
            args.extend(["--need-file".to_owned(), file.clone()]);
        }
        for path in host_paths {
            args.extend(["--need-host-path".to_owned(), (*path).to_owned()]);
        }
        if let Some(bytes) = need_bytes {
            args.extend(["--need-bytes".to_owned(), bytes.to_string()]);
        }
        if let Some(file) = &behaviour.env_file {
            args.extend(["--release-env-file".to_owned(), file.clone()]);
        }
        args.extend(self.host_args.iter().cloned());
        self.call_with_events("check", &args, None, &mut |_, _| {})
    }

    /// Checks the services of the current release, once each.
    pub fn health(&mut self) -> Result<Value, CallError> {
        let args = self.host_args.clone();
        self.call_with_events("health", &args, None, &mut |_, _| {})
    }

    /// Prunes to `keep` releases.
    pub fn prune(&mut self, keep: u32) -> Result<Value, CallError> {
        self.call(
            "prune",
            &["--keep".to_owned(), keep.to_string()],
            None,
            &mut |_| {},
        )
    }

    /// The journal's records.
    pub fn history(&mut self) -> Result<Vec<Value>, CallError> {
        let mut records = Vec::new();
        self.call_with_events("history", &[], None, &mut |kind, data| {
            if kind == "record" {
                records.push(data.clone());
            }
        })?;
        Ok(records)
    }

    fn call(
        &mut self,
        command: &str,
        args: &[String],
        stdin: Option<&mut (dyn Read + Send)>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Value, CallError> {
        self.call_with_events(command, args, stdin, &mut |kind, data| {
            if kind == "progress" {
                progress(data["bytes"].as_u64().unwrap_or(0));
            }
        })
    }

    /// Runs an agent command. Without a `hello` first, the agent is tried where it
    /// usually is; only if it is not there does `hello` look further (and install
    /// it), so a rollback costs one round trip.
    fn call_with_events(
        &mut self,
        command: &str,
        args: &[String],
        stdin: Option<&mut (dyn Read + Send)>,
        on_event: &mut dyn FnMut(&str, &Value),
    ) -> Result<Value, CallError> {
        if self.program.is_none() {
            self.program = self.candidates().into_iter().next();
        }
        // A command fed on stdin is not retried: part of the input may be gone.
        // (Deploys say hello before they transfer.)
        if stdin.is_some() {
            return self.run_agent(command, args, stdin, on_event);
        }
        match self.run_agent(command, args, None, on_event) {
            Err(CallError::NoAgent(_)) if !self.found => {
                self.hello()?;
                self.run_agent(command, args, None, on_event)
            }
            other => other,
        }
    }

    /// Runs `ship-agent --json --protocol N <command> --root ROOT <args>`; every event
    /// goes to `on_event`; returns the `done` event's data.
    fn run_agent(
        &mut self,
        command: &str,
        args: &[String],
        stdin: Option<&mut (dyn Read + Send)>,
        on_event: &mut dyn FnMut(&str, &Value),
    ) -> Result<Value, CallError> {
        let program = self.program.clone().expect("a candidate is set");
        // The operator's name goes into the host's journal, and the host's inventory
        // name into the agent's messages; `env` carries them without needing the SSH
        // server to accept environment variables.
        let mut argv = vec![
            "env".to_owned(),
            format!("SHIP_USER={}", operator()),
            format!("SHIP_HOST={}", self.host),
            program.clone(),
            "--json".to_owned(),
            "--protocol".to_owned(),
            agent::PROTOCOL.to_string(),
            command.to_owned(),
            "--root".to_owned(),
            self.root.clone(),
        ];
        argv.extend(args.iter().cloned());
        let mut done = None;
        let mut failed = None;
        let mut spoke = false;
        let finished = self.transport.run(&argv, stdin, &mut |line| {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                return;
            };
            let kind = event["type"].as_str().unwrap_or("");
            let data = &event["data"];
            match kind {
                "agent" => spoke = true,
                "done" => done = Some(data.clone()),
                "failed" => failed = Some(data.clone()),
                _ => {}
            }
            on_event(kind, data);
        })?;
        if let Some(data) = done.filter(|_| finished.code == 0) {
            return Ok(data);
        }
        if let Some(data) = failed {
            let mut message = data["error"].as_str().unwrap_or("failed").to_owned();
            for cause in data["causes"].as_array().into_iter().flatten() {
                message.push_str(": ");
                message.push_str(cause.as_str().unwrap_or(""));
            }
            if message.starts_with("protocol mismatch") {
                return Err(CallError::NoAgent(format!("{program}: {message}")));
            }
            return Err(CallError::Refused {
                message,
                details: data["details"].clone(),
            });
        }
        let stderr = finished.stderr.trim().to_owned();
        if finished.code == 127 || (!spoke && finished.code == 2) {
            // Not installed, or too old to know the protocol's flags.
            return Err(CallError::NoAgent(format!(
                "{program}: {}",
                stderr.lines().last().unwrap_or("not found")
            )));
        }
        Err(CallError::NoResult {
            code: finished.code,
            stderr,
        })
    }
}
