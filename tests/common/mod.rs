//! The test harness: the built binaries, fixture trees and helpers, so that each
//! test reads as a short scenario.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod skip;
pub mod store;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A port nothing listens on right now, on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `ship` binary under test.
pub fn ship() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ship"));
    cmd.env_remove("SOURCE_DATE_EPOCH")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "the program panicked:\n{}",
            self.stderr
        );
        self
    }

    /// The table row of `host` in stdout.
    #[track_caller]
    pub fn row(&self, host: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{host} ")))
            .unwrap_or_else(|| panic!("no row for {host} in:\n{}", self.stdout))
    }

    /// The stdout's single JSON line.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout))
    }
}

/// Runs a command to completion.
pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("command starts");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `cmd` to completion, calling `at_marker` with its pid once a line of its
/// stderr contains `marker` (to interrupt it, or to break something under it).
pub fn run_until(cmd: &mut Command, marker: &str, mut at_marker: impl FnMut(u32)) -> Run {
    use std::io::{BufRead, Read};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("command starts");
    // stdout is read on its own thread, so neither pipe can fill up and stall it.
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let mut stderr = String::new();
    let mut fired = false;
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if !fired && line.contains(marker) {
            fired = true;
            at_marker(child.id());
        }
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(fired, "never saw {marker:?} in:\n{stderr}");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr,
    }
}

/// Runs `ship` with `args` in `cwd`.
pub fn ship_in(cwd: &Path, args: &[&str]) -> Run {
    run(ship().current_dir(cwd).args(args))
}

/// Builds a tree of files under a directory.
pub struct Tree {
    pub root: PathBuf,
}

impl Tree {
    pub fn new(root: impl Into<PathBuf>) -> Tree {
        let root = root.into();
        fs::create_dir_all(&root).unwrap();
        Tree { root }
    }

    pub fn file(&self, rel: &str, content: impl AsRef<[u8]>) -> &Self {
        self.file_mode(rel, content, 0o644)
    }

    pub fn file_mode(&self, rel: &str, content: impl AsRef<[u8]>, mode: u32) -> &Self {
        let path = self.root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    pub fn dir(&self, rel: &str) -> &Self {
        fs::create_dir_all(self.root.join(rel)).unwrap();
        self
    }

    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        let path = self.root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
        self
    }

    pub fn path(&self) -> &str {
        self.root.to_str().unwrap()
    }
}

/// The example app shipped with the project (its source: `build_shop` makes the
/// release tree).
pub fn example_app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop")
}

/// What `scripts/test-deps` fetched (wheels, uv, npm's cache), fetching it on first
/// use in this process.
pub fn test_cache() -> PathBuf {
    static FETCHED: std::sync::Once = std::sync::Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = std::env::var_os("SHIP_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/test-cache"));
    FETCHED.call_once(|| {
        let status = Command::new(root.join("scripts/test-deps"))
            .env("SHIP_TEST_CACHE", &cache)
            .status()
            .expect("scripts/test-deps runs");
        assert!(status.success(), "scripts/test-deps failed");
    });
    cache
}

/// The uv binary the tests use.
pub fn uv() -> PathBuf {
    test_cache().join("uv/bin/uv")
}

/// A command running uv; see [`uv_env`].
pub fn uv_command() -> Command {
    let mut cmd = Command::new(uv());
    uv_env(&mut cmd);
    cmd
}

/// Makes the uv that `cmd` runs keep its cache inside the test cache, work offline
/// and never download an interpreter.
pub fn uv_env(cmd: &mut Command) -> &mut Command {
    cmd.env("UV_CACHE_DIR", test_cache().join("uv-cache"))
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("UV_OFFLINE", "1")
        .env("UV_NO_PROGRESS", "1")
}

/// Makes the example shop's release tree in `out` with `examples/shop/build`: its
/// files and a virtualenv (`python3 -m venv`) with the shop installed as a package
/// (by uv, for speed; the demo uses pip).
pub fn build_shop(out: &Path) {
    let output = uv_env(Command::new(example_app().join("build")).arg(out))
        .env("UV", uv())
        .output()
        .expect("examples/shop/build runs");
    assert!(
        output.status.success(),
        "examples/shop/build {} failed:\n{}",
        out.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The shop's web server module as installed in the virtualenv of the release tree
/// `tree` (to break it, say).
pub fn shop_module(tree: &Path) -> PathBuf {
    let lib = tree.join("venv/lib");
    let python = fs::read_dir(&lib)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("python")
        })
        .unwrap_or_else(|| panic!("no python* under {}", lib.display()));
    python.join("site-packages/shop/web.py")
}

/// A small app tree with a bit of everything.
pub fn sample_app(root: impl Into<PathBuf>) -> Tree {
    let tree = Tree::new(root);
    tree.file_mode("bin/server", "#!/bin/sh\necho serving\n", 0o755)
        .file("config/app.conf", "port = 8080\n")
        .file("public/index.html", "<h1>hello</h1>\n")
        .file("public/empty.txt", "")
        .dir("var/empty-dir")
        .symlink("bin/start", "server")
        .symlink("current-config", "config/app.conf");
    tree
}

/// Runs an external tool, failing the test with its output if it fails.
#[track_caller]
pub fn tool(program: &str, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unpacks `artifact` with GNU tar as release v1 of the app root `root`, and points
/// `root/current` at it, as a host would; returns the release directory.
pub fn unpack_with_tar(artifact: &Path, root: &Path) -> PathBuf {
    let release = root.join("releases/v1");
    fs::create_dir_all(&release).unwrap();
    tool(
        "tar",
        &[
            "--zstd",
            "-xf",
            artifact.to_str().unwrap(),
            "-C",
            release.to_str().unwrap(),
        ],
        root,
    );
    std::os::unix::fs::symlink("releases/v1", root.join("current")).unwrap();
    release
}

/// The interpreter that `python3` runs (what a virtualenv links to).
pub fn system_python() -> String {
    tool(
        "python3",
        &["-c", "import sys; print(sys.executable)"],
        Path::new("/"),
    )
    .trim()
    .to_owned()
}

/// A tmpfs mounted over a directory, unmounted when dropped (even when a test fails).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, options: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {} failed", dir.display());
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `len` bytes that zstd cannot compress (xorshift64, fixed seed).
pub fn incompressible(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A fleet of local hosts (the `local` transport) in a temporary directory, with
/// the example app packed as v1 and v2.
pub struct LocalFleet {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<String>,
}

impl LocalFleet {
    /// A fleet of `hosts` with the example app packed as v1, v2 and v3.
    pub fn new(hosts: &[&str]) -> LocalFleet {
        let fleet = LocalFleet::bare(hosts);
        for version in ["v1", "v2", "v3"] {
            fleet.pack(version);
        }
        fleet
    }

    /// A fleet of `hosts` with nothing packed yet.
    pub fn bare(hosts: &[&str]) -> LocalFleet {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = String::from("[app]\nname = \"shop\"\nroot = \"/unused\"\nkeep = 2\n");
        for host in hosts {
            toml.push_str(&format!(
                "[hosts.{host}]\ntransport = \"local\"\nroot = \"hosts/{host}\"\n"
            ));
        }
        toml.push_str("[groups]\nfirst = [\"");
        toml.push_str(hosts[0]);
        toml.push_str("\"]\n");
        fs::write(dir.path().join("ship.toml"), toml).unwrap();
        LocalFleet {
            dir,
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    /// Adds `lines` to the `[hosts.<host>]` table of the fleet file.
    pub fn configure_host(&self, host: &str, lines: &str) {
        let path = self.dir.path().join("ship.toml");
        let table = format!("[hosts.{host}]\n");
        let toml =
            fs::read_to_string(&path)
                .unwrap()
                .replacen(&table, &format!("{table}{lines}\n"), 1);
        fs::write(path, toml).unwrap();
    }

    /// Packs the example app as `version`, with a page naming the version, without
    /// its services (the tests of transfers and switches run no processes).
    pub fn pack(&self, version: &str) {
        self.pack_with(version, "[app]\nname = \"shop\"\n", |_| {});
    }

    /// Packs the example app as `version` with `ship_toml` as its config, after
    /// `change` has had its way with the release tree.
    pub fn pack_with(&self, version: &str, ship_toml: &str, change: impl FnOnce(&Path)) {
        let tree = self.dir.path().join(format!("build-{version}"));
        if tree.exists() {
            fs::remove_dir_all(&tree).unwrap();
        }
        build_shop(&tree);
        fs::write(tree.join("ship.toml"), ship_toml).unwrap();
        fs::write(tree.join("public/version.txt"), format!("{version}\n")).unwrap();
        change(&tree);
        ship_in(
            self.dir.path(),
            &["pack", tree.to_str().unwrap(), "--version", version],
        )
        .expect(0);
    }

    /// Runs `ship` in the fleet's directory (with this test's agent binary).
    pub fn ship(&self, args: &[&str]) -> Run {
        run(&mut self.command(args))
    }

    /// The `ship` command [`LocalFleet::ship`] runs, to adjust before running.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = ship();
        cmd.current_dir(self.dir.path())
            .env("SHIP_AGENT", agent_binary())
            .env("SHIP_USER", "tester")
            .args(args);
        cmd
    }

    pub fn root(&self, host: &str) -> PathBuf {
        self.dir.path().join("hosts").join(host)
    }

    /// Where `current` points on `host`.
    pub fn current(&self, host: &str) -> Option<String> {
        fs::read_link(self.root(host).join("current"))
            .ok()
            .map(|p| p.to_str().unwrap().to_owned())
    }

    /// What `ship status` says of release `version` on `host`.
    pub fn release_info(&self, host: &str, version: &str) -> serde_json::Value {
        let status = self.ship(&["status", "--hosts", host, "--json"]).expect(0);
        let releases = &events(&status, "status")[0]["status"]["releases"];
        releases
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["version"] == version)
            .unwrap_or_else(|| panic!("no {version} on {host}: {releases}"))
            .clone()
    }

    /// The releases on `host`.
    pub fn releases(&self, host: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root(host).join("releases"))
            .map(|items| {
                items
                    .map(|i| i.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// The `ship-agent` built with this workspace (`cargo test --workspace` builds it).
pub fn agent_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_ship")).with_file_name("ship-agent");
    assert!(
        path.is_file(),
        "{} is not built: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// Copies a directory tree (files, directories and symlinks).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for item in fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        let kind = item.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&item.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(item.path()).unwrap(), target).unwrap();
        } else {
            fs::copy(item.path(), target).unwrap();
        }
    }
}

/// The JSON events a run printed, with their `type`.
pub fn events(run: &Run, kind: &str) -> Vec<serde_json::Value> {
    run.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == kind)
        .map(|v| v["data"].clone())
        .collect()
}

/// A fleet of real sshd hosts on loopback, started with `scripts/fleet` and stopped
/// (by PID) when dropped, even when the test fails. Each fleet gets its own port,
/// so tests can run side by side.
pub struct SshFleet {
    pub dir: tempfile::TempDir,
    pub size: usize,
    pub port: u16,
}

impl SshFleet {
    /// Starts `size` hosts; `setenv` goes into every sshd_config as `SetEnv`.
    pub fn start(size: usize, setenv: Option<&str>) -> SshFleet {
        use std::sync::atomic::{AtomicU16, Ordering};
        static NEXT_PORT: AtomicU16 = AtomicU16::new(0);
        let port = 22300
            + (std::process::id() % 200) as u16 * 10
            + NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        let fleet = SshFleet { dir, size, port };
        let mut cmd = Command::new(fleet.script());
        cmd.args(["start", &size.to_string(), fleet.path()])
            .env("FLEET_PORT", port.to_string());
        if let Some(env) = setenv {
            cmd.env("FLEET_SETENV", env);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "scripts/fleet start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        fleet
    }

    fn script(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fleet")
    }

    pub fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    /// Runs `scripts/fleet <what> DIR <host>`.
    pub fn host_op(&self, what: &str, host: &str) {
        let out = Command::new(self.script())
            .args([what, self.path(), host])
            .env("FLEET_PORT", self.port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether SSH fleets can start here (root, for the mount namespaces, and sshd).
    pub fn can_run() -> bool {
        skip::runs_here(
            skip::is_root() && Path::new("/usr/sbin/sshd").exists(),
            "root and /usr/sbin/sshd (scripts/test installs it)",
        )
    }

    /// The example app packed as v1..v3 in a directory of its own, with this fleet's
    /// `[app] artifacts` pointing there.
    pub fn with_artifacts(&self) -> LocalFleet {
        let build = LocalFleet::new(&["unused"]);
        self.artifacts_in(&build.dir.path().join("dist"));
        build
    }

    /// The pid of the sshd listening for `host` (started by this fleet).
    pub fn listener(&self, host: &str) -> i32 {
        fs::read_to_string(self.dir.path().join("hosts").join(host).join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The per-connection sshd processes of `host`: children of its listener.
    pub fn sessions(&self, host: &str) -> Vec<i32> {
        let listener = self.listener(host).to_string();
        let mut children = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid …: comm may hold spaces, so split after the ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if ppid == Some(listener.as_str()) {
                children.push(pid);
            }
        }
        children
    }

    /// Drops every SSH connection open to `host` (its sshd keeps listening): the
    /// per-connection sshd processes are killed by pid.
    pub fn drop_connections(&self, host: &str) {
        for pid in self.sessions(host) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// The app root of `host`, as seen from outside its mount namespace.
    pub fn root(&self, host: &str) -> PathBuf {
        self.dir.path().join("hosts").join(host).join("srv/shop")
    }

    pub fn current(&self, host: &str) -> Option<String> {
        fs::read_link(self.root(host).join("current"))
            .ok()
            .map(|p| p.to_str().unwrap().to_owned())
    }

    pub fn hosts(&self) -> Vec<String> {
        (1..=self.size).map(|i| format!("h{i}")).collect()
    }

    /// The address `scripts/fleet` gives `host` (h1 is 127.0.0.11).
    pub fn address(&self, host: &str) -> String {
        let n: u8 = host.trim_start_matches('h').parse().unwrap();
        format!("127.0.0.{}", 10 + n)
    }

    /// Runs the shell command line `command` on `host` through the OpenSSH client,
    /// as root, with `stdin` on its standard input.
    pub fn ssh(&self, host: &str, command: &str, stdin: &[u8]) -> Run {
        use std::io::Write;
        let dir = self.dir.path();
        let mut child = Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                dir.join("known_hosts").display()
            ))
            .arg("-i")
            .arg(dir.join("id_ed25519"))
            .args(["-p", &self.port.to_string()])
            .arg(format!("root@{}", self.address(host)))
            .arg(command)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ssh runs (openssh-client)");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Points the fleet's `[app] artifacts` at `dir`.
    pub fn artifacts_in(&self, dir: &Path) {
        let path = self.dir.path().join("ship.toml");
        let toml = fs::read_to_string(&path).unwrap().replacen(
            "[app]\n",
            &format!("[app]\nartifacts = \"{}\"\n", dir.display()),
            1,
        );
        fs::write(path, toml).unwrap();
    }

    /// Runs `ship` against this fleet, from `cwd`.
    pub fn ship(&self, cwd: &Path, args: &[&str]) -> Run {
        run(&mut self.command(cwd, args))
    }

    /// The `ship` command [`SshFleet::ship`] runs, to adjust before running.
    pub fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut cmd = ship();
        cmd.current_dir(cwd)
            .env("SHIP_AGENT", agent_binary())
            .env("SHIP_USER", "tester")
            .env("SHIP_CONFIG", self.dir.path().join("ship.toml"))
            .env_remove("SSH_AUTH_SOCK")
            .args(args);
        cmd
    }
}

impl Drop for SshFleet {
    /// Stops the hosts, then kills whatever still runs in their mount namespaces
    /// (an agent a failed test left paused at a checkpoint, say), so that nothing
    /// this fleet started outlives it.
    fn drop(&mut self) {
        let namespaces: Vec<std::ffi::OsString> = self
            .hosts()
            .iter()
            .filter_map(|host| {
                let pid = fs::read_to_string(self.dir.path().join("hosts").join(host).join("pid"));
                fs::read_link(format!("/proc/{}/ns/mnt", pid.ok()?.trim()))
                    .ok()
                    .map(PathBuf::into_os_string)
            })
            .collect();
        let _ = Command::new(self.script())
            .args(["stop", self.path()])
            .status();
        if namespaces.is_empty() {
            return;
        }
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let inside = fs::read_link(entry.path().join("ns/mnt"))
                .is_ok_and(|ns| namespaces.contains(&ns.into_os_string()));
            if inside {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// An app root's lock held by `flock(1)` (which does not say who it is), in a
/// process group of its own: flock and its `sleep`, which inherits the lock, are
/// killed together when this is dropped, even when the test fails.
pub struct HeldLock(std::process::Child, PathBuf);

impl HeldLock {
    /// Takes the lock of the app root `root`; returns once the lock file is held.
    pub fn take(root: &Path) -> HeldLock {
        use std::os::unix::process::CommandExt;
        let child = Command::new("flock")
            .arg("-x")
            .arg(root.join(".ship/lock"))
            .args(["sleep", "60"])
            .process_group(0)
            .spawn()
            .unwrap();
        let probe = root.join(".ship/lock");
        let held = HeldLock(child, probe.clone());
        wait_until("flock holds the lock", || {
            !Command::new("flock")
                .args(["-n", "-x"])
                .arg(&probe)
                .arg("true")
                .status()
                .unwrap()
                .success()
        });
        held
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
        // `sleep`, not our child, may outlive flock for a moment, holding the lock.
        for _ in 0..500 {
            let free = Command::new("flock")
                .args(["-n", "-x"])
                .arg(&self.1)
                .arg("true")
                .status()
                .is_ok_and(|s| s.success());
            if free {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Waits (up to 30 s) until `ready` holds.
#[track_caller]
pub fn wait_until(what: &str, ready: impl Fn() -> bool) {
    for _ in 0..1500 {
        if ready() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("gave up waiting until {what}");
}
