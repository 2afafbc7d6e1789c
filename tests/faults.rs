//! Faults injected in the middle of fleet operations, end to end over real sshd hosts
//! (`scripts/fleet`): connections cut by killing the host's sshd child, agents killed
//! by pid, a host whose sshd is stopped with SIGSTOP, a disk that fills up, two
//! operators at once, and ship itself killed mid-rollout. After each, every host is on
//! a complete release, no lock outlives its holder, the journal reads, and ship's
//! report named what happened.
//!
//! To strike at a precise step, the agents run with `SHIP_AGENT_PAUSE_AT` (see the
//! agent's `crash` module): a host pauses there until its `/srv/go` exists, so the
//! test breaks something while the host is known to be mid-step, then lets it go on.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use common::{LocalFleet, Run, SshFleet, events, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A fleet of `size` hosts on v1 whose agents pause at `point` on every host
/// without a `/srv/go` (every host has one until [`hold`] takes it away).
fn fleet_on_v1(size: usize, point: Option<&str>) -> (SshFleet, LocalFleet) {
    let setenv = point.map(|p| format!("SHIP_AGENT_PAUSE_AT={p} SHIP_AGENT_RESUME_WHEN=/srv/go"));
    let fleet = SshFleet::start(size, setenv.as_deref());
    for host in fleet.hosts() {
        release(&fleet, &host);
    }
    let build = fleet.with_artifacts();
    fleet
        .ship(build.dir.path(), &["deploy", "v1", "--hosts", "*"])
        .expect(0);
    (fleet, build)
}

fn go_file(fleet: &SshFleet, host: &str) -> PathBuf {
    fleet.dir.path().join("hosts").join(host).join("srv/go")
}

/// Makes `host` pause at the fleet's point.
fn hold(fleet: &SshFleet, host: &str) {
    fs::remove_file(go_file(fleet, host)).unwrap();
}

/// Lets `host` go on from its pause (and not pause again).
fn release(fleet: &SshFleet, host: &str) {
    fs::write(go_file(fleet, host), "").unwrap();
}

/// The lock holder of `host` (`{"pid", "command", "since"}`) while one holds it.
fn holder(fleet: &SshFleet, host: &str) -> Option<serde_json::Value> {
    let lock = fleet.root(host).join(".ship/lock");
    let free = Command::new("flock")
        .args(["-n", "-s"])
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap()
        .success();
    if free {
        return None;
    }
    serde_json::from_str(&fs::read_to_string(lock).ok()?).ok()
}

/// Waits until `host`'s agent is at work on `command` (holding the lock).
fn wait_for_agent(fleet: &SshFleet, host: &str, command: &str) -> i32 {
    wait_until(&format!("{host}'s agent runs {command}"), || {
        holder(fleet, host).is_some_and(|h| h["command"] == format!("ship-agent {command}"))
    });
    holder(fleet, host).unwrap()["pid"].as_i64().unwrap() as i32
}

/// Checks what every fault must leave on `host`, once its agent is done: no lock
/// held, `current` on a release that verifies, nothing but complete releases under
/// `releases/`, and a journal the agent reads. Returns the current version.
#[track_caller]
fn settled(fleet: &SshFleet, host: &str) -> String {
    let root = fleet.root(host);
    wait_until(&format!("{host}'s lock is free"), || {
        holder(fleet, host).is_none()
    });
    let agent = |args: &[&str]| {
        common::run(
            Command::new(common::agent_binary())
                .args(args)
                .arg("--root")
                .arg(&root),
        )
    };
    let current = fleet.current(host).expect("current is a symlink");
    let version = current
        .strip_prefix("releases/")
        .unwrap_or_else(|| panic!("{host}: current -> {current}"))
        .to_owned();
    for entry in fs::read_dir(root.join("releases")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        agent(&["verify", &name]).expect(0);
    }
    assert!(root.join("releases").join(&version).is_dir());
    let history = agent(&["--json", "history"]).expect(0);
    assert!(
        history.stdout.contains("\"version\":\"v1\""),
        "{}",
        history.stdout
    );
    version
}

/// The new `current` link a switch of `host` has made but not yet renamed over
/// the old one.
fn next_current(fleet: &SshFleet, host: &str) -> Option<PathBuf> {
    fs::read_dir(fleet.root(host))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".current.")
        })
}

/// What is left under `.ship/incoming/` of `host`: partial receives, which are never
/// activated and are cleared by the host's next receive.
fn incoming(fleet: &SshFleet, host: &str) -> Vec<String> {
    match fs::read_dir(fleet.root(host).join(".ship/incoming")) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A command running in the background, its output collected; killed if the test
/// fails before it is finished.
struct Background {
    child: Option<Child>,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
}

impl Background {
    fn spawn(mut cmd: Command) -> Background {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Background {
            child: Some(child),
            out: Some(out),
            err: Some(err),
        }
    }

    fn finish(mut self) -> Run {
        let status = self.child.take().unwrap().wait().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: self.out.take().unwrap().join().unwrap(),
            stderr: self.err.take().unwrap().join().unwrap(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_connection_cut_during_a_transfer_leaves_the_host_on_its_release() {
    if !SshFleet::can_run() {
        return;
    }
    let (fleet, build) = fleet_on_v1(3, Some("receive:staging"));
    let cwd = build.dir.path();
    // Large enough that the stream cannot sit whole in the buffers on the way.
    build.pack_with("v3", "[app]\nname = \"shop\"\n", |tree| {
        fs::write(
            tree.join("public/big.bin"),
            common::incompressible(16 << 20),
        )
        .unwrap()
    });
    hold(&fleet, "h2");
    let deploy = Background::spawn(fleet.command(cwd, &["deploy", "v3", "--full", "--hosts", "*"]));
    wait_for_agent(&fleet, "h2", "receive");
    fleet.drop_connections("h2");
    let out = deploy.finish().expect(1);
    // The agent goes on from its pause to find its input cut short.
    release(&fleet, "h2");
    let row = out.row("h2");
    assert!(row.contains("connection"), "{row}");
    assert_eq!(settled(&fleet, "h2"), "v1");
    assert!(
        !fleet.root("h2").join("releases/v3").exists(),
        "a half-received release is never under releases/"
    );
    wait_until("h2's partial receive is cleared", || {
        incoming(&fleet, "h2").is_empty()
    });
    for host in ["h1", "h3"] {
        // A rollout that loses a host puts the others back (the default budget is 0).
        settled(&fleet, host);
    }
    fleet.ship(cwd, &["deploy", "v3", "--hosts", "*"]).expect(0);
    for host in fleet.hosts() {
        assert_eq!(settled(&fleet, &host), "v3", "{host}");
    }
}

#[test]
fn a_connection_cut_during_activation_leaves_a_release_that_status_names() {
    if !SshFleet::can_run() {
        return;
    }
    let (fleet, build) = fleet_on_v1(2, Some("activate:linked"));
    let cwd = build.dir.path();
    hold(&fleet, "h2");
    let deploy = Background::spawn(fleet.command(cwd, &["deploy", "v2", "--hosts", "*"]));
    wait_for_agent(&fleet, "h2", "activate");
    wait_until("h2's agent is between the two steps of its switch", || {
        next_current(&fleet, "h2").is_some()
    });
    fleet.drop_connections("h2");
    release(&fleet, "h2");
    let out = deploy.finish().expect(1);
    let row = out.row("h2");
    assert!(row.contains("connection"), "{row}");
    let on = settled(&fleet, "h2");
    assert!(on == "v1" || on == "v2", "{on}");
    settled(&fleet, "h1");
    // What the host really runs is one `ship status` away.
    let status = fleet.ship(cwd, &["status", "--json"]).expect(0);
    let rows = events(&status, "status");
    let h2 = rows.iter().find(|r| r["host"] == "h2").unwrap();
    assert_eq!(h2["status"]["current"], on.as_str(), "{h2}");
    fleet.ship(cwd, &["deploy", "v2", "--hosts", "*"]).expect(0);
    for host in fleet.hosts() {
        assert_eq!(settled(&fleet, &host), "v2", "{host}");
    }
}

#[test]
fn a_connection_cut_during_a_revert_leaves_the_host_on_its_old_release() {
    if !SshFleet::can_run() {
        return;
    }
    let setenv = "SHIP_AGENT_PAUSE_AT=revert:linked SHIP_AGENT_RESUME_WHEN=/srv/go";
    let fleet = SshFleet::start(2, Some(setenv));
    for host in fleet.hosts() {
        release(&fleet, &host);
    }
    let build = LocalFleet::bare(&["unused"]);
    fleet.artifacts_in(&build.dir.path().join("dist"));
    let toml = "[app]\nname = \"shop\"\n[[service]]\nname = \"web\"\n\
                health = { command = \"test -f public/ok\", timeout = \"1s\" }\n";
    build.pack_with("v1", toml, |tree| {
        fs::write(tree.join("public/ok"), "").unwrap()
    });
    build.pack_with("v2", toml, |_| {});
    let cwd = build.dir.path();
    fleet.ship(cwd, &["deploy", "v1", "--hosts", "*"]).expect(0);
    hold(&fleet, "h2");
    // v2 fails its health check; h2's agent is cut off while it goes back to v1.
    let deploy = Background::spawn(fleet.command(cwd, &["deploy", "v2", "--hosts", "*"]));
    wait_until("h2's agent is between the two steps of its revert", || {
        next_current(&fleet, "h2").is_some()
    });
    fleet.drop_connections("h2");
    release(&fleet, "h2");
    let out = deploy.finish().expect(1);
    let row = out.row("h2");
    assert!(row.contains("connection"), "{row}");
    assert_eq!(settled(&fleet, "h2"), "v1");
    assert_eq!(settled(&fleet, "h1"), "v1");
    let journal = fs::read_to_string(fleet.root("h2").join(".ship/journal.jsonl")).unwrap();
    assert!(journal.contains("\"op\":\"revert\""), "{journal}");
}

/// Kills h2's agent (`agent`, paused in its transfer of v2 while h1 takes v2),
/// then checks that `deploy` reported it, that h2 is left on v1 with no trace of
/// v2, and that the next deploy clears what the killed agent left and gets there.
fn kill_and_recover(fleet: &SshFleet, cwd: &Path, deploy: Background, agent: i32) {
    kill(Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    let out = deploy.finish().expect(1);
    let row = out.row("h2");
    assert!(row.contains("killed") || row.contains("signal"), "{row}");
    release(fleet, "h2");
    assert_eq!(settled(fleet, "h2"), "v1");
    assert_eq!(settled(fleet, "h1"), "v2");
    assert!(!fleet.root("h2").join("releases/v2").exists());
    fleet
        .ship(cwd, &["deploy", "v2", "--hosts", "h2"])
        .expect(0);
    assert_eq!(settled(fleet, "h2"), "v2");
    assert!(
        incoming(fleet, "h2").is_empty(),
        "{:?}",
        incoming(fleet, "h2")
    );
}

#[test]
fn an_agent_killed_during_a_delta_receive_leaves_no_trace() {
    if !SshFleet::can_run() {
        return;
    }
    let (fleet, build) = fleet_on_v1(2, Some("receive:staging"));
    let cwd = build.dir.path();
    hold(&fleet, "h2");
    let deploy = Background::spawn(fleet.command(
        cwd,
        &["deploy", "v2", "--hosts", "*", "--max-failures", "1"],
    ));
    let agent = wait_for_agent(&fleet, "h2", "receive");
    let argv = fs::read(format!("/proc/{agent}/cmdline")).unwrap();
    assert!(
        argv.split(|&b| b == 0).any(|arg| arg == b"--delta"),
        "the transfer is a delta: {}",
        String::from_utf8_lossy(&argv)
    );
    kill_and_recover(&fleet, cwd, deploy, agent);
}

#[test]
fn an_agent_killed_during_a_fetch_leaves_no_trace() {
    if !SshFleet::can_run() || !common::store::can_run() {
        return;
    }
    let nginx = common::store::Nginx::start();
    let (fleet, build) = fleet_on_v1(2, Some("receive:staging"));
    let cwd = build.dir.path();
    let config = fleet.dir.path().join("ship.toml");
    let mut toml = fs::read_to_string(&config).unwrap();
    toml.push_str(&format!("[store]\nurl = \"{}/releases\"\n", nginx.url()));
    fs::write(&config, toml).unwrap();
    fleet.ship(cwd, &["publish", "v2"]).expect(0);
    hold(&fleet, "h2");
    let deploy = Background::spawn(fleet.command(
        cwd,
        &["deploy", "v2", "--hosts", "*", "--max-failures", "1"],
    ));
    let agent = wait_for_agent(&fleet, "h2", "fetch");
    kill_and_recover(&fleet, cwd, deploy, agent);
}

/// SIGSTOPs a host's sshd (the listener and its sessions) until dropped.
struct Stopped {
    pids: Vec<i32>,
}

impl Stopped {
    fn host(fleet: &SshFleet, host: &str) -> Stopped {
        let mut pids = vec![fleet.listener(host)];
        pids.extend(fleet.sessions(host));
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        }
        Stopped { pids }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for &pid in &self.pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }
}

#[test]
fn hosts_that_stop_answering_mid_wave_time_out_and_the_rest_proceed() {
    if !SshFleet::can_run() {
        return;
    }
    let (fleet, build) = fleet_on_v1(4, Some("activate:linked"));
    let cwd = build.dir.path();
    hold(&fleet, "h2");
    let stopped = std::sync::Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    let out = std::thread::scope(|scope| {
        common::run_until(
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
                    "--max-failures",
                    "2",
                ],
            ),
            "watching the canary",
            |_| {
                // h3's session is idle between waves when its sshd stops; h2's stops
                // while h2 is in the middle of its activation.
                stopped.lock().unwrap().push(Stopped::host(&fleet, "h3"));
                scope.spawn(|| {
                    wait_until("h2's agent is in the middle of its switch", || {
                        next_current(&fleet, "h2").is_some()
                    });
                    stopped.lock().unwrap().push(Stopped::host(&fleet, "h2"));
                });
            },
        )
    })
    .expect(1);
    let took = started.elapsed();
    for host in ["h2", "h3"] {
        let row = out.row(host);
        assert!(
            row.contains("activate:") && row.contains("the host stopped answering"),
            "{row}"
        );
    }
    assert!(took.as_secs() < 60, "the timeouts fired late: {took:?}");
    for host in ["h1", "h4"] {
        assert_eq!(settled(&fleet, host), "v2", "{host}");
    }
    drop(stopped);
    release(&fleet, "h2");
    assert_eq!(settled(&fleet, "h3"), "v1");
    // h2's agent finished the switch it was in when ship gave up on it.
    let on = settled(&fleet, "h2");
    let status = fleet.ship(cwd, &["status", "--json"]).expect(0);
    let h2 = events(&status, "status")
        .into_iter()
        .find(|r| r["host"] == "h2")
        .unwrap();
    assert_eq!(h2["status"]["current"], on.as_str(), "{h2}");
    fleet.ship(cwd, &["deploy", "v2", "--hosts", "*"]).expect(0);
    for host in fleet.hosts() {
        assert_eq!(settled(&fleet, &host), "v2", "{host}");
    }
}

/// Fills the file system at `dir` (bytes and inodes) until it has no room left.
fn fill(dir: &Path) {
    let filler = dir.join("filler");
    fs::create_dir_all(&filler).unwrap();
    let block = vec![7u8; 1 << 20];
    let mut i = 0;
    while fs::write(filler.join(format!("b{i}")), &block).is_ok() {
        i += 1;
    }
    while fs::write(filler.join(format!("i{i}")), "").is_ok() {
        i += 1;
    }
}

#[test]
fn a_disk_filled_between_staging_and_activation_fails_that_host_alone() {
    if !SshFleet::can_run() {
        return;
    }
    let (fleet, build) = fleet_on_v1(3, None);
    let cwd = build.dir.path();
    // h2's /srv becomes a small file system of its own, holding what it had.
    let srv = fleet.dir.path().join("hosts/h2/srv");
    fleet.host_op("stop-host", "h2");
    let saved = fleet.dir.path().join("h2-srv");
    fs::rename(&srv, &saved).unwrap();
    fs::create_dir(&srv).unwrap();
    let _disk = common::Tmpfs::mount(&srv, "size=64m,nr_inodes=4096");
    common::copy_tree(&saved, &srv);
    fleet.host_op("start-host", "h2");
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
                "--max-failures",
                "1",
            ],
        ),
        "watching the canary",
        |_| {
            // Every host has v2 staged by now; h2's disk fills before its wave.
            assert!(srv.join("shop/releases/v2").is_dir());
            fill(&srv);
        },
    )
    .expect(1);
    let row = out.row("h2");
    assert!(row.contains("No space left on device"), "{row}");
    assert_eq!(settled(&fleet, "h2"), "v1");
    for host in ["h1", "h3"] {
        assert_eq!(settled(&fleet, host), "v2", "{host}");
    }
    fs::remove_dir_all(srv.join("filler")).unwrap();
    fleet
        .ship(cwd, &["deploy", "v2", "--hosts", "h2"])
        .expect(0);
    assert_eq!(settled(&fleet, "h2"), "v2");
}

#[test]
fn two_operators_on_overlapping_hosts_each_leave_whole_releases() {
    if !SshFleet::can_run() {
        return;
    }
    let (fleet, build) = fleet_on_v1(4, Some("receive:staging"));
    let cwd = build.dir.path();
    // The first operator's receive on h2 is held, so the second finds h2 taken;
    // h3 they race for.
    hold(&fleet, "h2");
    let first = Background::spawn(fleet.command(cwd, &["deploy", "v2", "--hosts", "h1,h2,h3"]));
    wait_for_agent(&fleet, "h2", "receive");
    let second = Background::spawn(fleet.command(cwd, &["deploy", "v3", "--hosts", "h2,h3,h4"]));
    let second = second.finish();
    release(&fleet, "h2");
    let first = first.finish();
    assert!(first.code == 0 || first.code == 1, "{first:?}");
    assert_eq!(second.code, 1, "{second:?}");
    let row = second.row("h2");
    assert!(row.contains("busy: locked by pid"), "{row}");
    assert!(row.contains("ship-agent receive"), "{row}");
    for host in fleet.hosts() {
        let on = settled(&fleet, &host);
        assert!(["v1", "v2", "v3"].contains(&on.as_str()), "{host}: {on}");
    }
    // `ship status` tells what each host runs; a deploy makes the fleet one again.
    let status = fleet.ship(cwd, &["status", "--json"]).expect(0);
    for row in events(&status, "status") {
        let host = row["host"].as_str().unwrap();
        assert_eq!(
            row["status"]["current"].as_str(),
            fleet.current(host).unwrap().strip_prefix("releases/"),
            "{row}"
        );
    }
    fleet.ship(cwd, &["deploy", "v3", "--hosts", "*"]).expect(0);
    for host in fleet.hosts() {
        assert_eq!(settled(&fleet, &host), "v3", "{host}");
    }
}

#[test]
fn a_ship_killed_mid_rollout_leaves_a_fleet_that_status_and_a_deploy_recover() {
    if !SshFleet::can_run() {
        return;
    }
    let (fleet, build) = fleet_on_v1(3, None);
    let cwd = build.dir.path();
    let killed = common::run_until(
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
                "30s",
            ],
        ),
        "watching the canary",
        |pid| kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap(),
    );
    assert_eq!(killed.code, -1, "killed by a signal");
    // The canary is on v2, the others still on v1, every one whole and unlocked.
    assert_eq!(settled(&fleet, "h1"), "v2");
    for host in ["h2", "h3"] {
        assert_eq!(settled(&fleet, host), "v1", "{host}");
    }
    let status = fleet.ship(cwd, &["status"]).expect(0);
    assert!(status.row("h1").contains("v2"), "{}", status.stdout);
    assert!(status.row("h2").contains("v1"), "{}", status.stdout);
    let redeploy = fleet
        .ship(cwd, &["deploy", "v2", "--hosts", "*", "--json"])
        .expect(0);
    for result in events(&redeploy, "result") {
        // v2 was already on every host: nothing is sent again.
        assert_eq!(result["transferred"], 0, "{result}");
    }
    for host in fleet.hosts() {
        assert_eq!(settled(&fleet, &host), "v2", "{host}");
    }
}
