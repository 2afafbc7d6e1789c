//! Hostile and malformed artifacts, crafted by hand, fed to the real `ship-agent
//! receive`. Each must be refused with its reason, leave no release, no staging
//! directory and no file outside the app root, and be recorded in the journal.

mod common;

use std::fs;
use std::io::Write;

use common::Host;
use manifests::manifest::payload_digest;
use manifests::{Entry, EntryKind, EntryPath, Mode, Sha256};
use serde_json::{Value, json};

/// One tar entry as written, without any of ship's checks.
struct Raw {
    path: Vec<u8>,
    kind: tar::EntryType,
    mode: u32,
    data: Vec<u8>,
    link: Option<&'static str>,
}

fn file(path: &str, data: &[u8]) -> Raw {
    Raw {
        path: path.as_bytes().to_vec(),
        kind: tar::EntryType::Regular,
        mode: 0o644,
        data: data.to_vec(),
        link: None,
    }
}

fn dir(path: &str) -> Raw {
    Raw {
        path: path.as_bytes().to_vec(),
        kind: tar::EntryType::Directory,
        mode: 0o755,
        data: Vec::new(),
        link: None,
    }
}

fn link(path: &str, target: &'static str) -> Raw {
    Raw {
        path: path.as_bytes().to_vec(),
        kind: tar::EntryType::Symlink,
        mode: 0o777,
        data: Vec::new(),
        link: Some(target),
    }
}

fn header(raw: &Raw) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    let name = &mut h.as_ustar_mut().unwrap().name;
    name[..raw.path.len()].copy_from_slice(&raw.path);
    h.set_entry_type(raw.kind);
    h.set_mode(raw.mode);
    h.set_size(raw.data.len() as u64);
    if let Some(target) = raw.link {
        let field = &mut h.as_ustar_mut().unwrap().linkname;
        field[..target.len()].copy_from_slice(target.as_bytes());
    }
    h.set_cksum();
    h
}

fn put(tar: &mut Vec<u8>, raw: &Raw) {
    tar.extend_from_slice(header(raw).as_bytes());
    tar.extend_from_slice(&raw.data);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
}

/// The manifest's view of well-formed raw entries.
fn entries_of(raws: &[Raw]) -> Vec<Entry> {
    raws.iter()
        .map(|r| Entry {
            path: EntryPath::new(std::str::from_utf8(&r.path).unwrap()).unwrap(),
            mode: Mode::from_bits(r.mode & 0o777).unwrap(),
            kind: match r.kind {
                tar::EntryType::Directory => EntryKind::Dir,
                tar::EntryType::Symlink => EntryKind::Symlink {
                    target: r.link.unwrap().into(),
                },
                _ => EntryKind::File {
                    size: r.data.len() as u64,
                    sha256: Sha256::of(&r.data),
                },
            },
        })
        .collect()
}

/// A manifest document for `entries` (consistent unless the caller edits it).
fn manifest(entries: &[Entry]) -> Value {
    json!({
        "format": 1,
        "name": "shop",
        "version": "v6",
        "created": "1970-01-01T00:00:00Z",
        "compression": {"algorithm": "zstd", "zstd_version": "x", "level": 3},
        "entry_count": entries.len(),
        "unpacked_size": entries.iter().map(|e| match e.kind { EntryKind::File { size, .. } => size, _ => 0 }).sum::<u64>(),
        "payload_digest": payload_digest(entries),
        "entries": entries,
    })
}

/// A tar stream: the manifest document, then `raws`, then the end marker; zstd.
fn artifact(manifest: &Value, raws: &[Raw]) -> Vec<u8> {
    let mut tar = Vec::new();
    let json = serde_json::to_vec(manifest).unwrap();
    put(&mut tar, &file(".ship/manifest.json", &json));
    for raw in raws {
        put(&mut tar, raw);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    zstd::encode_all(&tar[..], 3).unwrap()
}

/// An artifact whose manifest describes `raws` faithfully.
fn consistent(raws: &[Raw]) -> Vec<u8> {
    artifact(&manifest(&entries_of(raws)), raws)
}

/// Feeds `bytes` to a fresh host that already runs v1, and checks the refusal.
#[track_caller]
fn refused(bytes: &[u8], reason: &str) {
    let host = Host::new();
    host.receive(&common::artifact("v1").0).expect(0);
    host.agent("activate", &["v1"], None).expect(0);
    let outside_before = listing(host.dir.path());
    let out = host.receive(bytes).expect(1);
    let failed = out.event("failed");
    let text = std::iter::once(failed["message"].as_str().unwrap().to_owned())
        .chain(
            failed["causes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned()),
        )
        .collect::<Vec<_>>()
        .join(": ");
    assert!(text.contains(reason), "expected {reason:?} in:\n{text}");
    assert_eq!(host.releases(), ["v1"], "a release appeared");
    assert!(host.incoming().is_empty(), "staging left behind");
    assert_eq!(
        listing(host.dir.path()),
        outside_before,
        "something was written"
    );
    let last = host.journal().pop().unwrap();
    assert_eq!(
        (last["op"].as_str(), last["result"].as_str()),
        (Some("receive"), Some("failed"))
    );
    assert!(last["reason"].as_str().unwrap().contains(reason), "{last}");
    host.check_invariants();
}

/// Every path under `dir` except the agent's own bookkeeping files.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        let rel = entry
            .strip_prefix(dir)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        if !rel.ends_with("journal.jsonl") && !rel.ends_with(".ship/lock") {
            out.push(rel);
        }
    }
    out.sort();
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for item in fs::read_dir(dir).unwrap() {
        let path = item.unwrap().path();
        out.push(path.clone());
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}

#[test]
fn absolute_paths() {
    let raws = [file("etc/x", b"x")];
    let mut m = manifest(&entries_of(&raws));
    m["entries"][0]["path"] = json!("/etc/x");
    refused(
        &artifact(&m, &[file("/etc/x", b"x")]),
        "invalid entry path \"/etc/x\": it is absolute",
    );
}

#[test]
fn parent_components() {
    let raws = [file("x", b"x")];
    let mut m = manifest(&entries_of(&raws));
    m["entries"][0]["path"] = json!("../../x");
    refused(
        &artifact(&m, &[file("../../x", b"x")]),
        "it has a `..` component",
    );
}

#[test]
fn nul_bytes() {
    let raws = [file("x", b"x")];
    let mut m = manifest(&entries_of(&raws));
    m["entries"][0]["path"] = json!("a\u{0}b");
    refused(&artifact(&m, &raws), "control character");
}

#[test]
fn duplicate_paths() {
    let raws = [file("a", b"1"), file("a", b"1")];
    let entries = entries_of(&raws);
    refused(
        &artifact(&manifest(&entries), &raws),
        "entry \"a\" is out of order or repeated",
    );
    // Listed once in the manifest, twice in the archive.
    refused(
        &artifact(&manifest(&entries[..1]), &raws),
        "entry \"a\" is in the archive but not in the manifest",
    );
}

#[test]
fn entries_not_in_the_manifest_and_manifest_entries_missing() {
    let raws = [file("a", b"1"), file("b", b"2")];
    let entries = entries_of(&raws);
    refused(
        &artifact(&manifest(&entries[..1]), &raws),
        "entry \"b\" is in the archive but not in the manifest",
    );
    refused(
        &artifact(&manifest(&entries), &raws[..1]),
        "entry \"b\" is in the manifest but missing from the archive",
    );
}

#[test]
fn absolute_and_escaping_symlinks() {
    refused(
        &consistent(&[link("passwd", "/etc/passwd")]),
        "symlink passwd -> /etc/passwd is absolute",
    );
    refused(
        &consistent(&[link("a", "b"), link("b", "/etc")]),
        "symlink a -> b leads through an absolute symlink",
    );
    refused(
        &consistent(&[dir("a"), link("a/up", "../../x")]),
        "symlink a/up -> ../../x leads outside the release",
    );
    // Each hop stays inside, the chain does not.
    refused(
        &consistent(&[link("dot", "."), link("sneaky", "dot/..")]),
        "symlink sneaky -> dot/.. leads outside the release",
    );
}

/// A symlink `a -> /tmp` and a file `a/x`, which would be written wherever `a`
/// points; and the manifest's entries for them.
fn through_a_link() -> ([Raw; 2], Vec<Entry>) {
    let raws = [link("a", "/tmp"), file("a/x", b"pwned")];
    let mut entries = entries_of(&raws[..1]);
    entries.push(Entry {
        path: EntryPath::new("a/x").unwrap(),
        mode: Mode::REGULAR,
        kind: EntryKind::File {
            size: 5,
            sha256: Sha256::of(b"pwned"),
        },
    });
    (raws, entries)
}

/// `raws` with a manifest that declares `declared` (link, target) as host
/// requirements, its payload digest covering them.
fn declaring(raws: &[Raw], declared: &[(&str, &str)]) -> Vec<u8> {
    let entries = entries_of(raws);
    let host: Vec<manifests::HostRequirement> = declared
        .iter()
        .map(|(link, target)| manifests::HostRequirement {
            link: EntryPath::new(link).unwrap(),
            target: (*target).to_owned(),
        })
        .collect();
    let mut m = manifest(&entries);
    m["host_requirements"] = json!(host);
    m["payload_digest"] = json!(manifests::manifest::payload_digest_of(&entries, &host));
    artifact(&m, raws)
}

#[test]
fn host_requirements_cover_only_the_links_they_name() {
    // Another absolute link beside a declared one is refused.
    refused(
        &declaring(
            &[
                link("passwd", "/etc/passwd"),
                link("python3", "/usr/bin/python3"),
            ],
            &[("python3", "/usr/bin/python3")],
        ),
        "symlink passwd -> /etc/passwd is absolute",
    );
    // A link through a declared one, to somewhere nobody declared, is refused.
    refused(
        &declaring(
            &[
                link("py", "/usr/lib/python3"),
                link("up", "py/../../../etc"),
            ],
            &[("py", "/usr/lib/python3")],
        ),
        "symlink up -> py/../../../etc leads through an absolute symlink",
    );
    refused(
        &declaring(
            &[link("inner", "py/secret"), link("py", "/usr/lib/python3")],
            &[("py", "/usr/lib/python3")],
        ),
        "symlink inner -> py/secret leads through an absolute symlink",
    );
    // The declaration must say where the link points.
    refused(
        &declaring(
            &[link("python3", "/etc/shadow")],
            &[("python3", "/usr/bin/python3")],
        ),
        "host requirement \"python3\" names target \"/usr/bin/python3\", but the symlink points to \"/etc/shadow\"",
    );
    // A host path is absolute and plain: no `..` to walk anywhere else.
    refused(
        &declaring(&[link("up", "../../etc")], &[("up", "../../etc")]),
        "target \"../../etc\" is not absolute",
    );
    refused(
        &declaring(&[link("x", "/usr/../etc")], &[("x", "/usr/../etc")]),
        "target \"/usr/../etc\" has an empty, `.` or `..` component",
    );
    // Declaring a link does not let anything be written through it.
    let (raws, entries) = through_a_link();
    let host = vec![manifests::HostRequirement {
        link: EntryPath::new("a").unwrap(),
        target: "/tmp".into(),
    }];
    let mut m = manifest(&entries);
    m["host_requirements"] = json!(host);
    m["payload_digest"] = json!(manifests::manifest::payload_digest_of(&entries, &host));
    refused(
        &artifact(&m, &raws),
        "entry \"a/x\" has no directory entry for its parent \"a\"",
    );
    // A declaration the payload digest does not cover is refused: pinning the
    // payload pins the host requirements too.
    let raws = [link("python3", "/usr/bin/python3")];
    let mut m = manifest(&entries_of(&raws));
    m["host_requirements"] = json!([{"link": "python3", "target": "/usr/bin/python3"}]);
    refused(&artifact(&m, &raws), "payload_digest says");
}

#[test]
fn declared_host_links_and_links_through_them_are_received() {
    let host = Host::new();
    let raws = [
        dir("bin"),
        link("bin/python", "python3"),
        link("bin/python3", "/usr/bin/python3.99"),
    ];
    host.receive(&declaring(&raws, &[("bin/python3", "/usr/bin/python3.99")]))
        .expect(0);
    let release = host.root().join("releases/v6/bin");
    assert_eq!(
        fs::read_link(release.join("python3")).unwrap(),
        std::path::Path::new("/usr/bin/python3.99")
    );
    assert_eq!(
        fs::read_link(release.join("python")).unwrap(),
        std::path::Path::new("python3")
    );
    // This host lacks the path: the release is here, but it does not go live.
    let out = host.agent("activate", &["v6"], None).expect(1);
    let failed = out.event("failed");
    assert_eq!(
        failed["details"]["preflight"]["lacking"],
        json!([{"path": "/usr/bin/python3.99", "needed_by": ["bin/python3"]}])
    );
    let error = failed["message"].as_str().unwrap();
    assert!(
        error.contains("lacks /usr/bin/python3.99, which bin/python3 needs"),
        "{error}"
    );
    assert_eq!(host.current(), None);
    host.check_invariants();
}

#[test]
fn writes_through_a_symlink() {
    // "a" is a symlink; "a/x" would be written wherever it points.
    let (raws, entries) = through_a_link();
    refused(
        &artifact(&manifest(&entries), &raws),
        "entry \"a/x\" has no directory entry for its parent \"a\"",
    );
    // The manifest says directory, the archive sends a symlink first.
    let dir_then_file = [dir("a"), file("a/x", b"pwned")];
    refused(
        &artifact(&manifest(&entries_of(&dir_then_file)), &raws),
        "a symlink in the archive, a dir in the manifest",
    );
}

#[test]
fn hard_links_devices_and_fifos() {
    for (kind, what) in [
        (tar::EntryType::Link, "a hard link"),
        (tar::EntryType::Char, "a character device"),
        (tar::EntryType::Block, "a block device"),
        (tar::EntryType::Fifo, "a FIFO"),
    ] {
        let raws = [Raw {
            path: b"dev".to_vec(),
            kind,
            mode: 0o644,
            data: Vec::new(),
            link: Some("x"),
        }];
        let m = manifest(&entries_of(&[file("dev", b"")]));
        refused(&artifact(&m, &raws), &format!("entry \"dev\" is {what}"));
    }
}

#[test]
fn setuid_and_setgid_bits() {
    let clean = [file("tool", b"#!/bin/sh\n")];
    let m = manifest(&entries_of(&clean));
    for mode in [0o4755, 0o2755, 0o1755] {
        let raws = [Raw {
            mode,
            ..file("tool", b"#!/bin/sh\n")
        }];
        refused(
            &artifact(&m, &raws),
            &format!("mode {mode:04o} in the archive, 0644 in the manifest"),
        );
    }
    let mut m = m;
    m["entries"][0]["mode"] = json!("4755");
    refused(&artifact(&m, &clean), "invalid mode \"4755\"");
}

#[test]
fn a_stream_longer_than_the_manifest_says() {
    let raws = [file("a", b"1")];
    let m = manifest(&entries_of(&raws));
    let mut tar = Vec::new();
    put(
        &mut tar,
        &file(".ship/manifest.json", &serde_json::to_vec(&m).unwrap()),
    );
    put(&mut tar, &raws[0]);
    tar.extend_from_slice(&[0u8; 1024]);
    tar.extend_from_slice(&vec![b'A'; 1 << 20]);
    refused(
        &zstd::encode_all(&tar[..], 3).unwrap(),
        "there is data after the end of the archive",
    );
    // A file longer than its manifest size.
    let longer = [file("a", b"12")];
    refused(
        &artifact(&m, &longer),
        "size 2 in the archive, 1 in the manifest",
    );
}

#[test]
fn zstd_windows_beyond_the_cap() {
    let raws = [file("a", b"1")];
    let mut tar = Vec::new();
    put(
        &mut tar,
        &file(
            ".ship/manifest.json",
            &serde_json::to_vec(&manifest(&entries_of(&raws))).unwrap(),
        ),
    );
    put(&mut tar, &raws[0]);
    tar.extend_from_slice(&[0u8; 1024]);
    let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
    encoder
        .set_parameter(zstd::zstd_safe::CParameter::WindowLog(30))
        .unwrap();
    encoder.include_contentsize(false).unwrap();
    encoder.write_all(&tar).unwrap();
    refused(&encoder.finish().unwrap(), "Frame requires too much memory");
}

#[test]
fn releases_larger_than_the_free_disk() {
    // The manifest claims a 1 PiB file: refused before a byte is written.
    let huge = Entry {
        path: EntryPath::new("huge.bin").unwrap(),
        mode: Mode::REGULAR,
        kind: EntryKind::File {
            size: 1 << 50,
            sha256: Sha256::of(b""),
        },
    };
    let m = manifest(&[huge]);
    refused(&artifact(&m, &[]), "not enough disk space on");
}
