//! Releases that run, end to end through `ship` and `ship-agent` with real
//! processes: the example shop's HTTP server under a real `supervisord` (Debian's
//! `supervisor`), or re-exec'ing itself on SIGHUP; real hooks; real health checks
//! over HTTP. Every process a test starts is stopped by its pid when the test ends,
//! pass or fail.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{LocalFleet, free_port, wait_until};

/// `GET /health` on `port`: the body, or `None` when nothing answers 200.
fn health(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.trim().to_owned())
}

/// A real supervisord running the shop's web server from `<root>/current`, stopped
/// (with its programs) when dropped.
struct Supervisor {
    child: Child,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Supervisor {
    fn start(root: &Path, port: u16) -> Supervisor {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let conf = dir.path().join("supervisord.conf");
        fs::write(
            &conf,
            format!(
                "[unix_http_server]\nfile={d}/supervisor.sock\n\
                 [supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\nnodaemon=true\n\
                 [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
                 [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\
                 [program:shop-web]\ncommand={}/current/venv/bin/shop-web\nenvironment=SHOP_PORT=\"{port}\"\n\
                 autostart=false\nautorestart=false\nstartsecs=0\nstopasgroup=true\nkillasgroup=true\n\
                 stdout_logfile={d}/web.log\nredirect_stderr=true\n",
                root.display()
            ),
        )
        .unwrap();
        let child = Command::new("supervisord")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("supervisord runs (Debian package `supervisor`; scripts/test installs it)");
        let supervisor = Supervisor {
            child,
            conf,
            _dir: dir,
        };
        let socket = supervisor._dir.path().join("supervisor.sock");
        wait_until("supervisord listens", || socket.exists());
        supervisor
    }

    /// The restart command the app's ship.toml gives.
    fn restart_command(&self) -> String {
        format!("supervisorctl -c {} restart shop-web", self.conf.display())
    }

    /// The web server's pid, as supervisord knows it (0 when it is not running).
    fn web_pid(&self) -> u32 {
        let out = Command::new("supervisorctl")
            .arg("-c")
            .arg(&self.conf)
            .args(["pid", "shop-web"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // SIGTERM: supervisord stops its programs, then exits.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..250 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shop's ship.toml with one service restarted by `restart` (a TOML inline
/// table) whose health check wants `body`, plus `extra` TOML.
fn shop_toml(restart: &str, body: &str, extra: &str) -> String {
    format!(
        r#"[app]
name = "shop"

[release]
shared = ["log/", "tmp/pids/"]
requires.env = ["SHOP_PORT"]

[hooks]
pre_activate = "bin/migrate"
post_activate = "bin/notify"
timeout = "3s"

[[service]]
name = "web"
restart = {restart}
health = {{ http = "http://127.0.0.1:${{SHOP_PORT}}/health", body = "{body}", timeout = "2s" }}
{extra}"#
    )
}

/// Adds `bin/notify` (records the release it ran for in shared/log/notified).
fn with_notify(tree: &Path) {
    let path = tree.join("bin/notify");
    fs::write(
        &path,
        "#!/bin/sh\necho \"notified $SHIP_VERSION\"\necho \"$SHIP_VERSION\" > \"$SHIP_ROOT/shared/log/notified\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Makes the release's web server answer /health with 503.
fn broken(tree: &Path) {
    with_notify(tree);
    let shop = common::shop_module(tree);
    let code = fs::read_to_string(&shop).unwrap();
    let health = "self.reply(200, f\"ok";
    assert!(
        code.contains(health),
        "the shop's /health is not where it was"
    );
    fs::write(shop, code.replace(health, "self.reply(503, f\"ok")).unwrap();
}

/// A one-host fleet (`web1`) whose web server listens on a port of its own.
fn fleet_with_port() -> (LocalFleet, u16) {
    let fleet = LocalFleet::bare(&["web1"]);
    let port = free_port();
    fleet.configure_host("web1", &format!("env = {{ SHOP_PORT = \"{port}\" }}"));
    (fleet, port)
}

#[test]
fn deploys_restart_the_service_under_supervisord_check_health_and_roll_back() {
    let (fleet, port) = fleet_with_port();
    let root = fleet.root("web1");
    let supervisor = Supervisor::start(&root, port);
    let restart = format!("{{ command = \"{}\" }}", supervisor.restart_command());
    for version in ["v1", "v2"] {
        fleet.pack_with(
            version,
            &shop_toml(&restart, &format!("ok {version}"), ""),
            with_notify,
        );
    }

    let first = fleet.ship(&["deploy", "v1", "--hosts", "web1"]).expect(0);
    assert_eq!(health(port).as_deref(), Some("ok v1"));
    let v1_pid = supervisor.web_pid();
    assert!(v1_pid > 0, "{}", first.stderr);
    // The hook's output comes back under the host's name.
    assert!(
        first
            .stderr
            .contains("web1: [pre_activate] migrating the shop's data for v1 (live: nothing)"),
        "{}",
        first.stderr
    );
    for phase in [
        "web1: restart web",
        "web1: health web",
        "web1: post_activate",
    ] {
        assert!(first.stderr.contains(phase), "{phase}:\n{}", first.stderr);
    }
    // Shared paths live outside the release and are linked into it.
    assert_eq!(
        fs::read_link(root.join("releases/v1/log")).unwrap(),
        Path::new("../../shared/log")
    );
    assert_eq!(
        fs::read_to_string(root.join("shared/log/notified")).unwrap(),
        "v1\n"
    );

    let second = fleet.ship(&["deploy", "v2", "--hosts", "web1"]).expect(0);
    assert_eq!(health(port).as_deref(), Some("ok v2"));
    let v2_pid = supervisor.web_pid();
    assert!(
        v2_pid > 0 && v2_pid != v1_pid,
        "restarted: {v1_pid} -> {v2_pid}"
    );
    assert!(
        second.stderr.contains("(live: v1)"),
        "SHIP_PREVIOUS reaches the hook:\n{}",
        second.stderr
    );
    assert_eq!(
        fs::read_to_string(root.join("shared/log/notified")).unwrap(),
        "v2\n"
    );
    // Files written through the link survive the release.
    assert!(root.join("shared/log").is_dir());

    // Rollback restarts the service and checks its health too.
    let back = fleet.ship(&["rollback", "--hosts", "web1"]).expect(0);
    assert_eq!(fleet.current("web1").as_deref(), Some("releases/v1"));
    assert_eq!(health(port).as_deref(), Some("ok v1"));
    let rolled_pid = supervisor.web_pid();
    assert!(rolled_pid > 0 && rolled_pid != v2_pid);
    assert!(back.stderr.contains("web1: health web"), "{}", back.stderr);
    let history = fleet.ship(&["history", "--hosts", "web1"]).expect(0);
    let health_rows: Vec<&str> = history
        .stdout
        .lines()
        .filter(|l| l.contains(" health "))
        .collect();
    assert_eq!(health_rows.len(), 3, "{}", history.stdout);
    assert!(health_rows.iter().all(|row| row.ends_with(" ok")));
}

#[test]
fn a_release_that_fails_health_is_reverted_marked_bad_and_never_rolled_back_to() {
    let (fleet, port) = fleet_with_port();
    let root = fleet.root("web1");
    let supervisor = Supervisor::start(&root, port);
    let restart = format!("{{ command = \"{}\" }}", supervisor.restart_command());
    // Keep every release, so only its badness keeps v0 from being rolled back to.
    let config = fleet.dir.path().join("ship.toml");
    let toml = fs::read_to_string(&config).unwrap();
    fs::write(&config, toml.replace("keep = 2", "keep = 10")).unwrap();
    fleet.pack_with("v0", &shop_toml(&restart, "ok", ""), broken);
    fleet.pack_with("v1", &shop_toml(&restart, "ok", ""), with_notify);
    fleet.pack_with("v2", &shop_toml(&restart, "ok", ""), broken);
    fleet.pack_with("v3", &shop_toml(&restart, "ok", ""), with_notify);
    // A first release has nothing to go back to: it stays, and is reported.
    let first = fleet.ship(&["deploy", "v0", "--hosts", "web1"]).expect(1);
    assert!(
        first.stdout.contains(
            "v0 failed health on web1 (web: GET /health → 503 after 2s); there is no earlier release to revert to; v0 stays current"
        ),
        "{}",
        first.stdout
    );
    fleet.ship(&["deploy", "v1", "--hosts", "web1"]).expect(0);

    let failed = fleet.ship(&["deploy", "v2", "--hosts", "web1"]).expect(1);
    assert!(
        failed.stdout.contains(
            "v2 failed health on web1 (web: GET /health → 503 after 2s); reverted to v1, healthy"
        ),
        "{}",
        failed.stdout
    );
    assert!(failed.row("web1").contains("FAILED"));
    // The host ends on the old release, running and healthy.
    assert_eq!(fleet.current("web1").as_deref(), Some("releases/v1"));
    assert_eq!(health(port).as_deref(), Some("ok v1"));
    assert!(supervisor.web_pid() > 0);
    // The journal records the failure and the revert.
    let history = fleet.ship(&["history", "--hosts", "web1"]).expect(0);
    assert!(
        history.stdout.lines().any(|l| l.contains(" health ")
            && l.contains(" v2 ")
            && l.contains("failed: web: GET /health → 503")),
        "{}",
        history.stdout
    );
    assert!(
        history
            .stdout
            .lines()
            .any(|l| l.contains(" revert ") && l.contains(" v2 ") && l.contains(" v1 ")),
        "{}",
        history.stdout
    );
    assert_eq!(fleet.release_info("web1", "v2")["bad"], true);

    // v1 -> v3; a rollback from v3 goes to v1, never to the bad v2.
    fleet.ship(&["deploy", "v3", "--hosts", "web1"]).expect(0);
    let agent = |args: &[&str]| {
        common::run(
            Command::new(common::agent_binary())
                .args(args)
                .args(["--root", root.to_str().unwrap()]),
        )
    };
    let status = agent(&["status", "--json"]).expect(0);
    let done = common::events(&status, "done");
    assert_eq!(done[0]["previous"], "v1");
    fleet.ship(&["rollback", "--hosts", "web1"]).expect(0);
    assert_eq!(fleet.current("web1").as_deref(), Some("releases/v1"));
    assert_eq!(health(port).as_deref(), Some("ok v1"));
    // Before v1 came the bad v0: a rollback does not choose it.
    let none = fleet.ship(&["rollback", "--hosts", "web1"]).expect(1);
    assert!(
        none.row("web1")
            .contains("there is no earlier release to roll back to from v1"),
        "{}",
        none.stdout
    );
    assert_eq!(fleet.current("web1").as_deref(), Some("releases/v1"));
}

#[test]
fn a_failing_or_hanging_pre_activate_hook_leaves_the_host_untouched() {
    let (fleet, port) = fleet_with_port();
    let root = fleet.root("web1");
    let supervisor = Supervisor::start(&root, port);
    let restart = format!("{{ command = \"{}\" }}", supervisor.restart_command());
    fleet.pack_with("v1", &shop_toml(&restart, "ok", ""), with_notify);
    fleet.ship(&["deploy", "v1", "--hosts", "web1"]).expect(0);
    let pid = supervisor.web_pid();
    let hook = |script: &'static str| {
        move |tree: &Path| {
            with_notify(tree);
            fs::write(tree.join("bin/migrate"), script).unwrap();
        }
    };

    fleet.pack_with(
        "v2",
        &shop_toml(&restart, "ok", ""),
        hook("#!/bin/sh\necho 'migration 7 failed: column price exists' >&2\nexit 3\n"),
    );
    let failed = fleet.ship(&["deploy", "v2", "--hosts", "web1"]).expect(1);
    assert!(
        failed.stdout.contains(
            "the pre_activate hook bin/migrate of v2 failed: it exited with status 3 (last output: migration 7 failed: column price exists)"
        ),
        "{}",
        failed.stdout
    );
    assert!(
        failed
            .stderr
            .contains("web1: [pre_activate] migration 7 failed: column price exists"),
        "{}",
        failed.stderr
    );
    fleet.pack_with(
        "v3",
        &shop_toml(&restart, "ok", ""),
        hook("#!/bin/sh\necho waiting for a lock\nsleep 60\n"),
    );
    let hung = fleet.ship(&["deploy", "v3", "--hosts", "web1"]).expect(1);
    assert!(
        hung.stdout
            .contains("did not finish within 3s, and was killed"),
        "{}",
        hung.stdout
    );

    // Untouched: the same release, the same running process, no new notification.
    assert_eq!(fleet.current("web1").as_deref(), Some("releases/v1"));
    assert_eq!(supervisor.web_pid(), pid);
    assert_eq!(health(port).as_deref(), Some("ok v1"));
    assert_eq!(
        fs::read_to_string(root.join("shared/log/notified")).unwrap(),
        "v1\n"
    );
}

#[test]
fn a_missing_variable_fails_preflight_on_that_host_by_name() {
    let fleet = LocalFleet::bare(&["web1", "web2"]);
    let toml = "[app]\nname = \"shop\"\n[release]\nrequires.env = [\"DATABASE_URL\", \"GOOGLE_PROJECT_API_KEY\"]\nrequires.files = [\"shared/config/.env\"]\nenv_file = \"shared/config/.env\"\n";
    fleet.pack_with("v1", toml, |_| {});
    // web1 has both, one from the fleet file and one from its environment file;
    // web2 has the file but only one of the variables.
    fleet.configure_host("web1", "env = { DATABASE_URL = \"postgres://db1/shop\" }");
    fleet.configure_host("web2", "env = { DATABASE_URL = \"postgres://db2/shop\" }");
    for (host, content) in [
        ("web1", "GOOGLE_PROJECT_API_KEY=k1\n"),
        ("web2", "# no key here\n"),
    ] {
        let config = fleet.root(host).join("shared/config");
        fs::create_dir_all(&config).unwrap();
        fs::write(config.join(".env"), content).unwrap();
    }

    let check = fleet.ship(&["check", "v1"]).expect(1);
    assert!(check.row("web1").contains(" ok "), "{}", check.stdout);
    assert!(
        check
            .row("web2")
            .contains("preflight: GOOGLE_PROJECT_API_KEY is not set on web2"),
        "{}",
        check.stdout
    );
    // Without a release, ship.toml's requirements count (here: none).
    fleet.ship(&["check"]).expect(0);

    let deploy = fleet.ship(&["deploy", "v1", "--hosts", "*"]).expect(1);
    assert!(
        deploy
            .row("web2")
            .contains("preflight: GOOGLE_PROJECT_API_KEY is not set on web2"),
        "{}",
        deploy.stdout
    );
    assert_eq!(fleet.current("web1").as_deref(), Some("releases/v1"));
    assert_eq!(fleet.current("web2"), None);
    assert!(
        fleet.releases("web2").is_empty(),
        "nothing was sent to web2"
    );

    // A missing file is named too, and the agent says the same by hand.
    fs::remove_file(fleet.root("web2").join("shared/config/.env")).unwrap();
    let by_hand = common::run(
        Command::new(common::agent_binary())
            .args(["check", "--need-env", "GOOGLE_PROJECT_API_KEY"])
            .args(["--need-file", "shared/config/.env", "--root"])
            .arg(fleet.root("web2")),
    )
    .expect(1);
    assert!(
        by_hand.stderr.contains(
            "preflight failed: GOOGLE_PROJECT_API_KEY is not set; shared/config/.env is missing"
        ),
        "{}",
        by_hand.stderr
    );

    let no_room = common::run(
        Command::new(common::agent_binary())
            .args(["check", "--need-bytes", "1000000000000000000", "--root"])
            .arg(fleet.root("web2")),
    )
    .expect(1);
    assert!(
        no_room.stderr.contains("not enough disk space on ")
            && no_room.stderr.contains("the release needs "),
        "{}",
        no_room.stderr
    );

    // A held lock is a problem too (here held by flock(1), which does not say who).
    let busy = || {
        common::run(
            Command::new(common::agent_binary())
                .args(["check", "--root"])
                .arg(fleet.root("web1")),
        )
    };
    let holder = common::HeldLock::take(&fleet.root("web1"));
    let held = busy();
    drop(holder);
    let held = held.expect(1);
    assert!(
        held.stderr.contains("is busy: locked by"),
        "{}",
        held.stderr
    );
    busy().expect(0);

    // The fleet file can point a host at an environment file of its own.
    fs::write(
        fleet.root("web2").join("shared/web2.env"),
        "export GOOGLE_PROJECT_API_KEY='k2'\n",
    )
    .unwrap();
    fleet.configure_host("web2", "env_file = \"shared/web2.env\"");
    let check = fleet.ship(&["check", "v1", "--hosts", "web2"]).expect(1);
    assert!(
        check.row("web2").contains("shared/config/.env is missing"),
        "the release still requires its file:\n{}",
        check.stdout
    );
    fs::write(fleet.root("web2").join("shared/config/.env"), "").unwrap();
    fleet.ship(&["deploy", "v1", "--hosts", "web2"]).expect(0);
    assert_eq!(fleet.current("web2").as_deref(), Some("releases/v1"));
}

#[test]
fn a_server_that_reloads_on_hup_is_signalled_and_checked() {
    let (fleet, port) = fleet_with_port();
    let root = fleet.root("web1");
    let signal = "{ signal = \"HUP\", pidfile = \"shared/tmp/pids/web.pid\" }";
    fleet.pack_with("v1", "[app]\nname = \"shop\"\n", |_| {});
    fleet.ship(&["deploy", "v1", "--hosts", "web1"]).expect(0);
    // The server runs from `current`, as a service manager would start it.
    let mut server = Command::new(root.join("current/venv/bin/shop-web"))
        .env("SHOP_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Stop<'a>(&'a mut Child);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = server.id();
    let _stop = Stop(&mut server);
    let pids = root.join("shared/tmp/pids");
    fs::create_dir_all(&pids).unwrap();
    fs::write(pids.join("web.pid"), format!("{pid}\n")).unwrap();
    wait_until("the server answers", || health(port).is_some());

    for version in ["v2", "v3"] {
        let toml = shop_toml(signal, &format!("ok {version}"), "");
        fleet.pack_with(version, &toml, with_notify);
    }
    fleet.ship(&["deploy", "v2", "--hosts", "web1"]).expect(0);
    // Same process, new code: it re-exec'd through `current`.
    assert_eq!(health(port).as_deref(), Some("ok v2"));
    let running = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(running.contains("current/venv/bin/shop-web"), "{running}");
    fleet.ship(&["deploy", "v3", "--hosts", "web1"]).expect(0);
    assert_eq!(health(port).as_deref(), Some("ok v3"));
    fleet.ship(&["rollback", "--hosts", "web1"]).expect(0);
    assert_eq!(health(port).as_deref(), Some("ok v2"));
}

#[test]
fn a_revert_goes_back_even_when_the_old_release_would_fail_preflight_now() {
    let fleet = LocalFleet::bare(&["web1"]);
    let check = "[[service]]\nname = \"web\"\nhealth = { command = \"test -f public/ok\", timeout = \"1s\" }\n";
    let v1 =
        format!("[app]\nname = \"shop\"\n[release]\nrequires.files = [\"shared/flag\"]\n{check}");
    fleet.pack_with("v1", &v1, |tree| {
        fs::write(tree.join("public/ok"), "").unwrap()
    });
    fleet.pack_with("v2", &format!("[app]\nname = \"shop\"\n{check}"), |_| {});
    let flag = fleet.root("web1").join("shared/flag");
    fs::create_dir_all(flag.parent().unwrap()).unwrap();
    fs::write(&flag, "").unwrap();
    fleet.ship(&["deploy", "v1", "--hosts", "web1"]).expect(0);
    fs::remove_file(&flag).unwrap();

    let failed = fleet.ship(&["deploy", "v2", "--hosts", "web1"]).expect(1);
    assert!(
        failed.row("web1").contains("reverted to v1, healthy"),
        "{}",
        failed.stdout
    );
    assert_eq!(fleet.current("web1").as_deref(), Some("releases/v1"));
}

#[test]
fn a_revert_that_cannot_switch_back_says_so_and_names_the_current_release() {
    let fleet = LocalFleet::bare(&["web1"]);
    let check = "[[service]]\nname = \"web\"\nhealth = { command = \"test -f public/ok\", timeout = \"1s\" }\n";
    let v1 = format!("[app]\nname = \"shop\"\n[release]\nenv_file = \"shared/v1.env\"\n{check}");
    fleet.pack_with("v1", &v1, |tree| {
        fs::write(tree.join("public/ok"), "").unwrap()
    });
    fleet.pack_with("v2", &format!("[app]\nname = \"shop\"\n{check}"), |_| {});
    fleet.ship(&["deploy", "v1", "--hosts", "web1"]).expect(0);
    // v1's environment file is damaged after it went live.
    fs::write(fleet.root("web1").join("shared/v1.env"), "not a line\n").unwrap();

    let failed = fleet.ship(&["deploy", "v2", "--hosts", "web1"]).expect(1);
    let row = failed.row("web1");
    assert!(
        row.contains("could not switch back to v1 (")
            && row.contains("shared/v1.env:1: expected NAME=VALUE")
            && row.contains("; v2 stays current; the deploy's revert to v1 failed: rollback:"),
        "{}",
        failed.stdout
    );
    assert!(row.contains(" v1    v2 "), "FROM v1, TO v2: {row}");
    assert_eq!(fleet.current("web1").as_deref(), Some("releases/v2"));
}
