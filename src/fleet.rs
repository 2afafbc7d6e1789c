//! Fleet operations — deploy, rollback, status, history — across the selected hosts,
//! in parallel up to a bound. One host failing never hides the others: every host
//! ends with a result, and the run goes on.
//!
//! A deploy stages every host first (connect, hello, preflight, transfer and verify,
//! skipped where the release is already there) and only then activates the staged
//! hosts, so the fleet runs mixed versions only for as long as activation takes.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use manifests::behaviour::Behaviour;
use manifests::{Manifest, Version};
use serde::Serialize;
use serde_json::Value;

use crate::inventory::Host;
use crate::remote::{CallError, RemoteAgent};
use crate::report::Reporter;

/// Room a host must have beyond the release itself (the agent's own margin).
const DISK_MARGIN: u64 = 16 << 20;

/// Set by Ctrl-C: start no new work.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// How a fleet operation runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts worked on at once.
    pub parallel: usize,
    /// Record unknown host keys instead of refusing the host.
    pub accept_new_keys: bool,
}

/// The artifact a deploy sends.
#[derive(Debug)]
pub struct Artifact {
    /// Its file.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its size in bytes.
    pub size: u64,
}

/// How a host's part in a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It runs the release asked for (switched to it, or already had it).
    Done,
    /// The run switched it, then put it back on the release it ran before.
    Reverted,
    /// It was staged but not activated: the rollout stopped first.
    Skipped,
    /// It failed; `to` says what it runs now, when known.
    Failed,
}

impl Outcome {
    /// The word in the report's RESULT column.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Done => "ok",
            Outcome::Reverted => "reverted",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "FAILED",
        }
    }
}

/// How one host ended.
#[derive(Debug, Clone, Serialize)]
pub struct HostResult {
    /// The host.
    pub host: String,
    /// Whether it did what was asked.
    pub ok: bool,
    /// How its part ended.
    pub result: Outcome,
    /// The release that was current before.
    pub from: Option<String>,
    /// The release current now (when it changed or was already right).
    pub to: Option<String>,
    /// Bytes of artifact sent.
    pub transferred: u64,
    /// Seconds spent on the host.
    pub seconds: f64,
    /// What happened, or why it failed (naming the step).
    pub detail: String,
}

impl HostResult {
    pub(crate) fn new(host: &Host) -> HostResult {
        HostResult {
            host: host.name.to_string(),
            ok: false,
            result: Outcome::Failed,
            from: None,
            to: None,
            transferred: 0,
            seconds: 0.0,
            detail: String::new(),
        }
    }

    /// Records how the host ended.
    pub(crate) fn set(&mut self, result: Outcome, detail: impl Into<String>) {
        self.result = result;
        self.ok = result == Outcome::Done;
        self.detail = detail.into();
    }

    /// Tells the reporter how the host ended.
    pub(crate) fn report(&self, reporter: &Reporter) {
        reporter.finished(
            &self.host,
            self.ok,
            &self.detail,
            &serde_json::to_value(self).unwrap_or(Value::Null),
        );
    }
}

/// Runs `work` on every item with at most `limit` at once; an item not started
/// because of Ctrl-C gets `None`.
pub(crate) fn parallel<T: Sync, R: Send>(
    items: &[T],
    limit: usize,
    work: impl Fn(usize, &T) -> R + Sync,
) -> Vec<Option<R>> {
    fan_out(items, limit, true, work)
}

/// As [`parallel`], but Ctrl-C does not stop it: for recovery (a revert) and for
/// finishing what was started (a watch round).
pub(crate) fn parallel_to_the_end<T: Sync, R: Send>(
    items: &[T],
    limit: usize,
    work: impl Fn(usize, &T) -> R + Sync,
) -> Vec<Option<R>> {
    fan_out(items, limit, false, work)
}

fn fan_out<T: Sync, R: Send>(
    items: &[T],
    limit: usize,
    stoppable: bool,
    work: impl Fn(usize, &T) -> R + Sync,
) -> Vec<Option<R>> {
    let next = Mutex::new(0usize);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..limit.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut next = next.lock().expect("not poisoned");
                        if *next >= items.len() || (stoppable && STOP.load(Ordering::SeqCst)) {
                            return;
                        }
                        *next += 1;
                        *next - 1
                    };
                    let result = work(i, &items[i]);
                    *results[i].lock().expect("not poisoned") = Some(result);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.into_inner().expect("not poisoned"))
        .collect()
}

pub(crate) fn interrupted(host: &Host) -> HostResult {
    let mut result = HostResult::new(host);
    result.set(Outcome::Failed, "not started: interrupted");
    result
}

/// Connects and says hello; the agent and its hello on success.
pub(crate) fn open(
    host: &Host,
    options: &Options,
    reporter: &Reporter,
) -> Result<(RemoteAgent, Value), String> {
    let name = host.name.as_str();
    reporter.phase(name, "connect", "");
    let mut agent = RemoteAgent::connect(host, options.accept_new_keys)
        .map_err(|e| format!("connect: {}", crate::error::chain(&e)))?;
    reporter.phase(name, "hello", "");
    let hello = agent
        .hello()
        .map_err(|e| format!("hello: {}", crate::error::chain(&e)))?;
    Ok((agent, hello))
}

/// Shows the agent's events for `host` as they come: phases (hooks, restarts, health
/// checks, reverts) and the app's programs' output.
pub(crate) fn agent_events<'a>(
    host: &'a str,
    reporter: &'a Reporter,
) -> impl FnMut(&str, &Value) + 'a {
    move |kind, data| match kind {
        "phase" => reporter.phase(
            host,
            data["phase"].as_str().unwrap_or("?"),
            data["detail"].as_str().unwrap_or(""),
        ),
        "output" => reporter.output(
            host,
            data["stage"].as_str().unwrap_or("?"),
            data["line"].as_str().unwrap_or(""),
        ),
        "warning" => reporter.output(host, "warning", data["message"].as_str().unwrap_or("")),
        _ => {}
    }
}

/// Why a call failed, for the host's line: `step: cause`, or for a failed preflight
/// or health check, a sentence that names the host.
pub(crate) fn describe(host: &str, step: &str, error: &CallError) -> String {
    describe_for(host, step, error, None)
}

/// [`describe`], naming the links of `manifest` that need a host path the host
/// lacks where the agent did not (it was given only the paths).
pub(crate) fn describe_for(
    host: &str,
    step: &str,
    error: &CallError,
    manifest: Option<&Manifest>,
) -> String {
    let CallError::Refused { details, .. } = error else {
        return format!("{step}: {}", crate::error::chain(error));
    };
    let preflight = &details["preflight"];
    if preflight.is_object() {
        let strings = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        };
        let mut phrases: Vec<String> = Vec::new();
        for lacking in preflight["lacking"].as_array().into_iter().flatten() {
            let path = lacking["path"].as_str().unwrap_or("?").to_owned();
            let mut needed_by = strings(&lacking["needed_by"]);
            if needed_by.is_empty()
                && let Some(links) = manifest.and_then(|m| m.host_paths().remove(path.as_str()))
            {
                needed_by = links.into_iter().map(str::to_owned).collect();
            }
            phrases.push(agent::Lacking { path, needed_by }.sentence(host));
        }
        let problems = strings(&preflight["problems"]);
        if !problems.is_empty() {
            phrases.push(format!("{} on {host}", problems.join("; ")));
        }
        return format!("preflight: {}", phrases.join("; "));
    }
    // The agent's own sentence, which names the host, the failure and the revert.
    if details["unhealthy"].is_object() || details["unhealthy_now"].is_object() {
        return crate::error::chain(error);
    }
    format!("{step}: {}", crate::error::chain(error))
}

/// The release current on a host after a failed call, when the failure says.
pub(crate) fn current_after(error: &CallError) -> Option<String> {
    let CallError::Refused { details, .. } = error else {
        return None;
    };
    let unhealthy = &details["unhealthy"];
    match unhealthy["revert"].as_str() {
        Some("done") => unhealthy["reverted_to"].as_str(),
        _ => unhealthy["version"].as_str(),
    }
    .map(str::to_owned)
}

pub(crate) fn current_of(hello: &Value) -> Option<String> {
    hello["status"]["current"].as_str().map(str::to_owned)
}

/// Whether a host needs the artifact sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// It has this exact release already.
    Nothing,
    /// It needs the artifact.
    Transfer,
}

/// Preflight from a host's hello (lock, release already there, disk) and, when the
/// release requires variables or files and `agent` is given, the agent's check.
/// Changes nothing on the host.
pub(crate) fn preflight(
    host: &Host,
    artifact: &Artifact,
    hello: &Value,
    agent: Option<&mut RemoteAgent>,
) -> Result<Need, String> {
    let name = host.name.as_str();
    let version = artifact.manifest.version.as_str();
    let payload = &artifact.manifest.payload_digest;
    let status = &hello["status"];
    if let Some(holder) = status["lock"].as_object() {
        let who = holder.get("holder").filter(|h| !h.is_null()).map_or(
            "a process that has not said who it is".to_owned(),
            |h| {
                format!(
                    "pid {} ({}, since {})",
                    h["pid"],
                    h["command"].as_str().unwrap_or("?"),
                    h["since"].as_str().unwrap_or("?")
                )
            },
        );
        return Err(format!("preflight: {} is busy: locked by {who}", host.root));
    }
    let present = status["releases"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["version"].as_str() == Some(version));
    if let Some(present) = present {
        if present["payload_digest"].as_str() == Some(payload.as_str()) {
            return Ok(Need::Nothing);
        }
        return Err(format!(
            "preflight: release {version} is already on the host with different content (payload {})",
            present["payload_digest"].as_str().unwrap_or("?")
        ));
    }
    let requires = &artifact.manifest.behaviour.requires;
    let host_paths: Vec<&str> = artifact.manifest.host_paths().into_keys().collect();
    if let Some(agent) = agent
        && (!requires.env.is_empty() || !requires.files.is_empty() || !host_paths.is_empty())
    {
        agent
            .check(&artifact.manifest.behaviour, &host_paths, None)
            .map_err(|e| describe_for(name, "preflight", &e, Some(&artifact.manifest)))?;
    }
    if let Some(free) = status["free_bytes"].as_u64() {
        let need = artifact.manifest.unpacked_size + DISK_MARGIN;
        if need > free {
            return Err(format!(
                "preflight: not enough disk space on {}: the release needs {} with margin, {} is free",
                host.root,
                crate::output::human_bytes(need),
                crate::output::human_bytes(free)
            ));
        }
    }
    Ok(Need::Transfer)
}

/// Connect, hello, preflight, transfer: the host is ready to activate.
pub(crate) fn stage(
    host: &Host,
    artifact: &Artifact,
    options: &Options,
    reporter: &Reporter,
    result: &mut HostResult,
) -> Result<RemoteAgent, String> {
    let name = host.name.as_str();
    let payload = &artifact.manifest.payload_digest;
    let (mut agent, hello) = open(host, options, reporter)?;
    result.from = current_of(&hello);
    reporter.phase(name, "preflight", "");
    if preflight(host, artifact, &hello, Some(&mut agent))? == Need::Nothing {
        reporter.phase(name, "transfer", "skipped: already there");
        return Ok(agent);
    }
    reporter.phase(name, "transfer", &crate::output::human_bytes(artifact.size));
    let file = File::open(&artifact.path)
        .map_err(|e| format!("transfer: cannot open {}: {e}", artifact.path.display()))?;
    let mut counting = Counting {
        inner: BufReader::with_capacity(1 << 20, file),
        sent: 0,
        next_report: 0,
        total: artifact.size,
        host: name,
        reporter,
    };
    agent
        .receive(&mut counting, payload, &mut |_| {})
        .map_err(|e| format!("transfer: {}", crate::error::chain(&e)))?;
    result.transferred = counting.sent;
    Ok(agent)
}

/// The artifact as it is sent, counted for progress.
struct Counting<'a, R> {
    inner: R,
    sent: u64,
    next_report: u64,
    total: u64,
    host: &'a str,
    reporter: &'a Reporter,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        if self.sent >= self.next_report || n == 0 {
            self.next_report = self.sent + (1 << 20);
            self.reporter.bytes(self.host, self.sent, self.total);
        }
        Ok(n)
    }
}

/// Rolls `hosts` back (to `to`, or each host's previous release).
pub fn rollback(
    hosts: &[&Host],
    to: Option<&Version>,
    options: &Options,
    reporter: &Reporter,
) -> Vec<HostResult> {
    let results = parallel(hosts, options.parallel, |_, host| {
        let started = Instant::now();
        let mut result = HostResult::new(host);
        let name = host.name.as_str();
        // No hello: a rollback is one round trip to the agent (which knows the rest).
        reporter.phase(name, "connect", "");
        match RemoteAgent::connect(host, options.accept_new_keys) {
            Ok(mut agent) => switch_back(&mut agent, host, to, reporter, &mut result),
            Err(e) => result.set(
                Outcome::Failed,
                format!("connect: {}", crate::error::chain(&e)),
            ),
        }
        result.seconds = started.elapsed().as_secs_f64();
        result.report(reporter);
        result
    });
    results
        .into_iter()
        .zip(hosts)
        .map(|(r, host)| r.unwrap_or_else(|| interrupted(host)))
        .collect()
}

/// Rolls one host back to `to` (or its previous release), restarting and checking
/// it; `result` gets the switch, or the reason it failed and what runs now.
pub(crate) fn switch_back(
    agent: &mut RemoteAgent,
    host: &Host,
    to: Option<&Version>,
    reporter: &Reporter,
    result: &mut HostResult,
) {
    let name = host.name.as_str();
    reporter.phase(name, "rollback", to.map_or("", Version::as_str));
    match agent.rollback(to, &mut agent_events(name, reporter)) {
        Ok(switched) => {
            result.from = switched["from"].as_str().map(str::to_owned);
            result.to = switched["to"].as_str().map(str::to_owned);
            let what = if switched["outcome"] == "unchanged" {
                "already current".to_owned()
            } else {
                "switched, restarted and healthy".to_owned()
            };
            result.set(Outcome::Done, what + &warnings(&switched));
        }
        Err(e) => {
            result.to = current_after(&e);
            result.set(Outcome::Failed, describe(name, "rollback", &e));
        }
    }
}

/// Activates `version` on a staged host, then prunes to `keep` releases; `result`
/// gets what runs now and how it went.
pub(crate) fn activate(
    agent: &mut RemoteAgent,
    host: &Host,
    version: &Version,
    keep: u32,
    reporter: &Reporter,
    result: &mut HostResult,
) {
    let name = host.name.as_str();
    let started = Instant::now();
    reporter.phase(name, "activate", version.as_str());
    match agent.activate(version, &mut agent_events(name, reporter)) {
        Err(e) => {
            // The agent refused or reported: where the host stands is known (its
            // failed health says, and anything else left it as it was). A broken
            // connection leaves it unknown.
            result.to = match &e {
                CallError::Refused { .. } => current_after(&e).or_else(|| result.from.clone()),
                _ => None,
            };
            result.set(Outcome::Failed, describe(name, "activate", &e));
        }
        Ok(switched) => {
            result.to = Some(version.to_string());
            // What the switch replaced, which the lock-free gap since staging may
            // have changed.
            if let Some(from) = switched["from"].as_str() {
                result.from = Some(from.to_owned());
            }
            let mut detail = match switched["outcome"].as_str() {
                Some("unchanged") => "already current".to_owned(),
                _ => "switched".to_owned(),
            };
            reporter.phase(name, "prune", &format!("keep {keep}"));
            // Old releases that stay are no reason to undo a healthy release.
            match agent.prune(keep) {
                Ok(pruned) => {
                    let removed = pruned["removed"].as_array().map_or(0, Vec::len);
                    if removed > 0 {
                        detail += &format!(", pruned {removed}");
                    }
                }
                Err(e) => {
                    detail += &format!("; warning: prune failed: {}", crate::error::chain(&e));
                }
            }
            result.set(Outcome::Done, detail + &warnings(&switched));
        }
    }
    result.seconds += started.elapsed().as_secs_f64();
}

/// Checks the services of what a host runs, once each: `Err` says what failed.
pub(crate) fn health(agent: &mut RemoteAgent, host: &Host) -> Result<Value, String> {
    agent
        .health()
        .map_err(|e| describe(host.name.as_str(), "health", &e))
}

/// `; warning: …` for each warning of a switch (a failed `post_activate` hook).
pub(crate) fn warnings(switched: &Value) -> String {
    switched["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|w| format!("; warning: {w}"))
        .collect()
}

/// Preflight alone on every host: the lock, what `behaviour` requires, the host
/// paths `manifest` needs, and `need_bytes` of disk when given.
pub fn check(
    hosts: &[&Host],
    behaviour: &Behaviour,
    manifest: Option<&Manifest>,
    need_bytes: Option<u64>,
    options: &Options,
) -> Vec<(String, Result<Value, String>)> {
    let quiet = Reporter::Quiet;
    let host_paths: Vec<&str> = manifest
        .map(|m| m.host_paths().into_keys().collect())
        .unwrap_or_default();
    let results = parallel(hosts, options.parallel, |_, host| {
        let (mut agent, _) = open(host, options, &quiet)?;
        agent
            .check(behaviour, &host_paths, need_bytes)
            .map_err(|e| describe_for(host.name.as_str(), "preflight", &e, manifest))
    });
    by_host(hosts, results)
}

/// Pairs each host's name with its result (`interrupted` where it never started).
fn by_host<T>(
    hosts: &[&Host],
    results: Vec<Option<Result<T, String>>>,
) -> Vec<(String, Result<T, String>)> {
    results
        .into_iter()
        .zip(hosts)
        .map(|(r, host)| {
            (
                host.name.to_string(),
                r.unwrap_or_else(|| Err("interrupted".into())),
            )
        })
        .collect()
}

/// One host's status: its hello's status (null for a fresh host), or why it could
/// not be had.
pub fn status(hosts: &[&Host], options: &Options) -> Vec<(String, Result<Value, String>)> {
    let quiet = Reporter::Quiet;
    let results = parallel(hosts, options.parallel, |_, host| {
        open(host, options, &quiet).map(|(_, hello)| hello["status"].clone())
    });
    by_host(hosts, results)
}

/// The release every one of `hosts` runs, healthy, with its payload digest; `Err`
/// says why there is no such release (a host unreachable, none or different
/// releases, or one unhealthy). `live`: check the services now (which journals a
/// change of outcome); otherwise trust each host's journal. Installs nothing.
pub fn running(
    hosts: &[&Host],
    live: bool,
    options: &Options,
) -> Result<(Version, String), String> {
    let seen = parallel(hosts, options.parallel, |_, host| {
        let name = host.name.as_str();
        let mut agent = RemoteAgent::connect(host, options.accept_new_keys)
            .map_err(|e| format!("{name} is unreachable: {}", crate::error::chain(&e)))?;
        let hello = match agent.probe() {
            Err(e) => return Err(format!("{name}: hello: {}", crate::error::chain(&e))),
            Ok(Err(why)) => return Err(format!("{name} has no usable ship-agent ({why})")),
            Ok(Ok(hello)) => hello,
        };
        let Some(current) = current_of(&hello) else {
            return Ok(None);
        };
        let release = hello["status"]["releases"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["version"].as_str() == Some(&current))
            .cloned()
            .unwrap_or(Value::Null);
        if live {
            // A check now, not the journal's last word: it also updates that word.
            health(&mut agent, host)?;
        } else if release["bad"] == true {
            return Err(format!("{current} failed its last health check on {name}"));
        }
        let payload = release["payload_digest"].as_str().unwrap_or("?").to_owned();
        Ok(Some((current, payload)))
    });
    let mut runs: Vec<(String, Option<(String, String)>)> = Vec::new();
    for (host, seen) in hosts.iter().zip(seen) {
        let seen = seen.ok_or("interrupted")??;
        runs.push((host.name.to_string(), seen));
    }
    if let Some((host, _)) = runs.iter().find(|(_, r)| r.is_none()) {
        return Err(format!("{host} runs no release"));
    }
    let mut by_release: std::collections::BTreeMap<&(String, String), Vec<&str>> =
        std::collections::BTreeMap::new();
    for (host, release) in &runs {
        let release = release.as_ref().expect("checked above");
        by_release.entry(release).or_default().push(host);
    }
    if by_release.len() > 1 {
        let mixed: Vec<String> = by_release
            .iter()
            .map(|((version, payload), hosts)| {
                let short = payload.get(..12).unwrap_or(payload);
                format!("{version} (payload {short}…) on {}", hosts.join(", "))
            })
            .collect();
        return Err(format!("its hosts are mixed: {}", mixed.join("; ")));
    }
    let (version, payload) = by_release
        .into_keys()
        .next()
        .ok_or("it has no hosts")?
        .clone();
    let version = version
        .parse()
        .map_err(|e: manifests::IdError| e.to_string())?;
    Ok((version, payload))
}

/// Every host's journal.
pub fn history(hosts: &[&Host], options: &Options) -> Vec<(String, Result<Vec<Value>, String>)> {
    let quiet = Reporter::Quiet;
    let results = parallel(hosts, options.parallel, |_, host| {
        let (mut agent, hello) = open(host, options, &quiet)?;
        if hello["status"].is_null() {
            return Ok(Vec::new());
        }
        agent
            .history()
            .map_err(|e| format!("history: {}", crate::error::chain(&e)))
    });
    by_host(hosts, results)
}
