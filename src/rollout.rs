//! A deploy's rollout. Every selected host is staged first, in parallel (connect,
//! hello, preflight, transfer and verify), so that what follows are fast switches.
//! The staged hosts are then activated in waves: the canary hosts alone (their
//! health watched for a while), then batches, each wave passing health before the
//! next starts. When more hosts fail than the budget allows, no new wave starts and,
//! under `revert`, every host this run switched goes back to the release it ran
//! before, in parallel, and is checked again. [`plan`] shows all that for a host
//! set without changing anything.
//!
//! Hosts that fail staging are never activated; they do not count against the
//! failure budget, which is about releases that do not come up (`--all-or-nothing`
//! is the switch for staging failures).

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use manifests::rollout::{OnFailure, Policy};
use serde_json::{Value, json};

use crate::fleet::{self, Artifact, HostResult, Need, Options, Outcome, STOP};
use crate::inventory::Host;
use crate::notify::Notifier;
use crate::remote::RemoteAgent;
use crate::report::Reporter;

/// How often the canary hosts' health is checked while they are watched.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// What a deploy does and where it reports.
pub struct Deploy<'a> {
    /// The artifact sent.
    pub artifact: &'a Artifact,
    /// Releases kept per host.
    pub keep: u32,
    /// Activate no host unless every host staged.
    pub all_or_nothing: bool,
    /// Canary, waves, budget and what a failure does.
    pub policy: &'a Policy,
    /// Parallelism and host keys.
    pub options: &'a Options,
    /// Progress on the terminal.
    pub reporter: &'a Reporter,
    /// Webhooks and the deploy log.
    pub notifier: &'a Notifier,
    /// The environment deployed to, if any (for the events).
    pub environment: Option<&'a str>,
}

/// How a rollout ended.
#[derive(Debug)]
pub struct Rollout {
    /// Every host's result, in the order of the selection.
    pub results: Vec<HostResult>,
    /// One line on the whole run.
    pub verdict: String,
    /// Whether every host runs the release.
    pub ok: bool,
}

/// Why no further wave started.
enum Stop {
    /// More hosts failed than the budget allows, in the wave named.
    Failures { wave: String, failed: usize },
    /// Ctrl-C.
    Interrupted,
    /// Some host failed staging, under `--all-or-nothing`.
    Staging(usize),
}

/// The name of wave `k` (from 0) when the policy has `canary` hosts.
fn wave_name(k: usize, policy: &Policy) -> String {
    if k == 0 && policy.canary > 0 {
        "wave 1 (canary)".to_owned()
    } else {
        format!("wave {}", k + 1)
    }
}

fn names(hosts: &[&Host], indices: &[usize]) -> Vec<String> {
    indices.iter().map(|&i| hosts[i].name.to_string()).collect()
}

/// Deploys `run.artifact` to `hosts`; see the module docs.
pub fn deploy(hosts: &[&Host], run: &Deploy) -> Rollout {
    let manifest = &run.artifact.manifest;
    let version = &manifest.version;
    let subject = format!("{} {version}", manifest.name);
    let everyone: Vec<usize> = (0..hosts.len()).collect();
    run.notifier.send(
        "started",
        &format!(
            "{} started deploying {subject} to {} host(s){}; rollout: {}",
            crate::remote::operator(),
            hosts.len(),
            run.environment
                .map_or(String::new(), |e| format!(" of {e}")),
            run.policy
        ),
        json!({
            "op": "deploy", "app": manifest.name, "version": version, "environment": run.environment,
            "user": crate::remote::operator(), "hosts": names(hosts, &everyone),
            "policy": run.policy.to_string(),
        }),
    );
    let agents: Vec<Mutex<Option<RemoteAgent>>> = hosts.iter().map(|_| Mutex::new(None)).collect();
    let staged = fleet::parallel(hosts, run.options.parallel, |i, host| {
        let started = Instant::now();
        let mut result = HostResult::new(host);
        match fleet::stage(host, run.artifact, run.options, run.reporter, &mut result) {
            Ok(agent) => *agents[i].lock().expect("not poisoned") = Some(agent),
            Err(reason) => {
                result.set(Outcome::Failed, reason);
                result.report(run.reporter);
            }
        }
        result.seconds = started.elapsed().as_secs_f64();
        result
    });
    let results: Vec<Mutex<HostResult>> = staged
        .into_iter()
        .zip(hosts)
        .map(|(r, host)| Mutex::new(r.unwrap_or_else(|| fleet::interrupted(host))))
        .collect();
    let ready: Vec<usize> = (0..hosts.len())
        .filter(|&i| agents[i].lock().expect("not poisoned").is_some())
        .collect();
    let failed_staging = hosts.len() - ready.len();
    let waves = run.policy.waves(ready.len());
    let budget = run.policy.max_failures.budget_of(ready.len());
    let mut stop =
        (run.all_or_nothing && failed_staging > 0).then_some(Stop::Staging(failed_staging));
    if stop.is_none() && failed_staging > 0 {
        run.reporter.note(&format!(
            "{failed_staging} host(s) failed staging and will not be activated; activating the others"
        ));
    }
    let mut failed = 0;
    let mut activated = Vec::new();
    for (k, range) in waves.iter().enumerate() {
        if stop.is_some() {
            break;
        }
        if STOP.load(Ordering::SeqCst) {
            stop = Some(Stop::Interrupted);
            break;
        }
        let wave = &ready[range.clone()];
        let name = wave_name(k, run.policy);
        run.reporter.note(&format!(
            "{name}: activating {}",
            names(hosts, wave).join(", ")
        ));
        let ran = fleet::parallel(wave, run.options.parallel, |_, &i| {
            let mut agent = agents[i].lock().expect("not poisoned");
            let mut result = results[i].lock().expect("not poisoned");
            if let Some(agent) = agent.as_mut() {
                fleet::activate(
                    agent,
                    hosts[i],
                    version,
                    run.keep,
                    run.reporter,
                    &mut result,
                );
            }
        });
        // Hosts Ctrl-C kept from starting were not activated.
        let wave: Vec<usize> = wave
            .iter()
            .zip(&ran)
            .filter_map(|(&i, ran)| ran.is_some().then_some(i))
            .collect();
        activated.extend_from_slice(&wave);
        let failures = |results: &[Mutex<HostResult>]| -> Vec<usize> {
            wave.iter()
                .copied()
                .filter(|&i| results[i].lock().expect("not poisoned").result != Outcome::Done)
                .collect()
        };
        let is_canary = k == 0 && run.policy.canary > 0;
        if is_canary && !run.policy.canary_wait.is_zero() {
            let sickened = watch(hosts, &wave, failed, budget, &agents, &results, run);
            // Within the budget the rollout goes on, but a canary that fell ill does
            // not stay on the release.
            if failed + failures(&results).len() <= budget && !sickened.is_empty() {
                revert(hosts, &sickened, &agents, &results, run);
            }
        }
        for &i in &wave {
            results[i]
                .lock()
                .expect("not poisoned")
                .report(run.reporter);
        }
        let failed_here = failures(&results);
        let in_wave = failed_here.len();
        failed += in_wave;
        let failed_names = names(hosts, &failed_here);
        run.notifier.send(
            "wave",
            &format!(
                "{subject}: {name} of {} done: {} host(s) ok, {in_wave} failed{}",
                waves.len(),
                wave.len() - in_wave,
                if in_wave > 0 {
                    format!(" ({})", failed_names.join(", "))
                } else {
                    String::new()
                }
            ),
            json!({
                "op": "deploy", "app": manifest.name, "version": version, "environment": run.environment,
                "wave": k + 1, "waves": waves.len(), "canary": is_canary,
                "hosts": names(hosts, &wave), "failed": failed_names,
            }),
        );
        if failed > budget {
            stop = Some(Stop::Failures { wave: name, failed });
        }
    }
    let skipped = |why: &str| {
        for &i in ready.iter().filter(|i| !activated.contains(i)) {
            let mut result = results[i].lock().expect("not poisoned");
            // It still runs what it ran.
            result.to = result.from.clone();
            result.set(Outcome::Skipped, format!("staged but not activated: {why}"));
            result.report(run.reporter);
        }
    };
    let (verdict, ok) = match &stop {
        None => {
            let done = results
                .iter()
                .filter(|r| r.lock().expect("not poisoned").ok)
                .count();
            let mut verdict = format!("deployed {subject} on {done} of {} host(s)", hosts.len());
            if done < hosts.len() {
                verdict += &format!("; {} failed", hosts.len() - done);
            }
            if failed > 0 {
                verdict += &format!(" ({failed} within the failure budget of {budget})");
            }
            (verdict, done == hosts.len())
        }
        Some(Stop::Interrupted) => {
            skipped("interrupted");
            let switched = activated
                .iter()
                .filter(|&&i| {
                    switched_here(&results[i].lock().expect("not poisoned"), version.as_str())
                })
                .count();
            (
                format!(
                    "deploy of {subject} interrupted: {switched} host(s) switched to {version}, {} not activated",
                    ready.len() - activated.len()
                ),
                false,
            )
        }
        Some(Stop::Staging(n)) => {
            skipped(&format!("{n} host(s) failed staging (--all-or-nothing)"));
            (
                format!(
                    "deploy of {subject} did not start: {n} of {} host(s) failed staging (--all-or-nothing)",
                    hosts.len()
                ),
                false,
            )
        }
        Some(Stop::Failures { wave, failed }) => {
            let why = format!(
                "the rollout stopped after {wave}, with {failed} failed and {budget} allowed"
            );
            skipped(&why);
            let never = ready.len() - activated.len();
            let ending = match run.policy.on_failure {
                OnFailure::Halt => {
                    let stay = halt(&activated, &results, version.as_str());
                    format!(
                        "halted after {wave}: {failed} host(s) failed, {budget} allowed; {stay} host(s) switched to {version} stay there, {never} not activated"
                    )
                }
                OnFailure::Revert => {
                    let (back, stuck) = revert(hosts, &activated, &agents, &results, run);
                    let could_not = if stuck > 0 {
                        format!(", {stuck} could not be")
                    } else {
                        String::new()
                    };
                    if back + stuck == 0 {
                        format!(
                            "stopped after {wave}: {failed} host(s) failed, {budget} allowed; no host was left switched to {version}, {never} not activated"
                        )
                    } else {
                        run.notifier.send(
                            "reverted",
                            &format!(
                                "{subject}: {back} host(s) put back on their previous release{could_not}"
                            ),
                            json!({
                                "op": "deploy", "app": manifest.name, "version": version,
                                "environment": run.environment, "reverted": back, "stuck": stuck,
                            }),
                        );
                        format!(
                            "reverted after {wave}: {failed} host(s) failed, {budget} allowed; {back} host(s) put back on their previous release{could_not}, {never} not activated"
                        )
                    }
                }
            };
            (format!("deploy of {subject} {ending}"), false)
        }
    };
    let results: Vec<HostResult> = results
        .into_iter()
        .map(|r| r.into_inner().expect("not poisoned"))
        .collect();
    run.notifier.send(
        "finished",
        &verdict,
        json!({
            "op": "deploy", "app": manifest.name, "version": version, "environment": run.environment,
            "ok": ok, "results": results,
        }),
    );
    Rollout {
        results,
        verdict,
        ok,
    }
}

/// Whether the run switched the host of `result` to `version` and it runs it now.
fn switched_here(result: &HostResult, version: &str) -> bool {
    result.to.as_deref() == Some(version) && result.from.as_deref() != Some(version)
}

/// Whether the host of `result` may run `version` because of this run: it was
/// switched, or its activation broke off where nobody could say (`to` unknown).
fn maybe_switched_here(result: &HostResult, version: &str) -> bool {
    switched_here(result, version)
        || (result.to.is_none()
            && result.result == Outcome::Failed
            && result.from.as_deref() != Some(version))
}

/// After a halt: the hosts switched to `version` stay there, and say so.
fn halt(activated: &[usize], results: &[Mutex<HostResult>], version: &str) -> usize {
    let mut stay = 0;
    for &i in activated {
        let mut result = results[i].lock().expect("not poisoned");
        if switched_here(&result, version) {
            stay += 1;
            result.detail += "; stays on it: the rollout halted";
        }
    }
    stay
}

/// Puts every host of `candidates` the run switched (or may have) back on the
/// release it ran before, in parallel, restarting and checking it: how many went
/// back, and how many could not. Ctrl-C does not stop it: it is recovery.
fn revert(
    hosts: &[&Host],
    candidates: &[usize],
    agents: &[Mutex<Option<RemoteAgent>>],
    results: &[Mutex<HostResult>],
    run: &Deploy,
) -> (usize, usize) {
    let version = run.artifact.manifest.version.as_str();
    let switched: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| maybe_switched_here(&results[i].lock().expect("not poisoned"), version))
        .collect();
    if switched.is_empty() {
        return (0, 0);
    }
    run.reporter.note(&format!(
        "reverting {}: back to the release each ran before",
        names(hosts, &switched).join(", ")
    ));
    let back = fleet::parallel_to_the_end(&switched, run.options.parallel, |_, &i| {
        let mut agent = agents[i].lock().expect("not poisoned");
        let mut result = results[i].lock().expect("not poisoned");
        // A host that failed keeps its reason first; the revert is added to it.
        let before = match result.result {
            Outcome::Failed => format!("{}; ", result.detail),
            _ => String::new(),
        };
        let Some(from) = result.from.clone() else {
            result.set(
                Outcome::Failed,
                format!(
                    "{before}nothing to revert to: it ran no release before this deploy, so it may stay on {version}"
                ),
            );
            result.report(run.reporter);
            return false;
        };
        // Where the activation broke off, the connection may be gone too.
        if result.to.is_none() {
            *agent = RemoteAgent::connect(hosts[i], run.options.accept_new_keys).ok();
        }
        let started = Instant::now();
        let mut back = HostResult::new(hosts[i]);
        match agent.as_mut() {
            Some(agent) => {
                let to = from.parse().ok();
                fleet::switch_back(agent, hosts[i], to.as_ref(), run.reporter, &mut back);
            }
            None => back.set(Outcome::Failed, "cannot connect again"),
        }
        result.seconds += started.elapsed().as_secs_f64();
        let went_back = back.result == Outcome::Done;
        if went_back {
            result.to = back.to;
            result.set(
                Outcome::Reverted,
                format!("{before}reverted to {from} by the deploy, restarted and healthy"),
            );
        } else {
            result.to = back.to.or(result.to.clone());
            result.set(
                Outcome::Failed,
                format!(
                    "{before}the deploy's revert to {from} failed: {}",
                    back.detail
                ),
            );
        }
        result.report(run.reporter);
        went_back
    });
    let went = back.iter().filter(|b| **b == Some(true)).count();
    (went, switched.len() - went)
}

/// Keeps checking the health of the canary hosts of `wave` that came up, for the
/// policy's wait, or until the failures (with the `failed_before` of earlier waves)
/// exceed `budget`. A host that fails a check is marked failed (it still runs the
/// new release); returns those hosts.
fn watch(
    hosts: &[&Host],
    wave: &[usize],
    failed_before: usize,
    budget: usize,
    agents: &[Mutex<Option<RemoteAgent>>],
    results: &[Mutex<HostResult>],
    run: &Deploy,
) -> Vec<usize> {
    let wait = run.policy.canary_wait;
    let up = |i: usize| results[i].lock().expect("not poisoned").result == Outcome::Done;
    let mut watched: Vec<usize> = wave.iter().copied().filter(|&i| up(i)).collect();
    let mut sickened = Vec::new();
    if watched.is_empty() {
        return sickened;
    }
    run.reporter.note(&format!(
        "watching the canary for {}: {}",
        humantime::format_duration(wait),
        names(hosts, &watched).join(", ")
    ));
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(WATCH_EVERY));
        fleet::parallel_to_the_end(&watched, run.options.parallel, |_, &i| {
            let mut agent = agents[i].lock().expect("not poisoned");
            let agent = agent.as_mut()?;
            run.reporter
                .phase(hosts[i].name.as_str(), "watch", "health");
            let reason = fleet::health(agent, hosts[i]).err()?;
            let mut result = results[i].lock().expect("not poisoned");
            result.set(
                Outcome::Failed,
                format!("the canary watch failed: {reason}"),
            );
            Some(())
        });
        let (sick, well): (Vec<usize>, Vec<usize>) = watched.iter().partition(|&&i| !up(i));
        sickened.extend(sick);
        watched = well;
        let failed = failed_before + wave.iter().filter(|&&i| !up(i)).count();
        if watched.is_empty()
            || failed > budget
            || Instant::now() >= deadline
            || STOP.load(Ordering::SeqCst)
        {
            return sickened;
        }
    }
}

/// One host in a plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanRow {
    /// The host.
    pub host: String,
    /// What it runs now.
    pub current: Option<String>,
    /// Bytes it would be sent (0: it has the release already).
    pub send: u64,
    /// The wave it would be activated in (from 1), when it would stage.
    pub wave: Option<usize>,
    /// Why it would not stage, or what else is worth knowing.
    pub note: String,
    /// Whether it would stage.
    pub ready: bool,
}

/// What a deploy of `artifact` to `hosts` under `policy` would do, from each host's
/// state; changes nothing on any host (not even installing the agent).
pub fn plan(
    hosts: &[&Host],
    artifact: &Artifact,
    policy: &Policy,
    options: &Options,
) -> Vec<PlanRow> {
    let rows = fleet::parallel(hosts, options.parallel, |_, host| {
        let mut row = PlanRow {
            host: host.name.to_string(),
            current: None,
            send: 0,
            wave: None,
            note: String::new(),
            ready: false,
        };
        let mut agent = match RemoteAgent::connect(host, options.accept_new_keys) {
            Ok(agent) => agent,
            Err(e) => {
                row.note = format!("connect: {}", crate::error::chain(&e));
                return row;
            }
        };
        let (hello, agent) = match agent.probe() {
            Err(e) => {
                row.note = format!("hello: {}", crate::error::chain(&e));
                return row;
            }
            Ok(Ok(hello)) => (hello, Some(&mut agent)),
            Ok(Err(why)) if matches!(host.reach, crate::inventory::Reach::Local) => {
                row.note = format!("no usable ship-agent: {why}");
                return row;
            }
            Ok(Err(_)) => {
                row.note =
                    "no usable ship-agent: the deploy would install it (requirements not checked)"
                        .into();
                (Value::Null, None)
            }
        };
        row.current = fleet::current_of(&hello);
        match fleet::preflight(host, artifact, &hello, agent) {
            Ok(need) => {
                row.ready = true;
                if need == Need::Transfer {
                    row.send = artifact.size;
                } else if row.current.as_deref() == Some(artifact.manifest.version.as_str()) {
                    row.note = "already runs it".into();
                } else {
                    row.note = "has it already: a switch only".into();
                }
            }
            Err(reason) => row.note = reason,
        }
        row
    });
    let mut rows: Vec<PlanRow> = rows
        .into_iter()
        .zip(hosts)
        .map(|(row, host)| {
            row.unwrap_or_else(|| PlanRow {
                host: host.name.to_string(),
                current: None,
                send: 0,
                wave: None,
                note: "interrupted".into(),
                ready: false,
            })
        })
        .collect();
    let ready: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].ready).collect();
    for (k, range) in policy.waves(ready.len()).into_iter().enumerate() {
        for &i in &ready[range] {
            rows[i].wave = Some(k + 1);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_is_wave_one() {
        let canary = Policy {
            canary: 1,
            ..Policy::default()
        };
        assert_eq!(wave_name(0, &canary), "wave 1 (canary)");
        assert_eq!(wave_name(1, &canary), "wave 2");
        assert_eq!(wave_name(0, &Policy::default()), "wave 1");
    }
}
