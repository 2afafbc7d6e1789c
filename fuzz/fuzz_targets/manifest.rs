//! The manifest parser (`Manifest::from_json`). A manifest that parses writes
//! back to the same manifest, and a release claim made of it parses back and
//! checks. The entry list is also taken without the consistency checks, made
//! consistent (counts and payload digest), and must then pass them and round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifests::manifest::{FORMAT, payload_digest_of};
use manifests::signature::Claim;
use manifests::{EntryKind, Manifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::from_json(data) {
        round_trips(&manifest);
    }
    let Ok(mut manifest) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    manifest.format = FORMAT;
    manifest.entry_count = manifest.entries.len() as u64;
    let Some(size) = manifest
        .entries
        .iter()
        .try_fold(0u64, |sum, e| match e.kind {
            EntryKind::File { size, .. } => sum.checked_add(size),
            _ => Some(sum),
        })
    else {
        return;
    };
    manifest.unpacked_size = size;
    manifest.payload_digest = payload_digest_of(&manifest.entries, &manifest.host_requirements);
    if manifest.check().is_ok() {
        round_trips(&manifest);
    }
});

fn round_trips(manifest: &Manifest) {
    let json = manifest.to_json();
    let back = Manifest::from_json(&json).expect("a manifest written by ship reads back");
    assert_eq!(&back, manifest);
    assert_eq!(back.to_json(), json, "writing is deterministic");
    let claim = Claim::of(manifest, 7);
    assert_eq!(Claim::parse(&claim.to_comment()), Ok(claim.clone()));
    claim
        .check(manifest)
        .expect("a claim of a manifest checks against it");
    for entry in &manifest.entries {
        if let EntryKind::Symlink { .. } = entry.kind {
            let _ = manifest.resolve_symlink(&entry.path);
        }
    }
    let _ = manifest.host_paths();
}
