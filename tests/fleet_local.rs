//! `ship deploy`, `rollback`, `status` and `history` across a fleet of local hosts
//! (the `local` transport: the same orchestration, agents as subprocesses).

mod common;

use std::fs;
use std::time::Duration;

use common::{LocalFleet, events, run};

#[test]
fn deploy_then_rollback_across_the_fleet() {
    let fleet = LocalFleet::new(&["web1", "web2", "web3"]);
    let first = fleet.ship(&["deploy", "v1", "--hosts", "web*"]).expect(0);
    assert!(
        first.stdout.starts_with("HOST  FROM  TO  RESULT  SENT"),
        "{}",
        first.stdout
    );
    assert!(
        first.stderr.contains("deployed shop v1 on 3 of 3 host(s)"),
        "{}",
        first.stderr
    );
    fleet.ship(&["deploy", "v2", "--hosts", "web*"]).expect(0);
    for host in &fleet.hosts {
        assert_eq!(
            fleet.current(host).as_deref(),
            Some("releases/v2"),
            "{host}"
        );
        let page = fs::read_to_string(fleet.root(host).join("current/public/version.txt")).unwrap();
        assert_eq!(page, "v2\n");
    }
    let status = fleet.ship(&["status", "--json"]).expect(0);
    let rows = events(&status, "status");
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row["status"]["current"], "v2");
        assert_eq!(row["status"]["previous"], "v1");
        assert_eq!(row["state"], "ok");
    }

    let back = fleet
        .ship(&["rollback", "--hosts", "web*", "--json"])
        .expect(0);
    let results = events(&back, "result");
    assert!(
        results.iter().all(|r| r["from"] == "v2" && r["to"] == "v1"),
        "{results:?}"
    );
    for host in &fleet.hosts {
        assert_eq!(
            fleet.current(host).as_deref(),
            Some("releases/v1"),
            "{host}"
        );
    }
    let table = fleet.ship(&["status"]).expect(0).stdout;
    assert_eq!(
        table.lines().filter(|l| l.contains("  v1  ")).count(),
        3,
        "{table}"
    );

    let history = fleet.ship(&["history", "--hosts", "web2"]).expect(0).stdout;
    let ops: Vec<&str> = history
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(3).unwrap())
        .collect();
    assert_eq!(
        ops,
        ["receive", "activate", "receive", "activate", "rollback"],
        "{history}"
    );
    assert!(
        history.contains(" tester "),
        "the operator is named: {history}"
    );
}

#[test]
fn redeploying_the_same_release_transfers_nothing() {
    let fleet = LocalFleet::new(&["a", "b"]);
    let first = fleet
        .ship(&["deploy", "v1", "--hosts", "*", "--json"])
        .expect(0);
    assert!(
        events(&first, "result")
            .iter()
            .all(|r| r["transferred"].as_u64() > Some(0))
    );
    let again = fleet
        .ship(&["deploy", "v1", "--hosts", "*", "--json"])
        .expect(0);
    for result in events(&again, "result") {
        assert_eq!(result["transferred"], 0, "{result}");
        assert_eq!(result["detail"], "already current");
    }
    let phases = events(&again, "phase");
    assert!(
        phases
            .iter()
            .any(|p| p["phase"] == "transfer" && p["detail"] == "skipped: already there")
    );
}

#[test]
fn a_failing_host_is_reported_and_the_others_deploy() {
    let fleet = LocalFleet::new(&["good1", "bad", "good2"]);
    // The bad host's app root cannot be created: a file is in the way.
    fs::create_dir_all(fleet.dir.path().join("hosts")).unwrap();
    fs::write(fleet.root("bad"), "not a directory").unwrap();
    let out = fleet.ship(&["deploy", "v1", "--hosts", "*"]).expect(1);
    let bad_row = out.row("bad");
    assert!(bad_row.contains("FAILED"), "{bad_row}");
    // Preflight finds it, before anything is sent.
    assert!(
        bad_row.contains("preflight: the app root ")
            && bad_row.contains("hosts/bad cannot be a directory: ")
            && bad_row.contains("hosts/bad is in the way on bad"),
        "{bad_row}"
    );
    assert!(
        out.stderr
            .contains("deployed shop v1 on 2 of 3 host(s); 1 failed"),
        "{}",
        out.stderr
    );
    assert_eq!(fleet.current("good1").as_deref(), Some("releases/v1"));
    assert_eq!(fleet.current("good2").as_deref(), Some("releases/v1"));

    // All or nothing: the good hosts stage, none is switched.
    let strict = fleet
        .ship(&["deploy", "v2", "--hosts", "*", "--all-or-nothing"])
        .expect(1);
    assert!(
        strict
            .stdout
            .contains("staged but not activated: 1 host(s) failed staging"),
        "{}",
        strict.stdout
    );
    assert_eq!(fleet.current("good1").as_deref(), Some("releases/v1"));
    assert_eq!(fleet.releases("good1"), ["v1", "v2"]);
}

#[test]
fn a_second_deploy_is_told_who_holds_the_hosts_and_the_first_completes() {
    let fleet = LocalFleet::new(&["a", "b"]);
    let go = fleet.dir.path().join("go");
    let mut first = fleet.command(&["deploy", "v1", "--hosts", "*"]);
    first
        .env("SHIP_AGENT_PAUSE_AT", "receive:staging")
        .env("SHIP_AGENT_RESUME_WHEN", &go)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let first = first.spawn().unwrap();
    // Wait until both hosts are held by the first deploy's agents.
    let held = |host: &str| {
        fs::read_to_string(fleet.root(host).join(".ship/lock"))
            .is_ok_and(|l| l.contains("ship-agent receive"))
    };
    common::wait_until("both hosts are locked", || held("a") && held("b"));
    let second = fleet.ship(&["deploy", "v2", "--hosts", "*"]).expect(1);
    for host in ["a", "b"] {
        let row = second.row(host);
        assert!(row.contains("is busy: locked by pid"), "{row}");
        assert!(row.contains("(ship-agent receive, since "), "{row}");
    }
    fs::write(&go, "").unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(fleet.current("a").as_deref(), Some("releases/v1"));
    assert_eq!(fleet.current("b").as_deref(), Some("releases/v1"));
}

#[test]
fn host_patterns_and_config_mistakes_are_usage_errors() {
    let fleet = LocalFleet::new(&["web1", "db1"]);
    let out = fleet.ship(&["deploy", "v1", "--hosts", "cache*"]).expect(2);
    assert!(
        out.stderr
            .contains("\"cache*\" matches no host (hosts: db1, web1)"),
        "{}",
        out.stderr
    );
    let out = fleet.ship(&["deploy", "v9", "--hosts", "*"]).expect(1);
    assert!(
        out.stderr
            .contains("cannot open the artifact dist/shop-v9.tar.zst"),
        "{}",
        out.stderr
    );
    let out = fleet.ship(&["deploy", "v1/../x", "--hosts", "*"]).expect(1);
    assert!(
        out.stderr.contains("cannot open the artifact"),
        "{}",
        out.stderr
    );
    let out = fleet
        .ship(&["rollback", "--hosts", "@first", "--to", "v1;id"])
        .expect(2);
    assert!(out.stderr.contains("invalid version"), "{}", out.stderr);
    fs::write(
        fleet.dir.path().join("ship.toml"),
        "[app]\nname = \"shop\"\n[hosts.a]\nroot = \"/r\"\nadress = \"x\"\n",
    )
    .unwrap();
    let out = fleet.ship(&["status"]).expect(2);
    assert!(
        out.stderr.contains("unknown key `hosts.a.adress`"),
        "{}",
        out.stderr
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run(common::ship()
        .current_dir(elsewhere.path())
        .args(["status"]))
    .expect(2);
    assert!(
        out.stderr.contains("no fleet config at ship.toml"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_damaged_artifact_reaches_no_host() {
    let fleet = LocalFleet::new(&["a"]);
    let artifact = fleet.dir.path().join("dist/shop-v2.tar.zst");
    let mut bytes = fs::read(&artifact).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    fs::write(&artifact, bytes).unwrap();
    let out = fleet.ship(&["deploy", "v2", "--hosts", "a"]).expect(1);
    assert!(
        out.stderr
            .contains("artifact dist/shop-v2.tar.zst did not verify"),
        "{}",
        out.stderr
    );
    assert!(!fleet.root("a").exists(), "nothing may reach the host");
}

#[test]
fn ctrl_c_lets_hosts_in_flight_finish_and_starts_no_new_ones() {
    let fleet = LocalFleet::new(&["a", "b"]);
    let go = fleet.dir.path().join("go");
    let mut cmd = fleet.command(&["deploy", "v1", "--hosts", "*", "--parallel", "1"]);
    cmd.env("SHIP_AGENT_PAUSE_AT", "receive:staging")
        .env("SHIP_AGENT_RESUME_WHEN", &go)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let lock = fleet.root("a").join(".ship/lock");
    common::wait_until("a is locked", || {
        fs::read_to_string(&lock).is_ok_and(|l| l.contains("receive"))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let a = stdout.lines().find(|l| l.starts_with("a ")).unwrap();
    let b = stdout.lines().find(|l| l.starts_with("b ")).unwrap();
    // a was receiving: it finished that step (the release is complete) but was not
    // switched; b was never started.
    assert!(
        a.contains("staged but not activated: interrupted"),
        "{stdout}"
    );
    assert!(b.contains("not started: interrupted"), "{stdout}");
    assert_eq!(fleet.releases("a"), ["v1"]);
    assert_eq!(fleet.current("a"), None);
    assert!(!fleet.root("b").exists());
}

#[test]
fn rolling_back_a_host_that_never_received_anything_says_so() {
    let fleet = LocalFleet::new(&["a", "b"]);
    fleet.ship(&["deploy", "v1", "--hosts", "a"]).expect(0);
    let out = fleet.ship(&["rollback", "--hosts", "*"]).expect(1);
    let a = out.row("a");
    let b = out.row("b");
    assert!(
        a.contains("there is no earlier release to roll back to from v1"),
        "{a}"
    );
    assert!(
        b.contains("is not an app root (it has no .ship directory)"),
        "{b}"
    );
    assert_eq!(fleet.current("a").as_deref(), Some("releases/v1"));
}

/// Writes an executable script standing in for `ship-agent` that prints `lines` on
/// stdout and exits with `code`.
fn fake_agent(dir: &std::path::Path, name: &str, lines: &[&str], code: i32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let mut script = String::from("#!/bin/sh\n");
    for line in lines {
        script += &format!("printf '%s\\n' '{line}'\n");
    }
    script += &format!("exit {code}\n");
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn an_agent_that_breaks_the_protocol_is_named_never_guessed() {
    let fleet = LocalFleet::new(&["web1"]);
    let protocol = agent::protocol::VERSION;
    let hello = format!(r#"{{"type":"agent","data":{{"version":"9.9.9","protocol":{protocol}}}}}"#);
    let cases = [
        (
            "unknown-event",
            vec![hello.as_str(), r#"{"type":"gossip","data":{}}"#],
            0,
            "ship-agent on web1 broke the protocol: unknown variant `gossip`",
        ),
        (
            "wrong-shape",
            vec![
                hello.as_str(),
                r#"{"type":"done","data":{"agent":"9.9.9"}}"#,
            ],
            0,
            "ship-agent on web1 broke the protocol: its reply to hello does not parse: missing field `protocol`",
        ),
        (
            "not-json",
            vec![hello.as_str(), "Welcome to web1!"],
            0,
            "ship-agent on web1 broke the protocol: expected value at line 1 column 1 in \"Welcome to web1!\"",
        ),
    ];
    for (name, lines, code, expected) in cases {
        let agent = fake_agent(fleet.dir.path(), name, &lines, code);
        let out = run(fleet
            .command(&["status", "--hosts", "web1"])
            .env("SHIP_AGENT", &agent))
        .expect(1);
        let row = out.row("web1");
        assert!(
            row.contains(&format!("unreachable: hello: {expected}")),
            "{name}: {row}"
        );
        let json = run(fleet
            .command(&["status", "--hosts", "web1", "--json"])
            .env("SHIP_AGENT", &agent))
        .expect(1);
        let status = &events(&json, "status")[0];
        assert_eq!(status["failure"]["kind"], "protocol", "{name}: {status}");
        assert_eq!(status["failure"]["step"], "hello", "{name}: {status}");
        assert!(
            status["error"].as_str().unwrap().contains(expected),
            "{name}: {status}"
        );
    }
}

#[test]
fn an_older_agent_is_met_with_a_clear_error_and_a_banner_is_ignored() {
    let fleet = LocalFleet::new(&["web1"]);
    // What an agent of protocol 4 answered a caller of another protocol.
    let older = fake_agent(
        fleet.dir.path(),
        "older",
        &[
            r#"{"type":"agent","data":{"version":"0.1.0","protocol":4}}"#,
            r#"{"type":"failed","data":{"error":"protocol mismatch: the caller speaks protocol 5, this ship-agent 0.1.0 speaks 4","causes":[],"details":null}}"#,
        ],
        2,
    );
    let out = run(fleet
        .command(&["status", "--hosts", "web1"])
        .env("SHIP_AGENT", &older))
    .expect(1);
    assert!(
        out.row("web1").contains(&format!(
            "hello: no usable ship-agent on the host: {} speaks protocol 4, ship speaks {}",
            older.display(),
            agent::protocol::VERSION
        )),
        "{}",
        out.stdout
    );
    // A line before the agent speaks is the host's, not the protocol's.
    let protocol = agent::protocol::VERSION;
    let hello = format!(r#"{{"type":"agent","data":{{"version":"9.9.9","protocol":{protocol}}}}}"#);
    let done = format!(
        r#"{{"type":"done","data":{{"agent":"9.9.9","protocol":{protocol},"status":null}}}}"#
    );
    let chatty = fake_agent(
        fleet.dir.path(),
        "chatty",
        &["Welcome to web1!", &hello, &done],
        0,
    );
    let out = run(fleet
        .command(&["status", "--hosts", "web1"])
        .env("SHIP_AGENT", &chatty))
    .expect(0);
    assert!(out.row("web1").ends_with("no release"), "{}", out.stdout);
}

#[test]
fn a_newer_agent_is_met_with_a_clear_error() {
    let fleet = LocalFleet::new(&["web1"]);
    // What an agent of a later protocol answers a caller of this one.
    let newer = fake_agent(
        fleet.dir.path(),
        "newer",
        &[
            r#"{"type":"agent","data":{"version":"9.9.9","protocol":99}}"#,
            r#"{"type":"failed","data":{"kind":"protocol_mismatch","message":"protocol mismatch: the caller speaks protocol 5, this ship-agent 9.9.9 speaks 99"}}"#,
        ],
        2,
    );
    let out = run(fleet
        .command(&["deploy", "v1", "--hosts", "web1"])
        .env("SHIP_AGENT", &newer))
    .expect(1);
    let row = out.row("web1");
    assert!(
        row.contains(&format!(
            "hello: no usable ship-agent on the host: {} speaks protocol 99, ship speaks {}",
            newer.display(),
            agent::protocol::VERSION
        )),
        "{row}"
    );
    assert_eq!(fleet.current("web1"), None);
}

#[test]
fn a_command_runs_in_process_and_quiet_keeps_only_the_data() {
    let fleet = LocalFleet::new(&["web1", "web2"]);
    let env = ship::Env {
        source_date_epoch: None,
        operator: "tester".into(),
        agent_binary: common::agent_binary(),
    };
    let config = fleet.dir.path().join("ship.toml");
    let ship = |args: &[&str]| {
        let (console, buffers) = ship::Console::buffers();
        let mut argv = vec!["ship"];
        argv.extend_from_slice(args);
        argv.extend(["--config", config.to_str().unwrap()]);
        let status = ship::run_in(argv, console, &env, &ship::Interrupt::default());
        (status, buffers.stdout(), buffers.stderr())
    };
    // Ctrl-C before the deploy: no host starts, and each says so.
    let interrupted = ship::Interrupt::default();
    interrupted.set();
    let (console, buffers) = ship::Console::buffers();
    let status = ship::run_in(
        [
            "ship",
            "rollback",
            "--hosts",
            "*",
            "--config",
            config.to_str().unwrap(),
        ],
        console,
        &env,
        &interrupted,
    );
    assert_eq!(status, ship::ExitStatus::Failure);
    assert!(
        buffers
            .stdout()
            .contains("web1  -     -   FAILED  -     -      0.0s      not started: interrupted"),
        "{}",
        buffers.stdout()
    );

    let (status, stdout, stderr) = ship(&["deploy", "v1", "--hosts", "*", "--quiet"]);
    assert_eq!(status, ship::ExitStatus::Success, "{stderr}");
    assert!(stdout.starts_with("HOST  FROM  TO  RESULT"), "{stdout}");
    assert_eq!(stderr, "", "--quiet prints no notes and no progress");
    assert_eq!(fleet.current("web2").as_deref(), Some("releases/v1"));

    let (status, stdout, stderr) = ship(&["status", "--hosts", "*"]);
    assert_eq!(status, ship::ExitStatus::Success, "{stderr}");
    assert!(stdout.contains("web2  v1       -         1"), "{stdout}");
    let (status, _, stderr) = ship(&["deploy", "v1", "--hosts", "web1"]);
    assert_eq!(status, ship::ExitStatus::Success);
    assert!(
        stderr.contains("web1: transfer skipped: already there")
            && stderr.contains("deployed shop v1 on 1 of 1 host(s)"),
        "{stderr}"
    );
}

#[test]
fn verbose_shows_each_hosts_steps_with_their_times() {
    let fleet = LocalFleet::new(&["web1"]);
    let out = fleet
        .ship(&["deploy", "v1", "--hosts", "web1", "-v"])
        .expect(0);
    for step in ["connect", "hello", "preflight", "transfer", "activate"] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains("host{host=\"web1\"}:step{phase=\"")
                    && l.contains(&format!("phase=\"{step}\""))
                    && l.contains("close time.busy=")),
            "{step}: {}",
            out.stderr
        );
    }
    let out = fleet
        .ship(&["rollback", "--hosts", "web1", "-vv"])
        .expect(1);
    assert!(
        out.stderr
            .contains("run command=env SHIP_USER=tester SHIP_HOST=web1 "),
        "{}",
        out.stderr
    );
}

/// The results of a `--json` deploy, by host.
fn results_by_host(run: &common::Run) -> std::collections::BTreeMap<String, serde_json::Value> {
    events(run, "result")
        .into_iter()
        .map(|r| (r["host"].as_str().unwrap().to_owned(), r))
        .collect()
}

#[test]
fn a_redeploy_sends_only_what_changed_and_every_host_ends_up_with_the_right_bytes() {
    // The example app with a library of 2 MB that no version changes.
    let fleet = LocalFleet::bare(&["web1", "web2", "fresh"]);
    let library = common::incompressible(2 << 20);
    for version in ["v1", "v2", "v3", "v4"] {
        fleet.pack_with(version, "[app]\nname = \"shop\"\n", |tree| {
            fs::write(tree.join("public/library.bin"), &library).unwrap();
        });
    }
    let artifact_size = |v: &str| {
        fs::metadata(fleet.dir.path().join(format!("dist/shop-{v}.tar.zst")))
            .unwrap()
            .len()
    };
    let first = fleet
        .ship(&["deploy", "v1", "--hosts", "web*", "--json"])
        .expect(0);
    for (host, r) in results_by_host(&first) {
        assert_eq!(r["files_reused"], 0, "{host}: {r}");
        assert!(
            r["transferred"].as_u64().unwrap() >= artifact_size("v1"),
            "{r}"
        );
    }

    // v2 differs from v1 in public/version.txt (and the RECORD of the virtualenv's
    // package, which names a hash of its build-path script).
    let second = fleet
        .ship(&["deploy", "v2", "--hosts", "*", "--json"])
        .expect(0);
    let results = results_by_host(&second);
    for host in ["web1", "web2"] {
        let r = &results[host];
        assert!(r["files_sent"].as_u64() <= Some(2), "{host}: {r}");
        assert!(r["files_reused"].as_u64().unwrap() > 10, "{host}: {r}");
        let sent = r["transferred"].as_u64().unwrap();
        assert!(
            sent * 100 <= artifact_size("v2"),
            "{host} was sent {sent} bytes of a {}-byte artifact",
            artifact_size("v2")
        );
    }
    // A host with no release gets the whole artifact.
    assert_eq!(results["fresh"]["files_reused"], 0, "{}", results["fresh"]);
    for host in ["web1", "web2", "fresh"] {
        let current = fleet.root(host).join("current/public/version.txt");
        assert_eq!(fs::read_to_string(current).unwrap(), "v2\n");
        run(std::process::Command::new(common::agent_binary()).args([
            "verify",
            "--root",
            fleet.root(host).to_str().unwrap(),
            "v2",
        ]))
        .expect(0);
    }

    // Every copy of a file on web2 changed behind ship's back: web2 is sent that
    // file too, and says which copies it did not trust.
    let migrate = fs::read(fleet.root("web2").join("current/bin/migrate")).unwrap();
    for release in fleet.releases("web2") {
        let path = fleet
            .root("web2")
            .join("releases")
            .join(release)
            .join("bin/migrate");
        let mut tampered = migrate.clone();
        tampered[0] ^= 1;
        fs::write(path, tampered).unwrap();
    }
    let third = fleet
        .ship(&["deploy", "v3", "--hosts", "web*", "--json"])
        .expect(0);
    let results = results_by_host(&third);
    let sent = |host: &str| results[host]["files_sent"].as_u64().unwrap();
    assert_eq!(sent("web2"), sent("web1") + 1, "{results:?}");
    let warnings: Vec<String> = events(&third, "output")
        .iter()
        .filter(|o| o["host"] == "web2" && o["stage"] == "warning")
        .map(|o| o["line"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.ends_with("bin/migrate differs from its release's manifest: not reused")),
        "{warnings:?}"
    );
    assert_eq!(
        fs::read(fleet.root("web2").join("current/bin/migrate")).unwrap(),
        migrate
    );
    run(std::process::Command::new(common::agent_binary()).args([
        "verify",
        "--root",
        fleet.root("web2").to_str().unwrap(),
        "v3",
    ]))
    .expect(0);

    // --full sends the whole artifact to a host that keeps releases.
    let full = fleet
        .ship(&["deploy", "v3", "--hosts", "fresh", "--full", "--json"])
        .expect(0);
    let r = &results_by_host(&full)["fresh"];
    assert_eq!(r["files_reused"], 0, "{r}");
    assert!(
        r["transferred"].as_u64().unwrap() >= artifact_size("v3"),
        "{r}"
    );

    // Back to the delta-made v2: a switch, nothing sent.
    let back = fleet
        .ship(&["rollback", "--hosts", "web1", "--json"])
        .expect(0);
    assert_eq!(results_by_host(&back)["web1"]["transferred"], 0);
    assert_eq!(fleet.current("web1").as_deref(), Some("releases/v2"));

    // The manifest a delta is compressed against must be the host's, byte for byte;
    // where it is not, the host is sent the whole artifact.
    let manifest = fleet.root("web1").join("releases/v2/.ship/manifest.json");
    let mut bytes = fs::read(&manifest).unwrap();
    bytes.push(b'\n');
    fs::write(&manifest, bytes).unwrap();
    let fourth = fleet
        .ship(&["deploy", "v4", "--hosts", "web1", "--json"])
        .expect(0);
    let r = &results_by_host(&fourth)["web1"];
    assert_eq!(r["files_reused"], 0, "{r}");
    assert!(
        events(&fourth, "output")
            .iter()
            .any(|o| o["line"].as_str().unwrap().ends_with(
                "which this host does not have as it was sent; sending the whole artifact"
            )),
        "{}",
        fourth.stdout
    );
    assert_eq!(fleet.current("web1").as_deref(), Some("releases/v4"));
}
