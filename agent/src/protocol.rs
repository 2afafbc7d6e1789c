//! THE protocol between `ship` and `ship-agent`: every request (an agent command and
//! its arguments), every event the agent writes on stdout with `--json`, every reply
//! (the data of the closing `done` event), and [`Failure`], the closing `failed`
//! event. The agent serializes these types and `ship` parses the very same ones, so
//! the two cannot drift apart; a round-trip test covers each of them.
//!
//! It also holds the rules both sides apply to the same facts: how much disk a
//! release needs ([`disk_need`]) and how a held lock is described ([`busy`]).
//!
//! On the wire: `ship` runs `ship-agent --json --protocol N <command> --root ROOT
//! <args>`; the agent answers with one JSON object per line, `{"type": …, "data":
//! …}`, starting with [`Event::Agent`] and ending with [`Event::Done`] (exit 0) or
//! [`Event::Failed`] (exit 1; exit 2 for a caller that speaks another protocol, with
//! the kind `protocol_mismatch`). The `agent` event keeps its shape in every
//! version, so that a caller can tell which protocol answered.

use std::path::PathBuf;

use manifests::{Sha256, Timestamp, Version};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version. It changes whenever a request, an event or a reply changes
/// shape, so that a host with an older agent gets ship's own (3: `health`; 4: host
/// requirements; 5: typed failures, the full disk need in `check`; 6: `have` and
/// delta receives; 7: `fetch`; 8: `activate --keep`, `fetch` with the preflight of
/// `check`, and the current release in `receive`'s reply).
pub const VERSION: u32 = 10;

/// Room kept free on a host beyond the release itself.
const DISK_MARGIN: u64 = 16 << 20;

/// Allowance per entry for inodes and block rounding.
const PER_ENTRY: u64 = 4096;

/// THE disk a release needs on a host: its files, an allowance per entry, and a
/// margin. `receive` refuses a release that does not fit; `check`, ship's preflight
/// and `deploy --plan` say so before.
pub fn disk_need(unpacked_size: u64, entries: u64) -> u64 {
    unpacked_size
        .saturating_add(entries.saturating_mul(PER_ENTRY))
        .saturating_add(DISK_MARGIN)
}

/// Why `need` bytes (from [`disk_need`]) do not fit in `free` bytes at `place`, or
/// `None` when they do.
pub fn no_room(place: &str, need: u64, free: u64) -> Option<String> {
    (need > free).then(|| {
        format!(
            "not enough disk space on {place}: the release needs {} with margin, {} is free",
            crate::human_bytes(need),
            crate::human_bytes(free)
        )
    })
}

/// The causes of `e`, outermost first (as a [`Failure`] carries them).
pub fn causes(e: &dyn std::error::Error) -> Vec<String> {
    let mut causes = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        causes.push(cause.to_string());
        next = cause.source();
    }
    causes
}

/// An error and its causes on one line, `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    std::iter::once(e.to_string())
        .chain(causes(e))
        .collect::<Vec<_>>()
        .join(": ")
}

/// "/srv/shop is busy: locked by pid 12 (ship-agent receive, since …)".
pub fn busy(root: &str, holder: Option<&Holder>) -> String {
    match holder {
        Some(holder) => format!("{root} is busy: locked by {holder}"),
        None => format!("{root} is busy: locked by a process that has not said who it is"),
    }
}

/// THE failure of an app root whose lock is held, as the agent reports it and as
/// ship reports what a host's status shows.
pub fn locked(root: &str, holder: Option<Holder>) -> Failure {
    Failure {
        kind: FailureKind::Locked,
        message: busy(root, holder.as_ref()),
        causes: Vec::new(),
        hint: Some(
            "another operation is running there; try again when it ends (the lock dies with its process)"
                .to_owned(),
        ),
        details: Some(Details::Locked {
            root: root.to_owned(),
            holder,
        }),
    }
}

/// Why a release cannot be received where one of the same version and other
/// content is.
pub fn different_content(version: &Version, here: &Sha256, artifact: &Sha256) -> String {
    format!(
        "release {version} is already on the host with different content (payload {here} here, {artifact} in the artifact)"
    )
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// A request: an agent command, its arguments after `--root ROOT`, and the type of
/// its reply.
pub trait Request {
    /// The agent command.
    const COMMAND: &'static str;
    /// The data of its `done` event.
    type Reply: Serialize + DeserializeOwned;
    /// Its arguments, each a validated value.
    fn args(&self) -> Vec<String>;
}

/// What the fleet file says for a host; `ship` passes it on each call that runs the
/// app's programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// The environment file, relative to the app root (overrides the release's).
    pub env_file: Option<String>,
    /// Variables that win over the environment file.
    pub set: Vec<(String, String)>,
}

impl HostSettings {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(file) = &self.env_file {
            args.extend(["--env-file".to_owned(), file.clone()]);
        }
        for (name, value) in &self.set {
            args.extend(["--set".to_owned(), format!("{name}={value}")]);
        }
        args
    }
}

/// The first exchange: the agent's version and the app root's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello;

impl Request for Hello {
    const COMMAND: &'static str = "hello";
    type Reply = HelloReply;
    fn args(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Unpack the artifact (or delta stream) streamed on stdin, which must be of this
/// payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receive {
    /// The release's payload digest.
    pub expect_payload: Sha256,
    /// The stream is a delta (packager's `write_delta`): the files it leaves out
    /// are copied from the host's releases, and checked.
    pub delta: bool,
    /// The manifest the delta's manifest frame was compressed against.
    pub base: Option<Base>,
    /// The release's signature, and leave to downgrade.
    pub signing: Signing,
}

/// What travels with a release for a host that checks signatures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signing {
    /// The text of the release's `.minisig` file.
    pub signature: Option<String>,
    /// Why a release signed before one the host has accepted is to be taken anyway.
    pub allow_downgrade: Option<String>,
}

impl Signing {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(text) = &self.signature {
            args.extend([
                "--signature".to_owned(),
                manifests::signature::encode_arg(text),
            ]);
        }
        if let Some(why) = &self.allow_downgrade {
            args.extend(["--allow-downgrade".to_owned(), why.clone()]);
        }
        args
    }
}

/// A release's manifest on the host, as the base of a delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// The release.
    pub version: Version,
    /// The sha256 of its manifest's bytes, which must be the host's.
    pub sha256: Sha256,
}

impl Request for Receive {
    const COMMAND: &'static str = "receive";
    type Reply = Received;
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--expect-payload".to_owned(),
            self.expect_payload.to_string(),
        ];
        if self.delta {
            args.push("--delta".to_owned());
        }
        if let Some(base) = &self.base {
            args.extend([
                "--base".to_owned(),
                base.version.to_string(),
                "--base-sha256".to_owned(),
                base.sha256.to_string(),
            ]);
        }
        args.extend(self.signing.args());
        args
    }
}

/// Which of the file contents a release needs the host has in its releases, each
/// checked now: stdin carries a [`Wanted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Have;

impl Request for Have {
    const COMMAND: &'static str = "have";
    type Reply = Had;
    fn args(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What `have` is asked about, on its stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wanted {
    /// File contents, by sha256.
    pub contents: Vec<Sha256>,
}

/// Download an artifact from a store and receive it as `receive` does: stdin
/// carries a [`Source`] (the URL stays out of the host's process list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The artifact's sha256, which the download must have.
    pub expect_digest: Sha256,
    /// The release's payload digest.
    pub expect_payload: Sha256,
    /// What the release needs of the host, checked as `check` does before anything
    /// is downloaded: staging in pull mode is this one call.
    pub needs: Check,
    /// The release's signature, and leave to downgrade.
    pub signing: Signing,
}

impl Request for Fetch {
    const COMMAND: &'static str = "fetch";
    type Reply = Received;
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--expect-digest".to_owned(),
            self.expect_digest.to_string(),
            "--expect-payload".to_owned(),
            self.expect_payload.to_string(),
        ];
        args.extend(self.needs.args());
        args.extend(self.signing.args());
        args
    }
}

/// The keys the host trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustList;

impl Request for TrustList {
    const COMMAND: &'static str = "trust";
    type Reply = TrustReply;
    fn args(&self) -> Vec<String> {
        vec!["list".to_owned()]
    }
}

/// Change what the host trusts, as ship asks it to: stdin carries a
/// [`TrustChange`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustApply;

impl Request for TrustApply {
    const COMMAND: &'static str = "trust";
    type Reply = TrustReply;
    fn args(&self) -> Vec<String> {
        vec!["apply".to_owned()]
    }
}

/// What to change in a host's trust store, on `trust apply`'s stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustChange {
    /// `add` or `revoke`.
    pub action: TrustAction,
    /// The text of the key's minisign public key file.
    pub key: String,
    /// The text of a statement (`.minisig`) of the change, signed by a trusted key.
    #[serde(default)]
    pub statement: Option<String>,
    /// Add the key only where the host trusts none yet.
    #[serde(default)]
    pub first_contact: bool,
}

/// What a [`TrustChange`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustAction {
    /// Trust the key.
    Add,
    /// Stop trusting it.
    Revoke,
}

/// Where `fetch` downloads from, on its stdin.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// An `http://`, `https://` or `file://` URL; a presigned URL's query string is
    /// a secret and is never logged.
    pub url: String,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("url", &without_query(&self.url))
            .finish()
    }
}

/// `url` without its query string (where a presigned URL keeps its signature), for
/// messages and logs.
pub fn without_query(url: &str) -> &str {
    url.split_once('?').map_or(url, |(base, _)| base)
}

/// Make a received release live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activate {
    /// The release.
    pub version: Version,
    /// The host's settings.
    pub host: HostSettings,
    /// Once it is live, prune to this many releases (in the same call: one round
    /// trip fewer per host).
    pub keep: Option<u32>,
}

impl Request for Activate {
    const COMMAND: &'static str = "activate";
    type Reply = Switched;
    fn args(&self) -> Vec<String> {
        let mut args = vec![self.version.to_string()];
        args.extend(self.host.args());
        if let Some(keep) = self.keep {
            args.extend(["--keep".to_owned(), keep.to_string()]);
        }
        args
    }
}

/// Switch back, to `to` or the release before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    /// The release to go back to.
    pub to: Option<Version>,
    /// The host's settings.
    pub host: HostSettings,
}

impl Request for Rollback {
    const COMMAND: &'static str = "rollback";
    type Reply = Switched;
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(to) = &self.to {
            args.extend(["--to".to_owned(), to.to_string()]);
        }
        args.extend(self.host.args());
        args
    }
}

/// Preflight alone: the lock, and what a release needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// Environment variables that must be set.
    pub env: Vec<String>,
    /// Files that must exist, relative to the app root.
    pub files: Vec<String>,
    /// Absolute host paths the release's symlinks point to.
    pub host_paths: Vec<String>,
    /// Disk the release needs, all told ([`disk_need`]).
    pub bytes: Option<u64>,
    /// The environment file the release names.
    pub release_env_file: Option<String>,
    /// The host's settings.
    pub host: HostSettings,
}

impl Request for Check {
    const COMMAND: &'static str = "check";
    type Reply = Preflight;
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut each = |flag: &str, values: &[String]| {
            for value in values {
                args.extend([flag.to_owned(), value.clone()]);
            }
        };
        each("--need-env", &self.env);
        each("--need-file", &self.files);
        each("--need-host-path", &self.host_paths);
        if let Some(bytes) = self.bytes {
            args.extend(["--need-bytes".to_owned(), bytes.to_string()]);
        }
        if let Some(file) = &self.release_env_file {
            args.extend(["--release-env-file".to_owned(), file.clone()]);
        }
        args.extend(self.host.args());
        args
    }
}

/// Check the current release's services once each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The host's settings.
    pub host: HostSettings,
}

impl Request for Health {
    const COMMAND: &'static str = "health";
    type Reply = Checked;
    fn args(&self) -> Vec<String> {
        self.host.args()
    }
}

/// Remove the oldest releases beyond `keep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prune {
    /// Releases kept.
    pub keep: u32,
}

impl Request for Prune {
    const COMMAND: &'static str = "prune";
    type Reply = Pruned;
    fn args(&self) -> Vec<String> {
        vec!["--keep".to_owned(), self.keep.to_string()]
    }
}

/// Journal the metric analysis ship made of the release this host runs: stdin
/// carries a [`Judgement`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judge;

impl Request for Judge {
    const COMMAND: &'static str = "judged";
    type Reply = HistoryReply;
    fn args(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A metric analysis of a release on this host, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The release judged.
    pub version: Version,
    /// The rollout's wave it was judged after.
    pub wave: String,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    /// Each metric: its values, bound, verdict and why.
    pub metrics: Vec<MetricJudgement>,
}

/// One metric of a [`Judgement`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricJudgement {
    pub metric: String,
    pub hosts: Vec<String>,
    pub values: Vec<Option<f64>>,
    pub bound: String,
    pub verdict: String,
    pub why: String,
}

impl Eq for Judgement {}

/// The journal: one [`Event::Record`] per record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History;

impl Request for History {
    const COMMAND: &'static str = "history";
    type Reply = HistoryReply;
    fn args(&self) -> Vec<String> {
        Vec::new()
    }
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// One line on the agent's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Event {
    /// The first line: who answers.
    Agent(AgentInfo),
    /// A step began (a hook, a restart, a health check, a switch).
    Phase(Phase),
    /// Bytes received so far.
    Progress(Progress),
    /// A line of output from one of the app's programs.
    Output(OutputLine),
    /// Something went wrong without failing the command.
    Warning(Warning),
    /// A journal record (`history`).
    Record(Record),
    /// The command succeeded; the data is its reply.
    Done(serde_json::Value),
    /// The command failed or was refused.
    Failed(Failure),
}

/// Who answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's version.
    pub version: String,
    /// The protocol it speaks.
    pub protocol: u32,
}

/// A step of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// Its name (`pre_activate`, `restart`, `health`, `activate`, …).
    pub phase: String,
    /// What it is about.
    #[serde(default)]
    pub detail: String,
}

/// How far a `receive` has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Files written.
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// A line an app's program printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    /// The hook or service it came from.
    pub stage: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line.
    pub line: String,
}

/// A warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// What went wrong.
    pub message: String,
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

/// `hello`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The agent's version.
    pub agent: String,
    /// The protocol it speaks.
    pub protocol: u32,
    /// The app root's state; `None` when nothing was received there yet.
    pub status: Option<Status>,
    /// The keys the host trusts: when there are any, it takes only releases one of
    /// them signed.
    #[serde(default)]
    pub trust: Vec<String>,
}

/// What a host trusts: `trust`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustReply {
    /// The keys, by id.
    pub keys: Vec<TrustedKey>,
    /// Whether this call changed anything.
    pub changed: bool,
}

/// A key a host trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    /// Its id.
    pub id: String,
    /// The highest signing sequence accepted from it.
    pub mark: Option<u64>,
}

/// Who signed a received release, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBy {
    /// The key's id.
    pub key: String,
    /// The signing sequence.
    pub seq: u64,
    /// For a downgrade the operator allowed: the mark it went below, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgrade: Option<String>,
}

/// The state of an app root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The app root.
    pub root: String,
    /// The release `current` points at.
    pub current: Option<Version>,
    /// The release a rollback would return to.
    pub previous: Option<Version>,
    /// Every complete release on the host.
    pub releases: Vec<ReleaseInfo>,
    /// Who holds the lock, if anyone (`held` without a holder when it has not said).
    pub lock: Option<LockInfo>,
    /// Free bytes on the app root's file system.
    pub free_bytes: u64,
    /// The last switch of `current`.
    pub last_switch: Option<Record>,
}

impl Status {
    /// The release `version`, when it is on the host.
    pub fn release(&self, version: &Version) -> Option<&ReleaseInfo> {
        self.releases.iter().find(|r| &r.version == version)
    }
}

/// A release on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    /// Its version.
    pub version: Version,
    /// Its payload digest.
    pub payload_digest: Sha256,
    /// The sha256 of the artifact it came from.
    pub artifact_sha256: Option<Sha256>,
    /// Bytes of files.
    pub unpacked_size: u64,
    /// Number of entries.
    pub entries: u64,
    /// When it was received.
    pub received: Option<Timestamp>,
    /// Whether its last health check failed (no automatic rollback chooses it).
    pub bad: bool,
}

/// The lock's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The holder, if it said who it is.
    pub holder: Option<Holder>,
}

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Process id of the holder.
    pub pid: u32,
    /// What it is doing (`ship-agent receive`, …).
    pub command: String,
    /// Since when.
    pub since: Timestamp,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}, since {})",
            self.pid, self.command, self.since
        )
    }
}

/// `receive`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// The release.
    pub version: Version,
    /// Whether it was unpacked now (`ok`) or was already here (`unchanged`).
    pub outcome: Outcome,
    /// The release's payload digest.
    pub payload_digest: Sha256,
    /// The artifact's sha256 (when it was read to the end).
    pub artifact_sha256: Option<Sha256>,
    /// Files written.
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Of those, files copied from the host's own releases (a delta).
    #[serde(default)]
    pub reused_files: u64,
    /// Of those, bytes copied from the host's own releases.
    #[serde(default)]
    pub reused_bytes: u64,
    /// The release that was current on the host when this one came.
    #[serde(default)]
    pub current: Option<Version>,
}

/// `have`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Had {
    /// The contents asked about that no release on the host has (checked).
    pub missing: Vec<Sha256>,
}

/// The reply of `activate` and `rollback`: what a switch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switched {
    /// The release that was current before, if any.
    pub from: Option<Version>,
    /// The release now current.
    pub to: Version,
    /// `ok`, or `unchanged` when it was already current.
    pub outcome: Outcome,
    /// What went wrong without undoing the switch (a failed `post_activate` hook, a
    /// prune that failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Releases removed by `activate --keep`, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<Version>,
}

/// `check`'s reply: nothing is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preflight {
    /// The environment file consulted.
    pub env_file: PathBuf,
    /// Whether it exists.
    pub env_file_found: bool,
    /// Free bytes where the releases go.
    pub free_bytes: u64,
}

/// `health`'s reply: every service with a health check passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    /// The current release.
    pub version: Version,
    /// Its services that have a health check, in the order listed.
    pub services: Vec<ServiceHealth>,
    /// Whether the journal got a health record (the release was bad and no longer
    /// is).
    pub recorded: bool,
}

/// One service's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// The service.
    pub name: String,
    /// Whether its check passed.
    pub ok: bool,
}

/// `prune`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    /// Releases removed, oldest first.
    pub removed: Vec<Version>,
    /// Releases kept.
    pub kept: Vec<Version>,
}

/// `history`'s reply, after its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReply {
    /// How many records were sent.
    pub records: usize,
}

/// `verify`'s reply: how a release on disk differs from its manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The release checked.
    pub version: Option<Version>,
    /// Entries whose kind, mode, content or target differ, with what differs.
    pub changed: Vec<(String, String)>,
    /// Paths on disk that the manifest does not list.
    pub added: Vec<String>,
    /// Manifest entries missing on disk.
    pub removed: Vec<String>,
}

impl Drift {
    /// Number of differences.
    pub fn count(&self) -> usize {
        self.changed.len() + self.added.len() + self.removed.len()
    }
}

// ---------------------------------------------------------------------------
// The journal's records (also `history`'s events and `last_switch`)
// ---------------------------------------------------------------------------

/// What an operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// An artifact was received (or refused).
    Receive,
    /// `current` was switched to a release.
    Activate,
    /// `current` was switched back.
    Rollback,
    /// Old releases were removed.
    Prune,
    /// A release's services were checked after a switch: `ok`, or `failed` (the
    /// release is then bad, and no automatic rollback chooses it).
    Health,
    /// `current` was switched back automatically after a failed health check.
    Revert,
    /// A key was added to the trust store.
    TrustAdd,
    /// A key was revoked.
    TrustRevoke,
    /// The release running was judged by its metrics during a rollout.
    Analysis,
    /// An operation kind this agent does not know (written by a newer one).
    #[serde(other)]
    Unknown,
}

impl Op {
    /// The name the journal uses.
    pub fn name(self) -> &'static str {
        match self {
            Op::Receive => "receive",
            Op::Activate => "activate",
            Op::Rollback => "rollback",
            Op::Prune => "prune",
            Op::Health => "health",
            Op::Revert => "revert",
            Op::TrustAdd => "trust-add",
            Op::TrustRevoke => "trust-revoke",
            Op::Analysis => "analysis",
            Op::Unknown => "unknown",
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It did what it was asked.
    Ok,
    /// There was nothing to do (already received, already current).
    Unchanged,
    /// It failed or was refused; `reason` says why. The host is unchanged.
    Failed,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When it ended.
    pub time: Timestamp,
    /// Who asked: `SHIP_USER` from the operator's side, else the local user.
    pub user: String,
    /// What was done.
    pub op: Op,
    /// How it ended.
    pub result: Outcome,
    /// The release concerned (received, or switched to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// For switches: the release that was current before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Version>,
    /// For receives: the release's payload digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_digest: Option<Sha256>,
    /// For receives: the artifact's sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_sha256: Option<Sha256>,
    /// For prunes: the releases removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Version>,
    /// For failures: why, with its causes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For trust changes: the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// For receives of signed releases: who signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<SignedBy>,
    /// For analyses: what was measured, and the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Judgement>,
}

// ---------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------

/// A command that failed or was refused: the closing `failed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The error, naming its subject.
    pub message: String,
    /// Its causes, outermost first.
    #[serde(default)]
    pub causes: Vec<String>,
    /// What the operator can do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Facts beside the message that a caller acts on.
    #[serde(default)]
    pub details: Option<Details>,
}

/// The kinds of [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The caller speaks another protocol version.
    ProtocolMismatch,
    /// A file-system step failed.
    Io,
    /// Another operation holds the app root's lock.
    Locked,
    /// Nothing was ever received at the app root.
    NotAnAppRoot,
    /// The artifact did not read back as its manifest says.
    Artifact,
    /// The artifact is well-formed but not acceptable on this host.
    Refused,
    /// The artifact is not the one asked for.
    WrongArtifact,
    /// The release is not on the host.
    NoRelease,
    /// Nothing to roll back to.
    NoPrevious,
    /// The environment file does not parse.
    EnvFile,
    /// What the release needs is not on the host.
    Preflight,
    /// A hook failed.
    Hook,
    /// A release was switched to but did not come up healthy.
    Unhealthy,
    /// No release is current.
    NoCurrent,
    /// The current release is not healthy now.
    UnhealthyNow,
    /// A release on disk differs from its manifest.
    Drift,
    /// A delta left out a file whose content no release on the host has.
    MissingContent,
    /// The artifact store did not give the artifact.
    Store,
    /// A signature or trust statement was not accepted.
    Untrusted,
    /// The agent's binary, or a directory above it, can be written by other accounts.
    UnsafeInstall,
    /// A kind this side does not know (sent by a newer agent).
    #[serde(other)]
    Unknown,
}

/// Facts of a [`Failure`], by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Details {
    /// What the release needs and the host lacks.
    Preflight {
        /// The release, when one was named.
        version: Option<Version>,
        /// What is missing, one phrase each (`DATABASE_URL is not set`).
        problems: Vec<String>,
        /// The host paths the release's symlinks need that the host lacks.
        lacking: Vec<Lacking>,
    },
    /// A switch to a release that did not come up healthy, and what became of it.
    Unhealthy(Unhealthy),
    /// The services of the current release that are not healthy now.
    UnhealthyNow {
        /// The current release.
        version: Version,
        /// Every service that failed, in the order listed.
        failures: Vec<ServiceFailure>,
    },
    /// Who holds the lock.
    Locked {
        /// The app root.
        root: String,
        /// The holder, when it said who it is.
        holder: Option<Holder>,
    },
}

/// A release that did not come up healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unhealthy {
    /// The release that failed.
    pub version: Version,
    /// Which service and what its check saw.
    pub failure: String,
    /// Whether this was a rollback (which is never reverted).
    pub rollback: bool,
    /// What became of it.
    pub revert: RevertOutcome,
    /// The release switched back to, when the revert was done.
    pub reverted_to: Option<Version>,
    /// Why the revert failed, or why the release it went back to is unhealthy too.
    pub revert_failure: Option<String>,
}

impl Unhealthy {
    /// The release current on the host now.
    pub fn current(&self) -> &Version {
        match (&self.revert, &self.reverted_to) {
            (RevertOutcome::Done, Some(to)) => to,
            _ => &self.version,
        }
    }
}

/// Whether an unhealthy release was switched back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevertOutcome {
    /// There was nothing to go back to, or it was a rollback.
    None,
    /// Switching back failed: the failed release stays current.
    Failed,
    /// Switched back.
    Done,
}

/// A service whose check failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFailure {
    /// The service.
    pub service: String,
    /// What its check saw.
    pub failure: String,
}

/// A host path that a release's symlinks point to and the host does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lacking {
    /// The absolute path on the host.
    pub path: String,
    /// The release's symlinks that point to it (empty when not known).
    pub needed_by: Vec<String>,
}

impl Lacking {
    /// "web3 lacks /usr/bin/python3.11, which venv/bin/python3 needs".
    pub fn sentence(&self, host: &str) -> String {
        match self.needed_by.as_slice() {
            [] => format!("{host} lacks {}", self.path),
            [one] => format!("{host} lacks {}, which {one} needs", self.path),
            many => format!("{host} lacks {}, which {} need", self.path, many.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    fn digest() -> Sha256 {
        "ab".repeat(32).parse().unwrap()
    }

    fn record() -> Record {
        Record {
            time: "2026-11-29T12:00:00Z".parse().unwrap(),
            user: "ops".into(),
            op: Op::Activate,
            result: Outcome::Ok,
            version: Some(v("v2")),
            from: Some(v("v1")),
            payload_digest: None,
            artifact_sha256: None,
            removed: Vec::new(),
            reason: None,
            key: None,
            analysis: None,
            signed_by: Some(SignedBy {
                key: "00000000000000AB".into(),
                seq: 7,
                downgrade: Some("below mark 9: CVE fix reverted".into()),
            }),
        }
    }

    /// Serializes `value` as the agent does and parses it as ship does.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let line = serde_json::to_string(&value).unwrap();
        let back: T = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value, "{line}");
    }

    fn status() -> Status {
        Status {
            root: "/srv/shop".into(),
            current: Some(v("v2")),
            previous: Some(v("v1")),
            releases: vec![ReleaseInfo {
                version: v("v2"),
                payload_digest: digest(),
                artifact_sha256: Some(digest()),
                unpacked_size: 10,
                entries: 2,
                received: Some("2026-11-29T11:00:00Z".parse().unwrap()),
                bad: false,
            }],
            lock: Some(LockInfo {
                holder: Some(Holder {
                    pid: 12,
                    command: "ship-agent receive".into(),
                    since: "2026-11-29T11:59:00Z".parse().unwrap(),
                }),
            }),
            free_bytes: 1 << 30,
            last_switch: Some(record()),
        }
    }

    #[test]
    fn every_reply_round_trips() {
        round_trip(HelloReply {
            agent: "0.1.0".into(),
            protocol: VERSION,
            status: Some(status()),
            trust: vec!["00000000000000AB".into()],
        });
        round_trip(TrustReply {
            keys: vec![TrustedKey {
                id: "00000000000000AB".into(),
                mark: Some(7),
            }],
            changed: true,
        });
        let mut judged = record();
        judged.op = Op::Analysis;
        judged.analysis = Some(Judgement {
            version: v("v2"),
            wave: "wave 1 (canary)".into(),
            verdict: "fail".into(),
            metrics: vec![MetricJudgement {
                metric: "error-rate".into(),
                hosts: vec!["web1".into()],
                values: vec![Some(0.2), None],
                bound: "<= 0.05".into(),
                verdict: "fail".into(),
                why: "1 of 2 failed".into(),
            }],
        });
        round_trip(judged);
        round_trip(TrustChange {
            action: TrustAction::Revoke,
            key: "untrusted comment: k\nRWQ\n".into(),
            statement: Some("s".into()),
            first_contact: false,
        });
        round_trip(HelloReply {
            agent: "0.1.0".into(),
            protocol: VERSION,
            status: None,
            trust: Vec::new(),
        });
        round_trip(Received {
            version: v("v2"),
            outcome: Outcome::Unchanged,
            payload_digest: digest(),
            artifact_sha256: None,
            files: 3,
            bytes: 30,
            reused_files: 2,
            reused_bytes: 20,
            current: Some(v("v1")),
        });
        round_trip(Had {
            missing: vec![digest()],
        });
        round_trip(Wanted {
            contents: vec![digest(), digest()],
        });
        round_trip(Switched {
            from: None,
            to: v("v2"),
            outcome: Outcome::Ok,
            warnings: vec!["the post_activate hook failed".into()],
            pruned: vec![v("v1")],
        });
        round_trip(Preflight {
            env_file: "/srv/shop/shared/.env".into(),
            env_file_found: false,
            free_bytes: 5,
        });
        round_trip(Checked {
            version: v("v2"),
            services: vec![ServiceHealth {
                name: "web".into(),
                ok: true,
            }],
            recorded: true,
        });
        round_trip(Pruned {
            removed: vec![v("v0")],
            kept: vec![v("v1"), v("v2")],
        });
        round_trip(HistoryReply { records: 4 });
        round_trip(Drift {
            version: Some(v("v2")),
            changed: vec![("app.py".into(), "content".into())],
            added: vec!["x".into()],
            removed: vec![],
        });
    }

    #[test]
    fn every_event_round_trips() {
        let failures = [
            Failure {
                kind: FailureKind::Preflight,
                message: "preflight failed".into(),
                causes: vec![],
                hint: None,
                details: Some(Details::Preflight {
                    version: Some(v("v2")),
                    problems: vec!["DATABASE_URL is not set".into()],
                    lacking: vec![Lacking {
                        path: "/usr/bin/python3.11".into(),
                        needed_by: vec!["venv/bin/python3".into()],
                    }],
                }),
            },
            Failure {
                kind: FailureKind::Unhealthy,
                message: "v2 failed health on web1".into(),
                causes: vec![],
                hint: None,
                details: Some(Details::Unhealthy(Unhealthy {
                    version: v("v2"),
                    failure: "web: refused".into(),
                    rollback: false,
                    revert: RevertOutcome::Done,
                    reverted_to: Some(v("v1")),
                    revert_failure: None,
                })),
            },
            Failure {
                kind: FailureKind::UnhealthyNow,
                message: "v2 is unhealthy on web1".into(),
                causes: vec![],
                hint: None,
                details: Some(Details::UnhealthyNow {
                    version: v("v2"),
                    failures: vec![ServiceFailure {
                        service: "web".into(),
                        failure: "refused".into(),
                    }],
                }),
            },
            Failure {
                kind: FailureKind::Locked,
                message: "busy".into(),
                causes: vec![],
                hint: Some("wait".into()),
                details: Some(Details::Locked {
                    root: "/srv/shop".into(),
                    holder: status().lock.unwrap().holder,
                }),
            },
            Failure {
                kind: FailureKind::Io,
                message: "cannot create /srv/shop".into(),
                causes: vec!["Permission denied (os error 13)".into()],
                hint: None,
                details: None,
            },
        ];
        let mut events = vec![
            Event::Agent(AgentInfo {
                version: "0.1.0".into(),
                protocol: VERSION,
            }),
            Event::Phase(Phase {
                phase: "restart".into(),
                detail: "web".into(),
            }),
            Event::Progress(Progress { files: 1, bytes: 2 }),
            Event::Output(OutputLine {
                stage: "pre_activate".into(),
                stream: "stderr".into(),
                line: "migrating".into(),
            }),
            Event::Warning(Warning {
                message: "odd".into(),
            }),
            Event::Record(record()),
            Event::Done(serde_json::to_value(status()).unwrap()),
        ];
        events.extend(failures.into_iter().map(Event::Failed));
        for event in events {
            round_trip(event);
        }
    }

    #[test]
    fn events_keep_their_wire_shape() {
        let line = serde_json::to_string(&Event::Phase(Phase {
            phase: "health".into(),
            detail: "web".into(),
        }))
        .unwrap();
        assert_eq!(
            line,
            r#"{"type":"phase","data":{"phase":"health","detail":"web"}}"#
        );
        let unknown = serde_json::from_str::<Event>(r#"{"type":"gossip","data":{}}"#);
        assert!(unknown.is_err());
        // A kind from a newer agent still parses.
        let failure: Failure =
            serde_json::from_str(r#"{"kind":"meteor_strike","message":"m"}"#).unwrap();
        assert_eq!(failure.kind, FailureKind::Unknown);
    }

    #[test]
    fn a_release_needs_its_files_entries_and_margin() {
        assert_eq!(disk_need(0, 0), 16 << 20);
        assert_eq!(disk_need(1000, 2), 1000 + 8192 + (16 << 20));
        assert_eq!(disk_need(u64::MAX, 1), u64::MAX);
    }

    /// Inputs the `protocol` fuzz target found (fuzz/regressions/protocol): numbers
    /// that the JSON parser rounded one way when read and the other way when read
    /// again after being written, so an event did not decode to what it encoded.
    #[test]
    fn numbers_decode_to_what_they_encode() {
        let inputs = [
            include_str!(
                "../../fuzz/regressions/protocol/crash-61a5171a783edd75b89dc317506feadd04479cc5"
            ),
            include_str!(
                "../../fuzz/regressions/protocol/crash-c0bbe6cec42b4578beef076ee54e3039718522d6"
            ),
            include_str!(
                "../../fuzz/regressions/protocol/crash-caa22ac0e23672bcb4ba5128f6e6cb9ba08084aa"
            ),
        ];
        let mut decoded = 0;
        for line in inputs.iter().flat_map(|input| input.lines()) {
            if let Ok(event) = serde_json::from_str::<Event>(line) {
                round_trip(event);
                decoded += 1;
            }
        }
        assert_eq!(decoded, 4);
        // A metric value as ship sends it to `judged` and the journal keeps it.
        round_trip(Judgement {
            version: v("v2"),
            wave: "wave 1".into(),
            verdict: "pass".into(),
            metrics: vec![MetricJudgement {
                metric: "bytes".into(),
                hosts: vec!["web1".into()],
                values: vec![Some(5.731634099051112e84), Some(9.167666666666669e62)],
                bound: "<= 1e90".into(),
                verdict: "pass".into(),
                why: "below".into(),
            }],
        });
    }

    #[test]
    fn a_lock_is_described_by_its_holder() {
        let holder = status().lock.unwrap().holder.unwrap();
        assert_eq!(
            busy("/srv/shop", Some(&holder)),
            "/srv/shop is busy: locked by pid 12 (ship-agent receive, since 2026-11-29T11:59:00Z)"
        );
        assert_eq!(
            busy("/srv/shop", None),
            "/srv/shop is busy: locked by a process that has not said who it is"
        );
    }
}
