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
use std::sync::mpsc;

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

    /// A file of the manifest that a delta stream does not carry ([`read_delta`]):
    /// the receiver must have its content already, and checks it. Artifacts carry
    /// every file, so this is never called for them.
    fn absent(&mut self, entry: &Entry) -> Result<(), Self::Error> {
        Err(ReadError::Missing {
            path: entry.path.to_string(),
        }
        .into())
    }
}

/// What the payload of a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// Every entry of the manifest: an artifact.
    Full,
    /// Every directory and symlink, and some of the files, in the manifest's order:
    /// a delta for a receiver that has the other files' contents.
    Delta,
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
    /// SHA-256 of the artifact's bytes (compressed, as stored), when asked for.
    pub digest: Option<Sha256>,
    /// Number of bytes of the artifact.
    pub size: u64,
}

/// Size of the pieces passed between the reading threads.
const CHUNK: usize = 1 << 20;

/// Files up to this size are hashed on the parsing thread.
const INLINE_HASH_MAX: u64 = 256 << 10;

/// Reads the whole artifact from `input`, checking it against its manifest and
/// showing it to `visitor`; with `hash_artifact`, also computes the artifact's own
/// sha256.
///
/// The work runs in three threads: one decompresses (and hashes the raw bytes),
/// this one parses the tar stream and runs the visitor, and one hashes file
/// contents. Every file's digest is checked by the time this returns, not
/// necessarily before the visitor sees the next entry, so a visitor that stores
/// content must discard it when the read fails.
pub fn read_artifact<R, V>(
    input: R,
    visitor: &mut V,
    hash_artifact: bool,
) -> Result<ReadSummary, V::Error>
where
    R: Read + Send + 'static,
    V: Visitor,
{
    read_stream(input, visitor, hash_artifact, Payload::Full, None)
}

/// Reads a delta stream from `input`: an artifact's manifest, then every directory
/// and symlink and only some of its files, in the manifest's order. Each file the
/// stream carries is checked as in [`read_artifact`]; each it leaves out goes to
/// [`Visitor::absent`], in its place in the manifest's order.
///
/// `base`: the bytes of the manifest the stream's manifest frame was compressed
/// against (`write_delta`'s base), when it was.
pub fn read_delta<R, V>(
    input: R,
    visitor: &mut V,
    base: Option<Vec<u8>>,
) -> Result<ReadSummary, V::Error>
where
    R: Read + Send + 'static,
    V: Visitor,
{
    read_stream(input, visitor, false, Payload::Delta, base)
}

fn read_stream<R, V>(
    input: R,
    visitor: &mut V,
    hash_artifact: bool,
    payload: Payload,
    base: Option<Vec<u8>>,
) -> Result<ReadSummary, V::Error>
where
    R: Read + Send + 'static,
    V: Visitor,
{
    let (chunks, received) = mpsc::sync_channel(4);
    let (spent, recycled) = mpsc::channel();
    let decompressor =
        std::thread::spawn(move || decompress(input, hash_artifact, base, &chunks, &recycled));
    let hasher = FileHasher::spawn();
    let mut archive = tar::Archive::new(ChannelReader {
        chunks: received,
        spent,
        chunk: Vec::new(),
        pos: 0,
        failure: None,
    });
    let manifest = {
        let mut entries = Entries {
            inner: archive.entries().map_err(ReadError::Io)?.raw(true),
        };
        let manifest = read_manifest_entry(&mut entries)?;
        visitor.manifest(&manifest)?;
        // The next entry of the stream, read but not yet matched (a delta leaves
        // files out, so an entry may belong further down the manifest).
        let mut pending = None;
        for expected in &manifest.entries {
            if pending.is_none() {
                pending = entries.next()?;
            }
            let left_out = payload == Payload::Delta
                && matches!(expected.kind, EntryKind::File { .. })
                && pending
                    .as_ref()
                    .is_none_or(|next: &Next<'_, _>| next.path != expected.path.as_str());
            if left_out {
                visitor.absent(expected)?;
                continue;
            }
            let Some(mut next) = pending.take() else {
                return Err(ReadError::Missing {
                    path: expected.path.to_string(),
                }
                .into());
            };
            check_header(&next, expected, &manifest)?;
            match &expected.kind {
                EntryKind::File { size, sha256 } => {
                    // Small files are hashed here: handing them to the hashing
                    // thread would cost more in wake-ups than it saves.
                    let hashing = if *size <= INLINE_HASH_MAX {
                        Hashing::Inline(sha2::Sha256::new())
                    } else {
                        Hashing::Offloaded(&hasher)
                    };
                    let mut content = FileContent {
                        inner: &mut next.entry,
                        hashing,
                        left: *size,
                    };
                    visitor.entry(expected, &mut content)?;
                    content.drain().map_err(ReadError::Io)?;
                    if content.left > 0 {
                        return Err(ReadError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the archive ends inside {:?}", expected.path.as_str()),
                        ))
                        .into());
                    }
                    match content.hashing {
                        Hashing::Inline(h) => {
                            let actual = Sha256::from_hasher(h);
                            if actual != *sha256 {
                                return Err(ReadError::Digest {
                                    path: expected.path.to_string(),
                                    expected: sha256.clone(),
                                    actual,
                                }
                                .into());
                            }
                        }
                        Hashing::Offloaded(hasher) => hasher.end(expected.path.as_str(), sha256)?,
                    }
                }
                _ => visitor.entry(expected, &mut io::empty())?,
            }
        }
        let extra = match pending {
            Some(extra) => Some(extra),
            None => entries.next()?,
        };
        if let Some(extra) = extra {
            return Err(ReadError::Unexpected { path: extra.path }.into());
        }
        manifest
    };
    let mut rest = archive.into_inner();
    let mut zeros = vec![0u8; 64 << 10];
    let mut trailing = 0u64;
    loop {
        let n = rest.read(&mut zeros).map_err(ReadError::Io)?;
        if n == 0 {
            break;
        }
        trailing += n as u64;
        if trailing > MAX_TRAILING_ZEROS || zeros[..n].iter().any(|&b| b != 0) {
            return Err(ReadError::TrailingData.into());
        }
    }
    if let Some(e) = rest.failure.take() {
        return Err(ReadError::Io(e).into());
    }
    hasher.finish()?;
    let (digest, size) = decompressor
        .join()
        .expect("the decompressor does not panic")
        .map_err(ReadError::Io)?;
    Ok(ReadSummary {
        manifest,
        digest,
        size,
    })
}

/// The decompressing thread: reads `input` (hashing it when asked), decodes it with
/// a bounded window and sends the tar stream on in pieces. An error is sent too.
/// Returns the raw digest and size once the input is exhausted.
fn decompress<R: Read>(
    input: R,
    hash: bool,
    base: Option<Vec<u8>>,
    out: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    recycled: &mpsc::Receiver<Vec<u8>>,
) -> io::Result<(Option<Sha256>, u64)> {
    let raw = HashingReader {
        inner: input,
        hasher: hash.then(sha2::Sha256::new),
        bytes: 0,
    };
    // A base applies to the first frame (the manifest's) and is dropped at its end.
    let decoder = match &base {
        Some(base) => zstd::Decoder::with_ref_prefix(io::BufReader::new(raw), base),
        None => zstd::Decoder::new(raw),
    };
    let decoder = decoder.and_then(|mut decoder| {
        decoder.window_log_max(WINDOW_LOG_MAX)?;
        Ok(decoder)
    });
    let mut decoder = match decoder {
        Ok(decoder) => decoder,
        Err(e) => {
            let _ = out.send(Err(io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
    };
    loop {
        // Pieces come back once read, so after the first few none is allocated (or
        // zeroed) again.
        let mut piece = recycled.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
        piece.resize(CHUNK, 0);
        let mut filled = 0;
        while filled < piece.len() {
            match decoder.read(&mut piece[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = out.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            }
        }
        if filled == 0 {
            break;
        }
        piece.truncate(filled);
        if out.send(Ok(piece)).is_err() {
            // The reader stopped: nobody needs the rest.
            return Err(io::Error::other("the reader stopped"));
        }
    }
    let raw = decoder.finish().into_inner();
    Ok((raw.hasher.map(Sha256::from_hasher), raw.bytes))
}

/// The tar stream as the decompressing thread sends it.
struct ChannelReader {
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    /// Where read pieces go back to the decompressor for reuse.
    spent: mpsc::Sender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    /// An error the tar parser may have swallowed, kept to report at the end.
    #[allow(clippy::struct_field_names)]
    failure: Option<io::Error>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.chunk.len() {
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    let spent = std::mem::replace(&mut self.chunk, chunk);
                    if spent.capacity() >= CHUNK {
                        let _ = self.spent.send(spent);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.failure = Some(io::Error::new(e.kind(), e.to_string()));
                    return Err(e);
                }
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What the file-hashing thread is told.
enum HashJob {
    /// More of the current file.
    Data(Vec<u8>),
    /// The current file ended; compare with its manifest digest.
    End { path: String, expected: Sha256 },
}

/// The file-hashing thread: hashes each file's bytes as they are read and keeps the
/// first mismatch.
struct FileHasher {
    jobs: mpsc::SyncSender<HashJob>,
    thread: std::thread::JoinHandle<Option<ReadError>>,
}

impl FileHasher {
    fn spawn() -> FileHasher {
        let (jobs, received) = mpsc::sync_channel::<HashJob>(4);
        let thread = std::thread::spawn(move || {
            let mut hasher = sha2::Sha256::new();
            let mut failure = None;
            for job in received {
                match job {
                    HashJob::Data(bytes) => hasher.update(&bytes),
                    HashJob::End { path, expected } => {
                        let actual = Sha256::from_hasher(std::mem::take(&mut hasher));
                        if actual != expected && failure.is_none() {
                            failure = Some(ReadError::Digest {
                                path,
                                expected,
                                actual,
                            });
                        }
                    }
                }
            }
            failure
        });
        FileHasher { jobs, thread }
    }

    fn data(&self, bytes: Vec<u8>) -> io::Result<()> {
        self.jobs
            .send(HashJob::Data(bytes))
            .map_err(|_| io::Error::other("the file hasher stopped"))
    }

    fn end(&self, path: &str, expected: &Sha256) -> Result<(), ReadError> {
        self.jobs
            .send(HashJob::End {
                path: path.to_owned(),
                expected: expected.clone(),
            })
            .map_err(|_| ReadError::Io(io::Error::other("the file hasher stopped")))
    }

    /// Waits for every file to be hashed; the first mismatch, if any.
    fn finish(self) -> Result<(), ReadError> {
        drop(self.jobs);
        match self.thread.join().expect("the file hasher does not panic") {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
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

/// How a file's bytes are hashed.
enum Hashing<'h> {
    /// Here, as they are read.
    Inline(sha2::Sha256),
    /// By the hashing thread.
    Offloaded(&'h FileHasher),
}

/// A file's content as the visitor reads it: cut at the manifest's size, and hashed.
struct FileContent<'e, R: Read> {
    inner: &'e mut R,
    hashing: Hashing<'e>,
    left: u64,
}

impl<R: Read> FileContent<'_, R> {
    /// Reads (and hashes) what the visitor left unread.
    fn drain(&mut self) -> io::Result<()> {
        let mut piece = Vec::new();
        while self.left > 0 {
            piece.resize(CHUNK.min(usize::try_from(self.left).unwrap_or(CHUNK)), 0);
            let n = self.inner.read(&mut piece)?;
            if n == 0 {
                return Ok(());
            }
            piece.truncate(n);
            self.left -= n as u64;
            match &mut self.hashing {
                Hashing::Inline(h) => h.update(&piece),
                Hashing::Offloaded(hasher) => hasher.data(std::mem::take(&mut piece))?,
            }
        }
        Ok(())
    }
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
        self.left -= n as u64;
        match &mut self.hashing {
            Hashing::Inline(h) => h.update(&buf[..n]),
            Hashing::Offloaded(hasher) if n > 0 => hasher.data(buf[..n].to_vec())?,
            Hashing::Offloaded(_) => {}
        }
        Ok(n)
    }
}

/// Counts (and, when asked, hashes) the raw artifact bytes as the decoder pulls them.
struct HashingReader<R> {
    inner: R,
    hasher: Option<sha2::Sha256>,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use manifests::manifest::{self, Compression, FORMAT};
    use manifests::{EntryPath, Mode, Timestamp};

    use super::*;
    use crate::tarfmt::{Kind, TarWriter};

    /// An entry to put into a crafted archive: the manifest's view and the bytes.
    struct Item {
        entry: Entry,
        content: Vec<u8>,
    }

    fn file(path: &str, content: &[u8]) -> Item {
        Item {
            entry: Entry {
                path: EntryPath::new(path).unwrap(),
                mode: Mode::REGULAR,
                kind: EntryKind::File {
                    size: content.len() as u64,
                    sha256: Sha256::of(content),
                },
            },
            content: content.to_vec(),
        }
    }

    fn dir(path: &str) -> Item {
        Item {
            entry: Entry {
                path: EntryPath::new(path).unwrap(),
                mode: Mode::EXECUTABLE,
                kind: EntryKind::Dir,
            },
            content: Vec::new(),
        }
    }

    fn link(path: &str, target: &str) -> Item {
        Item {
            entry: Entry {
                path: EntryPath::new(path).unwrap(),
                mode: Mode::SYMLINK,
                kind: EntryKind::Symlink {
                    target: target.into(),
                },
            },
            content: Vec::new(),
        }
    }

    fn manifest_for(items: &[Item]) -> Manifest {
        let entries: Vec<Entry> = items.iter().map(|i| i.entry.clone()).collect();
        Manifest {
            format: FORMAT,
            name: "shop".parse().unwrap(),
            version: "v1".parse().unwrap(),
            created: Timestamp::from_unix(0),
            source: None,
            compression: Compression {
                algorithm: "zstd".into(),
                zstd_version: "test".into(),
                level: 3,
            },
            entry_count: entries.len() as u64,
            unpacked_size: items.iter().map(|i| i.content.len() as u64).sum(),
            payload_digest: manifest::payload_digest(&entries),
            relocatability: Vec::new(),
            rewrites: Vec::new(),
            host_requirements: Vec::new(),
            behaviour: Default::default(),
            entries,
        }
    }

    /// Writes a tar stream: the manifest entry, then `items` as they are.
    fn tar_with(manifest: &Manifest, items: &[Item]) -> TarWriter<Vec<u8>> {
        let json = manifest.to_json();
        let mut w = TarWriter::new(Vec::new(), 0);
        w.header(
            MANIFEST_PATH,
            Mode::REGULAR,
            Kind::File {
                size: json.len() as u64,
            },
        )
        .unwrap();
        w.get_mut().write_all(&json).unwrap();
        w.pad(json.len() as u64).unwrap();
        for item in items {
            let kind = match &item.entry.kind {
                EntryKind::Dir => Kind::Dir,
                EntryKind::File { .. } => Kind::File {
                    size: item.content.len() as u64,
                },
                EntryKind::Symlink { target } => Kind::Symlink { target },
            };
            w.header(item.entry.path.as_str(), item.entry.mode, kind)
                .unwrap();
            w.get_mut().write_all(&item.content).unwrap();
            w.pad(item.content.len() as u64).unwrap();
        }
        w
    }

    fn compress(tar: &[u8]) -> Vec<u8> {
        zstd::encode_all(tar, 3).unwrap()
    }

    fn read(bytes: &[u8]) -> Result<ReadSummary, ReadError> {
        read_artifact(io::Cursor::new(bytes.to_vec()), &mut CheckOnly, true)
    }

    fn raw_header(path: &str, entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_entry_type(entry_type);
        h.set_mode(mode);
        h.set_size(size);
        h.set_cksum();
        h
    }

    fn good_items() -> Vec<Item> {
        vec![
            dir("bin"),
            file("bin/run", b"#!/bin/sh\n"),
            link("run", "bin/run"),
        ]
    }

    #[test]
    fn a_well_formed_artifact_reads_back_with_its_digest() {
        let items = good_items();
        let m = manifest_for(&items);
        let bytes = compress(&tar_with(&m, &items).finish().unwrap());
        let summary = read(&bytes).unwrap();
        assert_eq!(summary.manifest, m);
        assert_eq!(summary.digest, Some(Sha256::of(&bytes)));
        assert_eq!(summary.size, bytes.len() as u64);
    }

    #[test]
    fn the_visitor_sees_manifest_then_entries_in_order() {
        struct Record(Vec<String>);
        impl Visitor for Record {
            type Error = ReadError;
            fn manifest(&mut self, m: &Manifest) -> Result<(), ReadError> {
                self.0.push(format!("manifest {}", m.version));
                Ok(())
            }
            fn entry(&mut self, e: &Entry, content: &mut dyn Read) -> Result<(), ReadError> {
                let mut text = String::new();
                content.read_to_string(&mut text)?;
                self.0.push(format!("{} {text:?}", e.path));
                Ok(())
            }
        }
        let items = good_items();
        let m = manifest_for(&items);
        let bytes = compress(&tar_with(&m, &items).finish().unwrap());
        let mut record = Record(Vec::new());
        read_artifact(io::Cursor::new(bytes), &mut record, false).unwrap();
        assert_eq!(
            record.0,
            [
                "manifest v1",
                "bin \"\"",
                "bin/run \"#!/bin/sh\\n\"",
                "run \"\""
            ]
        );
    }

    #[test]
    fn an_entry_not_in_the_manifest_is_refused() {
        let items = good_items();
        let m = manifest_for(&items);
        let mut w = tar_with(&m, &items);
        w.header("extra", Mode::REGULAR, Kind::File { size: 0 })
            .unwrap();
        let err = read(&compress(&w.finish().unwrap())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entry \"extra\" is in the archive but not in the manifest"
        );
    }

    #[test]
    fn a_manifest_entry_missing_from_the_archive_is_refused() {
        let items = good_items();
        let m = manifest_for(&items);
        let err = read(&compress(&tar_with(&m, &items[..2]).finish().unwrap())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entry \"run\" is in the manifest but missing from the archive"
        );
        // Skipping one in the middle is named too.
        let without_middle = [dir("bin"), link("run", "bin/run")];
        let err = read(&compress(&tar_with(&m, &without_middle).finish().unwrap())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entry \"bin/run\" is in the manifest but missing from the archive"
        );
    }

    #[test]
    fn content_that_does_not_match_its_digest_is_refused() {
        let items = good_items();
        let m = manifest_for(&items);
        let mut tampered = good_items();
        tampered[1].content = b"#!/bin/XX\n".to_vec();
        let err = read(&compress(&tar_with(&m, &tampered).finish().unwrap())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("file \"bin/run\" is corrupt: its sha256 is "),
            "{err}"
        );
    }

    #[test]
    fn hard_links_devices_and_fifos_are_refused() {
        let m = manifest_for(&[]);
        for (entry_type, what) in [
            (tar::EntryType::Link, "a hard link"),
            (tar::EntryType::Char, "a character device"),
            (tar::EntryType::Block, "a block device"),
            (tar::EntryType::Fifo, "a FIFO"),
            (tar::EntryType::GNUSparse, "a sparse file"),
            (tar::EntryType::XGlobalHeader, "a global PAX header"),
        ] {
            let mut w = tar_with(&m, &[]);
            w.get_mut()
                .write_all(raw_header("evil", entry_type, 0o644, 0).as_bytes())
                .unwrap();
            let err = read(&compress(&w.finish().unwrap())).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "entry \"evil\" is {what}: only directories, regular files and symlinks are accepted"
                )
            );
        }
    }

    #[test]
    fn setuid_bits_and_changed_kinds_are_refused() {
        let items = vec![file("tool", b"x")];
        let m = manifest_for(&items);
        let mut w = tar_with(&m, &[]);
        w.get_mut()
            .write_all(raw_header("tool", tar::EntryType::Regular, 0o4755, 1).as_bytes())
            .unwrap();
        w.get_mut().write_all(b"x").unwrap();
        w.pad(1).unwrap();
        let err = read(&compress(&w.finish().unwrap())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entry \"tool\" does not match the manifest: mode 4755 in the archive, 0644 in the manifest"
        );

        let mut w = tar_with(&m, &[]);
        w.header("tool", Mode::EXECUTABLE, Kind::Dir).unwrap();
        let err = read(&compress(&w.finish().unwrap())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entry \"tool\" does not match the manifest: a dir in the archive, a file in the manifest"
        );
    }

    #[test]
    fn a_symlink_with_another_target_is_refused() {
        let m = manifest_for(&[link("l", "a")]);
        let err = read(&compress(
            &tar_with(&m, &[link("l", "/etc/passwd")]).finish().unwrap(),
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "entry \"l\" does not match the manifest: target \"/etc/passwd\" in the archive, \"a\" in the manifest"
        );
    }

    #[test]
    fn pax_records_other_than_names_and_times_are_refused() {
        let items = vec![file("a", b"abc")];
        let m = manifest_for(&items);
        let mut w = tar_with(&m, &[]);
        let mut records = Vec::new();
        crate::tarfmt::pax_record(&mut records, "size", b"1");
        w.get_mut()
            .write_all(
                raw_header("pax", tar::EntryType::XHeader, 0o644, records.len() as u64).as_bytes(),
            )
            .unwrap();
        w.get_mut().write_all(&records).unwrap();
        w.pad(records.len() as u64).unwrap();
        w.header("a", Mode::REGULAR, Kind::File { size: 3 })
            .unwrap();
        w.get_mut().write_all(b"abc").unwrap();
        w.pad(3).unwrap();
        let err = read(&compress(&w.finish().unwrap())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entry \"pax\" has an unacceptable PAX header: record \"size\" is not accepted"
        );
    }

    #[test]
    fn data_after_the_end_of_the_archive_is_refused() {
        let items = good_items();
        let m = manifest_for(&items);
        let mut tar = tar_with(&m, &items).finish().unwrap();
        tar.extend_from_slice(&[0u8; 10240]);
        read(&compress(&tar)).expect("zero padding (as GNU tar writes) is fine");
        tar.extend_from_slice(b"junk");
        let err = read(&compress(&tar)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "there is data after the end of the archive"
        );
        let mut bytes = compress(&tar_with(&m, &items).finish().unwrap());
        bytes.extend_from_slice(b"garbage after the frame");
        let err = read(&bytes).unwrap_err();
        assert!(matches!(err, ReadError::Io(_)), "{err}");
    }

    #[test]
    fn the_first_entry_must_be_a_sane_manifest() {
        let mut w = TarWriter::new(Vec::new(), 0);
        w.header("bin", Mode::EXECUTABLE, Kind::Dir).unwrap();
        let err = read(&compress(&w.finish().unwrap())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the first entry is \"bin\", not .ship/manifest.json: not a ship artifact"
        );

        let mut w = TarWriter::new(Vec::new(), 0);
        w.get_mut()
            .write_all(
                raw_header(MANIFEST_PATH, tar::EntryType::Regular, 0o644, 1 << 40).as_bytes(),
            )
            .unwrap();
        let err = read(&compress(&w.into_inner())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the manifest entry declares 1099511627776 bytes"),
            "{err}"
        );

        let err = read(&compress(&TarWriter::new(Vec::new(), 0).finish().unwrap())).unwrap_err();
        assert!(matches!(err, ReadError::NoManifest { .. }), "{err}");
    }

    #[test]
    fn frames_that_need_a_huge_window_are_refused() {
        let items = good_items();
        let m = manifest_for(&items);
        let tar = tar_with(&m, &items).finish().unwrap();
        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        encoder
            .set_parameter(zstd::zstd_safe::CParameter::WindowLog(WINDOW_LOG_MAX + 2))
            .unwrap();
        // Declaring no content size makes the frame header carry the window size.
        encoder.include_contentsize(false).unwrap();
        encoder.write_all(&tar).unwrap();
        let bytes = encoder.finish().unwrap();
        let err = read(&bytes).unwrap_err();
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains("Frame requires too much memory"), "{cause}");
    }

    /// What a delta read showed a visitor: each entry as `sent path` or `absent path`.
    #[derive(Default)]
    struct Seen(Vec<String>);

    impl Visitor for Seen {
        type Error = ReadError;

        fn entry(&mut self, entry: &Entry, _: &mut dyn Read) -> Result<(), ReadError> {
            self.0.push(format!("sent {}", entry.path.as_str()));
            Ok(())
        }

        fn absent(&mut self, entry: &Entry) -> Result<(), ReadError> {
            self.0.push(format!("absent {}", entry.path.as_str()));
            Ok(())
        }
    }

    fn read_delta_of(bytes: &[u8]) -> Result<Vec<String>, ReadError> {
        let mut seen = Seen::default();
        read_delta(io::Cursor::new(bytes.to_vec()), &mut seen, None)?;
        Ok(seen.0)
    }

    #[test]
    fn a_delta_leaves_files_out_and_the_visitor_is_told_in_order() {
        let items = vec![
            dir("app"),
            file("app/a.py", b"a"),
            file("app/b.py", b"b"),
            link("app/c.py", "b.py"),
            file("app/d.py", b"d"),
        ];
        let manifest = manifest_for(&items);
        let sent = [&items[0], &items[2], &items[3]];
        let sent: Vec<Item> = sent
            .iter()
            .map(|i| Item {
                entry: i.entry.clone(),
                content: i.content.clone(),
            })
            .collect();
        let stream = compress(&tar_with(&manifest, &sent).finish().unwrap());
        assert_eq!(
            read_delta_of(&stream).unwrap(),
            [
                "sent app",
                "absent app/a.py",
                "sent app/b.py",
                "sent app/c.py",
                "absent app/d.py"
            ]
        );
        // An artifact must carry every file.
        assert!(matches!(
            read(&stream),
            Err(ReadError::Missing { path }) if path == "app/a.py"
        ));
        // A visitor that cannot supply a file refuses the stream.
        assert!(matches!(
            read_delta(io::Cursor::new(stream), &mut CheckOnly, None),
            Err(ReadError::Missing { path }) if path == "app/a.py"
        ));
    }

    #[test]
    fn a_delta_still_carries_every_directory_and_symlink_and_nothing_else() {
        let items = vec![dir("app"), file("app/a.py", b"a"), link("app/l", "a.py")];
        let manifest = manifest_for(&items);
        // Without its directory.
        let no_dir = vec![file("app/a.py", b"a"), link("app/l", "a.py")];
        let stream = compress(&tar_with(&manifest, &no_dir).finish().unwrap());
        assert!(read_delta_of(&stream).is_err());
        // Without its symlink.
        let no_link = vec![dir("app")];
        let stream = compress(&tar_with(&manifest, &no_link).finish().unwrap());
        assert!(read_delta_of(&stream).is_err());
        // With a file the manifest does not list.
        let extra = vec![dir("app"), link("app/l", "a.py"), file("app/z.py", b"z")];
        let stream = compress(&tar_with(&manifest, &extra).finish().unwrap());
        assert!(matches!(
            read_delta_of(&stream),
            Err(ReadError::Unexpected { path }) if path == "app/z.py"
        ));
        // Out of order: the file comes after the symlink that follows it in the
        // manifest, so it is taken as left out, and then it is one entry too many.
        let reordered = vec![dir("app"), link("app/l", "a.py"), file("app/a.py", b"a")];
        let stream = compress(&tar_with(&manifest, &reordered).finish().unwrap());
        assert!(matches!(
            read_delta_of(&stream),
            Err(ReadError::Unexpected { path }) if path == "app/a.py"
        ));
        // A file it carries is checked as in an artifact.
        let forged = vec![dir("app"), file("app/a.py", b"A"), link("app/l", "a.py")];
        let stream = compress(&tar_with(&manifest, &forged).finish().unwrap());
        assert!(matches!(
            read_delta_of(&stream),
            Err(ReadError::Digest { .. })
        ));
    }
}
