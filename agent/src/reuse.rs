//! What a host can reuse for a release to come: the file contents of the releases it
//! keeps, found by sha256 through their manifests. Nothing is reused on the word of a
//! manifest alone: a file is hashed before it is offered (`have`) and hashed again
//! as it is copied into a release being received, and one that differs from its
//! manifest (drift) is reported and passed over.
//!
//! Copies are independent files: `copy_file_range(2)`, which shares the blocks where
//! the file system can (XFS, btrfs: a reflink, as `FICLONE` makes) and copies them
//! in the kernel elsewhere. An edit in place of one release's file never changes
//! another release.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use manifests::{Entry, EntryKind, Sha256};
use sha2::Digest;

use crate::error::AgentError;
use crate::layout::AppRoot;
use crate::output::Output;
use crate::receive::read_release_manifest;
use crate::releases;

/// The file contents of the releases on a host, by sha256.
#[derive(Debug, Default)]
pub struct Stock {
    /// Where each content is, as the releases' manifests say, newest release first.
    places: HashMap<Sha256, Vec<PathBuf>>,
}

impl Stock {
    /// The contents of every release of `root`.
    pub fn of(root: &AppRoot) -> Result<Stock, AgentError> {
        let mut stock = Stock::default();
        let mut present = releases::present(root)?;
        present.reverse();
        for version in present {
            let Some(manifest) = read_release_manifest(root, &version)? else {
                continue;
            };
            let release = root.release(&version);
            for entry in &manifest.entries {
                if let EntryKind::File { sha256, .. } = &entry.kind {
                    stock
                        .places
                        .entry(sha256.clone())
                        .or_default()
                        .push(release.join(entry.path.as_str()));
                }
            }
        }
        Ok(stock)
    }

    /// Whether the host has `content`, checked now: a file said to have it is hashed.
    /// Each that differs is reported on `out` and passed over.
    pub fn has(&self, content: &Sha256, out: Output) -> bool {
        self.places(content).any(|place| {
            let verified = hash_file(place).is_ok_and(|actual| actual == *content);
            if !verified {
                drifted(place, out);
            }
            verified
        })
    }

    /// Writes the content of file `entry` into the new file `dest` (with the entry's
    /// mode) from a copy on the host, checking what was written. `Ok(false)` when no
    /// copy on the host has that content (any that differs is reported on `out`).
    pub fn copy_into(&self, entry: &Entry, dest: &Path, out: Output) -> Result<bool, AgentError> {
        let EntryKind::File { sha256, .. } = &entry.kind else {
            return Ok(false);
        };
        for place in self.places(sha256) {
            let Ok(mut source) = OpenOptions::new()
                .read(true)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(place)
            else {
                drifted(place, out);
                continue;
            };
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
            drop(copy);
            // What was written is what counts: hashed from the new file.
            match hash_file(dest) {
                Ok(actual) if actual == *sha256 => return Ok(true),
                Ok(_) => {
                    drifted(place, out);
                    fs::remove_file(dest).map_err(|e| AgentError::io("cannot remove", dest, e))?;
                }
                Err(e) => return Err(AgentError::io("cannot read", dest, e)),
            }
        }
        Ok(false)
    }

    fn places(&self, content: &Sha256) -> impl Iterator<Item = &PathBuf> {
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
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    hash(&mut file)
}

fn hash(file: &mut File) -> io::Result<Sha256> {
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(Sha256::from_hasher(hasher)),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
