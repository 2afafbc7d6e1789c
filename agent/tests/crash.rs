//! Crash safety and the lock: the agent is SIGKILLed at every named step of every
//! operation, and part-way through an artifact stream; each time the host must be
//! on a complete release with a readable journal and a free lock, and the next
//! operation must succeed.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::{Host, Paused, agent, artifact};

/// A host with v1 and v2 received, v1 current.
fn host() -> Host {
    let host = Host::new();
    host.receive(&artifact("v1").0).expect(0);
    host.receive(&artifact("v2").0).expect(0);
    host.agent("activate", &["v1"], None).expect(0);
    host
}

#[test]
fn killing_receive_at_any_step_leaves_a_complete_release() {
    let (v3, _) = artifact("v3");
    for point in [
        "receive:staging",
        "receive:written",
        "receive:synced",
        "receive:renamed",
    ] {
        let host = host();
        Paused::start(&host, point, "receive", &[], Some(&v3)).kill();
        host.check_invariants();
        assert_eq!(host.current().as_deref(), Some("releases/v1"), "{point}");
        let releases = host.releases();
        assert!(
            releases == ["v1", "v2"] || releases == ["v1", "v2", "v3"],
            "{point}: {releases:?}"
        );
        // The next receive clears the leftovers and completes (or finds v3 there).
        host.receive(&v3).expect(0);
        assert!(host.incoming().is_empty(), "{point}");
        assert_eq!(host.releases(), ["v1", "v2", "v3"]);
        host.check_invariants();
    }
}

#[test]
fn killing_receive_part_way_through_the_stream_leaves_no_trace() {
    let (v3, _) = common::artifact_with("v3", |tree| {
        let noise: Vec<u8> = (0..400_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
            .collect();
        std::fs::write(tree.join("public/noise.bin"), noise).unwrap();
    });
    let host = host();
    for k in 0..12 {
        let offset = v3.len() * k / 12 + 1;
        let root = host.root_str();
        let mut child = agent()
            .args(["--json", "receive", "--root", root.as_str()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&v3[..offset]).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(40));
        child.kill().unwrap();
        child.wait().unwrap();
        drop(stdin);
        host.check_invariants();
        assert_eq!(host.releases(), ["v1", "v2"], "offset {offset}");
        assert_eq!(host.current().as_deref(), Some("releases/v1"));
    }
    host.receive(&v3).expect(0);
    assert!(host.incoming().is_empty());
}

#[test]
fn killing_a_switch_at_any_step_leaves_current_on_a_release() {
    for (op, args, point) in [
        ("activate", vec!["v2"], "activate:linked"),
        ("activate", vec!["v2"], "activate:switched"),
        ("rollback", vec!["--to", "v2"], "rollback:linked"),
        ("rollback", vec!["--to", "v2"], "rollback:switched"),
    ] {
        let host = host();
        Paused::start(&host, point, op, &args, None).kill();
        host.check_invariants();
        let current = host.current();
        assert!(
            current.as_deref() == Some("releases/v1") || current.as_deref() == Some("releases/v2"),
            "{point}: {current:?}"
        );
        // The interrupted switch can simply be repeated; no temporary link survives it.
        host.agent(op, &args, None).expect(0);
        assert_eq!(host.current().as_deref(), Some("releases/v2"), "{point}");
        let leftovers: Vec<_> = std::fs::read_dir(host.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".current"))
            .collect();
        assert!(leftovers.is_empty(), "{point}: {leftovers:?}");
    }
}

#[test]
fn killing_prune_leaves_whole_releases_only() {
    let host = host();
    host.receive(&artifact("v3").0).expect(0);
    host.agent("activate", &["v3"], None).expect(0);
    Paused::start(&host, "prune:moved", "prune", &["--keep", "1"], None).kill();
    host.check_invariants();
    assert_eq!(host.current().as_deref(), Some("releases/v3"));
    // The release being removed is gone from releases/ but may linger in the trash.
    host.agent("prune", &["--keep", "1"], None).expect(0);
    assert_eq!(host.releases(), ["v1", "v3"]);
    assert!(
        std::fs::read_dir(host.root().join(".ship/trash"))
            .unwrap()
            .next()
            .is_none()
    );
    host.check_invariants();
}

#[test]
fn a_second_agent_is_told_who_holds_the_lock_and_the_lock_dies_with_its_holder() {
    let host = host();
    let (v3, _) = artifact("v3");
    let paused = Paused::start(&host, "receive:staging", "receive", &[], Some(&v3));
    let pid = paused.child.id();
    let busy = host.agent("activate", &["v2"], None).expect(1);
    let error = busy.event("failed")["message"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with(&format!(
            "{} is busy: locked by pid {pid} (ship-agent receive, since ",
            host.root().display()
        )),
        "{error}"
    );
    let status = host.agent("status", &[], None).expect(0).event("done");
    assert_eq!(status["lock"]["holder"]["pid"], pid);
    assert_eq!(host.current().as_deref(), Some("releases/v1"));
    paused.kill();
    host.agent("activate", &["v2"], None).expect(0);
    host.check_invariants();
}
