//! `pack`: two passes over a tree, then `<name>-<version>.tar.zst` and its `.sha256`
//! sidecar, each written to a temporary file and renamed into place.
//!
//! The manifest is the artifact's first entry and lists every file's hash, so the
//! tree is surveyed first: the walk lists it, then every core reads, hashes and scans
//! files, and relocation rewrites what names the build directory (rewritten files are
//! kept in memory). With the manifest known, one stream writes the artifact: the
//! manifest entry's zstd frame, then the payload's frame — each file read again, from
//! the page cache, into the tar stream and through zstd into the artifact, which is
//! hashed as it is written. Concatenated frames are one stream to every zstd reader.
//!
//! A file read twice must give the same bytes twice: each read is checksummed
//! (xxh3), and a file that changed in between fails the pack, so the artifact holds
//! exactly what the manifest describes.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Instant;

use manifests::manifest::{self, Compression, MANIFEST_PATH};
use manifests::{
    AppName, Entry, EntryKind, EntryPath, Finding, HostRequirement, Manifest, Mode, Rewrite,
    Sha256, Source, Version,
};
use sha2::Digest;
use xxhash_rust::xxh3::Xxh3;

use crate::error::PackError;
use crate::relocate::{self, REWRITE_MAX};
use crate::scan::{self, BuildPaths, ContentScan};
use crate::tarfmt::{Kind, TarWriter};
use crate::verify::{artifact_file_name, sidecar_path};
use crate::walk::{self, Found, FoundKind};

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
    /// Threads for hashing and for zstd (at least 1: the output does not depend on
    /// the count).
    pub threads: u32,
    /// The app's behaviour on hosts, carried in the manifest.
    pub behaviour: manifests::behaviour::Behaviour,
    /// Also compute the artifact's BLAKE2b-512 (what a minisign signature signs), on
    /// a thread of its own as the artifact is written.
    pub prehash: bool,
}

/// Receives progress while the artifact is written. The total is the manifest's
/// `unpacked_size`.
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
    /// BLAKE2b-512 of the artifact file, when [`PackOptions::prehash`] asked for it.
    pub prehash: Option<Vec<u8>>,
}

/// Whether `pack` rewrites what ties the tree to its build directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relocation {
    /// Rewrite what can be (see the `relocate` module) and record it in the manifest.
    Rewrite,
    /// Pack the bytes as they are; what ties the tree to the build directory is only
    /// reported (host requirements are still declared: that changes no byte).
    KeepBytes,
}

/// Packs `options.dir` into an artifact in `options.out_dir`, relocating it.
pub fn pack(options: &PackOptions, progress: &dyn Progress) -> Result<Packed, PackError> {
    pack_with(options, Relocation::Rewrite, progress)
}

/// Packs `options.dir` into an artifact in `options.out_dir`.
pub fn pack_with(
    options: &PackOptions,
    relocation: Relocation,
    progress: &dyn Progress,
) -> Result<Packed, PackError> {
    let rewrite = relocation == Relocation::Rewrite;
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
    let artifact = options
        .out_dir
        .join(artifact_file_name(&options.name, &options.version));

    std::thread::scope(|scope| {
        // git runs while the tree is surveyed; it is only needed for the manifest.
        let source = scope.spawn(|| git_source(dir));
        let started = Instant::now();
        let (listing, mut surveyed) = survey(options, rewrite, &build_paths, skip.as_deref())?;
        let order = walk::order(&listing);
        tracing::debug!(entries = listing.len(), elapsed = ?started.elapsed(), "tree surveyed");
        let paths: HashSet<&str> = listing.iter().map(|f| f.path.as_str()).collect();
        let tree = relocate::Tree {
            paths: &build_paths,
            entries: &paths,
        };
        let mut files: Vec<Option<Surveyed>> = Vec::with_capacity(listing.len());
        for (item, survey) in listing.iter().zip(surveyed.iter_mut()) {
            files.push(survey.take().map(|s| s.finish(&options.dir, &tree, item)));
        }
        let release = describe(rewrite, &tree, &listing, &order, &mut files);
        if options.strict && !release.findings.is_empty() {
            return Err(PackError::NotRelocatable {
                findings: release.findings,
            });
        }
        let Release {
            entries,
            findings,
            rewrites,
            host_requirements,
        } = release;
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
            payload_digest: manifest::payload_digest_of(&entries, &host_requirements),
            relocatability: findings,
            rewrites,
            host_requirements,
            behaviour: options.behaviour.clone(),
            entries,
        };
        manifest.check().map_err(|e| PackError::Invalid {
            dir: dir.clone(),
            source: e,
        })?;

        let sorted: Vec<Option<&Surveyed>> = order.iter().map(|&i| files[i].as_ref()).collect();
        let (tmp, digest, size, prehash) =
            write_artifact(options, &manifest, &sorted, &artifact, progress)?;
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
            prehash,
        })
    })
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> PackError + use<> {
    let path = path.to_owned();
    move |source| PackError::Read { path, source }
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> PackError + use<> {
    let path = path.to_owned();
    move |source| PackError::Write { path, source }
}

/// One file as the survey found it.
struct Surveyed {
    /// Where the artifact's bytes of the file come from.
    content: Content,
    /// Size and digest of those bytes.
    size: u64,
    sha256: Sha256,
    /// Whether any execute bit is set.
    executable: bool,
    /// What ties it to the build directory and was left as it is.
    findings: Vec<Finding>,
    /// What relocation changed.
    rewrite: Option<Rewrite>,
}

/// Where a file's bytes come from when the artifact is written.
enum Content {
    /// From the tree, read again: it must have the same xxh3 as when surveyed; with
    /// `retime`, compiled bytecode whose header gets that time (see `relocate`).
    Tree { check: u64, retime: Option<u64> },
    /// Held in memory: a small file within the budget, or rewritten by relocation.
    Memory(Vec<u8>),
}

impl Content {
    /// `content`, read whole, kept in memory when it is `held` (within the budget),
    /// else to be read again.
    fn kept(content: Vec<u8>, held: bool) -> Content {
        if held {
            Content::Memory(content)
        } else {
            Content::Tree {
                check: xxhash_rust::xxh3::xxh3_64(&content),
                retime: None,
            }
        }
    }
}

/// What the survey learnt of a file.
enum Survey {
    /// Hashed and scanned: final.
    Done(Surveyed),
    /// A file relocation may rewrite, naming the build directory: held until the
    /// whole tree is known (relocation looks at other entries); `held` when it was
    /// within the budget of files kept in memory.
    Pending {
        content: Vec<u8>,
        executable: bool,
        held: bool,
    },
}

impl Survey {
    /// The file as it goes into the artifact: pending files relocated.
    fn finish(self, dir: &Path, tree: &relocate::Tree<'_>, item: &Found) -> Surveyed {
        let (content, executable, held) = match self {
            Survey::Done(surveyed) => return surveyed,
            Survey::Pending {
                content,
                executable,
                held,
            } => (content, executable, held),
        };
        let path = item.path.as_str();
        let abs = dir.join(path);
        let kept = |content: Vec<u8>, findings| Surveyed {
            sha256: Sha256::of(&content),
            size: content.len() as u64,
            executable,
            content: Content::kept(content, held),
            findings,
            rewrite: None,
        };
        match relocate::file(tree, &item.path, &content) {
            relocate::File::Keep => {
                let findings = scan_bytes(tree.paths, &abs, path, &content);
                kept(content, findings)
            }
            relocate::File::Refused(finding) => kept(content, vec![finding]),
            relocate::File::Rewritten { content, rewrite } => Surveyed {
                sha256: Sha256::of(&content),
                findings: scan_bytes(tree.paths, &abs, path, &content),
                size: content.len() as u64,
                executable,
                content: Content::Memory(content),
                rewrite: Some(rewrite),
            },
        }
    }
}

/// Lists the tree and, while it is being listed, reads, hashes and scans every file
/// on `options.threads` threads. Returns the listing (unsorted) and one slot per
/// listed entry (`None` for all but files).
fn survey(
    options: &PackOptions,
    rewrite: bool,
    paths: &BuildPaths,
    skip: Option<&str>,
) -> Result<(Vec<Found>, Vec<Option<Survey>>), PackError> {
    let (to_workers, jobs) = mpsc::channel::<(usize, EntryPath)>();
    let jobs = Mutex::new(jobs);
    let failed = AtomicBool::new(false);
    let held = AtomicU64::new(0);
    let workers = options.threads.max(1) as usize;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut buf = vec![0u8; CHUNK];
                    let mut done = Vec::new();
                    loop {
                        let job = jobs.lock().expect("no worker panics").recv();
                        let Ok((i, path)) = job else { break };
                        if failed.load(Ordering::Relaxed) {
                            continue;
                        }
                        match survey_file(options, rewrite, paths, &path, &held, &mut buf) {
                            Ok(survey) => done.push((i, survey)),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err((i, e));
                            }
                        }
                    }
                    Ok(done)
                })
            })
            .collect();
        let listed = walk::walk(&options.dir, skip, |i, found| {
            if let FoundKind::File = found.kind {
                let _ = to_workers.send((i, found.path.clone()));
            }
        });
        if listed.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        drop(to_workers);
        let mut first_error: Option<(usize, PackError)> = None;
        let mut done = Vec::new();
        for handle in handles {
            match handle.join().expect("a survey thread does not panic") {
                Ok(surveyed) => done.extend(surveyed),
                Err((i, e)) => {
                    if first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                        first_error = Some((i, e));
                    }
                }
            }
        }
        let listing = listed?;
        if let Some((_, e)) = first_error {
            return Err(e);
        }
        let mut surveyed: Vec<Option<Survey>> = listing.iter().map(|_| None).collect();
        for (i, survey) in done {
            surveyed[i] = Some(survey);
        }
        Ok((listing, surveyed))
    })
}

/// Files up to this size are kept in memory from the survey to the artifact, within
/// [`HOLD_BUDGET`]: reading them again would cost more in system calls than in bytes.
const HOLD_MAX: u64 = 64 << 10;

/// How much file content the survey keeps in memory at most.
const HOLD_BUDGET: u64 = 128 << 20;

/// Surveys one file: reads it once, hashing and scanning it as it goes. Small files
/// are kept in memory; a file that relocation may rewrite (small, and a script, an
/// activation script, a `pyvenv.cfg` or a `.pth`) and that names the build directory
/// is held for relocation.
fn survey_file(
    options: &PackOptions,
    rewrite: bool,
    paths: &BuildPaths,
    path: &EntryPath,
    held: &AtomicU64,
    buf: &mut [u8],
) -> Result<Survey, PackError> {
    let path = path.as_str();
    let abs = options.dir.join(path);
    let (mut file, meta) = open_regular(&abs)?;
    let (size, executable) = (meta.len(), meta.permissions().mode() & 0o111 != 0);
    let hold = size <= HOLD_MAX && {
        let before = held.fetch_add(size, Ordering::Relaxed);
        before + size <= HOLD_BUDGET || {
            held.fetch_sub(size, Ordering::Relaxed);
            false
        }
    };
    let mut reader = Exact::new(&mut file, &abs, size, true);
    let (content, head) = if hold {
        (Some(read_whole(&mut reader)?), 0)
    } else {
        let head = reader.next_chunk(buf)?;
        if rewrite && size <= REWRITE_MAX && relocate::is_candidate(path, &buf[..head]) {
            let mut content = Vec::with_capacity(size as usize);
            content.extend_from_slice(&buf[..head]);
            loop {
                let n = reader.next_chunk(buf)?;
                if n == 0 {
                    break;
                }
                content.extend_from_slice(&buf[..n]);
            }
            (Some(content), 0)
        } else {
            (None, head)
        }
    };
    if let Some(mut content) = content {
        if rewrite && relocate::is_candidate(path, &content) && paths.first_in(&content).is_some() {
            return Ok(Survey::Pending {
                content,
                executable,
                held: hold,
            });
        }
        let retimed = rewrite && bytecode_fresh(&options.dir, path, &content);
        if retimed {
            relocate::retime_bytecode(&mut content, options.mtime);
        }
        return Ok(Survey::Done(Surveyed {
            sha256: Sha256::of(&content),
            size,
            executable,
            findings: scan_bytes(paths, &abs, path, &content),
            content: Content::kept(content, hold || retimed),
            rewrite: retimed.then(|| relocate::bytecode_rewrite(path)),
        }));
    }
    let retimed = rewrite && bytecode_fresh(&options.dir, path, &buf[..head]);
    let mut hasher = sha2::Sha256::new();
    let mut check = Xxh3::new();
    let mut scan = ContentScan::new(paths);
    let mut findings = Vec::new();
    let mut n = head;
    let mut first = true;
    while n > 0 {
        // The checksum is of the bytes in the tree, the hash of those archived.
        check.update(&buf[..n]);
        if retimed && first {
            relocate::retime_bytecode(&mut buf[..n], options.mtime);
        }
        first = false;
        let chunk = &buf[..n];
        hasher.update(chunk);
        findings.extend(scan.feed(chunk, reader.left == 0, path));
        n = reader.next_chunk(buf)?;
    }
    if scan.is_elf() {
        findings.extend(scan::elf_findings(&abs, path, paths));
    }
    Ok(Survey::Done(Surveyed {
        content: Content::Tree {
            check: check.digest(),
            retime: retimed.then_some(options.mtime),
        },
        size,
        sha256: Sha256::from_hasher(hasher),
        executable,
        findings,
        rewrite: retimed.then(|| relocate::bytecode_rewrite(path)),
    }))
}

/// Whether the file at `path` (in the tree `dir`, starting with `header`) is compiled
/// bytecode that is up to date with its source in the tree.
fn bytecode_fresh(dir: &Path, path: &str, header: &[u8]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(source) = relocate::bytecode_source(path) else {
        return false;
    };
    fs::symlink_metadata(dir.join(source)).is_ok_and(|meta| {
        meta.is_file()
            && u64::try_from(meta.mtime())
                .is_ok_and(|mtime| relocate::bytecode_is_fresh(header, mtime, meta.len()))
    })
}

/// Opens the file at `abs` for reading, without following a symlink or waiting on a
/// FIFO: the listing saw a regular file there, and it must still be one.
fn open_regular(abs: &Path) -> Result<(File, fs::Metadata), PackError> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(abs)
        .map_err(read_err(abs))?;
    let meta = file.metadata().map_err(read_err(abs))?;
    if !meta.is_file() {
        return Err(PackError::Read {
            path: abs.to_owned(),
            source: io::Error::other("it is no longer a regular file"),
        });
    }
    Ok((file, meta))
}

/// Reads a whole (small) file. A read that stops short exactly at the listed size is
/// taken as the end of the file, so a small file costs one read.
fn read_whole(reader: &mut Exact<'_>) -> Result<Vec<u8>, PackError> {
    let size = usize::try_from(reader.size).unwrap_or(usize::MAX);
    let mut content = vec![0u8; size.saturating_add(1)];
    let mut filled = 0;
    loop {
        let want = content.len() - filled;
        let n = read_some(reader.file, &mut content[filled..]).map_err(read_err(reader.path))?;
        filled += n;
        if n == 0 || filled > size || (filled == size && n < want) {
            break;
        }
    }
    if filled != size {
        return Err(reader.changed());
    }
    content.truncate(size);
    Ok(content)
}

/// The content findings of a file held in memory.
fn scan_bytes(paths: &BuildPaths, abs: &Path, path: &str, content: &[u8]) -> Vec<Finding> {
    let mut scan = ContentScan::new(paths);
    let mut findings: Vec<Finding> = scan.feed(content, true, path).into_iter().collect();
    if scan.is_elf() {
        findings.extend(scan::elf_findings(abs, path, paths));
    }
    findings
}

/// Reads exactly the size a file was listed with, in chunks: a file that turns out
/// shorter or longer fails with [`PackError::Changed`].
struct Exact<'a> {
    file: &'a mut File,
    path: &'a Path,
    size: u64,
    left: u64,
    /// Whether to check that the file ends after `size` bytes (one more read).
    probe_end: bool,
}

impl<'a> Exact<'a> {
    fn new(file: &'a mut File, path: &'a Path, size: u64, probe_end: bool) -> Self {
        Exact {
            file,
            path,
            size,
            left: size,
            probe_end,
        }
    }

    fn changed(&self) -> PackError {
        PackError::Changed {
            path: self.path.to_owned(),
            expected: self.size,
        }
    }

    /// Fills `buf` with the next bytes (as many as fit, or as are left); 0 at the
    /// end, once the file was checked to end there.
    fn next_chunk(&mut self, buf: &mut [u8]) -> Result<usize, PackError> {
        if self.left == 0 {
            if !self.probe_end {
                return Ok(0);
            }
            let mut probe = [0u8; 1];
            return match read_some(self.file, &mut probe).map_err(read_err(self.path))? {
                0 => Ok(0),
                _ => Err(self.changed()),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut filled = 0;
        while filled < want {
            match read_some(self.file, &mut buf[filled..want]).map_err(read_err(self.path))? {
                0 => return Err(self.changed()),
                n => filled += n,
            }
        }
        self.left -= filled as u64;
        Ok(filled)
    }
}

fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The release as the manifest lists it.
struct Release {
    entries: Vec<Entry>,
    findings: Vec<Finding>,
    rewrites: Vec<Rewrite>,
    host_requirements: Vec<HostRequirement>,
}

/// The manifest's entries (symlinks relocated), what was rewritten, the host
/// requirements, and every finding, sorted by path.
fn describe(
    rewrite: bool,
    tree: &relocate::Tree<'_>,
    listing: &[Found],
    order: &[usize],
    files: &mut [Option<Surveyed>],
) -> Release {
    let mut entries = Vec::with_capacity(listing.len());
    let mut findings = Vec::new();
    let mut rewrites = Vec::new();
    let mut host_requirements = Vec::new();
    for &i in order {
        let (item, surveyed) = (&listing[i], &mut files[i]);
        let (mode, kind) = match &item.kind {
            FoundKind::Dir => (Mode::EXECUTABLE, EntryKind::Dir),
            FoundKind::Symlink { target } => {
                let target = match relocate::symlink(tree, &item.path, target, rewrite) {
                    relocate::Link::Keep => target.clone(),
                    relocate::Link::Relative { target, rewrite } => {
                        rewrites.push(rewrite);
                        target
                    }
                    relocate::Link::Host(required) => {
                        host_requirements.push(required);
                        target.clone()
                    }
                };
                (Mode::SYMLINK, EntryKind::Symlink { target })
            }
            FoundKind::File => {
                let surveyed = surveyed.as_mut().expect("every file was surveyed");
                findings.append(&mut surveyed.findings);
                rewrites.extend(surveyed.rewrite.take());
                let mode = if surveyed.executable {
                    Mode::EXECUTABLE
                } else {
                    Mode::REGULAR
                };
                let kind = EntryKind::File {
                    size: surveyed.size,
                    sha256: surveyed.sha256.clone(),
                };
                (mode, kind)
            }
        };
        entries.push(Entry {
            path: item.path.clone(),
            mode,
            kind,
        });
    }
    let declared: HashSet<&str> = host_requirements.iter().map(|h| h.link.as_str()).collect();
    findings.extend(scan::symlink_findings(
        &manifest::symlinks(&entries),
        &declared,
    ));
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    Release {
        entries,
        findings,
        rewrites,
        host_requirements,
    }
}

/// Writes the artifact into a temporary file beside its final path: the manifest's
/// frame, then the payload's, hashed as it is written. Returns the file, its digest,
/// its size and, when asked for, its BLAKE2b-512.
fn write_artifact(
    options: &PackOptions,
    manifest: &Manifest,
    surveyed: &[Option<&Surveyed>],
    artifact: &Path,
    progress: &dyn Progress,
) -> Result<ArtifactWritten, PackError> {
    let tmp = tempfile::Builder::new()
        .prefix(".ship-artifact-")
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(&options.out_dir)
        .map_err(write_err(artifact))?;
    let file = tmp.as_file().try_clone().map_err(write_err(artifact))?;
    let prehash = options.prehash.then(Prehash::start);
    let mut out = Hashing {
        inner: file,
        hasher: sha2::Sha256::new(),
        size: 0,
        tee: prehash.as_ref().map(|p| p.chunks.clone()),
    };
    let frame = manifest_frame(manifest, options.level, options.threads, options.mtime)
        .map_err(write_err(artifact))?;
    out.write_all(&frame).map_err(write_err(artifact))?;
    let encoder = encoder(&mut out, options.level, options.threads).map_err(write_err(artifact))?;
    let mut tar = TarWriter::new(encoder, options.mtime);
    let mut buf = vec![0u8; CHUNK];
    for (entry, surveyed) in manifest.entries.iter().zip(surveyed) {
        let path = entry.path.as_str();
        let kind = match &entry.kind {
            EntryKind::Dir => Kind::Dir,
            EntryKind::Symlink { target } => Kind::Symlink { target },
            EntryKind::File { size, .. } => Kind::File { size: *size },
        };
        tar.header(path, entry.mode, kind)
            .map_err(write_err(artifact))?;
        let Some(surveyed) = surveyed else { continue };
        match &surveyed.content {
            Content::Memory(bytes) => {
                tar.get_mut()
                    .write_all(bytes)
                    .map_err(write_err(artifact))?;
                progress.advance(bytes.len() as u64);
            }
            Content::Tree { check, retime } => {
                let abs = options.dir.join(path);
                let again = Again {
                    size: surveyed.size,
                    check: *check,
                    retime: *retime,
                };
                copy_again(&abs, &again, &mut buf, &mut tar, artifact, progress)?;
            }
        }
        tar.pad(surveyed.size).map_err(write_err(artifact))?;
    }
    tar.finish()
        .and_then(|encoder| encoder.finish())
        .map_err(write_err(artifact))?;
    let Hashing {
        hasher, size, tee, ..
    } = out;
    // The hashing thread ends once every sender is gone.
    drop(tee);
    let prehash = prehash.map(Prehash::finish);
    Ok((tmp, Sha256::from_hasher(hasher), size, prehash))
}

/// The artifact file, its sha256, its size and its BLAKE2b-512 when asked for.
type ArtifactWritten = (tempfile::NamedTempFile, Sha256, u64, Option<Vec<u8>>);

/// BLAKE2b-512 of what is written, on a thread of its own: pieces are copied to it
/// as they go to the file, so the writing thread (which feeds zstd) is not held up.
struct Prehash {
    chunks: std::sync::mpsc::SyncSender<Vec<u8>>,
    thread: std::thread::JoinHandle<Vec<u8>>,
}

impl Prehash {
    fn start() -> Prehash {
        let (chunks, received) = std::sync::mpsc::sync_channel::<Vec<u8>>(64);
        let thread = std::thread::spawn(move || {
            let mut state = blake2b_simd::Params::new().hash_length(64).to_state();
            for chunk in received {
                state.update(&chunk);
            }
            state.finalize().as_bytes().to_vec()
        });
        Prehash { chunks, thread }
    }

    /// The hash, once everything was written (and every sender dropped).
    fn finish(self) -> Vec<u8> {
        drop(self.chunks);
        self.thread
            .join()
            .expect("the hashing thread does not panic")
    }
}

/// What a file read again must be, and what becomes of it.
struct Again {
    /// Its size when it was surveyed.
    size: u64,
    /// Its checksum (xxh3) then.
    check: u64,
    /// Compiled bytecode whose header gets this time (see `relocate`).
    retime: Option<u64>,
}

/// Streams the file at `abs` into the archive again; it must still be the size, with
/// the checksum, it had when it was surveyed.
fn copy_again<W: Write>(
    abs: &Path,
    expected: &Again,
    buf: &mut [u8],
    tar: &mut TarWriter<W>,
    artifact: &Path,
    progress: &dyn Progress,
) -> Result<(), PackError> {
    let (mut file, _) = open_regular(abs)?;
    // A file that grew since the survey is archived as it was listed; one whose
    // listed bytes changed fails the check below.
    let mut reader = Exact::new(&mut file, abs, expected.size, false);
    let mut again = Xxh3::new();
    let mut first = true;
    loop {
        let n = reader.next_chunk(buf)?;
        if n == 0 {
            break;
        }
        again.update(&buf[..n]);
        if let Some(mtime) = expected.retime.filter(|_| first) {
            relocate::retime_bytecode(&mut buf[..n], mtime);
        }
        first = false;
        tar.get_mut()
            .write_all(&buf[..n])
            .map_err(write_err(artifact))?;
        progress.advance(n as u64);
    }
    if again.digest() != expected.check {
        return Err(PackError::ChangedContent {
            path: abs.to_owned(),
        });
    }
    Ok(())
}

/// Passes writes through to `inner`, hashing and counting them.
struct Hashing<W> {
    inner: W,
    hasher: sha2::Sha256,
    size: u64,
    /// Where a copy of every piece goes, for [`Prehash`].
    tee: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        if let Some(tee) = &self.tee {
            tee.send(buf[..n].to_vec())
                .map_err(|_| io::Error::other("the BLAKE2b thread stopped"))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The zstd encoder every frame of an artifact is written with. The multithreaded
/// mode is used even for one worker: its output does not depend on the worker count,
/// unlike the single-threaded mode's.
pub(crate) fn encoder<W: Write>(
    out: W,
    level: i32,
    threads: u32,
) -> io::Result<zstd::Encoder<'static, W>> {
    let mut encoder = zstd::Encoder::new(out, level)?;
    encoder.multithread(threads.max(1))?;
    encoder.include_checksum(true)?;
    Ok(encoder)
}

/// The zstd frame holding the manifest entry: the start of every artifact.
pub(crate) fn manifest_frame(
    manifest: &Manifest,
    level: i32,
    threads: u32,
    mtime: u64,
) -> io::Result<Vec<u8>> {
    manifest_frame_with(manifest, encoder(Vec::new(), level, threads)?, mtime)
}

/// The manifest entry written through `encoder`, ended as a frame of its own.
pub(crate) fn manifest_frame_with(
    manifest: &Manifest,
    encoder: zstd::Encoder<'_, Vec<u8>>,
    mtime: u64,
) -> io::Result<Vec<u8>> {
    let json = manifest.to_json();
    let mut tar = TarWriter::new(encoder, mtime);
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

    fn copy(path: &Path, size: u64, check: u64) -> Result<Vec<u8>, PackError> {
        let mut tar = TarWriter::new(Vec::new(), 0);
        let mut buf = vec![0u8; 4];
        let again = Again {
            size,
            check,
            retime: None,
        };
        copy_again(path, &again, &mut buf, &mut tar, Path::new("out"), &())?;
        Ok(tar.into_inner())
    }

    #[test]
    fn a_file_read_again_must_have_the_bytes_it_was_hashed_with() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        fs::write(&path, b"hello world").unwrap();
        let check = xxhash_rust::xxh3::xxh3_64(b"hello world");
        assert_eq!(copy(&path, 11, check).unwrap(), b"hello world");

        // The same size, other bytes.
        fs::write(&path, b"hello there").unwrap();
        let err = copy(&path, 11, check).unwrap_err().to_string();
        assert!(
            err.ends_with("changed while it was being packed: its bytes differ from those hashed for the manifest"),
            "{err}"
        );
        // Shorter than it was listed.
        fs::write(&path, b"hello").unwrap();
        let err = copy(&path, 11, check).unwrap_err().to_string();
        assert!(err.contains("expected 11 bytes"), "{err}");
    }

    #[test]
    fn small_files_are_read_in_one_go_and_must_keep_their_size() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        fs::write(&path, b"0123456789").unwrap();
        let mut file = File::open(&path).unwrap();
        let mut reader = Exact::new(&mut file, &path, 10, true);
        assert_eq!(read_whole(&mut reader).unwrap(), b"0123456789");
        for listed in [9, 11] {
            let mut file = File::open(&path).unwrap();
            let mut reader = Exact::new(&mut file, &path, listed, true);
            let err = read_whole(&mut reader).unwrap_err().to_string();
            assert!(err.contains(&format!("expected {listed} bytes")), "{err}");
        }
    }
}
