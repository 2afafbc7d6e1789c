//! `ship pack`: builds the artifact, reports findings, prints the digest.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use manifests::FindingKind;
use serde::Serialize;

use crate::error::CliError;
use crate::output;
use crate::settings::PackSettings;

/// Trees smaller than this pack too fast for a bar to be worth drawing.
const PROGRESS_THRESHOLD: u64 = 8 << 20;

pub fn run(settings: PackSettings) -> Result<(), CliError> {
    let options = &settings.options;
    let bar = Bar::new(settings.progress);
    let started = std::time::Instant::now();
    let packed = packager::pack(options, &bar).map_err(|e| {
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
    if settings.json {
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
        }
        output::json_event(
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
            },
        );
        return Ok(());
    }
    for finding in &manifest.relocatability {
        output::warn(format_args!("not relocatable: {finding}"));
    }
    let refused_by_agent = manifest.relocatability.iter().any(|f| {
        matches!(
            f.kind,
            FindingKind::AbsoluteSymlink | FindingKind::EscapingSymlink
        )
    });
    if refused_by_agent {
        output::warn(
            "ship-agent refuses to unpack absolute or escaping symlinks: this artifact cannot be deployed as it is",
        );
    }
    output::note(format_args!(
        "packed {} {}: {} entries, {} → {} in {:.1}s",
        manifest.name,
        manifest.version,
        manifest.entry_count,
        output::human_bytes(manifest.unpacked_size),
        output::human_bytes(packed.size),
        started.elapsed().as_secs_f64(),
    ));
    println!("{}  {}", packed.digest, packed.artifact.display());
    Ok(())
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
