//! Fleet operations — deploy, rollback, status, history — across the selected hosts,
//! in parallel up to a bound. One host failing never hides the others: every host
//! ends with a result, and the run goes on.
//!
//! A deploy stages every host first (connect, hello, preflight, transfer and verify,
//! skipped where the release is already there) and only then activates the staged
//! hosts, so the fleet runs mixed versions only for as long as activation takes.
//!
//! Each host's work runs in a `host` tracing span, and each of its steps in a
//! `step` span: `-v` shows every step of every host with its time, `-vv` also the
//! agent commands run and the bytes sent.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use agent::protocol::{self, Check, Event, HelloReply, Preflight, Record, Status, Switched};
use manifests::behaviour::Behaviour;
use manifests::signature::{KeyId, Signature};
use manifests::{Manifest, Sha256, Version};

use crate::delta::Transfer;
use crate::inventory::{Host, Reach};
use crate::printer::Printer;
use crate::remote::RemoteAgent;
use crate::results::{ErrorKind, HostError, HostResult, Outcome, Step, current_after};

/// Ctrl-C, as the fleet operations see it: no new host (or wave) starts once it is
/// set; hosts in flight finish their step.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Sets it.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether it was set.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How a fleet operation runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts worked on at once.
    pub parallel: usize,
    /// Record unknown host keys instead of refusing the host.
    pub accept_new_keys: bool,
    /// Ctrl-C.
    pub interrupt: Interrupt,
    /// Who is deploying, for the hosts' journals and the events.
    pub operator: String,
    /// The local `ship-agent`, run for local hosts and installed where a host has
    /// none.
    pub agent_binary: PathBuf,
}

impl Options {
    /// Connects to `host`.
    pub fn connect(&self, host: &Host) -> Result<RemoteAgent, HostError> {
        RemoteAgent::connect(host, self)
            .map_err(|e| HostError::from_call(Step::Connect, &e, host.name.as_str(), None))
    }
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
    /// The delta streams made of it for hosts that keep releases.
    pub deltas: crate::delta::Deltas,
    /// Where the hosts fetch it from, in pull mode.
    pub pull: Option<Pull>,
    /// Its signature (sent to every host), and the operator's leave to downgrade.
    pub signing: protocol::Signing,
}

/// A published artifact the hosts fetch from the store themselves.
#[derive(Debug)]
pub struct Pull {
    /// The URL handed to every host (presigned for S3: a secret, never logged).
    pub url: String,
    /// The artifact's sha256, which every host checks what it fetched against.
    pub digest: Sha256,
    /// The store's URL, for messages.
    pub store: String,
}

impl Artifact {
    /// The key that signed it, when it is signed.
    pub fn signed_by(&self) -> Option<KeyId> {
        let text = self.signing.signature.as_deref()?;
        Signature::parse(text).ok().map(|s| s.key())
    }

    /// Its files.
    pub fn files(&self) -> u64 {
        self.manifest
            .entries
            .iter()
            .filter(|e| matches!(e.kind, manifests::EntryKind::File { .. }))
            .count() as u64
    }

    /// THE disk it needs on a host.
    pub fn disk_need(&self) -> u64 {
        protocol::disk_need(self.manifest.unpacked_size, self.manifest.entry_count)
    }
}

/// Runs `work` on every item with at most `limit` at once; an item not started
/// because of Ctrl-C gets `None`.
pub(crate) fn parallel<T: Sync, R: Send>(
    items: &[T],
    options: &Options,
    work: impl Fn(usize, &T) -> R + Sync,
) -> Vec<Option<R>> {
    fan_out(items, options.parallel, Some(&options.interrupt), work)
}

/// As [`parallel`], but Ctrl-C does not stop it: for recovery (a revert) and for
/// finishing what was started (a watch round).
pub(crate) fn parallel_to_the_end<T: Sync, R: Send>(
    items: &[T],
    options: &Options,
    work: impl Fn(usize, &T) -> R + Sync,
) -> Vec<Option<R>> {
    fan_out(items, options.parallel, None, work)
}

fn fan_out<T: Sync, R: Send>(
    items: &[T],
    limit: usize,
    interrupt: Option<&Interrupt>,
    work: impl Fn(usize, &T) -> R + Sync,
) -> Vec<Option<R>> {
    let next = Mutex::new(0usize);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let parent = tracing::Span::current();
    std::thread::scope(|scope| {
        for _ in 0..limit.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                let _parent = parent.enter();
                loop {
                    let i = {
                        let mut next = next.lock().expect("not poisoned");
                        if *next >= items.len() || interrupt.is_some_and(Interrupt::is_set) {
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

/// The span of `host`'s work.
pub(crate) fn host_span(host: &Host) -> tracing::Span {
    tracing::info_span!("host", host = host.name.as_str())
}

/// Runs `step` of `host`'s work: shown as a phase, timed in a `step` span.
pub(crate) fn step<T>(
    printer: &Printer,
    host: &str,
    phase: &str,
    detail: &str,
    work: impl FnOnce() -> T,
) -> T {
    printer.phase(host, phase, detail);
    let _span = tracing::info_span!("step", phase, detail).entered();
    work()
}

/// Connects and says hello; the agent and its hello on success.
pub(crate) fn open(
    host: &Host,
    options: &Options,
    printer: &Printer,
) -> Result<(RemoteAgent, HelloReply), HostError> {
    let name = host.name.as_str();
    let mut agent = step(printer, name, "connect", "", || options.connect(host))?;
    let hello = step(printer, name, "hello", "", || agent.hello())
        .map_err(|e| HostError::from_call(Step::Hello, &e, name, None))?;
    Ok((agent, hello))
}

/// Shows the agent's events for `host` as they come: phases (hooks, restarts, health
/// checks, reverts), the app's programs' output, warnings.
pub(crate) fn agent_events<'a>(host: &'a str, printer: &'a Printer) -> impl FnMut(&Event) + 'a {
    move |event| match event {
        Event::Phase(p) => printer.phase(host, &p.phase, &p.detail),
        Event::Output(o) => printer.output(host, &o.stage, &o.line),
        Event::Warning(w) => printer.output(host, "warning", &w.message),
        _ => {}
    }
}

/// Whether a host needs the artifact sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// It has this exact release already.
    Nothing,
    /// It needs the artifact.
    Transfer,
}

/// Preflight from a host's status (lock, release already there, disk) and, when the
/// release requires variables, files or host paths and `agent` is given, the
/// agent's check. Changes nothing on the host.
pub(crate) fn preflight(
    host: &Host,
    artifact: &Artifact,
    status: Option<&Status>,
    agent: Option<&mut RemoteAgent>,
) -> Result<Need, HostError> {
    let name = host.name.as_str();
    let manifest = &artifact.manifest;
    let refused =
        |kind, message: String| HostError::new(Step::Preflight, ErrorKind::Agent(kind), message);
    if let Some(status) = status {
        if let Some(lock) = &status.lock {
            let failure = protocol::locked(&host.root, lock.holder.clone());
            return Err(HostError::from_failure(
                Step::Preflight,
                &failure,
                name,
                None,
            ));
        }
        if let Some(present) = status.release(&manifest.version) {
            if present.payload_digest == manifest.payload_digest {
                return Ok(Need::Nothing);
            }
            return Err(refused(
                protocol::FailureKind::Refused,
                protocol::different_content(
                    &manifest.version,
                    &present.payload_digest,
                    &manifest.payload_digest,
                ),
            ));
        }
        if let Some(why) = protocol::no_room(&host.root, artifact.disk_need(), status.free_bytes) {
            return Err(refused(protocol::FailureKind::Preflight, why));
        }
    }
    let requires = &manifest.behaviour.requires;
    // The agent checks what the status cannot show: what the release requires, and
    // on a fresh host (no status) the disk where its app root will be.
    let needs_check = !requires.env.is_empty()
        || !requires.files.is_empty()
        || !manifest.host_paths().is_empty()
        || status.is_none();
    if let Some(agent) = agent
        && needs_check
    {
        agent
            .check(needs(artifact))
            .map_err(|e| HostError::from_call(Step::Preflight, &e, name, Some(manifest)))?;
    }
    Ok(Need::Transfer)
}

/// What `artifact`'s release needs of a host, as the agent's `check` takes it (the
/// host's own settings are the agent's to add).
fn needs(artifact: &Artifact) -> Check {
    let manifest = &artifact.manifest;
    Check {
        env: manifest.behaviour.requires.env.clone(),
        files: manifest.behaviour.requires.files.clone(),
        host_paths: manifest
            .host_paths()
            .into_keys()
            .map(str::to_owned)
            .collect(),
        bytes: Some(artifact.disk_need()),
        release_env_file: manifest.behaviour.env_file.clone(),
        ..Check::default()
    }
}

/// Pull mode: connect, then one `fetch`, which checks what the release needs (and
/// the lock and the disk) before the host downloads the artifact from the store and
/// receives it.
fn stage_pull(
    host: &Host,
    artifact: &Artifact,
    pull: &Pull,
    options: &Options,
    printer: &Printer,
    result: &mut HostResult,
) -> Result<RemoteAgent, HostError> {
    let name = host.name.as_str();
    let mut agent = step(printer, name, "connect", "", || options.connect(host))?;
    let detail = format!("{} from {}", agent::human_bytes(artifact.size), pull.store);
    let payload = &artifact.manifest.payload_digest;
    let received = step(printer, name, "fetch", &detail, || {
        agent.fetch(
            pull,
            payload,
            needs(artifact),
            &artifact.signing,
            &mut agent_events(name, printer),
        )
    })
    .map_err(|e| {
        // What the host lacks (or its lock) is a preflight failure, as in push mode.
        let preflight = matches!(&e, crate::remote::CallError::Failed(f)
            if matches!(f.kind, protocol::FailureKind::Preflight | protocol::FailureKind::Locked));
        let step = if preflight {
            Step::Preflight
        } else {
            Step::Transfer
        };
        naming(
            HostError::from_call(step, &e, name, Some(&artifact.manifest)),
            artifact,
        )
    })?;
    result.from = received.current.clone();
    if received.outcome == protocol::Outcome::Unchanged {
        printer.phase(name, "transfer", "skipped: already there");
    } else {
        result.files_sent = received.files;
    }
    Ok(agent)
}

/// Connect, hello, preflight, transfer: the host is ready to activate (in pull mode,
/// connect and fetch).
pub(crate) fn stage(
    host: &Host,
    artifact: &Artifact,
    full: bool,
    options: &Options,
    printer: &Printer,
    result: &mut HostResult,
) -> Result<RemoteAgent, HostError> {
    if let Some(pull) = &artifact.pull {
        return stage_pull(host, artifact, pull, options, printer, result);
    }
    let name = host.name.as_str();
    let (mut agent, hello) = open(host, options, printer)?;
    result.from = hello.status.as_ref().and_then(|s| s.current.clone());
    let need = step(printer, name, "preflight", "", || {
        preflight(host, artifact, hello.status.as_ref(), Some(&mut agent))
    })?;
    if need == Need::Nothing {
        printer.phase(name, "transfer", "skipped: already there");
        return Ok(agent);
    }
    // What the agent refuses or fails to do for a delta (unlike a broken
    // connection) leaves the whole artifact to send.
    let instead = |error: HostError| {
        // A release the host does not trust is not sent again whole either.
        if !error.host_state_known()
            || matches!(
                error.kind,
                ErrorKind::Agent(protocol::FailureKind::Untrusted)
            )
        {
            return Err(error);
        }
        printer.output(
            name,
            "warning",
            &format!("{error}; sending the whole artifact"),
        );
        Ok(())
    };
    let transfer = transfer_for(
        &mut agent,
        host,
        artifact,
        hello.status.as_ref(),
        full,
        printer,
    );
    match transfer {
        Ok(Transfer::Full) => {}
        Ok(Transfer::Delta(delta)) => {
            let what = format!(
                "{} (a delta: {} file(s) sent, {} reused)",
                agent::human_bytes(delta.bytes.len() as u64),
                delta.size.files_sent,
                delta.size.files_reused
            );
            let stream = std::io::Cursor::new(&delta.bytes[..]);
            let sent = step(printer, name, "transfer", &what, || {
                send(
                    &mut agent,
                    stream,
                    Some(&delta),
                    artifact,
                    printer,
                    name,
                    result,
                )
            });
            // The host could not make the release whole from what it has after all
            // (a copy changed since it said so, its base manifest differs, …).
            match sent {
                Ok(()) => return Ok(agent),
                Err(error) => instead(error)?,
            }
        }
        Err(error) => instead(error)?,
    }
    let size = agent::human_bytes(artifact.size);
    step(printer, name, "transfer", &size, || {
        let file = File::open(&artifact.path).map_err(|e| {
            let mut error = HostError::new(
                Step::Transfer,
                ErrorKind::Local,
                format!("cannot open {}", artifact.path.display()),
            );
            error.causes.push(e.to_string());
            error
        })?;
        let stream = BufReader::with_capacity(1 << 20, file);
        send(&mut agent, stream, None, artifact, printer, name, result)
    })?;
    Ok(agent)
}

/// Streams `input` (the artifact, or `delta` of it) into the host's `receive`,
/// counted for progress; `result` gets the bytes and files sent.
fn send(
    agent: &mut RemoteAgent,
    input: impl Read + Send,
    delta: Option<&crate::delta::Delta>,
    artifact: &Artifact,
    printer: &Printer,
    name: &str,
    result: &mut HostResult,
) -> Result<(), HostError> {
    let mut counting = Counting {
        inner: input,
        sent: 0,
        next_report: 0,
        total: delta.map_or(artifact.size, |d| d.bytes.len() as u64),
        host: name,
        printer,
    };
    let received = agent
        .receive(
            &mut counting,
            &artifact.manifest.payload_digest,
            delta.is_some(),
            delta.and_then(|d| d.base.clone()),
            &artifact.signing,
        )
        .map_err(|e| {
            naming(
                HostError::from_call(Step::Transfer, &e, name, None),
                artifact,
            )
        })?;
    result.transferred = counting.sent;
    result.files_sent = received.files - received.reused_files;
    result.files_reused = received.reused_files;
    tracing::debug!(
        bytes = counting.sent,
        reused = received.reused_files,
        "sent"
    );
    Ok(())
}

/// A host's refusal of `artifact`'s signature, naming the release (the host does
/// not take the signature's word for what it is).
fn naming(mut error: HostError, artifact: &Artifact) -> HostError {
    if matches!(
        error.kind,
        ErrorKind::Agent(protocol::FailureKind::Untrusted)
    ) {
        let manifest = &artifact.manifest;
        error.message = format!("{} {}: {}", manifest.name, manifest.version, error.message);
    }
    error
}

/// What `host` (whose status is `status`) is to be sent: the whole artifact when
/// `full` or when it keeps no release, else what its answer to `have` calls for.
pub(crate) fn transfer_for(
    agent: &mut RemoteAgent,
    host: &Host,
    artifact: &Artifact,
    status: Option<&Status>,
    full: bool,
    printer: &Printer,
) -> Result<Transfer, HostError> {
    let Some(status) = status.filter(|s| !s.releases.is_empty() && !full) else {
        return Ok(Transfer::Full);
    };
    let name = host.name.as_str();
    step(printer, name, "compare", "", || {
        let missing = agent
            .missing(
                crate::delta::contents(&artifact.manifest),
                &mut agent_events(name, printer),
            )
            .map_err(|e| HostError::from_call(Step::Transfer, &e, name, None))?;
        artifact
            .deltas
            .transfer(&artifact.path, &artifact.manifest, status, missing)
    })
}

/// The artifact as it is sent, counted for progress.
struct Counting<'a, R> {
    inner: R,
    sent: u64,
    next_report: u64,
    total: u64,
    host: &'a str,
    printer: &'a Printer,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        if self.sent >= self.next_report || n == 0 {
            self.next_report = self.sent + (1 << 20);
            self.printer.bytes(self.host, self.sent, self.total);
        }
        Ok(n)
    }
}

/// Rolls `hosts` back (to `to`, or each host's previous release).
pub fn rollback(
    hosts: &[&Host],
    to: Option<&Version>,
    options: &Options,
    printer: &Printer,
) -> Vec<HostResult> {
    let results = parallel(hosts, options, |_, host| {
        let _span = host_span(host).entered();
        let started = Instant::now();
        let mut result = HostResult::new(host);
        let name = host.name.as_str();
        // No hello: a rollback is one round trip to the agent (which knows the rest).
        match step(printer, name, "connect", "", || options.connect(host)) {
            Ok(mut agent) => switch_back(&mut agent, host, to, printer, &mut result),
            Err(e) => result.fail(e),
        }
        result.seconds = started.elapsed().as_secs_f64();
        report(printer, &result);
        result
    });
    results
        .into_iter()
        .zip(hosts)
        .map(|(r, host)| r.unwrap_or_else(|| HostResult::interrupted(host)))
        .collect()
}

/// Tells the printer how a host ended.
pub(crate) fn report(printer: &Printer, result: &HostResult) {
    printer.finished(&result.host, result.ok, &result.detail, result);
}

/// Rolls one host back to `to` (or its previous release), restarting and checking
/// it; `result` gets the switch, or the reason it failed and what runs now.
pub(crate) fn switch_back(
    agent: &mut RemoteAgent,
    host: &Host,
    to: Option<&Version>,
    printer: &Printer,
    result: &mut HostResult,
) {
    let name = host.name.as_str();
    let detail = to.map_or("", Version::as_str);
    let switched = step(printer, name, "rollback", detail, || {
        agent.rollback(to, &mut agent_events(name, printer))
    });
    match switched {
        Ok(switched) => {
            result.from = switched.from.clone();
            result.to = Some(switched.to.clone());
            let what = if switched.outcome == protocol::Outcome::Unchanged {
                "already current".to_owned()
            } else {
                "switched, restarted and healthy".to_owned()
            };
            result.set(Outcome::Done, what + &warnings(&switched));
        }
        Err(e) => {
            result.to = current_after(&e);
            result.fail(HostError::from_call(Step::Rollback, &e, name, None));
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
    printer: &Printer,
    result: &mut HostResult,
) {
    let name = host.name.as_str();
    let started = Instant::now();
    let activated = step(printer, name, "activate", version.as_str(), || {
        agent.activate(version, Some(keep), &mut agent_events(name, printer))
    });
    match activated {
        Err(e) => {
            let error = HostError::from_call(Step::Activate, &e, name, None);
            // The agent refused or reported: where the host stands is known (its
            // failed health says, and anything else left it as it was). A broken
            // connection leaves it unknown.
            result.to = if error.host_state_known() {
                current_after(&e).or_else(|| result.from.clone())
            } else {
                None
            };
            result.fail(error);
        }
        Ok(switched) => {
            result.to = Some(version.clone());
            // What the switch replaced, which the lock-free gap since staging may
            // have changed.
            if let Some(from) = &switched.from {
                result.from = Some(from.clone());
            }
            let mut detail = match switched.outcome {
                protocol::Outcome::Unchanged => "already current".to_owned(),
                _ => "switched".to_owned(),
            };
            // Old releases that stay are no reason to undo a healthy release: a
            // prune that failed is one of the warnings.
            if !switched.pruned.is_empty() {
                detail += &format!(", pruned {}", switched.pruned.len());
            }
            result.set(Outcome::Done, detail + &warnings(&switched));
        }
    }
    result.seconds += started.elapsed().as_secs_f64();
}

/// Checks the services of what a host runs, once each.
pub(crate) fn health(agent: &mut RemoteAgent, host: &Host) -> Result<protocol::Checked, HostError> {
    agent
        .health()
        .map_err(|e| HostError::from_call(Step::Health, &e, host.name.as_str(), None))
}

/// `; warning: …` for each warning of a switch (a failed `post_activate` hook).
fn warnings(switched: &Switched) -> String {
    switched
        .warnings
        .iter()
        .map(|w| format!("; warning: {w}"))
        .collect()
}

/// Preflight alone on every host: the lock, what `behaviour` requires, the host
/// paths `manifest` needs, and its disk.
pub fn check(
    hosts: &[&Host],
    behaviour: &Behaviour,
    artifact: Option<&Artifact>,
    options: &Options,
    printer: &Printer,
) -> Vec<(String, Result<Preflight, HostError>)> {
    let manifest = artifact.map(|a| &a.manifest);
    let host_paths: Vec<String> = manifest
        .map(|m| m.host_paths().into_keys().map(str::to_owned).collect())
        .unwrap_or_default();
    let results = parallel(hosts, options, |_, host| {
        let _span = host_span(host).entered();
        let (mut agent, _) = open(host, options, printer)?;
        let check = Check {
            env: behaviour.requires.env.clone(),
            files: behaviour.requires.files.clone(),
            host_paths: host_paths.clone(),
            bytes: artifact.map(Artifact::disk_need),
            release_env_file: behaviour.env_file.clone(),
            ..Check::default()
        };
        step(printer, host.name.as_str(), "preflight", "", || {
            agent.check(check)
        })
        .map_err(|e| HostError::from_call(Step::Preflight, &e, host.name.as_str(), manifest))
    });
    by_host(hosts, results)
}

/// The keys every host trusts, after `change` when given.
pub fn trust(
    hosts: &[&Host],
    change: Option<&protocol::TrustChange>,
    options: &Options,
    printer: &Printer,
) -> Vec<(String, Result<protocol::TrustReply, HostError>)> {
    let results = parallel(hosts, options, |_, host| {
        let _span = host_span(host).entered();
        let name = host.name.as_str();
        let (mut agent, _) = open(host, options, printer)?;
        step(printer, name, "trust", "", || agent.trust(change))
            .map_err(|e| HostError::from_call(Step::Trust, &e, name, None))
    });
    by_host(hosts, results)
}

/// Pairs each host's name with its result (`interrupted` where it never started).
fn by_host<T>(
    hosts: &[&Host],
    results: Vec<Option<Result<T, HostError>>>,
) -> Vec<(String, Result<T, HostError>)> {
    results
        .into_iter()
        .zip(hosts)
        .map(|(r, host)| {
            (
                host.name.to_string(),
                r.unwrap_or_else(|| {
                    Err(HostError::new(
                        Step::Start,
                        ErrorKind::Interrupted,
                        "interrupted",
                    ))
                }),
            )
        })
        .collect()
}

/// Each host's status (`None` for a fresh host), or why it could not be had.
pub fn status(
    hosts: &[&Host],
    options: &Options,
    printer: &Printer,
) -> Vec<(String, Result<Option<Status>, HostError>)> {
    let results = parallel(hosts, options, |_, host| {
        let _span = host_span(host).entered();
        open(host, options, printer).map(|(_, hello)| hello.status)
    });
    by_host(hosts, results)
}

/// Why an environment has no one release that runs healthy everywhere.
#[derive(Debug, thiserror::Error)]
pub enum NotRunning {
    /// A host could not be reached.
    #[error("{host} is unreachable: {}", error.sentence())]
    Unreachable {
        /// The host.
        host: String,
        /// Why.
        error: HostError,
    },
    /// A host's agent did not answer.
    #[error("{host}: {error}")]
    Failed {
        /// The host.
        host: String,
        /// Why.
        error: HostError,
    },
    /// A host has no agent (and nothing is installed to find out more).
    #[error("{host} has no usable ship-agent ({why})")]
    NoAgent {
        /// The host.
        host: String,
        /// Why not.
        why: String,
    },
    /// A host runs nothing.
    #[error("{host} runs no release")]
    NoRelease {
        /// The host.
        host: String,
    },
    /// A host's current release is not among its releases.
    #[error("{host}: its current release {version} is not among its releases")]
    Missing {
        /// The host.
        host: String,
        /// The release.
        version: Version,
    },
    /// A host's release failed a check now.
    #[error("{error}")]
    Unhealthy {
        /// What the check found.
        error: HostError,
    },
    /// A host's release failed its last check, by its journal.
    #[error("{version} failed its last health check on {host}")]
    Bad {
        /// The host.
        host: String,
        /// The release.
        version: Version,
    },
    /// The hosts run different releases.
    #[error("its hosts are mixed: {}", mixed(.0))]
    Mixed(Vec<(Version, Sha256, Vec<String>)>),
    /// There are no hosts.
    #[error("it has no hosts")]
    NoHosts,
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

/// "v1 (payload 0123456789ab…) on web1; v2 (payload …) on web2, web3".
fn mixed(runs: &[(Version, Sha256, Vec<String>)]) -> String {
    runs.iter()
        .map(|(version, payload, hosts)| {
            let payload = payload.as_str();
            let short = payload.get(..12).unwrap_or(payload);
            format!("{version} (payload {short}…) on {}", hosts.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl NotRunning {
    /// The hint of the host error behind it, if any.
    pub fn hint(&self) -> Option<&str> {
        match self {
            NotRunning::Unreachable { error, .. }
            | NotRunning::Failed { error, .. }
            | NotRunning::Unhealthy { error } => error.hint.as_deref(),
            _ => None,
        }
    }
}

/// The release every one of `hosts` runs, healthy, with its payload digest; `Err`
/// says why there is no such release. `live`: check the services now (which
/// journals a change of outcome); otherwise trust each host's journal. Installs
/// nothing.
pub fn running(
    hosts: &[&Host],
    live: bool,
    options: &Options,
) -> Result<(Version, Sha256), NotRunning> {
    let seen = parallel(hosts, options, |_, host| {
        let _span = host_span(host).entered();
        let name = host.name.to_string();
        let mut agent = options
            .connect(host)
            .map_err(|error| NotRunning::Unreachable {
                host: name.clone(),
                error,
            })?;
        let hello = match agent.probe() {
            Err(e) => {
                return Err(NotRunning::Failed {
                    error: HostError::from_call(Step::Hello, &e, &name, None),
                    host: name,
                });
            }
            Ok(Err(why)) => return Err(NotRunning::NoAgent { host: name, why }),
            Ok(Ok(hello)) => hello,
        };
        let Some(current) = hello.status.as_ref().and_then(|s| s.current.clone()) else {
            return Err(NotRunning::NoRelease { host: name });
        };
        let Some(release) = hello.status.as_ref().and_then(|s| s.release(&current)) else {
            return Err(NotRunning::Missing {
                host: name,
                version: current,
            });
        };
        if live {
            // A check now, not the journal's last word: it also updates that word.
            health(&mut agent, host).map_err(|error| NotRunning::Unhealthy { error })?;
        } else if release.bad {
            return Err(NotRunning::Bad {
                host: name,
                version: current,
            });
        }
        Ok((current, release.payload_digest.clone()))
    });
    let mut by_release: std::collections::BTreeMap<(Version, Sha256), Vec<String>> =
        std::collections::BTreeMap::new();
    for (host, seen) in hosts.iter().zip(seen) {
        let release = seen.ok_or(NotRunning::Interrupted)??;
        by_release
            .entry(release)
            .or_default()
            .push(host.name.to_string());
    }
    if by_release.len() > 1 {
        return Err(NotRunning::Mixed(
            by_release
                .into_iter()
                .map(|((version, payload), hosts)| (version, payload, hosts))
                .collect(),
        ));
    }
    by_release.into_keys().next().ok_or(NotRunning::NoHosts)
}

/// Every host's journal.
pub fn history(
    hosts: &[&Host],
    options: &Options,
    printer: &Printer,
) -> Vec<(String, Result<Vec<Record>, HostError>)> {
    let results = parallel(hosts, options, |_, host| {
        let _span = host_span(host).entered();
        let (mut agent, hello) = open(host, options, printer)?;
        if hello.status.is_none() {
            return Ok(Vec::new());
        }
        agent
            .history()
            .map_err(|e| HostError::from_call(Step::History, &e, host.name.as_str(), None))
    });
    by_host(hosts, results)
}

/// Whether `host` is on this machine.
pub(crate) fn is_local(host: &Host) -> bool {
    matches!(host.reach, Reach::Local)
}
