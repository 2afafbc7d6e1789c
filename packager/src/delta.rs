//! Delta streams: an artifact cut down to what one host lacks. The stream has the
//! artifact's whole manifest (so the host checks everything against it), every
//! directory and symlink, and only the files whose content the host does not have,
//! in the manifest's order; [`read_delta`](crate::read::read_delta) reads it, and the
//! host supplies the other files from its own releases, checking each.
//!
//! The stream is written from the artifact as the checking reader reads it, so what
//! leaves is what was packed.

use std::io::{self, Read, Write};

use manifests::{Entry, EntryKind, Manifest, Sha256};

use crate::error::ReadError;
use crate::pack::{encoder, manifest_frame, manifest_frame_with};
use crate::read::{Visitor, read_artifact};
use crate::tarfmt::{Kind, TarWriter};

/// Why a delta stream could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The artifact did not read back as its manifest says.
    #[error("the artifact does not read back")]
    Read(#[from] ReadError),
    /// Writing the stream failed.
    #[error("cannot write the delta stream")]
    Write(#[source] io::Error),
}

/// What a delta stream carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaSize {
    /// Files sent.
    pub files_sent: u64,
    /// Bytes of file content sent (before compression).
    pub bytes_sent: u64,
    /// Files left to the host.
    pub files_reused: u64,
    /// Bytes of file content left to the host.
    pub bytes_reused: u64,
}

/// Writes to `out` the delta stream of the artifact read from `artifact`: its
/// manifest, its directories and symlinks, and the files whose content `send` asks
/// for, compressed at `level` with `threads` workers.
///
/// `base`: the bytes of a manifest the receiver has (a release of the same app); the
/// manifest's frame is then compressed against it, which makes it a few hundred
/// bytes where it would be a sizeable share of a small delta. The receiver needs the
/// very same bytes to read it.
pub fn write_delta<R, W>(
    artifact: R,
    send: &dyn Fn(&Sha256) -> bool,
    out: W,
    level: i32,
    threads: u32,
    base: Option<&[u8]>,
) -> Result<(W, DeltaSize), DeltaError>
where
    R: Read + Send + 'static,
    W: Write,
{
    let mut writer = Writer {
        out: Some(out),
        tar: None,
        send,
        level,
        threads,
        base,
        size: DeltaSize::default(),
    };
    read_artifact(artifact, &mut writer, false)?;
    let tar = writer.tar.take().expect("the manifest came first");
    let out = tar
        .finish()
        .and_then(zstd::Encoder::finish)
        .map_err(DeltaError::Write)?;
    Ok((out, writer.size))
}

struct Writer<'a, W: Write> {
    /// The sink, until the manifest's frame is written.
    out: Option<W>,
    /// The payload's frame, once it is started.
    tar: Option<TarWriter<zstd::Encoder<'static, W>>>,
    send: &'a dyn Fn(&Sha256) -> bool,
    level: i32,
    threads: u32,
    base: Option<&'a [u8]>,
    size: DeltaSize,
}

/// The manifest's frame compressed against `base` (as `zstd --patch-from` does): a
/// window that covers the base, and long-distance matching to find it.
fn manifest_frame_against(manifest: &Manifest, base: &[u8], level: i32) -> io::Result<Vec<u8>> {
    // The new manifest is about the base's size.
    let window = (2 * base.len()).next_power_of_two().trailing_zeros();
    let mut encoder = zstd::Encoder::with_ref_prefix(Vec::new(), level, base)?;
    encoder.window_log(window.clamp(10, crate::read::WINDOW_LOG_MAX))?;
    encoder.long_distance_matching(true)?;
    encoder.include_checksum(true)?;
    manifest_frame_with(manifest, encoder, 0)
}

impl<W: Write> Visitor for Writer<'_, W> {
    type Error = DeltaError;

    fn manifest(&mut self, manifest: &Manifest) -> Result<(), DeltaError> {
        let mut out = self.out.take().expect("one manifest");
        let frame = match self.base {
            Some(base) => manifest_frame_against(manifest, base, self.level),
            None => manifest_frame(manifest, self.level, self.threads, 0),
        }
        .map_err(DeltaError::Write)?;
        out.write_all(&frame).map_err(DeltaError::Write)?;
        let encoder = encoder(out, self.level, self.threads).map_err(DeltaError::Write)?;
        self.tar = Some(TarWriter::new(encoder, 0));
        Ok(())
    }

    fn entry(&mut self, entry: &Entry, content: &mut dyn Read) -> Result<(), DeltaError> {
        let tar = self.tar.as_mut().expect("the manifest came first");
        let path = entry.path.as_str();
        let write = DeltaError::Write;
        match &entry.kind {
            EntryKind::Dir => tar.header(path, entry.mode, Kind::Dir).map_err(write),
            EntryKind::Symlink { target } => tar
                .header(path, entry.mode, Kind::Symlink { target })
                .map_err(write),
            EntryKind::File { size, sha256 } => {
                if !(self.send)(sha256) {
                    self.size.files_reused += 1;
                    self.size.bytes_reused += size;
                    return Ok(());
                }
                tar.header(path, entry.mode, Kind::File { size: *size })
                    .map_err(write)?;
                let copied = io::copy(content, tar.get_mut()).map_err(write)?;
                if copied != *size {
                    return Err(DeltaError::Write(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{path}: {copied} of {size} bytes"),
                    )));
                }
                tar.pad(*size).map_err(write)?;
                self.size.files_sent += 1;
                self.size.bytes_sent += size;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;

    use super::*;
    use crate::pack::{PackOptions, pack};
    use crate::read::read_delta;

    /// `tree` packed as `version` of the app "shop" into `out`.
    fn pack_as(
        tree: &std::path::Path,
        out: &std::path::Path,
        version: &str,
    ) -> crate::pack::Packed {
        pack(
            &PackOptions {
                dir: tree.to_owned(),
                name: "shop".parse().unwrap(),
                version: version.parse().unwrap(),
                out_dir: out.to_owned(),
                level: 3,
                mtime: 0,
                strict: false,
                threads: 1,
                behaviour: Default::default(),
                prehash: false,
            },
            &(),
        )
        .unwrap()
    }

    /// What a delta read gave: each file's content as sent, or `None` where the
    /// stream left it to the host.
    #[derive(Default)]
    struct Received(BTreeMap<String, Option<Vec<u8>>>);

    impl Visitor for Received {
        type Error = ReadError;

        fn entry(&mut self, entry: &Entry, content: &mut dyn Read) -> Result<(), ReadError> {
            if let EntryKind::File { .. } = entry.kind {
                let mut bytes = Vec::new();
                content.read_to_end(&mut bytes).map_err(ReadError::Io)?;
                self.0.insert(entry.path.to_string(), Some(bytes));
            }
            Ok(())
        }

        fn absent(&mut self, entry: &Entry) -> Result<(), ReadError> {
            self.0.insert(entry.path.to_string(), None);
            Ok(())
        }
    }

    #[test]
    fn a_delta_carries_only_the_files_asked_for_and_reads_back_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        fs::create_dir_all(tree.join("app/lib")).unwrap();
        fs::write(tree.join("app/main.py"), "print('v2')\n").unwrap();
        fs::write(tree.join("app/lib/util.py"), "X = 1\n".repeat(1000)).unwrap();
        fs::write(tree.join("app/lib/same.py"), "X = 1\n".repeat(1000)).unwrap();
        std::os::unix::fs::symlink("main.py", tree.join("app/run")).unwrap();
        let packed = pack_as(&tree, &tmp.path().join("out"), "v2");
        let changed = Sha256::of(b"print('v2')\n");
        let artifact = fs::File::open(&packed.artifact).unwrap();
        let (stream, size) =
            write_delta(artifact, &|sha| *sha == changed, Vec::new(), 3, 1, None).unwrap();
        assert_eq!(
            size,
            DeltaSize {
                files_sent: 1,
                bytes_sent: 12,
                files_reused: 2,
                bytes_reused: 12_000,
            }
        );
        assert!(
            (stream.len() as u64) < packed.size,
            "{} of {}",
            stream.len(),
            packed.size
        );
        let mut received = Received::default();
        let summary = read_delta(io::Cursor::new(stream.clone()), &mut received, None).unwrap();
        assert_eq!(summary.manifest, packed.manifest);
        assert_eq!(
            received.0,
            BTreeMap::from([
                ("app/lib/same.py".to_owned(), None),
                ("app/lib/util.py".to_owned(), None),
                ("app/main.py".to_owned(), Some(b"print('v2')\n".to_vec())),
            ])
        );
        // Asked for everything, it is the artifact again, file for file.
        let artifact = fs::File::open(&packed.artifact).unwrap();
        let (full, size) = write_delta(artifact, &|_| true, Vec::new(), 3, 1, None).unwrap();
        assert_eq!(size.files_reused, 0);
        crate::read::read_artifact(io::Cursor::new(full), &mut crate::read::CheckOnly, false)
            .unwrap();
    }

    #[test]
    fn against_a_base_the_manifest_costs_next_to_nothing_and_needs_that_base() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        fs::create_dir_all(tree.join("lib")).unwrap();
        for i in 0..400 {
            fs::write(tree.join(format!("lib/m{i}.py")), format!("X = {i}\n")).unwrap();
        }
        let out = tmp.path().join("out");
        let v1 = pack_as(&tree, &out, "v1");
        fs::write(tree.join("lib/m7.py"), "X = 'seven'\n").unwrap();
        let v2 = pack_as(&tree, &out, "v2");
        let base = v1.manifest.to_json();
        let changed = Sha256::of(b"X = 'seven'\n");
        let delta = |base: Option<&[u8]>| {
            let artifact = fs::File::open(&v2.artifact).unwrap();
            write_delta(artifact, &|sha| *sha == changed, Vec::new(), 3, 1, base)
                .unwrap()
                .0
        };
        let (plain, against) = (delta(None), delta(Some(&base)));
        assert!(
            against.len() * 4 < plain.len(),
            "{} against the base, {} without",
            against.len(),
            plain.len()
        );
        let mut received = Received::default();
        let summary = read_delta(
            io::Cursor::new(against.clone()),
            &mut received,
            Some(base.clone()),
        )
        .unwrap();
        assert_eq!(summary.manifest, v2.manifest);
        assert_eq!(received.0.values().filter(|c| c.is_some()).count(), 1);
        // Without the base, or with another, it does not read.
        assert!(
            read_delta(
                io::Cursor::new(against.clone()),
                &mut Received::default(),
                None
            )
            .is_err()
        );
        let mut other = base.clone();
        other[10] ^= 1;
        assert!(
            read_delta(
                io::Cursor::new(against),
                &mut Received::default(),
                Some(other)
            )
            .is_err()
        );
    }
}
