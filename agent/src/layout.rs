//! The host layout of an app root. This is the only module that builds paths inside
//! it; everything else asks here.
//!
//! ```text
//! <root>/current -> releases/<version>   relative symlink, replaced by rename(2)
//! <root>/releases/<version>/             complete, verified releases
//! <root>/releases/<version>/.ship/       the release's manifest, artifact facts and
//!                                        the stamps of its verified files
//! <root>/shared/                         survives releases
//! <root>/.ship/bin/ship-agent            the agent ship installs where none is
//! <root>/.ship/lock                      flock: one operation at a time
//! <root>/.ship/journal.jsonl             append-only history
//! <root>/.ship/trust/                    trusted keys and revocations
//! <root>/.ship/incoming/<version>.<nonce>/  partial receives, never activated
//! <root>/.ship/trash/<version>.<nonce>/  releases being removed by prune
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use manifests::Version;

/// Name of the `current` symlink.
const CURRENT: &str = "current";

/// Where `ship` installs its agent under the app root `root` of a host that has
/// none (`<root>/.ship/bin/ship-agent`); built without touching the path, which is
/// on another machine.
pub fn installed_agent(root: &str) -> PathBuf {
    Path::new(root).join(".ship").join("bin").join("ship-agent")
}

/// An app root on this host.
#[derive(Debug, Clone)]
pub struct AppRoot {
    root: PathBuf,
}

impl AppRoot {
    /// The app root at `root` (made absolute; not created).
    pub fn new(root: &Path) -> io::Result<AppRoot> {
        Ok(AppRoot {
            root: std::path::absolute(root)?,
        })
    }

    /// Creates the directories of the layout that are missing.
    pub fn create(&self) -> io::Result<()> {
        for dir in [
            self.root.clone(),
            self.releases(),
            self.shared(),
            self.ship_dir(),
            self.incoming(),
            self.trash(),
        ] {
            // Never group- or other-writable, whatever the umask (see `perms`).
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&dir)?;
        }
        Ok(())
    }

    /// Whether the layout exists here (a `.ship` directory under the root).
    pub fn exists(&self) -> bool {
        self.ship_dir().is_dir()
    }

    /// The root itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `releases/`.
    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }

    /// `releases/<version>/`.
    pub fn release(&self, version: &Version) -> PathBuf {
        self.releases().join(version.as_str())
    }

    /// The manifest kept inside a release.
    pub fn release_manifest(&self, version: &Version) -> PathBuf {
        Self::manifest_in(&self.release(version))
    }

    /// The artifact facts kept inside a release.
    pub fn release_artifact(&self, version: &Version) -> PathBuf {
        Self::artifact_in(&self.release(version))
    }

    /// The manifest's place inside a release directory (also a staging directory).
    pub fn manifest_in(release_dir: &Path) -> PathBuf {
        release_dir.join(".ship/manifest.json")
    }

    /// The artifact facts' place inside a release directory.
    pub fn artifact_in(release_dir: &Path) -> PathBuf {
        release_dir.join(".ship/artifact.json")
    }

    /// The stamps of a release's verified files, inside its directory.
    pub fn stamps_in(release_dir: &Path) -> PathBuf {
        release_dir.join(".ship/stamps.json")
    }

    /// `current`.
    pub fn current(&self) -> PathBuf {
        self.root.join(CURRENT)
    }

    /// The relative target `current` gets for `version`.
    pub fn current_target(version: &Version) -> PathBuf {
        Path::new("releases").join(version.as_str())
    }

    /// A temporary symlink beside `current`, to be renamed over it.
    pub fn next_current(&self, nonce: &str) -> PathBuf {
        self.root.join(format!(".{CURRENT}.{nonce}"))
    }

    /// Leftover temporary `current` symlinks of interrupted switches.
    pub fn stale_next_currents(&self) -> io::Result<Vec<PathBuf>> {
        let prefix = format!(".{CURRENT}.");
        let mut stale = Vec::new();
        for item in fs::read_dir(&self.root)? {
            let item = item?;
            if item.file_name().to_string_lossy().starts_with(&prefix) {
                stale.push(item.path());
            }
        }
        Ok(stale)
    }

    /// `shared/`.
    pub fn shared(&self) -> PathBuf {
        self.root.join("shared")
    }

    /// `.ship/`.
    pub fn ship_dir(&self) -> PathBuf {
        self.root.join(".ship")
    }

    /// `.ship/lock`.
    pub fn lock(&self) -> PathBuf {
        self.ship_dir().join("lock")
    }

    /// `.ship/journal.jsonl`.
    pub fn journal(&self) -> PathBuf {
        self.ship_dir().join("journal.jsonl")
    }

    /// `.ship/trust/`: the host's trust anchors.
    pub fn trust(&self) -> PathBuf {
        self.ship_dir().join("trust")
    }

    /// `.ship/bin/ship-agent`: the agent ship installs.
    pub fn agent(&self) -> PathBuf {
        self.ship_dir().join("bin").join("ship-agent")
    }

    /// `.ship/incoming/`.
    pub fn incoming(&self) -> PathBuf {
        self.ship_dir().join("incoming")
    }

    /// `.ship/incoming/<version>.<nonce>/`.
    pub fn staging(&self, version: &Version, nonce: &str) -> PathBuf {
        self.incoming().join(format!("{version}.{nonce}"))
    }

    /// `.ship/trash/`.
    pub fn trash(&self) -> PathBuf {
        self.ship_dir().join("trash")
    }

    /// `.ship/trash/<version>.<nonce>/`.
    pub fn trash_for(&self, version: &Version, nonce: &str) -> PathBuf {
        self.trash().join(format!("{version}.{nonce}"))
    }
}

/// A name that no other operation on this host uses at the same time.
pub fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("{}-{nanos:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_layout() {
        let root = AppRoot::new(Path::new("/srv/shop")).unwrap();
        let v: Version = "v42".parse().unwrap();
        assert_eq!(root.release(&v), Path::new("/srv/shop/releases/v42"));
        assert_eq!(
            root.release_manifest(&v),
            Path::new("/srv/shop/releases/v42/.ship/manifest.json")
        );
        assert_eq!(AppRoot::current_target(&v), Path::new("releases/v42"));
        assert_eq!(root.lock(), Path::new("/srv/shop/.ship/lock"));
        assert_eq!(
            root.staging(&v, "1-2"),
            Path::new("/srv/shop/.ship/incoming/v42.1-2")
        );
        assert_eq!(root.next_current("n"), Path::new("/srv/shop/.current.n"));
    }
}
