//! `verify [VERSION]`: re-hashes a deployed release against its manifest and names
//! every entry that was changed, added or removed on disk since it was received.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use manifests::{EntryKind, Sha256, Version};

use crate::error::AgentError;
use crate::layout::AppRoot;
use crate::protocol::Drift;
use crate::receive;

/// Compares release `version` of `root` with its manifest.
pub fn verify(root: &AppRoot, version: &Version) -> Result<Drift, AgentError> {
    let Some(manifest) = receive::read_release_manifest(root, version)? else {
        return Err(AgentError::NoRelease {
            version: version.clone(),
            present: crate::releases::present(root)?,
        });
    };
    let dir = root.release(version);
    let mut drift = Drift {
        version: Some(version.clone()),
        ..Drift::default()
    };
    let mut listed: HashSet<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
    // The shared paths' links, and the directories made to hold them, are the
    // agent's own additions.
    for shared in &manifest.behaviour.shared {
        let mut path = shared.trim_end_matches('/');
        listed.insert(path);
        while let Some((parent, _)) = path.rsplit_once('/') {
            listed.insert(parent);
            path = parent;
        }
    }
    for entry in &manifest.entries {
        let path = dir.join(entry.path.as_str());
        let name = entry.path.to_string();
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                drift.removed.push(name);
                continue;
            }
            Err(e) => return Err(AgentError::io("cannot inspect", &path, e)),
        };
        let found = if meta.is_dir() {
            "dir"
        } else if meta.file_type().is_symlink() {
            "symlink"
        } else if meta.is_file() {
            "file"
        } else {
            "special file"
        };
        if found != entry.kind.name() {
            drift.changed.push((
                name,
                format!("a {found} now, a {} in the manifest", entry.kind.name()),
            ));
            continue;
        }
        match &entry.kind {
            EntryKind::Symlink { target } => {
                let now =
                    fs::read_link(&path).map_err(|e| AgentError::io("cannot read", &path, e))?;
                if now.as_os_str() != target.as_str() {
                    drift.changed.push((
                        name,
                        format!("points to {} now, {target} in the manifest", now.display()),
                    ));
                }
            }
            EntryKind::Dir | EntryKind::File { .. } => {
                let mode = meta.permissions().mode() & 0o7777;
                if mode != entry.mode.bits() {
                    drift.changed.push((
                        name.clone(),
                        format!("mode {mode:04o} now, {} in the manifest", entry.mode),
                    ));
                }
                if let EntryKind::File { size, sha256 } = &entry.kind {
                    let actual = hash_file(&path)?;
                    if meta.len() != *size || actual != *sha256 {
                        drift.changed.push((name, "content differs".to_owned()));
                    }
                }
            }
        }
    }
    collect_added(&dir, "", &listed, &mut drift.added)?;
    drift.added.sort();
    Ok(drift)
}

/// Adds every path under `dir/prefix` that `listed` does not contain (the release's
/// own `.ship/` excluded).
fn collect_added(
    dir: &Path,
    prefix: &str,
    listed: &HashSet<&str>,
    added: &mut Vec<String>,
) -> Result<(), AgentError> {
    let here = dir.join(prefix);
    let items = fs::read_dir(&here).map_err(|e| AgentError::io("cannot list", &here, e))?;
    for item in items {
        let item = item.map_err(|e| AgentError::io("cannot list", &here, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            if name == ".ship" {
                continue;
            }
            name
        } else {
            format!("{prefix}/{name}")
        };
        if !listed.contains(rel.as_str()) {
            added.push(rel);
            continue;
        }
        let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            collect_added(dir, &rel, listed, added)?;
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<Sha256, AgentError> {
    packager::verify::file_digest(path).map_err(|e| AgentError::io("cannot read", path, e))
}
