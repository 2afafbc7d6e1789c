//! What is on the host: the releases present, which one is current, and which one a
//! rollback returns to (from the journal, never from mtimes or names).

use std::fs;
use std::io;

use manifests::Version;

use crate::error::AgentError;
use crate::layout::AppRoot;
use crate::protocol::{Op, Outcome, Record};

/// The releases under `releases/` that are complete (they have their manifest),
/// sorted by name. Anything else there is ignored.
pub fn present(root: &AppRoot) -> Result<Vec<Version>, AgentError> {
    let dir = root.releases();
    let items = match fs::read_dir(&dir) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AgentError::io("cannot list", &dir, e)),
    };
    let mut versions = Vec::new();
    for item in items {
        let item = item.map_err(|e| AgentError::io("cannot list", &dir, e))?;
        let Some(version) = item
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<Version>().ok())
        else {
            continue;
        };
        if root.release_manifest(&version).is_file() {
            versions.push(version);
        }
    }
    versions.sort();
    Ok(versions)
}

/// The release `current` points at, if it points at one.
pub fn current(root: &AppRoot) -> Option<Version> {
    let target = fs::read_link(root.current()).ok()?;
    let mut parts = target.iter();
    if parts.next()? != "releases" {
        return None;
    }
    let version = parts.next()?.to_str()?.parse().ok()?;
    parts.next().is_none().then_some(version)
}

/// The releases whose last health check failed: no automatic rollback chooses them
/// (until a later deploy of the same release passes).
pub fn bad(journal: &[Record]) -> Vec<Version> {
    let mut last: std::collections::BTreeMap<&Version, Outcome> = Default::default();
    for record in journal.iter().filter(|r| r.op == Op::Health) {
        if let Some(version) = &record.version {
            last.insert(version, record.result);
        }
    }
    last.into_iter()
        .filter(|(_, result)| *result == Outcome::Failed)
        .map(|(version, _)| version.clone())
        .collect()
}

/// The release a rollback from `current` returns to, among the releases present
/// that are not bad.
pub fn previous(
    journal: &[Record],
    current: Option<&Version>,
    present: &[Version],
) -> Option<Version> {
    let bad = bad(journal);
    let usable: Vec<Version> = present
        .iter()
        .filter(|v| !bad.contains(v))
        .cloned()
        .collect();
    rollback_target(journal, current, &usable)
}

/// The release a rollback from `current` returns to: the release that was current
/// when `current` was last activated by a deploy, skipping releases that are no
/// longer present (following their own activations further back). Rollbacks do not
/// count as activations here, so rolling back twice goes two releases back.
pub fn rollback_target(
    journal: &[Record],
    current: Option<&Version>,
    present: &[Version],
) -> Option<Version> {
    let current = current?;
    let mut candidate = current.clone();
    let mut before = journal.len();
    loop {
        let (index, activation) = journal[..before].iter().enumerate().rev().find(|(_, r)| {
            r.op == Op::Activate
                && r.result == Outcome::Ok
                && r.version.as_ref() == Some(&candidate)
        })?;
        let from = activation.from.clone()?;
        if from != *current && present.contains(&from) {
            return Some(from);
        }
        candidate = from;
        before = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(op: Op, from: Option<&str>, to: &str) -> Record {
        let mut r = Record::new(op, Outcome::Ok);
        r.from = from.map(|f| f.parse().unwrap());
        r.version = Some(to.parse().unwrap());
        r
    }

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn rollback_walks_back_through_deploys() {
        let journal = vec![
            switch(Op::Activate, None, "v1"),
            switch(Op::Activate, Some("v1"), "v2"),
            switch(Op::Activate, Some("v2"), "v3"),
        ];
        let all = [v("v1"), v("v2"), v("v3")];
        assert_eq!(
            rollback_target(&journal, Some(&v("v3")), &all),
            Some(v("v2"))
        );
        // After rolling back to v2, a second rollback goes to v1, not back to v3.
        let mut journal = journal;
        journal.push(switch(Op::Rollback, Some("v3"), "v2"));
        assert_eq!(
            rollback_target(&journal, Some(&v("v2")), &all),
            Some(v("v1"))
        );
        journal.push(switch(Op::Rollback, Some("v2"), "v1"));
        assert_eq!(rollback_target(&journal, Some(&v("v1")), &all), None);
    }

    #[test]
    fn releases_no_longer_present_are_skipped_and_failures_ignored() {
        let mut failed = switch(Op::Activate, Some("v2"), "v3");
        failed.result = Outcome::Failed;
        let journal = vec![
            switch(Op::Activate, None, "v1"),
            switch(Op::Activate, Some("v1"), "v2"),
            failed,
            switch(Op::Activate, Some("v2"), "v3"),
        ];
        assert_eq!(
            rollback_target(&journal, Some(&v("v3")), &[v("v1"), v("v3")]),
            Some(v("v1"))
        );
        assert_eq!(rollback_target(&journal, None, &[v("v1")]), None);
    }

    #[test]
    fn a_release_is_bad_while_its_last_health_check_failed() {
        let health = |v: &str, result| {
            let mut r = Record::new(Op::Health, result);
            r.version = Some(v.parse().unwrap());
            r
        };
        let mut journal = vec![
            health("v1", Outcome::Ok),
            health("v2", Outcome::Failed),
            health("v3", Outcome::Failed),
        ];
        assert_eq!(bad(&journal), [v("v2"), v("v3")]);
        journal.push(health("v2", Outcome::Ok));
        assert_eq!(bad(&journal), [v("v3")]);
    }

    #[test]
    fn a_redeploy_of_an_older_release_rolls_back_to_what_it_replaced() {
        let journal = vec![
            switch(Op::Activate, None, "v1"),
            switch(Op::Activate, Some("v1"), "v2"),
            switch(Op::Activate, Some("v2"), "v1"),
        ];
        let all = [v("v1"), v("v2")];
        assert_eq!(
            rollback_target(&journal, Some(&v("v1")), &all),
            Some(v("v2"))
        );
    }
}
