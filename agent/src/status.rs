//! `status` and `history`: what is on the host and what happened to it. Both only
//! read; neither takes the lock.

use manifests::Version;

use crate::error::AgentError;
use crate::journal;
use crate::layout::AppRoot;
use crate::lock;
use crate::output::{Output, human_bytes};
use crate::protocol::{LockInfo, Outcome, Record, ReleaseInfo, Status};
use crate::{fsutil, receive, releases};

/// Reads the state of `root`.
pub fn status(root: &AppRoot) -> Result<Status, AgentError> {
    let journal = journal::read(&root.journal())?;
    let present = releases::present(root)?;
    let current = releases::current(root);
    let previous = releases::previous(&journal, current.as_ref(), &present);
    let bad = releases::bad(&journal);
    let mut infos = Vec::new();
    for version in &present {
        // The small facts file when it has the figures; the manifest otherwise.
        let info = match receive::read_artifact_facts(root, version) {
            Some(facts) if facts.entries > 0 => ReleaseInfo {
                version: version.clone(),
                payload_digest: facts.payload_digest,
                artifact_sha256: facts.sha256,
                unpacked_size: facts.unpacked_size,
                entries: facts.entries,
                received: Some(facts.received),
                bad: bad.contains(version),
            },
            facts => {
                let Some(manifest) = receive::read_release_manifest(root, version)? else {
                    continue;
                };
                ReleaseInfo {
                    version: version.clone(),
                    payload_digest: manifest.payload_digest,
                    artifact_sha256: facts.as_ref().and_then(|f| f.sha256.clone()),
                    unpacked_size: manifest.unpacked_size,
                    entries: manifest.entry_count,
                    received: facts.map(|f| f.received),
                    bad: bad.contains(version),
                }
            }
        };
        infos.push(info);
    }
    let free_bytes = fsutil::free_bytes(root.path())
        .map_err(|e| AgentError::io("cannot measure free space on", root.path(), e))?;
    Ok(Status {
        root: root.path().display().to_string(),
        current,
        previous,
        releases: infos,
        lock: lock::holder(&root.lock()).map(|holder| LockInfo { holder }),
        free_bytes,
        last_switch: journal.iter().rev().find(|r| r.is_switch()).cloned(),
    })
}

/// Prints a status for people.
pub fn print(status: &Status, out: Output) {
    let name = |v: &Option<Version>| v.as_ref().map_or("-".to_owned(), ToString::to_string);
    out.say(format!("app root  {}", status.root));
    out.say(format!("current   {}", name(&status.current)));
    out.say(format!(
        "previous  {} (rollback target)",
        name(&status.previous)
    ));
    if let Some(last) = &status.last_switch {
        out.say(format!(
            "switched  {} by {} ({})",
            last.time,
            last.user,
            last.op.name()
        ));
    }
    let lock = match &status.lock {
        None => "free".to_owned(),
        Some(LockInfo { holder: Some(h) }) => format!("held by {h}"),
        Some(LockInfo { holder: None }) => "held".to_owned(),
    };
    out.say(format!("lock      {lock}"));
    out.say(format!("free      {}", human_bytes(status.free_bytes)));
    out.say(format!("releases  {}", status.releases.len()));
    for r in &status.releases {
        let marker = if Some(&r.version) == status.current.as_ref() {
            "*"
        } else {
            " "
        };
        out.say(format!(
            "  {marker} {:<20} {:>10}  {} entries  payload {}{}",
            r.version.as_str(),
            human_bytes(r.unpacked_size),
            r.entries,
            &r.payload_digest.as_str()[..16],
            if r.bad { "  BAD: failed health" } else { "" }
        ));
    }
}

/// Prints the journal for people.
pub fn print_history(records: &[Record], out: Output) {
    if records.is_empty() {
        out.say("no history yet");
    }
    for r in records {
        let what = match (&r.from, &r.version) {
            (Some(from), Some(to)) => format!("{from} -> {to}"),
            (None, Some(v)) => v.to_string(),
            _ => String::new(),
        };
        let result = match r.result {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Unchanged => "unchanged".to_owned(),
            Outcome::Failed => format!("FAILED: {}", r.reason.as_deref().unwrap_or("")),
        };
        let removed = if r.removed.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = r.removed.iter().map(Version::as_str).collect();
            format!(" removed {}", names.join(", "))
        };
        out.say(format!(
            "{}  {:<10} {:<9} {what}{removed}  {result}",
            r.time,
            r.user,
            r.op.name()
        ));
    }
}
