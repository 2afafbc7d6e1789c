//! Durable, atomic file-system steps: fsync of directories, the whole-file-system
//! flush after an unpack, atomic symlink replacement, and removal through a rename.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Flushes a directory's entries to disk.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes every dirty page and inode of the file system holding `path`: one call
/// after unpacking thousands of files, instead of an fsync per file.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    nix::unistd::syncfs(&dir).map_err(io::Error::from)
}

/// Points the symlink `link` at `target` atomically: a new symlink `temp` is created
/// beside it and renamed over it, then the directory is fsynced. At every instant
/// `link` is either the old symlink or the new one. `after_link` runs between the two
/// steps (a crash point for tests).
pub fn replace_symlink(
    target: &Path,
    temp: &Path,
    link: &Path,
    after_link: impl FnOnce(),
) -> io::Result<()> {
    std::os::unix::fs::symlink(target, temp)?;
    after_link();
    if let Err(e) = fs::rename(temp, link) {
        let _ = fs::remove_file(temp);
        return Err(e);
    }
    fsync_dir(link.parent().unwrap_or(Path::new(".")))
}

/// Removes a directory tree that nothing refers to any more (staging or trash).
/// A missing directory is not an error.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Bytes available to unprivileged writers on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}
