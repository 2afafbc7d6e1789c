//! The release manifest: the first entry of every artifact, `.ship/manifest.json`.
//!
//! It lists every entry of the packed tree in the order the archive holds them and
//! says what each must be (kind, mode, size, sha256 or symlink target). Readers check
//! the archive against it entry by entry; `payload_digest` condenses the whole list
//! into one value that identifies the content whatever the compression.
//!
//! The format is versioned (`"format": 1`) and tolerant: fields this version does not
//! know are ignored, a newer format number is refused with a message naming both.
//! `docs/FORMAT.md` describes it for readers outside ship.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest;

use crate::behaviour::Behaviour;
use crate::ids::{AppName, Sha256, Version};
use crate::time::Timestamp;

/// The manifest format this version of ship writes and reads.
pub const FORMAT: u32 = 1;

/// Where the manifest sits inside the artifact (always the first entry).
pub const MANIFEST_PATH: &str = ".ship/manifest.json";

/// The top-level name reserved for ship's own metadata inside an artifact.
pub const RESERVED_DIR: &str = ".ship";

/// Largest manifest a reader accepts, so a hostile header cannot make it allocate
/// without bound.
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// Longest entry path or symlink target accepted (Linux `PATH_MAX`).
const MAX_PATH_BYTES: usize = 4096;

/// How many symlinks a path may pass through before resolution gives up (as Linux).
const MAX_SYMLINK_HOPS: usize = 40;

/// A release manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version; see [`FORMAT`].
    pub format: u32,
    /// Application name.
    pub name: AppName,
    /// Release version.
    pub version: Version,
    /// When the release was packed: `SOURCE_DATE_EPOCH`, or the fixed epoch.
    pub created: Timestamp,
    /// The git commit the tree came from, when it was in a git work tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// How the payload was compressed.
    pub compression: Compression,
    /// Number of entries in `entries`.
    pub entry_count: u64,
    /// Sum of the sizes of all regular files.
    pub unpacked_size: u64,
    /// Digest of the entry list; see [`payload_digest`].
    pub payload_digest: Sha256,
    /// Things in the tree that may break when it is unpacked elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relocatability: Vec<Finding>,
    /// What `ship pack` rewrote so that the tree runs wherever it is unpacked; the
    /// entries describe the rewritten bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrites: Vec<Rewrite>,
    /// Symlinks that point out of the release to files of the host (a virtualenv's
    /// `bin/python3 -> /usr/bin/python3.11`), sorted by link. Only these may be
    /// absolute; preflight checks that every target exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_requirements: Vec<HostRequirement>,
    /// How the app lives on a host (shared paths, hooks, services), from its
    /// `ship.toml` at pack time.
    #[serde(default, skip_serializing_if = "Behaviour::is_empty")]
    pub behaviour: Behaviour,
    /// Every directory, file and symlink, sorted by path (bytewise).
    pub entries: Vec<Entry>,
}

/// Where the packed tree came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The `HEAD` commit of the work tree.
    pub commit: String,
    /// Whether the packed directory differed from that commit.
    pub dirty: bool,
}

/// The compression of the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compression {
    /// Always `"zstd"` in format 1.
    pub algorithm: String,
    /// The libzstd version that compressed it (output can differ between versions).
    pub zstd_version: String,
    /// The compression level.
    pub level: i32,
}

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path inside the release, `/`-separated.
    pub path: EntryPath,
    /// Permission bits: `0755` for directories and executables, `0644` for other
    /// files, `0777` for symlinks.
    pub mode: Mode,
    /// What the entry is, with its kind-specific facts.
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// The kind of an entry and what identifies its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// Length in bytes.
        size: u64,
        /// Digest of the content.
        sha256: Sha256,
    },
    /// A symbolic link.
    Symlink {
        /// The link's target, exactly as stored.
        target: String,
    },
}

impl EntryKind {
    /// The kind's name as the manifest spells it.
    pub fn name(&self) -> &'static str {
        match self {
            EntryKind::Dir => "dir",
            EntryKind::File { .. } => "file",
            EntryKind::Symlink { .. } => "symlink",
        }
    }
}

/// A relocatability finding: something that ties the tree to where it was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The entry concerned.
    pub path: String,
    /// What kind of problem it is.
    pub kind: FindingKind,
    /// Human explanation, naming the offending value.
    pub detail: String,
}

/// The kinds of relocatability findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// A symlink with an absolute target.
    AbsoluteSymlink,
    /// A symlink whose target leaves the tree.
    EscapingSymlink,
    /// A `#!` line naming the build directory.
    BuildPathInShebang,
    /// A text file containing the build directory's absolute path.
    BuildPathInText,
    /// An ELF RPATH or RUNPATH entry that is an absolute path inside the build directory.
    ElfRpath,
}

/// A change `ship pack` made to an entry so that it runs from any release path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    /// The entry concerned.
    pub path: String,
    /// What kind of rewrite it is.
    pub kind: RewriteKind,
    /// What was rewritten, and into what.
    pub what: String,
    /// Why it had to be.
    pub why: String,
}

/// The kinds of rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewriteKind {
    /// A `#!` line naming an interpreter by its build path became a `sh` preamble
    /// that runs the interpreter found beside the script's real location.
    Shebang,
    /// A virtualenv activation script finds its directory when it is sourced.
    ActivateScript,
    /// A `pyvenv.cfg` line naming the build directory was removed.
    PyvenvCfg,
    /// A `.pth` line naming a directory of the tree by its build path became relative.
    Pth,
    /// A symlink to an absolute path inside the tree became relative.
    Symlink,
    /// A compiled Python file (`.pyc`) records the release's time as its source's,
    /// which is the time the source has wherever the release is unpacked.
    Bytecode,
    /// A kind this version does not know (the list is informational).
    #[serde(other)]
    Other,
}

/// A symlink of the release whose target is a file of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRequirement {
    /// The symlink in the release.
    pub link: EntryPath,
    /// Its target: an absolute path without `.`, `..` or empty components.
    pub target: String,
}

impl fmt::Display for Rewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.path, self.what, self.why)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.detail)
    }
}

/// Permission bits of an entry; only the normalised values are representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode(u32);

impl Mode {
    /// Directories and executable files.
    pub const EXECUTABLE: Mode = Mode(0o755);
    /// Files without any execute bit.
    pub const REGULAR: Mode = Mode(0o644);
    /// Symlinks.
    pub const SYMLINK: Mode = Mode(0o777);

    /// The permission bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// The mode for a regular file whose source had `bits`: executable if any
    /// execute bit was set.
    pub fn for_file(bits: u32) -> Mode {
        if bits & 0o111 != 0 {
            Mode::EXECUTABLE
        } else {
            Mode::REGULAR
        }
    }

    /// Parses `0644`, `0755` or `0777`.
    pub fn from_bits(bits: u32) -> Option<Mode> {
        [Mode::EXECUTABLE, Mode::REGULAR, Mode::SYMLINK]
            .into_iter()
            .find(|m| m.0 == bits)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        u32::from_str_radix(&s, 8)
            .ok()
            .and_then(Mode::from_bits)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid mode {s:?}: expected \"0644\", \"0755\" or \"0777\""
                ))
            })
    }
}

/// A path inside a release: relative, `/`-separated, no empty, `.` or `..`
/// components, no control characters, not under the reserved `.ship/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryPath(String);

/// Why a path cannot be an entry of a release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid entry path {path:?}: {reason}")]
pub struct PathError {
    /// The rejected path (lossily decoded when it was not UTF-8).
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl EntryPath {
    /// Checks `path` and wraps it.
    pub fn new(path: &str) -> Result<EntryPath, PathError> {
        let fail = |reason| PathError {
            path: path.to_owned(),
            reason,
        };
        if path.is_empty() {
            return Err(fail("it is empty"));
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(fail("it is longer than 4096 bytes"));
        }
        if path.starts_with('/') {
            return Err(fail("it is absolute"));
        }
        if path.chars().any(|c| c.is_control()) {
            return Err(fail("it contains a control character (NUL, newline, …)"));
        }
        for component in path.split('/') {
            match component {
                "" => return Err(fail("it has an empty component (`//` or a trailing `/`)")),
                "." => return Err(fail("it has a `.` component")),
                ".." => return Err(fail("it has a `..` component")),
                _ => {}
            }
        }
        if path == RESERVED_DIR || path.starts_with(".ship/") {
            return Err(fail("`.ship/` is reserved for ship's own metadata"));
        }
        Ok(EntryPath(path.to_owned()))
    }

    /// The path as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent directory's path, or `None` at the top of the tree.
    pub fn parent(&self) -> Option<&str> {
        self.0.rsplit_once('/').map(|(parent, _)| parent)
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EntryPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EntryPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EntryPath::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a manifest document is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or not the shape of a manifest.
    #[error("the manifest is not valid JSON of the expected shape")]
    Parse(#[source] serde_json::Error),
    /// Written by a newer ship.
    #[error("manifest format {found} is not supported (this ship reads format {FORMAT})")]
    UnsupportedFormat {
        /// The format the document declares.
        found: u32,
    },
    /// The document contradicts itself.
    #[error("the manifest is inconsistent: {0}")]
    Inconsistent(String),
}

/// Where a symlink leads once every symlink on the way is followed inside the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// To this path inside the tree (empty for the top of the tree). It need not exist.
    Inside(String),
    /// The target, or one on the way, is absolute.
    Absolute,
    /// Following `..` leaves the tree.
    Escapes,
    /// More than 40 symlinks on the way.
    TooManyHops,
}

impl Manifest {
    /// Parses and checks a manifest document.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(ManifestError::Parse)?;
        if probe.format != FORMAT {
            return Err(ManifestError::UnsupportedFormat {
                found: probe.format,
            });
        }
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(ManifestError::Parse)?;
        manifest.check()?;
        Ok(manifest)
    }

    /// The document as written into artifacts: pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        out.push(b'\n');
        out
    }

    /// Checks that the manifest agrees with itself: entries strictly sorted (so no
    /// duplicates), every parent a directory listed earlier, modes that fit their
    /// kinds, and counts and digest that match the list.
    pub fn check(&self) -> Result<(), ManifestError> {
        let bad = |msg: String| Err(ManifestError::Inconsistent(msg));
        if self.compression.algorithm != "zstd" {
            return bad(format!(
                "compression {:?} is not supported (expected \"zstd\")",
                self.compression.algorithm
            ));
        }
        let mut dirs: HashSet<&str> = HashSet::new();
        let mut previous: Option<&str> = None;
        let mut size = 0u64;
        for entry in &self.entries {
            let path = entry.path.as_str();
            if let Some(prev) = previous
                && prev.as_bytes() >= path.as_bytes()
            {
                return bad(format!(
                    "entry {path:?} is out of order or repeated (after {prev:?})"
                ));
            }
            previous = Some(path);
            if let Some(parent) = entry.path.parent()
                && !dirs.contains(parent)
            {
                return bad(format!(
                    "entry {path:?} has no directory entry for its parent {parent:?}"
                ));
            }
            let expected_mode = match &entry.kind {
                EntryKind::Dir => {
                    dirs.insert(path);
                    entry.mode == Mode::EXECUTABLE
                }
                EntryKind::File { size: s, .. } => {
                    size = size
                        .checked_add(*s)
                        .ok_or_else(|| ManifestError::Inconsistent("file sizes overflow".into()))?;
                    entry.mode != Mode::SYMLINK
                }
                EntryKind::Symlink { target } => {
                    if target.is_empty() || target.len() > MAX_PATH_BYTES || target.contains('\0') {
                        return bad(format!("symlink {path:?} has an invalid target"));
                    }
                    entry.mode == Mode::SYMLINK
                }
            };
            if !expected_mode {
                return bad(format!(
                    "entry {path:?} has mode {} which does not fit a {}",
                    entry.mode,
                    entry.kind.name()
                ));
            }
        }
        if self.entry_count != self.entries.len() as u64 {
            return bad(format!(
                "entry_count says {} but {} entries are listed",
                self.entry_count,
                self.entries.len()
            ));
        }
        if self.unpacked_size != size {
            return bad(format!(
                "unpacked_size says {} bytes but the files add up to {size}",
                self.unpacked_size
            ));
        }
        self.behaviour
            .check()
            .map_err(|reason| ManifestError::Inconsistent(format!("behaviour: {reason}")))?;
        for shared in &self.behaviour.shared {
            let shared = shared.trim_end_matches('/');
            let inside = format!("{shared}/");
            if let Some(entry) = self
                .entries
                .iter()
                .find(|e| e.path.as_str() == shared || e.path.as_str().starts_with(&inside))
            {
                return bad(format!(
                    "shared path {shared:?} is also in the artifact ({}): shared paths live in shared/ on each host",
                    entry.path
                ));
            }
            // The link is made inside the parent directories, which must be real
            // directories if the artifact has them.
            let mut parent = shared;
            while let Some((up, _)) = parent.rsplit_once('/') {
                parent = up;
                if let Some(entry) = self.entries.iter().find(|e| e.path.as_str() == parent)
                    && !matches!(entry.kind, EntryKind::Dir)
                {
                    return bad(format!(
                        "shared path {shared:?} would be linked inside {parent}, which is a {} in the artifact, not a directory",
                        entry.kind.name()
                    ));
                }
            }
        }
        self.check_host_requirements()?;
        let digest = payload_digest_of(&self.entries, &self.host_requirements);
        if self.payload_digest != digest {
            return bad(format!(
                "payload_digest says {} but the entries digest to {digest}",
                self.payload_digest
            ));
        }
        Ok(())
    }

    /// Every host requirement is a symlink entry with exactly that target, which is a
    /// host path; the list is sorted by link, without repeats.
    fn check_host_requirements(&self) -> Result<(), ManifestError> {
        let bad = |msg: String| Err(ManifestError::Inconsistent(msg));
        let links = symlinks(&self.entries);
        let mut previous: Option<&str> = None;
        for required in &self.host_requirements {
            let link = required.link.as_str();
            if let Some(prev) = previous
                && prev.as_bytes() >= link.as_bytes()
            {
                return bad(format!(
                    "host requirement {link:?} is out of order or repeated (after {prev:?})"
                ));
            }
            previous = Some(link);
            match links.get(link) {
                Some(target) if *target == required.target => {}
                Some(target) => {
                    return bad(format!(
                        "host requirement {link:?} names target {:?}, but the symlink points to {target:?}",
                        required.target
                    ));
                }
                None => {
                    return bad(format!(
                        "host requirement {link:?} is not a symlink entry of the release"
                    ));
                }
            }
            if let Err(reason) = check_host_path(&required.target) {
                return bad(format!(
                    "host requirement {link:?}: target {:?} {reason}",
                    required.target
                ));
            }
        }
        Ok(())
    }

    /// Follows the symlink at `path` through the tree's own symlinks and says where
    /// it leads. `path` must be a symlink entry of this manifest.
    pub fn resolve_symlink(&self, path: &EntryPath) -> Resolution {
        resolve(&symlinks(&self.entries), path.as_str())
    }

    /// The host paths this release needs, each with the links that point to it.
    pub fn host_paths(&self) -> std::collections::BTreeMap<&str, Vec<&str>> {
        let mut paths: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for required in &self.host_requirements {
            paths
                .entry(required.target.as_str())
                .or_default()
                .push(required.link.as_str());
        }
        paths
    }
}

/// Whether `target` can be a host requirement's target: an absolute path of at most
/// 4096 bytes without `.`, `..` or empty components (so preflight checks exactly the
/// path the link names) and without control characters. `Err` says what is wrong.
pub fn check_host_path(target: &str) -> Result<(), &'static str> {
    let Some(rest) = target.strip_prefix('/') else {
        return Err("is not absolute");
    };
    if target.len() > MAX_PATH_BYTES {
        return Err("is longer than 4096 bytes");
    }
    if target.chars().any(|c| c.is_control()) {
        return Err("contains a control character");
    }
    if rest.is_empty() {
        return Err("is the root directory");
    }
    if rest
        .split('/')
        .any(|component| matches!(component, "" | "." | ".."))
    {
        return Err("has an empty, `.` or `..` component");
    }
    Ok(())
}

/// The symlinks among `entries`: path to target, as [`resolve`] takes them.
pub fn symlinks(entries: &[Entry]) -> HashMap<&str, &str> {
    entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Symlink { target } => Some((e.path.as_str(), target.as_str())),
            _ => None,
        })
        .collect()
}

/// Resolves `link` (a key of `links`) lexically inside the tree, following the other
/// symlinks of `links` on the way.
pub fn resolve(links: &HashMap<&str, &str>, link: &str) -> Resolution {
    walk_links(links, link).0
}

/// Where the symlink `link` leads, when that is somewhere a release may not point;
/// `None` when it stays inside the tree or ends at one of the `declared` host
/// requirements' links. The one rule of what `ship pack` reports and what
/// `ship-agent receive` refuses.
pub fn refused_link(
    links: &HashMap<&str, &str>,
    declared: &HashSet<&str>,
    link: &str,
) -> Option<Resolution> {
    match walk_links(links, link) {
        (Resolution::Inside(_), _) => None,
        (Resolution::Absolute, Some(hop)) if declared.contains(hop.as_str()) => None,
        (resolution, _) => Some(resolution),
    }
}

/// The symlink with an absolute target that resolving `link` ends at (`link` itself,
/// or the last of a chain). `None` when resolution does not end at an absolute link,
/// including when it meets one with path still to walk (`x -> py/../../etc`, where
/// `py` is absolute): where that leads on a host is no declared path.
#[cfg(test)]
fn absolute_hop(links: &HashMap<&str, &str>, link: &str) -> Option<String> {
    walk_links(links, link).1
}

/// [`resolve`], and the path of the absolute symlink it stopped at.
fn walk_links(links: &HashMap<&str, &str>, link: &str) -> (Resolution, Option<String>) {
    // `done` holds the resolved components so far; `todo` the components still to
    // walk, last one first.
    let mut done: Vec<String> = Vec::new();
    let mut todo: Vec<String> = link.rsplit('/').map(str::to_owned).collect();
    let mut hops = 0;
    while let Some(component) = todo.pop() {
        match component.as_str() {
            "" | "." => {}
            ".." => {
                if done.pop().is_none() {
                    return (Resolution::Escapes, None);
                }
            }
            name => {
                done.push(name.to_owned());
                let here = done.join("/");
                if let Some(target) = links.get(here.as_str()) {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return (Resolution::TooManyHops, None);
                    }
                    if target.starts_with('/') {
                        // The link the path ends at, or one it only passes through
                        // (whose target nobody declared: no hop to name).
                        let last = todo.iter().all(|c| c.is_empty() || c == ".");
                        return (Resolution::Absolute, last.then_some(here));
                    }
                    done.pop();
                    todo.extend(target.rsplit('/').map(str::to_owned));
                }
            }
        }
    }
    (Resolution::Inside(done.join("/")), None)
}

/// The payload digest of a release without host requirements; see
/// [`payload_digest_of`].
pub fn payload_digest(entries: &[Entry]) -> Sha256 {
    payload_digest_of(entries, &[])
}

/// The payload digest: SHA-256 over every entry in order, each written as five
/// NUL-terminated fields — kind, path, mode (4 octal digits), size (decimal, empty
/// unless a file), and sha256 (files) or target (symlinks) or empty (dirs) — then
/// every host requirement as five such fields: `host`, link, two empty fields, target.
/// No field can contain NUL and the first field tells the records apart, so the
/// encoding is unambiguous; a release without host requirements digests as before
/// they existed.
pub fn payload_digest_of(entries: &[Entry], host_requirements: &[HostRequirement]) -> Sha256 {
    let mut hasher = sha2::Sha256::new();
    let mut field = |value: &str| {
        hasher.update(value.as_bytes());
        hasher.update([0u8]);
    };
    for entry in entries {
        let (size, last) = match &entry.kind {
            EntryKind::Dir => (String::new(), ""),
            EntryKind::File { size, sha256 } => (size.to_string(), sha256.as_str()),
            EntryKind::Symlink { target } => (String::new(), target.as_str()),
        };
        let mode = entry.mode.to_string();
        for value in [
            entry.kind.name(),
            entry.path.as_str(),
            mode.as_str(),
            size.as_str(),
            last,
        ] {
            field(value);
        }
    }
    for required in host_requirements {
        for value in ["host", required.link.as_str(), "", "", &required.target] {
            field(value);
        }
    }
    Sha256::from_hasher(hasher)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &str) -> Entry {
        Entry {
            path: EntryPath::new(path).unwrap(),
            mode: Mode::EXECUTABLE,
            kind: EntryKind::Dir,
        }
    }

    fn file(path: &str, content: &[u8]) -> Entry {
        Entry {
            path: EntryPath::new(path).unwrap(),
            mode: Mode::REGULAR,
            kind: EntryKind::File {
                size: content.len() as u64,
                sha256: Sha256::of(content),
            },
        }
    }

    fn link(path: &str, target: &str) -> Entry {
        Entry {
            path: EntryPath::new(path).unwrap(),
            mode: Mode::SYMLINK,
            kind: EntryKind::Symlink {
                target: target.into(),
            },
        }
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        let unpacked_size = entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum();
        Manifest {
            format: FORMAT,
            name: "shop".parse().unwrap(),
            version: "v1".parse().unwrap(),
            created: Timestamp::from_unix(0),
            source: None,
            compression: Compression {
                algorithm: "zstd".into(),
                zstd_version: "1.5.7".into(),
                level: 3,
            },
            entry_count: entries.len() as u64,
            unpacked_size,
            payload_digest: payload_digest(&entries),
            relocatability: vec![],
            rewrites: vec![],
            host_requirements: vec![],
            behaviour: Behaviour::default(),
            entries,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let m = manifest(vec![
            dir("bin"),
            file("bin/run", b"#!/bin/sh\n"),
            link("run", "bin/run"),
        ]);
        let json = m.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"kind\": \"symlink\""), "{text}");
        assert!(text.contains("\"mode\": \"0644\""), "{text}");
        assert_eq!(Manifest::from_json(&json).unwrap(), m);
    }

    #[test]
    fn payload_digest_is_pinned() {
        // The definition is part of the format: changing it breaks every artifact.
        let entries = vec![dir("a"), file("a/b", b"hello\n"), link("c", "a/b")];
        assert_eq!(
            payload_digest(&entries).as_str(),
            Sha256::of(
                b"dir\0a\x000755\0\0\0file\0a/b\x000644\x006\0\
                  5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03\0\
                  symlink\0c\x000777\0\0a/b\0"
            )
            .as_str()
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_newer_formats_refused() {
        let m = manifest(vec![file("a", b"x")]);
        let mut value: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        value["future_field"] = serde_json::json!({"anything": 1});
        let bytes = serde_json::to_vec(&value).unwrap();
        assert_eq!(Manifest::from_json(&bytes).unwrap(), m);

        value["format"] = 2.into();
        let err = Manifest::from_json(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "manifest format 2 is not supported (this ship reads format 1)"
        );
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let mut unsorted = manifest(vec![file("b", b""), file("a", b"")]);
        assert!(
            unsorted
                .check()
                .unwrap_err()
                .to_string()
                .contains("out of order")
        );
        unsorted.entries.swap(0, 1);
        unsorted.payload_digest = payload_digest(&unsorted.entries);
        unsorted.check().unwrap();

        let orphan = manifest(vec![file("a/b", b"")]);
        assert!(orphan.check().unwrap_err().to_string().contains("parent"));

        let through_link = manifest(vec![link("a", "x"), file("a/b", b"")]);
        assert!(
            through_link
                .check()
                .unwrap_err()
                .to_string()
                .contains("no directory entry for its parent \"a\"")
        );

        let mut tampered = manifest(vec![file("a", b"x")]);
        tampered.entries[0] = file("a", b"y");
        assert!(
            tampered
                .check()
                .unwrap_err()
                .to_string()
                .contains("payload_digest")
        );

        let mut wrong_count = manifest(vec![file("a", b"x")]);
        wrong_count.entry_count = 2;
        assert!(wrong_count.check().is_err());

        let mut dup = manifest(vec![file("a", b"x")]);
        dup.entries.push(file("a", b"x"));
        dup.entry_count = 2;
        assert!(dup.check().unwrap_err().to_string().contains("repeated"));
    }

    #[test]
    fn shared_paths_may_not_be_in_the_artifact() {
        let mut m = manifest(vec![file("a", b""), dir("log"), file("log/old.log", b"x")]);
        m.behaviour.shared = vec!["tmp/pids/".into(), "config/.env".into()];
        m.check().unwrap();
        m.behaviour.shared.push("log/".into());
        assert_eq!(
            m.check().unwrap_err().to_string(),
            "the manifest is inconsistent: shared path \"log\" is also in the artifact (log): shared paths live in shared/ on each host"
        );
        let mut m = manifest(vec![file("a", b""), file("config", b"")]);
        m.behaviour.shared = vec!["config/.env".into()];
        assert!(
            m.check()
                .unwrap_err()
                .to_string()
                .contains("inside config, which is a file in the artifact")
        );
    }

    #[test]
    fn entry_paths_refuse_traversal_and_reserved_names() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "./a",
            "a//b",
            "a/",
            "a\0b",
            "a\nb",
            ".ship",
            ".ship/x",
        ] {
            assert!(EntryPath::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", ".shiprc", "a/.ship/b", "a b/c-d_e.f", "ünïcödé"] {
            assert!(EntryPath::new(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn symlinks_resolve_through_other_symlinks() {
        let m = manifest(vec![
            dir("a"),
            link("a/abs", "/etc"),
            link("a/up", "../.."),
            link("a/sib", "../b/c"),
            link("dot", "."),
            link("loop", "loop"),
            link("sneaky", "dot/.."),
        ]);
        let r = |p: &str| m.resolve_symlink(&EntryPath::new(p).unwrap());
        assert_eq!(r("a/abs"), Resolution::Absolute);
        assert_eq!(r("a/up"), Resolution::Escapes);
        assert_eq!(r("a/sib"), Resolution::Inside("b/c".into()));
        assert_eq!(r("dot"), Resolution::Inside(String::new()));
        assert_eq!(r("loop"), Resolution::TooManyHops);
        // Lexically "dot/.." stays at the top, but "dot" is the top itself.
        assert_eq!(r("sneaky"), Resolution::Escapes);
    }

    fn host(link: &str, target: &str) -> HostRequirement {
        HostRequirement {
            link: EntryPath::new(link).unwrap(),
            target: target.into(),
        }
    }

    #[test]
    fn host_requirements_must_be_the_releases_own_absolute_links() {
        let with = |links: Vec<HostRequirement>| {
            let mut m = manifest(vec![
                dir("bin"),
                link("bin/python", "python3"),
                link("bin/python3", "/usr/bin/python3.11"),
                link("bin/x", "/opt/x"),
            ]);
            m.payload_digest = payload_digest_of(&m.entries, &links);
            m.host_requirements = links;
            m.check().map(|()| m)
        };
        let m = with(vec![
            host("bin/python3", "/usr/bin/python3.11"),
            host("bin/x", "/opt/x"),
        ])
        .unwrap();
        assert_eq!(
            m.host_paths().into_iter().collect::<Vec<_>>(),
            vec![
                ("/opt/x", vec!["bin/x"]),
                ("/usr/bin/python3.11", vec!["bin/python3"])
            ]
        );
        let json = m.to_json();
        assert!(
            String::from_utf8_lossy(&json).contains("\"host_requirements\""),
            "{}",
            String::from_utf8_lossy(&json)
        );
        assert_eq!(Manifest::from_json(&json).unwrap(), m);

        for (links, expected) in [
            (
                vec![host("bin/python3", "/usr/bin/python3.12")],
                "names target \"/usr/bin/python3.12\", but the symlink points to \"/usr/bin/python3.11\"",
            ),
            (
                vec![host("bin/python", "python3")],
                "target \"python3\" is not absolute",
            ),
            (vec![host("bin", "/usr")], "is not a symlink entry"),
            (
                vec![
                    host("bin/x", "/opt/x"),
                    host("bin/python3", "/usr/bin/python3.11"),
                ],
                "out of order or repeated",
            ),
        ] {
            let err = with(links).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn host_requirements_are_part_of_the_payload_digest() {
        let entries = vec![link("py", "/usr/bin/python3")];
        let plain = payload_digest(&entries);
        let declared = payload_digest_of(&entries, &[host("py", "/usr/bin/python3")]);
        assert_ne!(plain, declared);
        assert_eq!(
            declared.as_str(),
            Sha256::of(
                b"symlink\0py\x000777\0\0/usr/bin/python3\0host\0py\0\0\0/usr/bin/python3\0"
            )
            .as_str()
        );
        // A manifest that declares a link without its digest saying so is refused.
        let mut m = manifest(entries);
        m.host_requirements = vec![host("py", "/usr/bin/python3")];
        assert!(
            m.check()
                .unwrap_err()
                .to_string()
                .contains("payload_digest")
        );
    }

    #[test]
    fn host_paths_are_absolute_and_normalised() {
        for good in ["/usr/bin/python3.11", "/opt/x y/z", "/a"] {
            assert_eq!(check_host_path(good), Ok(()), "{good}");
        }
        for bad in [
            "usr/bin",
            "/",
            "/usr//bin",
            "/usr/./bin",
            "/usr/../etc",
            "/usr/bin/",
            "/a\nb",
        ] {
            assert!(check_host_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_absolute_hop_is_the_link_resolution_stopped_at() {
        let links: HashMap<&str, &str> = [
            ("bin/python", "python3"),
            ("bin/python3", "/usr/bin/python3.11"),
            ("lib64", "lib"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            absolute_hop(&links, "bin/python").as_deref(),
            Some("bin/python3")
        );
        assert_eq!(
            absolute_hop(&links, "bin/python3").as_deref(),
            Some("bin/python3")
        );
        assert_eq!(absolute_hop(&links, "lib64"), None);
        // Through the absolute link, not to it: nothing declared names where it leads.
        let through: HashMap<&str, &str> = [
            ("py", "/usr/lib/python3"),
            ("up", "py/../../../etc/shadow"),
            ("inner", "py/secret"),
            ("dot", "py/."),
        ]
        .into_iter()
        .collect();
        assert_eq!(absolute_hop(&through, "up"), None);
        assert_eq!(absolute_hop(&through, "inner"), None);
        assert_eq!(absolute_hop(&through, "dot").as_deref(), Some("py"));
        assert_eq!(resolve(&through, "up"), Resolution::Absolute);
    }
}
