//! Harness for the agent's end-to-end tests: the real `ship-agent` binary, artifacts
//! packed by the real packager, hand-made hostile artifacts, and the host
//! invariants every test checks.

#![allow(dead_code)] // each test binary uses a different part of the harness

#[path = "../../../tests/common/skip.rs"]
pub mod skip;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use manifests::{AppName, Version};

/// The `ship-agent` binary under test, with a clean environment.
pub fn agent() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ship-agent"));
    cmd.env_remove("SHIP_AGENT_PAUSE_AT")
        .env_remove("SHIP_ROOT")
        .env("SHIP_USER", "tester");
    cmd
}

/// A finished command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }

    /// The `data` of the last JSON event of the given type.
    pub fn event(&self, kind: &str) -> serde_json::Value {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .rfind(|v| v["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event in:\n{}", self.stdout))["data"]
            .clone()
    }
}

/// Runs the agent with `args`, feeding `stdin` (nothing when `None`).
pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Run {
    run_with(agent().args(args), stdin)
}

pub fn run_with(cmd: &mut Command, stdin: Option<&[u8]>) -> Run {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("ship-agent starts");
    if let Some(bytes) = stdin {
        let mut input = child.stdin.take().unwrap();
        // The agent may stop reading early (a refused artifact): that is fine.
        let _ = input.write_all(bytes);
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An app root in a temporary directory.
pub struct Host {
    pub dir: tempfile::TempDir,
}

impl Host {
    pub fn new() -> Host {
        Host {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("app")
    }

    pub fn root_str(&self) -> String {
        self.root().to_str().unwrap().to_owned()
    }

    /// Runs an agent command on this root: `cmd` then `--root ROOT` then `rest`.
    pub fn agent(&self, cmd: &str, rest: &[&str], stdin: Option<&[u8]>) -> Run {
        let root = self.root_str();
        let mut args = vec!["--json", cmd, "--root", root.as_str()];
        args.extend_from_slice(rest);
        run(&args, stdin)
    }

    pub fn receive(&self, artifact: &[u8]) -> Run {
        self.agent("receive", &[], Some(artifact))
    }

    /// Where `current` points, as `releases/<v>`.
    pub fn current(&self) -> Option<String> {
        fs::read_link(self.root().join("current"))
            .ok()
            .map(|p| p.to_str().unwrap().to_owned())
    }

    /// The names under `releases/`.
    pub fn releases(&self) -> Vec<String> {
        names(&self.root().join("releases"))
    }

    /// The names under `.ship/incoming/`.
    pub fn incoming(&self) -> Vec<String> {
        names(&self.root().join(".ship/incoming"))
    }

    /// The journal's records, parsed (a torn last line is skipped, as the agent does).
    pub fn journal(&self) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(self.root().join(".ship/journal.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// What must hold after any operation, even one killed half-way:
    /// `current` (if present) resolves to a release that verifies; every directory
    /// under `releases/` is a complete release that verifies; the journal reads; the
    /// lock is free.
    #[track_caller]
    pub fn check_invariants(&self) {
        if let Some(current) = self.current() {
            let target = self.root().join(&current);
            assert!(
                target.join(".ship/manifest.json").is_file(),
                "current -> {current} is not a complete release"
            );
            self.agent("verify", &[], None).expect(0);
        }
        for release in self.releases() {
            assert!(
                self.root()
                    .join("releases")
                    .join(&release)
                    .join(".ship/manifest.json")
                    .is_file(),
                "releases/{release} is incomplete"
            );
            self.agent("verify", &[&release], None).expect(0);
        }
        let history = self.agent("history", &[], None).expect(0);
        assert_eq!(
            history.event("done")["records"].as_u64().unwrap() as usize,
            self.journal().len()
        );
        let status = self.agent("status", &[], None).expect(0);
        assert!(
            status.event("done")["lock"].is_null(),
            "the lock is still held"
        );
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|items| {
            items
                .map(|i| i.unwrap().file_name().to_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Packs a small app tree whose content depends on `version`, returning the
/// artifact's bytes and its sha256.
pub fn artifact(version: &str) -> (Vec<u8>, String) {
    artifact_with(version, |_| {})
}

/// Like [`artifact`], with `extra` adding to the tree before packing.
pub fn artifact_with(version: &str, extra: impl FnOnce(&Path)) -> (Vec<u8>, String) {
    pack(version, extra, Default::default())
}

/// Like [`artifact`], whose manifest carries `behaviour` (services, hooks, …).
pub fn artifact_behaving(
    version: &str,
    behaviour: manifests::behaviour::Behaviour,
) -> (Vec<u8>, String) {
    pack(version, |_| {}, behaviour)
}

fn pack(
    version: &str,
    extra: impl FnOnce(&Path),
    behaviour: manifests::behaviour::Behaviour,
) -> (Vec<u8>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::create_dir_all(tree.join("public")).unwrap();
    fs::write(tree.join("bin/server"), "#!/bin/sh\nexec sleep 1000\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(tree.join("bin/server"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        tree.join("public/index.html"),
        format!("<h1>{version}</h1>\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink("bin/server", tree.join("run")).unwrap();
    extra(&tree);
    let options = packager::PackOptions {
        dir: tree,
        name: "shop".parse::<AppName>().unwrap(),
        version: version.parse::<Version>().unwrap(),
        out_dir: tmp.path().join("dist"),
        level: 3,
        mtime: 0,
        strict: false,
        threads: 1,
        behaviour,
        prehash: false,
    };
    let packed = packager::pack(&options, &()).unwrap();
    (
        fs::read(&packed.artifact).unwrap(),
        packed.digest.to_string(),
    )
}

/// An agent started in the background, paused at a checkpoint, to be killed.
pub struct Paused {
    pub child: Child,
}

impl Paused {
    /// Starts `ship-agent --json <cmd> --root ROOT <rest>` with `SHIP_AGENT_PAUSE_AT=point`
    /// and waits until it says it paused there.
    pub fn start(
        host: &Host,
        point: &str,
        cmd: &str,
        rest: &[&str],
        stdin: Option<&[u8]>,
    ) -> Paused {
        let root = host.root_str();
        let mut child = agent()
            .env("SHIP_AGENT_PAUSE_AT", point)
            .args(["--json", cmd, "--root", root.as_str()])
            .args(rest)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(bytes) = stdin {
            let mut input = child.stdin.take().unwrap();
            input.write_all(bytes).unwrap();
        }
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let status = child.wait().unwrap();
                panic!("the agent exited ({status}) before pausing at {point}");
            }
            if line.trim() == format!("paused at {point}") {
                break;
            }
        }
        Paused { child }
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
