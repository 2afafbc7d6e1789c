//! What the artifact targets share: a visitor that records what the reader showed
//! it, the properties every successful read must have, and the repair of a tar
//! stream's manifest so that mutated entry lists still reach the reader's entry
//! checks instead of stopping at the payload digest.

use std::io::{Cursor, Read};

use manifests::manifest::{FORMAT, MANIFEST_PATH, payload_digest_of};
use manifests::{EntryKind, Manifest, Sha256};
use packager::ReadError;
use packager::read::{ReadSummary, Visitor};

/// What a read showed its visitor, in order.
#[derive(Debug, Default)]
pub struct Recorder {
    /// The manifest, when it was shown.
    pub manifest: Option<Manifest>,
    /// Each entry shown (`false`) or left out of a delta (`true`), by path.
    pub seen: Vec<(String, bool)>,
    /// Bytes of file content read.
    pub bytes: u64,
}

impl Visitor for Recorder {
    type Error = ReadError;

    fn manifest(&mut self, manifest: &Manifest) -> Result<(), ReadError> {
        assert!(self.manifest.is_none(), "the manifest is shown once");
        assert!(self.seen.is_empty(), "the manifest comes first");
        self.manifest = Some(manifest.clone());
        Ok(())
    }

    fn entry(&mut self, entry: &manifests::Entry, content: &mut dyn Read) -> Result<(), ReadError> {
        // Half of each file is read here, the reader drains the rest.
        let want = match entry.kind {
            EntryKind::File { size, .. } => size / 2,
            _ => 0,
        };
        let mut buf = Vec::new();
        content.take(want).read_to_end(&mut buf)?;
        self.bytes += buf.len() as u64;
        self.seen.push((entry.path.to_string(), false));
        Ok(())
    }

    fn absent(&mut self, entry: &manifests::Entry) -> Result<(), ReadError> {
        assert!(
            matches!(entry.kind, EntryKind::File { .. }),
            "only files are left out of a delta: {entry:?}"
        );
        self.seen.push((entry.path.to_string(), true));
        Ok(())
    }
}

/// Reads `bytes` as an artifact, then as a delta, and checks what a successful read
/// promises: every manifest entry shown once, in order; the summary's manifest is the
/// one shown and the one `read_manifest` finds; the size and digest are those of the
/// bytes; and an artifact is also a delta that leaves nothing out.
pub fn check_artifact(bytes: &[u8]) {
    let mut full = Recorder::default();
    let artifact = packager::read_artifact(Cursor::new(bytes.to_vec()), &mut full, true);
    let mut delta = Recorder::default();
    let as_delta = packager::read_delta(Cursor::new(bytes.to_vec()), &mut delta, None);
    if let Ok(summary) = &as_delta {
        check_summary(summary, &delta);
    }
    let Ok(summary) = artifact else {
        return;
    };
    check_summary(&summary, &full);
    assert!(full.seen.iter().all(|(_, absent)| !absent));
    assert_eq!(summary.size, bytes.len() as u64);
    assert_eq!(summary.digest, Some(Sha256::of(bytes)));
    let first = packager::read::read_manifest(Cursor::new(bytes)).expect("its manifest reads");
    assert_eq!(first, summary.manifest);
    let as_delta = as_delta.expect("an artifact reads as a delta");
    assert_eq!(as_delta.manifest, summary.manifest);
    assert_eq!(
        delta.seen, full.seen,
        "a delta of every file leaves none out"
    );
}

/// Reads `stream` as a delta against `base` and checks the read's promises.
pub fn check_delta(stream: &[u8], base: Option<Vec<u8>>) {
    let mut seen = Recorder::default();
    if let Ok(summary) = packager::read_delta(Cursor::new(stream.to_vec()), &mut seen, base) {
        check_summary(&summary, &seen);
    }
}

fn check_summary(summary: &ReadSummary, recorder: &Recorder) {
    assert_eq!(recorder.manifest.as_ref(), Some(&summary.manifest));
    let listed: Vec<&str> = summary
        .manifest
        .entries
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    let seen: Vec<&str> = recorder.seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(seen, listed, "every entry, once, in the manifest's order");
    assert!(recorder.bytes <= summary.manifest.unpacked_size);
}

/// `tar` with its first entry, when it is a manifest that parses, made consistent
/// with itself (entry count, unpacked size, payload digest) and written back with a
/// header of its new size; `tar` as it is otherwise.
pub fn repair_manifest(tar: &[u8]) -> Vec<u8> {
    repaired(tar).unwrap_or_else(|| tar.to_vec())
}

fn repaired(tar: &[u8]) -> Option<Vec<u8>> {
    let mut header = tar::Header::new_old();
    header.as_mut_bytes().copy_from_slice(tar.get(..512)?);
    if header.path_bytes().as_ref() != MANIFEST_PATH.as_bytes()
        || header.entry_type() != tar::EntryType::Regular
    {
        return None;
    }
    let size = usize::try_from(header.entry_size().ok()?).ok()?;
    let json = tar.get(512..512usize.checked_add(size)?)?;
    let rest = tar
        .get(512 + size.div_ceil(512) * 512..)
        .unwrap_or_default();
    let mut manifest: Manifest = serde_json::from_slice(json).ok()?;
    manifest.format = FORMAT;
    manifest.entry_count = manifest.entries.len() as u64;
    manifest.unpacked_size = manifest
        .entries
        .iter()
        .try_fold(0u64, |sum, e| match e.kind {
            EntryKind::File { size, .. } => sum.checked_add(size),
            _ => Some(sum),
        })?;
    manifest.payload_digest = payload_digest_of(&manifest.entries, &manifest.host_requirements);
    let json = manifest.to_json();
    header.set_size(json.len() as u64);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(&json);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(rest);
    Some(out)
}
