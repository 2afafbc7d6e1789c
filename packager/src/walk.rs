//! Walking the tree to pack: every directory, regular file and symlink under the
//! root, sorted bytewise by relative path, without following symlinks.

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

/// Lists the tree under `root`, sorted by path, leaving out the entry `skip`
/// (a relative path). Refuses anything that is not a directory, regular file or symlink,
/// and names that are not UTF-8.
pub(crate) fn walk(root: &Path, skip: Option<&str>) -> Result<Vec<Found>, PackError> {
    let mut found = Vec::new();
    let mut pending: Vec<(PathBuf, String)> = vec![(root.to_owned(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let read = fs::read_dir(&dir).map_err(|source| PackError::Read {
            path: dir.clone(),
            source,
        })?;
        for item in read {
            let item = item.map_err(|source| PackError::Read {
                path: dir.clone(),
                source,
            })?;
            let abs = item.path();
            let name = item
                .file_name()
                .into_string()
                .map_err(|_| PackError::NotUtf8 { path: abs.clone() })?;
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if skip == Some(rel.as_str()) {
                continue;
            }
            let path = EntryPath::new(&rel).map_err(|source| PackError::BadPath {
                path: abs.clone(),
                source,
            })?;
            let meta = fs::symlink_metadata(&abs).map_err(|source| PackError::Read {
                path: abs.clone(),
                source,
            })?;
            let file_type = meta.file_type();
            let kind = if file_type.is_dir() {
                pending.push((abs, rel));
                FoundKind::Dir
            } else if file_type.is_file() {
                FoundKind::File {
                    size: meta.len(),
                    executable: meta.permissions().mode() & 0o111 != 0,
                }
            } else if file_type.is_symlink() {
                let target = fs::read_link(&abs).map_err(|source| PackError::Read {
                    path: abs.clone(),
                    source,
                })?;
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
            found.push(Found { path, kind });
        }
    }
    found.sort_unstable_by(|a, b| a.path.as_str().as_bytes().cmp(b.path.as_str().as_bytes()));
    Ok(found)
}
