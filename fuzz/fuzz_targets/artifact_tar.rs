//! The artifact reader on the tar stream: the input is the uncompressed payload,
//! whose manifest (when it parses) is made consistent with itself so that mutated
//! entries, headers and PAX records reach the checks of each entry; it is then
//! compressed and read as an artifact and as a delta.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tar = ship_fuzz::repair_manifest(data);
    let artifact = zstd::bulk::compress(&tar, 1).expect("zstd compresses any bytes");
    ship_fuzz::check_artifact(&artifact);
});
