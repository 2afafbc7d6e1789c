//! The artifact reader on raw bytes: zstd frames, then the tar stream and the
//! manifest inside them, read as an artifact and as a delta
//! (`ship_fuzz::check_artifact` lists what a successful read must show).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ship_fuzz::check_artifact(data);
    // The manifest alone, as `ship inspect` reads it: never a panic.
    let _ = packager::read::read_manifest(data);
});
