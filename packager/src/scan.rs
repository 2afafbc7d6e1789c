//! Relocatability checks: what still ties a tree to the directory it was built in,
//! once `relocate` has rewritten what it can.
//!
//! A release is unpacked under `releases/<version>/` on every host, so anything that
//! names the build directory breaks there. Three sources are checked: symlinks that
//! the agent would refuse (absolute ones that are not host requirements, or leaving
//! the tree once other symlinks are followed), text files and `#!` lines containing
//! the build directory's absolute path, and ELF RPATH/RUNPATH entries that are
//! absolute paths inside the build directory. This module also knows how the build
//! directory is spelled ([`BuildPaths`]), which relocation shares.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;

use manifests::manifest::{self, Resolution};
use manifests::{Finding, FindingKind};
use memchr::memmem;

/// How far into a file to look for a NUL byte before calling it binary (as git).
const BINARY_PROBE: usize = 8000;

/// Findings for the symlinks of a tree, given as `(path, target)` pairs: the ones
/// `ship-agent` refuses. A symlink that resolves to (or through) a declared host
/// requirement, one of `host`, is fine.
pub(crate) fn symlink_findings(links: &HashMap<&str, &str>, host: &HashSet<&str>) -> Vec<Finding> {
    let mut findings: Vec<Finding> = links
        .iter()
        .filter_map(|(&path, &target)| {
            let (kind, detail) = match manifest::refused_link(links, host, path)? {
                Resolution::Inside(_) => return None,
                Resolution::Absolute if target.starts_with('/') => (
                    FindingKind::AbsoluteSymlink,
                    format!("symlink to absolute path {target}"),
                ),
                Resolution::Absolute => (
                    FindingKind::EscapingSymlink,
                    format!("symlink to {target} leads through an absolute symlink"),
                ),
                Resolution::Escapes => (
                    FindingKind::EscapingSymlink,
                    format!("symlink to {target} leads outside the tree"),
                ),
                Resolution::TooManyHops => (
                    FindingKind::EscapingSymlink,
                    format!("symlink to {target} never resolves (a loop of symlinks)"),
                ),
            };
            Some(Finding {
                path: path.to_owned(),
                kind,
                detail,
            })
        })
        .collect();
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    findings
}

/// The absolute spellings of the build directory to look for in file contents.
pub(crate) struct BuildPaths {
    needles: Vec<(String, memmem::Finder<'static>)>,
    longest: usize,
}

impl BuildPaths {
    /// `spellings` are absolute paths of the packed directory (canonical, and as
    /// given when that differs).
    pub(crate) fn new(spellings: &[String]) -> BuildPaths {
        let mut needles: Vec<(String, memmem::Finder<'static>)> = Vec::new();
        for s in spellings {
            let s = s.trim_end_matches('/');
            // The root directory is in every absolute path: nothing useful to find.
            if s.is_empty() || needles.iter().any(|(n, _)| n == s) {
                continue;
            }
            let finder = memmem::Finder::new(s.as_bytes()).into_owned();
            needles.push((s.to_owned(), finder));
        }
        let longest = needles.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        BuildPaths { needles, longest }
    }

    /// The spellings, as given to [`BuildPaths::new`] without trailing slashes.
    pub(crate) fn spellings(&self) -> impl Iterator<Item = &str> {
        self.needles.iter().map(|(n, _)| n.as_str())
    }

    /// The first occurrence of a spelling in `text` that ends at a path boundary,
    /// with the spelling.
    pub(crate) fn first_in(&self, text: &[u8]) -> Option<(usize, &str)> {
        find_in(&self.needles, text, true)
    }

    /// The spelling `path` starts with, when it is the build directory or inside it.
    pub(crate) fn prefix_of<'a>(&'a self, path: &str) -> Option<&'a str> {
        self.needles.iter().map(|(n, _)| n.as_str()).find(|n| {
            path.strip_prefix(n)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

/// Looks through one file's content, chunk by chunk as it is packed, for the build
/// directory. Binary files are skipped after the first chunk; ELF files are
/// remembered for [`elf_findings`].
pub(crate) struct ContentScan<'a> {
    paths: &'a BuildPaths,
    state: State,
    /// The tail of the previous chunk, so matches across chunk boundaries are found.
    window: Vec<u8>,
    /// Newlines seen before `window`.
    lines: usize,
    /// The `#!` line (at most 200 bytes) when the file starts with one, and whether
    /// its end was seen.
    shebang: Option<(Vec<u8>, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Text,
    Binary,
    Elf,
    /// The build path is on the `#!` line, whose end is still to come.
    ShebangPending,
    Done,
}

impl<'a> ContentScan<'a> {
    pub(crate) fn new(paths: &'a BuildPaths) -> Self {
        let state = if paths.needles.is_empty() {
            State::Done
        } else {
            State::Start
        };
        ContentScan {
            paths,
            state,
            window: Vec::new(),
            lines: 0,
            shebang: None,
        }
    }

    /// Whether the file turned out to be an ELF object.
    pub(crate) fn is_elf(&self) -> bool {
        self.state == State::Elf
    }

    /// Feeds the next chunk; `eof` says it is the last. Returns a finding for `path`
    /// at the first occurrence of the build directory.
    pub(crate) fn feed(&mut self, chunk: &[u8], eof: bool, path: &str) -> Option<Finding> {
        if self.state == State::Start {
            if chunk.starts_with(b"\x7fELF") {
                self.state = State::Elf;
            } else if memchr::memchr(0, &chunk[..chunk.len().min(BINARY_PROBE)]).is_some() {
                self.state = State::Binary;
            } else {
                self.state = State::Text;
                if chunk.starts_with(b"#!") {
                    self.shebang = Some((Vec::new(), false));
                }
            }
        }
        if !matches!(self.state, State::Text | State::ShebangPending) {
            return None;
        }
        if let Some((line, false)) = &mut self.shebang {
            let end = memchr::memchr(b'\n', chunk);
            let take = end.unwrap_or(chunk.len());
            let room = 200usize.saturating_sub(line.len());
            line.extend_from_slice(&chunk[..take.min(room)]);
            if end.is_some() {
                self.shebang.as_mut().expect("just matched").1 = true;
            }
        }
        if self.state == State::ShebangPending {
            return self.shebang_finding(eof, path);
        }
        self.window.extend_from_slice(chunk);
        let found = self.find(eof);
        if let Some((offset, needle)) = found {
            let line = self.lines + memchr::memchr_iter(b'\n', &self.window[..offset]).count() + 1;
            self.window = Vec::new();
            if line == 1 && self.shebang.is_some() {
                self.state = State::ShebangPending;
                return self.shebang_finding(eof, path);
            }
            self.state = State::Done;
            return Some(Finding {
                path: path.to_owned(),
                kind: FindingKind::BuildPathInText,
                detail: format!("line {line} contains the build directory {needle}"),
            });
        }
        // Keep just enough of the tail for a match that straddles the next chunk.
        let keep = self.paths.longest.min(self.window.len());
        let cut = self.window.len() - keep;
        self.lines += memchr::memchr_iter(b'\n', &self.window[..cut]).count();
        self.window.drain(..cut);
        None
    }

    /// The finding for a `#!` line naming the build directory, once the whole line
    /// (or the file) has been seen.
    fn shebang_finding(&mut self, eof: bool, path: &str) -> Option<Finding> {
        let (first, complete) = self.shebang.as_ref()?;
        if !complete && !eof {
            return None;
        }
        self.state = State::Done;
        Some(Finding {
            path: path.to_owned(),
            kind: FindingKind::BuildPathInShebang,
            detail: format!(
                "shebang names the build directory: {}",
                String::from_utf8_lossy(first)
            ),
        })
    }

    /// The first occurrence of a build path in the window that ends at a path
    /// boundary (so `/build` is not found in `/build2`). A match touching the end of
    /// the window counts only at end of file; otherwise it is found again next time.
    fn find(&self, eof: bool) -> Option<(usize, &'a str)> {
        find_in(&self.paths.needles, &self.window, eof)
    }
}

/// The first occurrence of one of `needles` in `window` that ends at a path boundary
/// (so `/build` is not found in `/build2`). A match touching the end of the window
/// counts only when the window ends the text (`eof`).
fn find_in<'a>(
    needles: &'a [(String, memmem::Finder<'static>)],
    window: &[u8],
    eof: bool,
) -> Option<(usize, &'a str)> {
    let mut best: Option<(usize, &'a str)> = None;
    for (needle, finder) in needles {
        for at in finder.find_iter(window) {
            let end = at + needle.len();
            let boundary = match window.get(end) {
                None => eof,
                Some(&b) => !(b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
            };
            if boundary {
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, needle.as_str()));
                }
                break;
            }
        }
    }
    best
}

/// Findings for an ELF file: RPATH/RUNPATH entries that are absolute paths inside
/// the build directory. Reads only the headers and the dynamic section.
pub(crate) fn elf_findings(file: &Path, path: &str, paths: &BuildPaths) -> Vec<Finding> {
    let Ok(handle) = File::open(file) else {
        return Vec::new();
    };
    let cache = object::ReadCache::new(handle);
    let mut findings = Vec::new();
    for (tag, entry) in elf_rpaths(&cache).unwrap_or_default() {
        for part in entry.split(':') {
            if let Some(dir) = paths.prefix_of(part) {
                findings.push(Finding {
                    path: path.to_owned(),
                    kind: FindingKind::ElfRpath,
                    detail: format!("{tag} entry {part} is inside the build directory {dir}"),
                });
            }
        }
    }
    findings
}

/// The RPATH and RUNPATH strings of an ELF file; `None` when it is not a readable
/// ELF file (a truncated or odd object is not worth failing a pack over).
fn elf_rpaths<'d, R: object::ReadRef<'d>>(data: R) -> Option<Vec<(&'static str, String)>> {
    use object::elf;
    use object::read::elf::{Dyn, ElfFile32, ElfFile64, FileHeader};

    fn collect<'d, H: FileHeader, R: object::ReadRef<'d>>(
        header: &H,
        data: R,
    ) -> Option<Vec<(&'static str, String)>> {
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, data).ok()?;
        let (dynamic, strtab_index) = sections.dynamic(endian, data).ok()??;
        let strings = sections.strings(endian, data, strtab_index).ok()?;
        let mut out = Vec::new();
        for d in dynamic {
            let tag = match d.tag(endian) {
                elf::DT_RPATH => "RPATH",
                elf::DT_RUNPATH => "RUNPATH",
                _ => continue,
            };
            let value = d.string(endian, strings).ok()?;
            out.push((tag, String::from_utf8_lossy(value).into_owned()));
        }
        Some(out)
    }

    match object::FileKind::parse(data).ok()? {
        object::FileKind::Elf32 => collect(
            ElfFile32::<object::Endianness, R>::parse(data)
                .ok()?
                .elf_header(),
            data,
        ),
        object::FileKind::Elf64 => collect(
            ElfFile64::<object::Endianness, R>::parse(data)
                .ok()?
                .elf_header(),
            data,
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(paths: &BuildPaths, content: &[u8], chunk: usize) -> Option<Finding> {
        let mut scan = ContentScan::new(paths);
        let chunks: Vec<&[u8]> = content.chunks(chunk).collect();
        for (i, c) in chunks.iter().enumerate() {
            if let Some(f) = scan.feed(c, i + 1 == chunks.len(), "f") {
                return Some(f);
            }
        }
        None
    }

    #[test]
    fn finds_the_build_path_across_chunk_boundaries() {
        let paths = BuildPaths::new(&["/tmp/build".into()]);
        let content = b"one\ntwo\nprefix=/tmp/build/lib\n";
        for chunk in 1..content.len() + 1 {
            let f = scan_all(&paths, content, chunk).expect("found");
            assert_eq!(f.kind, FindingKind::BuildPathInText);
            assert_eq!(f.detail, "line 3 contains the build directory /tmp/build");
        }
    }

    #[test]
    fn respects_path_boundaries_and_skips_binaries() {
        let paths = BuildPaths::new(&["/tmp/build".into()]);
        assert!(scan_all(&paths, b"x=/tmp/build2/lib", 4).is_none());
        assert!(scan_all(&paths, b"x=/tmp/build", 4).is_some());
        assert!(scan_all(&paths, b"bin\0ary /tmp/build/x", 64).is_none());
    }

    #[test]
    fn shebangs_are_reported_with_their_line() {
        let paths = BuildPaths::new(&["/srv/b".into(), "/srv/b/".into()]);
        let f = scan_all(&paths, b"#!/srv/b/venv/bin/python3\nimport x\n", 7).unwrap();
        assert_eq!(f.kind, FindingKind::BuildPathInShebang);
        assert_eq!(
            f.detail,
            "shebang names the build directory: #!/srv/b/venv/bin/python3"
        );
    }

    #[test]
    fn symlinks_that_leave_the_tree_are_found() {
        let links: HashMap<&str, &str> = [
            ("ok", "a/b"),
            ("abs", "/etc/passwd"),
            ("up", "../x"),
            ("via", "abs"),
        ]
        .into_iter()
        .collect();
        let kinds: Vec<(String, FindingKind)> = symlink_findings(&links, &HashSet::new())
            .into_iter()
            .map(|f| (f.path, f.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("abs".into(), FindingKind::AbsoluteSymlink),
                ("up".into(), FindingKind::EscapingSymlink),
                ("via".into(), FindingKind::EscapingSymlink),
            ]
        );
    }
}
