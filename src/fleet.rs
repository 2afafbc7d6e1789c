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
use manifests::{Manifest, Sha256, Version};
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

/// How one host ended.
#[derive(Debug, Clone, Serialize)]
pub struct HostResult {
    /// The host.
    pub host: String,
    /// Whether it did what was asked.
    pub ok: bool,
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
    fn new(host: &Host) -> HostResult {
        HostResult {
            host: host.name.to_string(),
            ok: false,
            from: None,
            to: None,
            transferred: 0,
            seconds: 0.0,
            detail: String::new(),
        }
    }
}

/// Runs `work` on every item with at most `limit` at once; an item not started
/// because of Ctrl-C gets `None`.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    limit: usize,
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
                        if *next >= items.len() || STOP.load(Ordering::SeqCst) {
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

fn interrupted(host: &Host) -> HostResult {
    HostResult {
        detail: "not started: interrupted".into(),
        ..HostResult::new(host)
    }
}

/// Connects and says hello; the agent and its hello on success.
fn open(
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
fn agent_events<'a>(host: &'a str, reporter: &'a Reporter) -> impl FnMut(&str, &Value) + 'a {
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
fn describe(host: &str, step: &str, error: &CallError) -> String {
    let CallError::Refused { details, .. } = error else {
        return format!("{step}: {}", crate::error::chain(error));
    };
    if let Some(problems) = details["preflight"]["problems"].as_array() {
        let problems: Vec<&str> = problems.iter().filter_map(Value::as_str).collect();
        return format!("preflight: {} on {host}", problems.join("; "));
    }
    // The agent's own sentence, which names the host, the failure and the revert.
    if details["unhealthy"].is_object() {
        return crate::error::chain(error);
    }
    format!("{step}: {}", crate::error::chain(error))
}

/// The release current on a host after a failed call, when the failure says.
fn current_after(error: &CallError) -> Option<String> {
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

fn current_of(hello: &Value) -> Option<String> {
    hello["status"]["current"].as_str().map(str::to_owned)
}

/// Deploys `artifact` to `hosts`; see the module docs.
pub fn deploy(
    hosts: &[&Host],
    artifact: &Artifact,
    keep: u32,
    all_or_nothing: bool,
    options: &Options,
    reporter: &Reporter,
) -> Vec<HostResult> {
    let version = &artifact.manifest.version;
    let payload = &artifact.manifest.payload_digest;
    let agents: Vec<Mutex<Option<RemoteAgent>>> = hosts.iter().map(|_| Mutex::new(None)).collect();
    let staged = parallel(hosts, options.parallel, |i, host| {
        let started = Instant::now();
        let mut result = HostResult::new(host);
        match stage(host, artifact, payload, options, reporter, &mut result) {
            Ok(agent) => {
                result.ok = true;
                *agents[i].lock().expect("not poisoned") = Some(agent);
            }
            Err(reason) => {
                result.detail = reason;
                reporter.finished(host.name.as_str(), false, &result.detail, &Value::Null);
            }
        }
        result.seconds = started.elapsed().as_secs_f64();
        result
    });
    let mut results: Vec<HostResult> = staged
        .into_iter()
        .zip(hosts)
        .map(|(r, host)| r.unwrap_or_else(|| interrupted(host)))
        .collect();
    let failed = results.iter().filter(|r| !r.ok).count();
    if all_or_nothing && failed > 0 {
        for result in results.iter_mut().filter(|r| r.ok) {
            result.ok = false;
            result.detail = format!(
                "staged but not activated: {failed} host(s) failed staging (--all-or-nothing)"
            );
        }
        return results;
    }
    if failed > 0 {
        reporter.note(&format!(
            "{failed} host(s) failed staging and will not be activated; activating the others"
        ));
    }
    let activated = parallel(hosts, options.parallel, |i, host| {
        let mut slot = agents[i].lock().expect("not poisoned");
        let agent = slot.as_mut()?;
        let started = Instant::now();
        let name = host.name.as_str();
        reporter.phase(name, "activate", version.as_str());
        let outcome = agent
            .activate(version, &mut agent_events(name, reporter))
            .map_err(|e| (describe(name, "activate", &e), current_after(&e)));
        let outcome = outcome.and_then(|switched| {
            reporter.phase(name, "prune", &format!("keep {keep}"));
            let pruned = agent.prune(keep).map_err(|e| {
                (
                    format!("activated, then prune failed: {}", crate::error::chain(&e)),
                    Some(version.to_string()),
                )
            })?;
            Ok((switched, pruned))
        });
        Some((outcome, started.elapsed().as_secs_f64()))
    });
    for ((result, activation), host) in results.iter_mut().zip(activated).zip(hosts) {
        let name = host.name.as_str();
        match activation.flatten() {
            None if result.ok => {
                result.ok = false;
                result.detail = "staged but not activated: interrupted".into();
            }
            None => {}
            Some((Ok((switched, pruned)), seconds)) => {
                result.seconds += seconds;
                result.to = Some(version.to_string());
                let removed = pruned["removed"].as_array().map_or(0, Vec::len);
                result.detail = match switched["outcome"].as_str() {
                    Some("unchanged") => format!("{version} was already current"),
                    _ => format!(
                        "{} -> {version}",
                        result.from.as_deref().unwrap_or("nothing")
                    ),
                } + &if removed > 0 {
                    format!(", pruned {removed}")
                } else {
                    String::new()
                } + &warnings(&switched);
                reporter.finished(
                    name,
                    true,
                    &result.detail,
                    &serde_json::to_value(&*result).unwrap_or(Value::Null),
                );
            }
            Some((Err((reason, current)), seconds)) => {
                result.seconds += seconds;
                result.ok = false;
                result.detail = reason;
                result.to = current;
                reporter.finished(name, false, &result.detail, &Value::Null);
            }
        }
    }
    results
}

/// Connect, hello, preflight, transfer: the host is ready to activate.
fn stage(
    host: &Host,
    artifact: &Artifact,
    payload: &Sha256,
    options: &Options,
    reporter: &Reporter,
    result: &mut HostResult,
) -> Result<RemoteAgent, String> {
    let name = host.name.as_str();
    let version = artifact.manifest.version.as_str();
    let (mut agent, hello) = open(host, options, reporter)?;
    result.from = current_of(&hello);
    reporter.phase(name, "preflight", "");
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
            reporter.phase(name, "transfer", "skipped: already there");
            return Ok(agent);
        }
        return Err(format!(
            "preflight: release {version} is already on the host with different content (payload {})",
            present["payload_digest"].as_str().unwrap_or("?")
        ));
    }
    let requires = &artifact.manifest.behaviour.requires;
    if !requires.env.is_empty() || !requires.files.is_empty() {
        agent
            .check(&artifact.manifest.behaviour, None)
            .map_err(|e| describe(name, "preflight", &e))?;
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
        let outcome = RemoteAgent::connect(host, options.accept_new_keys)
            .map_err(|e| (format!("connect: {}", crate::error::chain(&e)), None))
            .and_then(|mut agent| {
                reporter.phase(name, "rollback", to.map_or("", Version::as_str));
                agent
                    .rollback(to, &mut agent_events(name, reporter))
                    .map_err(|e| (describe(name, "rollback", &e), current_after(&e)))
            });
        result.seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(switched) => {
                result.ok = true;
                result.from = switched["from"].as_str().map(str::to_owned);
                result.to = switched["to"].as_str().map(str::to_owned);
                result.detail = format!(
                    "{} -> {}",
                    result.from.as_deref().unwrap_or("nothing"),
                    result.to.as_deref().unwrap_or("?")
                ) + &warnings(&switched);
            }
            Err((reason, current)) => {
                result.detail = reason;
                result.to = current;
            }
        }
        reporter.finished(
            name,
            result.ok,
            &result.detail,
            &serde_json::to_value(&result).unwrap_or(Value::Null),
        );
        result
    });
    results
        .into_iter()
        .zip(hosts)
        .map(|(r, host)| r.unwrap_or_else(|| interrupted(host)))
        .collect()
}

/// `; warning: …` for each warning of a switch (a failed `post_activate` hook).
fn warnings(switched: &Value) -> String {
    switched["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|w| format!("; warning: {w}"))
        .collect()
}

/// Preflight alone on every host: the lock, what `behaviour` requires, and
/// `need_bytes` of disk when given.
pub fn check(
    hosts: &[&Host],
    behaviour: &Behaviour,
    need_bytes: Option<u64>,
    options: &Options,
) -> Vec<(String, Result<Value, String>)> {
    let quiet = Reporter::Quiet;
    let results = parallel(hosts, options.parallel, |_, host| {
        let (mut agent, _) = open(host, options, &quiet)?;
        agent
            .check(behaviour, need_bytes)
            .map_err(|e| describe(host.name.as_str(), "preflight", &e))
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
