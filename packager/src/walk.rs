//! Walking the tree to pack: every directory, regular file and symlink under the
//! root, yielded lazily in bytewise order of relative path, without following
//! symlinks.
//!
//! The walk is lazy so that archiving starts with the first entry instead of after a
//! full listing. Pending paths sit in a min-heap: a directory's children are pushed
//! when the directory itself is popped, and every child's path is greater than its
//! parent's, so popping the smallest pending path always yields the global order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use manifests::EntryPath;

use crate::error::PackError;

/// One thing found in the tree.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) path: EntryPath,
    pub(crate) kind: FoundKind,
}

#[derive(Debug)]
pub(crate) enum FoundKind {
    Dir,
    File { size: u64, executable: bool },
    Symlink { target: String },
}

/// Lazily lists the tree under a root; see the module docs.
pub(crate) struct Walk {
    root: PathBuf,
    skip: Option<String>,
    /// Relative paths found but not yet yielded, smallest first.
    pending: BinaryHeap<Reverse<Vec<u8>>>,
    started: bool,
}

impl Walk {
    /// Walks `root`, leaving out the entry `skip` (a relative path) and everything
    /// under it.
    pub(crate) fn new(root: &Path, skip: Option<String>) -> Walk {
        Walk {
            root: root.to_owned(),
            skip,
            pending: BinaryHeap::new(),
            started: false,
        }
    }

    /// Pushes the children of the directory `rel` (`""` for the root).
    fn list(&mut self, rel: &str) -> Result<(), PackError> {
        let dir = self.root.join(rel);
        let read_err = |source| PackError::Read {
            path: dir.clone(),
            source,
        };
        for item in fs::read_dir(&dir).map_err(read_err)? {
            let name = item.map_err(read_err)?.file_name();
            let name = name.into_string().map_err(|name| PackError::NotUtf8 {
                path: dir.join(name),
            })?;
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if self.skip.as_deref() != Some(child.as_str()) {
                self.pending.push(Reverse(child.into_bytes()));
            }
        }
        Ok(())
    }

    /// Describes the entry at `rel`, refusing what cannot be packed.
    fn describe(&self, rel: String) -> Result<Found, PackError> {
        let abs = self.root.join(&rel);
        let read_err = |source| PackError::Read {
            path: abs.clone(),
            source,
        };
        let path = EntryPath::new(&rel).map_err(|source| PackError::BadPath {
            path: abs.clone(),
            source,
        })?;
        let meta = fs::symlink_metadata(&abs).map_err(read_err)?;
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            FoundKind::Dir
        } else if file_type.is_file() {
            FoundKind::File {
                size: meta.len(),
                executable: meta.permissions().mode() & 0o111 != 0,
            }
        } else if file_type.is_symlink() {
            let target = fs::read_link(&abs).map_err(read_err)?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|_| PackError::NotUtf8 { path: abs.clone() })?;
            FoundKind::Symlink { target }
        } else {
            let what = if file_type.is_socket() {
                "a socket"
            } else if file_type.is_fifo() {
                "a FIFO"
            } else if file_type.is_block_device() {
                "a block device"
            } else if file_type.is_char_device() {
                "a character device"
            } else {
                "of an unknown file type"
            };
            return Err(PackError::Unsupported { path: abs, what });
        };
        Ok(Found { path, kind })
    }
}

impl Iterator for Walk {
    type Item = Result<Found, PackError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            if let Err(e) = self.list("") {
                return Some(Err(e));
            }
        }
        let Reverse(rel) = self.pending.pop()?;
        let rel = String::from_utf8(rel).expect("built from UTF-8 names");
        let found = match self.describe(rel) {
            Ok(found) => found,
            Err(e) => return Some(Err(e)),
        };
        if let FoundKind::Dir = found.kind
            && let Err(e) = self.list(found.path.as_str())
        {
            return Some(Err(e));
        }
        Some(Ok(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_paths_in_bytewise_order_lazily() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for dir in ["a", "a/b", "a-b", "z"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in ["a.txt", "a/b/c", "a/0", "a-b/x", "B", "z/y"] {
            fs::write(root.join(file), "").unwrap();
        }
        let paths: Vec<String> = Walk::new(root, Some("z/y".into()))
            .map(|f| f.unwrap().path.as_str().to_owned())
            .collect();
        let mut sorted = paths.clone();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(paths, sorted);
        assert_eq!(
            paths,
            [
                "B", "a", "a-b", "a-b/x", "a.txt", "a/0", "a/b", "a/b/c", "z"
            ]
        );
    }
}
