//! `receive`: an artifact streams in on stdin and becomes `releases/<version>/`, or
//! leaves no trace but a journal line.
//!
//! The artifact is read once, through the packager's reader, which checks every entry
//! against the manifest as it goes by; this module is its visitor and writes what it
//! is shown into `.ship/incoming/<version>.<nonce>/`, each file with the archive's
//! time (the manifest's `created`), as tar would. Before anything is written the
//! manifest is checked against the host: no symlink may be absolute (but for the
//! manifest's host requirements) or lead out of the release, the disk must have room,
//! and a release of that version must not already be here with other content. Once the whole artifact has verified (and matched
//! `--expect-digest`), the file system is flushed and the staging directory is renamed
//! into `releases/`: a release directory only ever appears complete.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use manifests::manifest::{self, Resolution};
use manifests::{Entry, EntryKind, Manifest, Sha256, Timestamp, Version};
use packager::{ReadError, Visitor};
use serde::{Deserialize, Serialize};

use crate::crash::checkpoint;
use crate::error::AgentError;
use crate::fsutil;
use crate::journal;
use crate::layout::{self, AppRoot};
use crate::output::{Output, human_bytes};
use crate::protocol::{self, Event, Op, Outcome, Progress, Received, Record};
use crate::reuse::{Stamp, Stock};

/// How often progress events are sent.
const PROGRESS_EVERY: u64 = 32 << 20;

/// Facts about a release and the artifact it came from, kept beside its manifest so
/// that `status` need not parse every manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactFacts {
    /// SHA-256 of the artifact file, when it was checked.
    pub sha256: Option<Sha256>,
    /// The release's payload digest.
    pub payload_digest: Sha256,
    /// Bytes of files in the release.
    #[serde(default)]
    pub unpacked_size: u64,
    /// Entries in the release.
    #[serde(default)]
    pub entries: u64,
    /// Its size in bytes.
    pub size: u64,
    /// When this host received it.
    pub received: Timestamp,
    /// Who signed it, when it was received signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<protocol::SignedBy>,
}

/// What the received artifact must be.
#[derive(Debug, Default)]
pub struct Expect {
    /// The artifact's sha256 (costs a hash of the compressed bytes).
    pub digest: Option<Sha256>,
    /// The release's payload digest: as strong a check of the content, for free.
    pub payload: Option<Sha256>,
    /// The stream is a delta: the files it leaves out come from this host's
    /// releases.
    pub delta: bool,
    /// The release whose manifest the delta's manifest frame was compressed against.
    pub base: Option<protocol::Base>,
    /// The signature the host accepted for it, whose claim the manifest must match.
    pub signed: Option<crate::trust::Admitted>,
}

/// Receives the artifact from `input` into `root` (whose lock the caller holds).
pub fn receive(
    root: &AppRoot,
    input: impl Read + Send + 'static,
    expect: &Expect,
    out: Output,
) -> Result<Received, AgentError> {
    let started = Instant::now();
    let current = crate::releases::current(root);
    // Entries are created with exactly the manifest's modes (and nothing else
    // creates files in this process meanwhile).
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let mut unpack = Unpack {
        root,
        expect_payload: expect.payload.clone(),
        signed: expect.signed.as_ref(),
        staging: None,
        version: None,
        files: 0,
        bytes: 0,
        next_progress: PROGRESS_EVERY,
        out,
        buf: vec![0u8; 1 << 20],
        mtime: std::time::UNIX_EPOCH,
        stock: None,
        delta: expect.delta,
        reused_files: 0,
        reused_bytes: 0,
        stamps: HashMap::new(),
    };
    let result = if expect.delta {
        match expect
            .base
            .as_ref()
            .map(|base| base_bytes(root, base))
            .transpose()
        {
            Ok(base) => packager::read_delta(input, &mut unpack, base),
            Err(e) => Err(Stop::Failed(e)),
        }
    } else {
        packager::read_artifact(input, &mut unpack, expect.digest.is_some())
    };
    let staging = unpack.staging.take();
    let outcome = match result {
        Ok(summary) => {
            finish(root, staging.as_deref(), &summary, &unpack.stamps, expect).map(|()| Received {
                version: summary.manifest.version.clone(),
                outcome: Outcome::Ok,
                payload_digest: summary.manifest.payload_digest.clone(),
                artifact_sha256: summary.digest.clone(),
                files: unpack.files,
                bytes: unpack.bytes,
                reused_files: unpack.reused_files,
                reused_bytes: unpack.reused_bytes,
                current: current.clone(),
            })
        }
        Err(Stop::AlreadyPresent(manifest)) => Ok(Received {
            version: manifest.version.clone(),
            outcome: Outcome::Unchanged,
            payload_digest: manifest.payload_digest.clone(),
            artifact_sha256: None,
            files: 0,
            bytes: 0,
            reused_files: 0,
            reused_bytes: 0,
            current,
        }),
        Err(Stop::Failed(e)) => Err(e),
    };
    let mut record = Record::new(Op::Receive, Outcome::Ok);
    record.version = unpack.version.clone();
    record.signed_by = expect
        .signed
        .as_ref()
        .map(crate::trust::Admitted::signed_by);
    match &outcome {
        Ok(received) => {
            record.result = received.outcome;
            record.payload_digest = Some(received.payload_digest.clone());
            record.artifact_sha256 = received.artifact_sha256.clone();
            if received.outcome == Outcome::Unchanged {
                out.say(format!(
                    "release {} is already here with the same content; nothing to do",
                    received.version
                ));
            } else {
                out.say(format!(
                    "received {}: {} files, {} in {:.1}s",
                    received.version,
                    received.files,
                    human_bytes(received.bytes),
                    started.elapsed().as_secs_f64()
                ));
            }
        }
        Err(e) => {
            if let Some(staging) = &staging {
                let _ = fsutil::remove_tree(staging);
            }
            record.result = Outcome::Failed;
            record.reason = Some(crate::protocol::chain(e));
        }
    }
    journal::append(&root.journal(), &record)?;
    outcome
}

/// The bytes of `base`'s manifest on this host, when they are the ones the delta
/// was made against.
fn base_bytes(root: &AppRoot, base: &protocol::Base) -> Result<Vec<u8>, AgentError> {
    let bytes = fs::read(root.release_manifest(&base.version)).ok();
    match bytes {
        Some(bytes) if Sha256::of(&bytes) == base.sha256 => Ok(bytes),
        _ => Err(AgentError::NoBase {
            version: base.version.clone(),
        }),
    }
}

/// After the artifact verified: checks the expected digest, records the artifact,
/// flushes everything and moves the release into place.
fn finish(
    root: &AppRoot,
    staging: Option<&Path>,
    summary: &packager::ReadSummary,
    stamps: &HashMap<String, Stamp>,
    expect: &Expect,
) -> Result<(), AgentError> {
    if let (Some(expected), Some(actual)) = (&expect.digest, &summary.digest)
        && expected != actual
    {
        return Err(AgentError::WrongArtifact {
            expected: expected.clone(),
            actual: actual.clone(),
        });
    }
    let staging = staging.expect("a verified artifact was staged");
    let manifest = &summary.manifest;
    let meta = staging.join(".ship");
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&meta)
        .map_err(|e| AgentError::io("cannot create", &meta, e))?;
    let facts = ArtifactFacts {
        sha256: summary.digest.clone(),
        payload_digest: manifest.payload_digest.clone(),
        unpacked_size: manifest.unpacked_size,
        entries: manifest.entry_count,
        size: summary.size,
        received: Timestamp::now(),
        signed_by: expect
            .signed
            .as_ref()
            .map(crate::trust::Admitted::signed_by),
    };
    write_record(&AppRoot::manifest_in(staging), &manifest.to_json())?;
    write_record(
        &AppRoot::artifact_in(staging),
        &serde_json::to_vec_pretty(&facts).expect("facts serialize"),
    )?;
    crate::lifecycle::link_shared(staging, &manifest.behaviour)
        .map_err(|e| AgentError::io("cannot link the shared paths into", staging, e))?;
    crate::reuse::record_stamps(staging, stamps)?;
    checkpoint("receive:written");
    fsutil::sync_filesystem(staging).map_err(|e| AgentError::io("cannot flush", staging, e))?;
    checkpoint("receive:synced");
    let release = root.release(&manifest.version);
    fs::rename(staging, &release)
        .map_err(|e| AgentError::io("cannot move into place", &release, e))?;
    fsutil::fsync_dir(&root.releases())
        .map_err(|e| AgentError::io("cannot flush", root.releases(), e))?;
    checkpoint("receive:renamed");
    Ok(())
}

/// Writes one of a release's records (its manifest, facts, stamps) as a new file
/// only its owner may change (`receive` runs with a zero umask, so modes are given).
pub(crate) fn write_record(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc_flags::O_NOFOLLOW)
        .open(path)
        .map_err(|e| AgentError::io("cannot create", path, e))?;
    file.write_all(bytes)
        .map_err(|e| AgentError::io("cannot write", path, e))
}

/// Why reading stopped early.
enum Stop {
    /// The release is already here with this payload: nothing to do.
    AlreadyPresent(Box<Manifest>),
    /// A real failure.
    Failed(AgentError),
}

impl From<ReadError> for Stop {
    fn from(e: ReadError) -> Stop {
        Stop::Failed(AgentError::Artifact(e))
    }
}

impl From<AgentError> for Stop {
    fn from(e: AgentError) -> Stop {
        Stop::Failed(e)
    }
}

/// The reader's visitor: checks the manifest against the host, then writes each
/// verified entry into the staging directory.
struct Unpack<'a> {
    root: &'a AppRoot,
    expect_payload: Option<Sha256>,
    signed: Option<&'a crate::trust::Admitted>,
    staging: Option<PathBuf>,
    version: Option<Version>,
    files: u64,
    bytes: u64,
    next_progress: u64,
    out: Output,
    buf: Vec<u8>,
    /// The modification time of every file: the manifest's `created`.
    mtime: std::time::SystemTime,
    /// For a delta: the contents of this host's releases.
    stock: Option<Stock>,
    delta: bool,
    reused_files: u64,
    reused_bytes: u64,
    /// The stamp of every file written, as it was written.
    stamps: HashMap<String, Stamp>,
}

impl Visitor for Unpack<'_> {
    type Error = Stop;

    fn manifest(&mut self, manifest: &Manifest) -> Result<(), Stop> {
        let version = &manifest.version;
        self.version = Some(version.clone());
        self.mtime =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(manifest.created.unix());
        let refuse = |reason: String| AgentError::Refused {
            version: version.clone(),
            reason,
        };
        if let Some(signed) = self.signed {
            signed.check(manifest)?;
        }
        if let Some(expected) = &self.expect_payload
            && *expected != manifest.payload_digest
        {
            return Err(refuse(format!(
                "its payload digest is {}, expected {expected}",
                manifest.payload_digest
            ))
            .into());
        }
        if let Some(present) = read_release_manifest(self.root, version)? {
            if present.payload_digest == manifest.payload_digest {
                return Err(Stop::AlreadyPresent(Box::new(present)));
            }
            return Err(refuse(protocol::different_content(
                version,
                &present.payload_digest,
                &manifest.payload_digest,
            ))
            .into());
        }
        check_symlinks(manifest).map_err(refuse)?;
        let need = protocol::disk_need(manifest.unpacked_size, manifest.entry_count);
        let free = fsutil::free_bytes(self.root.path())
            .map_err(|e| AgentError::io("cannot measure free space on", self.root.path(), e))?;
        if let Some(why) = protocol::no_room(&self.root.path().display().to_string(), need, free) {
            return Err(refuse(why).into());
        }
        if self.delta {
            self.stock = Some(Stock::of(self.root, self.out)?);
        }
        let staging = self.root.staging(version, &layout::nonce());
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&staging)
            .map_err(|e| AgentError::io("cannot create", &staging, e))?;
        self.staging = Some(staging);
        self.out.say(format!(
            "receiving {} {version}: {} entries, {}",
            manifest.name,
            manifest.entry_count,
            human_bytes(manifest.unpacked_size)
        ));
        checkpoint("receive:staging");
        Ok(())
    }

    fn entry(&mut self, entry: &Entry, content: &mut dyn Read) -> Result<(), Stop> {
        let staging = self.staging.as_ref().expect("staged before entries");
        let path = staging.join(entry.path.as_str());
        let fail = |action, e| AgentError::io(action, &path, e);
        match &entry.kind {
            EntryKind::Dir => {
                fs::DirBuilder::new()
                    .mode(entry.mode.bits())
                    .create(&path)
                    .map_err(|e| fail("cannot create", e))?;
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &path).map_err(|e| fail("cannot create", e))?;
            }
            EntryKind::File { .. } => {
                // O_EXCL and O_NOFOLLOW: never write through anything already there.
                // The mode is exact: `receive` runs with a zero umask.
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(entry.mode.bits())
                    .custom_flags(libc_flags::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| fail("cannot create", e))?;
                let written = copy(content, &mut file, &mut self.buf).map_err(|e| match e {
                    Copy::Read(e) => AgentError::Artifact(ReadError::Io(e)),
                    Copy::Write(e) => fail("cannot write", e),
                })?;
                // The time the archive gives every entry, as tar sets it: what
                // compiled bytecode expects of its source (see docs/FORMAT.md).
                file.set_modified(self.mtime)
                    .map_err(|e| fail("cannot set the time of", e))?;
                let meta = file.metadata().map_err(|e| fail("cannot stat", e))?;
                self.stamps.insert(entry.path.to_string(), Stamp::of(&meta));
                self.written(written);
            }
        }
        Ok(())
    }

    fn absent(&mut self, entry: &Entry) -> Result<(), Stop> {
        let staging = self.staging.as_ref().expect("staged before entries");
        let stock = self.stock.as_ref().expect("a delta has its stock");
        let path = staging.join(entry.path.as_str());
        let Some(stamp) = stock.copy_into(entry, &path, self.mtime, self.out)? else {
            return Err(AgentError::MissingContent {
                version: self.version.clone().expect("the manifest came first"),
                path: entry.path.to_string(),
            }
            .into());
        };
        self.stamps.insert(entry.path.to_string(), stamp);
        let size = match entry.kind {
            EntryKind::File { size, .. } => size,
            _ => 0,
        };
        if self.reused_files == 0 {
            checkpoint("receive:reusing");
        }
        self.reused_files += 1;
        self.reused_bytes += size;
        self.written(size);
        Ok(())
    }
}

impl Unpack<'_> {
    /// Counts a file of `bytes` written, and tells the caller every so often.
    fn written(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
        if self.bytes >= self.next_progress {
            self.next_progress = self.bytes + PROGRESS_EVERY;
            self.out.event(&Event::Progress(Progress {
                files: self.files,
                bytes: self.bytes,
            }));
        }
    }
}

/// `O_NOFOLLOW` without a libc dependency: the value is fixed by the Linux ABI.
mod libc_flags {
    pub const O_NOFOLLOW: i32 = nix::fcntl::OFlag::O_NOFOLLOW.bits();
}

enum Copy {
    Read(io::Error),
    Write(io::Error),
}

fn copy(from: &mut dyn Read, to: &mut File, buf: &mut [u8]) -> Result<u64, Copy> {
    let mut total = 0;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Copy::Write)?;
        total += n as u64;
    }
}

/// Refuses symlinks that are absolute or lead out of the release once the release's
/// own symlinks are followed, unless what they lead to is one of the manifest's host
/// requirements (which `Manifest::check` has tied to those very links and targets).
fn check_symlinks(manifest: &Manifest) -> Result<(), String> {
    let links = manifest::symlinks(&manifest.entries);
    let declared: HashSet<&str> = manifest
        .host_requirements
        .iter()
        .map(|required| required.link.as_str())
        .collect();
    let mut paths: Vec<&&str> = links.keys().collect();
    paths.sort();
    for path in paths {
        let target = links[*path];
        let Some(refused) = manifest::refused_link(&links, &declared, path) else {
            continue;
        };
        let problem = match refused {
            Resolution::Inside(_) => continue,
            Resolution::Absolute if target.starts_with('/') => {
                "is absolute, and not a host requirement of the manifest"
            }
            Resolution::Absolute => "leads through an absolute symlink",
            Resolution::Escapes => "leads outside the release",
            Resolution::TooManyHops => "never resolves (a loop of symlinks)",
        };
        return Err(format!("symlink {path} -> {target} {problem}"));
    }
    Ok(())
}

/// The manifest of the release `version` on this host, if it is here.
pub fn read_release_manifest(
    root: &AppRoot,
    version: &Version,
) -> Result<Option<Manifest>, AgentError> {
    let path = root.release_manifest(version);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AgentError::io("cannot read", &path, e)),
    };
    Manifest::from_json(&bytes).map(Some).map_err(|e| {
        AgentError::io(
            "cannot use the manifest",
            &path,
            io::Error::new(io::ErrorKind::InvalidData, e),
        )
    })
}

/// The artifact facts of the release `version`, when recorded.
pub fn read_artifact_facts(root: &AppRoot, version: &Version) -> Option<ArtifactFacts> {
    let bytes = fs::read(root.release_artifact(version)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
