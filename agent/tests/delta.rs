//! Delta receives: the release made from a delta stream plus copies of the host's
//! own files, every file checked; what the host cannot supply refused; copies
//! independent of their sources; `have` distrusting copies that drifted; and a
//! SIGKILL at every step leaving a complete release.

mod common;

use std::fs;
use std::io::Cursor;

use common::{Host, Paused, artifact_with};
use manifests::{EntryKind, Manifest, Sha256};

/// An artifact of `version`: the test app with a large library shared by every
/// version and a page naming the version.
fn artifact(version: &str) -> Vec<u8> {
    artifact_with(version, |tree| {
        let library: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
            .collect();
        fs::write(tree.join("bin/library.so"), library).unwrap();
    })
    .0
}

fn manifest_of(artifact: &[u8]) -> Manifest {
    packager::read::read_manifest(Cursor::new(artifact)).unwrap()
}

fn contents(manifest: &Manifest) -> Vec<Sha256> {
    manifest
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::File { sha256, .. } => Some(sha256.clone()),
            _ => None,
        })
        .collect()
}

/// The delta of `artifact` carrying the files whose content `send` asks for.
fn delta(artifact: &[u8], send: impl Fn(&Sha256) -> bool) -> Vec<u8> {
    packager::delta::write_delta(
        Cursor::new(artifact.to_vec()),
        &send,
        Vec::new(),
        3,
        1,
        None,
    )
    .unwrap()
    .0
}

/// The delta of `artifact` for a host that has `had`'s files.
fn delta_after(had: &[u8], artifact: &[u8]) -> Vec<u8> {
    let have = contents(&manifest_of(had));
    delta(artifact, |content| !have.contains(content))
}

fn verify(host: &Host, version: &str) {
    host.agent("verify", &[version], None).expect(0);
}

#[test]
fn a_delta_is_made_whole_from_the_hosts_copies_and_checked() {
    let host = Host::new();
    let (v1, v2) = (artifact("v1"), artifact("v2"));
    host.receive(&v1).expect(0);
    let stream = delta_after(&v1, &v2);
    assert!(
        stream.len() * 10 < v2.len(),
        "{} of {}",
        stream.len(),
        v2.len()
    );
    let received = host.agent("receive", &["--delta"], Some(&stream)).expect(0);
    let done = received.event("done");
    assert_eq!(done["version"], "v2");
    assert_eq!(done["files"], 3, "{done}");
    assert_eq!(done["reused_files"], 2, "{done}");
    assert_eq!(host.releases(), ["v1", "v2"]);
    verify(&host, "v2");
    let journal = host.journal();
    let record = journal.last().unwrap();
    assert_eq!(
        (&record["op"], &record["result"]),
        (&"receive".into(), &"ok".into())
    );

    // The copy is a file of its own: editing it in place leaves v1 as it was.
    let copy = host.root().join("releases/v2/bin/library.so");
    fs::write(&copy, b"edited").unwrap();
    verify(&host, "v1");
    host.agent("verify", &["v2"], None).expect(1);
}

#[test]
fn a_delta_that_leaves_out_what_the_host_lacks_is_refused() {
    let host = Host::new();
    let (v1, v2) = (artifact("v1"), artifact("v2"));
    host.receive(&v1).expect(0);
    host.agent("activate", &["v1"], None).expect(0);
    // Nothing sent: v2's page is nowhere on the host.
    let stream = delta(&v2, |_| false);
    let refused = host.agent("receive", &["--delta"], Some(&stream)).expect(1);
    let failed = refused.event("failed");
    assert_eq!(failed["kind"], "missing_content");
    assert_eq!(
        failed["message"],
        "the delta for v2 left out public/index.html, and no release on this host has its content"
    );
    assert_eq!(
        failed["hint"],
        "send the whole artifact (ship deploy --full)"
    );
    assert_eq!(host.releases(), ["v1"]);
    assert!(host.incoming().is_empty());
    assert_eq!(host.current().as_deref(), Some("releases/v1"));
    host.check_invariants();
    let record = host.journal().pop().unwrap();
    assert_eq!(record["result"], "failed");

    // A delta is not an artifact: read as one, it is refused for what it lacks.
    let full = host.receive(&delta_after(&v1, &v2)).expect(1);
    assert_eq!(full.event("failed")["kind"], "artifact");
    // And an artifact read as a delta is fine: it leaves nothing out.
    host.agent("receive", &["--delta"], Some(&v2)).expect(0);
    verify(&host, "v2");
}

#[test]
fn have_names_what_is_missing_and_distrusts_copies_that_drifted() {
    let host = Host::new();
    let (v1, v2) = (artifact("v1"), artifact("v2"));
    host.receive(&v1).expect(0);
    let wanted = contents(&manifest_of(&v2));
    let input = serde_json::to_vec(&serde_json::json!({ "contents": wanted })).unwrap();
    let had = host.agent("have", &[], Some(&input)).expect(0);
    let page = Sha256::of(b"<h1>v2</h1>\n").to_string();
    assert_eq!(had.event("done")["missing"], serde_json::json!([page]));

    // A copy changed on disk is not offered, and the host says so.
    let library = host.root().join("releases/v1/bin/library.so");
    fs::write(&library, vec![0u8; 300_000]).unwrap();
    let had = host.agent("have", &[], Some(&input)).expect(0);
    assert_eq!(
        had.event("done")["missing"].as_array().unwrap().len(),
        2,
        "{}",
        had.stdout
    );
    assert!(
        had.event("warning")["message"].as_str().unwrap().ends_with(
            "releases/v1/bin/library.so differs from its release's manifest: not reused"
        ),
        "{}",
        had.stdout
    );
    // Nor is it copied when a delta leaves that file out anyway.
    let stream = delta(&v2, |content| content.to_string() == page);
    let refused = host.agent("receive", &["--delta"], Some(&stream)).expect(1);
    assert_eq!(refused.event("failed")["kind"], "missing_content");
    assert_eq!(host.releases(), ["v1"]);

    // Garbage on stdin is a clear error.
    let garbage = host.agent("have", &[], Some(b"not json")).expect(1);
    assert!(
        garbage.event("failed")["message"]
            .as_str()
            .unwrap()
            .starts_with(
                "cannot read the contents asked about ({\"contents\": [SHA256, …]}) from stdin"
            ),
        "{}",
        garbage.stdout
    );
}

#[test]
fn killing_a_delta_receive_at_any_step_leaves_a_complete_release() {
    let (v1, v2, v3) = (artifact("v1"), artifact("v2"), artifact("v3"));
    let stream = delta_after(&v2, &v3);
    for point in [
        "receive:staging",
        "receive:reusing",
        "receive:written",
        "receive:synced",
        "receive:renamed",
    ] {
        let host = Host::new();
        host.receive(&v1).expect(0);
        host.receive(&v2).expect(0);
        host.agent("activate", &["v2"], None).expect(0);
        Paused::start(&host, point, "receive", &["--delta"], Some(&stream)).kill();
        host.check_invariants();
        assert_eq!(host.current().as_deref(), Some("releases/v2"), "{point}");
        let releases = host.releases();
        assert!(
            releases == ["v1", "v2"] || releases == ["v1", "v2", "v3"],
            "{point}: {releases:?}"
        );
        host.agent("receive", &["--delta"], Some(&stream)).expect(0);
        assert!(host.incoming().is_empty(), "{point}");
        assert_eq!(host.releases(), ["v1", "v2", "v3"]);
        verify(&host, "v3");
        host.check_invariants();
    }
}

#[test]
fn a_delta_against_a_manifest_of_the_host_needs_those_very_bytes() {
    let host = Host::new();
    let (v1, v2) = (artifact("v1"), artifact("v2"));
    host.receive(&v1).expect(0);
    let base = fs::read(host.root().join("releases/v1/.ship/manifest.json")).unwrap();
    let have = contents(&manifest_of(&v1));
    let stream = packager::delta::write_delta(
        Cursor::new(v2.clone()),
        &|content| !have.contains(content),
        Vec::new(),
        3,
        1,
        Some(&base),
    )
    .unwrap()
    .0;
    assert!(stream.len() < delta_after(&v1, &v2).len());
    let sha = Sha256::of(&base).to_string();
    let other = Sha256::of(b"another manifest").to_string();
    let refused = host
        .agent(
            "receive",
            &["--delta", "--base", "v1", "--base-sha256", &other],
            Some(&stream),
        )
        .expect(1);
    let failed = refused.event("failed");
    assert_eq!(failed["kind"], "missing_content");
    assert_eq!(
        failed["message"],
        "the delta was made against the manifest of v1, which this host does not have as it was sent"
    );
    assert_eq!(host.releases(), ["v1"]);
    host.agent(
        "receive",
        &["--delta", "--base", "v1", "--base-sha256", &sha],
        Some(&stream),
    )
    .expect(0);
    verify(&host, "v2");
}

#[test]
fn stamps_anyone_could_have_written_are_not_taken() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let host = Host::new();
    let (v1, v2) = (artifact("v1"), artifact("v2"));
    host.receive(&v1).expect(0);
    let release = host.root().join("releases/v1");
    // The library is changed, and its stamp forged to match: a stamps file that
    // others may write is not believed, so the library is hashed, and refused.
    let library = release.join("bin/library.so");
    fs::write(&library, vec![7u8; 300_000]).unwrap();
    let meta = fs::symlink_metadata(&library).unwrap();
    let stamps_path = release.join(".ship/stamps.json");
    let mut stamps: serde_json::Value =
        serde_json::from_slice(&fs::read(&stamps_path).unwrap()).unwrap();
    stamps["bin/library.so"] = serde_json::json!({
        "dev": meta.dev(), "ino": meta.ino(), "size": meta.size(),
        "ctime": meta.ctime(), "ctime_nsec": meta.ctime_nsec(),
    });
    fs::write(&stamps_path, serde_json::to_vec(&stamps).unwrap()).unwrap();
    fs::set_permissions(&stamps_path, fs::Permissions::from_mode(0o666)).unwrap();
    let page = Sha256::of(b"<h1>v2</h1>\n");
    let stream = delta(&v2, |content| *content == page);
    let refused = host.agent("receive", &["--delta"], Some(&stream)).expect(1);
    assert_eq!(refused.event("failed")["kind"], "missing_content");
    assert_eq!(host.releases(), ["v1"]);
    // Written by the agent, a release's records are its user's alone.
    for record in ["manifest.json", "artifact.json"] {
        let mode = fs::metadata(release.join(".ship").join(record))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{record}");
    }
    for dir in [release.clone(), release.join(".ship")] {
        let mode = fs::metadata(&dir).unwrap().mode();
        assert_eq!(mode & 0o777, 0o755, "{}", dir.display());
    }
}
