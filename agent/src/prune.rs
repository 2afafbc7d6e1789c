//! `prune --keep N`: removes the oldest releases beyond N, never the current one or
//! the rollback target, and clears leftovers of interrupted operations.
//!
//! "Oldest" is by the journal: the last time a release was received or switched to.
//! A release is first renamed into `.ship/trash/` (one atomic step, so `releases/`
//! never holds a half-deleted tree) and then deleted.

use std::collections::HashMap;
use std::fs;

use manifests::Version;

use crate::crash::checkpoint;
use crate::error::AgentError;
use crate::fsutil;
use crate::journal;
use crate::layout::{self, AppRoot};
use crate::output::Output;
use crate::protocol::{Op, Outcome, Pruned, Record};
use crate::releases;

/// Prunes `root` down to `keep` releases (the caller holds the lock).
pub fn prune(root: &AppRoot, keep: usize, out: Output) -> Result<Pruned, AgentError> {
    clear_leftovers(root)?;
    let journal = journal::read(&root.journal())?;
    let present = releases::present(root)?;
    let current = releases::current(root);
    let previous = releases::rollback_target(&journal, current.as_ref(), &present);

    // Newest first: by the last journal record naming the release.
    let mut last_seen: HashMap<&Version, usize> = HashMap::new();
    for (i, record) in journal.iter().enumerate() {
        if record.result != Outcome::Failed
            && let Some(v) = &record.version
        {
            last_seen.insert(v, i);
        }
    }
    let mut by_age: Vec<&Version> = present.iter().collect();
    by_age.sort_by(|a, b| {
        let (ia, ib) = (last_seen.get(a), last_seen.get(b));
        ib.cmp(&ia).then_with(|| b.cmp(a))
    });
    let (mut kept, mut doomed): (Vec<Version>, Vec<Version>) = (Vec::new(), Vec::new());
    for (rank, version) in by_age.into_iter().enumerate() {
        let protected = Some(version) == current.as_ref() || Some(version) == previous.as_ref();
        if rank < keep || protected {
            kept.push(version.clone());
        } else {
            doomed.push(version.clone());
        }
    }
    doomed.reverse();

    let mut removed = Vec::new();
    let mut failure = None;
    for version in doomed {
        match remove_release(root, &version) {
            Ok(()) => removed.push(version),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if !removed.is_empty() || failure.is_some() {
        let mut record = Record::new(
            Op::Prune,
            if failure.is_some() {
                Outcome::Failed
            } else {
                Outcome::Ok
            },
        );
        record.removed = removed.clone();
        record.reason = failure.as_ref().map(|e| crate::protocol::chain(e));
        journal::append(&root.journal(), &record)?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if removed.is_empty() {
        out.say("nothing to prune");
    } else {
        let names: Vec<&str> = removed.iter().map(Version::as_str).collect();
        out.say(format!("removed {}", names.join(", ")));
    }
    kept.sort();
    Ok(Pruned { removed, kept })
}

fn remove_release(root: &AppRoot, version: &Version) -> Result<(), AgentError> {
    let release = root.release(version);
    let trash = root.trash_for(version, &layout::nonce());
    fs::rename(&release, &trash).map_err(|e| AgentError::io("cannot move away", &release, e))?;
    fsutil::fsync_dir(&root.releases())
        .map_err(|e| AgentError::io("cannot flush", root.releases(), e))?;
    checkpoint("prune:moved");
    fsutil::remove_tree(&trash).map_err(|e| AgentError::io("cannot remove", &trash, e))
}

/// Removes what interrupted operations left: partial receives, half-deleted
/// releases. Only called with the lock held, so none of it is in use.
pub fn clear_leftovers(root: &AppRoot) -> Result<(), AgentError> {
    for dir in [root.incoming(), root.trash()] {
        let items = match fs::read_dir(&dir) {
            Ok(items) => items,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(AgentError::io("cannot list", &dir, e)),
        };
        for item in items.flatten() {
            let path = item.path();
            fsutil::remove_tree(&path).map_err(|e| AgentError::io("cannot remove", &path, e))?;
        }
    }
    Ok(())
}
