//! The delta reader on the tar stream of a delta: the input is a base manifest (its
//! length in the first two bytes, little-endian; 0 for none) and the uncompressed
//! stream, whose manifest is made consistent with itself as in `artifact_tar`; the
//! stream is then compressed against the base, as ship sends deltas, and read.
//! Every entry of a delta that reads must be shown or left out, once, in the
//! manifest's order, and only files may be left out.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len));
    if len > rest.len() {
        return;
    }
    let (base, tar) = rest.split_at(len);
    let tar = ship_fuzz::repair_manifest(tar);
    let mut encoder =
        zstd::Encoder::with_ref_prefix(Vec::new(), 1, base).expect("a zstd encoder starts");
    encoder.write_all(&tar).expect("zstd compresses any bytes");
    let stream = encoder.finish().expect("zstd compresses any bytes");
    ship_fuzz::check_delta(&stream, (len > 0).then(|| base.to_vec()));
});
