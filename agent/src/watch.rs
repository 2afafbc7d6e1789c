//! `health`: is the release that runs healthy now? Each service's check is tried
//! once (no restart, no retry, no hook), and the app root's lock is not taken, so
//! `ship` can keep watching a host after a deploy, or ask before promoting one,
//! while other operations run there.
//!
//! Only a change of outcome is journaled: a release that fails a check becomes bad
//! (no automatic rollback chooses it), one that passes again stops being bad, and
//! polling a steady release adds nothing. What a check saw while a deploy switched
//! or checked the release itself is not journaled: the deploy's record stands.

use manifests::Version;

use crate::error::AgentError;
use crate::journal;
use crate::layout::AppRoot;
use crate::output::Output;
use crate::protocol::{Checked, HostSettings, ServiceHealth};
use crate::protocol::{Op, Outcome, Record};
use crate::releases;
use crate::switch::Ready;

/// Checks the current release's services once each and journals the outcome when
/// it changed. A failure is [`AgentError::UnhealthyNow`], naming every service that
/// failed.
pub fn health(root: &AppRoot, host: &HostSettings, out: Output) -> Result<Checked, AgentError> {
    let Some(version) = releases::current(root) else {
        return Err(AgentError::NoCurrent {
            root: root.path().to_owned(),
        });
    };
    let before = journal::read(&root.journal())?;
    // The release's programs see the release it replaced, as they did when it went
    // live.
    let previous = before
        .iter()
        .rev()
        .find(|r| r.is_switch() && r.version.as_ref() == Some(&version))
        .and_then(|r| r.from.clone());
    let release = Ready::read(root, &version, host)?;
    let results = release.context(root, previous.as_ref(), out).health_now();

    let mut services = Vec::new();
    let mut failures = Vec::new();
    for (name, result) in results {
        services.push(ServiceHealth {
            name: name.clone(),
            ok: result.is_ok(),
        });
        match result {
            Ok(()) => out.say(format!("{name}: healthy")),
            Err(failure) => {
                out.say(format!("{name}: {failure}"));
                failures.push((name, failure));
            }
        }
    }
    if services.is_empty() {
        out.say(format!("{version}: no service has a health check"));
    }

    let outcome = if failures.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Failed
    };
    let reason = (!failures.is_empty()).then(|| {
        failures
            .iter()
            .map(|(service, failure)| format!("{service}: {failure}"))
            .collect::<Vec<_>>()
            .join("; ")
    });
    crate::crash::checkpoint("health:checked");
    let appended = journal::append_if(&root.journal(), |records| {
        let since = records.get(before.len()..).unwrap_or_default();
        let moved = releases::current(root).as_ref() != Some(&version)
            || since
                .iter()
                .any(|r| r.is_switch() || is_health_of(r, &version));
        if moved {
            return None;
        }
        let last = records.iter().rev().find(|r| is_health_of(r, &version));
        let changed = match last {
            Some(last) => last.result != outcome,
            None => outcome == Outcome::Failed,
        };
        changed.then(|| {
            let mut record = Record::new(Op::Health, outcome);
            record.version = Some(version.clone());
            record.reason = reason.clone();
            record
        })
    });
    let recorded = match appended {
        Ok(record) => record.is_some(),
        // The outcome stands without its record; say so rather than hide it.
        Err(e) => {
            let warning = crate::protocol::chain(&e);
            out.warn(&warning);
            false
        }
    };
    if recorded {
        out.say(match outcome {
            Outcome::Failed => {
                format!("journal: {version} is now bad (no automatic rollback chooses it)")
            }
            _ => format!("journal: {version} is healthy again (no longer bad)"),
        });
    }

    if !failures.is_empty() {
        return Err(AgentError::UnhealthyNow { version, failures });
    }
    out.say(format!(
        "{version} is healthy on {}",
        crate::error::host_name()
    ));
    Ok(Checked {
        version,
        services,
        recorded,
    })
}

fn is_health_of(record: &Record, version: &Version) -> bool {
    record.op == Op::Health && record.version.as_ref() == Some(version)
}
