//! Progressive rollout through the real binaries on a fleet of ten local hosts:
//! canaries, waves, the failure budget, halt and revert, `--plan`, environments and
//! `promote`, and deploy events on a real HTTP listener.
//!
//! Every release has one service whose health check is a real command. It fails
//! where the host's fleet-file environment sets `BREAK_<VERSION>`, so a release can
//! be bad on some hosts only.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{LocalFleet, Run, events};

const HOSTS: [&str; 10] = [
    "h01", "h02", "h03", "h04", "h05", "h06", "h07", "h08", "h09", "h10",
];

/// The app config of a release whose health check fails where `BREAK_<VERSION>`
/// is set.
fn release(version: &str) -> String {
    let flag = format!("BREAK_{}", version.to_uppercase());
    format!(
        "[app]\nname = \"shop\"\n[[service]]\nname = \"app\"\n\
         health = {{ command = 'test -z \"${flag}\"', timeout = \"1s\" }}\n"
    )
}

/// Ten hosts running v1, with v2 packed; `broken` hosts fail v2's health check.
fn fleet_on_v1(broken: &[&str]) -> LocalFleet {
    let fleet = LocalFleet::bare(&HOSTS);
    for version in ["v1", "v2"] {
        fleet.pack_with(version, &release(version), |_| {});
    }
    for host in broken {
        fleet.configure_host(host, "env = { BREAK_V2 = \"1\" }");
    }
    fleet.ship(&["deploy", "v1", "--hosts", "*"]).expect(0);
    fleet
}

fn currents(fleet: &LocalFleet) -> Vec<String> {
    HOSTS
        .iter()
        .map(|h| fleet.current(h).unwrap_or_default())
        .collect()
}

fn on(version: &str) -> String {
    format!("releases/{version}")
}

/// `ship deploy v2 --hosts '*'` with `flags`.
fn deploy_v2(fleet: &LocalFleet, flags: &[&str]) -> Run {
    let mut args = vec!["deploy", "v2", "--hosts", "*"];
    args.extend_from_slice(flags);
    fleet.ship(&args)
}

/// The RESULT column of `host`'s row.
fn result_of<'a>(run: &'a Run, host: &str) -> &'a str {
    run.row(host).split_whitespace().nth(3).unwrap()
}

#[test]
fn the_canary_catches_a_bad_release_and_nothing_else_switches() {
    let fleet = fleet_on_v1(&["h01"]);
    let out = deploy_v2(&fleet, &["--canary", "1", "--batch", "3"]).expect(1);
    assert!(
        out.stderr.contains(
            "deploy of shop v2 stopped after wave 1 (canary): 1 host(s) failed, 0 allowed; no host was left switched to v2, 9 not activated"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(result_of(&out, "h01"), "FAILED");
    assert!(
        out.row("h01").contains("v2 failed health on h01"),
        "{}",
        out.stdout
    );
    for host in &HOSTS[1..] {
        assert_eq!(result_of(&out, host), "skipped", "{}", out.stdout);
        assert!(
            out.row(host)
                .contains("staged but not activated: the rollout stopped after wave 1 (canary)"),
            "{}",
            out.stdout
        );
        // Staged (so a retry is a fast switch), never activated.
        assert!(fleet.releases(host).contains(&"v2".to_owned()));
    }
    assert!(
        currents(&fleet).iter().all(|c| *c == on("v1")),
        "{:?}",
        currents(&fleet)
    );
    // No host beyond the canary ever switched: their journals have no v2 activation.
    let history = fleet.ship(&["history", "--hosts", "h02,h10"]).expect(0);
    let switches: Vec<&str> = history
        .stdout
        .lines()
        .filter(|l| l.contains(" activate ") || l.contains(" rollback "))
        .collect();
    assert_eq!(switches.len(), 2, "{}", history.stdout);
    assert!(
        switches.iter().all(|l| l.contains("  v1  ")),
        "{}",
        history.stdout
    );
}

#[test]
fn a_canary_that_sickens_while_watched_is_put_back() {
    let fleet = LocalFleet::bare(&HOSTS);
    fleet.pack_with("v1", &release("v1"), |_| {});
    // v2 passes its first check and fails every later one.
    let sickening = "[app]\nname = \"shop\"\n[[service]]\nname = \"app\"\n\
        health = { command = 'test ! -e \"$SHIP_ROOT/checked\" && touch \"$SHIP_ROOT/checked\"', timeout = \"1s\" }\n";
    fleet.pack_with("v2", sickening, |_| {});
    fleet.ship(&["deploy", "v1", "--hosts", "*"]).expect(0);
    let out = deploy_v2(&fleet, &["--canary", "2", "--canary-wait", "3s"]).expect(1);
    for host in ["h01", "h02"] {
        assert_eq!(result_of(&out, host), "reverted", "{}", out.stdout);
        let row = out.row(host);
        assert!(
            row.contains("the canary watch failed: v2 is unhealthy on")
                && row.ends_with("; reverted to v1 by the deploy, restarted and healthy"),
            "{row}"
        );
    }
    assert!(
        currents(&fleet).iter().all(|c| *c == on("v1")),
        "{:?}",
        currents(&fleet)
    );
    // The host's journal marks v2 bad, so no later rollback picks it.
    assert_eq!(fleet.release_info("h01", "v2")["bad"], true);
}

#[test]
fn a_canary_that_sickens_within_the_budget_is_put_back_and_the_rest_go_on() {
    let fleet = LocalFleet::bare(&HOSTS);
    fleet.pack_with("v1", &release("v1"), |_| {});
    // v2 sickens after its first check where SICKEN is set (h01 only).
    let sickening = "[app]\nname = \"shop\"\n[[service]]\nname = \"app\"\n\
        health = { command = 'test -z \"$SICKEN\" || { test ! -e \"$SHIP_ROOT/checked\" && touch \"$SHIP_ROOT/checked\"; }', timeout = \"1s\" }\n";
    fleet.pack_with("v2", sickening, |_| {});
    fleet.configure_host("h01", "env = { SICKEN = \"1\" }");
    fleet.ship(&["deploy", "v1", "--hosts", "*"]).expect(0);
    let out = deploy_v2(
        &fleet,
        &[
            "--canary",
            "2",
            "--canary-wait",
            "3s",
            "--max-failures",
            "1",
        ],
    )
    .expect(1);
    assert!(
        out.stderr.contains(
            "deployed shop v2 on 9 of 10 host(s); 1 failed (1 within the failure budget of 1)"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(result_of(&out, "h01"), "reverted", "{}", out.stdout);
    assert_eq!(fleet.current("h01").unwrap(), on("v1"));
    for host in &HOSTS[1..] {
        assert_eq!(fleet.current(host).unwrap(), on("v2"), "{host}");
    }
    // h02 was watched for the whole wait (a check every 2 s, and one at the end),
    // before the rest were activated.
    let watched = out.stderr.matches("h02: watch health").count();
    assert_eq!(watched, 2, "{}", out.stderr);
    let last_watch = out.stderr.rfind("h02: watch health").unwrap();
    assert!(
        last_watch < out.stderr.find("wave 2: activating").unwrap(),
        "{}",
        out.stderr
    );
}

#[test]
fn a_failure_in_wave_two_puts_every_switched_host_back() {
    let fleet = fleet_on_v1(&["h05"]);
    let out = deploy_v2(&fleet, &["--batch", "3", "--json"]).expect(1);
    let results = events(&out, "result");
    let result = |host: &str| {
        results
            .iter()
            .find(|r| r["host"] == host)
            .unwrap_or_else(|| panic!("no result for {host}"))
            .clone()
    };
    for host in ["h01", "h02", "h03", "h04", "h06"] {
        let r = result(host);
        assert_eq!(r["result"], "reverted", "{r}");
        assert_eq!(
            (r["from"].as_str(), r["to"].as_str()),
            (Some("v1"), Some("v1"))
        );
    }
    assert_eq!(result("h05")["result"], "failed");
    for host in ["h07", "h08", "h09", "h10"] {
        assert_eq!(result(host)["result"], "skipped");
    }
    let summary = &events(&out, "summary")[0];
    assert!(
        summary["verdict"]
            .as_str()
            .unwrap()
            .contains("reverted after wave 2: 1 host(s) failed, 0 allowed; 5 host(s) put back on their previous release, 4 not activated"),
        "{summary}"
    );
    assert!(
        currents(&fleet).iter().all(|c| *c == on("v1")),
        "{:?}",
        currents(&fleet)
    );
    // Every host is back and healthy: v1's check passes everywhere, now.
    let history = fleet.ship(&["history", "--hosts", "h01"]).expect(0);
    let last_health = history
        .stdout
        .lines()
        .rfind(|l| l.contains(" health "))
        .unwrap();
    assert!(
        last_health.contains("v1") && last_health.ends_with("ok"),
        "{}",
        history.stdout
    );
}

#[test]
fn halt_leaves_the_switched_hosts_and_says_so() {
    let fleet = fleet_on_v1(&["h05"]);
    let out = deploy_v2(&fleet, &["--batch", "3", "--on-failure", "halt"]).expect(1);
    assert!(
        out.stderr.contains(
            "deploy of shop v2 halted after wave 2: 1 host(s) failed, 0 allowed; 5 host(s) switched to v2 stay there, 4 not activated"
        ),
        "{}",
        out.stderr
    );
    for host in ["h01", "h02", "h03", "h04", "h06"] {
        assert_eq!(fleet.current(host).unwrap(), on("v2"));
        assert!(
            out.row(host).contains("stays on it: the rollout halted"),
            "{}",
            out.stdout
        );
    }
    for host in ["h05", "h07", "h08", "h09", "h10"] {
        assert_eq!(fleet.current(host).unwrap(), on("v1"), "{host}");
    }
}

#[test]
fn a_tolerated_failure_lets_the_rollout_go_on() {
    let fleet = fleet_on_v1(&["h05"]);
    let out = deploy_v2(&fleet, &["--batch", "3", "--max-failures", "1"]).expect(1);
    assert!(
        out.stderr.contains(
            "deployed shop v2 on 9 of 10 host(s); 1 failed (1 within the failure budget of 1)"
        ),
        "{}",
        out.stderr
    );
    for (host, current) in HOSTS.iter().zip(currents(&fleet)) {
        let expected = if *host == "h05" { on("v1") } else { on("v2") };
        assert_eq!(current, expected, "{host}");
    }
    // A percentage budget: 10% of ten hosts is one.
    let fleet = fleet_on_v1(&["h02"]);
    deploy_v2(&fleet, &["--batch", "50%", "--max-failures", "10%"]).expect(1);
    assert_eq!(
        currents(&fleet).iter().filter(|c| **c == on("v2")).count(),
        9
    );
}

/// Every path under `dir` with its kind, size, mode, mtime and link target.
fn snapshot(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let link = fs::read_link(&path).ok();
        out.push(format!(
            "{} {:o} {} {} {:?}",
            path.display(),
            meta.mode(),
            meta.size(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
            link
        ));
        if meta.is_dir() {
            for item in fs::read_dir(&path).unwrap() {
                stack.push(item.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn plan_shows_transfers_and_waves_and_changes_nothing() {
    let fleet = LocalFleet::bare(&HOSTS);
    for version in ["v1", "v2"] {
        fleet.pack_with(version, &release(version), |_| {});
    }
    fleet.ship(&["deploy", "v1", "--hosts", "h0*"]).expect(0);
    fleet.ship(&["deploy", "v2", "--hosts", "h09"]).expect(0);
    let before = snapshot(&fleet.dir.path().join("hosts"));
    let out = deploy_v2(&fleet, &["--canary", "1", "--batch", "40%", "--plan"]).expect(0);
    assert_eq!(
        snapshot(&fleet.dir.path().join("hosts")),
        before,
        "the plan changed a host"
    );
    assert!(!fleet.root("h10").exists(), "the plan created h10's root");
    let h01 = out.row("h01");
    assert!(h01.contains(" v1 ") && h01.contains(" 1 (canary)"), "{h01}");
    assert!(out.row("h09").contains("already runs it"), "{}", out.stdout);
    assert!(
        out.row("h10").split_whitespace().nth(1) == Some("-"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("wave 1 (canary): h01\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("wave 2: h02, h03, h04, h05\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("wave 3: h06, h07, h08, h09\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("wave 4: h10\n"), "{}", out.stdout);
    assert!(
        out.stderr.contains("9 of 10 host(s) would be sent")
            && out.stderr.contains("nothing was changed"),
        "{}",
        out.stderr
    );
    // A host that would fail staging is named, and the plan exits 1.
    let _held = common::HeldLock::take(&fleet.root("h04"));
    let out = deploy_v2(&fleet, &["--plan"]).expect(1);
    assert!(
        out.row("h04").contains("WOULD FAIL: preflight:") && out.row("h04").contains("is busy"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("1 of 10 host(s) would fail staging"),
        "{}",
        out.stderr
    );
}

/// Environments: staging (two hosts) and production (three); each environment's
/// root is its first host's, the others set their own. `s2` gets `s2_env`.
fn environments_toml(s2_env: &str) -> String {
    format!(
        "[app]\nname = \"shop\"\nroot = \"/unused\"\n\
        [rollout]\ncanary = 1\n\
        [environments.staging]\nroot = \"staging-s1\"\n\
        hosts.s1 = {{ transport = \"local\" }}\n\
        hosts.s2 = {{ transport = \"local\", root = \"staging-s2\", env = {{ {s2_env} }} }}\n\
        [environments.production]\nroot = \"prod-p1\"\n\
        rollout = {{ batch = 1 }}\n\
        [environments.production.hosts.p1]\ntransport = \"local\"\n\
        [environments.production.hosts.p2]\ntransport = \"local\"\nroot = \"prod-p2\"\n\
        [environments.production.hosts.p3]\ntransport = \"local\"\nroot = \"prod-p3\"\n"
    )
}

fn current_in(fleet: &LocalFleet, root: &str) -> Option<String> {
    fs::read_link(fleet.dir.path().join(root).join("current"))
        .ok()
        .map(|p| p.to_str().unwrap().to_owned())
}

#[test]
fn promote_refuses_a_mixed_or_unhealthy_environment_and_deploys_a_consistent_one() {
    let fleet = LocalFleet::bare(&["unused"]);
    let config = fleet.dir.path().join("ship.toml");
    fs::write(&config, environments_toml("")).unwrap();
    for version in ["v1", "v2"] {
        fleet.pack_with(version, &release(version), |_| {});
    }
    // Without --env, a file of environments names them.
    let out = fleet.ship(&["status"]).expect(2);
    assert!(
        out.stderr
            .contains("choose an environment with --env (it defines production, staging)"),
        "{}",
        out.stderr
    );
    let out = fleet.ship(&["status", "--env", "qa"]).expect(2);
    assert!(
        out.stderr.contains("has no environment \"qa\""),
        "{}",
        out.stderr
    );
    let out = fleet.ship(&["deploy", "v1"]).expect(2);
    assert!(out.stderr.contains("no hosts chosen"), "{}", out.stderr);

    fleet.ship(&["deploy", "v1", "--env", "staging"]).expect(0);
    fleet
        .ship(&["deploy", "v1", "--env", "production"])
        .expect(0);
    fleet
        .ship(&["deploy", "v2", "--env", "staging", "--hosts", "s1"])
        .expect(0);
    let out = fleet.ship(&["promote", "staging", "production"]).expect(1);
    assert!(
        out.stderr
            .contains("cannot promote staging to production: its hosts are mixed: v1 ")
            && out.stderr.contains("on s2; v2 ")
            && out.stderr.contains("on s1"),
        "{}",
        out.stderr
    );
    let production = ["prod-p1", "prod-p2", "prod-p3"];
    for root in production {
        assert_eq!(current_in(&fleet, root).as_deref(), Some("releases/v1"));
    }

    // Consistent, but unhealthy on s2 now: refused, naming the host and the check.
    fleet.ship(&["deploy", "v2", "--env", "staging"]).expect(0);
    fs::write(&config, environments_toml("BREAK_V2 = \"1\"")).unwrap();
    let out = fleet.ship(&["promote", "staging", "production"]).expect(1);
    assert!(
        out.stderr
            .contains("cannot promote staging to production: v2 is unhealthy on s2"),
        "{}",
        out.stderr
    );
    for root in production {
        assert_eq!(current_in(&fleet, root).as_deref(), Some("releases/v1"));
    }

    fs::write(&config, environments_toml("")).unwrap();
    let out = fleet.ship(&["promote", "staging", "production"]).expect(0);
    assert!(
        out.stderr
            .contains("staging runs shop v2 on all 2 host(s), healthy: promoting it to production"),
        "{}",
        out.stderr
    );
    // Production's policy: canary 1 from [rollout], waves of 1 from its own table.
    assert!(
        out.stderr.contains("rollout: canary 1, waves of 1"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("deployed shop v2 on 3 of 3 host(s)"),
        "{}",
        out.stderr
    );
    for root in production {
        assert_eq!(current_in(&fleet, root).as_deref(), Some("releases/v2"));
    }
    // Production keeps v1: a promotion is a delta too.
    for host in ["p1", "p2", "p3"] {
        assert!(out.row(host).contains(" reused "), "{}", out.stdout);
    }

    // Flags win over the environment's policy; a plan of a promotion changes nothing.
    let plan = fleet
        .ship(&["promote", "staging", "production", "--batch", "2", "--plan"])
        .expect(0);
    assert!(plan.stdout.contains("wave 2: p2, p3\n"), "{}", plan.stdout);
    assert!(
        plan.stderr.contains("healthy by their journals"),
        "{}",
        plan.stderr
    );

    // The local artifact of v2 is not the v2 staging runs: refused.
    fleet.pack_with("v2", &release("v2"), |tree| {
        fs::write(tree.join("public/extra.txt"), "other bytes\n").unwrap()
    });
    let out = fleet.ship(&["promote", "staging", "production"]).expect(1);
    assert!(
        out.stderr
            .contains("cannot promote staging to production: staging runs v2 with payload")
            && out.stderr.contains("dist/shop-v2.tar.zst holds payload"),
        "{}",
        out.stderr
    );
}

/// A real HTTP listener on loopback that records the body of every POST and
/// answers 200; stopped when dropped.
struct Listener {
    port: u16,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start() -> Listener {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, done) = (bodies.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in socket.incoming() {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok()
                    && let Ok(json) = serde_json::from_slice(&body)
                {
                    seen.lock().unwrap().push(json);
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Listener {
            port,
            bodies,
            stop,
            thread: Some(thread),
        }
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn webhooks_and_the_deploy_log_receive_the_events() {
    let listener = Listener::start();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fleet = fleet_on_v1(&["h04"]);
    let config = fleet.dir.path().join("ship.toml");
    let toml = fs::read_to_string(&config).unwrap().replacen(
        "[app]\n",
        &format!(
            "[notify]\nwebhooks = [\"http://127.0.0.1:{}/hooks/secret-token\", \"http://127.0.0.1:{dead}/hooks/other\"]\nlog = \"logs/deploys.log\"\n[app]\n",
            listener.port
        ),
        1,
    );
    fs::write(&config, toml).unwrap();
    let out = deploy_v2(&fleet, &["--canary", "1", "--batch", "3"]).expect(1);
    // The dead webhook is reported, without its token, and the deploy went on.
    assert!(
        out.stderr
            .contains(&format!("webhook http://127.0.0.1:{dead}/hooks/…")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("hooks/other"), "{}", out.stderr);
    let events = listener.events();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["started", "wave", "wave", "reverted", "finished"],
        "{events:#?}"
    );
    assert_eq!(events[0]["version"], "v2");
    assert_eq!(events[0]["hosts"].as_array().unwrap().len(), 10);
    assert_eq!(events[1]["canary"], true);
    assert_eq!(events[2]["failed"], serde_json::json!(["h04"]));
    assert_eq!(events[4]["ok"], false);
    assert!(
        events[4]["text"]
            .as_str()
            .unwrap()
            .contains("reverted after wave 2"),
        "{}",
        events[4]
    );
    assert!(
        events
            .iter()
            .all(|e| e["time"].is_string() && e["text"].is_string())
    );
    // The deploy log has the same events, one JSON line each.
    let log = fs::read_to_string(fleet.dir.path().join("logs/deploys.log")).unwrap();
    let logged: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged, events);

    // A rollback posts its events too.
    let out = fleet
        .ship(&["rollback", "--hosts", "h01", "--to", "v2"])
        .expect(0);
    assert!(
        out.stderr.contains("rolled back shop on 1 of 1 host(s)"),
        "{}",
        out.stderr
    );
    let events = listener.events();
    let last = &events[events.len() - 1];
    assert_eq!(
        (last["event"].as_str(), last["op"].as_str()),
        (Some("finished"), Some("rollback"))
    );
}

#[test]
fn ctrl_c_ends_the_rollout_between_waves_and_says_what_was_switched() {
    let fleet = fleet_on_v1(&[]);
    let args = [
        "deploy",
        "v2",
        "--hosts",
        "*",
        "--canary",
        "1",
        "--canary-wait",
        "30s",
    ];
    // Ctrl-C, as the terminal would send it, while the canary is watched.
    let out = common::run_until(&mut fleet.command(&args), "watching the canary", |pid| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
    })
    .expect(1);
    assert!(
        out.stderr
            .contains("deploy of shop v2 interrupted: 1 host(s) switched to v2, 9 not activated"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("wave 2: activating"), "{}", out.stderr);
    assert_eq!(fleet.current("h01").unwrap(), on("v2"));
    for host in &HOSTS[1..] {
        assert_eq!(fleet.current(host).unwrap(), on("v1"), "{host}");
        assert_eq!(result_of(&out, host), "skipped", "{}", out.stdout);
        assert!(
            out.row(host)
                .contains("staged but not activated: interrupted"),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn a_failed_prune_is_a_warning_not_a_failure() {
    let fleet = LocalFleet::bare(&["h01", "h02"]); // keeps 2 releases
    fleet.pack("v1");
    fleet.pack("v2");
    // v3's hook puts a file where the agent's trash directory goes, so pruning v1
    // after the switch fails.
    let toml = "[app]\nname = \"shop\"\n[hooks]\npre_activate = \"bin/block-trash\"\n";
    fleet.pack_with("v3", toml, |tree| {
        common::Tree::new(tree).file_mode(
            "bin/block-trash",
            "#!/bin/sh\nrm -rf \"$SHIP_ROOT/.ship/trash\"\n: > \"$SHIP_ROOT/.ship/trash\"\n",
            0o755,
        );
    });
    fleet.ship(&["deploy", "v1", "--hosts", "*"]).expect(0);
    fleet.ship(&["deploy", "v2", "--hosts", "*"]).expect(0);
    let out = fleet.ship(&["deploy", "v3", "--hosts", "*"]).expect(0);
    assert!(
        out.stderr.contains("deployed shop v3 on 2 of 2 host(s)"),
        "{}",
        out.stderr
    );
    for host in ["h01", "h02"] {
        assert_eq!(result_of(&out, host), "ok", "{}", out.stdout);
        assert!(
            out.row(host).contains("switched; warning: prune failed:"),
            "{}",
            out.stdout
        );
        assert_eq!(fleet.current(host).unwrap(), on("v3"));
    }
}
