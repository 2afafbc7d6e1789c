//! Relocation: what `ship pack` rewrites so that a tree built in one directory runs
//! from whatever directory it is unpacked in, and which symlinks it declares as the
//! host's to provide.
//!
//! The rule is a rewrite at pack time into forms that find their place when they run,
//! never a path filled in on the host: nothing in a release names the directory it
//! was built in or the one it lands in, so every host gets the same bytes, the
//! manifest's hashes are those of the bytes shipped, and an app root can move.
//!
//! - A symlink to an absolute path inside the tree becomes relative; one to an
//!   absolute path outside it is a host requirement (`venv/bin/python3 ->
//!   /usr/bin/python3.11`), which preflight checks on every host.
//! - A `#!` line that names a Python interpreter of the tree by its build path (also
//!   in pip's `#!/bin/sh` form for long paths) becomes a `sh` preamble, valid Python,
//!   that runs the interpreter found beside the script's real location, as venv-pack
//!   and `uv venv --relocatable` do.
//! - A virtualenv's `activate` (sh, bash, dash, …), `activate.fish` and
//!   `activate.csh` compute the virtualenv's directory when sourced.
//! - `pyvenv.cfg` loses its `command` line, the only one naming the build directory.
//! - A `.pth` line that names a directory of the tree by its build path becomes
//!   relative to the `.pth` file's directory, which `site` resolves it against.
//! - A compiled Python file (`__pycache__/*.pyc`) that was up to date with its source
//!   records the release's time as its source's: every file of a release has that
//!   time on a host (the agent sets it, as tar does), so Python keeps using the
//!   bytecode instead of compiling the source again and writing into the release.
//!
//! Anything else that names the build directory — or one of these that does so in a
//! form not known here — is left byte for byte and reported with the reason.

use std::collections::HashSet;

use manifests::{EntryPath, Finding, FindingKind, HostRequirement, Rewrite, RewriteKind};

use crate::scan::BuildPaths;

/// Largest file that is read whole to be rewritten; larger ones are only scanned.
pub(crate) const REWRITE_MAX: u64 = 1 << 20;

/// What relocation knows of the tree being packed.
pub(crate) struct Tree<'a> {
    /// The absolute spellings of the build directory.
    pub(crate) paths: &'a BuildPaths,
    /// Every entry path of the tree.
    pub(crate) entries: &'a HashSet<&'a str>,
}

/// What becomes of a symlink.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Link {
    /// Shipped as it is (relative, or absolute in a form that is left for the
    /// symlink check to report).
    Keep,
    /// Pointed into the tree by an absolute path: now relative.
    Relative { target: String, rewrite: Rewrite },
    /// Points out of the tree to the host.
    Host(HostRequirement),
}

/// Decides what becomes of the symlink `link -> target`; with `rewrite` false, only
/// host requirements are recognised (declaring them changes no byte).
pub(crate) fn symlink(tree: &Tree<'_>, link: &EntryPath, target: &str, rewrite: bool) -> Link {
    if !target.starts_with('/') {
        return Link::Keep;
    }
    if let Some(spelling) = tree.paths.prefix_of(target) {
        let inside = target[spelling.len()..].trim_start_matches('/');
        if !rewrite || !(inside.is_empty() || EntryPath::new(inside).is_ok()) {
            return Link::Keep;
        }
        let relative = relative(parent(link.as_str()), inside);
        let shown = if inside.is_empty() {
            "the top of the tree"
        } else {
            inside
        };
        return Link::Relative {
            rewrite: Rewrite {
                path: link.to_string(),
                kind: RewriteKind::Symlink,
                what: format!("target → {relative}"),
                why: format!("it pointed to {shown} by its absolute path in the build directory"),
            },
            target: relative,
        };
    }
    if manifests::manifest::check_host_path(target).is_ok() {
        return Link::Host(HostRequirement {
            link: link.clone(),
            target: target.to_owned(),
        });
    }
    Link::Keep
}

/// What becomes of a file's content.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum File {
    /// Shipped as it is (it may still be reported by the content scan).
    Keep,
    /// Rewritten.
    Rewritten { content: Vec<u8>, rewrite: Rewrite },
    /// A file of a kind relocation knows, naming the build directory in a way that
    /// cannot be rewritten safely: shipped as it is, and reported with the reason.
    Refused(Finding),
}

/// Whether the file at `path`, whose content starts with `head`, may be one that
/// relocation rewrites, so that it is worth reading whole: a script, a `pyvenv.cfg`,
/// a `.pth` file or an `activate*` file in a `bin` directory. (Whether it is in a
/// virtualenv is decided once the whole tree is known.)
pub(crate) fn is_candidate(path: &str, head: &[u8]) -> bool {
    head.starts_with(b"#!")
        || name(path) == "pyvenv.cfg"
        || pth_dir(path).is_some()
        || (is_activate(name(path)) && name(parent(path)) == "bin")
}

/// Rewrites the content of the file at `path` if it names the build directory in a
/// form relocation knows.
pub(crate) fn file(tree: &Tree<'_>, path: &EntryPath, content: &[u8]) -> File {
    if tree.paths.first_in(content).is_none() {
        return File::Keep;
    }
    let path = path.as_str();
    if name(path) == "pyvenv.cfg" {
        pyvenv_cfg(tree, path, content)
    } else if let Some(shell) = activation_shell(tree, path) {
        activation(tree, path, content, shell)
    } else if let Some(dir) = pth_dir(path) {
        pth(tree, path, dir, content)
    } else if content.starts_with(b"#!") {
        shebang(tree, path, content)
    } else {
        File::Keep
    }
}

fn refused(path: &str, kind: FindingKind, detail: String) -> File {
    File::Refused(Finding {
        path: path.to_owned(),
        kind,
        detail,
    })
}

/// `#!<build>/…/python3 [arg]`, or pip's form for long paths, becomes a preamble that
/// `sh` runs and Python reads as a string.
fn shebang(tree: &Tree<'_>, path: &str, content: &[u8]) -> File {
    let (first, rest) = split_line(content);
    let first = String::from_utf8_lossy(first);
    let (interpreter, argument, rest) = match pip_long_form(&first, rest) {
        Some((interpreter, rest)) => (interpreter, None, rest),
        None => {
            let line = first[2..].trim_start();
            let (interpreter, argument) = match line.split_once([' ', '\t']) {
                Some((i, a)) if !a.trim().is_empty() => (i.to_owned(), Some(a.trim().to_owned())),
                Some((i, _)) => (i.to_owned(), None),
                None => (line.to_owned(), None),
            };
            (interpreter, argument, rest)
        }
    };
    let Some(spelling) = tree.paths.prefix_of(&interpreter) else {
        // The build directory is elsewhere in the script: the scan reports it.
        return File::Keep;
    };
    let shown = format!("#!{}", first.trim_start_matches("#!"));
    let inside = interpreter[spelling.len()..].trim_start_matches('/');
    if !tree.entries.contains(inside) {
        return refused(
            path,
            FindingKind::BuildPathInShebang,
            format!("shebang names {interpreter}, which is not in the tree: {shown}"),
        );
    }
    let program = name(inside);
    if !is_python(program) {
        return refused(
            path,
            FindingKind::BuildPathInShebang,
            format!(
                "shebang names the build directory: {shown} (only Python interpreters are rewritten: {program} would read the sh preamble that finds it)"
            ),
        );
    }
    let relative = relative(parent(path), inside);
    let quotable = |s: &str| !s.contains(['\'', '\\', '\n', '\r', '\0']);
    if !quotable(&relative) || !argument.as_deref().is_none_or(quotable) {
        return refused(
            path,
            FindingKind::BuildPathInShebang,
            format!(
                "shebang names the build directory: {shown} (a quote or backslash in it prevents the rewrite)"
            ),
        );
    }
    let argument = argument.map_or(String::new(), |a| format!(" '{a}'"));
    let mut out = format!(
        "#!/bin/sh\n'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")\"/'{relative}'{argument} \"$0\" \"$@\"\n' '''\n"
    )
    .into_bytes();
    out.extend_from_slice(rest);
    File::Rewritten {
        content: out,
        rewrite: Rewrite {
            path: path.to_owned(),
            kind: RewriteKind::Shebang,
            what: format!(
                "#! line → a sh preamble that runs {relative} from the script's real directory"
            ),
            why: format!("it named the interpreter {inside} by its path in the build directory"),
        },
    }
}

/// pip writes `#!/bin/sh` + `'''exec' <python> "$0" "$@"` + `' '''` when the
/// interpreter's path is too long for a `#!` line: the interpreter, and what follows.
fn pip_long_form<'a>(first: &str, rest: &'a [u8]) -> Option<(String, &'a [u8])> {
    if first.trim_end() != "#!/bin/sh" {
        return None;
    }
    let (second, after) = split_line(rest);
    let (third, after) = split_line(after);
    let second = std::str::from_utf8(second).ok()?;
    let interpreter = second
        .strip_prefix("'''exec' ")?
        .strip_suffix(" \"$0\" \"$@\"")?;
    if third != b"' '''" {
        return None;
    }
    let interpreter = ['"', '\'']
        .iter()
        .find_map(|q| {
            interpreter
                .strip_prefix(*q)
                .and_then(|i| i.strip_suffix(*q))
        })
        .unwrap_or(interpreter);
    Some((interpreter.to_owned(), after))
}

/// `python`, `python3`, `python3.11`, `python3.13t`, `pypy3`, …
fn is_python(program: &str) -> bool {
    let Some(version) = program
        .strip_prefix("python")
        .or_else(|| program.strip_prefix("pypy"))
    else {
        return false;
    };
    let version = version
        .strip_suffix(|c: char| c.is_ascii_lowercase())
        .unwrap_or(version);
    version.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// The shells whose activation scripts are rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shell {
    Sh,
    Fish,
    Csh,
    /// Another activation script (nushell, PowerShell, batch, xonsh, …): reported.
    Other,
}

/// The shell of `path` when it is an activation script: a file named `activate*`
/// in the `bin` directory of a virtualenv (beside which is a `pyvenv.cfg`).
fn activation_shell(tree: &Tree<'_>, path: &str) -> Option<Shell> {
    let file = name(path);
    if !is_activate(file) {
        return None;
    }
    let bin = parent(path);
    if name(bin) != "bin" {
        return None;
    }
    let venv = parent(bin);
    let cfg = if venv.is_empty() {
        "pyvenv.cfg".to_owned()
    } else {
        format!("{venv}/pyvenv.cfg")
    };
    if !tree.entries.contains(cfg.as_str()) {
        return None;
    }
    Some(match file {
        "activate" => Shell::Sh,
        "activate.fish" => Shell::Fish,
        "activate.csh" => Shell::Csh,
        _ => Shell::Other,
    })
}

/// The venv's quoted build path (`"<build>/venv"` or `'<build>/venv'`) becomes the
/// directory the script finds at run time; nothing else may name the build directory.
fn activation(tree: &Tree<'_>, path: &str, content: &[u8], shell: Shell) -> File {
    let file = name(path);
    if shell == Shell::Other {
        return refused(
            path,
            FindingKind::BuildPathInText,
            format!(
                "activation script {file} names the build directory (only the sh, fish and csh ones are rewritten)"
            ),
        );
    }
    let venv = parent(parent(path));
    let found = match shell {
        Shell::Fish => "(builtin realpath (dirname (builtin realpath (status filename)))/..)",
        _ => "\"$_ship_venv\"",
    };
    let mut text = content.to_vec();
    let mut replaced = 0;
    for spelling in tree.paths.spellings() {
        let abs = if venv.is_empty() {
            spelling.to_owned()
        } else {
            format!("{spelling}/{venv}")
        };
        // Quoted, or a bare word: venv quotes the path with shlex.quote since
        // CPython 3.11.11 (and in Debian's 3.11.2), which leaves a plain path bare.
        for quote in ["\"", "'", ""] {
            let literal = format!("{quote}{abs}{quote}");
            let bare = quote.is_empty();
            let (next, n) = replace_all(&text, literal.as_bytes(), found.as_bytes(), bare);
            text = next;
            replaced += n;
        }
    }
    if replaced == 0 || tree.paths.first_in(&text).is_some() {
        return refused(
            path,
            FindingKind::BuildPathInText,
            format!(
                "activation script {file} names the build directory other than as the virtualenv's own path"
            ),
        );
    }
    let (preamble, epilogue) = match shell {
        Shell::Sh => (sh_preamble(file), "unset _ship_venv\n"),
        Shell::Csh => (csh_preamble(file), "unset _ship_venv\n"),
        _ => (String::new(), ""),
    };
    let mut out = Vec::with_capacity(text.len() + preamble.len() + epilogue.len() + 1);
    let at = if text.starts_with(b"#!") {
        split_line(&text).0.len() + usize::from(text.contains(&b'\n'))
    } else {
        0
    };
    out.extend_from_slice(&text[..at]);
    out.extend_from_slice(preamble.as_bytes());
    out.extend_from_slice(&text[at..]);
    if !epilogue.is_empty() {
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(epilogue.as_bytes());
    }
    let how = match shell {
        Shell::Fish => "`status filename`",
        Shell::Csh => "the file the shell is reading (/proc/$$/fd)",
        _ => "BASH_SOURCE in bash, else the file the shell is reading (/proc/$$/fd)",
    };
    let shown = if venv.is_empty() { "." } else { venv };
    File::Rewritten {
        content: out,
        rewrite: Rewrite {
            path: path.to_owned(),
            kind: RewriteKind::ActivateScript,
            what: format!("VIRTUAL_ENV → the real directory above the script, found through {how}"),
            why: format!("it set VIRTUAL_ENV to the path of {shown} in the build directory"),
        },
    }
}

/// Sets `_ship_venv` to the real directory above the sourced script, or gives up.
fn sh_preamble(file: &str) -> String {
    format!(
        r#"# Added by ship pack: the virtualenv is wherever this script really is.
if [ -n "${{BASH_VERSION:-}}" ]; then
    _ship_venv=${{BASH_SOURCE[0]}}
else
    _ship_venv=$(for _ship_fd in /proc/$$/fd/*; do _ship_file=$(readlink -f -- "$_ship_fd") && case $_ship_file in */bin/{file}) echo "$_ship_file"; break ;; esac; done)
fi
_ship_venv=$([ -n "$_ship_venv" ] && cd -P -- "$(dirname -- "$(readlink -f -- "$_ship_venv")")/.." && pwd)
if [ -z "$_ship_venv" ]; then
    echo "{file}: cannot tell where this script is; source it from bash, or from a shell on Linux" >&2
    unset _ship_venv
    return 1 2>/dev/null || exit 1
fi
"#
    )
}

/// csh cannot name the file it sources; the file it is reading is open, though.
fn csh_preamble(file: &str) -> String {
    format!(
        r#"# Added by ship pack: the virtualenv is wherever this script really is.
set _ship_venv = `sh -c 'for f in /proc/$1/fd/*; do t=$(readlink -f -- "$f") || continue; case $t in */bin/{file}) echo "${{t%/bin/{file}}}"; exit 0;; esac; done' sh $$`
set _ship_venv = "$_ship_venv"
if ("$_ship_venv" == "") echo "{file}: cannot tell where this script is (no /proc?)" > /dev/stderr
"#
    )
}

/// Drops `command = …` lines naming the build directory; any other line that names it
/// is reported.
fn pyvenv_cfg(tree: &Tree<'_>, path: &str, content: &[u8]) -> File {
    let mut out = Vec::with_capacity(content.len());
    let mut dropped = Vec::new();
    for (n, line) in content.split_inclusive(|&b| b == b'\n').enumerate() {
        if tree.paths.first_in(line).is_none() {
            out.extend_from_slice(line);
            continue;
        }
        let text = String::from_utf8_lossy(line);
        let key = text.split_once('=').map(|(k, _)| k.trim());
        if key != Some("command") {
            let key = key.map_or(String::new(), |k| format!(" ({k})"));
            return refused(
                path,
                FindingKind::BuildPathInText,
                format!(
                    "line {}{key} names the build directory: the virtualenv's base interpreter is inside the tree",
                    n + 1
                ),
            );
        }
        dropped.push(n + 1);
    }
    File::Rewritten {
        content: out,
        rewrite: Rewrite {
            path: path.to_owned(),
            kind: RewriteKind::PyvenvCfg,
            what: format!("removed the `command` line ({})", lines(&dropped)),
            why: "it recorded how the virtualenv was made, naming the build directory".into(),
        },
    }
}

/// The directory of a `.pth` file that `site` reads: one in `site-packages` or
/// `dist-packages`.
fn pth_dir(path: &str) -> Option<&str> {
    let dir = parent(path);
    (path.ends_with(".pth") && matches!(name(dir), "site-packages" | "dist-packages"))
        .then_some(dir)
}

/// Path lines naming a directory of the tree by its build path become relative to the
/// `.pth` file's directory; `import` lines (code) naming it are reported.
fn pth(tree: &Tree<'_>, path: &str, dir: &str, content: &[u8]) -> File {
    let mut out = Vec::with_capacity(content.len());
    let mut changed = Vec::new();
    for (n, line) in content.split_inclusive(|&b| b == b'\n').enumerate() {
        if tree.paths.first_in(line).is_none() {
            out.extend_from_slice(line);
            continue;
        }
        let text = String::from_utf8_lossy(line);
        let body = text.trim_end();
        let ending = &text[body.len()..];
        let inside = tree
            .paths
            .prefix_of(body)
            .map(|spelling| body[spelling.len()..].trim_start_matches('/'))
            .filter(|inside| inside.is_empty() || EntryPath::new(inside).is_ok());
        let Some(inside) = inside.filter(|_| !body.starts_with("import")) else {
            return refused(
                path,
                FindingKind::BuildPathInText,
                format!(
                    "line {} names the build directory, and is not a path inside it (code in a .pth file is not rewritten)",
                    n + 1
                ),
            );
        };
        out.extend_from_slice(relative(dir, inside).as_bytes());
        out.extend_from_slice(ending.as_bytes());
        changed.push(n + 1);
    }
    File::Rewritten {
        content: out,
        rewrite: Rewrite {
            path: path.to_owned(),
            kind: RewriteKind::Pth,
            what: format!(
                "{} made relative to the .pth file's directory",
                lines(&changed)
            ),
            why: "it named a directory of the tree by its path in the build directory".into(),
        },
    }
}

fn lines(numbers: &[usize]) -> String {
    let list: Vec<String> = numbers.iter().map(usize::to_string).collect();
    match numbers.len() {
        1 => format!("line {}", list[0]),
        _ => format!("lines {}", list.join(", ")),
    }
}

/// Replaces every `from` in `text` with `to` — with `word`, only where it stands as a
/// whole shell word (after `=`, a blank or `(`; before a blank, `)`, `;` or the end of
/// the line). Returns the new text and the count.
fn replace_all(text: &[u8], from: &[u8], to: &[u8], word: bool) -> (Vec<u8>, usize) {
    let starts_word = |at: usize| at == 0 || b"= \t(\n".contains(&text[at - 1]);
    let ends_word = |end: usize| text.get(end).is_none_or(|b| b" \t\r\n);".contains(b));
    let mut out = Vec::with_capacity(text.len());
    let mut count = 0;
    let mut last = 0;
    for at in memchr::memmem::find_iter(text, from) {
        if at < last || (word && !(starts_word(at) && ends_word(at + from.len()))) {
            continue;
        }
        out.extend_from_slice(&text[last..at]);
        out.extend_from_slice(to);
        last = at + from.len();
        count += 1;
    }
    out.extend_from_slice(&text[last..]);
    (out, count)
}

/// The source of a compiled Python file: `pkg/__pycache__/mod.cpython-311.pyc` is
/// compiled from `pkg/mod.py`.
pub(crate) fn bytecode_source(path: &str) -> Option<String> {
    let cache = parent(path);
    if name(cache) != "__pycache__" || !path.ends_with(".pyc") {
        return None;
    }
    let stem = name(path).split('.').next().filter(|s| !s.is_empty())?;
    Some(match parent(cache) {
        "" => format!("{stem}.py"),
        package => format!("{package}/{stem}.py"),
    })
}

/// Whether the compiled file whose content starts with `header` is up to date with a
/// source of `mtime` (seconds) and `size`, as Python checks a timestamp-based `.pyc`:
/// flags 0, then the source's mtime and size, each modulo 2^32.
pub(crate) fn bytecode_is_fresh(header: &[u8], mtime: u64, size: u64) -> bool {
    let word = |at: usize| {
        header
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    word(4) == Some(0) && word(8) == Some(mtime as u32) && word(12) == Some(size as u32)
}

/// Puts the release's time `mtime` where a `.pyc` header records its source's.
pub(crate) fn retime_bytecode(header: &mut [u8], mtime: u64) {
    header[8..12].copy_from_slice(&(mtime as u32).to_le_bytes());
}

/// The record of a retimed compiled file.
pub(crate) fn bytecode_rewrite(path: &str) -> Rewrite {
    Rewrite {
        path: path.to_owned(),
        kind: RewriteKind::Bytecode,
        what: "recorded source time → the release's time".into(),
        why: "every file gets the release's time on a host, so Python keeps using the bytecode"
            .into(),
    }
}

/// The first line (without its newline) and everything after the newline.
fn split_line(bytes: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b'\n', bytes) {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &[]),
    }
}

/// Whether a file name is an activation script's: `activate*`, `Activate*`.
fn is_activate(file: &str) -> bool {
    file.get(.."activate".len())
        .is_some_and(|start| start.eq_ignore_ascii_case("activate"))
}

/// The last component of a `/`-separated path.
fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The parent of a `/`-separated relative path (`""` at the top).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// The path from the directory `from` to `to`, both relative to the top of the tree
/// (`""` is the top).
pub(crate) fn relative(from: &str, to: &str) -> String {
    let parts = |p: &str| -> Vec<String> {
        if p.is_empty() {
            Vec::new()
        } else {
            p.split('/').map(str::to_owned).collect()
        }
    };
    let (from, to) = (parts(from), parts(to));
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out: Vec<String> = vec!["..".to_owned(); from.len() - common];
    out.extend(to[common..].iter().cloned());
    if out.is_empty() {
        ".".to_owned()
    } else {
        out.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILD: &str = "/tmp/b";

    fn with_tree<T>(entries: &[&str], f: impl FnOnce(&Tree<'_>) -> T) -> T {
        let paths = BuildPaths::new(&[BUILD.to_owned()]);
        let entries: HashSet<&str> = entries.iter().copied().collect();
        f(&Tree {
            paths: &paths,
            entries: &entries,
        })
    }

    fn venv() -> Vec<&'static str> {
        vec![
            "venv",
            "venv/bin",
            "venv/bin/python",
            "venv/bin/python3",
            "venv/bin/gunicorn",
            "venv/bin/node",
            "venv/bin/activate",
            "venv/bin/activate.fish",
            "venv/bin/activate.csh",
            "venv/bin/activate.nu",
            "venv/pyvenv.cfg",
            "venv/lib/python3.11/site-packages/x.pth",
            "src",
        ]
    }

    fn outcome(path: &str, content: &str) -> File {
        with_tree(&venv(), |tree| {
            file(tree, &EntryPath::new(path).unwrap(), content.as_bytes())
        })
    }

    fn rewritten(path: &str, content: &str) -> (String, Rewrite) {
        match outcome(path, content) {
            File::Rewritten { content, rewrite } => (String::from_utf8(content).unwrap(), rewrite),
            other => panic!("not rewritten: {other:?}"),
        }
    }

    fn refusal(path: &str, content: &str) -> String {
        match outcome(path, content) {
            File::Refused(finding) => finding.detail,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn relative_paths_between_tree_paths() {
        assert_eq!(relative("venv/bin", "venv/bin/python3"), "python3");
        assert_eq!(
            relative("venv/lib/py/site-packages", "src"),
            "../../../../src"
        );
        assert_eq!(relative("", "a/b"), "a/b");
        assert_eq!(relative("a/b", ""), "../..");
        assert_eq!(relative("a", "a"), ".");
        assert_eq!(relative("a/x", "a/y/z"), "../y/z");
    }

    #[test]
    fn python_shebangs_become_a_preamble_that_finds_the_interpreter() {
        let (text, rewrite) = rewritten(
            "venv/bin/gunicorn",
            "#!/tmp/b/venv/bin/python3\n# -*- coding: utf-8 -*-\nimport sys\n",
        );
        assert_eq!(
            text,
            "#!/bin/sh\n'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")\"/'python3' \"$0\" \"$@\"\n' '''\n# -*- coding: utf-8 -*-\nimport sys\n"
        );
        assert_eq!(rewrite.kind, RewriteKind::Shebang);
        assert!(!rewrite.what.contains(BUILD) && !rewrite.why.contains(BUILD));

        // An argument is kept; a script elsewhere reaches the interpreter upwards.
        let (text, _) = rewritten("src/tool", "#!/tmp/b/venv/bin/python -E\nprint(1)");
        assert!(
            text.starts_with(
                "#!/bin/sh\n'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")\"/'../venv/bin/python' '-E' \"$0\" \"$@\"\n' '''\nprint(1)"
            ),
            "{text}"
        );
        // pip's form for interpreters whose path is too long for a #! line.
        let (text, _) = rewritten(
            "venv/bin/gunicorn",
            "#!/bin/sh\n'''exec' /tmp/b/venv/bin/python3 \"$0\" \"$@\"\n' '''\nimport sys\n",
        );
        assert!(
            text.ends_with("/'python3' \"$0\" \"$@\"\n' '''\nimport sys\n"),
            "{text}"
        );
        assert_eq!(text.matches("'''exec'").count(), 1);
        // uv's form quotes the interpreter.
        let (quoted, _) = rewritten(
            "venv/bin/gunicorn",
            "#!/bin/sh\n'''exec' '/tmp/b/venv/bin/python3' \"$0\" \"$@\"\n' '''\nimport sys\n",
        );
        assert_eq!(quoted, text);
    }

    #[test]
    fn shebangs_that_cannot_be_rewritten_say_why() {
        assert!(
            refusal("venv/bin/tool", "#!/tmp/b/venv/bin/node\n")
                .contains("only Python interpreters are rewritten: node")
        );
        assert!(
            refusal("venv/bin/tool", "#!/tmp/b/missing/python3\n")
                .contains("/tmp/b/missing/python3, which is not in the tree")
        );
        // Not an interpreter of the build directory: the content scan's business.
        assert_eq!(
            outcome("src/x", "#!/usr/bin/env python3\n# /tmp/b/src\n"),
            File::Keep
        );
        assert_eq!(outcome("src/x", "#!/tmp/b2/python3\n"), File::Keep);
    }

    #[test]
    fn activation_scripts_find_their_directory() {
        let (sh, rewrite) = rewritten(
            "venv/bin/activate",
            "# from bash\ndeactivate nondestructive\nVIRTUAL_ENV=\"/tmp/b/venv\"\nexport VIRTUAL_ENV\n",
        );
        assert!(sh.starts_with("# Added by ship pack"), "{sh}");
        assert!(sh.contains("VIRTUAL_ENV=\"$_ship_venv\"\n"), "{sh}");
        assert!(sh.contains("*/bin/activate)"), "{sh}");
        assert!(
            sh.ends_with("export VIRTUAL_ENV\nunset _ship_venv\n"),
            "{sh}"
        );
        assert_eq!(rewrite.kind, RewriteKind::ActivateScript);

        let (fish, _) = rewritten(
            "venv/bin/activate.fish",
            "set -gx VIRTUAL_ENV '/tmp/b/venv'\n",
        );
        assert_eq!(
            fish,
            "set -gx VIRTUAL_ENV (builtin realpath (dirname (builtin realpath (status filename)))/..)\n"
        );
        let (csh, _) = rewritten(
            "venv/bin/activate.csh",
            "setenv VIRTUAL_ENV \"/tmp/b/venv\"\n",
        );
        assert!(
            csh.contains("*/bin/activate.csh) echo \"${t%/bin/activate.csh}\""),
            "{csh}"
        );
        assert!(
            csh.contains("setenv VIRTUAL_ENV \"$_ship_venv\"\nunset _ship_venv\n"),
            "{csh}"
        );

        // CPython 3.11.11+ (and Debian's 3.11.2) write the path bare.
        for (file, bare, expected) in [
            (
                "venv/bin/activate",
                "VIRTUAL_ENV=/tmp/b/venv\nX=$(cygpath /tmp/b/venv)\n",
                "VIRTUAL_ENV=\"$_ship_venv\"\nX=$(cygpath \"$_ship_venv\")\n",
            ),
            (
                "venv/bin/activate.csh",
                "setenv VIRTUAL_ENV /tmp/b/venv\n",
                "setenv VIRTUAL_ENV \"$_ship_venv\"\n",
            ),
            (
                "venv/bin/activate.fish",
                "set -gx VIRTUAL_ENV /tmp/b/venv\n",
                "set -gx VIRTUAL_ENV (builtin realpath (dirname (builtin realpath (status filename)))/..)\n",
            ),
        ] {
            let (text, _) = rewritten(file, bare);
            assert!(text.contains(expected), "{text}");
        }
        // Anything else naming the build directory leaves the script as it is.
        for other in [
            "VIRTUAL_ENV=\"/tmp/b/venv\"\nX=/tmp/b/venv/bin\n",
            "VIRTUAL_ENV=/tmp/b/venv2\n",
            "VIRTUAL_ENV=x/tmp/b/venv\n",
        ] {
            assert!(
                refusal("venv/bin/activate", other)
                    .contains("other than as the virtualenv's own path"),
                "{other}"
            );
        }
        assert!(
            refusal(
                "venv/bin/activate.nu",
                "const virtual_env = '/tmp/b/venv'\n"
            )
            .contains("only the sh, fish and csh ones")
        );
        // Not in a virtualenv (no pyvenv.cfg beside bin/): not an activation script.
        assert_eq!(
            outcome("src/bin/activate", "X=\"/tmp/b/venv\"\n"),
            File::Keep
        );
    }

    #[test]
    fn pyvenv_cfg_loses_the_command_line() {
        let (text, rewrite) = rewritten(
            "venv/pyvenv.cfg",
            "home = /usr/bin\nversion = 3.11.7\ncommand = /usr/bin/python3 -m venv /tmp/b/venv\n",
        );
        assert_eq!(text, "home = /usr/bin\nversion = 3.11.7\n");
        assert_eq!(rewrite.what, "removed the `command` line (line 3)");
        assert!(refusal("venv/pyvenv.cfg", "home = /tmp/b/python/bin\n").contains("line 1 (home)"));
    }

    #[test]
    fn pth_paths_become_relative_and_code_is_reported() {
        let (text, rewrite) = rewritten(
            "venv/lib/python3.11/site-packages/x.pth",
            "/usr/lib/other\n/tmp/b/src\r\n/tmp/b\n",
        );
        assert_eq!(text, "/usr/lib/other\n../../../../src\r\n../../../..\n");
        assert_eq!(
            rewrite.what,
            "lines 2, 3 made relative to the .pth file's directory"
        );
        assert!(
            refusal(
                "venv/lib/python3.11/site-packages/x.pth",
                "import sys; sys.path.append('/tmp/b/src')\n"
            )
            .contains("line 1 names the build directory")
        );
    }

    #[test]
    fn symlinks_into_the_tree_become_relative_and_out_of_it_host_requirements() {
        with_tree(&venv(), |tree| {
            let link = EntryPath::new("venv/lib64").unwrap();
            match symlink(tree, &link, "/tmp/b/venv/lib", true) {
                Link::Relative { target, rewrite } => {
                    assert_eq!(target, "lib");
                    assert_eq!(rewrite.kind, RewriteKind::Symlink);
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(symlink(tree, &link, "/tmp/b/venv/lib", false), Link::Keep);
            let python = EntryPath::new("venv/bin/python3").unwrap();
            assert_eq!(
                symlink(tree, &python, "/usr/bin/python3.11", true),
                Link::Host(HostRequirement {
                    link: python.clone(),
                    target: "/usr/bin/python3.11".into()
                })
            );
            assert_eq!(
                symlink(tree, &python, "/usr/lib/../bin/python3", true),
                Link::Keep
            );
            assert_eq!(symlink(tree, &python, "python3.11", true), Link::Keep);
            assert!(matches!(
                symlink(tree, &EntryPath::new("top").unwrap(), "/tmp/b", true),
                Link::Relative { target, .. } if target == "."
            ));
        });
    }

    #[test]
    fn compiled_files_know_their_source_and_whether_they_are_up_to_date() {
        assert_eq!(
            bytecode_source("venv/lib/pkg/__pycache__/mod.cpython-311.pyc").as_deref(),
            Some("venv/lib/pkg/mod.py")
        );
        assert_eq!(
            bytecode_source("__pycache__/top.cpython-311.opt-1.pyc").as_deref(),
            Some("top.py")
        );
        assert_eq!(bytecode_source("pkg/mod.pyc"), None);
        assert_eq!(bytecode_source("pkg/__pycache__/.pyc"), None);

        let mut header = Vec::new();
        for word in [0x0a0d0da7u32, 0, 1_700_000_000, 357] {
            header.extend_from_slice(&word.to_le_bytes());
        }
        assert!(bytecode_is_fresh(&header, 1_700_000_000, 357));
        assert!(!bytecode_is_fresh(&header, 1_700_000_001, 357));
        assert!(!bytecode_is_fresh(&header, 1_700_000_000, 358));
        assert!(!bytecode_is_fresh(&header[..12], 1_700_000_000, 357));
        // Modulo 2^32, as Python compares them.
        assert!(bytecode_is_fresh(&header, 1_700_000_000 + (1 << 32), 357));
        let mut hashed = header.clone();
        hashed[4] = 1;
        assert!(!bytecode_is_fresh(&hashed, 1_700_000_000, 357));

        retime_bytecode(&mut header, 0);
        assert!(bytecode_is_fresh(&header, 0, 357));
        assert_eq!(bytecode_rewrite("x.pyc").kind, RewriteKind::Bytecode);
    }

    #[test]
    fn python_interpreters_are_recognised_by_name() {
        for yes in [
            "python",
            "python3",
            "python3.11",
            "python3.13t",
            "pypy3",
            "pypy3.10",
        ] {
            assert!(is_python(yes), "{yes}");
        }
        for no in ["node", "python-config", "perl", "pythonista3", "bash"] {
            assert!(!is_python(no), "{no}");
        }
    }
}
