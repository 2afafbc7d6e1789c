//! `ship verify`: re-reads an artifact and checks it against its sidecar and manifest,
//! and its signature against the keys given (`--key`, or `[trust]` in ship.toml).

use std::path::{Path, PathBuf};

use manifests::Sha256;
use packager::{Expected, VerifyError};
use serde::Serialize;

use crate::error::CliError;
use crate::printer::Printer;

pub fn run(
    artifact: &Path,
    digest: Option<Sha256>,
    keys: &[PathBuf],
    config: Option<PathBuf>,
    printer: &Printer,
) -> Result<(), CliError> {
    let keys = trusted_keys(keys, config)?;
    let expected = match digest {
        Some(d) => Expected::Digest(d),
        None => Expected::Sidecar,
    };
    let summary = packager::verify_file(artifact, &expected).map_err(|e| {
        let missing_sidecar = matches!(e, VerifyError::NoSidecar { .. });
        let err = CliError::failure(format!("artifact {} did not verify", artifact.display()), e);
        if missing_sidecar {
            err.hint("the sidecar is written by `ship pack` beside the artifact")
        } else {
            err
        }
    })?;
    let manifest = &summary.manifest;
    let sha256 = summary.digest.as_ref().expect("verify computes the digest");
    let signature = crate::signing::artifact_signature(artifact)?;
    let signed = match (&signature, keys.is_empty()) {
        (None, true) => "not signed".to_owned(),
        (Some(signature), true) => format!(
            "signed by key {}, not checked (no key given: --key, or [trust] keys)",
            signature.key()
        ),
        (None, false) => {
            return Err(CliError::failure(
                format!("artifact {} did not verify", artifact.display()),
                format!(
                    "it is not signed ({} is missing)",
                    crate::signing::signature_path(artifact).display()
                ),
            )
            .hint("sign it with `ship sign ARTIFACT --key KEY`"));
        }
        (Some(signature), false) => {
            let claim = crate::signing::check_signature(Some(artifact), manifest, signature, &keys)
                .map_err(|e| {
                    CliError::failure(format!("artifact {} did not verify", artifact.display()), e)
                })?;
            format!("signed by key {} (sequence {})", signature.key(), claim.seq)
        }
    };
    #[derive(Serialize)]
    struct Verified<'a> {
        artifact: &'a Path,
        sha256: &'a Sha256,
        name: &'a manifests::AppName,
        version: &'a manifests::Version,
        entries: u64,
        payload_digest: &'a Sha256,
        signature: &'a str,
    }
    printer.event(
        "verified",
        &Verified {
            artifact,
            sha256,
            name: &manifest.name,
            version: &manifest.version,
            entries: manifest.entry_count,
            payload_digest: &manifest.payload_digest,
            signature: &signed,
        },
    );
    printer.data(&format!(
        "{}: OK ({} {}, {} entries, sha256 {sha256}; {signed})\n",
        artifact.display(),
        manifest.name,
        manifest.version,
        manifest.entry_count,
    ));
    Ok(())
}

/// The keys `--key` names, else those of `[trust]` in the config file (when there is
/// one), relative to it.
fn trusted_keys(
    keys: &[PathBuf],
    config: Option<PathBuf>,
) -> Result<Vec<manifests::signature::PublicKey>, CliError> {
    if !keys.is_empty() {
        return keys.iter().map(|k| crate::signing::public_key(k)).collect();
    }
    let path = config.unwrap_or_else(|| PathBuf::from(manifests::config::FILE_NAME));
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let toml = manifests::config::ShipToml::load(&path)
        .map_err(|e| CliError::config("cannot use the fleet config", e))?;
    crate::signing::config_keys(&toml, &path)
}
