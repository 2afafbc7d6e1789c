//! What a host can reuse for a release to come: the file contents of the releases it
//! keeps, found by sha256 through their manifests. Nothing is reused on the word of a
//! manifest alone. Every file a release received was hashed then, and its *stamp*
//! recorded (inode, size, change time: `.ship/stamps.json`); a file whose stamp is
//! unchanged has not been written to, renamed over or chmodded since (the kernel sets
//! the change time on every such change, and no call sets it back), so its content is
//! still the hashed one. A file whose stamp changed, or that has none, is hashed
//! again; one that differs from its manifest (drift) is reported and passed over.
//! Stamps are trusted only where no one but the agent's user can have written them
//! (the release, its `.ship` and the stamps file owned by that user and writable by
//! no one else), and a source whose stamp moves while it is copied is hashed.
//!
//! What a stamp cannot see: writes through a shared memory mapping on tmpfs (which
//! leave the change time alone), another NFS client's write hidden by cached
//! attributes, and bits that rot on the disk. Hosts whose releases live on such file
//! systems should be deployed with `ship deploy --full`.
//!
//! Copies are independent files: `copy_file_range(2)`, which shares the blocks where
//! the file system can (XFS, btrfs: a reflink, as `FICLONE` makes) and copies them
//! in the kernel elsewhere. An edit in place of one release's file never changes
//! another release.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use manifests::{Entry, EntryKind, Manifest, Sha256};
use serde::{Deserialize, Serialize};

use crate::error::AgentError;
use crate::layout::AppRoot;
use crate::output::Output;
use crate::receive::read_release_manifest;
use crate::releases;

/// What identifies a file's state: no write, rename over or change of mode leaves
/// it as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

/// Records the stamps of the files of `manifest` as they are in `release_dir` (just
/// written and checked), for reuse without hashing them again.
pub fn record_stamps(release_dir: &Path, manifest: &Manifest) -> Result<(), AgentError> {
    let mut stamps: HashMap<&str, Stamp> = HashMap::new();
    for entry in &manifest.entries {
        if let EntryKind::File { .. } = entry.kind {
            let path = release_dir.join(entry.path.as_str());
            let meta =
                fs::symlink_metadata(&path).map_err(|e| AgentError::io("cannot stat", &path, e))?;
            stamps.insert(entry.path.as_str(), Stamp::of(&meta));
        }
    }
    let path = AppRoot::stamps_in(release_dir);
    let json = serde_json::to_vec(&stamps).expect("stamps serialize");
    crate::receive::write_record(&path, &json)
}

/// A copy of a content in a release, and its stamp when the release recorded one.
#[derive(Debug)]
struct Place {
    path: PathBuf,
    stamp: Option<Stamp>,
}

impl Place {
    /// Whether the file is as it was when its release checked it.
    fn unchanged(&self, meta: &fs::Metadata) -> bool {
        self.stamp == Some(Stamp::of(meta))
    }
}

/// Whether `path` is owned by this process's user and writable by no one else.
fn ours_alone(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .is_ok_and(|meta| meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0)
}

/// The file contents of the releases on a host, by sha256.
#[derive(Debug, Default)]
pub struct Stock {
    /// Where each content is, as the releases' manifests say, newest release first.
    places: HashMap<Sha256, Vec<Place>>,
}

impl Stock {
    /// The contents of every release of `root`; a release whose manifest cannot be
    /// read is left out, saying so on `out`.
    pub fn of(root: &AppRoot, out: Output) -> Result<Stock, AgentError> {
        let mut stock = Stock::default();
        let mut present = releases::present(root)?;
        present.reverse();
        for version in present {
            let manifest = match read_release_manifest(root, &version) {
                Ok(Some(manifest)) => manifest,
                Ok(None) => continue,
                Err(e) => {
                    out.warn(&format!(
                        "{}; its files are not reused",
                        crate::protocol::chain(&e)
                    ));
                    continue;
                }
            };
            let release = root.release(&version);
            // Releases received before stamps were recorded have none, and stamps
            // someone else could have written are not taken: those files are hashed.
            let stamps_path = AppRoot::stamps_in(&release);
            let trusted = [release.as_path(), &release.join(".ship"), &stamps_path]
                .into_iter()
                .all(ours_alone);
            let mut stamps: HashMap<String, Stamp> = trusted
                .then(|| fs::read(&stamps_path).ok())
                .flatten()
                .and_then(|json| serde_json::from_slice(&json).ok())
                .unwrap_or_default();
            for entry in &manifest.entries {
                if let EntryKind::File { sha256, .. } = &entry.kind {
                    stock.places.entry(sha256.clone()).or_default().push(Place {
                        path: release.join(entry.path.as_str()),
                        stamp: stamps.remove(entry.path.as_str()),
                    });
                }
            }
        }
        Ok(stock)
    }

    /// Whether the host has `content`, checked now: by its stamp, or else by hashing
    /// it. Each copy that differs is reported on `out` and passed over.
    pub fn has(&self, content: &Sha256, out: Output) -> bool {
        self.places(content).any(|place| {
            let unchanged =
                fs::symlink_metadata(&place.path).is_ok_and(|meta| place.unchanged(&meta));
            let verified =
                unchanged || hash_file(&place.path).is_ok_and(|actual| actual == *content);
            if !verified {
                drifted(&place.path, out);
            }
            verified
        })
    }

    /// Writes the content of file `entry` into the new file `dest` (with the entry's
    /// mode and the modification time `mtime`) from a copy on the host, checking what
    /// was written. `Ok(false)` when no copy on the host has that content (any that
    /// differs is reported on `out`).
    pub fn copy_into(
        &self,
        entry: &Entry,
        dest: &Path,
        mtime: std::time::SystemTime,
        out: Output,
    ) -> Result<bool, AgentError> {
        let EntryKind::File { sha256, .. } = &entry.kind else {
            return Ok(false);
        };
        for place in self.places(sha256) {
            let opened = OpenOptions::new()
                .read(true)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(&place.path)
                .and_then(|file| file.metadata().map(|meta| (file, meta)));
            let Ok((mut source, meta)) = opened else {
                drifted(&place.path, out);
                continue;
            };
            let unchanged = place.unchanged(&meta);
            // O_EXCL and O_NOFOLLOW: never write through anything already there.
            let mut copy = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(entry.mode.bits())
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(dest)
                .map_err(|e| AgentError::io("cannot create", dest, e))?;
            io::copy(&mut source, &mut copy)
                .map_err(|e| AgentError::io("cannot copy into", dest, e))?;
            // A write to the source while it was copied moves its change time.
            let unchanged = unchanged && source.metadata().is_ok_and(|meta| place.unchanged(&meta));
            copy.set_modified(mtime)
                .map_err(|e| AgentError::io("cannot set the time of", dest, e))?;
            drop(copy);
            // A source as it was checked gives what was checked; any other is hashed
            // from the new file, since what was written is what counts.
            if unchanged {
                return Ok(true);
            }
            match hash_file(dest) {
                Ok(actual) if actual == *sha256 => return Ok(true),
                Ok(_) => {
                    drifted(&place.path, out);
                    fs::remove_file(dest).map_err(|e| AgentError::io("cannot remove", dest, e))?;
                }
                Err(e) => return Err(AgentError::io("cannot read", dest, e)),
            }
        }
        Ok(false)
    }

    fn places(&self, content: &Sha256) -> impl Iterator<Item = &Place> {
        self.places.get(content).into_iter().flatten()
    }
}

/// Reports a copy that does not have the content its manifest says.
fn drifted(place: &Path, out: Output) {
    out.warn(&format!(
        "{} differs from its release's manifest: not reused",
        place.display()
    ));
}

/// The sha256 of the file at `path` (not followed if a symlink).
fn hash_file(path: &Path) -> io::Result<Sha256> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    packager::verify::digest_of(file)
}
