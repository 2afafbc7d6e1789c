//! `ship deploy`, `ship promote`, `ship rollback`, `ship check`, `ship status`,
//! `ship history`: select hosts, run the fleet operation, print a table (or JSON
//! Lines) and a verdict, exit 1 when any host failed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use manifests::Version;
use serde_json::{Value, json};

use manifests::rollout::Policy;

use crate::cli::RolloutArgs;
use crate::error::CliError;
use crate::fleet::{self, Artifact, HostResult};
use crate::inventory::Host;
use crate::notify::Notifier;
use crate::output;
use crate::report::Reporter;
use crate::rollout::{self, PlanRow};
use crate::settings::FleetSettings;

/// Finds the artifact `release` names and reads its manifest.
fn artifact(settings: &FleetSettings, release: &str) -> Result<Artifact, CliError> {
    let fleet = &settings.fleet;
    let path = if release.contains('/') || release.ends_with(".tar.zst") {
        PathBuf::from(release)
    } else {
        let version: Version = release
            .parse()
            .map_err(|e: manifests::IdError| CliError::usage(e.to_string()))?;
        fleet
            .artifacts
            .join(packager::artifact_file_name(&fleet.app, &version))
    };
    let file = File::open(&path).map_err(|e| {
        CliError::failure(format!("cannot open the artifact {}", path.display()), e)
            .hint("pack it first with `ship pack`, or name the artifact's path")
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let manifest = packager::read::read_manifest(BufReader::new(file)).map_err(|e| {
        CliError::failure(format!("cannot read the artifact {}", path.display()), e)
    })?;
    if manifest.name != fleet.app {
        return Err(CliError::usage(format!(
            "{} is an artifact of {}, but this fleet deploys {}",
            path.display(),
            manifest.name,
            fleet.app
        )));
    }
    Ok(Artifact {
        path,
        manifest,
        size,
    })
}

/// Checks the artifact once here, so a damaged one reaches no host: its sha256
/// against the sidecar (the file is the one the build produced, so its manifest —
/// whose payload digest every host must match — can be trusted; each host checks
/// every file against it). Without a sidecar, every file is checked here.
fn verify_locally(artifact: &Artifact) -> Result<(), CliError> {
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| {
        CliError::failure(
            format!("artifact {} did not verify", artifact.path.display()),
            e,
        )
    };
    let sidecar = packager::sidecar_path(&artifact.path);
    if !sidecar.is_file() {
        let file = File::open(&artifact.path).map_err(|e| fail(e.into()))?;
        return packager::read_artifact(file, &mut packager::read::CheckOnly, false)
            .map(drop)
            .map_err(|e| fail(e.into()));
    }
    let expected =
        packager::verify::read_sidecar(&sidecar, &artifact.path).map_err(|e| fail(e.into()))?;
    let actual = packager::verify::file_digest(&artifact.path).map_err(|e| fail(e.into()))?;
    if actual != expected {
        return Err(fail(
            format!(
                "its sha256 is {actual}, but {} says {expected}",
                sidecar.display()
            )
            .into(),
        ));
    }
    Ok(())
}

pub fn deploy(
    settings: FleetSettings,
    release: &str,
    hosts: &str,
    rollout: &RolloutArgs,
) -> Result<(), CliError> {
    let artifact = artifact(&settings, release)?;
    let selected = settings.fleet.select(hosts).map_err(CliError::usage)?;
    verify_locally(&artifact)?;
    ship(&settings, &selected, &artifact, rollout)
}

/// Plans, or runs, the rollout of a checked artifact to `selected`.
fn ship(
    settings: &FleetSettings,
    selected: &[&Host],
    artifact: &Artifact,
    rollout: &RolloutArgs,
) -> Result<(), CliError> {
    let policy = settings.policy(rollout)?;
    if rollout.plan {
        return plan(settings, selected, artifact, &policy);
    }
    let reporter = Reporter::new(settings.json, !settings.progress);
    let environment = settings.fleet.environment.as_ref().map(|e| e.as_str());
    reporter.note(&format!(
        "deploying {} {} ({}) to {} host(s){}; rollout: {policy}",
        artifact.manifest.name,
        artifact.manifest.version,
        output::human_bytes(artifact.size),
        selected.len(),
        environment.map_or(String::new(), |e| format!(" of {e}")),
    ));
    if policy.canary == 0 && !policy.canary_wait.is_zero() {
        reporter.note("no canary hosts: the canary wait does not apply");
    }
    let notifier = settings.notifier();
    let outcome = rollout::deploy(
        selected,
        &rollout::Deploy {
            artifact,
            keep: settings.fleet.keep,
            all_or_nothing: rollout.all_or_nothing,
            policy: &policy,
            options: &settings.options,
            reporter: &reporter,
            notifier: &notifier,
            environment,
        },
    );
    finish(
        settings,
        &outcome.results,
        &outcome.verdict,
        outcome.ok,
        notifier,
    )
}

/// `--plan`: what the deploy would do, changing nothing; exit 1 when a host would
/// fail staging.
fn plan(
    settings: &FleetSettings,
    selected: &[&Host],
    artifact: &Artifact,
    policy: &Policy,
) -> Result<(), CliError> {
    let rows = rollout::plan(selected, artifact, policy, &settings.options);
    let waves = rows.iter().filter_map(|r| r.wave).max().unwrap_or(0);
    let sending: Vec<&PlanRow> = rows.iter().filter(|r| r.ready && r.send > 0).collect();
    let bytes: u64 = sending.iter().map(|r| r.send).sum();
    let blocked = rows.iter().filter(|r| !r.ready).count();
    if settings.json {
        for row in &rows {
            output::json_event("plan", row);
        }
        output::json_event(
            "summary",
            &json!({"hosts": rows.len(), "transfers": sending.len(), "bytes": bytes,
                    "waves": waves, "blocked": blocked, "policy": policy.to_string()}),
        );
    } else {
        let table_rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.host.clone(),
                    r.current.clone().unwrap_or_else(|| "-".into()),
                    match (r.ready, r.send) {
                        (false, _) => "-".into(),
                        (true, 0) => "none".into(),
                        (true, n) => output::human_bytes(n),
                    },
                    r.wave.map_or_else(
                        || "-".into(),
                        |w| {
                            if w == 1 && policy.canary > 0 {
                                "1 (canary)".into()
                            } else {
                                w.to_string()
                            }
                        },
                    ),
                    if r.ready {
                        r.note.clone()
                    } else {
                        format!("WOULD FAIL: {}", r.note)
                    },
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["HOST", "CURRENT", "SEND", "WAVE", "NOTE"], &table_rows)
        );
        for wave in 1..=waves {
            let members: Vec<&str> = rows
                .iter()
                .filter(|r| r.wave == Some(wave))
                .map(|r| r.host.as_str())
                .collect();
            println!(
                "wave {wave}{}: {}",
                if wave == 1 && policy.canary > 0 {
                    " (canary)"
                } else {
                    ""
                },
                members.join(", ")
            );
        }
    }
    output::note(format!(
        "plan for {} {}: {} of {} host(s) would be sent {} in all ({} each), then activated in {waves} wave(s); rollout: {policy}; nothing was changed",
        artifact.manifest.name,
        artifact.manifest.version,
        sending.len(),
        rows.len(),
        output::human_bytes(bytes),
        output::human_bytes(artifact.size),
    ));
    if blocked > 0 {
        return Err(CliError::failed_hosts(format!(
            "{blocked} of {} host(s) would fail staging",
            rows.len()
        )));
    }
    Ok(())
}

pub fn rollback(
    settings: FleetSettings,
    hosts: &str,
    to: Option<&Version>,
) -> Result<(), CliError> {
    let selected = settings.fleet.select(hosts).map_err(CliError::usage)?;
    let reporter = Reporter::new(settings.json, !settings.progress);
    let notifier = settings.notifier();
    let environment = settings.fleet.environment.as_ref().map(|e| e.as_str());
    let app = &settings.fleet.app;
    let target = to.map_or("their previous release".to_owned(), |v| v.to_string());
    let names: Vec<&str> = selected.iter().map(|h| h.name.as_str()).collect();
    notifier.send(
        "started",
        &format!(
            "{} started rolling back {app} on {} host(s){} to {target}",
            crate::remote::operator(),
            selected.len(),
            environment.map_or(String::new(), |e| format!(" of {e}")),
        ),
        json!({"op": "rollback", "app": app, "environment": environment, "to": to,
               "user": crate::remote::operator(), "hosts": names}),
    );
    let results = fleet::rollback(&selected, to, &settings.options, &reporter);
    let failed = results.iter().filter(|r| !r.ok).count();
    let verdict = format!(
        "rolled back {app} on {} of {} host(s){}",
        results.len() - failed,
        results.len(),
        if failed > 0 {
            format!("; {failed} failed")
        } else {
            String::new()
        }
    );
    notifier.send(
        "finished",
        &verdict,
        json!({"op": "rollback", "app": app, "environment": environment,
               "ok": failed == 0, "results": results}),
    );
    finish(&settings, &results, &verdict, failed == 0, notifier)
}

/// `ship promote FROM TO`: see the command's help.
pub fn promote(
    settings: FleetSettings,
    from: &str,
    hosts: &str,
    rollout: &RolloutArgs,
) -> Result<(), CliError> {
    let source = settings.environment(from)?;
    let to = settings
        .fleet
        .environment
        .as_ref()
        .map_or("?", |e| e.as_str());
    if from == to {
        return Err(CliError::usage(format!("cannot promote {from} to itself")));
    }
    let selected = settings.fleet.select(hosts).map_err(CliError::usage)?;
    let everywhere: Vec<&Host> = source.hosts.iter().collect();
    // A plan changes nothing, so it trusts the journals instead of checking now.
    let (version, payload) = fleet::running(&everywhere, !rollout.plan, &settings.options)
        .map_err(|why| CliError::failed_hosts(format!("cannot promote {from} to {to}: {why}")))?;
    let artifact = artifact(&settings, version.as_str())?;
    if artifact.manifest.payload_digest.as_str() != payload {
        return Err(CliError::failed_hosts(format!(
            "cannot promote {from} to {to}: {from} runs {version} with payload {payload}, but {} holds payload {}",
            artifact.path.display(),
            artifact.manifest.payload_digest
        )));
    }
    verify_locally(&artifact)?;
    output::note(format!(
        "{from} runs {} {version} on all {} host(s), healthy{}: promoting it to {to}",
        artifact.manifest.name,
        everywhere.len(),
        if rollout.plan {
            " by their journals"
        } else {
            ""
        }
    ));
    ship(&settings, &selected, &artifact, rollout)
}

/// The final table, the webhooks' warnings (once their posts are done) and the
/// verdict; exit 1 unless `ok`.
fn finish(
    settings: &FleetSettings,
    results: &[HostResult],
    verdict: &str,
    ok: bool,
    notifier: Notifier,
) -> Result<(), CliError> {
    let failed = results.iter().filter(|r| !r.ok).count();
    if settings.json {
        for result in results {
            output::json_event("result", result);
        }
        output::json_event(
            "summary",
            &json!({"hosts": results.len(), "failed": failed, "ok": ok, "verdict": verdict}),
        );
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| {
                vec![
                    r.host.clone(),
                    r.from.clone().unwrap_or_else(|| "-".into()),
                    r.to.clone().unwrap_or_else(|| "-".into()),
                    r.result.word().to_owned(),
                    if r.transferred > 0 {
                        output::human_bytes(r.transferred)
                    } else {
                        "-".into()
                    },
                    format!("{:.1}s", r.seconds),
                    r.detail.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["HOST", "FROM", "TO", "RESULT", "SENT", "DURATION", "REASON"],
                &rows
            )
        );
    }
    for warning in notifier.finish() {
        output::warn(format_args!("{warning}"));
    }
    if ok {
        output::note(verdict);
        Ok(())
    } else {
        Err(CliError::failed_hosts(verdict.to_owned()))
    }
}

/// `<what> on N of M host(s)`: a note when every host did it, exit 1 otherwise.
fn verdict(what: &str, hosts: usize, failed: usize) -> Result<(), CliError> {
    let verdict = format!("{what} on {} of {hosts} host(s)", hosts - failed);
    if failed == 0 {
        output::note(verdict);
        Ok(())
    } else {
        Err(CliError::failed_hosts(format!(
            "{verdict}; {failed} failed"
        )))
    }
}

pub fn status(settings: FleetSettings, hosts: &str) -> Result<(), CliError> {
    let selected = settings.fleet.select(hosts).map_err(CliError::usage)?;
    let statuses = fleet::status(&selected, &settings.options);
    // The fleet's version: the most common current release among reachable hosts.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, status) in &statuses {
        if let Ok(s) = status
            && let Some(current) = s["current"].as_str()
        {
            *counts.entry(current).or_default() += 1;
        }
    }
    let majority = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(v, n)| (*v, *n));
    let unreachable = statuses.iter().filter(|(_, s)| s.is_err()).count();
    let mut rows = Vec::new();
    for (host, status) in &statuses {
        let (row, state) = match status {
            Err(reason) => (
                vec!["-".into(), "-".into(), "-".into(), "-".into()],
                format!("unreachable: {reason}"),
            ),
            Ok(s) => {
                let current = s["current"].as_str();
                let last = &s["last_switch"];
                let last = if last.is_null() {
                    "-".to_owned()
                } else {
                    format!(
                        "{} by {}",
                        last["time"].as_str().unwrap_or("?"),
                        last["user"].as_str().unwrap_or("?")
                    )
                };
                let state = match (current, majority) {
                    (None, _) => "no release".to_owned(),
                    (Some(c), Some((m, n))) if c != m => {
                        format!("DIFFERS: the fleet runs {m} ({n} of {})", statuses.len())
                    }
                    _ if s["lock"].is_object() => "ok, busy (locked)".to_owned(),
                    _ => "ok".to_owned(),
                };
                let releases = s["releases"].as_array().map_or(0, Vec::len);
                (
                    vec![
                        current.unwrap_or("-").to_owned(),
                        s["previous"].as_str().unwrap_or("-").to_owned(),
                        releases.to_string(),
                        last,
                    ],
                    state,
                )
            }
        };
        if settings.json {
            output::json_event(
                "status",
                &json!({"host": host, "status": status.as_ref().ok(), "error": status.as_ref().err(), "state": state}),
            );
        }
        let mut full = vec![host.clone()];
        full.extend(row);
        full.push(state);
        rows.push(full);
    }
    if !settings.json {
        print!(
            "{}",
            table(
                &[
                    "HOST",
                    "CURRENT",
                    "PREVIOUS",
                    "RELEASES",
                    "LAST SWITCH",
                    "STATE"
                ],
                &rows
            )
        );
    }
    if unreachable > 0 {
        return Err(CliError::failed_hosts(format!(
            "{unreachable} of {} host(s) unreachable",
            statuses.len()
        )));
    }
    Ok(())
}

pub fn check(settings: FleetSettings, release: Option<&str>, hosts: &str) -> Result<(), CliError> {
    let artifact = release.map(|r| artifact(&settings, r)).transpose()?;
    let selected = settings.fleet.select(hosts).map_err(CliError::usage)?;
    let (behaviour, need_bytes, what) = match &artifact {
        Some(a) => (
            &a.manifest.behaviour,
            Some(a.manifest.unpacked_size),
            format!("{} {}", a.manifest.name, a.manifest.version),
        ),
        None => (
            &settings.fleet.behaviour,
            None,
            format!("{} (requirements from ship.toml)", settings.fleet.app),
        ),
    };
    let manifest = artifact.as_ref().map(|a| &a.manifest);
    let results = fleet::check(
        &selected,
        behaviour,
        manifest,
        need_bytes,
        &settings.options,
    );
    let mut rows = Vec::new();
    let mut failed = 0;
    for (host, result) in &results {
        let (verdict, detail) = match result {
            Ok(found) => (
                "ok",
                format!(
                    "{} free; environment file {}{}",
                    output::human_bytes(found["free_bytes"].as_u64().unwrap_or(0)),
                    found["env_file"].as_str().unwrap_or("?"),
                    if found["env_file_found"].as_bool() == Some(true) {
                        ""
                    } else {
                        " (absent)"
                    }
                ),
            ),
            Err(reason) => {
                failed += 1;
                ("FAILED", reason.clone())
            }
        };
        if settings.json {
            output::json_event(
                "check",
                &json!({"host": host, "ok": result.is_ok(), "result": result.as_ref().ok(), "error": result.as_ref().err()}),
            );
        }
        rows.push(vec![host.clone(), verdict.to_owned(), detail]);
    }
    if !settings.json {
        print!("{}", table(&["HOST", "PREFLIGHT", "DETAIL"], &rows));
    }
    verdict(
        &format!("preflight for {what} passed"),
        results.len(),
        failed,
    )
}

pub fn history(settings: FleetSettings, hosts: &str) -> Result<(), CliError> {
    let selected = settings.fleet.select(hosts).map_err(CliError::usage)?;
    let histories = fleet::history(&selected, &settings.options);
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut failed = 0;
    for (host, records) in histories {
        match records {
            Err(reason) => {
                failed += 1;
                output::warn(format_args!("{host}: {reason}"));
            }
            Ok(records) => {
                for record in records {
                    if settings.json {
                        output::json_event("record", &json!({"host": host, "record": record}));
                    }
                    rows.push((
                        record["time"].as_str().unwrap_or("").to_owned(),
                        history_row(&host, &record),
                    ));
                }
            }
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if !settings.json {
        let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, row)| row).collect();
        print!(
            "{}",
            table(
                &["TIME", "HOST", "USER", "OP", "FROM", "TO", "RESULT"],
                &rows
            )
        );
    }
    if failed > 0 {
        return Err(CliError::failed_hosts(format!(
            "{failed} host(s) unreachable"
        )));
    }
    Ok(())
}

fn history_row(host: &str, r: &Value) -> Vec<String> {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let result = match r["result"].as_str() {
        Some("failed") => format!("failed: {}", r["reason"].as_str().unwrap_or("")),
        other => other.unwrap_or("-").to_owned(),
    };
    vec![
        text(&r["time"]),
        host.to_owned(),
        text(&r["user"]),
        text(&r["op"]),
        text(&r["from"]),
        text(&r["version"]),
        result,
    ]
}

/// A plain text table: columns padded to their widest cell, the last one free.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let line: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    (*c).to_owned()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push(header.to_vec());
    for row in rows {
        push(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_pad_all_but_the_last_column() {
        let t = super::table(
            &["HOST", "RESULT", "DETAIL"],
            &[
                vec!["web1".into(), "ok".into(), "v1 -> v2".into()],
                vec!["web10".into(), "FAILED".into(), "connect: refused".into()],
            ],
        );
        assert_eq!(
            t,
            "HOST   RESULT  DETAIL\nweb1   ok      v1 -> v2\nweb10  FAILED  connect: refused\n"
        );
    }
}
