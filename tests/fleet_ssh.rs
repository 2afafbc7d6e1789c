//! Fleet commands over SSH, against real OpenSSH servers started on loopback by
//! `scripts/fleet` (each with its own host key and its own /srv). Needs root and
//! openssh-server; without them the tests say so and do nothing.

mod common;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{LocalFleet, SshFleet, events};

#[test]
fn deploy_status_and_rollback_over_ssh() {
    if !SshFleet::can_run() {
        return;
    }
    let fleet = SshFleet::start(5, None);
    let build = fleet.with_artifacts();
    let cwd = build.dir.path();
    let first = fleet.ship(cwd, &["deploy", "v1", "--hosts", "*"]).expect(0);
    assert!(
        first.stderr.contains("deployed shop v1 on 5 of 5 host(s)"),
        "{}",
        first.stderr
    );
    // The hosts had no agent: ship installed its own.
    assert!(fleet.root("h3").join(".ship/bin/ship-agent").is_file());
    fleet
        .ship(cwd, &["deploy", "v2", "--hosts", "h*"])
        .expect(0);
    for host in fleet.hosts() {
        assert_eq!(
            fleet.current(&host).as_deref(),
            Some("releases/v2"),
            "{host}"
        );
    }
    let status = fleet.ship(cwd, &["status", "--json"]).expect(0);
    let rows = events(&status, "status");
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .all(|r| r["status"]["current"] == "v2" && r["state"] == "ok"),
        "{rows:?}"
    );

    fleet.ship(cwd, &["rollback", "--hosts", "*"]).expect(0);
    for host in fleet.hosts() {
        assert_eq!(
            fleet.current(&host).as_deref(),
            Some("releases/v1"),
            "{host}"
        );
    }
    let table = fleet.ship(cwd, &["status"]).expect(0).stdout;
    assert_eq!(
        table
            .lines()
            .filter(|l| l.contains("  v1  ") && l.ends_with("ok"))
            .count(),
        5,
        "{table}"
    );
    // Only one host goes forward again: it stands out.
    fleet
        .ship(cwd, &["deploy", "v2", "--hosts", "h2"])
        .expect(0);
    let table = fleet.ship(cwd, &["status"]).expect(0).stdout;
    let h2 = table.lines().find(|l| l.starts_with("h2 ")).unwrap();
    assert!(
        h2.contains("DIFFERS: the fleet runs v1 (4 of 5)"),
        "{table}"
    );
    let history = fleet
        .ship(cwd, &["history", "--hosts", "h2"])
        .expect(0)
        .stdout;
    assert!(history.contains(" tester "), "{history}");
}

#[test]
fn an_unreachable_host_is_reported_and_the_others_deploy() {
    if !SshFleet::can_run() {
        return;
    }
    let fleet = SshFleet::start(3, None);
    let build = fleet.with_artifacts();
    fleet.host_op("stop-host", "h2");
    let started = Instant::now();
    let out = fleet
        .ship(build.dir.path(), &["deploy", "v1", "--hosts", "*"])
        .expect(1);
    assert!(
        started.elapsed().as_secs() < 30,
        "took {:?}",
        started.elapsed()
    );
    let h2 = out.row("h2");
    assert!(
        h2.contains("FAILED") && h2.contains("connect: cannot connect to 127.0.0.12:"),
        "{h2}"
    );
    assert!(
        out.stderr
            .contains("deployed shop v1 on 2 of 3 host(s); 1 failed"),
        "{}",
        out.stderr
    );
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v1"));
    assert_eq!(fleet.current("h3").as_deref(), Some("releases/v1"));
    let status = fleet.ship(build.dir.path(), &["status"]).expect(1);
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("h2 ") && l.contains("unreachable: connect")),
        "{}",
        status.stdout
    );
}

#[test]
fn a_changed_host_key_is_refused_and_nothing_is_sent() {
    if !SshFleet::can_run() {
        return;
    }
    let fleet = SshFleet::start(2, None);
    let build = fleet.with_artifacts();
    fleet
        .ship(build.dir.path(), &["deploy", "v1", "--hosts", "*"])
        .expect(0);
    fleet.host_op("rekey", "h1");
    let out = fleet
        .ship(build.dir.path(), &["deploy", "v2", "--hosts", "*"])
        .expect(1);
    let h1 = out.row("h1");
    assert!(h1.contains("the host key of 127.0.0.11:"), "{h1}");
    assert!(h1.contains("CHANGED (now SHA256:"), "{h1}");
    assert!(
        !fleet.root("h1").join("releases/v2").exists(),
        "nothing may be sent to h1"
    );
    assert_eq!(fleet.current("h2").as_deref(), Some("releases/v2"));
    // Even --accept-new-host-keys does not accept a changed key.
    fleet
        .ship(
            build.dir.path(),
            &["deploy", "v2", "--hosts", "h1", "--accept-new-host-keys"],
        )
        .expect(1);
}

#[test]
fn unknown_host_keys_are_refused_unless_accepted() {
    if !SshFleet::can_run() {
        return;
    }
    let fleet = SshFleet::start(1, None);
    let build = fleet.with_artifacts();
    let known_hosts = fleet.dir.path().join("known_hosts");
    fs::write(&known_hosts, "").unwrap();
    let out = fleet
        .ship(build.dir.path(), &["deploy", "v1", "--hosts", "h1"])
        .expect(1);
    assert!(out.stdout.contains("is not in"), "{}", out.stdout);
    assert!(
        out.stdout.contains("pass --accept-new-host-keys"),
        "{}",
        out.stdout
    );
    assert!(!fleet.root("h1").exists());
    fleet
        .ship(
            build.dir.path(),
            &["deploy", "v1", "--hosts", "h1", "--accept-new-host-keys"],
        )
        .expect(0);
    assert!(
        fs::read_to_string(&known_hosts)
            .unwrap()
            .contains("127.0.0.11")
    );
    fleet.ship(build.dir.path(), &["status"]).expect(0);
}

#[test]
fn hosts_met_all_at_once_have_every_key_recorded_and_no_copy_of_the_agent_each() {
    if !SshFleet::can_run() {
        return;
    }
    let fleet = SshFleet::start(8, None);
    let build = fleet.with_artifacts();
    let known_hosts = fleet.dir.path().join("known_hosts");
    fs::write(&known_hosts, "").unwrap();
    // Every host at once: each has its key recorded and the agent installed.
    let mut deploy = fleet
        .command(
            build.dir.path(),
            &[
                "deploy",
                "v1",
                "--hosts",
                "*",
                "--parallel",
                "8",
                "--accept-new-host-keys",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", deploy.id());
    let mut peak_kib = 0u64;
    while deploy.try_wait().unwrap().is_none() {
        // VmHWM: the most ship has had resident so far.
        let hwm = fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
        peak_kib = peak_kib.max(hwm.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = deploy.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&known_hosts).unwrap();
    for host in fleet.hosts() {
        let name = format!("[{}]:{} ", fleet.address(&host), fleet.port);
        assert!(
            text.contains(&name),
            "{host} is not in known_hosts:\n{text}"
        );
        assert_eq!(fleet.current(&host).as_deref(), Some("releases/v1"));
    }
    // The agent is streamed to each host from its file: ship held less than half of
    // what a copy per host would take, beyond 32 MiB of its own.
    let agent = fs::metadata(common::agent_binary()).unwrap().len();
    assert!(
        peak_kib * 1024 < agent * 8 / 2 + (32 << 20),
        "ship's peak RSS was {peak_kib} KiB installing a {agent}-byte agent on 8 hosts"
    );
    // Every key is known now: nothing is refused without --accept-new-host-keys.
    fleet.ship(build.dir.path(), &["status"]).expect(0);
}

#[test]
fn redeploying_transfers_nothing_and_concurrent_deploys_are_told_the_holder() {
    if !SshFleet::can_run() {
        return;
    }
    let go_dir = tempfile::tempdir().unwrap();
    let go = go_dir.path().join("go");
    let setenv = format!(
        "SHIP_AGENT_PAUSE_AT=receive:staging SHIP_AGENT_RESUME_WHEN={}",
        go.display()
    );
    let fleet = SshFleet::start(2, Some(&setenv));
    let build = fleet.with_artifacts();
    let cwd = build.dir.path().to_owned();
    let config = fleet.dir.path().join("ship.toml");
    let first = std::process::Command::new(env!("CARGO_BIN_EXE_ship"))
        .current_dir(&cwd)
        .env("SHIP_AGENT", common::agent_binary())
        .env("SHIP_CONFIG", &config)
        .env_remove("SSH_AUTH_SOCK")
        .args(["deploy", "v1", "--hosts", "*", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let held = |host: &str| {
        fs::read_to_string(fleet.root(host).join(".ship/lock")).is_ok_and(|l| l.contains("receive"))
    };
    common::wait_until("both hosts are locked", || held("h1") && held("h2"));
    let second = fleet
        .ship(&cwd, &["deploy", "v2", "--hosts", "*"])
        .expect(1);
    for host in ["h1", "h2"] {
        let row = second.row(host);
        assert!(row.contains("/srv/shop is busy: locked by pid"), "{row}");
        assert!(row.contains("ship-agent receive"), "{row}");
    }
    fs::write(&go, "").unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    let again = fleet
        .ship(&cwd, &["deploy", "v1", "--hosts", "*", "--json"])
        .expect(0);
    for result in events(&again, "result") {
        assert_eq!(result["transferred"], 0, "{result}");
    }
}

#[test]
fn hosts_can_be_described_in_an_ssh_config() {
    if !SshFleet::can_run() {
        return;
    }
    let fleet = SshFleet::start(1, None);
    let build = fleet.with_artifacts();
    // A host named only in an ssh_config: address, port, user and key come from there.
    let home = tempfile::tempdir().unwrap();
    fs::create_dir(home.path().join(".ssh")).unwrap();
    fs::write(
        home.path().join(".ssh/config"),
        format!(
            "Host shop-web\n  HostName 127.0.0.11\n  Port {}\n  User root\n  IdentityFile {}/id_ed25519\n",
            fleet.port,
            fleet.path()
        ),
    )
    .unwrap();
    let config = home.path().join("ship.toml");
    fs::write(
        &config,
        format!(
            "[app]\nname = \"shop\"\nroot = \"/srv/shop\"\nartifacts = \"{}/dist\"\n[ssh]\nknown_hosts = \"{}/known_hosts\"\nconfig = \"{}/.ssh/config\"\n[hosts.shop-web]\n",
            build.dir.path().display(),
            fleet.path(),
            home.path().display()
        ),
    )
    .unwrap();
    let out = common::run(
        common::ship()
            .current_dir(build.dir.path())
            .env("HOME", home.path())
            .env("SHIP_AGENT", common::agent_binary())
            .env_remove("SSH_AUTH_SOCK")
            .args(["deploy", "v1", "--hosts", "shop-web", "--config"])
            .arg(&config),
    )
    .expect(0);
    assert!(out.row("shop-web").contains(" ok "), "{}", out.stdout);
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v1"));
}

#[test]
fn an_older_or_newer_agent_is_replaced_by_ships_own() {
    if !SshFleet::can_run() {
        return;
    }
    let fleet = SshFleet::start(1, None);
    let build = fleet.with_artifacts();
    // An old agent that knows nothing of --protocol, as clap would answer.
    common::Tree::new(fleet.root("h1")).file_mode(
        ".ship/bin/ship-agent",
        "#!/bin/sh\necho \"error: unexpected argument '--protocol' found\" >&2\nexit 2\n",
        0o755,
    );
    fleet
        .ship(build.dir.path(), &["deploy", "v1", "--hosts", "h1"])
        .expect(0);
    let installed = fs::read(fleet.root("h1").join(".ship/bin/ship-agent")).unwrap();
    assert!(
        installed.starts_with(b"\x7fELF"),
        "the old agent was not replaced"
    );
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v1"));

    // A newer agent, of a protocol this ship does not speak, refuses; it is replaced
    // by ship's own too.
    common::Tree::new(fleet.root("h1")).file_mode(
        ".ship/bin/ship-agent",
        concat!(
            "#!/bin/sh\n",
            "echo '{\"type\":\"agent\",\"data\":{\"version\":\"9.9.9\",\"protocol\":99}}'\n",
            "echo '{\"type\":\"failed\",\"data\":{\"kind\":\"protocol_mismatch\",\"message\":\"protocol mismatch\"}}'\n",
            "exit 2\n"
        ),
        0o755,
    );
    fleet
        .ship(build.dir.path(), &["deploy", "v2", "--hosts", "h1"])
        .expect(0);
    let installed = fs::read(fleet.root("h1").join(".ship/bin/ship-agent")).unwrap();
    assert!(
        installed.starts_with(b"\x7fELF"),
        "the newer agent was not replaced"
    );
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v2"));
}

#[test]
fn a_rejected_key_and_a_silent_host_fail_fast_with_the_reason() {
    if !SshFleet::can_run() {
        return;
    }
    let fleet = SshFleet::start(1, None);
    let build = fleet.with_artifacts();
    // A key the host does not know.
    let other = tempfile::tempdir().unwrap();
    let key = other.path().join("id_ed25519");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(keygen.success());
    let toml_path = fleet.dir.path().join("ship.toml");
    let toml = fs::read_to_string(&toml_path).unwrap();
    let wrong_key = toml.replace(
        &format!("{}/id_ed25519", fleet.path()),
        key.to_str().unwrap(),
    );
    fs::write(&toml_path, &wrong_key).unwrap();
    let out = fleet.ship(build.dir.path(), &["status"]).expect(1);
    let h1 = out.row("h1");
    assert!(h1.contains("authentication as root failed (tried "), "{h1}");
    assert!(h1.contains(key.to_str().unwrap()), "{h1}");
    fs::write(&toml_path, &toml).unwrap();

    // A host that accepts the connection and never says a word: the timeout (5s in
    // the fleet's ship.toml) bounds the wait.
    let silent = std::net::TcpListener::bind("127.0.0.99:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = std::thread::spawn(move || {
        // Hold the connection open past the 5s timeout, then let go.
        let held: Vec<_> = silent.incoming().take(1).collect();
        std::thread::sleep(std::time::Duration::from_secs(6));
        drop(held);
    });
    fs::write(
        &toml_path,
        format!("{toml}[hosts.mute]\naddress = \"127.0.0.99\"\nport = {port}\n"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = fleet.ship(build.dir.path(), &["status"]).expect(1);
    assert!(
        started.elapsed().as_secs() < 8,
        "took {:?}",
        started.elapsed()
    );
    let mute = out.row("mute");
    assert!(
        mute.contains("unreachable: connect: cannot connect to 127.0.0.99:"),
        "{mute}"
    );
    assert!(mute.contains("Timed out"), "{mute}");
    // The silent host holds up nothing else.
    assert!(out.row("h1").ends_with("no release"), "{}", out.stdout);
    holder.join().unwrap();
}

#[test]
fn hook_output_and_a_revert_come_back_over_ssh() {
    if !SshFleet::can_run() {
        return;
    }
    let fleet = SshFleet::start(2, None);
    let build = LocalFleet::bare(&["unused"]);
    fleet.artifacts_in(&build.dir.path().join("dist"));
    let toml = "[app]\nname = \"shop\"\n[hooks]\npre_activate = \"bin/migrate\"\n\
                [[service]]\nname = \"web\"\n\
                health = { command = \"test -f public/ok\", timeout = \"1s\" }\n";
    build.pack_with("v1", toml, |tree| {
        fs::write(tree.join("public/ok"), "").unwrap()
    });
    build.pack_with("v2", toml, |_| {});
    let cwd = build.dir.path();

    let first = fleet.ship(cwd, &["deploy", "v1", "--hosts", "*"]).expect(0);
    for host in fleet.hosts() {
        let line =
            format!("{host}: [pre_activate] migrating the shop's data for v1 (live: nothing)");
        assert!(first.stderr.contains(&line), "{line}:\n{}", first.stderr);
    }
    let second = fleet.ship(cwd, &["deploy", "v2", "--hosts", "*"]).expect(1);
    for host in fleet.hosts() {
        let detail = format!(
            "v2 failed health on {host} (web: `test -f public/ok`: it exited with status 1 after 1s); reverted to v1, healthy"
        );
        assert!(second.row(&host).contains(&detail), "{}", second.stdout);
        assert_eq!(fleet.current(&host).as_deref(), Some("releases/v1"));
    }
}

#[test]
fn a_plan_installs_nothing_and_a_watched_canary_leads_the_rollout_over_ssh() {
    if !SshFleet::can_run() {
        return;
    }
    let fleet = SshFleet::start(3, None);
    let build = fleet.with_artifacts();
    let cwd = build.dir.path();
    // Fresh hosts: the plan says the agent would be installed, and installs nothing.
    let plan = fleet
        .ship(
            cwd,
            &["deploy", "v1", "--hosts", "*", "--canary", "1", "--plan"],
        )
        .expect(0);
    for host in fleet.hosts() {
        assert!(
            plan.row(&host)
                .contains("no usable ship-agent: the deploy would install it"),
            "{}",
            plan.stdout
        );
        assert!(!fleet.root(&host).join(".ship").exists(), "{host}");
    }
    assert!(plan.stdout.contains("wave 2: h2, h3\n"), "{}", plan.stdout);

    fleet.ship(cwd, &["deploy", "v1", "--hosts", "*"]).expect(0);
    let out = fleet
        .ship(
            cwd,
            &[
                "deploy",
                "v2",
                "--hosts",
                "*",
                "--canary",
                "1",
                "--canary-wait",
                "1s",
                "--batch",
                "1",
            ],
        )
        .expect(0);
    // The canary's health was checked over SSH (the example app has no service, so
    // the check passes with nothing to check), then each wave went alone.
    assert!(out.stderr.contains("h1: watch health"), "{}", out.stderr);
    let order: Vec<usize> = [
        "wave 1 (canary): activating h1",
        "wave 2: activating h2",
        "wave 3: activating h3",
    ]
    .iter()
    .map(|line| {
        out.stderr
            .find(line)
            .unwrap_or_else(|| panic!("{line}:\n{}", out.stderr))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", out.stderr);
    for host in fleet.hosts() {
        assert_eq!(fleet.current(&host).as_deref(), Some("releases/v2"));
    }
}

#[test]
fn a_session_dropped_while_waiting_for_its_wave_is_opened_again() {
    if !SshFleet::can_run() {
        return;
    }
    let fleet = SshFleet::start(2, None);
    let build = fleet.with_artifacts();
    let cwd = build.dir.path();
    fleet.ship(cwd, &["deploy", "v1", "--hosts", "*"]).expect(0);
    // h2 is staged and waits for wave 2 when its server drops the connection.
    let out = common::run_until(
        &mut fleet.command(
            cwd,
            &[
                "deploy",
                "v2",
                "--hosts",
                "*",
                "--canary",
                "1",
                "--canary-wait",
                "2s",
            ],
        ),
        "watching the canary",
        |_| fleet.drop_connections("h2"),
    )
    .expect(0);
    assert!(
        out.stderr.contains("deployed shop v2 on 2 of 2 host(s)"),
        "{}",
        out.stderr
    );
    assert_eq!(fleet.current("h2").as_deref(), Some("releases/v2"));
}

#[test]
fn a_redeploy_over_ssh_sends_only_what_changed() {
    if !SshFleet::can_run() {
        return;
    }
    let fleet = SshFleet::start(3, None);
    let build = fleet.with_artifacts();
    let cwd = build.dir.path();
    let artifact_size = fs::metadata(cwd.join("dist/shop-v2.tar.zst"))
        .unwrap()
        .len();
    fleet
        .ship(cwd, &["deploy", "v1", "--hosts", "h1,h2"])
        .expect(0);
    let second = fleet
        .ship(cwd, &["deploy", "v2", "--hosts", "*", "--json"])
        .expect(0);
    for result in events(&second, "result") {
        let sent = result["transferred"].as_u64().unwrap();
        if result["host"] == "h3" {
            // No release there: the whole artifact.
            assert_eq!(result["files_reused"], 0, "{result}");
            assert!(sent >= artifact_size, "{result}");
        } else {
            // v2 differs in two small files: those, and the manifest against v1's.
            assert!(result["files_sent"].as_u64() <= Some(2), "{result}");
            assert!(result["files_reused"].as_u64().unwrap() > 10, "{result}");
            assert!(sent > 0 && sent < 8 << 10, "{result}");
        }
    }
    for host in fleet.hosts() {
        assert_eq!(
            fleet.current(&host).as_deref(),
            Some("releases/v2"),
            "{host}"
        );
        let version = fs::read_to_string(fleet.root(&host).join("current/public/version.txt"));
        assert_eq!(version.unwrap(), "v2\n");
        verify(&fleet, &host, "v2");
    }
    // Every copy of a file on h2 changed behind ship's back: h2 is sent it too.
    for release in ["v1", "v2"] {
        let path = fleet
            .root("h2")
            .join("releases")
            .join(release)
            .join("bin/migrate");
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 1;
        fs::write(&path, bytes).unwrap();
    }
    let third = fleet
        .ship(cwd, &["deploy", "v3", "--hosts", "h1,h2", "--json"])
        .expect(0);
    let sent: std::collections::BTreeMap<String, u64> = events(&third, "result")
        .iter()
        .map(|r| {
            (
                r["host"].as_str().unwrap().to_owned(),
                r["files_sent"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sent["h2"], sent["h1"] + 1, "{sent:?}");
    verify(&fleet, "h2", "v3");
    // A plan says what a host would be sent.
    let plan = fleet
        .ship(cwd, &["deploy", "v3", "--hosts", "h3", "--plan", "--json"])
        .expect(0);
    let row = &events(&plan, "plan")[0];
    assert!(row["files_reused"].as_u64().unwrap() > 10, "{row}");
    assert!(row["send"].as_u64().unwrap() < 8 << 10, "{row}");
    // Rollback after a delta: a switch, nothing sent.
    let back = fleet
        .ship(cwd, &["rollback", "--hosts", "h1,h2", "--json"])
        .expect(0);
    for result in events(&back, "result") {
        assert_eq!(result["transferred"], 0, "{result}");
        assert_eq!(result["to"], "v2", "{result}");
    }
}

/// `ship-agent verify` of `version` on `host` (its app root is on this machine).
fn verify(fleet: &SshFleet, host: &str, version: &str) {
    common::run(std::process::Command::new(common::agent_binary()).args([
        "verify",
        "--root",
        fleet.root(host).to_str().unwrap(),
        version,
    ]))
    .expect(0);
}
