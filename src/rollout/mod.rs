//! A deploy's rollout. Every selected host is staged first, in parallel (connect,
//! hello, preflight, transfer and verify), so that what follows are fast switches.
//! The staged hosts are then activated in waves: the canary hosts alone (their
//! health watched for a while), then batches, each wave passing health before the
//! next starts. When more hosts fail than the budget allows, no new wave starts and,
//! under `revert`, every host this run switched goes back to the release it ran
//! before, in parallel, and is checked again. [`plan`] shows all that for a host
//! set without changing anything.
//!
//! The decisions are [`decide`]'s, a state machine over the hosts' outcomes; this
//! module is the driver that does the I/O (the agents, the printer, the events).
//!
//! Hosts that fail staging are never activated; they do not count against the
//! failure budget, which is about releases that do not come up (`--all-or-nothing`
//! is the switch for staging failures).

mod decide;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use manifests::Version;
use manifests::rollout::Policy;
use serde_json::json;

use decide::{Rollout, Wave};
pub use decide::{Verdict, wave_number};

use crate::analysis::{self, Analysis, Before, Judged, Scope};
use crate::delta::Transfer;
use crate::fleet::{self, Artifact, Need, Options};
use crate::inventory::Host;
use crate::notify::Notifier;
use crate::printer::{Console, Mode, Printer};
use crate::remote::RemoteAgent;
use crate::results::{ErrorKind, HostError, HostResult, Outcome, Step};

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
    /// Send the whole artifact even to hosts that keep releases.
    pub full: bool,
    /// Canary, waves, budget and what a failure does.
    pub policy: &'a Policy,
    /// Parallelism, host keys, Ctrl-C.
    pub options: &'a Options,
    /// Output.
    pub printer: &'a Printer,
    /// Webhooks and the deploy log.
    pub notifier: &'a Notifier,
    /// The environment deployed to, if any (for the events).
    pub environment: Option<&'a str>,
    /// The metric analysis each wave must pass, when ship.toml has one.
    pub analysis: Option<&'a Analysis>,
}

/// How a rollout ended.
#[derive(Debug)]
pub struct Finished {
    /// Every host's result, in the order of the selection.
    pub results: Vec<HostResult>,
    /// The whole run in one line.
    pub verdict: Verdict,
}

/// The hosts of the run, their agents and their results.
struct Fleet<'a> {
    hosts: &'a [&'a Host],
    agents: Vec<Mutex<Option<RemoteAgent>>>,
    results: Vec<HostResult>,
}

impl Fleet<'_> {
    fn names(&self, indices: &[usize]) -> Vec<String> {
        indices
            .iter()
            .map(|&i| self.hosts[i].name.to_string())
            .collect()
    }

    /// Runs `work` on the hosts `indices` in parallel (stopped by Ctrl-C unless
    /// `to_the_end`), each with its agent and a copy of its result, which replaces
    /// the result when `work` ran. Returns the hosts it ran on.
    fn each(
        &mut self,
        indices: &[usize],
        options: &Options,
        to_the_end: bool,
        work: impl Fn(&Host, &mut Option<RemoteAgent>, &mut HostResult) + Sync,
    ) -> Vec<usize> {
        let run = |_: usize, &i: &usize| {
            let _span = fleet::host_span(self.hosts[i]).entered();
            let mut agent = self.agents[i].lock().expect("not poisoned");
            let mut result = self.results[i].clone();
            work(self.hosts[i], &mut agent, &mut result);
            result
        };
        let ran = if to_the_end {
            fleet::parallel_to_the_end(indices, options, run)
        } else {
            fleet::parallel(indices, options, run)
        };
        let mut started = Vec::new();
        for (&i, result) in indices.iter().zip(ran) {
            if let Some(result) = result {
                self.results[i] = result;
                started.push(i);
            }
        }
        started
    }
}

/// Deploys `run.artifact` to `hosts`; see the module docs.
pub fn deploy(hosts: &[&Host], run: &Deploy) -> Finished {
    let version = &run.artifact.manifest.version;
    let mut fleet = Fleet {
        hosts,
        agents: hosts.iter().map(|_| Mutex::new(None)).collect(),
        results: hosts.iter().map(|h| HostResult::new(h)).collect(),
    };
    run.started(&fleet);
    let started = std::time::SystemTime::now();
    let staged = stage(&mut fleet, run);
    // What relative judgements compare with: the deploy's start (for providers
    // with a past), and what the others say now, before anything switches; and
    // the release most hosts ran, for `{{version}}` in queries about then.
    let before = run.analysis.map(|analysis| {
        let everyone: Vec<usize> = (0..hosts.len()).collect();
        let mut ran: Vec<&Version> = fleet
            .results
            .iter()
            .filter_map(|r| r.from.as_ref())
            .collect();
        ran.sort();
        let most = ran
            .chunk_by(|a, b| a == b)
            .max_by_key(|run| run.len())
            .map(|run| run[0].to_string());
        Before::measure(
            analysis,
            &run.scope(fleet.names(&everyone), analysis),
            started,
            most,
        )
    });
    let mut rollout = Rollout::new(run.policy, &staged, run.all_or_nothing);
    if rollout.left_out() > 0 {
        run.printer.progress(format!(
            "{} host(s) failed staging and will not be activated; activating the others",
            rollout.left_out()
        ));
    }
    while let Some(wave) = rollout.next_wave(run.options.interrupt.is_set()) {
        run.printer.progress(format!(
            "{}: activating {}",
            wave.name,
            fleet.names(&wave.hosts).join(", ")
        ));
        let started = fleet.each(&wave.hosts, run.options, false, |host, agent, result| {
            if let Some(agent) = agent.as_mut() {
                fleet::activate(agent, host, version, run.keep, run.printer, result);
            }
        });
        rollout.started(&started);
        let analysis = run.analysis.zip(before.as_ref());
        if wave.watch {
            // The canary's analysis runs beside its health watch.
            let judging = analysis.and_then(|(a, b)| Judging::start(&fleet, &wave, a, b, run));
            let (sickened, judged) = std::thread::scope(|scope| {
                let measuring = judging
                    .as_ref()
                    .zip(analysis)
                    .map(|(judging, (a, b))| scope.spawn(move || judging.evaluate(a, b, run)));
                let sickened = watch(&mut fleet, &rollout, &wave, run);
                // An analysis that broke off judged nothing: a human decides.
                let judged = measuring.map(|m| {
                    m.join().unwrap_or_else(|_| {
                        judging
                            .as_ref()
                            .map_or_else(Vec::new, |j| j.broken(analysis))
                    })
                });
                (sickened, judged)
            });
            let back = rollout.revert_after_watch(&wave, &sickened, &fleet.results);
            revert(&mut fleet, &back, run);
            if let (Some(judging), Some(judged)) = (judging, judged) {
                judging.apply(&mut fleet, &mut rollout, &wave, judged, run);
            }
        } else if let Some((analysis, before)) = analysis {
            judge(&mut fleet, &mut rollout, &wave, analysis, before, run);
        }
        for &i in &started {
            fleet::report(run.printer, &fleet.results[i]);
        }
        let failed = rollout.wave_done(&wave, &fleet.results);
        run.wave_done(&fleet, &wave, rollout.waves(), &started, &failed);
    }
    let ending = rollout.ending(&fleet.results, version);
    for &i in &ending.skipped {
        let result = &mut fleet.results[i];
        // It still runs what it ran.
        result.to = result.from.clone();
        result.set(
            Outcome::Skipped,
            format!("staged but not activated: {}", ending.skip_reason),
        );
        fleet::report(run.printer, result);
    }
    for &i in &ending.halted {
        fleet.results[i].detail += "; stays on it: the rollout halted";
    }
    let reverted = revert(&mut fleet, &ending.revert, run);
    if reverted != (0, 0) {
        run.reverted(reverted);
    }
    let verdict = rollout.verdict(&fleet.results, &run.subject(), version, reverted);
    run.finished(&verdict, &fleet.results);
    Finished {
        results: fleet.results,
        verdict,
    }
}

/// Stages every host in parallel; which hosts are ready to activate.
fn stage(fleet: &mut Fleet, run: &Deploy) -> Vec<bool> {
    let everyone: Vec<usize> = (0..fleet.hosts.len()).collect();
    let staged = fleet.each(&everyone, run.options, false, |host, agent, result| {
        let started = Instant::now();
        match fleet::stage(
            host,
            run.artifact,
            run.full,
            run.options,
            run.printer,
            result,
        ) {
            Ok(staged) => *agent = Some(staged),
            Err(error) => {
                result.fail(error);
                fleet::report(run.printer, result);
            }
        }
        result.seconds = started.elapsed().as_secs_f64();
    });
    for &i in everyone.iter().filter(|i| !staged.contains(i)) {
        fleet.results[i] = HostResult::interrupted(fleet.hosts[i]);
    }
    fleet
        .agents
        .iter()
        .map(|a| a.lock().expect("not poisoned").is_some())
        .collect()
}

/// The deploy's events, for the webhooks and the deploy log.
impl Deploy<'_> {
    /// What an analysis of `hosts` may name in its queries.
    fn scope(&self, hosts: Vec<String>, analysis: &Analysis) -> Scope {
        analysis.scope(
            hosts,
            self.environment.map(str::to_owned),
            Some(self.artifact.manifest.version.to_string()),
        )
    }

    fn analyzed(&self, wave: &Wave, judged: &[Judged]) {
        let verdicts: Vec<String> = judged
            .iter()
            .map(|j| format!("{} {}", j.metric, j.verdict))
            .collect();
        self.send(
            "analysis",
            &format!("{}: {}: {}", self.subject(), wave.name, verdicts.join(", ")),
            json!({"wave": wave.index + 1, "canary": wave.canary, "metrics": judged}),
        );
    }

    /// `shop v2`.
    fn subject(&self) -> String {
        let manifest = &self.artifact.manifest;
        format!("{} {}", manifest.name, manifest.version)
    }

    /// Sends event `kind` with the fields every event of a deploy has (`op`,
    /// `app`, `version`, `environment`) and `more`.
    fn send(&self, kind: &str, text: &str, more: serde_json::Value) {
        let manifest = &self.artifact.manifest;
        let mut fields = json!({
            "op": "deploy", "app": manifest.name, "version": manifest.version,
            "environment": self.environment,
        });
        if let (Some(all), serde_json::Value::Object(more)) = (fields.as_object_mut(), more) {
            all.extend(more);
        }
        self.notifier.send(kind, text, fields);
    }

    fn started(&self, fleet: &Fleet) {
        let everyone: Vec<usize> = (0..fleet.hosts.len()).collect();
        self.send(
            "started",
            &format!(
                "{} started deploying {} to {} host(s){}; rollout: {}",
                self.options.operator,
                self.subject(),
                fleet.hosts.len(),
                self.environment
                    .map_or(String::new(), |e| format!(" of {e}")),
                self.policy
            ),
            json!({
                "user": self.options.operator, "hosts": fleet.names(&everyone),
                "policy": self.policy.to_string(),
            }),
        );
    }

    fn wave_done(
        &self,
        fleet: &Fleet,
        wave: &Wave,
        waves: usize,
        started: &[usize],
        failed: &[usize],
    ) {
        let failed_names = fleet.names(failed);
        self.send(
            "wave",
            &format!(
                "{}: {} of {waves} done: {} host(s) ok, {} failed{}",
                self.subject(),
                wave.name,
                started.len() - failed.len(),
                failed.len(),
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", failed_names.join(", "))
                }
            ),
            json!({
                "wave": wave.index + 1, "waves": waves, "canary": wave.canary,
                "hosts": fleet.names(started), "failed": failed_names,
            }),
        );
    }

    fn reverted(&self, (back, stuck): (usize, usize)) {
        self.send(
            "reverted",
            &format!(
                "{}: {back} host(s) put back on their previous release{}",
                self.subject(),
                if stuck > 0 {
                    format!(", {stuck} could not be")
                } else {
                    String::new()
                }
            ),
            json!({"reverted": back, "stuck": stuck}),
        );
    }

    fn finished(&self, verdict: &Verdict, results: &[HostResult]) {
        self.send(
            "finished",
            &verdict.to_string(),
            json!({"ok": verdict.ok(), "results": results}),
        );
    }
}

/// Puts every host of `candidates` the run switched (or may have) back on the
/// release it ran before, in parallel, restarting and checking it: how many went
/// back, and how many could not. Ctrl-C does not stop it: it is recovery.
fn revert(fleet: &mut Fleet, candidates: &[usize], run: &Deploy) -> (usize, usize) {
    let version = &run.artifact.manifest.version;
    let switched = Rollout::to_revert(candidates, &fleet.results, version);
    if switched.is_empty() {
        return (0, 0);
    }
    run.printer.progress(format!(
        "reverting {}: back to the release each ran before",
        fleet.names(&switched).join(", ")
    ));
    fleet.each(&switched, run.options, true, |host, agent, result| {
        revert_one(host, agent, result, version, run);
    });
    let back = switched
        .iter()
        .filter(|&&i| fleet.results[i].result == Outcome::Reverted)
        .count();
    (back, switched.len() - back)
}

/// Puts one host back on the release it ran before.
fn revert_one(
    host: &Host,
    agent: &mut Option<RemoteAgent>,
    result: &mut HostResult,
    version: &Version,
    run: &Deploy,
) {
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
        fleet::report(run.printer, result);
        return;
    };
    // Where the activation broke off, the connection may be gone too.
    if result.to.is_none() {
        *agent = run.options.connect(host).ok();
    }
    let started = Instant::now();
    let mut back = HostResult::new(host);
    match agent.as_mut() {
        Some(agent) => fleet::switch_back(agent, host, Some(&from), run.printer, &mut back),
        None => back.set(Outcome::Failed, "cannot connect again"),
    }
    result.seconds += started.elapsed().as_secs_f64();
    if back.result == Outcome::Done {
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
        if let Some(error) = back.failure {
            result.failure.get_or_insert(error);
        }
    }
    fleet::report(run.printer, result);
}

/// Runs the metric analysis over the hosts of `wave` that came up, against the
/// hosts still on what they ran. A metric that fails marks those hosts failed (they
/// count against the budget; within it they are put back at once, as a canary that
/// fell ill is); an inconclusive one halts the rollout for a human.
fn judge(
    fleet: &mut Fleet,
    rollout: &mut Rollout,
    wave: &Wave,
    analysis: &Analysis,
    before: &Before,
    run: &Deploy,
) {
    let Some(judging) = Judging::start(fleet, wave, analysis, before, run) else {
        return;
    };
    let judged = judging.evaluate(analysis, before, run);
    judging.apply(fleet, rollout, wave, judged, run);
}

/// The hosts of a wave an analysis judges, and those it compares them with.
struct Judging {
    up: Vec<usize>,
    canary: Scope,
    baseline: Scope,
}

impl Judging {
    /// The wave's hosts that came up, against the hosts still on what they ran;
    /// `None` when none came up.
    fn start(
        fleet: &Fleet,
        wave: &Wave,
        analysis: &Analysis,
        before: &Before,
        run: &Deploy,
    ) -> Option<Judging> {
        let version = &run.artifact.manifest.version;
        let up: Vec<usize> = wave
            .hosts
            .iter()
            .copied()
            .filter(|&i| fleet.results[i].result == Outcome::Done)
            .collect();
        if up.is_empty() {
            return None;
        }
        // Hosts that run what they ran: not switched (nor maybe switched) by this
        // run, and not already on the release.
        let others: Vec<usize> = (0..fleet.hosts.len())
            .filter(|&i| {
                let r = &fleet.results[i];
                !r.switched_to(version)
                    && r.from.as_ref().is_some_and(|from| from != version)
                    && (r.to.is_none() || r.to == r.from)
                    && r.failure.is_none()
            })
            .collect();
        let canary = run.scope(fleet.names(&up), analysis);
        let baseline = Scope {
            // They run the release before, which their queries may name.
            version: before.version.clone(),
            ..run.scope(fleet.names(&others), analysis)
        };
        run.printer.progress(format!(
            "{}: analyzing {} metric(s) over {}{}",
            wave.name,
            analysis.metrics.len(),
            canary.hosts.join(", "),
            if baseline.hosts.is_empty() {
                String::new()
            } else {
                format!(" against {}", baseline.hosts.join(", "))
            }
        ));
        Some(Judging {
            up,
            canary,
            baseline,
        })
    }

    /// The verdicts of an analysis that broke off: inconclusive, every metric.
    fn broken(&self, analysis: Option<(&Analysis, &Before)>) -> Vec<Judged> {
        analysis
            .map(|(a, _)| a.metrics.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|m| Judged {
                metric: m.name.clone(),
                hosts: self.canary.hosts.clone(),
                values: Vec::new(),
                bound: String::new(),
                verdict: analysis::Verdict::Inconclusive,
                why: "the analysis broke off".into(),
            })
            .collect()
    }

    /// Measures and judges (printing each measurement as it comes).
    fn evaluate(&self, analysis: &Analysis, before: &Before, run: &Deploy) -> Vec<Judged> {
        analysis::evaluate(
            analysis,
            &self.canary,
            &self.baseline,
            before,
            &|| run.options.interrupt.is_set(),
            &mut |measurement| {
                run.printer.event("measurement", measurement);
                run.printer.progress(analysis::line(measurement));
            },
        )
    }

    /// Reports and journals `judged`, and acts on it: the hosts judged (those still
    /// up) fail when a metric failed; an inconclusive analysis halts the rollout.
    fn apply(
        self,
        fleet: &mut Fleet,
        rollout: &mut Rollout,
        wave: &Wave,
        judged: Vec<Judged>,
        run: &Deploy,
    ) {
        let version = &run.artifact.manifest.version;
        let up: Vec<usize> = self
            .up
            .into_iter()
            .filter(|&i| fleet.results[i].result == Outcome::Done)
            .collect();
        apply_judgement(fleet, rollout, wave, &up, &judged, version, run);
    }
}

/// Reports and journals `judged` of the hosts `up`, and acts on it.
fn apply_judgement(
    fleet: &mut Fleet,
    rollout: &mut Rollout,
    wave: &Wave,
    up: &[usize],
    judged: &[Judged],
    version: &Version,
    run: &Deploy,
) {
    for j in judged {
        run.printer.event("analysis", j);
    }
    run.analyzed(wave, judged);
    // Every host judged keeps the judgement in its journal.
    let judgement = agent::protocol::Judgement {
        version: version.clone(),
        wave: wave.name.clone(),
        verdict: overall(judged).to_string(),
        metrics: judged
            .iter()
            .map(|j| agent::protocol::MetricJudgement {
                metric: j.metric.clone(),
                hosts: j.hosts.clone(),
                values: j.values.clone(),
                bound: j.bound.clone(),
                verdict: j.verdict.to_string().to_lowercase(),
                why: j.why.clone(),
            })
            .collect(),
    };
    fleet.each(up, run.options, true, |host, agent, _| {
        if let Some(agent) = agent.as_mut()
            && let Err(e) = agent.judged(&judgement)
        {
            run.printer.output(
                host.name.as_str(),
                "warning",
                &format!("the analysis was not journaled: {e}"),
            );
        }
    });
    let failed: Vec<&Judged> = judged
        .iter()
        .filter(|j| j.verdict == analysis::Verdict::Fail)
        .collect();
    if !failed.is_empty() {
        let why: Vec<String> = failed
            .iter()
            .map(|j| format!("{}: {}", j.metric, j.why))
            .collect();
        for &i in up {
            fleet.results[i].fail(HostError::new(
                Step::Analysis,
                ErrorKind::Analysis,
                format!(
                    "the analysis after {} failed: {}",
                    wave.name,
                    why.join("; ")
                ),
            ));
        }
        let back = rollout.revert_after_watch(wave, up, &fleet.results);
        revert(fleet, &back, run);
    }
    // Inconclusive, even beside a failure the budget absorbed: a human decides.
    let unsure: Vec<String> = judged
        .iter()
        .filter(|j| j.verdict == analysis::Verdict::Inconclusive)
        .map(|j| format!("{}: {}", j.metric, j.why))
        .collect();
    if !unsure.is_empty() {
        rollout.inconclusive(wave, &unsure.join("; "));
    }
}

/// The verdict of an analysis: its worst metric's.
fn overall(judged: &[Judged]) -> &'static str {
    if judged.iter().any(|j| j.verdict == analysis::Verdict::Fail) {
        "fail"
    } else if judged
        .iter()
        .any(|j| j.verdict == analysis::Verdict::Inconclusive)
    {
        "inconclusive"
    } else {
        "pass"
    }
}

/// Keeps checking the health of the canary hosts of `wave` that came up, for the
/// policy's wait, or until the budget is spent. A host that fails a check is
/// marked failed (it still runs the new release); returns those hosts.
fn watch(fleet: &mut Fleet, rollout: &Rollout, wave: &Wave, run: &Deploy) -> Vec<usize> {
    let wait = run.policy.canary_wait;
    let up = |fleet: &Fleet, i: usize| fleet.results[i].result == Outcome::Done;
    let mut watched: Vec<usize> = wave
        .hosts
        .iter()
        .copied()
        .filter(|&i| up(fleet, i))
        .collect();
    let mut sickened = Vec::new();
    if watched.is_empty() {
        return sickened;
    }
    run.printer.progress(format!(
        "watching the canary for {}: {}",
        humantime::format_duration(wait),
        fleet.names(&watched).join(", ")
    ));
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(WATCH_EVERY));
        fleet.each(&watched, run.options, true, |host, agent, result| {
            let Some(agent) = agent.as_mut() else { return };
            let name = host.name.as_str();
            let checked = fleet::step(run.printer, name, "watch", "health", || {
                fleet::health(agent, host)
            });
            if let Err(error) = checked {
                let detail = format!("the canary watch failed: {error}");
                result.fail(error);
                result.detail = detail;
            }
        });
        let (sick, well): (Vec<usize>, Vec<usize>) = watched.iter().partition(|&&i| !up(fleet, i));
        sickened.extend(sick);
        watched = well;
        if watched.is_empty()
            || !rollout.watch_goes_on(wave, &fleet.results)
            || Instant::now() >= deadline
            || run.options.interrupt.is_set()
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
    pub current: Option<Version>,
    /// Bytes it would be sent (0: it has the release already).
    pub send: u64,
    /// Files whose content it would be sent.
    pub files_sent: u64,
    /// Files it would copy from its own releases (a delta).
    pub files_reused: u64,
    /// The wave it would be activated in (from 1), when it would stage.
    pub wave: Option<usize>,
    /// The keys it trusts: when there are any, it takes only releases one of them
    /// signed (`None`: unknown, no agent to ask).
    pub trusts: Option<Vec<String>>,
    /// Why it would not stage, or what else is worth knowing.
    pub note: String,
    /// Whether it would stage.
    pub ready: bool,
    /// Why it would not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<HostError>,
}

impl PlanRow {
    fn new(host: &Host) -> PlanRow {
        PlanRow {
            host: host.name.to_string(),
            current: None,
            send: 0,
            files_sent: 0,
            files_reused: 0,
            wave: None,
            trusts: None,
            note: String::new(),
            ready: false,
            failure: None,
        }
    }

    /// The host would not stage, because of `error`.
    fn blocked(mut self, error: HostError) -> PlanRow {
        self.note = error.to_string();
        self.failure = Some(error);
        self
    }
}

/// Why a host that trusts `keys` would refuse `artifact`, as far as can be told
/// without sending it (its signer; the host checks the rest).
fn untrusted(artifact: &Artifact, keys: &[String]) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let trusted = keys.join(", ");
    match artifact.signed_by() {
        None => Some(format!(
            "{} {} is not signed, and this host runs only releases signed by a key it trusts ({trusted})",
            artifact.manifest.name, artifact.manifest.version
        )),
        Some(key) if !keys.contains(&key.to_string()) => Some(format!(
            "{} {} is signed by key {key}, which this host does not trust ({trusted})",
            artifact.manifest.name, artifact.manifest.version
        )),
        Some(_) => None,
    }
}

/// What a deploy of `artifact` to `hosts` under `policy` would do, from each host's
/// state; changes nothing on any host (not even installing the agent).
pub fn plan(
    hosts: &[&Host],
    artifact: &Artifact,
    policy: &Policy,
    full: bool,
    options: &Options,
) -> Vec<PlanRow> {
    let rows = fleet::parallel(hosts, options, |_, host| {
        let _span = fleet::host_span(host).entered();
        let mut row = PlanRow::new(host);
        let mut agent = match options.connect(host) {
            Ok(agent) => agent,
            Err(error) => return row.blocked(error),
        };
        let (hello, agent) = match agent.probe() {
            Err(e) => {
                let name = host.name.as_str();
                return row.blocked(HostError::from_call(Step::Hello, &e, name, None));
            }
            Ok(Ok(hello)) => (Some(hello), Some(&mut agent)),
            Ok(Err(why)) if fleet::is_local(host) => {
                return row.blocked(HostError::new(
                    Step::Hello,
                    ErrorKind::NoAgent,
                    format!("no usable ship-agent: {why}"),
                ));
            }
            Ok(Err(_)) => {
                row.note =
                    "no usable ship-agent: the deploy would install it (requirements not checked)"
                        .into();
                (None, None)
            }
        };
        let status = hello.as_ref().and_then(|h| h.status.as_ref());
        row.current = status.and_then(|s| s.current.clone());
        if let Some(hello) = &hello {
            row.trusts = Some(hello.trust.clone());
            if let Some(why) = untrusted(artifact, &hello.trust) {
                return row.blocked(HostError::new(
                    Step::Preflight,
                    ErrorKind::Agent(agent::protocol::FailureKind::Untrusted),
                    why,
                ));
            }
        }
        let mut agent = agent;
        match fleet::preflight(host, artifact, status, agent.as_deref_mut()) {
            Ok(need) => {
                row.ready = true;
                if need == Need::Transfer && artifact.pull.is_some() {
                    row.files_sent = artifact.files();
                    row.note = format!(
                        "fetches {} from the store",
                        agent::human_bytes(artifact.size)
                    );
                } else if need == Need::Transfer {
                    row.send = artifact.size;
                    row.files_sent = artifact.files();
                    // What a host that keeps releases lacks, asked now (`have` only
                    // reads).
                    if let Some(agent) = agent {
                        let printer = Printer::new(Console::buffers().0, Mode::Quiet);
                        match fleet::transfer_for(agent, host, artifact, status, full, &printer) {
                            Ok(Transfer::Full) => {}
                            Ok(Transfer::Delta(delta)) => {
                                row.send = delta.bytes.len() as u64;
                                row.files_sent = delta.size.files_sent;
                                row.files_reused = delta.size.files_reused;
                            }
                            Err(error) => return row.blocked(error),
                        }
                    }
                } else if row.current.as_ref() == Some(&artifact.manifest.version) {
                    row.note = "already runs it".into();
                } else {
                    row.note = "has it already: a switch only".into();
                }
            }
            Err(error) => return row.blocked(error),
        }
        row
    });
    let mut rows: Vec<PlanRow> = rows
        .into_iter()
        .zip(hosts)
        .map(|(row, host)| {
            row.unwrap_or_else(|| {
                PlanRow::new(host).blocked(HostError::new(
                    Step::Start,
                    ErrorKind::Interrupted,
                    "interrupted",
                ))
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
