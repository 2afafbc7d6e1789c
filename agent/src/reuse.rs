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
//! Copies are independent files: a reflink (`FICLONE`) where the file system shares
//! blocks (XFS, btrfs), else `copy_file_range(2)`, a copy in the kernel. An edit in
//! place of one release's file never changes another release.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use manifests::{Entry, EntryKind, Sha256};
use rustix::io::Errno;
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
    /// The stamp of the file `meta` describes.
    pub fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

/// Records the stamps of a release's files (taken as each was written and checked),
/// for reuse without hashing them again.
pub fn record_stamps(
    release_dir: &Path,
    stamps: &HashMap<String, Stamp>,
) -> Result<(), AgentError> {
    let path = AppRoot::stamps_in(release_dir);
    let json = serde_json::to_vec(stamps).expect("stamps serialize");
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
#[derive(Debug)]
pub struct Stock {
    /// Where each content is, as the releases' manifests say, newest release first.
    places: HashMap<Sha256, Vec<Place>>,
    /// Whether reflinks are still worth trying.
    reflinks: Cell<bool>,
}

impl Default for Stock {
    fn default() -> Stock {
        Stock {
            places: HashMap::new(),
            reflinks: Cell::new(true),
        }
    }
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
    /// was written: the new file's stamp, or `None` when no copy on the host has that
    /// content (any that differs is reported on `out`).
    pub fn copy_into(
        &self,
        entry: &Entry,
        dest: &Path,
        mtime: std::time::SystemTime,
        out: Output,
    ) -> Result<Option<Stamp>, AgentError> {
        let EntryKind::File { sha256, .. } = &entry.kind else {
            return Ok(None);
        };
        for place in self.places(sha256) {
            let opened = OpenOptions::new()
                .read(true)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(&place.path)
                .and_then(|file| file.metadata().map(|meta| (file, meta)));
            let Ok((source, meta)) = opened else {
                drifted(&place.path, out);
                continue;
            };
            let unchanged = place.unchanged(&meta);
            // O_EXCL and O_NOFOLLOW: never write through anything already there.
            let copy = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(entry.mode.bits())
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(dest)
                .map_err(|e| AgentError::io("cannot create", dest, e))?;
            clone_or_copy(&source, &copy, meta.len(), &self.reflinks)
                .map_err(|e| AgentError::io("cannot copy into", dest, e))?;
            // A write to the source while it was copied moves its change time.
            let unchanged = unchanged && source.metadata().is_ok_and(|meta| place.unchanged(&meta));
            copy.set_modified(mtime)
                .map_err(|e| AgentError::io("cannot set the time of", dest, e))?;
            let stamp = copy
                .metadata()
                .map_err(|e| AgentError::io("cannot stat", dest, e))?;
            drop(copy);
            // A source as it was checked gives what was checked; any other is hashed
            // from the new file, since what was written is what counts.
            if unchanged {
                return Ok(Some(Stamp::of(&stamp)));
            }
            match hash_file(dest) {
                Ok(actual) if actual == *sha256 => return Ok(Some(Stamp::of(&stamp))),
                Ok(_) => {
                    drifted(&place.path, out);
                    fs::remove_file(dest).map_err(|e| AgentError::io("cannot remove", dest, e))?;
                }
                Err(e) => return Err(AgentError::io("cannot read", dest, e)),
            }
        }
        Ok(None)
    }

    fn places(&self, content: &Sha256) -> impl Iterator<Item = &Place> {
        self.places.get(content).into_iter().flatten()
    }
}

/// Makes `copy` (new and empty) hold the content of `source`, `len` bytes when it
/// was checked: a reflink where the file system has them (`reflinks` turns false
/// once it has not, so the rest are not tried), else a copy in the kernel, else
/// through memory. Bytes the source gains or loses meanwhile move its change time,
/// which the caller checks.
fn clone_or_copy(source: &File, copy: &File, len: u64, reflinks: &Cell<bool>) -> io::Result<()> {
    if reflinks.get() {
        match rustix::fs::ioctl_ficlone(copy, source) {
            Ok(()) => return Ok(()),
            Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::NOTTY | Errno::INVAL) => {
                reflinks.set(false);
            }
            Err(_) => {}
        }
    }
    let mut done = 0;
    while done < len {
        let want = usize::try_from(len - done).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(source, None, copy, None, want) {
            Ok(0) => return Ok(()),
            Ok(n) => done += n as u64,
            // No copy in the kernel between these two files: through memory.
            Err(_) if done == 0 => return io::copy(&mut &*source, &mut &*copy).map(drop),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
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
