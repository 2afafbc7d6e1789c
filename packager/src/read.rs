//! Reading an artifact back: the zstd stream is decoded with a bounded window, the
//! tar stream is walked entry by entry (raw: PAX headers are interpreted here, not by
//! the `tar` crate), and every entry is checked against the manifest while its bytes
//! go by. A [`Visitor`] sees the manifest first and then each entry with a reader of
//! its content, so the same code verifies an artifact (`ship verify`) and unpacks one
//! (`ship-agent receive`).
//!
//! Anything ship does not write is refused: entry types other than directory, regular
//! file and symlink (and PAX `x` headers), PAX records other than `path`, `linkpath`
//! and times, entries missing from or not in the manifest, entries out of order,
//! sizes, modes or targets that differ, and data after the end of the archive.

use std::io::{self, Read};

use manifests::manifest::{MANIFEST_PATH, MAX_MANIFEST_BYTES};
use manifests::{Entry, EntryKind, Manifest, Sha256};
use sha2::Digest;

use crate::error::ReadError;

/// The largest zstd window accepted when decoding (128 MiB): a frame asking for more
/// is refused rather than allowed to claim memory.
pub const WINDOW_LOG_MAX: u32 = 27;

/// Largest PAX extended header accepted.
const MAX_PAX_BYTES: u64 = 64 << 10;

/// Most zero bytes accepted after the end-of-archive marker (GNU tar pads to 10 KiB
/// records; ship writes none).
const MAX_TRAILING_ZEROS: u64 = 64 << 10;

/// Sees an artifact as it is read. Each method may fail to stop the read.
pub trait Visitor {
    /// The visitor's error; read errors convert into it.
    type Error: From<ReadError>;

    /// The manifest, before any other entry.
    fn manifest(&mut self, _manifest: &Manifest) -> Result<(), Self::Error> {
        Ok(())
    }

    /// One entry; for a file, `content` yields its bytes (what is not read here is
    /// read and checked afterwards). A file's digest is checked once all of it was
    /// read, so a visitor that stores content must discard it if the read fails.
    fn entry(&mut self, _entry: &Entry, _content: &mut dyn Read) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A visitor that only lets the checks run.
pub struct CheckOnly;

impl Visitor for CheckOnly {
    type Error = ReadError;
}

/// What a complete read established.
#[derive(Debug)]
pub struct ReadSummary {
    /// The artifact's manifest.
    pub manifest: Manifest,
    /// SHA-256 of the artifact's bytes (compressed, as stored).
    pub digest: Sha256,
    /// Number of bytes of the artifact.
    pub size: u64,
}

/// Reads the whole artifact from `input`, checking it against its manifest and
/// showing it to `visitor`.
pub fn read_artifact<R: Read, V: Visitor>(
    input: R,
    visitor: &mut V,
) -> Result<ReadSummary, V::Error> {
    let raw = HashingReader {
        inner: input,
        hasher: sha2::Sha256::new(),
        bytes: 0,
    };
    let mut decoder = zstd::Decoder::new(raw).map_err(ReadError::Io)?;
    decoder
        .window_log_max(WINDOW_LOG_MAX)
        .map_err(ReadError::Io)?;
    let mut archive = tar::Archive::new(decoder);
    let manifest = {
        let mut entries = Entries {
            inner: archive.entries().map_err(ReadError::Io)?.raw(true),
        };
        let manifest = read_manifest_entry(&mut entries)?;
        visitor.manifest(&manifest)?;
        for expected in &manifest.entries {
            let Some(mut next) = entries.next()? else {
                return Err(ReadError::Missing {
                    path: expected.path.to_string(),
                }
                .into());
            };
            check_header(&next, expected, &manifest)?;
            match &expected.kind {
                EntryKind::File { size, sha256 } => {
                    let mut content = FileContent {
                        inner: &mut next.entry,
                        hasher: sha2::Sha256::new(),
                        left: *size,
                    };
                    visitor.entry(expected, &mut content)?;
                    io::copy(&mut content, &mut io::sink()).map_err(ReadError::Io)?;
                    if content.left > 0 {
                        return Err(ReadError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the archive ends inside {:?}", expected.path.as_str()),
                        ))
                        .into());
                    }
                    let actual = Sha256::from_hasher(content.hasher);
                    if actual != *sha256 {
                        return Err(ReadError::Digest {
                            path: expected.path.to_string(),
                            expected: sha256.clone(),
                            actual,
                        }
                        .into());
                    }
                }
                _ => visitor.entry(expected, &mut io::empty())?,
            }
        }
        if let Some(extra) = entries.next()? {
            return Err(ReadError::Unexpected { path: extra.path }.into());
        }
        manifest
    };
    let mut decoder = archive.into_inner();
    let mut zeros = [0u8; 8192];
    let mut trailing = 0u64;
    loop {
        let n = decoder.read(&mut zeros).map_err(ReadError::Io)?;
        if n == 0 {
            break;
        }
        trailing += n as u64;
        if trailing > MAX_TRAILING_ZEROS || zeros[..n].iter().any(|&b| b != 0) {
            return Err(ReadError::TrailingData.into());
        }
    }
    let mut rest = decoder.finish();
    if io::copy(&mut rest, &mut io::sink()).map_err(ReadError::Io)? != 0 {
        return Err(ReadError::TrailingData.into());
    }
    let raw = rest.into_inner();
    Ok(ReadSummary {
        manifest,
        digest: Sha256::from_hasher(raw.hasher),
        size: raw.bytes,
    })
}

/// One archive entry, with its PAX overrides applied.
struct Next<'a, R: Read> {
    entry: tar::Entry<'a, R>,
    path: String,
    link: Option<String>,
}

/// Raw tar entries, with PAX `x` headers folded into the entry that follows them.
struct Entries<'a, R: Read> {
    inner: tar::Entries<'a, R>,
}

impl<'a, R: Read> Entries<'a, R> {
    fn next(&mut self) -> Result<Option<Next<'a, R>>, ReadError> {
        let mut pax_path: Option<Vec<u8>> = None;
        let mut pax_link: Option<Vec<u8>> = None;
        let mut after_pax = false;
        loop {
            let Some(entry) = self.inner.next() else {
                if after_pax {
                    return Err(ReadError::BadPax {
                        path: String::new(),
                        reason: "it is not followed by an entry".into(),
                    });
                }
                return Ok(None);
            };
            let mut entry = entry?;
            let header_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let entry_type = entry.header().entry_type();
            if entry_type == tar::EntryType::XHeader {
                let size = entry.header().entry_size()?;
                if after_pax || size > MAX_PAX_BYTES {
                    return Err(ReadError::BadPax {
                        path: header_path,
                        reason: format!("{size} bytes, or two in a row"),
                    });
                }
                let mut records = Vec::new();
                entry.read_to_end(&mut records)?;
                for record in tar::PaxExtensions::new(&records) {
                    let record = record.map_err(|e| ReadError::BadPax {
                        path: header_path.clone(),
                        reason: e.to_string(),
                    })?;
                    match record.key() {
                        Ok("path") => pax_path = Some(record.value_bytes().to_vec()),
                        Ok("linkpath") => pax_link = Some(record.value_bytes().to_vec()),
                        Ok("mtime" | "atime" | "ctime") => {}
                        key => {
                            return Err(ReadError::BadPax {
                                path: header_path,
                                reason: format!(
                                    "record {:?} is not accepted",
                                    key.unwrap_or("(not UTF-8)")
                                ),
                            });
                        }
                    }
                }
                after_pax = true;
                continue;
            }
            let path = match pax_path {
                Some(p) => String::from_utf8_lossy(&p).into_owned(),
                None => header_path,
            };
            let what = match entry_type {
                tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Symlink => {
                    None
                }
                tar::EntryType::Link => Some("a hard link".to_owned()),
                tar::EntryType::Char => Some("a character device".into()),
                tar::EntryType::Block => Some("a block device".into()),
                tar::EntryType::Fifo => Some("a FIFO".into()),
                tar::EntryType::XGlobalHeader => Some("a global PAX header".into()),
                tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
                    Some("a GNU long-name header".into())
                }
                tar::EntryType::GNUSparse => Some("a sparse file".into()),
                other => Some(format!("of tar type {:?}", other.as_byte() as char)),
            };
            if let Some(what) = what {
                return Err(ReadError::UnsupportedEntry { path, what });
            }
            let link = match pax_link {
                Some(l) => Some(String::from_utf8_lossy(&l).into_owned()),
                None => entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned()),
            };
            return Ok(Some(Next { entry, path, link }));
        }
    }
}

/// Reads and parses the first entry, which must be the manifest.
fn read_manifest_entry<R: Read>(entries: &mut Entries<'_, R>) -> Result<Manifest, ReadError> {
    let Some(mut first) = entries.next()? else {
        return Err(ReadError::NoManifest {
            found: String::new(),
        });
    };
    if first.path != MANIFEST_PATH || first.entry.header().entry_type() != tar::EntryType::Regular {
        return Err(ReadError::NoManifest { found: first.path });
    }
    let size = first.entry.header().entry_size()?;
    if size > MAX_MANIFEST_BYTES {
        return Err(ReadError::ManifestTooLarge {
            size,
            max: MAX_MANIFEST_BYTES,
        });
    }
    let mut json = Vec::with_capacity(size as usize);
    first.entry.read_to_end(&mut json)?;
    Manifest::from_json(&json).map_err(ReadError::Manifest)
}

/// Checks an archive entry's header against the manifest entry expected next.
fn check_header<R: Read>(
    next: &Next<'_, R>,
    expected: &Entry,
    manifest: &Manifest,
) -> Result<(), ReadError> {
    let path = expected.path.as_str();
    if next.path != path {
        let listed = manifest
            .entries
            .binary_search_by(|e| e.path.as_str().as_bytes().cmp(next.path.as_bytes()))
            .is_ok();
        return Err(if listed {
            ReadError::Missing { path: path.into() }
        } else {
            ReadError::Unexpected {
                path: next.path.clone(),
            }
        });
    }
    let mismatch = |what: String| ReadError::Mismatch {
        path: path.into(),
        what,
    };
    let header = next.entry.header();
    let found_kind = match header.entry_type() {
        tar::EntryType::Directory => "dir",
        tar::EntryType::Symlink => "symlink",
        _ => "file",
    };
    if found_kind != expected.kind.name() {
        return Err(mismatch(format!(
            "a {found_kind} in the archive, a {} in the manifest",
            expected.kind.name()
        )));
    }
    let mode = header.mode()?;
    if mode != expected.mode.bits() {
        return Err(mismatch(format!(
            "mode {mode:04o} in the archive, {} in the manifest",
            expected.mode
        )));
    }
    let size = header.entry_size()?;
    let expected_size = match &expected.kind {
        EntryKind::File { size, .. } => *size,
        _ => 0,
    };
    if size != expected_size {
        return Err(mismatch(format!(
            "size {size} in the archive, {expected_size} in the manifest"
        )));
    }
    if let EntryKind::Symlink { target } = &expected.kind
        && next.link.as_deref() != Some(target.as_str())
    {
        return Err(mismatch(format!(
            "target {:?} in the archive, {target:?} in the manifest",
            next.link.as_deref().unwrap_or("")
        )));
    }
    Ok(())
}

/// A file's content as the visitor reads it: hashed, and cut at the manifest's size.
struct FileContent<'e, R: Read> {
    inner: &'e mut R,
    hasher: sha2::Sha256,
    left: u64,
}

impl<R: Read> Read for FileContent<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Counts and hashes the raw artifact bytes as the decoder pulls them.
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Reads only the manifest at the start of an artifact, without checking the rest.
pub fn read_manifest<R: Read>(input: R) -> Result<Manifest, ReadError> {
    let mut decoder = zstd::Decoder::new(input)?;
    decoder.window_log_max(WINDOW_LOG_MAX)?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = Entries {
        inner: archive.entries()?.raw(true),
    };
    read_manifest_entry(&mut entries)
}
