//! Delta transfers: what a host that keeps releases is sent. ship asks the host
//! which of the release's file contents it lacks (`have`: it answers from its
//! releases' manifests, hashing every copy it offers), then sends a delta stream —
//! the whole manifest, the directories and symlinks, and only the missing files —
//! which the host checks file by file like an artifact, copying the rest from its
//! releases. A delta is built once for every distinct answer and shared by the hosts
//! that gave it. When most of the release is missing the whole artifact goes.
//!
//! The manifest travels whole, and for a large release it would be most of a small
//! delta; so when ship has the artifact of a release the host keeps (in the fleet's
//! artifacts directory), the manifest's frame is compressed against that release's
//! manifest (`zstd --patch-from` style), which the host checks it has byte for byte.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::sync::{Arc, Mutex};

use agent::protocol::Status;
use manifests::{EntryKind, Manifest, Sha256, Version};

use crate::results::{ErrorKind, HostError, Step};

/// When more than this share of a release's bytes is missing on a host, it gets
/// the whole artifact: the delta would save little, and costs building.
const MOST: f64 = 0.5;

/// zstd level of delta streams (as `ship pack`'s default).
const LEVEL: i32 = 3;

/// What a host is sent.
#[derive(Debug, Clone)]
pub enum Transfer {
    /// The artifact.
    Full,
    /// A delta stream.
    Delta(Arc<Delta>),
}

/// A delta stream and what it carries.
#[derive(Debug)]
pub struct Delta {
    /// The stream.
    pub bytes: Vec<u8>,
    /// What it carries and leaves to the host.
    pub size: packager::delta::DeltaSize,
    /// The release whose manifest its manifest's frame was compressed against.
    pub base: Option<agent::protocol::Base>,
}

/// The manifest of a release ship has the artifact of, as the base of a delta: its
/// payload digest and its bytes.
type BaseManifest = Arc<(Sha256, Vec<u8>)>;

/// What ship found of a release's manifest (`None`: not its artifact).
type BaseBytes = Option<BaseManifest>;

/// What a delta is made for: the contents a host lacks, and the release whose
/// manifest is its base.
type DeltaKey = (BTreeSet<Sha256>, Option<Version>);

/// The deltas of one artifact, built as hosts need them.
#[derive(Debug, Default)]
pub struct Deltas {
    /// Where the artifacts of other releases are (for bases).
    pub dir: std::path::PathBuf,
    built: Mutex<HashMap<DeltaKey, Arc<Delta>>>,
    bases: Mutex<HashMap<Version, BaseBytes>>,
}

/// The distinct file contents of `manifest`.
pub fn contents(manifest: &Manifest) -> Vec<Sha256> {
    let distinct: BTreeSet<&Sha256> = manifest
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::File { sha256, .. } => Some(sha256),
            _ => None,
        })
        .collect();
    distinct.into_iter().cloned().collect()
}

impl Deltas {
    /// Deltas of an artifact; the artifacts of other releases are in `dir`.
    pub fn new(dir: std::path::PathBuf) -> Deltas {
        Deltas {
            dir,
            ..Deltas::default()
        }
    }

    /// The manifest bytes of a release the host of `status` keeps and ship has the
    /// artifact of (its current release first), with that release.
    fn base(&self, manifest: &Manifest, status: &Status) -> Option<(Version, BaseManifest)> {
        let mut versions: Vec<&Version> = status.current.iter().collect();
        versions.extend(status.releases.iter().map(|r| &r.version));
        for version in versions {
            let Some(info) = status.release(version) else {
                continue;
            };
            let mut bases = self.bases.lock().expect("not poisoned");
            let base = bases
                .entry(version.clone())
                .or_insert_with(|| {
                    let path = self
                        .dir
                        .join(packager::artifact_file_name(&manifest.name, version));
                    let file = File::open(path).ok()?;
                    let theirs = packager::read::read_manifest(BufReader::new(file)).ok()?;
                    Some(Arc::new((theirs.payload_digest.clone(), theirs.to_json())))
                })
                .clone();
            // This host's release must be of the same payload (its manifest's bytes
            // are then checked on the host by their sha256).
            if let Some(base) = base.filter(|base| base.0 == info.payload_digest) {
                return Some((version.clone(), base));
            }
        }
        None
    }

    /// What a host that lacks `missing` of the artifact at `path` (with `manifest`),
    /// and whose status is `status`, is sent.
    pub fn transfer(
        &self,
        path: &std::path::Path,
        manifest: &Manifest,
        status: &Status,
        missing: Vec<Sha256>,
    ) -> Result<Transfer, HostError> {
        let missing: BTreeSet<Sha256> = missing.into_iter().collect();
        let missing_bytes: u64 = manifest
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::File { sha256, size } if missing.contains(sha256) => Some(*size),
                _ => None,
            })
            .sum();
        if missing_bytes as f64 > MOST * manifest.unpacked_size as f64 {
            return Ok(Transfer::Full);
        }
        let base = self.base(manifest, status);
        let key = (missing, base.as_ref().map(|(version, _)| version.clone()));
        // One build per distinct answer: the lock is held while it is built, so
        // hosts that gave the same answer wait for it rather than build it again.
        let mut built = self.built.lock().expect("not poisoned");
        if let Some(delta) = built.get(&key) {
            return Ok(Transfer::Delta(delta.clone()));
        }
        let missing = &key.0;
        let local = |what: String, e: &dyn std::error::Error| {
            let mut error = HostError::new(Step::Transfer, ErrorKind::Local, what);
            error.causes = agent::protocol::causes(e);
            error.causes.insert(0, e.to_string());
            error
        };
        let file =
            File::open(path).map_err(|e| local(format!("cannot open {}", path.display()), &e))?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let (bytes, size) = packager::delta::write_delta(
            BufReader::with_capacity(1 << 20, file),
            &|content| missing.contains(content),
            Vec::new(),
            LEVEL,
            threads,
            base.as_ref().map(|(_, bytes)| bytes.1.as_slice()),
        )
        .map_err(|e| local(format!("cannot make a delta of {}", path.display()), &e))?;
        tracing::debug!(
            bytes = bytes.len(),
            files = size.files_sent,
            reused = size.files_reused,
            "delta built"
        );
        let delta = Arc::new(Delta {
            bytes,
            size,
            base: base.map(|(version, bytes)| agent::protocol::Base {
                version,
                sha256: Sha256::of(&bytes.1),
            }),
        });
        built.insert(key, delta.clone());
        Ok(Transfer::Delta(delta))
    }
}
