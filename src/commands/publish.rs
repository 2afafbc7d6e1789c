//! `ship publish`: uploads an artifact, its sidecar and its manifest to the artifact
//! store (`--to`, or `[store]` of ship.toml), once: the same artifact again uploads
//! nothing, and another artifact under a published version is refused.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use manifests::Version;
use manifests::config::{self, ShipToml, StoreTable};
use serde_json::json;

use crate::cli::PublishArgs;
use crate::error::CliError;
use crate::printer::Printer;
use crate::store::{Published, Store};

pub fn run(args: PublishArgs, printer: &Printer) -> Result<(), CliError> {
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::FILE_NAME));
    let toml = if config.is_file() {
        Some(
            ShipToml::load(&config)
                .map_err(|e| CliError::config("cannot use the fleet config", e))?,
        )
    } else {
        None
    };
    let table = store_table(toml.as_ref(), args.env.name.as_deref())?;
    let path = artifact_path(&args.release, toml.as_ref(), &config)?;
    let sidecar = packager::sidecar_path(&path);
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| {
        CliError::failure(format!("cannot publish {}", path.display()), e)
    };
    let digest = packager::verify::read_sidecar(&sidecar, &path)
        .map_err(|e| fail(e.into()).hint("ship pack writes the sidecar beside the artifact"))?;
    let actual = packager::verify::file_digest(&path).map_err(|e| fail(e.into()))?;
    if actual != digest {
        return Err(fail(
            format!(
                "its sha256 is {actual}, but {} says {digest}",
                sidecar.display()
            )
            .into(),
        ));
    }
    let file = File::open(&path).map_err(|e| fail(e.into()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let manifest =
        packager::read::read_manifest(BufReader::new(file)).map_err(|e| fail(e.into()))?;
    let signature = crate::signing::artifact_signature(&path)?;
    let store = Store::open(&table, args.to.as_deref()).map_err(CliError::usage)?;
    let label = format!("{} {}", manifest.name, manifest.version);
    let published = store
        .publish(
            &path,
            &manifest.name,
            &manifest.version,
            &digest,
            manifest.to_json(),
            signature
                .as_ref()
                .map(manifests::signature::Signature::text),
            &mut |sent| printer.bytes(&label, sent, size),
        )
        .map_err(|e| CliError::failure(format!("cannot publish {label}"), e))?;
    let uploaded = published == Published::Uploaded;
    printer.event(
        "published",
        &json!({
            "store": store.url(),
            "name": manifest.name,
            "version": manifest.version,
            "sha256": digest,
            "uploaded": uploaded,
            "bytes": if uploaded { size } else { 0 },
        }),
    );
    printer.data(&if uploaded {
        format!(
            "published {label} to {}: {} uploaded (sha256 {digest})\n",
            store.url(),
            agent::human_bytes(size)
        )
    } else {
        format!(
            "{label} is already in {} with sha256 {digest}: nothing uploaded\n",
            store.url()
        )
    });
    Ok(())
}

/// `[store]`, with the environment's over it.
fn store_table(toml: Option<&ShipToml>, env: Option<&str>) -> Result<StoreTable, CliError> {
    let Some(toml) = toml else {
        return Ok(StoreTable::default());
    };
    let Some(name) = env else {
        return Ok(toml.store.clone());
    };
    let environment = toml
        .environments
        .iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, table)| table)
        .ok_or_else(|| CliError::usage(format!("the fleet config has no environment {name:?}")))?;
    Ok(toml.store.overridden_by(&environment.store))
}

/// The artifact `release` names: a path, or a version in the fleet's artifacts
/// directory.
fn artifact_path(
    release: &str,
    toml: Option<&ShipToml>,
    config: &Path,
) -> Result<PathBuf, CliError> {
    if release.contains('/') || release.ends_with(".tar.zst") {
        return crate::settings::artifact_path(PathBuf::from(release));
    }
    let version: Version = release
        .parse()
        .map_err(|e: manifests::IdError| CliError::usage(e.to_string()))?;
    let toml = toml.ok_or_else(|| {
        CliError::usage(format!(
            "no fleet config at {} to find the artifact of {version} in: name the artifact's path",
            config.display()
        ))
    })?;
    let app = toml
        .app
        .name
        .as_ref()
        .ok_or_else(|| CliError::usage(format!("{} has no [app] name", config.display())))?;
    Ok(crate::inventory::artifacts_dir(toml, config)
        .join(packager::artifact_file_name(app, &version)))
}
