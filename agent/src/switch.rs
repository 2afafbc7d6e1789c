//! `activate` and `rollback`: point `current` at a release, atomically, record the
//! switch in the journal, and bring the release up (restarts and health checks, see
//! `lifecycle`), switching back when a deployed release does not come up healthy.

use manifests::{Manifest, Version};

use crate::crash::checkpoint;
use crate::env::Environment;
use crate::error::{AgentError, Revert};
use crate::fsutil;
use crate::journal;
use crate::layout::{self, AppRoot};
use crate::lifecycle::{self, Context};
use crate::output::Output;
use crate::protocol::HostSettings;
use crate::protocol::{Op, Outcome, Record, Switched};
use crate::receive;
use crate::releases;

/// A release ready to switch to (or, read without preflight, running): its
/// manifest and environment.
pub(crate) struct Ready {
    manifest: Manifest,
    env: Environment,
}

impl Ready {
    /// Loads release `version` and checks what it requires; nothing is changed.
    fn load(root: &AppRoot, version: &Version, host: &HostSettings) -> Result<Ready, AgentError> {
        let ready = Ready::read(root, version, host)?;
        let problems = lifecycle::missing(root, &ready.manifest.behaviour, &ready.env);
        let lacking = lifecycle::lacking(&lifecycle::host_paths(&ready.manifest));
        if !problems.is_empty() || !lacking.is_empty() {
            return Err(AgentError::Preflight {
                version: Some(version.clone()),
                problems,
                lacking,
            });
        }
        Ok(ready)
    }

    /// Loads release `version` without checking its requirements (a revert goes back
    /// whatever they say: the release was live a moment ago; `health` checks what
    /// runs).
    pub(crate) fn read(
        root: &AppRoot,
        version: &Version,
        host: &HostSettings,
    ) -> Result<Ready, AgentError> {
        let Some(manifest) = receive::read_release_manifest(root, version)? else {
            return Err(AgentError::NoRelease {
                version: version.clone(),
                present: releases::present(root)?,
            });
        };
        let env = Environment::load(root, &manifest.behaviour, host)?;
        Ok(Ready { manifest, env })
    }

    /// How the release's programs run: in its directory, with its environment, and
    /// `previous` as `SHIP_PREVIOUS`.
    pub(crate) fn context<'a>(
        &'a self,
        root: &'a AppRoot,
        previous: Option<&'a Version>,
        out: Output,
    ) -> Context<'a> {
        Context {
            root,
            app: &self.manifest.name,
            version: &self.manifest.version,
            previous,
            behaviour: &self.manifest.behaviour,
            env: &self.env,
            out,
        }
    }
}

/// Activates `version` (the caller holds the lock): preflight, shared paths, the
/// `pre_activate` hook, the switch, restarts and health checks, then the
/// `post_activate` hook. A release that does not come up healthy is switched back
/// to the one before, which is restarted and checked in turn.
pub fn activate(
    root: &AppRoot,
    version: &Version,
    host: &HostSettings,
    out: Output,
) -> Result<Switched, AgentError> {
    let mut ready = None;
    let mut switched = journaled(
        root,
        Op::Activate,
        Some(version),
        |current| {
            if current.as_ref() != Some(version) {
                crate::trust::Trust::load(root)?.check_held(root, version)?;
                let release = Ready::load(root, version, host)?;
                lifecycle::prepare_shared(root, &release.manifest.behaviour)?;
                release
                    .context(root, current.as_ref(), out)
                    .hook("pre_activate")?;
                ready = Some(release);
            }
            Ok(version.clone())
        },
        out,
    )?;
    let Some(release) = ready.filter(|_| switched.outcome == Outcome::Ok) else {
        return Ok(switched);
    };
    let context = release.context(root, switched.from.as_ref(), out);
    match go_live(root, &context) {
        Ok(()) => {
            switched.warnings = post_activate(&context);
            Ok(switched)
        }
        Err(failure) => Err(AgentError::Unhealthy {
            version: version.clone(),
            reverted: match &switched.from {
                Some(previous) => revert(root, previous, version, host, out),
                None => Revert::Nothing,
            },
            failure,
            rollback: false,
        }),
    }
}

/// Switches back to `previous` after `failed` did not come up, and brings it up.
fn revert(
    root: &AppRoot,
    previous: &Version,
    failed: &Version,
    host: &HostSettings,
    out: Output,
) -> Revert {
    let mut ready = None;
    let switched = journaled(
        root,
        Op::Revert,
        Some(previous),
        |_| {
            ready = Some(Ready::read(root, previous, host)?);
            Ok(previous.clone())
        },
        out,
    );
    if let Err(e) = switched {
        return Revert::Failed {
            to: previous.clone(),
            why: crate::protocol::chain(&e),
        };
    }
    let release = ready.expect("loaded before the switch");
    Revert::Done {
        to: previous.clone(),
        healthy: go_live(root, &release.context(root, Some(failed), out)),
    }
}

/// Switches back to `to`, or to the release that was live before the current one
/// (never one whose health check failed), then restarts and checks it; the caller
/// holds the lock. A rollback that is not healthy is reported, not reverted.
pub fn rollback(
    root: &AppRoot,
    to: Option<&Version>,
    host: &HostSettings,
    out: Output,
) -> Result<Switched, AgentError> {
    let mut ready = None;
    let mut switched = journaled(
        root,
        Op::Rollback,
        to,
        |current| {
            let target = match to {
                Some(v) => v.clone(),
                None => {
                    let journal = journal::read(&root.journal())?;
                    let present = releases::present(root)?;
                    releases::previous(&journal, current.as_ref(), &present).ok_or(
                        AgentError::NoPrevious {
                            current: current.clone(),
                        },
                    )?
                }
            };
            if current.as_ref() != Some(&target) {
                ready = Some(Ready::load(root, &target, host)?);
            }
            Ok(target)
        },
        out,
    )?;
    let Some(release) = ready.filter(|_| switched.outcome == Outcome::Ok) else {
        return Ok(switched);
    };
    let context = release.context(root, switched.from.as_ref(), out);
    go_live(root, &context).map_err(|failure| AgentError::Unhealthy {
        version: switched.to.clone(),
        failure,
        reverted: Revert::Nothing,
        rollback: true,
    })?;
    switched.warnings = post_activate(&context);
    Ok(switched)
}

/// Restarts and checks the services of the release in `context` (now current), and
/// journals the health outcome when it has services.
fn go_live(root: &AppRoot, context: &Context) -> Result<(), String> {
    let result = context.go_live().map_err(|e| e.to_string());
    if !context.behaviour.services.is_empty() {
        let mut record = Record::new(
            Op::Health,
            if result.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Failed
            },
        );
        record.version = Some(context.version.clone());
        record.reason = result.as_ref().err().cloned();
        if let Err(e) = journal::append(&root.journal(), &record) {
            context
                .out
                .say(format!("warning: {}", crate::protocol::chain(&e)));
        }
    }
    result
}

/// Runs the `post_activate` hook; its failure is a warning (the release is live and
/// healthy).
fn post_activate(context: &Context) -> Vec<String> {
    match context.hook("post_activate") {
        Ok(()) => Vec::new(),
        Err(e) => {
            let warning = crate::protocol::chain(&e);
            context.out.warn(&warning);
            vec![warning]
        }
    }
}

/// Runs a switch to the release `choose` picks, journaling the outcome either way.
fn journaled(
    root: &AppRoot,
    op: Op,
    asked: Option<&Version>,
    choose: impl FnOnce(&Option<Version>) -> Result<Version, AgentError>,
    out: Output,
) -> Result<Switched, AgentError> {
    let current = releases::current(root);
    let result = choose(&current).and_then(|target| switch(root, current.clone(), target, op));
    let mut record = Record::new(op, Outcome::Ok);
    record.from = current;
    match &result {
        Ok(switched) => {
            record.version = Some(switched.to.clone());
            record.result = switched.outcome;
            if switched.outcome == Outcome::Unchanged {
                out.say(format!("{} is already current; nothing to do", switched.to));
            } else {
                let from = switched
                    .from
                    .as_ref()
                    .map_or("nothing".into(), ToString::to_string);
                out.say(format!("current: {from} -> {}", switched.to));
                out.phase(op.name(), format!("{from} -> {}", switched.to));
            }
        }
        Err(e) => {
            record.version = asked.cloned();
            record.result = Outcome::Failed;
            record.reason = Some(crate::protocol::chain(e));
        }
    }
    journal::append(&root.journal(), &record)?;
    result
}

fn switch(
    root: &AppRoot,
    current: Option<Version>,
    target: Version,
    op: Op,
) -> Result<Switched, AgentError> {
    for stale in root
        .stale_next_currents()
        .map_err(|e| AgentError::io("cannot list", root.path(), e))?
    {
        let _ = std::fs::remove_file(stale);
    }
    if !root.release_manifest(&target).is_file() {
        return Err(AgentError::NoRelease {
            version: target,
            present: releases::present(root)?,
        });
    }
    if current.as_ref() == Some(&target) {
        return Ok(Switched {
            from: current,
            to: target,
            outcome: Outcome::Unchanged,
            warnings: Vec::new(),
            pruned: Vec::new(),
        });
    }
    let prefix = match op {
        Op::Rollback => "rollback",
        Op::Revert => "revert",
        _ => "activate",
    };
    let link = root.current();
    fsutil::replace_symlink(
        &AppRoot::current_target(&target),
        &root.next_current(&layout::nonce()),
        &link,
        || checkpoint(&format!("{prefix}:linked")),
    )
    .map_err(|e| AgentError::io("cannot switch", &link, e))?;
    checkpoint(&format!("{prefix}:switched"));
    Ok(Switched {
        from: current,
        to: target,
        outcome: Outcome::Ok,
        warnings: Vec::new(),
        pruned: Vec::new(),
    })
}
