//! `ship inspect`: reads only the manifest entry and shows it.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use manifests::EntryKind;

use crate::error::CliError;
use crate::printer::{Printer, count};

/// Shows the manifest of `artifact`: for people, or (`json`) the document itself.
pub fn run(artifact: &Path, json: bool, printer: &Printer) -> Result<(), CliError> {
    let file = File::open(artifact)
        .map_err(|e| CliError::failure(format!("cannot open {}", artifact.display()), e))?;
    let manifest = packager::read::read_manifest(BufReader::new(file)).map_err(|e| {
        CliError::failure(
            format!("cannot read the manifest of {}", artifact.display()),
            e,
        )
    })?;
    if json {
        printer.data(&String::from_utf8_lossy(&manifest.to_json()));
        return Ok(());
    }
    let (mut dirs, mut files, mut links) = (0u64, 0u64, 0u64);
    for entry in &manifest.entries {
        match entry.kind {
            EntryKind::Dir => dirs += 1,
            EntryKind::File { .. } => files += 1,
            EntryKind::Symlink { .. } => links += 1,
        }
    }
    let source = match &manifest.source {
        Some(s) if s.dirty => format!("{} (with uncommitted changes)", s.commit),
        Some(s) => s.commit.clone(),
        None => "unknown (not packed from a git work tree)".into(),
    };
    let mut out = String::new();
    out.push_str(&format!("{} {}\n", manifest.name, manifest.version));
    out.push_str(&format!("  created      {}\n", manifest.created));
    out.push_str(&format!("  source       {source}\n"));
    out.push_str(&format!(
        "  entries      {} ({}, {}, {})\n",
        manifest.entry_count,
        count(dirs, "directory"),
        count(files, "file"),
        count(links, "symlink"),
    ));
    out.push_str(&format!(
        "  unpacked     {}\n",
        agent::human_bytes(manifest.unpacked_size)
    ));
    out.push_str(&format!(
        "  compression  zstd {} level {}\n",
        manifest.compression.zstd_version, manifest.compression.level
    ));
    out.push_str(&format!("  payload      {}\n", manifest.payload_digest));
    if !manifest.rewrites.is_empty() {
        out.push_str(&format!(
            "  relocated    {} rewritten:\n",
            count(manifest.rewrites.len() as u64, "entry")
        ));
        // Compiled files come by the thousand: one line for them (--json lists each).
        let (bytecode, others): (Vec<_>, Vec<_>) = manifest
            .rewrites
            .iter()
            .partition(|r| r.kind == manifests::RewriteKind::Bytecode);
        for rewrite in others {
            out.push_str(&format!("    {rewrite}\n"));
        }
        if let Some(first) = bytecode.first() {
            out.push_str(&format!(
                "    {}: {} ({})\n",
                count(bytecode.len() as u64, "compiled .pyc file"),
                first.what,
                first.why
            ));
        }
    }
    for (target, links) in manifest.host_paths() {
        out.push_str(&format!(
            "  host needs   {target} (for {})\n",
            links.join(", ")
        ));
    }
    if manifest.relocatability.is_empty() {
        out.push_str("  relocatable  yes\n");
    } else {
        out.push_str(&format!(
            "  relocatable  no, {} finding(s):\n",
            manifest.relocatability.len()
        ));
        for finding in &manifest.relocatability {
            out.push_str(&format!("    {finding}\n"));
        }
    }
    printer.data(&out);
    printer.note("(the manifest only: run `ship verify` to check the artifact against it)");
    Ok(())
}
