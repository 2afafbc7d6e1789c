//! `ship deploy`, `ship promote`, `ship rollback`, `ship check`, `ship status`,
//! `ship history`: select hosts, run the fleet operation, print a table (or JSON
//! Lines) and a verdict, exit 1 when any host failed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use agent::human_bytes;
use agent::protocol::{Preflight, Record, Status};
use manifests::rollout::Policy;
use manifests::{Sha256, Version};
use serde_json::json;

use crate::error::CliError;
use crate::fleet::{self, Artifact};
use crate::inventory::Host;
use crate::notify::Notifier;
use crate::printer::{Printer, table};
use crate::results::{HostError, HostResult};
use crate::rollout::{self, PlanRow};
use crate::settings::{FleetSettings, RolloutSettings};
use crate::store::Store;

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
    let signature = crate::signing::artifact_signature(&path)?;
    Ok(Artifact {
        path,
        manifest,
        size,
        deltas: crate::delta::Deltas::new(fleet.artifacts.clone()),
        pull: None,
        signing: agent::protocol::Signing {
            signature: signature.map(|s| s.text().to_owned()),
            allow_downgrade: None,
        },
    })
}

/// Checks the artifact once here, so a damaged one reaches no host: its sha256
/// against the sidecar (the file is the one the build produced, so its manifest —
/// whose payload digest every host must match — can be trusted; each host checks
/// every file against it). Without a sidecar, every file is checked here. Returns
/// the artifact's sha256 when it was checked against the sidecar.
fn verify_locally(artifact: &Artifact) -> Result<Option<Sha256>, CliError> {
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
            .map(|_| None)
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
    Ok(Some(actual))
}

/// In pull mode (a store configured, no `--push`): where the hosts fetch `artifact`
/// (whose sha256 is `digest`), once the store is found to hold this very artifact.
fn pull(
    settings: &FleetSettings,
    artifact: &Artifact,
    digest: Option<Sha256>,
    rollout: &RolloutSettings,
) -> Result<Option<fleet::Pull>, CliError> {
    if rollout.push || settings.fleet.store.url.is_none() {
        return Ok(None);
    }
    let store = Store::open(&settings.fleet.store, None).map_err(CliError::usage)?;
    let manifest = &artifact.manifest;
    let label = format!("{} {}", manifest.name, manifest.version);
    let digest = digest.ok_or_else(|| {
        CliError::usage(format!(
            "{} has no sidecar, so it cannot be matched with the store's copy",
            artifact.path.display()
        ))
        .hint("deploy the artifact ship pack wrote, with its .sha256 sidecar, or pass --push")
    })?;
    let published = store
        .published(&manifest.name, &manifest.version)
        .map_err(|e| CliError::failure(format!("cannot deploy {label} from the store"), e))?;
    match published {
        None => Err(
            CliError::usage(format!("{label} is not published in {}", store.url())).hint(format!(
                "publish it first (ship publish {}), or stream it from here with --push",
                manifest.version
            )),
        ),
        Some(there) if there != digest => Err(CliError::usage(format!(
            "{} holds another artifact for {label} (sha256 {there}) than {} (sha256 {digest})",
            store.url(),
            artifact.path.display()
        ))),
        Some(_) => {
            let url = store
                .fetch_url(&manifest.name, &manifest.version)
                .map_err(|e| {
                    CliError::failure(format!("cannot deploy {label} from the store"), e)
                })?;
            Ok(Some(fleet::Pull {
                url,
                digest,
                store: store.url().to_owned(),
            }))
        }
    }
}

/// The release `version` as the store has published it, for a deploy in pull mode
/// from a machine that does not have the artifact: its manifest and size come from
/// the store, and the hosts check the artifact against the published sha256.
fn published(settings: &FleetSettings, version: &Version) -> Result<Artifact, CliError> {
    let fleet = &settings.fleet;
    let label = format!("{} {version}", fleet.app);
    let store = Store::open(&fleet.store, None).map_err(CliError::usage)?;
    let fail = |e: String| CliError::failure(format!("cannot deploy {label} from the store"), e);
    let digest = store
        .published(&fleet.app, version)
        .map_err(fail)?
        .ok_or_else(|| {
            CliError::usage(format!(
                "{label} is neither in {} nor published in {}",
                fleet.artifacts.display(),
                store.url()
            ))
            .hint(format!("pack it and publish it (ship publish {version})"))
        })?;
    let (json, size) = store.manifest(&fleet.app, version).map_err(fail)?;
    let signature = store.signature(&fleet.app, version).map_err(fail)?;
    if let Some(text) = &signature {
        manifests::signature::Signature::parse(text)
            .map_err(|e| fail(format!("its published signature is unusable: {e}")))?;
    }
    let manifest = manifests::Manifest::from_json(&json).map_err(|e| fail(e.to_string()))?;
    if manifest.name != fleet.app || manifest.version != *version {
        return Err(fail(format!(
            "its published manifest is for {} {}",
            manifest.name, manifest.version
        )));
    }
    let url = store.fetch_url(&fleet.app, version).map_err(fail)?;
    Ok(Artifact {
        path: PathBuf::new(),
        manifest,
        size,
        deltas: crate::delta::Deltas::new(fleet.artifacts.clone()),
        pull: Some(fleet::Pull {
            url,
            digest,
            store: store.url().to_owned(),
        }),
        signing: agent::protocol::Signing {
            signature,
            allow_downgrade: None,
        },
    })
}

pub fn deploy(
    settings: &FleetSettings,
    release: &str,
    hosts: &str,
    rollout: &RolloutSettings,
    printer: &Printer,
) -> Result<(), CliError> {
    let selected = settings.fleet.select(hosts).map_err(CliError::usage)?;
    let fleet = &settings.fleet;
    // A version this machine has no artifact of comes from the store, in pull mode.
    let from_store = match release.parse::<Version>() {
        Ok(version)
            if fleet.store.url.is_some()
                && !rollout.push
                && !release.ends_with(".tar.zst")
                && !fleet
                    .artifacts
                    .join(packager::artifact_file_name(&fleet.app, &version))
                    .exists() =>
        {
            Some(version)
        }
        _ => None,
    };
    let mut artifact = match from_store {
        Some(version) => published(settings, &version)?,
        None => {
            let mut artifact = artifact(settings, release)?;
            let digest = verify_locally(&artifact)?;
            artifact.pull = pull(settings, &artifact, digest, rollout)?;
            artifact
        }
    };
    check_trusted(settings, &artifact)?;
    artifact.signing.allow_downgrade = rollout.allow_downgrade.clone();
    ship(settings, &selected, &artifact, rollout, printer)
}

/// With `[trust]` keys in ship.toml, an artifact not signed by one of them goes to
/// no host: its signature is checked here, over the file when it is here.
fn check_trusted(settings: &FleetSettings, artifact: &Artifact) -> Result<(), CliError> {
    let keys = settings.trusted_keys()?;
    if keys.is_empty() {
        return Ok(());
    }
    let label = format!("{} {}", artifact.manifest.name, artifact.manifest.version);
    let refuse = |why: String| {
        CliError::failure(format!("{label} is not deployed"), why)
            .hint("sign it with a key of [trust] (ship sign ARTIFACT --key KEY)")
    };
    let Some(text) = artifact.signing.signature.as_deref() else {
        return Err(refuse(
            "it is not signed, and ship.toml's [trust] requires a signature".into(),
        ));
    };
    let signature =
        manifests::signature::Signature::parse(text).map_err(|e| refuse(e.to_string()))?;
    let file =
        (artifact.pull.is_none() || artifact.path.is_file()).then_some(artifact.path.as_path());
    crate::signing::check_signature(file, &artifact.manifest, &signature, &keys)
        .map(|_| ())
        .map_err(|e| refuse(e.to_string()))
}

/// Plans, or runs, the rollout of a checked artifact to `selected`.
fn ship(
    settings: &FleetSettings,
    selected: &[&Host],
    artifact: &Artifact,
    rollout: &RolloutSettings,
    printer: &Printer,
) -> Result<(), CliError> {
    let policy = &rollout.policy;
    // A query the metrics backend rejects stops the deploy before anything moves.
    let analysis = check_queries(settings, selected, Some(&artifact.manifest.version))?;
    if rollout.plan {
        return plan(settings, selected, artifact, policy, rollout.full, printer);
    }
    let environment = settings.fleet.environment.as_ref().map(|e| e.as_str());
    printer.progress(format!(
        "deploying {} {} ({}) to {} host(s){}; rollout: {policy}",
        artifact.manifest.name,
        artifact.manifest.version,
        human_bytes(artifact.size),
        selected.len(),
        environment.map_or(String::new(), |e| format!(" of {e}")),
    ));
    if policy.canary == 0 && !policy.canary_wait.is_zero() {
        printer.progress("no canary hosts: the canary wait does not apply");
    }
    let notifier = settings.notifier();
    let finished = rollout::deploy(
        selected,
        &rollout::Deploy {
            artifact,
            keep: settings.fleet.keep,
            all_or_nothing: rollout.all_or_nothing,
            full: rollout.full,
            policy,
            options: &settings.options,
            printer,
            notifier: &notifier,
            environment,
            analysis: analysis.as_ref(),
        },
    );
    let ok = finished.verdict.ok();
    finish(
        printer,
        &finished.results,
        &finished.verdict.to_string(),
        ok,
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
    full: bool,
    printer: &Printer,
) -> Result<(), CliError> {
    let rows = rollout::plan(selected, artifact, policy, full, &settings.options);
    let waves = rows.iter().filter_map(|r| r.wave).max().unwrap_or(0);
    let sending: Vec<&PlanRow> = rows.iter().filter(|r| r.ready && r.send > 0).collect();
    let bytes: u64 = sending.iter().map(|r| r.send).sum();
    let blocked = rows.iter().filter(|r| !r.ready).count();
    for row in &rows {
        printer.event("plan", row);
    }
    printer.event(
        "summary",
        &json!({"hosts": rows.len(), "transfers": sending.len(), "bytes": bytes,
                "waves": waves, "blocked": blocked, "policy": policy.to_string()}),
    );
    printer.data(&plan_table(&rows, policy));
    printer.note(format!(
        "plan for {} {}: {} of {} host(s) would be sent {} in all (the artifact is {}), then activated in {waves} wave(s); rollout: {policy}; nothing was changed",
        artifact.manifest.name,
        artifact.manifest.version,
        sending.len(),
        rows.len(),
        human_bytes(bytes),
        human_bytes(artifact.size),
    ));
    if blocked > 0 {
        return Err(CliError::failed_hosts(format!(
            "{blocked} of {} host(s) would fail staging",
            rows.len()
        )));
    }
    Ok(())
}

/// The plan's table and its waves, one line each.
fn plan_table(rows: &[PlanRow], policy: &Policy) -> String {
    let wave_name = |w: usize| rollout::wave_number(w - 1, w == 1 && policy.canary > 0);
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.host.clone(),
                r.current.as_ref().map_or("-".into(), Version::to_string),
                match (r.ready, r.send) {
                    (false, _) => "-".into(),
                    (true, 0) => "none".into(),
                    (true, n) => human_bytes(n),
                },
                match (r.ready, r.files_sent, r.files_reused) {
                    (true, sent, 0) if r.send > 0 => format!("{sent} sent"),
                    (true, sent, reused) if r.send > 0 => {
                        format!("{sent} sent, {reused} reused")
                    }
                    _ => "-".into(),
                },
                r.wave.map_or_else(|| "-".into(), wave_name),
                match &r.trusts {
                    None => "?".into(),
                    Some(keys) if keys.is_empty() => "not required".into(),
                    Some(keys) => format!("required ({})", keys.join(", ")),
                },
                if r.ready {
                    r.note.clone()
                } else {
                    format!("WOULD FAIL: {}", r.note)
                },
            ]
        })
        .collect();
    let mut out = table(
        &[
            "HOST",
            "CURRENT",
            "SEND",
            "FILES",
            "WAVE",
            "SIGNATURES",
            "NOTE",
        ],
        &table_rows,
    );
    let waves = rows.iter().filter_map(|r| r.wave).max().unwrap_or(0);
    for wave in 1..=waves {
        let members: Vec<&str> = rows
            .iter()
            .filter(|r| r.wave == Some(wave))
            .map(|r| r.host.as_str())
            .collect();
        out += &format!("wave {}: {}\n", wave_name(wave), members.join(", "));
    }
    out
}

pub fn rollback(
    settings: &FleetSettings,
    hosts: &str,
    to: Option<&Version>,
    printer: &Printer,
) -> Result<(), CliError> {
    let selected = settings.fleet.select(hosts).map_err(CliError::usage)?;
    let notifier = settings.notifier();
    let environment = settings.fleet.environment.as_ref().map(|e| e.as_str());
    let app = &settings.fleet.app;
    let operator = &settings.options.operator;
    let target = to.map_or("their previous release".to_owned(), |v| v.to_string());
    let names: Vec<&str> = selected.iter().map(|h| h.name.as_str()).collect();
    notifier.send(
        "started",
        &format!(
            "{operator} started rolling back {app} on {} host(s){} to {target}",
            selected.len(),
            environment.map_or(String::new(), |e| format!(" of {e}")),
        ),
        json!({"op": "rollback", "app": app, "environment": environment, "to": to,
               "user": operator, "hosts": names}),
    );
    let results = fleet::rollback(&selected, to, &settings.options, printer);
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
    finish(printer, &results, &verdict, failed == 0, notifier)
}

/// `ship promote FROM TO`: see the command's help.
pub fn promote(
    settings: &FleetSettings,
    from: &str,
    hosts: &str,
    rollout: &RolloutSettings,
    printer: &Printer,
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
        .map_err(|why| {
            let error = CliError::failed_hosts(format!("cannot promote {from} to {to}: {why}"));
            match why.hint() {
                Some(hint) => error.hint(hint),
                None => error,
            }
        })?;
    let mut artifact = artifact(settings, version.as_str())?;
    if artifact.manifest.payload_digest != payload {
        return Err(CliError::failed_hosts(format!(
            "cannot promote {from} to {to}: {from} runs {version} with payload {payload}, but {} holds payload {}",
            artifact.path.display(),
            artifact.manifest.payload_digest
        )));
    }
    verify_locally(&artifact)?;
    printer.note(format!(
        "{from} runs {} {version} on all {} host(s), healthy{}: promoting it to {to}",
        artifact.manifest.name,
        everywhere.len(),
        if rollout.plan {
            " by their journals"
        } else {
            ""
        }
    ));
    check_trusted(settings, &artifact)?;
    artifact.signing.allow_downgrade = rollout.allow_downgrade.clone();
    ship(settings, &selected, &artifact, rollout, printer)
}

/// The final table, the hosts' hints, the webhooks' warnings (once their posts are
/// done) and the verdict; exit 1 unless `ok`.
fn finish(
    printer: &Printer,
    results: &[HostResult],
    verdict: &str,
    ok: bool,
    notifier: Notifier,
) -> Result<(), CliError> {
    let failed = results.iter().filter(|r| !r.ok).count();
    for result in results {
        printer.event("result", result);
    }
    printer.event(
        "summary",
        &json!({"hosts": results.len(), "failed": failed, "ok": ok, "verdict": verdict}),
    );
    printer.data(&results_table(results));
    for hint in hints(
        results
            .iter()
            .filter_map(|r| Some((&r.host, r.failure.as_ref()?))),
    ) {
        printer.note(hint);
    }
    for warning in notifier.finish() {
        printer.warn(warning);
    }
    if ok {
        printer.note(verdict);
        Ok(())
    } else {
        Err(CliError::failed_hosts(verdict.to_owned()))
    }
}

/// The table of a run's results.
fn results_table(results: &[HostResult]) -> String {
    let version = |v: &Option<Version>| v.as_ref().map_or("-".into(), Version::to_string);
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.host.clone(),
                version(&r.from),
                version(&r.to),
                r.result.word().to_owned(),
                if r.transferred > 0 {
                    human_bytes(r.transferred)
                } else {
                    "-".into()
                },
                match (r.files_sent, r.files_reused) {
                    (0, 0) => "-".into(),
                    (sent, 0) => format!("{sent} sent"),
                    (sent, reused) => format!("{sent} sent, {reused} reused"),
                },
                format!("{:.1}s", r.seconds),
                r.detail.clone(),
            ]
        })
        .collect();
    table(
        &[
            "HOST", "FROM", "TO", "RESULT", "SENT", "FILES", "DURATION", "REASON",
        ],
        &rows,
    )
}

/// `hint: web1, web2: …`: each hint of the hosts' errors once, with its hosts.
fn hints<'a>(errors: impl Iterator<Item = (&'a String, &'a HostError)>) -> Vec<String> {
    let mut by_hint: Vec<(&str, Vec<&str>)> = Vec::new();
    for (host, error) in errors {
        let Some(hint) = error.hint.as_deref() else {
            continue;
        };
        match by_hint.iter_mut().find(|(h, _)| *h == hint) {
            Some((_, hosts)) => hosts.push(host),
            None => by_hint.push((hint, vec![host])),
        }
    }
    by_hint
        .into_iter()
        .map(|(hint, hosts)| format!("hint: {}: {hint}", hosts.join(", ")))
        .collect()
}

/// `<what> on N of M host(s)`: a note when every host did it, exit 1 otherwise.
fn verdict(printer: &Printer, what: &str, hosts: usize, failed: usize) -> Result<(), CliError> {
    let verdict = format!("{what} on {} of {hosts} host(s)", hosts - failed);
    if failed == 0 {
        printer.note(verdict);
        Ok(())
    } else {
        Err(CliError::failed_hosts(format!(
            "{verdict}; {failed} failed"
        )))
    }
}

pub fn status(settings: &FleetSettings, hosts: &str, printer: &Printer) -> Result<(), CliError> {
    let selected = settings.fleet.select(hosts).map_err(CliError::usage)?;
    let statuses = fleet::status(&selected, &settings.options, &printer.without_progress());
    let (text, states) = status_table(&statuses);
    for ((host, status), state) in statuses.iter().zip(&states) {
        printer.event(
            "status",
            &json!({"host": host, "status": status.as_ref().ok(), "state": state,
                    "error": status.as_ref().err().map(ToString::to_string),
                    "failure": status.as_ref().err()}),
        );
    }
    printer.data(&text);
    for hint in hints(
        statuses
            .iter()
            .filter_map(|(h, s)| Some((h, s.as_ref().err()?))),
    ) {
        printer.note(hint);
    }
    let mut running: Vec<Version> = statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok()?.as_ref()?.current.clone())
        .collect();
    running.sort();
    running.dedup();
    let running: Vec<(Version, Option<Sha256>)> = running.into_iter().map(|v| (v, None)).collect();
    store_report(settings, &running, printer);
    let unreachable = statuses.iter().filter(|(_, s)| s.is_err()).count();
    if unreachable > 0 {
        return Err(CliError::failed_hosts(format!(
            "{unreachable} of {} host(s) unreachable",
            statuses.len()
        )));
    }
    Ok(())
}

/// `ship trust`: the keys each host trusts, after adding or revoking one.
pub fn trust(
    command: crate::cli::TrustCommand,
    env: &crate::settings::Env,
    interrupt: &fleet::Interrupt,
    printer: &Printer,
) -> Result<(), CliError> {
    use crate::cli::TrustCommand;
    use agent::protocol::{TrustAction, TrustChange};
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))
    };
    let (target, change) = match command {
        TrustCommand::List { target } => (target, None),
        TrustCommand::Add {
            key,
            statement,
            first_contact,
            target,
        } => {
            let statement = statement.as_deref().map(read).transpose()?;
            let change = TrustChange {
                action: TrustAction::Add,
                key: crate::signing::public_key(&key)?.text().to_owned(),
                statement,
                first_contact,
            };
            (target, Some(change))
        }
        TrustCommand::Revoke {
            key,
            statement,
            target,
        } => {
            let change = TrustChange {
                action: TrustAction::Revoke,
                key: crate::signing::public_key(&key)?.text().to_owned(),
                statement: Some(read(&statement)?),
                first_contact: false,
            };
            (target, Some(change))
        }
    };
    let settings =
        FleetSettings::resolve(target.fleet, target.env.name.as_deref(), env, interrupt)?;
    let selected = settings
        .fleet
        .select(&target.hosts)
        .map_err(CliError::usage)?;
    let results = fleet::trust(
        &selected,
        change.as_ref(),
        &settings.options,
        &printer.without_progress(),
    );
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(host, result)| match result {
            Ok(reply) => {
                printer.event(
                    "trust",
                    &json!({"host": host, "keys": reply.keys, "changed": reply.changed}),
                );
                let keys: Vec<String> = reply
                    .keys
                    .iter()
                    .map(|k| match k.mark {
                        Some(mark) => format!("{} (seq {mark})", k.id),
                        None => k.id.clone(),
                    })
                    .collect();
                let state = match (&change, reply.changed) {
                    (None, _) if reply.keys.is_empty() => "takes unsigned releases",
                    (None, _) => "requires signatures",
                    (Some(_), true) => "changed",
                    (Some(_), false) => "unchanged",
                };
                vec![
                    host.clone(),
                    if keys.is_empty() {
                        "-".into()
                    } else {
                        keys.join(", ")
                    },
                    state.into(),
                ]
            }
            Err(error) => {
                printer.event(
                    "trust",
                    &json!({"host": host, "error": error.to_string(), "failure": error}),
                );
                vec![host.clone(), "-".into(), format!("FAILED: {error}")]
            }
        })
        .collect();
    printer.data(&table(&["HOST", "TRUSTED KEYS", "RESULT"], &rows));
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    verdict(printer, "trust", results.len(), failed)
}

/// The status table, and each host's state.
fn status_table(statuses: &[(String, Result<Option<Status>, HostError>)]) -> (String, Vec<String>) {
    // The fleet's version: the most common current release among reachable hosts.
    let mut counts: BTreeMap<&Version, usize> = BTreeMap::new();
    for (_, status) in statuses {
        if let Ok(Some(Status {
            current: Some(current),
            ..
        })) = status
        {
            *counts.entry(current).or_default() += 1;
        }
    }
    let majority = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(v, n)| (*v, *n));
    let mut rows = Vec::new();
    let mut states = Vec::new();
    for (host, status) in statuses {
        let dash = || "-".to_owned();
        let (cells, state) = match status {
            Err(error) => (
                vec![dash(), dash(), dash(), dash()],
                format!("unreachable: {error}"),
            ),
            Ok(None) => (
                vec![dash(), dash(), "0".into(), dash()],
                "no release".to_owned(),
            ),
            Ok(Some(s)) => {
                let last = s
                    .last_switch
                    .as_ref()
                    .map_or_else(dash, |r| format!("{} by {}", r.time, r.user));
                let state = match (&s.current, majority) {
                    (None, _) => "no release".to_owned(),
                    (Some(c), Some((m, n))) if c != m => {
                        format!("DIFFERS: the fleet runs {m} ({n} of {})", statuses.len())
                    }
                    _ if s.lock.is_some() => "ok, busy (locked)".to_owned(),
                    _ => "ok".to_owned(),
                };
                let version =
                    |v: &Option<Version>| v.as_ref().map_or_else(dash, Version::to_string);
                (
                    vec![
                        version(&s.current),
                        version(&s.previous),
                        s.releases.len().to_string(),
                        last,
                    ],
                    state,
                )
            }
        };
        let mut row = vec![host.clone()];
        row.extend(cells);
        row.push(state.clone());
        rows.push(row);
        states.push(state);
    }
    let header = [
        "HOST",
        "CURRENT",
        "PREVIOUS",
        "RELEASES",
        "LAST SWITCH",
        "STATE",
    ];
    (table(&header, &rows), states)
}

/// The fleet's metric analysis, once the backends took every query of it over
/// `selected` (a query one rejects is a configuration error naming the metric).
fn check_queries(
    settings: &FleetSettings,
    selected: &[&Host],
    version: Option<&Version>,
) -> Result<Option<crate::analysis::Analysis>, CliError> {
    let Some(analysis) = crate::analysis::Analysis::resolve(&settings.fleet.analysis) else {
        return Ok(None);
    };
    let scope = analysis.scope(
        selected.iter().map(|h| h.name.to_string()).collect(),
        settings.fleet.environment.as_ref().map(ToString::to_string),
        version.map(ToString::to_string),
    );
    if let Some((metric, why)) = crate::analysis::rejected(&analysis, &scope) {
        return Err(CliError::usage(format!("metric {metric:?}: {why}"))
            .hint("fix the query in [analysis]; `ship analyze` runs it as a rollout would"));
    }
    Ok(Some(analysis))
}

pub fn check(
    settings: &FleetSettings,
    release: Option<&str>,
    hosts: &str,
    printer: &Printer,
) -> Result<(), CliError> {
    let artifact = release.map(|r| artifact(settings, r)).transpose()?;
    let selected = settings.fleet.select(hosts).map_err(CliError::usage)?;
    check_queries(
        settings,
        &selected,
        artifact.as_ref().map(|a| &a.manifest.version),
    )?;
    let (behaviour, what) = match &artifact {
        Some(a) => (
            &a.manifest.behaviour,
            format!("{} {}", a.manifest.name, a.manifest.version),
        ),
        None => (
            &settings.fleet.behaviour,
            format!("{} (requirements from ship.toml)", settings.fleet.app),
        ),
    };
    let results = fleet::check(
        &selected,
        behaviour,
        artifact.as_ref(),
        &settings.options,
        &printer.without_progress(),
    );
    let mut rows = Vec::new();
    for (host, result) in &results {
        printer.event(
            "check",
            &json!({"host": host, "ok": result.is_ok(), "result": result.as_ref().ok(),
                    "error": result.as_ref().err().map(ToString::to_string),
                    "failure": result.as_ref().err()}),
        );
        let (verdict, detail) = match result {
            Ok(found) => ("ok", preflight_detail(found)),
            Err(error) => ("FAILED", error.to_string()),
        };
        rows.push(vec![host.clone(), verdict.to_owned(), detail]);
    }
    printer.data(&table(&["HOST", "PREFLIGHT", "DETAIL"], &rows));
    for hint in hints(
        results
            .iter()
            .filter_map(|(h, r)| Some((h, r.as_ref().err()?))),
    ) {
        printer.note(hint);
    }
    if let Some(artifact) = &artifact {
        let digest =
            packager::verify::read_sidecar(&packager::sidecar_path(&artifact.path), &artifact.path)
                .ok();
        store_report(
            settings,
            &[(artifact.manifest.version.clone(), digest)],
            printer,
        );
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    verdict(
        printer,
        &format!("preflight for {what} passed"),
        results.len(),
        failed,
    )
}

/// Says whether the fleet's store (when it has one) holds each release of
/// `versions`, and whether it is the artifact whose sha256 is given beside it.
fn store_report(
    settings: &FleetSettings,
    versions: &[(Version, Option<Sha256>)],
    printer: &Printer,
) {
    if settings.fleet.store.url.is_none() {
        return;
    }
    let store = Store::open(&settings.fleet.store, None);
    for (version, local) in versions {
        store_line(settings, &store, version, local.as_ref(), printer);
    }
}

/// One release's line of [`store_report`].
fn store_line(
    settings: &FleetSettings,
    store: &Result<Store, String>,
    version: &Version,
    local: Option<&Sha256>,
    printer: &Printer,
) {
    let app = &settings.fleet.app;
    let found = store
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|store| Ok((store.published(app, version)?, store.url().to_owned())));
    let (sentence, held) = match &found {
        Err(e) => (
            format!("store: cannot tell whether it holds {app} {version}: {e}"),
            None,
        ),
        Ok((None, url)) => (
            format!("store: {url} does not hold {app} {version}"),
            Some(false),
        ),
        Ok((Some(there), url)) => match local {
            Some(local) if local != there => (
                format!(
                    "store: {url} holds another artifact for {app} {version} (sha256 {there}) than the local one ({local})"
                ),
                Some(false),
            ),
            _ => (
                format!("store: {url} holds {app} {version} (sha256 {there})"),
                Some(true),
            ),
        },
    };
    printer.event(
        "store",
        &json!({"version": version, "held": held, "sha256": found.as_ref().ok().and_then(|(d, _)| d.clone())}),
    );
    if held == Some(true) {
        printer.note(sentence);
    } else {
        printer.warn(sentence);
    }
}

/// `3.1 GiB free; environment file /srv/shop/shared/.env (absent)`.
fn preflight_detail(found: &Preflight) -> String {
    format!(
        "{} free; environment file {}{}",
        human_bytes(found.free_bytes),
        found.env_file.display(),
        if found.env_file_found {
            ""
        } else {
            " (absent)"
        }
    )
}

pub fn history(settings: &FleetSettings, hosts: &str, printer: &Printer) -> Result<(), CliError> {
    let selected = settings.fleet.select(hosts).map_err(CliError::usage)?;
    let histories = fleet::history(&selected, &settings.options, &printer.without_progress());
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    for (host, records) in &histories {
        match records {
            Err(error) => {
                printer.warn(format_args!("{host}: {error}"));
                printer.event(
                    "unreachable",
                    &json!({"host": host, "error": error.to_string(), "failure": error}),
                );
            }
            Ok(records) => {
                for record in records {
                    printer.event("record", &json!({"host": host, "record": record}));
                    rows.push((record.time.to_string(), history_row(host, record)));
                }
            }
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, row)| row).collect();
    printer.data(&table(
        &["TIME", "HOST", "USER", "OP", "FROM", "TO", "RESULT"],
        &rows,
    ));
    for hint in hints(
        histories
            .iter()
            .filter_map(|(h, r)| Some((h, r.as_ref().err()?))),
    ) {
        printer.note(hint);
    }
    let failed = histories.iter().filter(|(_, r)| r.is_err()).count();
    if failed > 0 {
        return Err(CliError::failed_hosts(format!(
            "{failed} host(s) unreachable"
        )));
    }
    Ok(())
}

fn history_row(host: &str, r: &Record) -> Vec<String> {
    let version = |v: &Option<Version>| v.as_ref().map_or("-".into(), Version::to_string);
    let result = match r.result {
        agent::protocol::Outcome::Failed => {
            format!("failed: {}", r.reason.as_deref().unwrap_or(""))
        }
        agent::protocol::Outcome::Ok => "ok".to_owned(),
        agent::protocol::Outcome::Unchanged => "unchanged".to_owned(),
    };
    // Who signed what was received, and which key a trust change was about.
    let result = match (&r.signed_by, &r.key) {
        (Some(signed), _) => {
            let downgrade = signed
                .downgrade
                .as_ref()
                .map_or(String::new(), |why| format!(", downgrade {why}"));
            format!(
                "{result} (signed by key {} seq {}{downgrade})",
                signed.key, signed.seq
            )
        }
        (None, Some(key)) => format!("{result} (key {key})"),
        (None, None) => result,
    };
    vec![
        r.time.to_string(),
        host.to_owned(),
        r.user.clone(),
        r.op.name().to_owned(),
        version(&r.from),
        version(&r.version),
        result,
    ]
}

#[cfg(test)]
mod tests {
    use agent::protocol::{FailureKind, LockInfo, ReleaseInfo};

    use super::*;
    use crate::error::CliError;
    use crate::inventory::Host;
    use crate::results::{ErrorKind, HostError, Outcome, Step};
    use crate::rollout::Verdict;

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    fn result(name: &str, seconds: f64) -> HostResult {
        let mut result = HostResult::new(&Host::local(name, "/srv/shop"));
        result.from = Some(v("v1"));
        result.seconds = seconds;
        result
    }

    /// What an operator reads after a deploy that went wrong: the table, the hints
    /// and the verdict.
    #[test]
    fn a_deploy_with_a_failed_a_reverted_and_a_skipped_host() {
        let mut ok = result("web1", 1.24);
        ok.to = Some(v("v2"));
        ok.transferred = 48 << 20;
        ok.set(Outcome::Done, "switched, pruned 1");
        let mut failed = result("web2", 0.31);
        failed.fail(HostError {
            step: Step::Connect,
            kind: ErrorKind::Unreachable,
            message: "cannot connect to 10.0.0.2:22".into(),
            causes: vec!["Connection refused (os error 111)".into()],
            hint: Some(
                "check the host's address and port in ship.toml, and that sshd runs there".into(),
            ),
        });
        // A canary that fell ill while watched, put back by the deploy.
        let mut reverted = result("web3", 7.5);
        reverted.to = Some(v("v1"));
        reverted.transferred = 48 << 20;
        reverted.fail(HostError::new(
            Step::Health,
            ErrorKind::Agent(FailureKind::UnhealthyNow),
            "v2 is unhealthy on web3 (web: GET /health → 503)",
        ));
        reverted.set(
            Outcome::Reverted,
            format!(
                "the canary watch failed: {}; reverted to v1 by the deploy, restarted and healthy",
                reverted.detail
            ),
        );
        let mut skipped = result("web4", 0.9);
        skipped.to = Some(v("v1"));
        skipped.transferred = 48 << 20;
        skipped.set(
            Outcome::Skipped,
            "staged but not activated: the rollout stopped after wave 2, with 2 failed and 1 allowed",
        );
        let results = [ok, failed, reverted, skipped];
        let verdict = Verdict::Reverted {
            subject: "shop v2".into(),
            version: v("v2"),
            wave: "wave 2".into(),
            failed: 2,
            budget: 1,
            back: 2,
            stuck: 0,
            never: 1,
        };
        let hints = hints(
            results
                .iter()
                .filter_map(|r| Some((&r.host, r.failure.as_ref()?))),
        );
        let read = format!(
            "{}{}\nerror: {verdict}\n",
            results_table(&results),
            hints.join("\n")
        );
        insta::assert_snapshot!(read);
        let json = serde_json::to_value(&results[2]).unwrap();
        assert_eq!(json["failure"]["kind"], "unhealthy_now");
        assert_eq!(json["failure"]["step"], "health");
        assert_eq!(
            serde_json::to_value(&results[1]).unwrap()["failure"]["kind"],
            "unreachable"
        );
    }

    #[test]
    fn the_verdicts_read_as_sentences() {
        let verdicts = [
            Verdict::Deployed {
                subject: "shop v2".into(),
                done: 9,
                hosts: 10,
                failed: 1,
                budget: 2,
            },
            Verdict::Interrupted {
                subject: "shop v2".into(),
                version: v("v2"),
                switched: 1,
                never: 9,
            },
            Verdict::DidNotStart {
                subject: "shop v2".into(),
                failed: 1,
                hosts: 3,
            },
            Verdict::Halted {
                subject: "shop v2".into(),
                version: v("v2"),
                wave: "wave 1 (canary)".into(),
                failed: 1,
                budget: 0,
                stay: 0,
                never: 9,
            },
            Verdict::Reverted {
                subject: "shop v2".into(),
                version: v("v2"),
                wave: "wave 3".into(),
                failed: 3,
                budget: 2,
                back: 0,
                stuck: 0,
                never: 0,
            },
        ];
        let lines: Vec<String> = verdicts.iter().map(ToString::to_string).collect();
        insta::assert_snapshot!(lines.join("\n"));
    }

    #[test]
    fn an_error_renders_with_its_causes_and_hint() {
        let host = HostError {
            step: Step::Transfer,
            kind: ErrorKind::Agent(FailureKind::Artifact),
            message: "the artifact was refused".into(),
            causes: vec![
                "entry app/main.py: sha256 mismatch".into(),
                "expected 1f2e…, got 9a8b…".into(),
            ],
            hint: None,
        };
        let cli = CliError::failure(
            "cannot open the artifact artifacts/shop-v9.tar.zst",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
        .hint("pack it first with `ship pack`, or name the artifact's path");
        insta::assert_snapshot!(format!("{host}\n\n{}", cli.render()));
    }

    #[test]
    fn the_status_table_names_the_odd_host() {
        let status = |current: &str, locked: bool| Status {
            root: "/srv/shop".into(),
            current: Some(v(current)),
            previous: Some(v("v1")),
            releases: ["v1", current]
                .iter()
                .map(|version| ReleaseInfo {
                    version: v(version),
                    payload_digest: "ab".repeat(32).parse().unwrap(),
                    artifact_sha256: None,
                    unpacked_size: 10,
                    entries: 1,
                    received: None,
                    bad: false,
                })
                .collect(),
            lock: locked.then_some(LockInfo { holder: None }),
            free_bytes: 1 << 30,
            last_switch: Some(Record {
                time: "2026-11-29T12:00:00Z".parse().unwrap(),
                user: "ops".into(),
                op: agent::protocol::Op::Activate,
                result: agent::protocol::Outcome::Ok,
                version: Some(v(current)),
                from: Some(v("v1")),
                payload_digest: None,
                artifact_sha256: None,
                removed: Vec::new(),
                reason: None,
                key: None,
                signed_by: None,
                analysis: None,
            }),
        };
        let statuses = vec![
            ("web1".to_owned(), Ok(Some(status("v2", false)))),
            ("web2".to_owned(), Ok(Some(status("v2", true)))),
            ("web3".to_owned(), Ok(Some(status("v3", false)))),
            ("web4".to_owned(), Ok(None)),
            (
                "web5".to_owned(),
                Err(HostError::new(
                    Step::Connect,
                    ErrorKind::HostKey,
                    "the host key of 10.0.0.5:22 CHANGED",
                )),
            ),
        ];
        insta::assert_snapshot!(status_table(&statuses).0);
    }
}
