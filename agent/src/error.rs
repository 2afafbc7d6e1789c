//! Errors of agent commands. Each names the app root, release or path it is about and
//! keeps its cause as a source; `run` renders the chain once.

use std::io;
use std::path::PathBuf;

use manifests::{Sha256, Version};
use packager::ReadError;

use crate::protocol::{
    Details, Failure, FailureKind, Holder, Lacking, RevertOutcome, ServiceFailure, Unhealthy,
};

/// Why an agent command failed. The host is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A file-system step failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done ("cannot create", …).
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Another operation holds the app root's lock.
    #[error("{}", crate::protocol::busy(&root.display().to_string(), holder.as_ref()))]
    Locked {
        /// The app root.
        root: PathBuf,
        /// Who holds it, when it said so.
        holder: Option<Holder>,
    },
    /// Not an app root: nothing was ever received there.
    #[error("{} is not an app root (it has no .ship directory)", root.display())]
    NotAnAppRoot {
        /// The path given.
        root: PathBuf,
    },
    /// The artifact did not read back as its manifest says.
    #[error("the artifact was refused")]
    Artifact(#[source] ReadError),
    /// The artifact is well-formed but not acceptable on this host.
    #[error("the artifact for {version} was refused: {reason}")]
    Refused {
        /// The release it carries.
        version: Version,
        /// Why.
        reason: String,
    },
    /// The artifact is not the one the operator meant.
    #[error("the artifact's sha256 is {actual}, expected {expected}")]
    WrongArtifact {
        /// From `--expect-digest`.
        expected: Sha256,
        /// Computed.
        actual: Sha256,
    },
    /// The release is not on this host.
    #[error("release {version} is not on this host{}", available(present))]
    NoRelease {
        /// The release asked for.
        version: Version,
        /// The releases that are.
        present: Vec<Version>,
    },
    /// Nothing to roll back to.
    #[error("there is no earlier release to roll back to{}", current.as_ref().map_or(String::new(), |c| format!(" from {c}")))]
    NoPrevious {
        /// The current release, if any.
        current: Option<Version>,
    },
    /// The environment file does not parse.
    #[error("{}:{line}: {reason}", path.display())]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// The line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// What the release needs is not on this host; nothing was changed.
    #[error("preflight failed{}: {}", version.as_ref().map_or(String::new(), |v| format!(" for {v}")), preflight_problems(lacking, problems))]
    Preflight {
        /// The release, when one was named.
        version: Option<Version>,
        /// What is missing, one phrase each (`DATABASE_URL is not set`).
        problems: Vec<String>,
        /// The host paths the release's symlinks need that this host lacks.
        lacking: Vec<Lacking>,
    },
    /// A hook failed; before the switch, nothing else was changed.
    #[error("the {stage} hook {hook} of {version} failed")]
    Hook {
        /// `pre_activate` or `post_activate`.
        stage: String,
        /// The hook's path in the release.
        hook: String,
        /// The release.
        version: Version,
        /// How it failed.
        #[source]
        source: crate::run::RunError,
    },
    /// A release was switched to but did not come up healthy.
    #[error("{}", unhealthy_message(.version, .failure, .reverted, *.rollback))]
    Unhealthy {
        /// The release that failed.
        version: Version,
        /// Which service and what its check saw.
        failure: String,
        /// What became of it.
        reverted: Revert,
        /// Whether this was a rollback (which is never reverted).
        rollback: bool,
    },
    /// `health` was asked about a root where no release is current.
    #[error("nothing to check: no release is current in {}", root.display())]
    NoCurrent {
        /// The app root.
        root: PathBuf,
    },
    /// The current release's services are not healthy now (`health`); nothing was
    /// changed but the journal's health record.
    #[error("{}", unhealthy_now_message(.version, .failures))]
    UnhealthyNow {
        /// The current release.
        version: Version,
        /// Each service whose check failed and what it saw, in the order listed.
        failures: Vec<(String, String)>,
    },
    /// A delta stream left out a file that no release here has (verified).
    #[error("the delta for {version} left out {path}, and no release on this host has its content")]
    MissingContent {
        /// The release received.
        version: Version,
        /// The file.
        path: String,
    },
    /// A delta was made against a manifest this host does not have.
    #[error(
        "the delta was made against the manifest of {version}, which this host does not have as it was sent"
    )]
    NoBase {
        /// The release named as the base.
        version: Version,
    },
    /// The artifact store did not give the artifact.
    #[error("cannot fetch {url}: {reason}")]
    Store {
        /// The artifact's URL, without its query string.
        url: String,
        /// What the store or the connection said.
        reason: String,
    },
    /// A release's signature, or a change to the trust store, was not accepted.
    #[error("{subject} was refused: {reason}")]
    Untrusted {
        /// What was refused: the release, or the key.
        subject: String,
        /// Why.
        reason: String,
    },
    /// The agent's binary could be replaced by someone other than its account.
    #[error("refusing to run {}: {} {why}, so another account could replace the agent", exe.display(), path.display())]
    UnsafeInstall {
        /// The running binary.
        exe: PathBuf,
        /// The binary itself or the directory on its path that is not safe.
        path: PathBuf,
        /// Who else can write it.
        why: String,
    },
    /// A release on disk differs from its manifest.
    #[error("release {version} differs from its manifest: {count} problem(s)")]
    Drift {
        /// The release.
        version: Version,
        /// How many entries differ.
        count: usize,
    },
}

fn available(present: &[Version]) -> String {
    if present.is_empty() {
        " (no release is)".to_owned()
    } else {
        let list: Vec<&str> = present.iter().map(Version::as_str).collect();
        format!(" (present: {})", list.join(", "))
    }
}

/// What became of a release that did not come up healthy.
#[derive(Debug)]
pub enum Revert {
    /// Nothing: there was no earlier release, or it was a rollback (never reverted).
    Nothing,
    /// Switching back failed; the failed release stays current.
    Failed {
        /// The release it tried to go back to.
        to: Version,
        /// Why it could not.
        why: String,
    },
    /// Switched back; `healthy` is `Err` with what the check saw when that release
    /// is not healthy either.
    Done {
        /// The release now current.
        to: Version,
        /// Its health.
        healthy: Result<(), String>,
    },
}

/// "web3 lacks /usr/bin/python3.11, which venv/bin/python3 needs; DATABASE_URL is
/// not set".
fn preflight_problems(lacking: &[Lacking], problems: &[String]) -> String {
    let host = host_name();
    lacking
        .iter()
        .map(|l| l.sentence(&host))
        .chain(problems.iter().cloned())
        .collect::<Vec<_>>()
        .join("; ")
}

fn unhealthy_message(
    version: &Version,
    failure: &str,
    reverted: &Revert,
    rollback: bool,
) -> String {
    let host = host_name();
    if rollback {
        return format!("rolled back to {version} on {host}, but it failed health ({failure})");
    }
    let after = match reverted {
        Revert::Nothing => {
            format!("there is no earlier release to revert to; {version} stays current")
        }
        Revert::Failed { to, why } => {
            format!("could not switch back to {to} ({why}); {version} stays current")
        }
        Revert::Done {
            to,
            healthy: Ok(()),
        } => format!("reverted to {to}, healthy"),
        Revert::Done {
            to,
            healthy: Err(why),
        } => format!("reverted to {to}, which is unhealthy too ({why})"),
    };
    format!("{version} failed health on {host} ({failure}); {after}")
}

fn unhealthy_now_message(version: &Version, failures: &[(String, String)]) -> String {
    let what: Vec<String> = failures
        .iter()
        .map(|(service, failure)| format!("{service}: {failure}"))
        .collect();
    format!(
        "{version} is unhealthy on {} ({})",
        host_name(),
        what.join("; ")
    )
}

/// This host's name for messages: `SHIP_HOST` (set by `ship` to the inventory
/// name), else the kernel's host name.
pub(crate) fn host_name() -> String {
    std::env::var("SHIP_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "this host".to_owned())
}

impl AgentError {
    /// This error as the protocol's `failed` event carries it: its kind, message,
    /// causes, a hint where there is something to do, and the facts a caller acts on.
    pub fn failure(&self) -> Failure {
        let (kind, details) = match self {
            AgentError::Io { .. } => (FailureKind::Io, None),
            AgentError::Locked { root, holder } => {
                return crate::protocol::locked(&root.display().to_string(), holder.clone());
            }
            AgentError::NotAnAppRoot { .. } => (FailureKind::NotAnAppRoot, None),
            AgentError::Artifact(_) => (FailureKind::Artifact, None),
            AgentError::Refused { .. } => (FailureKind::Refused, None),
            AgentError::WrongArtifact { .. } => (FailureKind::WrongArtifact, None),
            AgentError::NoRelease { .. } => (FailureKind::NoRelease, None),
            AgentError::NoPrevious { .. } => (FailureKind::NoPrevious, None),
            AgentError::EnvFile { .. } => (FailureKind::EnvFile, None),
            AgentError::Preflight {
                version,
                problems,
                lacking,
            } => (
                FailureKind::Preflight,
                Some(Details::Preflight {
                    version: version.clone(),
                    problems: problems.clone(),
                    lacking: lacking.clone(),
                }),
            ),
            AgentError::Hook { .. } => (FailureKind::Hook, None),
            AgentError::Unhealthy {
                version,
                failure,
                reverted,
                rollback,
            } => {
                let (revert, reverted_to, revert_failure) = match reverted {
                    Revert::Nothing => (RevertOutcome::None, None, None),
                    Revert::Failed { to, why } => {
                        (RevertOutcome::Failed, Some(to.clone()), Some(why.clone()))
                    }
                    Revert::Done { to, healthy } => (
                        RevertOutcome::Done,
                        Some(to.clone()),
                        healthy.as_ref().err().cloned(),
                    ),
                };
                (
                    FailureKind::Unhealthy,
                    Some(Details::Unhealthy(Unhealthy {
                        version: version.clone(),
                        failure: failure.clone(),
                        rollback: *rollback,
                        revert,
                        reverted_to,
                        revert_failure,
                    })),
                )
            }
            AgentError::NoCurrent { .. } => (FailureKind::NoCurrent, None),
            AgentError::UnhealthyNow { version, failures } => (
                FailureKind::UnhealthyNow,
                Some(Details::UnhealthyNow {
                    version: version.clone(),
                    failures: failures
                        .iter()
                        .map(|(service, failure)| ServiceFailure {
                            service: service.clone(),
                            failure: failure.clone(),
                        })
                        .collect(),
                }),
            ),
            AgentError::Drift { .. } => (FailureKind::Drift, None),
            AgentError::Store { .. } => (FailureKind::Store, None),
            AgentError::Untrusted { .. } => (FailureKind::Untrusted, None),
            AgentError::UnsafeInstall { .. } => (FailureKind::UnsafeInstall, None),
            AgentError::MissingContent { .. } | AgentError::NoBase { .. } => {
                (FailureKind::MissingContent, None)
            }
        };
        Failure {
            kind,
            message: self.to_string(),
            causes: crate::protocol::causes(self),
            hint: self.hint(),
            details,
        }
    }

    /// What the operator can do about it, where that is not plain from the message.
    fn hint(&self) -> Option<String> {
        let hint = match self {
            AgentError::NotAnAppRoot { .. } => {
                "check the app root, or deploy a release there first"
            }
            AgentError::NoPrevious { .. } => "name the release to go back to with --to",
            AgentError::Drift { .. } => {
                "something changed the release on disk; deploy it again to get a clean copy"
            }
            AgentError::MissingContent { .. } | AgentError::NoBase { .. } => {
                "send the whole artifact (ship deploy --full)"
            }
            AgentError::Untrusted { .. } => {
                "the host takes releases signed by a key it trusts (`ship trust list` shows them; `ship sign` signs), and one signed before a release it took only with --allow-downgrade"
            }
            AgentError::UnsafeInstall { path, .. } => {
                return Some(format!(
                    "chmod go-w {0} (and chown it to root or this account): only the account ship deploys as may write the agent and the directories above it",
                    path.display()
                ));
            }
            _ => return None,
        };
        Some(hint.to_owned())
    }

    /// A failed file-system step on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> AgentError {
        AgentError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
