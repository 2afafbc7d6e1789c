//! `ship pack`: builds the artifact, reports findings, prints the digest.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use manifests::FindingKind;
use serde::Serialize;

use crate::error::CliError;
use crate::printer::{Printer, count};
use crate::settings::PackSettings;

/// Trees smaller than this pack too fast for a bar to be worth drawing.
const PROGRESS_THRESHOLD: u64 = 8 << 20;

pub fn run(settings: PackSettings, printer: &Printer) -> Result<(), CliError> {
    let options = &settings.options;
    // The key (and its passphrase) before the work, not after.
    let key = settings
        .sign
        .as_deref()
        .map(crate::signing::SecretKey::load)
        .transpose()?;
    let bar = Bar::new(printer.draws_bars());
    let started = std::time::Instant::now();
    let packed = packager::pack_with(options, settings.relocation, &bar).map_err(|e| {
        let strict = matches!(e, packager::PackError::NotRelocatable { .. });
        let err = CliError::failure(
            format!(
                "cannot pack {} {} from {}",
                options.name,
                options.version,
                options.dir.display()
            ),
            e,
        );
        if strict {
            err.hint("fix the findings, or pack without --strict to record them as warnings")
        } else {
            err
        }
    })?;
    bar.finish();
    let manifest = &packed.manifest;
    let signature = key
        .map(|key| {
            crate::signing::sign_artifact(
                &packed.artifact,
                manifest,
                &key,
                None,
                packed.prehash.as_deref(),
            )
            .map(|(path, claim)| (path, key.id(), claim.seq))
        })
        .transpose()?;
    if printer.is_json() {
        #[derive(Serialize)]
        struct Packed<'a> {
            artifact: &'a std::path::Path,
            sidecar: &'a std::path::Path,
            sha256: &'a manifests::Sha256,
            size: u64,
            name: &'a manifests::AppName,
            version: &'a manifests::Version,
            entries: u64,
            unpacked_size: u64,
            payload_digest: &'a manifests::Sha256,
            relocatability: &'a [manifests::Finding],
            rewrites: &'a [manifests::Rewrite],
            host_requirements: &'a [manifests::HostRequirement],
            signature: Option<&'a std::path::Path>,
        }
        printer.event(
            "packed",
            &Packed {
                artifact: &packed.artifact,
                sidecar: &packed.sidecar,
                sha256: &packed.digest,
                size: packed.size,
                name: &manifest.name,
                version: &manifest.version,
                entries: manifest.entry_count,
                unpacked_size: manifest.unpacked_size,
                payload_digest: &manifest.payload_digest,
                relocatability: &manifest.relocatability,
                rewrites: &manifest.rewrites,
                host_requirements: &manifest.host_requirements,
                signature: signature.as_ref().map(|(path, _, _)| path.as_path()),
            },
        );
        return Ok(());
    }
    if !manifest.rewrites.is_empty() {
        printer.note(format_args!(
            "relocated: rewrote {} so the release runs from any path ({}); `ship inspect` lists them",
            count(manifest.rewrites.len() as u64, "entry"),
            rewrite_kinds(&manifest.rewrites)
        ));
    }
    for (target, links) in manifest.host_paths() {
        printer.note(format_args!(
            "host requirement: every host needs {target} ({} points to it)",
            links.join(", ")
        ));
    }
    for finding in &manifest.relocatability {
        printer.warn(format_args!("not relocatable: {finding}"));
    }
    let refused_by_agent = manifest.relocatability.iter().any(|f| {
        matches!(
            f.kind,
            FindingKind::AbsoluteSymlink | FindingKind::EscapingSymlink
        )
    });
    if refused_by_agent {
        printer.warn(
            "ship-agent refuses to unpack absolute or escaping symlinks: this artifact cannot be deployed as it is",
        );
    }
    printer.note(format_args!(
        "packed {} {}: {} entries, {} → {} in {:.1}s",
        manifest.name,
        manifest.version,
        manifest.entry_count,
        agent::human_bytes(manifest.unpacked_size),
        agent::human_bytes(packed.size),
        started.elapsed().as_secs_f64(),
    ));
    if let Some((path, key, seq)) = &signature {
        printer.note(format_args!(
            "signed by key {key} (sequence {seq}): {}",
            path.display()
        ));
    }
    printer.data(&format!(
        "{}  {}\n",
        packed.digest,
        packed.artifact.display()
    ));
    Ok(())
}

/// "3 #! lines, 1 activation script, …": how many rewrites of each kind.
fn rewrite_kinds(rewrites: &[manifests::Rewrite]) -> String {
    use manifests::RewriteKind;
    let mut counts: Vec<(&str, u64)> = Vec::new();
    for rewrite in rewrites {
        let noun = match rewrite.kind {
            RewriteKind::Shebang => "#! line",
            RewriteKind::ActivateScript => "activation script",
            RewriteKind::PyvenvCfg => "pyvenv.cfg",
            RewriteKind::Pth => ".pth file",
            RewriteKind::Symlink => "symlink",
            RewriteKind::Bytecode => "compiled .pyc file",
            RewriteKind::Other => "other",
        };
        match counts.iter_mut().find(|(n, _)| *n == noun) {
            Some((_, count)) => *count += 1,
            None => counts.push((noun, 1)),
        }
    }
    counts
        .into_iter()
        .map(|(noun, n)| match noun {
            "pyvenv.cfg" | "other" => format!("{n} {noun}"),
            _ => count(n, noun),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bytes packed and the rate, drawn once the tree proves bigger than a few MB, and
/// only where drawing is allowed.
struct Bar {
    bar: ProgressBar,
    enabled: bool,
    shown: std::cell::Cell<bool>,
}

impl Bar {
    fn new(enabled: bool) -> Bar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{spinner} packing {bytes} ({binary_bytes_per_sec})")
                .expect("valid template"),
        );
        Bar {
            bar,
            enabled,
            shown: std::cell::Cell::new(false),
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl packager::Progress for Bar {
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        if self.enabled && !self.shown.get() && self.bar.position() >= PROGRESS_THRESHOLD {
            self.shown.set(true);
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }
}
