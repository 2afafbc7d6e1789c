//! Who may change what the agent trusts. The agent binary, the lock, the journal and
//! the trust store belong to the account ship deploys as; the app's own user (and
//! anyone else) must not be able to write them, or it could rewrite history, hold
//! the lock forever, trust its own key, or replace the agent itself.
//!
//! Two rules, checked here:
//! - the agent refuses to run from a file or directory that anyone but its owner
//!   (root or the account running it) can write, as OpenSSH's `StrictModes` does for
//!   `authorized_keys`; a directory with the sticky bit (`/tmp`) is safe, since no one
//!   can rename or remove what another user owns there;
//! - what the agent writes under `<root>/.ship` is written without group or other
//!   write permission whatever the umask, the lock readable by its owner alone (a
//!   `flock` needs only a read descriptor), and what an older agent or a loose umask
//!   left writable is tightened whenever the lock is taken.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::AgentError;
use crate::layout::AppRoot;

/// Group and other write bits.
const SHARED_WRITE: u32 = 0o022;
/// The sticky bit of a directory.
const STICKY: u32 = 0o1000;

/// Refuses to go on when the running binary, or a directory on its path, can be
/// written by someone other than root and the account running it.
pub fn check_own_binary() -> Result<(), AgentError> {
    let exe = std::env::current_exe()
        .map_err(|e| AgentError::io("cannot find its own binary", "/proc/self/exe", e))?;
    check_path(&exe, nix::unistd::geteuid().as_raw())
}

/// The check of [`check_own_binary`] for the binary at `exe`, run by `uid`.
fn check_path(exe: &Path, uid: u32) -> Result<(), AgentError> {
    for path in exe.ancestors() {
        let meta = fs::symlink_metadata(path)
            .map_err(|e| AgentError::io("cannot check the permissions of", path, e))?;
        let mode = meta.mode() & 0o7777;
        let unsafe_because = if meta.uid() != 0 && meta.uid() != uid {
            Some(format!(
                "is owned by uid {}, not by root or uid {uid}",
                meta.uid()
            ))
        } else if mode & SHARED_WRITE != 0 && !(meta.is_dir() && mode & STICKY != 0) {
            Some(format!("can be written by others (mode {mode:04o})"))
        } else {
            None
        };
        if let Some(why) = unsafe_because {
            return Err(AgentError::UnsafeInstall {
                exe: exe.to_owned(),
                path: path.to_owned(),
                why,
            });
        }
    }
    Ok(())
}

/// What under `<root>/.ship` the agent's account alone may write.
fn guarded(app: &AppRoot) -> Vec<PathBuf> {
    let mut paths = vec![
        app.ship_dir(),
        app.lock(),
        app.journal(),
        app.agent(),
        app.agent().parent().expect("in .ship/bin").to_owned(),
        app.trust(),
    ];
    if let Ok(entries) = fs::read_dir(app.trust()) {
        paths.extend(entries.flatten().map(|entry| entry.path()));
    }
    paths
}

/// Takes group and other write permission away from what [`guarded`] lists, and
/// every permission but its owner's from the lock, where this account owns them (a
/// file another account owns is that account's to fix; [`check_own_binary`] refuses
/// the agent's own binary then).
pub fn tighten(app: &AppRoot) -> Result<(), AgentError> {
    let uid = nix::unistd::geteuid().as_raw();
    let lock = app.lock();
    for path in guarded(app) {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() != uid || meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.mode() & 0o7777;
        let taken = if path == lock { 0o077 } else { SHARED_WRITE };
        if mode & taken != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & !taken))
                .map_err(|e| AgentError::io("cannot take write permission away from", &path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_binary_others_can_replace_is_refused_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let exe = bin.join("ship-agent");
        fs::write(&exe, "").unwrap();
        chmod(dir.path(), 0o755);
        chmod(&bin, 0o755);
        chmod(&exe, 0o755);
        let uid = nix::unistd::geteuid().as_raw();
        check_path(&exe, uid).unwrap();

        chmod(&bin, 0o775);
        let refused = check_path(&exe, uid).unwrap_err().to_string();
        assert!(refused.contains(&format!("{}", bin.display())), "{refused}");
        assert!(refused.contains("mode 0775"), "{refused}");
        chmod(&bin, 0o755);

        chmod(&exe, 0o757);
        let refused = check_path(&exe, uid).unwrap_err().to_string();
        assert!(refused.contains("mode 0757"), "{refused}");
        chmod(&exe, 0o755);

        // A sticky directory (as /tmp, which the temporary directory is under) is safe.
        chmod(dir.path(), 0o1777);
        check_path(&exe, uid).unwrap();

        // Owned by another account (which only root can arrange).
        if uid == 0 {
            let nobody = Some(nix::unistd::Uid::from_raw(65534));
            nix::unistd::chown(&exe, nobody, None).unwrap();
            let refused = check_path(&exe, uid).unwrap_err().to_string();
            assert!(refused.contains("is owned by uid 65534"), "{refused}");
        }
    }

    #[test]
    fn loose_modes_under_ship_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let app = AppRoot::new(dir.path()).unwrap();
        app.create().unwrap();
        fs::write(app.journal(), "").unwrap();
        fs::write(app.lock(), "").unwrap();
        chmod(&app.journal(), 0o666);
        chmod(&app.lock(), 0o644);
        chmod(&app.ship_dir(), 0o777);
        tighten(&app).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&app.journal()), 0o644);
        assert_eq!(mode(&app.lock()), 0o600);
        assert_eq!(mode(&app.ship_dir()), 0o755);
    }
}
