//! Walking the tree to pack: every directory, regular file and symlink under the
//! root, without following symlinks, listed in bytewise order of relative path.
//!
//! Each entry is shown to the caller as soon as it is found, so that files can be
//! read while the rest of the tree is still being listed; the listing is sorted once
//! it is complete. Entry types come from the directory listing itself; a file's size
//! and mode are left to whoever opens it.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

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
    /// A regular file: its size and mode are read when it is opened.
    File,
    Symlink {
        target: String,
    },
}

/// Lists the tree under `root`, leaving out the entry `skip` (a relative path) and
/// everything under it. `found` sees each entry when it is found, with its index in
/// the returned listing, which is in the order found; [`order`] sorts it.
pub(crate) fn walk(
    root: &Path,
    skip: Option<&str>,
    mut found: impl FnMut(usize, &Found),
) -> Result<Vec<Found>, PackError> {
    let mut listing: Vec<Found> = Vec::new();
    let mut dirs: Vec<String> = vec![String::new()];
    while let Some(rel) = dirs.pop() {
        let dir = root.join(&rel);
        let read_err = |source| PackError::Read {
            path: dir.clone(),
            source,
        };
        for item in fs::read_dir(&dir).map_err(read_err)? {
            let item = item.map_err(read_err)?;
            let name = item.file_name();
            let name = name.into_string().map_err(|name| PackError::NotUtf8 {
                path: dir.join(name),
            })?;
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if skip == Some(child.as_str()) {
                continue;
            }
            let entry = describe(root, child, &item)?;
            if let FoundKind::Dir = entry.kind {
                dirs.push(entry.path.as_str().to_owned());
            }
            found(listing.len(), &entry);
            listing.push(entry);
        }
    }
    Ok(listing)
}

/// The listing's order: bytewise by path, which puts parents before children.
pub(crate) fn order(listing: &[Found]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..listing.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        listing[a]
            .path
            .as_str()
            .as_bytes()
            .cmp(listing[b].path.as_str().as_bytes())
    });
    order
}

/// Describes the entry `rel`, read from its directory as `item`, refusing what
/// cannot be packed.
fn describe(root: &Path, rel: String, item: &fs::DirEntry) -> Result<Found, PackError> {
    let abs = root.join(&rel);
    let read_err = |source| PackError::Read {
        path: abs.clone(),
        source,
    };
    let path = EntryPath::new(&rel).map_err(|source| PackError::BadPath {
        path: abs.clone(),
        source,
    })?;
    let file_type = item.file_type().map_err(read_err)?;
    let kind = if file_type.is_dir() {
        FoundKind::Dir
    } else if file_type.is_file() {
        FoundKind::File
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_entry_once_and_orders_them_bytewise() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for dir in ["a", "a/b", "a-b", "z"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in ["a.txt", "a/b/c", "a/0", "a-b/x", "B", "z/y"] {
            fs::write(root.join(file), "").unwrap();
        }
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        let mut seen = Vec::new();
        let listing = walk(root, Some("z/y"), |i, f| {
            seen.push((i, f.path.as_str().to_owned()))
        })
        .unwrap();
        assert_eq!(seen.len(), listing.len());
        for (i, path) in &seen {
            assert_eq!(listing[*i].path.as_str(), path);
        }
        let paths: Vec<&str> = order(&listing)
            .into_iter()
            .map(|i| listing[i].path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "B", "a", "a-b", "a-b/x", "a.txt", "a/0", "a/b", "a/b/c", "link", "z"
            ]
        );
    }
}
