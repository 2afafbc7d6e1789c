//! Signing keys and signatures on the operator's side: `ship key` makes keypairs and
//! trust statements, `ship sign` (and `ship pack --sign`) signs artifacts, and
//! `ship verify` and `ship deploy` read the `.minisig` beside an artifact.
//!
//! Keys and signatures are minisign's files (the `minisign` crate): a secret key
//! is encrypted with a passphrase unless made with `--unencrypted`, and the
//! passphrase comes from `SHIP_KEY_PASSPHRASE` or, on a terminal, a prompt. What a
//! signature says is [`manifests::signature`]'s.

use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use manifests::Manifest;
use manifests::signature::{Action, Claim, KeyId, PublicKey, Signature, Statement};

use crate::error::CliError;

/// Where the passphrase of an encrypted secret key comes from, when not a prompt.
pub const PASSPHRASE_VAR: &str = "SHIP_KEY_PASSPHRASE";

/// The signature file of `artifact`: `<artifact>.minisig`.
pub fn signature_path(artifact: &Path) -> PathBuf {
    let mut name = artifact.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

/// The signature beside `artifact`, when there is one.
pub fn artifact_signature(artifact: &Path) -> Result<Option<Signature>, CliError> {
    let path = signature_path(artifact);
    match fs::read_to_string(&path) {
        Ok(text) => parse_signature(&text, &path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::failure(
            format!("cannot read {}", path.display()),
            e,
        )),
    }
}

/// The signature in `text`, read from `path`.
pub fn parse_signature(text: &str, path: &Path) -> Result<Signature, CliError> {
    Signature::parse(text)
        .map_err(|e| CliError::failure(format!("signature {} is unusable", path.display()), e))
}

/// A public key file.
pub fn public_key(path: &Path) -> Result<PublicKey, CliError> {
    let text = fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read the key {}: {e}", path.display())))?;
    PublicKey::parse(&text)
        .map_err(|e| CliError::config(format!("{} is not a public key", path.display()), e))
}

/// The keys of `[trust]` in `toml` (read from `path`), relative to its directory.
pub fn config_keys(
    toml: &manifests::config::ShipToml,
    path: &Path,
) -> Result<Vec<PublicKey>, CliError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    toml.trust
        .keys
        .iter()
        .map(|key| public_key(&dir.join(key)))
        .collect()
}

/// Checks `signature` against `keys`: made by one of them, for the release whose
/// manifest is `manifest` and, given the artifact's file, over its bytes (as
/// `minisign -V` does; without it, the signed claim alone, as hosts check it).
pub fn check_signature(
    artifact: Option<&Path>,
    manifest: &Manifest,
    signature: &Signature,
    keys: &[PublicKey],
) -> Result<Claim, manifests::signature::SignatureError> {
    let key = keys
        .iter()
        .find(|k| k.id() == signature.key())
        .ok_or_else(|| {
            let trusted: Vec<String> = keys.iter().map(|k| k.id().to_string()).collect();
            manifests::signature::SignatureError::from(format!(
                "it is signed by key {}, which is not a trusted key ({})",
                signature.key(),
                trusted.join(", ")
            ))
        })?;
    match artifact {
        Some(path) => {
            let file = File::open(path).map_err(|e| {
                manifests::signature::SignatureError::from(format!(
                    "cannot read {}: {e}",
                    path.display()
                ))
            })?;
            signature.verify(key, BufReader::with_capacity(1 << 20, file))?;
        }
        None => signature.verify_comment(key)?,
    }
    let claim = Claim::parse(signature.comment())?;
    claim.check(manifest)?;
    Ok(claim)
}

/// Writes a new keypair: `<out>.key` (0600) and `<out>.pub`.
pub fn generate(
    out: &Path,
    encrypted: bool,
    force: bool,
) -> Result<(PathBuf, PathBuf, KeyId), CliError> {
    let secret_path = with_suffix(out, ".key");
    let public_path = with_suffix(out, ".pub");
    for path in [&secret_path, &public_path] {
        if path.exists() && !force {
            return Err(
                CliError::usage(format!("{} already exists", path.display()))
                    .hint("choose another --out, or pass --force to replace it"),
            );
        }
    }
    let pair = if encrypted {
        let passphrase = new_passphrase()?;
        minisign::KeyPair::generate_encrypted_keypair(Some(passphrase))
    } else {
        minisign::KeyPair::generate_unencrypted_keypair()
    }
    .map_err(|e| CliError::failure("cannot generate a keypair", e))?;
    let public = pair
        .pk
        .to_box()
        .map_err(|e| CliError::failure("cannot encode the public key", e))?
        .into_string();
    let id = PublicKey::parse(&public)
        .map_err(|e| CliError::failure("the new public key does not parse", e))?
        .id();
    let secret = pair
        .sk
        .to_box(Some(&format!("ship secret key {id}")))
        .map_err(|e| CliError::failure("cannot encode the secret key", e))?
        .into_string();
    write_file(&secret_path, secret.as_bytes(), 0o600, true)?;
    write_file(&public_path, public.as_bytes(), 0o644, true)?;
    Ok((secret_path, public_path, id))
}

/// A secret key (and its public half), decrypted.
pub struct SecretKey {
    secret: minisign::SecretKey,
    public: minisign::PublicKey,
    id: KeyId,
}

impl SecretKey {
    /// Reads `path`, asking for its passphrase when it is encrypted.
    pub fn load(path: &Path) -> Result<SecretKey, CliError> {
        let text = fs::read_to_string(path).map_err(|e| {
            CliError::usage(format!(
                "cannot read the secret key {}: {e}",
                path.display()
            ))
        })?;
        let unusable = |e: minisign::PError| {
            CliError::failure(format!("secret key {} is unusable", path.display()), e)
        };
        let boxed = minisign::SecretKeyBox::from_string(&text).map_err(unusable)?;
        // An encrypted key does not open without its passphrase.
        let secret = match boxed.clone().into_unencrypted_secret_key() {
            Ok(secret) if !secret.is_encrypted() => secret,
            _ => {
                let passphrase = passphrase(path)?;
                boxed.into_secret_key(Some(passphrase)).map_err(|e| {
                    CliError::failure(
                        format!("cannot decrypt the secret key {}", path.display()),
                        e,
                    )
                    .hint(format!(
                        "check the passphrase ({PASSPHRASE_VAR}, or the prompt)"
                    ))
                })?
            }
        };
        let public = minisign::PublicKey::from_secret_key(&secret).map_err(unusable)?;
        let text = public.to_box().map_err(unusable)?.into_string();
        let id = PublicKey::parse(&text)
            .map_err(|e| {
                CliError::failure(format!("secret key {} is unusable", path.display()), e)
            })?
            .id();
        Ok(SecretKey { secret, public, id })
    }

    /// Its id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Signs the data whose BLAKE2b-512 is `prehash` with trusted comment `comment`.
    fn sign_prehashed(&self, prehash: &[u8], comment: &str) -> Result<String, CliError> {
        // minisign's secret key: algorithms (6 bytes), KDF salt (32) and limits
        // (16), key id (8), then the Ed25519 secret key (64).
        let bytes = self.secret.to_bytes();
        let public = PublicKey::parse(
            &self
                .public
                .to_box()
                .map_err(|e| CliError::failure("cannot encode the public key", e))?
                .into_string(),
        )
        .map_err(|e| CliError::failure("the public key does not parse", e))?;
        Signature::make_prehashed(
            &bytes[62..126],
            &public,
            prehash,
            comment,
            &format!("signature from ship key {}", self.id),
        )
        .map(|s| s.text().to_owned())
        .map_err(|e| CliError::failure(format!("cannot sign with key {}", self.id), e))
    }

    /// Signs the file at `path` with trusted comment `comment`.
    fn sign(&self, path: &Path, comment: &str) -> Result<String, CliError> {
        let file = File::open(path)
            .map_err(|e| CliError::failure(format!("cannot read {}", path.display()), e))?;
        let untrusted = format!("signature from ship key {}", self.id);
        minisign::sign(
            Some(&self.public),
            &self.secret,
            BufReader::with_capacity(1 << 20, file),
            Some(comment),
            Some(&untrusted),
        )
        .map(minisign::SignatureBox::into_string)
        .map_err(|e| CliError::failure(format!("cannot sign {}", path.display()), e))
    }
}

/// The claim a signature of `artifact` (whose manifest is `manifest`) makes, with
/// `seq` or else the time now in seconds.
pub fn claim(manifest: &Manifest, seq: Option<u64>) -> Claim {
    let seq = seq.unwrap_or_else(|| manifests::Timestamp::now().unix());
    Claim::of(manifest, seq)
}

/// Signs `artifact` (whose manifest is `manifest`; `prehash`, its BLAKE2b-512 when
/// known) and writes `<artifact>.minisig`.
pub fn sign_artifact(
    artifact: &Path,
    manifest: &Manifest,
    key: &SecretKey,
    seq: Option<u64>,
    prehash: Option<&[u8]>,
) -> Result<(PathBuf, Claim), CliError> {
    let claim = claim(manifest, seq);
    let text = match prehash {
        Some(prehash) => key.sign_prehashed(prehash, &claim.to_comment())?,
        None => key.sign(artifact, &claim.to_comment())?,
    };
    let path = signature_path(artifact);
    write_file(&path, text.as_bytes(), 0o644, false)?;
    Ok((path, claim))
}

/// Writes a statement, signed by `key`, that `action` applies to the key in
/// `subject` (a public key file): `<out>`, by default `<subject>.<action>.minisig`.
pub fn statement(
    subject: &Path,
    key: &SecretKey,
    action: Action,
    out: Option<PathBuf>,
) -> Result<PathBuf, CliError> {
    let subject_key = public_key(subject)?;
    let comment = Statement {
        action,
        key: subject_key.id(),
    }
    .to_comment();
    let text = key.sign(subject, &comment)?;
    let out = out.unwrap_or_else(|| with_suffix(subject, &format!(".{action}.minisig")));
    write_file(&out, text.as_bytes(), 0o644, false)?;
    Ok(out)
}

/// `path` with `suffix` appended to its name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes `bytes` to `path` with `mode`, whole or not at all; flushed first when
/// `durable` (a key), or left to the system as the artifact and its sidecar are (a
/// signature, which can be made again).
fn write_file(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::failure(format!("cannot write {}", path.display()), e);
    let temp = with_suffix(path, ".tmp");
    let _ = fs::remove_file(&temp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(fail)?;
    file.write_all(bytes)
        .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
        .map_err(fail)?;
    fs::rename(&temp, path).map_err(fail)
}

/// The passphrase of the secret key at `path`.
fn passphrase(path: &Path) -> Result<String, CliError> {
    if let Ok(passphrase) = std::env::var(PASSPHRASE_VAR) {
        return Ok(passphrase);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(CliError::usage(format!(
            "the secret key {} is encrypted, and there is no terminal to ask for its passphrase",
            path.display()
        ))
        .hint(format!("set {PASSPHRASE_VAR}")));
    }
    rpassword::prompt_password(format!("passphrase for {}: ", path.display()))
        .map_err(|e| CliError::failure("cannot read the passphrase", e))
}

/// The passphrase for a new secret key: `SHIP_KEY_PASSPHRASE`, or asked twice.
fn new_passphrase() -> Result<String, CliError> {
    if let Ok(passphrase) = std::env::var(PASSPHRASE_VAR) {
        if passphrase.is_empty() {
            return Err(CliError::usage(format!("{PASSPHRASE_VAR} is empty"))
                .hint("pass --unencrypted for a key without a passphrase"));
        }
        return Ok(passphrase);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(CliError::usage(
            "a new secret key is encrypted with a passphrase, and there is no terminal to ask for one",
        )
        .hint(format!("set {PASSPHRASE_VAR}, or pass --unencrypted (for a CI secrets store)")));
    }
    let read = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map_err(|e| CliError::failure("cannot read the passphrase", e))
    };
    let first = read("passphrase for the new secret key: ")?;
    if first.is_empty() {
        return Err(
            CliError::usage("an empty passphrase").hint("pass --unencrypted for a key without one")
        );
    }
    if read("the same passphrase again: ")? != first {
        return Err(CliError::usage("the two passphrases differ"));
    }
    Ok(first)
}
