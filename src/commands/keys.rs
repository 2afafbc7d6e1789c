//! `ship key` (keypairs and trust statements) and `ship sign` (artifact signatures).

use std::path::Path;

use manifests::signature::Action;

use crate::cli::KeyCommand;
use crate::error::CliError;
use crate::printer::Printer;
use crate::signing::{self, SecretKey};

pub fn key(command: KeyCommand, printer: &Printer) -> Result<(), CliError> {
    match command {
        KeyCommand::Generate {
            out,
            unencrypted,
            force,
        } => {
            let (secret, public, id) = signing::generate(&out, !unencrypted, force)?;
            printer.note(format_args!(
                "key {id}: secret key {} ({}), public key {}",
                secret.display(),
                if unencrypted {
                    "not encrypted: keep it in a secrets store"
                } else {
                    "encrypted with the passphrase"
                },
                public.display()
            ));
            printer.data(&format!("{id}\n"));
        }
        KeyCommand::Endorse { new, key, out } => {
            statement(&new, &key, Action::Add, out, printer)?;
        }
        KeyCommand::Revoke { old, key, out } => {
            statement(&old, &key, Action::Revoke, out, printer)?;
        }
    }
    Ok(())
}

fn statement(
    subject: &Path,
    key: &Path,
    action: Action,
    out: Option<std::path::PathBuf>,
    printer: &Printer,
) -> Result<(), CliError> {
    let key = SecretKey::load(key)?;
    let subject_id = signing::public_key(subject)?.id();
    let path = signing::statement(subject, &key, action, out)?;
    printer.note(format_args!(
        "statement by key {}: {action} key {subject_id}",
        key.id()
    ));
    printer.data(&format!("{}\n", path.display()));
    Ok(())
}

pub fn sign(args: crate::cli::SignArgs, printer: &Printer) -> Result<(), CliError> {
    let artifact = crate::settings::artifact_path(args.artifact)?;
    // The artifact is checked before its signature vouches for it.
    let summary = packager::verify_file(&artifact, &packager::Expected::Sidecar).map_err(|e| {
        CliError::failure(format!("artifact {} did not verify", artifact.display()), e)
    })?;
    let manifest = &summary.manifest;
    if args.print_claim {
        printer.data(&format!(
            "{}\n",
            signing::claim(manifest, args.seq).to_comment()
        ));
        return Ok(());
    }
    let key = SecretKey::load(args.key.as_deref().expect("clap requires --key"))?;
    let (path, claim) = signing::sign_artifact(&artifact, manifest, &key, args.seq, None)?;
    printer.note(format_args!(
        "signed {} {} by key {} (sequence {})",
        manifest.name,
        manifest.version,
        key.id(),
        claim.seq
    ));
    printer.data(&format!("{}\n", path.display()));
    Ok(())
}
