//! `pack`: one pass over a tree that archives, hashes and checks every file, then
//! writes `<name>-<version>.tar.zst` and its `.sha256` sidecar atomically.
//!
//! The manifest must come first in the archive but is only known once every file is
//! hashed, so the payload (every entry after the manifest) is compressed as the tree
//! is read and held — in memory up to a cap, then in a spill file — until the
//! manifest's frame is ready. The artifact is then two zstd frames: the manifest
//! entry's, then the payload's. Concatenated frames are one stream to every zstd
//! reader. Each input file is read exactly once, and the artifact is hashed by its
//! own thread while it is written.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use manifests::manifest::{self, Compression, MANIFEST_PATH};
use manifests::{AppName, Entry, EntryKind, Manifest, Mode, Sha256, Source, Version};
use sha2::Digest;

use crate::error::PackError;
use crate::scan::{self, BuildPaths, ContentScan};
use crate::tarfmt::{Kind, TarWriter};
use crate::verify::{artifact_file_name, sidecar_path};
use crate::walk::{FoundKind, Walk};

/// Read size for packing files.
const CHUNK: usize = 256 << 10;

/// What to pack and how.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// The tree to pack.
    pub dir: PathBuf,
    /// The app's name.
    pub name: AppName,
    /// The release version.
    pub version: Version,
    /// Where to write the artifact and sidecar (created if missing).
    pub out_dir: PathBuf,
    /// zstd level.
    pub level: i32,
    /// The mtime of every entry and the manifest's creation time (seconds).
    pub mtime: u64,
    /// Make relocatability findings errors.
    pub strict: bool,
    /// zstd worker threads (at least 1: the output does not depend on the count).
    pub threads: u32,
    /// The app's behaviour on hosts, carried in the manifest.
    pub behaviour: manifests::behaviour::Behaviour,
}

/// Receives progress while a tree is packed. The total is not known in advance:
/// the tree is listed as it is packed.
pub trait Progress {
    /// `bytes` more bytes of file content were packed.
    fn advance(&self, bytes: u64);
}

impl Progress for () {
    fn advance(&self, _: u64) {}
}

/// A finished artifact.
#[derive(Debug)]
pub struct Packed {
    /// The artifact's path.
    pub artifact: PathBuf,
    /// Its `.sha256` sidecar.
    pub sidecar: PathBuf,
    /// SHA-256 of the artifact file.
    pub digest: Sha256,
    /// Size of the artifact file in bytes.
    pub size: u64,
    /// The manifest it carries.
    pub manifest: Manifest,
}

/// Packs `options.dir` into an artifact in `options.out_dir`.
pub fn pack(options: &PackOptions, progress: &dyn Progress) -> Result<Packed, PackError> {
    let dir = &options.dir;
    let canonical = fs::canonicalize(dir)
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| PackError::NotADirectory { path: dir.clone() })?;
    fs::create_dir_all(&options.out_dir).map_err(write_err(&options.out_dir))?;
    // An output directory inside the tree (`ship pack .`) is not part of the release.
    let skip = fs::canonicalize(&options.out_dir).ok().and_then(|out| {
        let rel = out.strip_prefix(&canonical).ok()?;
        rel.to_str().filter(|r| !r.is_empty()).map(str::to_owned)
    });
    let mut spellings = vec![canonical.to_string_lossy().into_owned()];
    if let Ok(abs) = std::path::absolute(dir) {
        spellings.push(abs.to_string_lossy().into_owned());
    }
    let build_paths = BuildPaths::new(&spellings);

    std::thread::scope(|scope| {
        // git runs while the tree is packed; it is only needed for the manifest.
        let source = scope.spawn(|| git_source(dir));
        let started = std::time::Instant::now();
        let artifact = options
            .out_dir
            .join(artifact_file_name(&options.name, &options.version));
        let (to_writer, from_packer) = mpsc::channel();
        let out_dir = options.out_dir.clone();
        let cap = memory_cap();
        let writer = scope.spawn(move || write_artifact(from_packer, &out_dir, cap));
        let sink = PayloadSink {
            to_writer: to_writer.clone(),
        };
        let encoder = encoder(BufWriter::with_capacity(SINK_CHUNK, sink), options)
            .map_err(write_err(&artifact))?;
        let mut tar = TarWriter::new(encoder, options.mtime);
        let (entries, mut findings) = match archive(options, &build_paths, skip, &mut tar, progress)
        {
            Ok(archived) => archived,
            Err(e) => {
                // When the artifact writer failed (a full disk, say), its error is
                // the cause; the packer only saw it stop.
                drop((tar, to_writer));
                let written = writer.join().expect("the artifact writer does not panic");
                return Err(match written {
                    Err(cause) if cause.kind() != io::ErrorKind::Other => {
                        write_err(&artifact)(cause)
                    }
                    _ => e,
                });
            }
        };
        tracing::debug!(entries = entries.len(), elapsed = ?started.elapsed(), "tree read");

        findings.extend(scan::symlink_findings(&manifest::symlinks(&entries)));
        findings.sort_by(|a, b| a.path.cmp(&b.path));
        if options.strict && !findings.is_empty() {
            return Err(PackError::NotRelocatable { findings });
        }
        let manifest = Manifest {
            format: manifest::FORMAT,
            name: options.name.clone(),
            version: options.version.clone(),
            created: manifests::Timestamp::from_unix(options.mtime),
            source: source.join().unwrap_or(None),
            compression: Compression {
                algorithm: "zstd".into(),
                zstd_version: zstd::zstd_safe::version_string().into(),
                level: options.level,
            },
            entry_count: entries.len() as u64,
            unpacked_size: entries
                .iter()
                .map(|e| match e.kind {
                    EntryKind::File { size, .. } => size,
                    _ => 0,
                })
                .sum(),
            payload_digest: manifest::payload_digest(&entries),
            relocatability: findings,
            behaviour: options.behaviour.clone(),
            entries,
        };
        manifest.check().map_err(|e| PackError::Invalid {
            dir: dir.clone(),
            source: e,
        })?;
        let frame = manifest_frame(&manifest, options).map_err(write_err(&artifact))?;
        // The writer can now start on the artifact while the last payload frames are
        // still being compressed.
        let _ = to_writer.send(Piece::Frame(frame));
        drop(to_writer);
        let finished = tar
            .finish()
            .and_then(|encoder| encoder.finish())
            .and_then(|out| out.into_inner().map_err(io::IntoInnerError::into_error))
            .map(drop); // closes the channel: the writer finishes the artifact
        let written = writer.join().expect("the artifact writer does not panic");
        // The writer's error, if any, is the cause: the encoder only saw it stop.
        let (tmp, digest, size) = match (written, finished) {
            (Ok(written), Ok(())) => written,
            (Err(cause), _) | (Ok(_), Err(cause)) => return Err(write_err(&artifact)(cause)),
        };
        tmp.persist(&artifact).map_err(|e| PackError::Write {
            path: artifact.clone(),
            source: e.error,
        })?;
        tracing::debug!(elapsed = ?started.elapsed(), "artifact written");

        let sidecar = sidecar_path(&artifact);
        let file_name = artifact
            .file_name()
            .expect("artifact path has a file name")
            .to_string_lossy();
        write_atomically(&sidecar, format!("{digest}  {file_name}\n").as_bytes())
            .map_err(write_err(&sidecar))?;
        Ok(Packed {
            artifact,
            sidecar,
            digest,
            size,
            manifest,
        })
    })
}

fn add_err(path: &Path) -> impl FnOnce(io::Error) -> PackError + use<> {
    let path = path.to_owned();
    move |source| PackError::Add { path, source }
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> PackError + use<> {
    let path = path.to_owned();
    move |source| PackError::Write { path, source }
}

/// Writes every entry of the tree into `tar`, hashing and scanning each file.
/// Returns the manifest entries and the content findings.
fn archive<W: Write>(
    options: &PackOptions,
    build_paths: &BuildPaths,
    skip: Option<String>,
    tar: &mut TarWriter<W>,
    progress: &dyn Progress,
) -> Result<(Vec<Entry>, Vec<manifests::Finding>), PackError> {
    let dir = &options.dir;
    let mut entries = Vec::new();
    let mut findings = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    for item in Walk::new(dir, skip) {
        let item = item?;
        let path = item.path.as_str();
        let abs = dir.join(path);
        let (mode, kind) = match item.kind {
            FoundKind::Dir => {
                tar.header(path, Mode::EXECUTABLE, Kind::Dir)
                    .map_err(add_err(&abs))?;
                (Mode::EXECUTABLE, EntryKind::Dir)
            }
            FoundKind::Symlink { target } => {
                tar.header(path, Mode::SYMLINK, Kind::Symlink { target: &target })
                    .map_err(add_err(&abs))?;
                (Mode::SYMLINK, EntryKind::Symlink { target })
            }
            FoundKind::File { size, executable } => {
                let mode = if executable {
                    Mode::EXECUTABLE
                } else {
                    Mode::REGULAR
                };
                tar.header(path, mode, Kind::File { size })
                    .map_err(add_err(&abs))?;
                let mut scan = ContentScan::new(build_paths);
                let sha256 = copy_file(&abs, size, &mut buf, tar, |chunk, eof| {
                    findings.extend(scan.feed(chunk, eof, path));
                    progress.advance(chunk.len() as u64);
                })?;
                tar.pad(size).map_err(add_err(&abs))?;
                if scan.is_elf() {
                    findings.extend(scan::elf_findings(&abs, path, build_paths));
                }
                (mode, EntryKind::File { size, sha256 })
            }
        };
        entries.push(Entry {
            path: item.path,
            mode,
            kind,
        });
    }
    Ok((entries, findings))
}

/// Size of the pieces of compressed payload handed to the artifact writer.
const SINK_CHUNK: usize = 1 << 20;

/// How much compressed payload is kept in memory while the manifest is not known yet
/// (beyond it, the payload goes to a temporary file): an eighth of the memory
/// available, between 64 MiB and 256 MiB. Most artifacts fit, and then the payload
/// is written to disk once, into the artifact itself.
fn memory_cap() -> usize {
    const MIN: usize = 64 << 20;
    const MAX: usize = 256 << 20;
    let available = fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib.saturating_mul(1024))
    });
    available.map_or(MIN, |bytes| (bytes / 8).clamp(MIN, MAX))
}

/// What the packer hands the artifact writer, in order.
enum Piece {
    /// A piece of the compressed payload.
    Payload(Vec<u8>),
    /// The manifest's frame: the artifact starts with it.
    Frame(Vec<u8>),
}

/// The encoder's output: every write goes to the artifact writer.
struct PayloadSink {
    to_writer: mpsc::Sender<Piece>,
}

impl Write for PayloadSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.to_writer
            .send(Piece::Payload(buf.to_vec()))
            .map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the artifact writer stopped")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The zstd encoder every frame of an artifact is written with. The multithreaded
/// mode is used even for one worker: its output does not depend on the worker count,
/// unlike the single-threaded mode's.
fn encoder<W: Write>(out: W, options: &PackOptions) -> io::Result<zstd::Encoder<'static, W>> {
    let mut encoder = zstd::Encoder::new(out, options.level)?;
    encoder.multithread(options.threads.max(1))?;
    encoder.include_checksum(true)?;
    Ok(encoder)
}

/// Streams `size` bytes of the file at `abs` into the archive, hashing them and
/// showing each chunk to `inspect` (the last with `eof = true`). Fails if the file
/// is not exactly `size` bytes long.
fn copy_file<W: Write>(
    abs: &Path,
    size: u64,
    buf: &mut [u8],
    tar: &mut TarWriter<W>,
    mut inspect: impl FnMut(&[u8], bool),
) -> Result<Sha256, PackError> {
    let read_err = |source| PackError::Read {
        path: abs.to_owned(),
        source,
    };
    let mut file = File::open(abs).map_err(read_err)?;
    let mut hasher = sha2::Sha256::new();
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(PackError::Changed {
                    path: abs.to_owned(),
                    expected: size,
                });
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        left -= n as u64;
        let chunk = &buf[..n];
        hasher.update(chunk);
        inspect(chunk, left == 0);
        tar.get_mut().write_all(chunk).map_err(add_err(abs))?;
    }
    if file.read(&mut buf[..1]).map_err(read_err)? != 0 {
        return Err(PackError::Changed {
            path: abs.to_owned(),
            expected: size,
        });
    }
    Ok(Sha256::from_hasher(hasher))
}

/// The zstd frame holding the manifest entry: the start of every artifact.
fn manifest_frame(manifest: &Manifest, options: &PackOptions) -> io::Result<Vec<u8>> {
    let json = manifest.to_json();
    let mut tar = TarWriter::new(encoder(Vec::new(), options)?, options.mtime);
    tar.header(
        MANIFEST_PATH,
        Mode::REGULAR,
        Kind::File {
            size: json.len() as u64,
        },
    )?;
    tar.get_mut().write_all(&json)?;
    tar.pad(json.len() as u64)?;
    tar.into_inner().finish()
}

/// Writes the artifact into a temporary file in `dir` from the pieces the
/// packer sends: payload pieces are held (in memory up to `memory_cap`, then in a
/// spill file) until the manifest's frame arrives; then the frame, the held payload
/// and every later piece are written in order. A second thread hashes the same bytes
/// meanwhile. Returns the file, its digest and its size.
fn write_artifact(
    pieces: mpsc::Receiver<Piece>,
    dir: &Path,
    memory_cap: usize,
) -> io::Result<(tempfile::NamedTempFile, Sha256, u64)> {
    let mut out = tempfile::Builder::new()
        .prefix(".ship-artifact-")
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)?;
    let (to_hasher, hasher_input) = mpsc::sync_channel::<Arc<Vec<u8>>>(16);
    let hasher = std::thread::spawn(move || {
        let mut hasher = sha2::Sha256::new();
        for piece in hasher_input {
            hasher.update(piece.as_slice());
        }
        Sha256::from_hasher(hasher)
    });
    let mut size = 0u64;
    let mut emit = |bytes: Vec<u8>| -> io::Result<()> {
        out.write_all(&bytes)?;
        size += bytes.len() as u64;
        to_hasher
            .send(Arc::new(bytes))
            .map_err(|_| io::Error::other("the hasher stopped"))
    };
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut held_bytes = 0usize;
    let mut spill: Option<File> = None;
    let mut started = false;
    let result = (|| -> io::Result<()> {
        for piece in &pieces {
            match piece {
                Piece::Payload(bytes) if started => emit(bytes)?,
                Piece::Payload(bytes)
                    if held_bytes + bytes.len() <= memory_cap && spill.is_none() =>
                {
                    held_bytes += bytes.len();
                    held.push(bytes);
                }
                Piece::Payload(bytes) => {
                    if spill.is_none() {
                        spill = Some(tempfile::tempfile_in(dir)?);
                    }
                    spill.as_mut().expect("just created").write_all(&bytes)?;
                }
                Piece::Frame(frame) => {
                    started = true;
                    emit(frame)?;
                    for bytes in held.drain(..) {
                        emit(bytes)?;
                    }
                    if let Some(mut file) = spill.take() {
                        file.rewind()?;
                        loop {
                            let mut bytes = vec![0u8; SINK_CHUNK];
                            let n = file.read(&mut bytes)?;
                            if n == 0 {
                                break;
                            }
                            bytes.truncate(n);
                            emit(bytes)?;
                        }
                    }
                }
            }
        }
        if started {
            Ok(())
        } else {
            Err(io::Error::other(
                "the packer stopped before the manifest was ready",
            ))
        }
    })();
    drop(to_hasher);
    let digest = hasher.join().expect("the hasher does not panic");
    result?;
    Ok((out, digest, size))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".ship-")
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The git commit of the work tree `dir` is in, and whether `dir` differs from it.
/// `None` when git is not installed or `dir` is not in a work tree.
fn git_source(dir: &Path) -> Option<Source> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
    };
    let head = git(&["rev-parse", "--verify", "--quiet", "HEAD"])?;
    let commit = String::from_utf8(head.stdout).ok()?.trim().to_owned();
    let status = git(&[
        "status",
        "--porcelain",
        "--untracked-files=normal",
        "--",
        ".",
    ])?;
    Some(Source {
        commit,
        dirty: !status.stdout.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_with_cap(cap: usize, pieces: Vec<Piece>) -> io::Result<(Vec<u8>, Sha256, u64)> {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        for piece in pieces {
            tx.send(piece).unwrap();
        }
        drop(tx);
        let (file, digest, size) = write_artifact(rx, dir.path(), cap)?;
        Ok((fs::read(file.path()).unwrap(), digest, size))
    }

    fn pieces() -> Vec<Piece> {
        vec![
            Piece::Payload(b"aaaa".to_vec()),
            Piece::Payload(b"bbbb".to_vec()),
            Piece::Payload(b"cccc".to_vec()),
            Piece::Frame(b"FRAME".to_vec()),
            Piece::Payload(b"dddd".to_vec()),
        ]
    }

    #[test]
    fn the_frame_comes_first_whether_the_payload_was_held_or_spilled() {
        for cap in [0, 5, 8, 1 << 20] {
            let (bytes, digest, size) = write_with_cap(cap, pieces()).unwrap();
            assert_eq!(bytes, b"FRAMEaaaabbbbccccdddd", "cap {cap}");
            assert_eq!(digest, Sha256::of(&bytes), "cap {cap}");
            assert_eq!(size, bytes.len() as u64);
        }
    }

    #[test]
    fn a_packer_that_stops_early_leaves_no_artifact() {
        let err = write_with_cap(1 << 20, vec![Piece::Payload(b"x".to_vec())]).unwrap_err();
        assert!(err.to_string().contains("before the manifest"), "{err}");
    }
}
