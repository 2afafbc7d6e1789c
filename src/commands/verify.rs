//! `ship verify`: re-reads an artifact and checks it against its sidecar and manifest.

use std::path::Path;

use manifests::Sha256;
use packager::{Expected, VerifyError};
use serde::Serialize;

use crate::error::CliError;
use crate::printer::Printer;

pub fn run(artifact: &Path, digest: Option<Sha256>, printer: &Printer) -> Result<(), CliError> {
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
    #[derive(Serialize)]
    struct Verified<'a> {
        artifact: &'a Path,
        sha256: &'a Sha256,
        name: &'a manifests::AppName,
        version: &'a manifests::Version,
        entries: u64,
        payload_digest: &'a Sha256,
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
        },
    );
    printer.data(&format!(
        "{}: OK ({} {}, {} entries, sha256 {sha256})\n",
        artifact.display(),
        manifest.name,
        manifest.version,
        manifest.entry_count,
    ));
    Ok(())
}
