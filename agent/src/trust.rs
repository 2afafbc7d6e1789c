//! The host's trust anchors, in `<root>/.ship/trust/`: the keys whose signatures it
//! accepts (`keys/<ID>.pub`, minisign public key files) and the keys it stopped
//! trusting (`revoked/<ID>.pub`); and, per key, the highest signing sequence it has
//! accepted (its high-water mark), which the journal's receive records hold — one
//! record, already flushed, is the receive and raises the mark.
//!
//! A host with no key takes unsigned releases. Once it has one, every release it
//! receives must carry a signature whose claim a trusted key made, for exactly the
//! release received, with a sequence no lower than that key's mark — unless the
//! operator allows the downgrade, which the journal records with who and why. The
//! check of the signature comes before anything is read or written; the check of the
//! claim against the release's manifest, before its first file is written. Changes
//! to the trust store are made under the app root's lock, each file written whole
//! and renamed into place.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use manifests::Manifest;
use manifests::signature::{Action, Claim, KeyId, PublicKey, Signature, Statement};

use crate::error::AgentError;
use crate::journal;
use crate::layout::AppRoot;
use crate::protocol::{Op, Outcome};
use crate::protocol::{SignedBy, TrustReply, TrustedKey};

/// What came with a release to receive: its signature, and the operator's leave to
/// take it though it is older than what the host has accepted.
#[derive(Debug, Default)]
pub struct Signing {
    /// The release's signature.
    pub signature: Option<Signature>,
    /// Why a downgrade is allowed, when it is.
    pub allow_downgrade: Option<String>,
}

/// A release signature the host accepted, before the release was read.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The key, and the claim it signed.
    pub claim: Claim,
    key: KeyId,
    /// The mark the release is below, when it is a downgrade the operator allowed,
    /// and why.
    downgrade: Option<(u64, String)>,
}

impl Admitted {
    /// Checks the release's manifest against what was signed.
    pub fn check(&self, manifest: &Manifest) -> Result<(), AgentError> {
        self.claim
            .check(manifest)
            .map_err(|e| AgentError::Untrusted {
                subject: format!("release {} of {}", manifest.version, manifest.name),
                reason: e.to_string(),
            })
    }

    /// As the journal records it.
    pub fn signed_by(&self) -> SignedBy {
        SignedBy {
            key: self.key.to_string(),
            seq: self.claim.seq,
            downgrade: self
                .downgrade
                .as_ref()
                .map(|(mark, why)| format!("below mark {mark}: {why}")),
        }
    }
}

/// The trust store of an app root.
pub struct Trust {
    dir: PathBuf,
    /// The trusted keys: those in `keys/` that are not also in `revoked/`.
    keys: Vec<PublicKey>,
    /// Every file in `keys/`, by the id of its key (an owner may name them freely).
    files: Vec<(KeyId, PathBuf)>,
    revoked: Vec<KeyId>,
    /// The journal, whose receive records hold the marks.
    journal: PathBuf,
}

impl Trust {
    /// Reads the trust store of `app` (empty when there is none). A key file that
    /// does not parse is an error, never skipped: the host fails closed.
    pub fn load(app: &AppRoot) -> Result<Trust, AgentError> {
        let dir = app.trust();
        let found = read_keys(&dir.join("keys"))?;
        let revoked: Vec<KeyId> = read_keys(&dir.join("revoked"))?
            .iter()
            .map(|(key, _)| key.id())
            .collect();
        let files = found
            .iter()
            .map(|(key, path)| (key.id(), path.clone()))
            .collect();
        // A revoked key stays revoked, whatever else is in keys/.
        let mut keys: Vec<PublicKey> = found
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| !revoked.contains(&key.id()))
            .collect();
        keys.dedup_by_key(|key| key.id());
        Ok(Trust {
            dir,
            keys,
            files,
            revoked,
            journal: app.journal(),
        })
    }

    /// The highest sequence accepted per key, from the journal's receive records
    /// (read only where they are needed: a receive's check, `trust list`).
    fn marks(&self) -> Result<BTreeMap<String, u64>, AgentError> {
        let mut marks = BTreeMap::new();
        if self.keys.is_empty() {
            return Ok(marks);
        }
        for record in journal::read(&self.journal)? {
            if let (Op::Receive, Outcome::Ok, Some(signed)) =
                (record.op, record.result, &record.signed_by)
            {
                let mark = marks.entry(signed.key.clone()).or_insert(0);
                *mark = signed.seq.max(*mark);
            }
        }
        Ok(marks)
    }

    /// Whether a release this host holds may be activated (deployed again without a
    /// transfer): on a host that requires signatures, only one it received signed
    /// by a key it still trusts. One received before the host had keys, or signed
    /// by a key revoked since, is refused; deploying it again, signed, makes it
    /// good. A rollback is not asked: going back stays a symlink swap.
    pub fn check_held(
        &self,
        app: &AppRoot,
        version: &manifests::Version,
    ) -> Result<(), AgentError> {
        if !self.enforced() {
            return Ok(());
        }
        let signed = crate::receive::read_artifact_facts(app, version).and_then(|f| f.signed_by);
        let reason = match signed {
            Some(signed) if self.key_ids().contains(&signed.key) => return Ok(()),
            Some(signed) => format!(
                "it was received signed by key {}, which this host no longer trusts; deploy it again signed by a key it trusts",
                signed.key
            ),
            None => "it was received unsigned, before this host required signatures; deploy it again, signed (a rollback to it is still allowed)".to_owned(),
        };
        Err(AgentError::Untrusted {
            subject: format!("release {version}"),
            reason,
        })
    }

    /// Whether this host requires signatures.
    pub fn enforced(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The keys and their marks, as `trust` reports them.
    pub fn reply(&self, changed: bool) -> Result<TrustReply, AgentError> {
        let marks = self.marks()?;
        Ok(TrustReply {
            keys: self
                .keys
                .iter()
                .map(|key| TrustedKey {
                    id: key.id().to_string(),
                    mark: marks.get(&key.id().to_string()).copied(),
                })
                .collect(),
            changed,
        })
    }

    /// The ids of the trusted keys.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id().to_string()).collect()
    }

    /// Decides on a release's signature before anything of the release is read:
    /// `None` when the host trusts no key (a signature is then not needed).
    /// With `payload` (the payload digest the release must have), a signature made
    /// for another release is told apart from a replay before anything is read.
    /// `holds` says whether the host has a release of that version and payload
    /// already: taking it again is no downgrade (it is a switch, as a rollback is).
    pub fn admit(
        &self,
        signing: &Signing,
        payload: Option<&manifests::Sha256>,
        holds: impl Fn(&manifests::Version, &manifests::Sha256) -> bool,
    ) -> Result<Option<Admitted>, AgentError> {
        if !self.enforced() {
            return Ok(None);
        }
        let trusted = self.key_ids().join(", ");
        let Some(signature) = &signing.signature else {
            return Err(AgentError::Untrusted {
                subject: "an unsigned release".into(),
                reason: format!(
                    "this host runs only releases signed by a key it trusts ({trusted})"
                ),
            });
        };
        let claim = Claim::parse(signature.comment());
        // What the signature claims is not believed yet: the release is named by
        // whoever sent it (ship, in its report).
        let refuse = |reason: String| AgentError::Untrusted {
            subject: "the release".into(),
            reason,
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.id() == signature.key())
            .ok_or_else(|| {
                refuse(if self.revoked.contains(&signature.key()) {
                    format!("it is signed by key {}, which was revoked", signature.key())
                } else {
                    format!(
                        "it is signed by key {}, which this host does not trust (it trusts {trusted})",
                        signature.key()
                    )
                })
            })?;
        signature
            .verify_comment(key)
            .map_err(|e| refuse(e.to_string()))?;
        let claim = claim.map_err(|e| refuse(e.to_string()))?;
        if let Some(payload) = payload
            && claim.payload != *payload
        {
            return Err(refuse(format!(
                "the signature is for another release: it was made for payload {}, the release sent has payload {payload}",
                claim.payload
            )));
        }
        let mark = self.marks()?.get(&key.id().to_string()).copied();
        let held = holds(&claim.version, &claim.payload);
        let downgrade = match (mark, &signing.allow_downgrade) {
            _ if held => None,
            (Some(mark), None) if claim.seq < mark => {
                return Err(refuse(format!(
                    "it was signed with sequence {} by key {}, and this host has accepted a release signed with sequence {mark} by that key: a replay or a downgrade (allow it with --allow-downgrade REASON)",
                    claim.seq,
                    key.id()
                )));
            }
            (Some(mark), Some(why)) if claim.seq < mark => Some((mark, why.clone())),
            _ => None,
        };
        Ok(Some(Admitted {
            claim,
            key: key.id(),
            downgrade,
        }))
    }

    /// Trusts `key`. By hand (`statement` and `first_contact` both unset) that is
    /// the host owner's word; from ship, a host that trusts keys takes a new one only
    /// in a statement signed by one of them, and `first_contact` only where it
    /// trusts none yet. Returns whether anything changed.
    pub fn add(
        &mut self,
        key: PublicKey,
        statement: Option<&Signature>,
        first_contact: bool,
        by_hand: bool,
    ) -> Result<bool, AgentError> {
        let refuse = |reason: String| AgentError::Untrusted {
            subject: format!("key {}", key.id()),
            reason,
        };
        if let Some(known) = self.keys.iter().find(|k| k.id() == key.id()) {
            if known.text().lines().nth(1) != key.text().lines().nth(1) {
                return Err(refuse(
                    "the host trusts another key with the same id; revoke that one first".into(),
                ));
            }
            return Ok(false);
        }
        match statement {
            Some(statement) => {
                if self.revoked.contains(&key.id()) && !by_hand {
                    return Err(refuse("it was revoked on this host".into()));
                }
                self.vouch(statement, &key, Action::Add).map_err(refuse)?;
            }
            None if by_hand => {}
            None if first_contact && self.keys.is_empty() && self.revoked.is_empty() => {}
            None if first_contact => {
                return Err(refuse(format!(
                    "this host already has trust anchors ({}), so --first-contact does not apply; a new key needs a statement signed by one of them (ship key endorse)",
                    self.describe()
                )));
            }
            None => {
                return Err(refuse(format!(
                    "a key is added from ship only in a statement signed by a key the host trusts ({}), or with --first-contact where it trusts none",
                    self.describe()
                )));
            }
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(self.dir.join("keys"))
            .map_err(|e| AgentError::io("cannot create", self.dir.join("keys"), e))?;
        write_whole(
            &self.dir.join("keys"),
            &format!("{}.pub", key.id()),
            key.text().as_bytes(),
        )?;
        let _ = fs::remove_file(self.dir.join("revoked").join(format!("{}.pub", key.id())));
        self.revoked.retain(|id| *id != key.id());
        self.files.push((
            key.id(),
            self.dir.join("keys").join(format!("{}.pub", key.id())),
        ));
        self.keys.push(key);
        Ok(true)
    }

    /// Stops trusting `key`: by hand, or (from ship) in a statement signed by a
    /// trusted key. From ship, the last key is not revoked: that would leave a host
    /// that takes unsigned releases.
    pub fn revoke(
        &mut self,
        key: &PublicKey,
        statement: Option<&Signature>,
        by_hand: bool,
    ) -> Result<bool, AgentError> {
        let refuse = |reason: String| AgentError::Untrusted {
            subject: format!("revoking key {}", key.id()),
            reason,
        };
        if !self.keys.iter().any(|k| k.id() == key.id()) {
            return Ok(false);
        }
        match statement {
            Some(statement) => self.vouch(statement, key, Action::Revoke).map_err(refuse)?,
            None if by_hand => {}
            None => {
                return Err(refuse(
                    "a key is revoked from ship only in a statement signed by a key the host trusts"
                        .into(),
                ));
            }
        }
        if !by_hand && self.keys.len() == 1 {
            return Err(refuse(
                "it is the host's last trusted key, and a host without one takes unsigned releases; add its successor first".into(),
            ));
        }
        let revoked = self.dir.join("revoked");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&revoked)
            .map_err(|e| AgentError::io("cannot create", &revoked, e))?;
        let name = format!("{}.pub", key.id());
        write_whole(&revoked, &name, key.text().as_bytes())?;
        // Every file of the key, whatever its name.
        for (_, path) in self.files.iter().filter(|(id, _)| *id == key.id()) {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(AgentError::io("cannot remove", path, e)),
            }
        }
        self.files.retain(|(id, _)| *id != key.id());
        self.keys.retain(|k| k.id() != key.id());
        self.revoked.push(key.id());
        Ok(true)
    }

    /// The trusted key `id`, for a revocation named by id.
    pub fn key(&self, id: KeyId) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.id() == id)
    }

    /// Checks that a key this host trusts made `statement`, saying `action` of `key`.
    fn vouch(&self, statement: &Signature, key: &PublicKey, action: Action) -> Result<(), String> {
        let signer = self
            .keys
            .iter()
            .find(|k| k.id() == statement.key())
            .ok_or_else(|| {
                format!(
                    "the statement is signed by key {}, which this host does not trust ({})",
                    statement.key(),
                    self.describe()
                )
            })?;
        Statement::verify(statement, signer, key, action).map_err(|e| e.to_string())
    }

    fn describe(&self) -> String {
        if self.keys.is_empty() {
            "none".to_owned()
        } else {
            self.key_ids().join(", ")
        }
    }
}

/// Every `*.pub` in `dir`, with its path (none when `dir` does not exist).
fn read_keys(dir: &Path) -> Result<Vec<(PublicKey, PathBuf)>, AgentError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AgentError::io("cannot read", dir, e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| AgentError::io("cannot read", dir, e))?
            .path();
        if path.extension().is_none_or(|ext| ext != "pub") {
            continue;
        }
        let text =
            fs::read_to_string(&path).map_err(|e| AgentError::io("cannot read", &path, e))?;
        let key = PublicKey::parse(&text).map_err(|e| AgentError::Untrusted {
            subject: format!("the trust store's {}", path.display()),
            reason: e.to_string(),
        })?;
        keys.push((key, path));
    }
    keys.sort_by_key(|(key, _)| key.id());
    Ok(keys)
}

/// Writes `bytes` as `dir/name`: a new file, flushed, renamed over the old one.
fn write_whole(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), AgentError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| AgentError::io("cannot create", dir, e))?;
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.{}", crate::layout::nonce()));
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, &path)?;
        crate::fsutil::fsync_dir(dir)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&temp);
        AgentError::io("cannot write", &path, e)
    })
}
