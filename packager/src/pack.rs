//! `pack`: one pass over a tree that archives, hashes and checks every file, then
//! writes `<name>-<version>.tar.zst` and its `.sha256` sidecar atomically.
//!
//! The manifest must come first in the archive but is only known once every file is
//! hashed, so the payload (every entry after the manifest) is compressed into a
//! temporary file as the tree is read, and the artifact is then written as two zstd
//! frames: the manifest entry's frame, then the payload's bytes. Concatenated frames
//! are one stream to every zstd reader. Each input file is read exactly once.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use manifests::manifest::{self, Compression, MANIFEST_PATH};
use manifests::{AppName, Entry, EntryKind, Manifest, Mode, Sha256, Source, Version};
use sha2::Digest;

use crate::error::PackError;
use crate::scan::{self, BuildPaths, ContentScan};
use crate::tarfmt::{Kind, TarWriter};
use crate::walk::{self, FoundKind};

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
}

/// Receives progress while a tree is packed.
pub trait Progress {
    /// The tree holds `total` bytes of file content.
    fn start(&self, total: u64);
    /// `bytes` more were packed.
    fn advance(&self, bytes: u64);
}

impl Progress for () {
    fn start(&self, _: u64) {}
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

/// `<name>-<version>.tar.zst`.
pub fn artifact_file_name(name: &AppName, version: &Version) -> String {
    format!("{name}-{version}.tar.zst")
}

/// The sidecar's path for an artifact path.
pub fn sidecar_path(artifact: &Path) -> PathBuf {
    let mut name = artifact.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// Packs `options.dir` into an artifact in `options.out_dir`.
pub fn pack(options: &PackOptions, progress: &dyn Progress) -> Result<Packed, PackError> {
    let dir = &options.dir;
    let canonical = fs::canonicalize(dir)
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| PackError::NotADirectory { path: dir.clone() })?;
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| PackError::Write { path, source }
    };
    fs::create_dir_all(&options.out_dir).map_err(write_err(&options.out_dir))?;
    // An output directory inside the tree (`ship pack .`) is not part of the release.
    let skip = fs::canonicalize(&options.out_dir).ok().and_then(|out| {
        let rel = out.strip_prefix(&canonical).ok()?;
        rel.to_str().filter(|r| !r.is_empty()).map(str::to_owned)
    });
    let started = std::time::Instant::now();
    let found = walk::walk(dir, skip.as_deref())?;
    tracing::debug!(entries = found.len(), elapsed = ?started.elapsed(), "listed the tree");

    let total = found
        .iter()
        .map(|f| match f.kind {
            FoundKind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    progress.start(total);

    let mut spellings = vec![canonical.to_string_lossy().into_owned()];
    if let Ok(abs) = std::path::absolute(dir) {
        spellings.push(abs.to_string_lossy().into_owned());
    }
    let build_paths = BuildPaths::new(&spellings);

    let payload_file = tempfile::Builder::new()
        .prefix(".ship-payload-")
        .tempfile_in(&options.out_dir)
        .map_err(write_err(&options.out_dir))?;
    let payload_path = payload_file.path().to_owned();
    let out = BufWriter::with_capacity(1 << 20, payload_file.as_file());
    let encoder = encoder(out, options).map_err(write_err(&payload_path))?;
    let mut tar = TarWriter::new(encoder, options.mtime);

    let mut entries = Vec::with_capacity(found.len());
    let mut findings = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    for item in &found {
        let path = item.path.as_str();
        let (mode, kind) = match &item.kind {
            FoundKind::Dir => {
                tar.header(path, Mode::EXECUTABLE, Kind::Dir)
                    .map_err(write_err(&payload_path))?;
                (Mode::EXECUTABLE, EntryKind::Dir)
            }
            FoundKind::Symlink { target } => {
                tar.header(path, Mode::SYMLINK, Kind::Symlink { target })
                    .map_err(write_err(&payload_path))?;
                (
                    Mode::SYMLINK,
                    EntryKind::Symlink {
                        target: target.clone(),
                    },
                )
            }
            &FoundKind::File { size, executable } => {
                let mode = if executable {
                    Mode::EXECUTABLE
                } else {
                    Mode::REGULAR
                };
                tar.header(path, mode, Kind::File { size })
                    .map_err(write_err(&payload_path))?;
                let abs = dir.join(path);
                let mut scan = ContentScan::new(&build_paths);
                let sha256 = copy_file(&abs, size, &mut buf, &mut tar, |chunk, eof| {
                    findings.extend(scan.feed(chunk, eof, path));
                    progress.advance(chunk.len() as u64);
                })?;
                tar.pad(size).map_err(write_err(&payload_path))?;
                if scan.is_elf() {
                    findings.extend(scan::elf_findings(&abs, path, &build_paths));
                }
                (mode, EntryKind::File { size, sha256 })
            }
        };
        entries.push(Entry {
            path: item.path.clone(),
            mode,
            kind,
        });
    }
    let encoder = tar.finish().map_err(write_err(&payload_path))?;
    encoder
        .finish()
        .and_then(|out| out.into_inner().map_err(io::IntoInnerError::into_error))
        .map_err(write_err(&payload_path))?;

    tracing::debug!(elapsed = ?started.elapsed(), "payload compressed");
    let links: HashMap<&str, &str> = entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Symlink { target } => Some((e.path.as_str(), target.as_str())),
            _ => None,
        })
        .collect();
    findings.extend(scan::symlink_findings(&links));
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    if options.strict && !findings.is_empty() {
        return Err(PackError::NotRelocatable { findings });
    }

    let manifest = Manifest {
        format: manifest::FORMAT,
        name: options.name.clone(),
        version: options.version.clone(),
        created: manifests::Timestamp::from_unix(options.mtime),
        source: git_source(dir),
        compression: Compression {
            algorithm: "zstd".into(),
            zstd_version: zstd::zstd_safe::version_string().into(),
            level: options.level,
        },
        entry_count: entries.len() as u64,
        unpacked_size: total,
        payload_digest: manifest::payload_digest(&entries),
        relocatability: findings,
        entries,
    };

    let artifact = options
        .out_dir
        .join(artifact_file_name(&options.name, &options.version));
    let (digest, size) = write_artifact(&manifest, options, payload_file.as_file(), &artifact)
        .map_err(write_err(&artifact))?;
    drop(payload_file);
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
        tar.get_mut()
            .write_all(chunk)
            .map_err(|source| PackError::Write {
                path: abs.to_owned(),
                source,
            })?;
    }
    if file.read(&mut buf[..1]).map_err(read_err)? != 0 {
        return Err(PackError::Changed {
            path: abs.to_owned(),
            expected: size,
        });
    }
    Ok(Sha256::from_hasher(hasher))
}

/// Writes the artifact: the manifest entry's frame, then the compressed payload.
/// Returns the artifact's digest and size.
fn write_artifact(
    manifest: &Manifest,
    options: &PackOptions,
    mut payload: &File,
    artifact: &Path,
) -> io::Result<(Sha256, u64)> {
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
    let frame = tar.into_inner().finish()?;

    let dir = artifact.parent().unwrap_or(Path::new("."));
    let mut out = tempfile::Builder::new()
        .prefix(".ship-artifact-")
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)?;
    let mut hasher = sha2::Sha256::new();
    hasher.update(&frame);
    out.write_all(&frame)?;
    let mut size = frame.len() as u64;
    payload.rewind()?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match payload.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        size += n as u64;
    }
    out.persist(artifact).map_err(|e| e.error)?;
    Ok((Sha256::from_hasher(hasher), size))
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
