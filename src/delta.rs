//! Delta transfers: what a host that keeps releases is sent. ship asks the host
//! which of the release's file contents it lacks (`have`: it answers from its
//! releases' manifests, hashing every copy it offers), then sends a delta stream —
//! the whole manifest, the directories and symlinks, and only the missing files —
//! which the host checks file by file like an artifact, copying the rest from its
//! releases. A delta is built once for every distinct answer and shared by the hosts
//! that gave it. When most of the release is missing the whole artifact goes.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::sync::{Arc, Mutex};

use manifests::{EntryKind, Manifest, Sha256};

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
}

/// The deltas of one artifact, built as hosts need them.
#[derive(Debug, Default)]
pub struct Deltas {
    built: Mutex<HashMap<BTreeSet<Sha256>, Arc<Delta>>>,
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
    /// What a host that lacks `missing` of the artifact at `path` (with `manifest`)
    /// is sent.
    pub fn transfer(
        &self,
        path: &std::path::Path,
        manifest: &Manifest,
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
        // One build per distinct answer: the lock is held while it is built, so
        // hosts that gave the same answer wait for it rather than build it again.
        let mut built = self.built.lock().expect("not poisoned");
        if let Some(delta) = built.get(&missing) {
            return Ok(Transfer::Delta(delta.clone()));
        }
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
        )
        .map_err(|e| local(format!("cannot make a delta of {}", path.display()), &e))?;
        tracing::debug!(
            bytes = bytes.len(),
            files = size.files_sent,
            reused = size.files_reused,
            "delta built"
        );
        let delta = Arc::new(Delta { bytes, size });
        built.insert(missing, delta.clone());
        Ok(Transfer::Delta(delta))
    }
}
