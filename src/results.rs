//! How each host's part in a run ended: [`HostResult`], and [`HostError`], the typed
//! failure (step, kind, message, causes, hint) that goes from the transport or the
//! agent, unflattened, to the table, the verdict, `--json` and the webhooks.

use agent::protocol::{self, Details, Failure, FailureKind};
use manifests::{Manifest, Version};
use serde::Serialize;

use crate::inventory::Host;
use crate::remote::CallError;
use crate::transport::TransportError;

/// The step of a host's part in which something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Connecting (SSH, host key, authentication).
    Connect,
    /// The first exchange with the agent (finding or installing it).
    Hello,
    /// Checks before anything is sent or changed.
    Preflight,
    /// Sending the artifact and its verification on the host.
    Transfer,
    /// Making the release live.
    Activate,
    /// Switching back.
    Rollback,
    /// A health check of what runs.
    Health,
    /// Reading the journal.
    History,
    /// Reading or changing the keys a host trusts.
    Trust,
    /// The metric analysis of a wave.
    Analysis,
    /// Not started.
    Start,
}

impl Step {
    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Hello => "hello",
            Step::Preflight => "preflight",
            Step::Transfer => "transfer",
            Step::Activate => "activate",
            Step::Rollback => "rollback",
            Step::Trust => "trust",
            Step::Analysis => "analysis",
            Step::Health => "health",
            Step::History => "history",
            Step::Start => "start",
        }
    }
}

/// What kind of failure a [`HostError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The host could not be reached.
    Unreachable,
    /// Its host key is unknown or changed.
    HostKey,
    /// No credential was accepted.
    Auth,
    /// The connection broke while a command ran.
    Session,
    /// No usable agent, and none could be installed.
    NoAgent,
    /// The agent's answer broke the protocol.
    Protocol,
    /// The agent ended without a result.
    NoResult,
    /// Something on ship's own side (the artifact file).
    Local,
    /// Ctrl-C came before the host started.
    Interrupted,
    /// The metric analysis after its wave did not pass.
    Analysis,
    /// The agent's own kind.
    #[serde(untagged)]
    Agent(FailureKind),
}

/// Why a host did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostError {
    /// The step it failed in.
    pub step: Step,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What failed, naming its subject.
    pub message: String,
    /// Its causes, outermost first.
    pub causes: Vec<String>,
    /// What the operator can do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl HostError {
    /// A failure in `step` of `kind`.
    pub fn new(step: Step, kind: ErrorKind, message: impl Into<String>) -> HostError {
        HostError {
            step,
            kind,
            message: message.into(),
            causes: Vec::new(),
            hint: None,
        }
    }

    /// A failed call to `host`'s agent in `step`. The agent's preflight findings are
    /// put in sentences naming the host (and, where the agent knew only a host path,
    /// the links of `manifest` that need it).
    pub fn from_call(
        step: Step,
        error: &CallError,
        host: &str,
        manifest: Option<&Manifest>,
    ) -> HostError {
        let transport = |kind, hint: Option<&str>| {
            let mut e = HostError::new(step, kind, error.to_string());
            e.causes = protocol::causes(error);
            e.hint = hint.map(str::to_owned);
            e
        };
        let failure = match error {
            CallError::Transport(TransportError::Connect { .. }) => {
                return transport(
                    ErrorKind::Unreachable,
                    Some(
                        "check the host's address and port in ship.toml, and that sshd runs there",
                    ),
                );
            }
            CallError::Transport(TransportError::HostKey(_)) => {
                return transport(ErrorKind::HostKey, None);
            }
            CallError::Transport(TransportError::Auth { .. }) => {
                return transport(
                    ErrorKind::Auth,
                    Some(
                        "check the host's user and identity in ship.toml, or the keys of your ssh-agent",
                    ),
                );
            }
            CallError::Transport(TransportError::Session { .. }) => {
                return transport(ErrorKind::Session, None);
            }
            CallError::NoAgent(_) => return transport(ErrorKind::NoAgent, None),
            CallError::Protocol { .. } => return transport(ErrorKind::Protocol, None),
            CallError::NoResult { .. } => return transport(ErrorKind::NoResult, None),
            CallError::Failed(failure) => failure,
        };
        HostError::from_failure(step, failure, host, manifest)
    }

    /// The agent's `failure` of `host` in `step` (a failed preflight counts as the
    /// preflight step, whichever command found it).
    pub fn from_failure(
        step: Step,
        failure: &Failure,
        host: &str,
        manifest: Option<&Manifest>,
    ) -> HostError {
        let step = match failure.kind {
            FailureKind::Preflight => Step::Preflight,
            _ => step,
        };
        let message = match &failure.details {
            Some(Details::Preflight {
                problems, lacking, ..
            }) => {
                let mut phrases: Vec<String> = Vec::new();
                for lacking in lacking {
                    let mut lacking = lacking.clone();
                    if lacking.needed_by.is_empty()
                        && let Some(links) =
                            manifest.and_then(|m| m.host_paths().remove(lacking.path.as_str()))
                    {
                        lacking.needed_by = links.into_iter().map(str::to_owned).collect();
                    }
                    phrases.push(lacking.sentence(host));
                }
                if !problems.is_empty() {
                    phrases.push(format!("{} on {host}", problems.join("; ")));
                }
                phrases.join("; ")
            }
            _ => failure.message.clone(),
        };
        HostError {
            step,
            kind: ErrorKind::Agent(failure.kind),
            message,
            causes: failure.causes.clone(),
            hint: failure.hint.clone(),
        }
    }

    /// The message and its causes, `message: cause: cause`, without the step.
    pub fn sentence(&self) -> String {
        std::iter::once(self.message.as_str())
            .chain(self.causes.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(": ")
    }

    /// Whether the agent says what the host runs now: a failure it reported rather
    /// than a transport that broke (where nobody can say).
    pub fn host_state_known(&self) -> bool {
        matches!(self.kind, ErrorKind::Agent(_))
    }
}

/// `step: message: cause: cause` — except for a health failure, whose message is
/// the agent's own sentence naming the host, the failure and the revert, and for a
/// host that never started.
impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let own_sentence = matches!(
            self.kind,
            ErrorKind::Interrupted
                | ErrorKind::Agent(FailureKind::Unhealthy | FailureKind::UnhealthyNow)
        );
        if !own_sentence {
            write!(f, "{}: ", self.step.name())?;
        }
        f.write_str(&self.sentence())
    }
}

/// The release current on a host after a failed call, when the failure says.
pub fn current_after(error: &CallError) -> Option<Version> {
    match error {
        CallError::Failed(failure) => match &failure.details {
            Some(Details::Unhealthy(unhealthy)) => Some(unhealthy.current().clone()),
            _ => None,
        },
        _ => None,
    }
}

/// How a host's part in a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It runs the release asked for (switched to it, or already had it).
    Done,
    /// The run switched it, then put it back on the release it ran before.
    Reverted,
    /// It was staged but not activated: the rollout stopped first.
    Skipped,
    /// It failed; `to` says what it runs now, when known.
    Failed,
}

impl Outcome {
    /// The word in the report's RESULT column.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Done => "ok",
            Outcome::Reverted => "reverted",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "FAILED",
        }
    }
}

/// How one host ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostResult {
    /// The host.
    pub host: String,
    /// Whether it did what was asked.
    pub ok: bool,
    /// How its part ended.
    pub result: Outcome,
    /// The release that was current before.
    pub from: Option<Version>,
    /// The release current now (when it changed or was already right).
    pub to: Option<Version>,
    /// Bytes of artifact (or delta stream) sent.
    pub transferred: u64,
    /// Files whose content was sent.
    pub files_sent: u64,
    /// Files the host copied from its own releases (a delta).
    pub files_reused: u64,
    /// Seconds spent on the host.
    pub seconds: f64,
    /// What happened, or why it failed (naming the step), for people.
    pub detail: String,
    /// Why it failed, when it did (the first failure, when a revert followed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<HostError>,
}

impl HostResult {
    /// A host that has not got anywhere yet.
    pub fn new(host: &Host) -> HostResult {
        HostResult {
            host: host.name.to_string(),
            ok: false,
            result: Outcome::Failed,
            from: None,
            to: None,
            transferred: 0,
            files_sent: 0,
            files_reused: 0,
            seconds: 0.0,
            detail: String::new(),
            failure: None,
        }
    }

    /// Records how the host ended.
    pub fn set(&mut self, result: Outcome, detail: impl Into<String>) {
        self.result = result;
        self.ok = result == Outcome::Done;
        self.detail = detail.into();
    }

    /// Records that the host failed with `error` (the first error stays).
    pub fn fail(&mut self, error: HostError) {
        self.set(Outcome::Failed, error.to_string());
        self.failure.get_or_insert(error);
    }

    /// A host Ctrl-C kept from starting.
    pub fn interrupted(host: &Host) -> HostResult {
        let mut result = HostResult::new(host);
        result.fail(HostError::new(
            Step::Start,
            ErrorKind::Interrupted,
            "not started: interrupted",
        ));
        result
    }

    /// Whether the run switched this host to `version` and it runs it now.
    pub fn switched_to(&self, version: &Version) -> bool {
        self.to.as_ref() == Some(version) && self.from.as_ref() != Some(version)
    }
}
