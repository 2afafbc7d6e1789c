//! `activate` and `rollback`: point `current` at a release, atomically, and record
//! the switch in the journal.

use serde::Serialize;

use manifests::Version;

use crate::crash::checkpoint;
use crate::error::AgentError;
use crate::fsutil;
use crate::journal::{self, Op, Outcome, Record};
use crate::layout::{self, AppRoot};
use crate::output::Output;
use crate::releases;

/// What a switch did.
#[derive(Debug, Serialize)]
pub struct Switched {
    /// The release that was current before, if any.
    pub from: Option<Version>,
    /// The release now current.
    pub to: Version,
    /// `ok`, or `unchanged` when it was already current.
    pub outcome: Outcome,
}

/// Activates `version` (the caller holds the lock).
pub fn activate(root: &AppRoot, version: &Version, out: Output) -> Result<Switched, AgentError> {
    journaled(
        root,
        Op::Activate,
        Some(version),
        |_| Ok(version.clone()),
        out,
    )
}

/// Switches back to `to`, or to the release that was live before the current one
/// (the caller holds the lock).
pub fn rollback(root: &AppRoot, to: Option<&Version>, out: Output) -> Result<Switched, AgentError> {
    journaled(
        root,
        Op::Rollback,
        to,
        |current| match to {
            Some(v) => Ok(v.clone()),
            None => {
                let journal = journal::read(&root.journal())?;
                let present = releases::present(root)?;
                releases::rollback_target(&journal, current.as_ref(), &present).ok_or(
                    AgentError::NoPrevious {
                        current: current.clone(),
                    },
                )
            }
        },
        out,
    )
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
            }
        }
        Err(e) => {
            record.version = asked.cloned();
            record.result = Outcome::Failed;
            record.reason = Some(crate::chain(e));
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
        });
    }
    let prefix = if op == Op::Rollback {
        "rollback"
    } else {
        "activate"
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
    })
}
