//! The life of releases on a host, through the real `ship-agent`: receive, activate,
//! rollback, prune, status, history, verify.

mod common;

use std::fs;

use common::{Host, artifact, run};

#[test]
fn receive_activate_rollback_and_prune() {
    let host = Host::new();
    for v in ["v1", "v2", "v3"] {
        let received = host.receive(&artifact(v).0).expect(0).event("done");
        assert_eq!(received["version"], v);
        assert_eq!(received["outcome"], "ok");
        assert_eq!(received["files"], 2);
    }
    assert_eq!(host.releases(), ["v1", "v2", "v3"]);
    assert_eq!(host.current(), None);
    // Releases are complete trees with the artifact's content and modes.
    let index = fs::read_to_string(host.root().join("releases/v2/public/index.html")).unwrap();
    assert_eq!(index, "<h1>v2</h1>\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(host.root().join("releases/v2/bin/server"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
    assert_eq!(
        fs::read_link(host.root().join("releases/v2/run"))
            .unwrap()
            .to_str(),
        Some("bin/server")
    );

    for v in ["v1", "v2", "v3"] {
        let switched = host.agent("activate", &[v], None).expect(0).event("done");
        assert_eq!(switched["to"], v);
    }
    assert_eq!(host.current().as_deref(), Some("releases/v3"));
    let again = host
        .agent("activate", &["v3"], None)
        .expect(0)
        .event("done");
    assert_eq!(again["outcome"], "unchanged");

    // Rollback goes back through the deploys, never forward again.
    let back = host.agent("rollback", &[], None).expect(0).event("done");
    assert_eq!(
        (back["from"].as_str(), back["to"].as_str()),
        (Some("v3"), Some("v2"))
    );
    host.agent("rollback", &[], None).expect(0);
    assert_eq!(host.current().as_deref(), Some("releases/v1"));
    let none = host.agent("rollback", &[], None).expect(1);
    assert_eq!(
        none.event("failed")["message"],
        "there is no earlier release to roll back to from v1"
    );
    assert_eq!(host.current().as_deref(), Some("releases/v1"));
    host.agent("rollback", &["--to", "v3"], None).expect(0);
    assert_eq!(host.current().as_deref(), Some("releases/v3"));

    // v3 is current; its rollback target is v2 (v3 was deployed over v2).
    let pruned = host
        .agent("prune", &["--keep", "1"], None)
        .expect(0)
        .event("done");
    assert_eq!(pruned["removed"], serde_json::json!(["v1"]));
    assert_eq!(host.releases(), ["v2", "v3"]);

    let status = host.agent("status", &[], None).expect(0).event("done");
    assert_eq!(status["current"], "v3");
    assert_eq!(status["previous"], "v2");
    assert_eq!(status["releases"].as_array().unwrap().len(), 2);
    assert_eq!(status["last_switch"]["user"], "tester");
    assert!(status["free_bytes"].as_u64().unwrap() > 0);

    let ops: Vec<String> = host
        .journal()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["op"].as_str().unwrap(),
                r["result"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            "receive ok",
            "receive ok",
            "receive ok",
            "activate ok",
            "activate ok",
            "activate ok",
            "activate unchanged",
            "rollback ok",
            "rollback ok",
            "rollback failed",
            "rollback ok",
            "prune ok",
        ]
    );
    host.check_invariants();
}

#[test]
fn activate_with_keep_prunes_once_the_release_is_live() {
    let host = Host::new();
    for v in ["v1", "v2", "v3"] {
        host.receive(&artifact(v).0).expect(0);
    }
    host.agent("activate", &["v1"], None).expect(0);
    host.agent("activate", &["v2"], None).expect(0);
    // v3 goes live, then the oldest goes; v2 stays as the rollback target.
    let done = host
        .agent("activate", &["v3", "--keep", "1"], None)
        .expect(0)
        .event("done");
    assert_eq!(done["to"], "v3");
    assert_eq!(done["pruned"], serde_json::json!(["v1"]));
    assert_eq!(host.releases(), ["v2", "v3"]);
    assert_eq!(host.current().as_deref(), Some("releases/v3"));
    // A release that fails to activate prunes nothing.
    let missing = host
        .agent("activate", &["v9", "--keep", "1"], None)
        .expect(1);
    assert!(
        missing.event("failed")["message"]
            .as_str()
            .unwrap()
            .contains("release v9 is not on this host")
    );
    assert_eq!(host.releases(), ["v2", "v3"]);
}

#[test]
fn receiving_the_same_release_twice_is_a_no_op_and_other_content_is_refused() {
    let host = Host::new();
    let (v1, _) = artifact("v1");
    host.receive(&v1).expect(0);
    let again = host.receive(&v1).expect(0);
    assert_eq!(again.event("done")["outcome"], "unchanged");
    // Same version, other content.
    let (other, _) =
        common::artifact_with("v1", |tree| fs::write(tree.join("extra"), "x").unwrap());
    let refused = host.receive(&other).expect(1);
    let error = refused.event("failed")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.starts_with("the artifact for v1 was refused: release v1 is already on the host with different content (payload "),
        "{error}"
    );
    assert!(!host.root().join("releases/v1/extra").exists());
    assert!(host.incoming().is_empty());
    host.check_invariants();
}

#[test]
fn the_expected_digest_is_enforced() {
    let host = Host::new();
    let (bytes, sha) = artifact("v1");
    let wrong = "0".repeat(64);
    let refused = host
        .agent("receive", &["--expect-digest", &wrong], Some(&bytes))
        .expect(1);
    assert_eq!(
        refused.event("failed")["message"],
        format!("the artifact's sha256 is {sha}, expected {wrong}")
    );
    assert!(host.releases().is_empty());
    assert!(host.incoming().is_empty());
    let last = host.journal().pop().unwrap();
    assert_eq!(last["result"], "failed");
    assert_eq!(last["version"], "v1");
    host.agent("receive", &["--expect-digest", &sha], Some(&bytes))
        .expect(0);
    assert_eq!(host.releases(), ["v1"]);
}

#[test]
fn the_expected_payload_is_enforced_before_anything_is_written() {
    let host = Host::new();
    let (v1, _) = artifact("v1");
    let (v2, _) = artifact("v2");
    let payload = host.receive(&v1).expect(0).event("done")["payload_digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = host
        .agent("receive", &["--expect-payload", &payload], Some(&v2))
        .expect(1);
    let error = refused.event("failed")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.starts_with("the artifact for v2 was refused: its payload digest is "),
        "{error}"
    );
    assert!(error.ends_with(&format!("expected {payload}")), "{error}");
    assert_eq!(host.releases(), ["v1"]);
    assert!(host.incoming().is_empty());
}

#[test]
fn corrupt_artifacts_are_refused_and_leave_no_trace() {
    let host = Host::new();
    host.receive(&artifact("v1").0).expect(0);
    host.agent("activate", &["v1"], None).expect(0);
    let (good, _) = artifact_with_noise("v2");
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [10, good.len() / 3, good.len() / 2, good.len() - 5] {
        cases.push((format!("truncated at {cut}"), good[..cut].to_vec()));
    }
    for at in [40, good.len() / 2, good.len() - 20] {
        let mut flipped = good.clone();
        flipped[at] ^= 0x10;
        cases.push((format!("bit flip at {at}"), flipped));
    }
    cases.push(("empty".into(), Vec::new()));
    cases.push(("not an artifact".into(), b"GET / HTTP/1.1\r\n\r\n".to_vec()));
    for (what, bytes) in cases {
        let refused = host.receive(&bytes).expect(1);
        let failed = refused.event("failed");
        assert!(
            failed["message"] == "the artifact was refused"
                || failed["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("the artifact"),
            "{what}: {failed}"
        );
        assert_eq!(host.releases(), ["v1"], "{what}");
        assert!(host.incoming().is_empty(), "{what}");
        assert_eq!(host.current().as_deref(), Some("releases/v1"), "{what}");
        assert_eq!(host.journal().last().unwrap()["result"], "failed", "{what}");
    }
    host.check_invariants();
}

/// A v2 artifact with enough incompressible content for several zstd blocks.
fn artifact_with_noise(version: &str) -> (Vec<u8>, String) {
    common::artifact_with(version, |tree| {
        let noise: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        fs::write(tree.join("public/noise.bin"), noise).unwrap();
    })
}

#[test]
fn verify_names_what_changed_on_disk() {
    let host = Host::new();
    host.receive(&artifact("v1").0).expect(0);
    host.agent("activate", &["v1"], None).expect(0);
    host.agent("verify", &[], None).expect(0);
    let release = host.root().join("releases/v1");
    fs::write(release.join("public/index.html"), "defaced").unwrap();
    fs::write(release.join("public/backdoor.php"), "<?php").unwrap();
    fs::remove_file(release.join("run")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        release.join("bin/server"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let drift = host.agent("verify", &[], None).expect(1);
    let done = drift.event("done");
    assert_eq!(
        done["changed"],
        serde_json::json!([
            ["bin/server", "mode 4755 now, 0755 in the manifest"],
            ["public/index.html", "content differs"]
        ])
    );
    assert_eq!(done["added"], serde_json::json!(["public/backdoor.php"]));
    assert_eq!(done["removed"], serde_json::json!(["run"]));
    assert_eq!(
        drift.event("failed")["message"],
        "release v1 differs from its manifest: 4 problem(s)"
    );
}

#[test]
fn hello_answers_on_fresh_and_used_roots() {
    let host = Host::new();
    let fresh = host.agent("hello", &[], None).expect(0).event("done");
    assert_eq!(fresh["protocol"], agent::protocol::VERSION);
    assert!(fresh["status"].is_null());
    assert!(!host.root().exists(), "hello changes nothing");
    host.receive(&artifact("v1").0).expect(0);
    let used = host.agent("hello", &[], None).expect(0).event("done");
    assert_eq!(used["status"]["releases"][0]["version"], "v1");
    assert!(used["status"]["current"].is_null());
}

#[test]
fn commands_explain_bad_input() {
    let host = Host::new();
    let out = run(&["status", "--root", &host.root_str()], None).expect(1);
    assert!(
        out.stderr
            .contains("is not an app root (it has no .ship directory)"),
        "{}",
        out.stderr
    );
    host.receive(&artifact("v1").0).expect(0);
    let out = run(&["activate", "--root", &host.root_str(), "v9"], None).expect(1);
    assert!(
        out.stderr
            .contains("release v9 is not on this host (present: v1)"),
        "{}",
        out.stderr
    );
    let out = run(&["activate", "--root", &host.root_str(), "../../etc"], None).expect(2);
    assert!(out.stderr.contains("invalid version"), "{}", out.stderr);
    let newer = (agent::protocol::VERSION + 1).to_string();
    let out = run(
        &["--protocol", &newer, "status", "--root", &host.root_str()],
        None,
    )
    .expect(2);
    assert!(
        out.stderr.contains(&format!(
            "protocol mismatch: the caller speaks protocol {newer}"
        )),
        "{}",
        out.stderr
    );
    let out = run(&["prune", "--root", &host.root_str(), "--keep", "0"], None).expect(2);
    assert!(out.stderr.contains("--keep"), "{}", out.stderr);
    let human = run(&["history", "--root", &host.root_str()], None).expect(0);
    assert!(
        human.stderr.contains("tester     receive   v1  ok"),
        "{}",
        human.stderr
    );
    assert!(human.stdout.is_empty(), "human output belongs on stderr");
}

#[test]
fn received_files_have_the_archives_time() {
    // As tar sets them: what compiled bytecode in the release expects of its source.
    let host = Host::new();
    host.receive(&common::artifact("v1").0).expect(0);
    for file in ["bin/server", "public/index.html"] {
        let meta = fs::metadata(host.root().join("releases/v1").join(file)).unwrap();
        assert_eq!(meta.modified().unwrap(), std::time::UNIX_EPOCH, "{file}");
    }
}
