//! `health` through the real `ship-agent`: the current release's services checked
//! once each, the outcome journaled only when it changes, and no lock taken.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Host, Run, artifact, artifact_behaving, run_with};
use manifests::behaviour::{Behaviour, Health, Service};
use serde_json::json;

/// The health command of [`breakable`] releases.
const CHECK: &str = "test -z \"$BROKEN\"";

/// A release whose `web` service is healthy unless `BROKEN` is set, beside a
/// `worker` without a health check.
fn breakable(version: &str) -> Vec<u8> {
    with_web_health(
        version,
        Health::Command {
            command: CHECK.into(),
            timeout: Some(Duration::from_secs(2)),
        },
    )
}

fn with_web_health(version: &str, health: Health) -> Vec<u8> {
    let behaviour = Behaviour {
        services: vec![
            Service {
                name: "web".into(),
                restart: None,
                health: Some(health),
            },
            Service {
                name: "worker".into(),
                restart: None,
                health: None,
            },
        ],
        ..Behaviour::default()
    };
    artifact_behaving(version, behaviour).0
}

/// `ship-agent --json health --root ROOT <rest>`, on a host called web1.
fn health(host: &Host, rest: &[&str]) -> Run {
    run_with(
        common::agent()
            .env("SHIP_HOST", "web1")
            .args(["--json", "health", "--root", &host.root_str()])
            .args(rest),
        None,
    )
}

/// The journal's health records, as `version result`.
fn health_records(host: &Host) -> Vec<String> {
    host.journal()
        .iter()
        .filter(|r| r["op"] == "health")
        .map(|r| format!("{} {}", r["version"].as_str().unwrap(), r["result"]))
        .map(|line| line.replace('"', ""))
        .collect()
}

/// Whether `status` marks `version` bad.
fn is_bad(host: &Host, version: &str) -> bool {
    let status = host.agent("status", &[], None).expect(0).event("done");
    let releases = status["releases"].as_array().unwrap();
    let release = releases.iter().find(|r| r["version"] == version).unwrap();
    release["bad"].as_bool().unwrap()
}

#[test]
fn a_healthy_release_is_reported_and_nothing_is_journaled() {
    let host = Host::new();
    host.receive(&breakable("v1")).expect(0);
    host.agent("activate", &["v1"], None).expect(0);
    assert_eq!(health_records(&host), ["v1 ok"], "activate checked it");

    let done = health(&host, &[]).expect(0).event("done");
    assert_eq!(
        done,
        json!({"version": "v1", "services": [{"name": "web", "ok": true}], "recorded": false})
    );
    assert_eq!(health_records(&host), ["v1 ok"]);

    // By hand: a line per service, on stderr.
    let human = run_with(
        common::agent()
            .env("SHIP_HOST", "web1")
            .args(["health", "--root", &host.root_str()]),
        None,
    )
    .expect(0);
    assert!(human.stdout.is_empty(), "{}", human.stdout);
    assert_eq!(human.stderr, "web: healthy\nv1 is healthy on web1\n");
    host.check_invariants();
}

#[test]
fn a_failing_check_marks_the_release_bad_once_and_recovery_clears_it() {
    let host = Host::new();
    for v in ["v1", "v2"] {
        host.receive(&breakable(v)).expect(0);
        host.agent("activate", &[v], None).expect(0);
    }
    assert_eq!(health_records(&host), ["v1 ok", "v2 ok"]);

    let failure = format!("`{CHECK}`: it exited with status 1");
    let broken = health(&host, &["--set", "BROKEN=1"]).expect(1);
    let failed = broken.event("failed");
    assert_eq!(
        failed["message"],
        format!("v2 is unhealthy on web1 (web: {failure})")
    );
    assert_eq!(
        failed["details"],
        json!({"unhealthy_now": {
            "version": "v2",
            "failures": [{"service": "web", "failure": failure}],
        }})
    );
    assert!(!broken.stdout.contains("\"done\""), "{}", broken.stdout);
    assert_eq!(health_records(&host), ["v1 ok", "v2 ok", "v2 failed"]);
    let record = host.journal().pop().unwrap();
    assert_eq!(record["reason"], format!("web: {failure}"));
    assert_eq!(record["user"], "tester");
    assert!(is_bad(&host, "v2") && !is_bad(&host, "v1"));
    // Nothing else changed: still current, no switch.
    assert_eq!(host.current().as_deref(), Some("releases/v2"));

    // Polling a release that stays broken adds nothing.
    health(&host, &["--set", "BROKEN=1"]).expect(1);
    assert_eq!(health_records(&host), ["v1 ok", "v2 ok", "v2 failed"]);

    // Recovery is recorded once, and the release is no longer bad.
    let done = health(&host, &[]).expect(0).event("done");
    assert_eq!(done["recorded"], true);
    assert_eq!(
        health_records(&host),
        ["v1 ok", "v2 ok", "v2 failed", "v2 ok"]
    );
    assert!(!is_bad(&host, "v2"));
    let done = health(&host, &[]).expect(0).event("done");
    assert_eq!(done["recorded"], false);
    assert_eq!(health_records(&host).len(), 4);
    host.check_invariants();
}

#[test]
fn an_http_check_is_tried_once_and_named_as_it_failed() {
    // A real server on loopback answering `status` to every request, counting them.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let status = Arc::new(AtomicU16::new(200));
    let requests = Arc::new(AtomicUsize::new(0));
    let (answer, count) = (status.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let status = answer.load(Ordering::SeqCst);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    let host = Host::new();
    let release = with_web_health(
        "v3",
        Health::Http {
            http: "http://127.0.0.1:${WEB_PORT}/health".into(),
            expect: None,
            body: None,
            timeout: Some(Duration::from_secs(30)),
        },
    );
    host.receive(&release).expect(0);
    let port = format!("WEB_PORT={port}");
    host.agent("activate", &["v3", "--set", &port], None)
        .expect(0);

    status.store(503, Ordering::SeqCst);
    requests.store(0, Ordering::SeqCst);
    let started = Instant::now();
    let failed = health(&host, &["--set", &port]).expect(1).event("failed");
    assert_eq!(
        failed["message"],
        "v3 is unhealthy on web1 (web: GET /health → 503)"
    );
    assert_eq!(
        failed["details"]["unhealthy_now"]["failures"][0]["failure"],
        "GET /health → 503"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1, "one attempt, no retry");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(health_records(&host), ["v3 ok", "v3 failed"]);
}

#[test]
fn a_release_without_health_checks_is_healthy() {
    let host = Host::new();
    host.receive(&artifact("v1").0).expect(0);
    host.agent("activate", &["v1"], None).expect(0);
    let done = health(&host, &[]).expect(0).event("done");
    assert_eq!(
        done,
        json!({"version": "v1", "services": [], "recorded": false})
    );
    assert!(health_records(&host).is_empty());
}

#[test]
fn nothing_current_is_a_clear_error() {
    let host = Host::new();
    let missing = health(&host, &[]).expect(1).event("failed");
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .ends_with("is not an app root (it has no .ship directory)"),
        "{missing}"
    );
    host.receive(&breakable("v1")).expect(0);
    let journal = host.journal().len();
    let failed = health(&host, &[]).expect(1).event("failed");
    assert_eq!(
        failed["message"],
        format!(
            "nothing to check: no release is current in {}",
            host.root_str()
        )
    );
    assert!(failed["details"].is_null());
    assert_eq!(host.journal().len(), journal, "nothing journaled");
}

/// `flock(1)` holding the app root's lock, with its `sleep`, in a process group of
/// their own; both are stopped when this is dropped.
struct HeldLock(Child);

impl HeldLock {
    fn take(host: &Host) -> HeldLock {
        let child = Command::new("flock")
            .arg("-x")
            .arg(host.root().join(".ship/lock"))
            .args(["sleep", "60"])
            .process_group(0)
            .spawn()
            .unwrap();
        let held = HeldLock(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = host.agent("status", &[], None).expect(0).event("done");
            if !status["lock"].is_null() {
                return held;
            }
            assert!(Instant::now() < deadline, "flock did not take the lock");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

#[test]
fn health_works_while_the_lock_is_held() {
    let host = Host::new();
    host.receive(&breakable("v1")).expect(0);
    host.agent("activate", &["v1"], None).expect(0);
    let held = HeldLock::take(&host);
    // A command that takes the lock is refused meanwhile…
    let busy = host.agent("prune", &["--keep", "1"], None).expect(1);
    assert!(
        busy.event("failed")["message"]
            .as_str()
            .unwrap()
            .contains("is busy: locked by"),
        "{}",
        busy.stdout
    );
    // …and health is not, and still journals what changed.
    health(&host, &[]).expect(0);
    health(&host, &["--set", "BROKEN=1"]).expect(1);
    assert_eq!(health_records(&host), ["v1 ok", "v1 failed"]);
    let status = host.agent("status", &[], None).expect(0).event("done");
    assert!(!status["lock"].is_null(), "the lock is still held");
    drop(held);
    host.check_invariants();
}

/// Creates its file when dropped: a paused agent waiting for it resumes, pass or fail.
struct Resume(std::path::PathBuf);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

/// Runs `health --set BROKEN=1` until it has checked, then `meanwhile`, then lets it
/// finish.
fn broken_check_around(host: &Host, meanwhile: impl FnOnce()) -> Run {
    use std::io::BufRead;
    use std::process::Stdio;
    let resume = Resume(host.dir.path().join("resume"));
    let mut child = common::agent()
        .env("SHIP_HOST", "web1")
        .env("SHIP_AGENT_PAUSE_AT", "health:checked")
        .env("SHIP_AGENT_RESUME_WHEN", &resume.0)
        .args(["--json", "health", "--root", &host.root_str()])
        .args(["--set", "BROKEN=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "paused at health:checked");
    meanwhile();
    drop(resume);
    let out = child.wait_with_output().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: line + &rest,
    }
}

#[test]
fn what_a_check_saw_while_a_deploy_moved_on_is_not_journaled() {
    let host = Host::new();
    for v in ["v1", "v2"] {
        host.receive(&breakable(v)).expect(0);
    }
    host.agent("activate", &["v1"], None).expect(0);

    // v1 was checked, then a deploy switched to v2 before the outcome was written:
    // the failure is reported, but v1 is not marked bad for it.
    let seen = broken_check_around(&host, || {
        host.agent("activate", &["v2"], None).expect(0);
    })
    .expect(1);
    assert_eq!(
        seen.event("failed")["message"],
        format!("v1 is unhealthy on web1 (web: `{CHECK}`: it exited with status 1)")
    );
    assert_eq!(health_records(&host), ["v1 ok", "v2 ok"]);
    assert!(!is_bad(&host, "v1"));

    // Two checks seeing the same change write it once.
    broken_check_around(&host, || {
        health(&host, &["--set", "BROKEN=1"]).expect(1);
    })
    .expect(1);
    assert_eq!(health_records(&host), ["v1 ok", "v2 ok", "v2 failed"]);
    host.check_invariants();
}
