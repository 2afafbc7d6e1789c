//! The decisions of a rollout, as a small state machine over the hosts' outcomes,
//! with no I/O: which wave starts next, whether the canary watch goes on, whether
//! the failure budget is spent, what a stop does to the hosts (skip, halt, revert),
//! and the verdict. The driver in `rollout` does the I/O and asks here at each turn;
//! the table-driven tests below play whole rollouts through it.

use std::fmt;

use manifests::Version;
use manifests::rollout::{OnFailure, Policy};

use crate::results::{HostResult, Outcome};

/// A wave to activate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    /// Its number, from 0.
    pub index: usize,
    /// `wave 1 (canary)`, `wave 2`.
    pub name: String,
    /// Its hosts (indices into the results).
    pub hosts: Vec<usize>,
    /// Whether it is the canary wave.
    pub canary: bool,
    /// Whether its hosts are watched for the policy's canary wait once up.
    pub watch: bool,
}

/// Why no further wave starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// More hosts failed than the budget allows, in the wave named.
    Failures { wave: String, failed: usize },
    /// Ctrl-C.
    Interrupted,
    /// Some host failed staging, under `--all-or-nothing`.
    Staging(usize),
    /// The metric analysis after the wave named could not tell (why): a human
    /// decides.
    Inconclusive { wave: String, why: String },
}

/// A rollout's state.
#[derive(Debug)]
pub struct Rollout {
    on_failure: OnFailure,
    canary: bool,
    watch: bool,
    /// The staged hosts, in order.
    ready: Vec<usize>,
    /// The waves, as ranges of `ready`.
    waves: Vec<std::ops::Range<usize>>,
    budget: usize,
    hosts: usize,
    /// Failures of the waves done.
    failed: usize,
    next: usize,
    activated: Vec<usize>,
    stop: Option<Stop>,
}

/// What the end of a rollout does to the hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// Staged hosts never activated, and why (they still run what they ran).
    pub skipped: Vec<usize>,
    /// Why they were not.
    pub skip_reason: String,
    /// Hosts switched to the release that stay on it: the rollout halted.
    pub halted: Vec<usize>,
    /// Hosts to put back on the release they ran before.
    pub revert: Vec<usize>,
}

/// How a rollout ended, in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every wave ran.
    Deployed {
        /// `shop v2`.
        subject: String,
        /// Hosts that run the release.
        done: usize,
        /// Hosts selected.
        hosts: usize,
        /// Activation failures (within the budget).
        failed: usize,
        /// The budget.
        budget: usize,
    },
    /// Ctrl-C between waves.
    Interrupted {
        /// `shop v2`.
        subject: String,
        /// The release.
        version: Version,
        /// Hosts switched to it.
        switched: usize,
        /// Staged hosts never activated.
        never: usize,
    },
    /// Some host failed staging, under `--all-or-nothing`.
    DidNotStart {
        /// `shop v2`.
        subject: String,
        /// Hosts that failed staging.
        failed: usize,
        /// Hosts selected.
        hosts: usize,
    },
    /// The budget was spent under `halt`.
    Halted {
        /// `shop v2`.
        subject: String,
        /// The release.
        version: Version,
        /// The wave it stopped after.
        wave: String,
        /// Failures.
        failed: usize,
        /// The budget.
        budget: usize,
        /// Hosts left on the release.
        stay: usize,
        /// Staged hosts never activated.
        never: usize,
    },
    /// The metric analysis could not tell: the rollout waits for a human.
    Inconclusive {
        /// `shop v2`.
        subject: String,
        /// The release.
        version: Version,
        /// The wave it stopped after.
        wave: String,
        /// The metrics that could not be judged, and why.
        why: String,
        /// Hosts left on the release.
        stay: usize,
        /// Staged hosts never activated.
        never: usize,
    },
    /// The budget was spent under `revert`.
    Reverted {
        /// `shop v2`.
        subject: String,
        /// The release.
        version: Version,
        /// The wave it stopped after.
        wave: String,
        /// Failures.
        failed: usize,
        /// The budget.
        budget: usize,
        /// Hosts put back.
        back: usize,
        /// Hosts that could not be.
        stuck: usize,
        /// Staged hosts never activated.
        never: usize,
    },
}

impl Verdict {
    /// Whether every host runs the release.
    pub fn ok(&self) -> bool {
        matches!(self, Verdict::Deployed { done, hosts, .. } if done == hosts)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Deployed {
                subject,
                done,
                hosts,
                failed,
                budget,
            } => {
                write!(f, "deployed {subject} on {done} of {hosts} host(s)")?;
                if done < hosts {
                    write!(f, "; {} failed", hosts - done)?;
                }
                if *failed > 0 {
                    write!(f, " ({failed} within the failure budget of {budget})")?;
                }
                Ok(())
            }
            Verdict::Interrupted {
                subject,
                version,
                switched,
                never,
            } => write!(
                f,
                "deploy of {subject} interrupted: {switched} host(s) switched to {version}, {never} not activated"
            ),
            Verdict::DidNotStart {
                subject,
                failed,
                hosts,
            } => write!(
                f,
                "deploy of {subject} did not start: {failed} of {hosts} host(s) failed staging (--all-or-nothing)"
            ),
            Verdict::Halted {
                subject,
                version,
                wave,
                failed,
                budget,
                stay,
                never,
            } => write!(
                f,
                "deploy of {subject} halted after {wave}: {failed} host(s) failed, {budget} allowed; {stay} host(s) switched to {version} stay there, {never} not activated"
            ),
            Verdict::Inconclusive {
                subject,
                version,
                wave,
                why,
                stay,
                never,
            } => write!(
                f,
                "deploy of {subject} halted after {wave}: its metric analysis was inconclusive ({why}); {stay} host(s) switched to {version} stay there for a human to judge (ship analyze, then deploy again or roll back), {never} not activated"
            ),
            Verdict::Reverted {
                subject,
                version,
                wave,
                failed,
                budget,
                back,
                stuck,
                never,
            } => {
                if back + stuck == 0 {
                    return write!(
                        f,
                        "deploy of {subject} stopped after {wave}: {failed} host(s) failed, {budget} allowed; no host was left switched to {version}, {never} not activated"
                    );
                }
                write!(
                    f,
                    "deploy of {subject} reverted after {wave}: {failed} host(s) failed, {budget} allowed; {back} host(s) put back on their previous release"
                )?;
                if *stuck > 0 {
                    write!(f, ", {stuck} could not be")?;
                }
                write!(f, ", {never} not activated")
            }
        }
    }
}

/// `1 (canary)`, `2`: how wave `index` (from 0) is named.
pub fn wave_number(index: usize, canary: bool) -> String {
    if canary {
        format!("{} (canary)", index + 1)
    } else {
        (index + 1).to_string()
    }
}

/// Whether the run may have switched the host of `result` to `version`: it did,
/// or its activation broke off where nobody could say (`to` unknown).
fn maybe_switched(result: &HostResult, version: &Version) -> bool {
    result.switched_to(version)
        || (result.to.is_none()
            && result.result == Outcome::Failed
            && result.from.as_ref() != Some(version))
}

impl Rollout {
    /// A rollout under `policy` of as many hosts as `staged` has, the staged ones
    /// being those set.
    pub fn new(policy: &Policy, staged: &[bool], all_or_nothing: bool) -> Rollout {
        let ready: Vec<usize> = (0..staged.len()).filter(|&i| staged[i]).collect();
        let failed_staging = staged.len() - ready.len();
        Rollout {
            on_failure: policy.on_failure,
            canary: policy.canary > 0,
            watch: policy.canary > 0 && !policy.canary_wait.is_zero(),
            waves: policy.waves(ready.len()),
            budget: policy.max_failures.budget_of(ready.len()),
            hosts: staged.len(),
            ready,
            failed: 0,
            next: 0,
            activated: Vec::new(),
            stop: (all_or_nothing && failed_staging > 0).then_some(Stop::Staging(failed_staging)),
        }
    }

    /// Hosts that failed staging and will not be activated while the others are
    /// (0 when the rollout does not start because of them).
    pub fn left_out(&self) -> usize {
        match self.stop {
            Some(Stop::Staging(_)) => 0,
            _ => self.hosts - self.ready.len(),
        }
    }

    /// The number of waves.
    pub fn waves(&self) -> usize {
        self.waves.len()
    }

    /// The next wave to activate, or `None` when the rollout is over (every wave
    /// ran, the budget is spent, or `interrupted`).
    pub fn next_wave(&mut self, interrupted: bool) -> Option<Wave> {
        if self.stop.is_some() {
            return None;
        }
        // Ctrl-C, even during the last wave, when it kept a staged host from starting.
        if interrupted && self.activated.len() < self.ready.len() {
            self.stop = Some(Stop::Interrupted);
            return None;
        }
        if self.next >= self.waves.len() {
            return None;
        }
        let index = self.next;
        self.next += 1;
        let canary = index == 0 && self.canary;
        Some(Wave {
            index,
            name: format!("wave {}", wave_number(index, canary)),
            hosts: self.ready[self.waves[index].clone()].to_vec(),
            canary,
            watch: canary && self.watch,
        })
    }

    /// The hosts of the current wave that were activated (Ctrl-C may have kept
    /// some from starting).
    pub fn started(&mut self, hosts: &[usize]) {
        self.activated.extend_from_slice(hosts);
    }

    /// Failures so far, with those of `wave` (its hosts that did not come up).
    fn failures_with(&self, wave: &Wave, results: &[HostResult]) -> usize {
        self.failed + self.failed_in(wave, results).len()
    }

    fn failed_in(&self, wave: &Wave, results: &[HostResult]) -> Vec<usize> {
        wave.hosts
            .iter()
            .copied()
            .filter(|&i| self.activated.contains(&i) && results[i].result != Outcome::Done)
            .collect()
    }

    /// Whether the canary watch of `wave` goes on: the budget is not spent.
    pub fn watch_goes_on(&self, wave: &Wave, results: &[HostResult]) -> bool {
        self.failures_with(wave, results) <= self.budget
    }

    /// The canary hosts of `wave` that fell ill while watched (`sickened`) and are
    /// put back at once: within the budget the rollout goes on, but a canary that
    /// fell ill does not stay on the release. Beyond it, the ending reverts them.
    pub fn revert_after_watch(
        &self,
        wave: &Wave,
        sickened: &[usize],
        results: &[HostResult],
    ) -> Vec<usize> {
        if self.failures_with(wave, results) <= self.budget {
            sickened.to_vec()
        } else {
            Vec::new()
        }
    }

    /// The analysis after `wave` was inconclusive: no wave starts after it, and the
    /// hosts switched stay for a human to judge.
    pub fn inconclusive(&mut self, wave: &Wave, why: &str) {
        self.stop.get_or_insert(Stop::Inconclusive {
            wave: wave.name.clone(),
            why: why.to_owned(),
        });
    }

    /// `wave` is over: its failures are counted, and the rollout stops when they
    /// exceed the budget. Returns the wave's failed hosts.
    pub fn wave_done(&mut self, wave: &Wave, results: &[HostResult]) -> Vec<usize> {
        let failed = self.failed_in(wave, results);
        self.failed += failed.len();
        if self.failed > self.budget {
            self.stop = Some(Stop::Failures {
                wave: wave.name.clone(),
                failed: self.failed,
            });
        }
        failed
    }

    /// What the end does to the hosts: those never activated are skipped; beyond the
    /// budget, those switched stay (halt) or go back (revert).
    pub fn ending(&self, results: &[HostResult], version: &Version) -> Ending {
        let skipped: Vec<usize> = self
            .ready
            .iter()
            .copied()
            .filter(|i| !self.activated.contains(i))
            .collect();
        let mut ending = Ending {
            skipped,
            skip_reason: String::new(),
            halted: Vec::new(),
            revert: Vec::new(),
        };
        match &self.stop {
            None => {}
            Some(Stop::Interrupted) => ending.skip_reason = "interrupted".into(),
            Some(Stop::Staging(n)) => {
                ending.skip_reason = format!("{n} host(s) failed staging (--all-or-nothing)");
            }
            Some(Stop::Inconclusive { wave, why }) => {
                ending.skip_reason =
                    format!("the analysis after {wave} was inconclusive ({why}): a human decides");
                ending.halted = self.activated_where(results, |r| r.switched_to(version));
            }
            Some(Stop::Failures { wave, failed }) => {
                ending.skip_reason = format!(
                    "the rollout stopped after {wave}, with {failed} failed and {} allowed",
                    self.budget
                );
                match self.on_failure {
                    OnFailure::Halt => {
                        ending.halted = self.activated_where(results, |r| r.switched_to(version));
                    }
                    OnFailure::Revert => {
                        ending.revert =
                            self.activated_where(results, |r| maybe_switched(r, version));
                    }
                }
            }
        }
        ending
    }

    fn activated_where(
        &self,
        results: &[HostResult],
        keep: impl Fn(&HostResult) -> bool,
    ) -> Vec<usize> {
        self.activated
            .iter()
            .copied()
            .filter(|&i| keep(&results[i]))
            .collect()
    }

    /// Which hosts of `candidates` a revert puts back: those the run switched, or
    /// may have.
    pub fn to_revert(
        candidates: &[usize],
        results: &[HostResult],
        version: &Version,
    ) -> Vec<usize> {
        candidates
            .iter()
            .copied()
            .filter(|&i| maybe_switched(&results[i], version))
            .collect()
    }

    /// The verdict, once the ending was carried out (`back` hosts went back, `stuck`
    /// could not).
    pub fn verdict(
        &self,
        results: &[HostResult],
        subject: &str,
        version: &Version,
        (back, stuck): (usize, usize),
    ) -> Verdict {
        let subject = subject.to_owned();
        let never = self.ready.len() - self.activated.len();
        match &self.stop {
            None => Verdict::Deployed {
                subject,
                done: results.iter().filter(|r| r.ok).count(),
                hosts: self.hosts,
                failed: self.failed,
                budget: self.budget,
            },
            Some(Stop::Interrupted) => Verdict::Interrupted {
                subject,
                version: version.clone(),
                switched: self
                    .activated_where(results, |r| r.switched_to(version))
                    .len(),
                never,
            },
            Some(Stop::Staging(failed)) => Verdict::DidNotStart {
                subject,
                failed: *failed,
                hosts: self.hosts,
            },
            Some(Stop::Inconclusive { wave, why }) => Verdict::Inconclusive {
                subject,
                version: version.clone(),
                wave: wave.clone(),
                why: why.clone(),
                stay: self
                    .activated_where(results, |r| r.switched_to(version))
                    .len(),
                never,
            },
            Some(Stop::Failures { wave, failed }) => match self.on_failure {
                OnFailure::Halt => Verdict::Halted {
                    subject,
                    version: version.clone(),
                    wave: wave.clone(),
                    failed: *failed,
                    budget: self.budget,
                    stay: self
                        .activated_where(results, |r| r.switched_to(version))
                        .len(),
                    never,
                },
                OnFailure::Revert => Verdict::Reverted {
                    subject,
                    version: version.clone(),
                    wave: wave.clone(),
                    failed: *failed,
                    budget: self.budget,
                    back,
                    stuck,
                    never,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use manifests::rollout::Amount;

    use super::*;
    use crate::inventory::Host;

    /// How a host's activation goes in a scripted rollout.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Script {
        /// It failed staging.
        Unstaged,
        /// It comes up and stays healthy.
        Up,
        /// It comes up, then fails the canary watch.
        Sickens,
        /// Its activation fails; the agent put it back on `v1`.
        Fails,
        /// Its connection breaks during activation: nobody knows what it runs.
        Breaks,
    }

    use Script::*;

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    fn result(i: usize) -> HostResult {
        let host = Host::local(&format!("web{}", i + 1), "/srv/shop");
        let mut result = HostResult::new(&host);
        result.from = Some(v("v1"));
        result
    }

    /// What a scripted rollout did: the driver's calls in order, the revert, the
    /// verdict.
    #[derive(Debug, PartialEq, Eq)]
    struct Played {
        waves: Vec<Vec<usize>>,
        reverted_after_watch: Vec<usize>,
        skipped: Vec<usize>,
        halted: Vec<usize>,
        revert: Vec<usize>,
        verdict: String,
    }

    /// When Ctrl-C comes in a scripted rollout.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum CtrlC {
        /// Never.
        Never,
        /// Before wave `k` (from 0).
        Before(usize),
        /// During wave `k`, after its first host started: the others never start.
        During(usize),
    }

    /// Plays a rollout of `scripts` under `policy`, as the driver does, with Ctrl-C
    /// when `ctrl_c` says.
    fn play(policy: &Policy, scripts: &[Script], all_or_nothing: bool, ctrl_c: CtrlC) -> Played {
        let version = v("v2");
        let mut results: Vec<HostResult> = (0..scripts.len()).map(result).collect();
        let staged: Vec<bool> = scripts.iter().map(|s| *s != Unstaged).collect();
        let mut rollout = Rollout::new(policy, &staged, all_or_nothing);
        let mut played = Played {
            waves: Vec::new(),
            reverted_after_watch: Vec::new(),
            skipped: Vec::new(),
            halted: Vec::new(),
            revert: Vec::new(),
            verdict: String::new(),
        };
        let mut interrupted = false;
        loop {
            let k = played.waves.len();
            interrupted |= ctrl_c == CtrlC::Before(k);
            let Some(wave) = rollout.next_wave(interrupted) else {
                break;
            };
            let started: Vec<usize> = if ctrl_c == CtrlC::During(k) {
                interrupted = true;
                wave.hosts[..1].to_vec()
            } else {
                wave.hosts.clone()
            };
            played.waves.push(started.clone());
            for &i in &started {
                let r = &mut results[i];
                match scripts[i] {
                    Up | Sickens => {
                        r.to = Some(version.clone());
                        r.set(Outcome::Done, "switched");
                    }
                    Fails => {
                        r.to = Some(v("v1"));
                        r.set(Outcome::Failed, "activate: unhealthy");
                    }
                    Breaks => {
                        r.to = None;
                        r.set(Outcome::Failed, "activate: session broke");
                    }
                    Unstaged => unreachable!("never in a wave"),
                }
            }
            rollout.started(&started);
            if wave.watch {
                let mut sickened = Vec::new();
                for &i in &wave.hosts {
                    if scripts[i] == Sickens && rollout.watch_goes_on(&wave, &results) {
                        results[i].set(Outcome::Failed, "the canary watch failed");
                        sickened.push(i);
                    }
                }
                let back = rollout.revert_after_watch(&wave, &sickened, &results);
                for &i in &back {
                    results[i].to = Some(v("v1"));
                    results[i].set(Outcome::Reverted, "reverted");
                }
                played.reverted_after_watch = back;
            }
            rollout.wave_done(&wave, &results);
        }
        let ending = rollout.ending(&results, &version);
        played.skipped = ending.skipped;
        played.halted = ending.halted;
        played.revert = ending.revert.clone();
        let reverted = (ending.revert.len(), 0);
        played.verdict = rollout
            .verdict(&results, "shop v2", &version, reverted)
            .to_string();
        played
    }

    fn policy(canary: usize, batch: usize, max_failures: usize, on_failure: OnFailure) -> Policy {
        Policy {
            canary,
            canary_wait: Duration::from_secs(if canary > 0 { 60 } else { 0 }),
            batch: Some(Amount::Hosts(batch)),
            max_failures: Amount::Hosts(max_failures),
            on_failure,
        }
    }

    #[test]
    fn rollouts_decide_as_the_policy_says() {
        use OnFailure::{Halt, Revert};
        struct Case {
            name: &'static str,
            policy: Policy,
            scripts: Vec<Script>,
            all_or_nothing: bool,
            ctrl_c: CtrlC,
            waves: Vec<Vec<usize>>,
            reverted_after_watch: Vec<usize>,
            skipped: Vec<usize>,
            halted: Vec<usize>,
            revert: Vec<usize>,
            verdict: &'static str,
        }
        let cases = [
            Case {
                name: "every wave passes",
                policy: policy(1, 2, 0, Revert),
                scripts: vec![Up, Up, Up, Up, Up],
                all_or_nothing: false,
                ctrl_c: CtrlC::Never,
                waves: vec![vec![0], vec![1, 2], vec![3, 4]],
                reverted_after_watch: vec![],
                skipped: vec![],
                halted: vec![],
                revert: vec![],
                verdict: "deployed shop v2 on 5 of 5 host(s)",
            },
            Case {
                name: "the canary falls ill within the budget: put back, the rollout goes on",
                policy: policy(1, 2, 1, Revert),
                scripts: vec![Sickens, Up, Up],
                all_or_nothing: false,
                ctrl_c: CtrlC::Never,
                waves: vec![vec![0], vec![1, 2]],
                reverted_after_watch: vec![0],
                skipped: vec![],
                halted: vec![],
                revert: vec![],
                verdict: "deployed shop v2 on 2 of 3 host(s); 1 failed (1 within the failure budget of 1)",
            },
            Case {
                name: "the canary falls ill beyond the budget: no wave starts, it is reverted",
                policy: policy(1, 2, 0, Revert),
                scripts: vec![Sickens, Up, Up],
                all_or_nothing: false,
                ctrl_c: CtrlC::Never,
                waves: vec![vec![0]],
                reverted_after_watch: vec![],
                skipped: vec![1, 2],
                halted: vec![],
                revert: vec![0],
                verdict: "deploy of shop v2 reverted after wave 1 (canary): 1 host(s) failed, 0 allowed; 1 host(s) put back on their previous release, 2 not activated",
            },
            Case {
                name: "a wave fails under revert: every host switched goes back",
                policy: policy(0, 2, 0, Revert),
                scripts: vec![Up, Up, Fails, Up, Up],
                all_or_nothing: false,
                ctrl_c: CtrlC::Never,
                waves: vec![vec![0, 1], vec![2, 3]],
                reverted_after_watch: vec![],
                skipped: vec![4],
                halted: vec![],
                revert: vec![0, 1, 3],
                verdict: "deploy of shop v2 reverted after wave 2: 1 host(s) failed, 0 allowed; 3 host(s) put back on their previous release, 1 not activated",
            },
            Case {
                name: "a wave fails under halt: the switched hosts stay",
                policy: policy(0, 2, 0, Halt),
                scripts: vec![Up, Up, Fails, Up, Up],
                all_or_nothing: false,
                ctrl_c: CtrlC::Never,
                waves: vec![vec![0, 1], vec![2, 3]],
                reverted_after_watch: vec![],
                skipped: vec![4],
                halted: vec![0, 1, 3],
                revert: vec![],
                verdict: "deploy of shop v2 halted after wave 2: 1 host(s) failed, 0 allowed; 3 host(s) switched to v2 stay there, 1 not activated",
            },
            Case {
                name: "a host whose connection broke during activation is reverted too",
                policy: policy(0, 3, 0, Revert),
                scripts: vec![Up, Breaks, Up],
                all_or_nothing: false,
                ctrl_c: CtrlC::Never,
                waves: vec![vec![0, 1, 2]],
                reverted_after_watch: vec![],
                skipped: vec![],
                halted: vec![],
                revert: vec![0, 1, 2],
                verdict: "deploy of shop v2 reverted after wave 1: 1 host(s) failed, 0 allowed; 3 host(s) put back on their previous release, 0 not activated",
            },
            Case {
                name: "Ctrl-C between waves: no new wave, nothing undone",
                policy: policy(1, 1, 0, Revert),
                scripts: vec![Up, Up, Up],
                all_or_nothing: false,
                ctrl_c: CtrlC::Before(1),
                waves: vec![vec![0]],
                reverted_after_watch: vec![],
                skipped: vec![1, 2],
                halted: vec![],
                revert: vec![],
                verdict: "deploy of shop v2 interrupted: 1 host(s) switched to v2, 2 not activated",
            },
            Case {
                name: "Ctrl-C during a wave: its other hosts are skipped, no new wave",
                policy: policy(0, 2, 0, Revert),
                scripts: vec![Up, Up, Up, Up],
                all_or_nothing: false,
                ctrl_c: CtrlC::During(0),
                waves: vec![vec![0]],
                reverted_after_watch: vec![],
                skipped: vec![1, 2, 3],
                halted: vec![],
                revert: vec![],
                verdict: "deploy of shop v2 interrupted: 1 host(s) switched to v2, 3 not activated",
            },
            Case {
                name: "Ctrl-C during the last wave is an interruption too",
                policy: policy(0, 2, 0, Revert),
                scripts: vec![Up, Up, Up, Up],
                all_or_nothing: false,
                ctrl_c: CtrlC::During(1),
                waves: vec![vec![0, 1], vec![2]],
                reverted_after_watch: vec![],
                skipped: vec![3],
                halted: vec![],
                revert: vec![],
                verdict: "deploy of shop v2 interrupted: 3 host(s) switched to v2, 1 not activated",
            },
            Case {
                name: "Ctrl-C after the last host started changes nothing",
                policy: policy(0, 2, 0, Revert),
                scripts: vec![Up, Up],
                all_or_nothing: false,
                ctrl_c: CtrlC::Before(1),
                waves: vec![vec![0, 1]],
                reverted_after_watch: vec![],
                skipped: vec![],
                halted: vec![],
                revert: vec![],
                verdict: "deployed shop v2 on 2 of 2 host(s)",
            },
            Case {
                name: "a host whose connection broke stays, unknown, under halt",
                policy: policy(0, 3, 0, Halt),
                scripts: vec![Up, Breaks, Up],
                all_or_nothing: false,
                ctrl_c: CtrlC::Never,
                waves: vec![vec![0, 1, 2]],
                reverted_after_watch: vec![],
                skipped: vec![],
                halted: vec![0, 2],
                revert: vec![],
                verdict: "deploy of shop v2 halted after wave 1: 1 host(s) failed, 0 allowed; 2 host(s) switched to v2 stay there, 0 not activated",
            },
            Case {
                name: "a staging failure leaves the host out, the others go on",
                policy: policy(0, 5, 0, Revert),
                scripts: vec![Up, Unstaged, Up],
                all_or_nothing: false,
                ctrl_c: CtrlC::Never,
                waves: vec![vec![0, 2]],
                reverted_after_watch: vec![],
                skipped: vec![],
                halted: vec![],
                revert: vec![],
                verdict: "deployed shop v2 on 2 of 3 host(s); 1 failed",
            },
            Case {
                name: "a staging failure under --all-or-nothing starts nothing",
                policy: policy(0, 5, 0, Revert),
                scripts: vec![Up, Unstaged, Up],
                all_or_nothing: true,
                ctrl_c: CtrlC::Never,
                waves: vec![],
                reverted_after_watch: vec![],
                skipped: vec![0, 2],
                halted: vec![],
                revert: vec![],
                verdict: "deploy of shop v2 did not start: 1 of 3 host(s) failed staging (--all-or-nothing)",
            },
            Case {
                name: "failures within a percentage budget",
                policy: Policy {
                    max_failures: Amount::Percent(50),
                    ..policy(0, 2, 0, Revert)
                },
                scripts: vec![Fails, Up, Up, Up],
                all_or_nothing: false,
                ctrl_c: CtrlC::Never,
                waves: vec![vec![0, 1], vec![2, 3]],
                reverted_after_watch: vec![],
                skipped: vec![],
                halted: vec![],
                revert: vec![],
                verdict: "deployed shop v2 on 3 of 4 host(s); 1 failed (1 within the failure budget of 2)",
            },
        ];
        for case in cases {
            let played = play(
                &case.policy,
                &case.scripts,
                case.all_or_nothing,
                case.ctrl_c,
            );
            assert_eq!(
                played,
                Played {
                    waves: case.waves,
                    reverted_after_watch: case.reverted_after_watch,
                    skipped: case.skipped,
                    halted: case.halted,
                    revert: case.revert,
                    verdict: case.verdict.to_owned(),
                },
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn an_inconclusive_analysis_halts_with_the_canary_in_place() {
        let policy = policy(1, 1, 0, OnFailure::Revert);
        let mut rollout = Rollout::new(&policy, &[true, true, true], false);
        let mut results: Vec<HostResult> = (0..3).map(result).collect();
        let wave = rollout.next_wave(false).unwrap();
        assert_eq!(wave.hosts, vec![0]);
        rollout.started(&wave.hosts);
        results[0].to = Some(v("v2"));
        results[0].set(Outcome::Done, "switched");
        rollout.inconclusive(&wave, "error-rate: no data");
        assert!(rollout.wave_done(&wave, &results).is_empty());
        assert!(rollout.next_wave(false).is_none(), "no wave after it");
        let ending = rollout.ending(&results, &v("v2"));
        assert_eq!((ending.halted, ending.revert), (vec![0], vec![]));
        assert_eq!(ending.skipped, vec![1, 2]);
        let verdict = rollout.verdict(&results, "shop v2", &v("v2"), (0, 0));
        assert!(!verdict.ok());
        assert!(
            verdict.to_string().contains(
                "inconclusive (error-rate: no data); 1 host(s) switched to v2 stay there"
            ),
            "{verdict}"
        );
        // Beyond the budget, the failures decide: on_failure applies.
        let mut rollout = Rollout::new(&policy, &[true, true], false);
        let wave = rollout.next_wave(false).unwrap();
        rollout.started(&wave.hosts);
        let mut results: Vec<HostResult> = (0..2).map(result).collect();
        results[0].set(Outcome::Failed, "analysis");
        rollout.inconclusive(&wave, "latency: no data");
        rollout.wave_done(&wave, &results);
        assert_eq!(
            rollout.ending(&results, &v("v2")).halted,
            Vec::<usize>::new()
        );
    }

    #[test]
    fn a_revert_that_gets_stuck_says_so() {
        let verdict = Verdict::Reverted {
            subject: "shop v2".into(),
            version: v("v2"),
            wave: "wave 1".into(),
            failed: 2,
            budget: 0,
            back: 1,
            stuck: 1,
            never: 0,
        };
        assert_eq!(
            verdict.to_string(),
            "deploy of shop v2 reverted after wave 1: 2 host(s) failed, 0 allowed; 1 host(s) put back on their previous release, 1 could not be, 0 not activated"
        );
        assert!(!verdict.ok());
    }
}
