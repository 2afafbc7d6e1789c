//! Errors of packing and of reading artifacts. Each names the file or entry it is
//! about; the cause is kept as a source, not pasted into the message.

use std::io;
use std::path::PathBuf;

use manifests::manifest::{ManifestError, PathError};
use manifests::{Finding, Sha256};

/// Why `pack` failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The directory to pack is missing or not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// A file or directory of the tree could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The tree holds something that is not a directory, file or symlink.
    #[error("{} is {what}: only directories, regular files and symlinks can be packed", path.display())]
    Unsupported {
        /// The offending path.
        path: PathBuf,
        /// What it is ("a socket", "a FIFO", …).
        what: &'static str,
    },
    /// A name in the tree is not UTF-8 (the manifest is JSON).
    #[error("{}: file names and symlink targets must be valid UTF-8", path.display())]
    NotUtf8 {
        /// The offending path.
        path: PathBuf,
    },
    /// A name in the tree cannot be an entry path.
    #[error("{} cannot be packed", path.display())]
    BadPath {
        /// The offending path.
        path: PathBuf,
        /// Why.
        #[source]
        source: PathError,
    },
    /// A file changed size while it was read.
    #[error("{} changed while it was being packed (expected {expected} bytes)", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// The size seen when the tree was listed.
        expected: u64,
    },
    /// A file read twice (to hash it, then to archive it) gave different bytes.
    #[error("{} changed while it was being packed: its bytes differ from those hashed for the manifest", path.display())]
    ChangedContent {
        /// The file.
        path: PathBuf,
    },
    /// `--strict` and the tree is not relocatable.
    #[error("{} relocatability finding(s) and --strict is set: {}", findings.len(), list(findings))]
    NotRelocatable {
        /// Every finding.
        findings: Vec<Finding>,
    },
    /// An entry could not be added to the artifact being written.
    #[error("cannot add {} to the artifact", path.display())]
    Add {
        /// The file or directory being added.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The tree and its `ship.toml` do not make a valid release.
    #[error("{} does not make a valid release", dir.display())]
    Invalid {
        /// The packed directory.
        dir: PathBuf,
        /// What is wrong.
        #[source]
        source: ManifestError,
    },
    /// The artifact or its sidecar could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The output file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn list(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why an artifact did not read back as its manifest says.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes could not be read or decompressed: truncated, corrupt, or not zstd.
    #[error("the artifact is unreadable (truncated, corrupt or not a ship artifact)")]
    Io(#[source] io::Error),
    /// The first entry is not the manifest.
    #[error("the first entry is {found:?}, not .ship/manifest.json: not a ship artifact")]
    NoManifest {
        /// What came first instead (empty when the archive had no entry).
        found: String,
    },
    /// The manifest entry is larger than any real manifest.
    #[error("the manifest entry declares {size} bytes, more than the {max} allowed")]
    ManifestTooLarge {
        /// Declared size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The manifest document is not acceptable.
    #[error("the artifact's manifest is invalid")]
    Manifest(#[source] ManifestError),
    /// A tar entry of a type ship never writes.
    #[error("entry {path:?} is {what}: only directories, regular files and symlinks are accepted")]
    UnsupportedEntry {
        /// The entry's name.
        path: String,
        /// What it is ("a hard link", …).
        what: String,
    },
    /// A PAX extended header ship does not accept.
    #[error("entry {path:?} has an unacceptable PAX header: {reason}")]
    BadPax {
        /// The entry the header precedes, as far as known.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An archive entry that the manifest does not list.
    #[error("entry {path:?} is in the archive but not in the manifest")]
    Unexpected {
        /// The entry's name.
        path: String,
    },
    /// A manifest entry that the archive does not hold.
    #[error("entry {path:?} is in the manifest but missing from the archive")]
    Missing {
        /// The entry's path.
        path: String,
    },
    /// An entry whose header disagrees with the manifest.
    #[error("entry {path:?} does not match the manifest: {what}")]
    Mismatch {
        /// The entry's path.
        path: String,
        /// Which field, and both values.
        what: String,
    },
    /// A file whose content does not hash to the manifest's digest.
    #[error("file {path:?} is corrupt: its sha256 is {actual}, the manifest says {expected}")]
    Digest {
        /// The file's path.
        path: String,
        /// From the manifest.
        expected: Sha256,
        /// Computed.
        actual: Sha256,
    },
    /// Bytes after the end of the tar archive.
    #[error("there is data after the end of the archive")]
    TrailingData,
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}
