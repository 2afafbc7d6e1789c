//! Releases that really relocate, end to end: virtualenvs made by `python3 -m venv`
//! (symlinks, as by default) and by `uv venv`, with real packages from PyPI (fetched
//! once by `scripts/test-deps`), and a Node tree with `node_modules/.bin` links —
//! each built in one directory, packed, deployed to hosts whose app root is
//! elsewhere, over SSH to real sshd hosts on loopback, and the build directory
//! deleted. On the host, through `current/`, the scripts, the interpreter, the
//! packages and the activation scripts work; a rollback runs the older release's
//! own scripts. And a release whose symlinks need a host path no host has is
//! refused on every host before any switches.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{LocalFleet, Run, SshFleet, run, ship_in, test_cache, tool, uv_command};
use serde_json::{Value, json};

fn can_run_ssh() -> bool {
    common::skip::runs_here(
        common::skip::is_root() && Path::new("/usr/sbin/sshd").exists(),
        "root and /usr/sbin/sshd (scripts/test installs it)",
    )
}

/// Whether `program` is on the PATH (the shells of the activation scripts).
fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The source of a package whose console script `tool` prints, as JSON, the
/// package's version, its arguments, its stdin and the prefix it runs in. It builds
/// with the example shop's backend: no network.
fn tool_package(dir: &Path, version: &str) -> PathBuf {
    let src = dir.join(format!("tool-{version}"));
    fs::create_dir_all(src.join("src/tool")).unwrap();
    fs::create_dir_all(src.join("packaging")).unwrap();
    fs::copy(
        common::example_app().join("packaging/shop_build.py"),
        src.join("packaging/shop_build.py"),
    )
    .unwrap();
    fs::write(
        src.join("pyproject.toml"),
        "[build-system]\nrequires = []\nbuild-backend = \"shop_build\"\nbackend-path = [\"packaging\"]\n\
         [project]\nname = \"tool\"\nversion = \"1.0\"\n[project.scripts]\ntool = \"tool:main\"\n",
    )
    .unwrap();
    fs::write(
        src.join("src/tool/__init__.py"),
        format!(
            "import json, sys\n\n\ndef main():\n    print(json.dumps({{\"version\": \"{version}\", \"argv\": sys.argv[1:], \"stdin\": sys.stdin.read(), \"prefix\": sys.prefix}}))\n"
        ),
    )
    .unwrap();
    src
}

/// Packs `app` as shop `version` into `dist`; returns the `packed` event's data.
fn pack(app: &Path, dist: &Path, version: &str) -> Value {
    let out = run(common::ship().args([
        "pack",
        app.to_str().unwrap(),
        "--name",
        "shop",
        "--version",
        version,
        "--out",
        dist.to_str().unwrap(),
        "--json",
    ]))
    .expect(0);
    out.json()["data"].clone()
}

/// Asserts that a pack rewrote (at least) `paths`.
#[track_caller]
fn assert_rewrote(packed: &Value, paths: &[&str]) {
    let rewritten: Vec<&str> = packed["rewrites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    for path in paths {
        assert!(rewritten.contains(path), "{path} in {rewritten:?}");
    }
}

/// A build directory for an app (`<tmp>/build/app`) and where its artifacts go.
fn build_dirs(tmp: &Path) -> (PathBuf, PathBuf) {
    (tmp.join("build/app"), tmp.join("dist"))
}

/// `bin/tool` of the app: a relative link to its virtualenv's console script.
fn link_tool(app: &Path) {
    fs::create_dir_all(app.join("bin")).unwrap();
    std::os::unix::fs::symlink("../venv/bin/tool", app.join("bin/tool")).unwrap();
}

/// Starts a one-host SSH fleet and deploys shop v1 from `dist` to it.
fn deployed(dist: &Path, cwd: &Path) -> SshFleet {
    let fleet = SshFleet::start(1, None);
    fleet.artifacts_in(dist);
    let deploy = fleet
        .ship(cwd, &["deploy", "v1", "--hosts", "h1"])
        .expect(0);
    assert!(
        deploy.stderr.contains("deployed shop v1 on 1 of 1 host(s)"),
        "{}",
        deploy.stderr
    );
    fleet
}

/// Runs `command` on `host` over SSH, failing the test with its output if it fails.
#[track_caller]
fn on_host(fleet: &SshFleet, host: &str, command: &str, stdin: &[u8]) -> String {
    let out: Run = fleet.ssh(host, command, stdin);
    assert_eq!(
        out.code, 0,
        "`{command}` failed on {host}:\n{}\n{}",
        out.stdout, out.stderr
    );
    out.stdout
}

/// What the `tool` console script printed when run on `host` by `command`.
#[track_caller]
fn tool_run(fleet: &SshFleet, host: &str, command: &str, stdin: &[u8]) -> Value {
    let out = on_host(fleet, host, command, stdin);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Checks, on `host`, that the virtualenv of the release `version` works through
/// `current/`: console scripts (by absolute path, through `releases/<v>`, relative,
/// from `$PATH`, through a symlink of the release), with arguments and stdin; the
/// interpreter with the compiled packages; and the activation scripts of every
/// shell installed here.
fn check_venv(fleet: &SshFleet, host: &str, version: &str, with_numpy: bool) {
    let release = format!("/srv/shop/releases/{version}");
    let venv = format!("{release}/venv");
    let run = |command: &str| tool_run(fleet, host, command, b"");
    let piped = tool_run(
        fleet,
        host,
        "/srv/shop/current/venv/bin/tool 'a b' \"c'd\" --flag",
        b"line one\nline two\n",
    );
    assert_eq!(
        piped,
        json!({"version": version, "argv": ["a b", "c'd", "--flag"], "stdin": "line one\nline two\n", "prefix": venv})
    );
    for command in [
        format!("{release}/venv/bin/tool x"),
        "cd /srv/shop/current/venv/bin && ./tool x".to_owned(),
        "PATH=/srv/shop/current/venv/bin:$PATH tool x".to_owned(),
        "cd /tmp && /srv/shop/current/bin/tool x".to_owned(),
    ] {
        let out = run(&command);
        assert_eq!(
            (&out["version"], &out["argv"], &out["prefix"]),
            (&json!(version), &json!(["x"]), &json!(venv)),
            "{command}"
        );
    }
    let gunicorn = on_host(
        fleet,
        host,
        "/srv/shop/current/venv/bin/gunicorn --version",
        b"",
    );
    assert!(gunicorn.contains("gunicorn (version 27.0.1)"), "{gunicorn}");
    let imports = if with_numpy {
        "import markupsafe._speedups, numpy; print(numpy.__version__, numpy.__file__)"
    } else {
        "import markupsafe._speedups; print(markupsafe.__file__)"
    };
    let imported = on_host(
        fleet,
        host,
        &format!("/srv/shop/current/venv/bin/python -c '{imports}'"),
        b"",
    );
    assert!(
        imported.contains("/srv/shop/current/venv/lib/python"),
        "{imported}"
    );
    if with_numpy {
        assert!(imported.starts_with("2.4.6 "), "{imported}");
    }
    // Activation puts the release's own bin/ first on PATH, whichever shell sources it.
    let bin = format!("{venv}/bin");
    let mut shells = vec![
        (
            "bash",
            "bash -c '. /srv/shop/current/venv/bin/activate && echo \"$VIRTUAL_ENV\" && command -v python'",
        ),
        (
            "dash",
            "dash -c '. /srv/shop/current/venv/bin/activate && echo \"$VIRTUAL_ENV\" && command -v python'",
        ),
    ];
    for (shell, command) in [
        (
            "fish",
            "fish -c 'source /srv/shop/current/venv/bin/activate.fish; echo $VIRTUAL_ENV; command -v python'",
        ),
        (
            "tcsh",
            "tcsh -c 'set prompt = \"\"; source /srv/shop/current/venv/bin/activate.csh; echo $VIRTUAL_ENV; which python'",
        ),
    ] {
        if common::skip::runs_here(
            installed(shell),
            &format!("{shell}, to source its activation script (scripts/test installs it)"),
        ) {
            shells.push((shell, command));
        }
    }
    for (shell, command) in shells {
        let out = on_host(fleet, host, command, b"");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [venv.as_str(), format!("{bin}/python").as_str()],
            "{shell}"
        );
    }
}

#[test]
fn a_default_venv_runs_from_current_over_ssh_after_the_build_directory_is_gone() {
    if !can_run_ssh() {
        return;
    }
    let wheels = test_cache().join("wheels");
    let tmp = tempfile::tempdir().unwrap();
    let (app, dist) = build_dirs(tmp.path());
    tool(
        "python3",
        &["-m", "venv", app.join("venv").to_str().unwrap()],
        tmp.path(),
    );
    assert!(
        fs::symlink_metadata(app.join("venv/bin/python3"))
            .unwrap()
            .is_symlink(),
        "a default venv links its interpreter"
    );
    let pip = |packages: &[&str]| {
        let mut args = vec![
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--find-links",
            wheels.to_str().unwrap(),
        ];
        args.extend_from_slice(packages);
        tool(
            app.join("venv/bin/pip").to_str().unwrap(),
            &args,
            tmp.path(),
        );
    };
    pip(&["gunicorn", "numpy", "markupsafe"]);
    link_tool(&app);
    for version in ["v1", "v2"] {
        // v2 is the same build directory with the tool upgraded, as a CI job's
        // workspace would be.
        let package = tool_package(tmp.path(), version);
        pip(&["--force-reinstall", "--no-deps", package.to_str().unwrap()]);
        let packed = pack(&app, &dist, version);
        assert_eq!(packed["relocatability"], json!([]), "{packed}");
        assert_rewrote(
            &packed,
            &[
                "venv/bin/activate",
                "venv/bin/activate.csh",
                "venv/bin/activate.fish",
                "venv/bin/gunicorn",
                "venv/bin/pip",
                "venv/bin/tool",
                "venv/pyvenv.cfg",
            ],
        );
        let bytecode = packed["rewrites"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "bytecode")
            .count();
        assert!(bytecode > 500, "{bytecode} compiled files retimed");
        assert_eq!(
            packed["host_requirements"],
            json!([{"link": "venv/bin/python3", "target": common::system_python()}])
        );
    }
    fs::remove_dir_all(tmp.path().join("build")).unwrap();

    let fleet = deployed(&dist, tmp.path());
    check_venv(&fleet, "h1", "v1", true);
    let pip = on_host(
        &fleet,
        "h1",
        "/srv/shop/current/venv/bin/pip --version",
        b"",
    );
    assert!(
        pip.starts_with("pip ") && pip.contains("from /srv/shop/releases/v1/venv/lib/python"),
        "{pip}"
    );
    // Python found its compiled files up to date: it wrote nothing into the release.
    let verified = on_host(
        &fleet,
        "h1",
        "env -u PYTHONDONTWRITEBYTECODE /srv/shop/current/venv/bin/python -c 'import numpy, gunicorn.app.wsgiapp' \
         && /srv/shop/.ship/bin/ship-agent verify --root /srv/shop 2>&1",
        b"",
    );
    assert!(
        verified.contains("v1: every entry matches its manifest"),
        "{verified}"
    );

    // The second release runs its own scripts; the first, still on disk, its own.
    fleet
        .ship(tmp.path(), &["deploy", "v2", "--hosts", "h1"])
        .expect(0);
    check_venv(&fleet, "h1", "v2", true);
    let older = tool_run(&fleet, "h1", "/srv/shop/releases/v1/venv/bin/tool", b"");
    assert_eq!(
        (&older["version"], &older["prefix"]),
        (&json!("v1"), &json!("/srv/shop/releases/v1/venv"))
    );
    // After a rollback, `current` runs v1 again: nothing of v2 leaks into it.
    fleet
        .ship(tmp.path(), &["rollback", "--hosts", "h1"])
        .expect(0);
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v1"));
    check_venv(&fleet, "h1", "v1", true);
}

#[test]
fn a_uv_venv_runs_from_current_over_ssh_after_the_build_directory_is_gone() {
    if !can_run_ssh() {
        return;
    }
    let wheels = test_cache().join("wheels");
    let tmp = tempfile::tempdir().unwrap();
    let (app, dist) = build_dirs(tmp.path());
    let venv = app.join("venv");
    let status = uv_command()
        .args(["venv", "--quiet", "--python", &common::system_python()])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(status.success(), "uv venv failed");
    let package = tool_package(tmp.path(), "v1");
    let status = uv_command()
        .args(["pip", "install", "--quiet", "--no-index", "--find-links"])
        .arg(&wheels)
        .arg("--python")
        .arg(venv.join("bin/python"))
        .args(["gunicorn", "markupsafe"])
        .arg(&package)
        .status()
        .unwrap();
    assert!(status.success(), "uv pip install failed");
    fs::create_dir_all(app.join("bin")).unwrap();
    std::os::unix::fs::symlink("../venv/bin/tool", app.join("bin/tool")).unwrap();
    let packed = pack(&app, &dist, "v1");
    assert_rewrote(
        &packed,
        &[
            "venv/bin/activate",
            "venv/bin/activate.csh",
            "venv/bin/activate.fish",
            "venv/bin/gunicorn",
            "venv/bin/tool",
        ],
    );
    // uv's interpreter link is bin/python; nushell's and Windows' activation
    // scripts cannot find their directory the same way, and are reported.
    assert_eq!(
        packed["host_requirements"],
        json!([{"link": "venv/bin/python", "target": common::system_python()}])
    );
    let reported: Vec<&str> = packed["relocatability"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(reported, ["venv/bin/activate.bat", "venv/bin/activate.nu"]);
    fs::remove_dir_all(tmp.path().join("build")).unwrap();

    let fleet = deployed(&dist, tmp.path());
    check_venv(&fleet, "h1", "v1", false);
}

#[test]
fn a_node_tree_with_bin_links_runs_from_current() {
    if !common::skip::runs_here(
        installed("npm") && installed("node"),
        "node and npm (scripts/test installs them)",
    ) {
        return;
    }
    let cache = test_cache().join("npm");
    let fleet = LocalFleet::bare(&["web1"]);
    let app = fleet.dir.path().join("build/app");
    fs::create_dir_all(&app).unwrap();
    let out = run(Command::new("npm")
        .args([
            "install",
            "--offline",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .arg("--cache")
        .arg(&cache)
        .arg("--prefix")
        .arg(&app)
        .arg("semver@7.8.6"));
    assert_eq!(out.code, 0, "npm install failed:\n{}", out.stderr);
    assert_eq!(
        fs::read_link(app.join("node_modules/.bin/semver")).unwrap(),
        Path::new("../semver/bin/semver.js")
    );
    ship_in(
        fleet.dir.path(),
        &[
            "pack",
            "build/app",
            "--name",
            "shop",
            "--version",
            "v1",
            "--strict",
        ],
    )
    .expect(0);
    fs::remove_dir_all(fleet.dir.path().join("build")).unwrap();
    fleet.ship(&["deploy", "v1", "--hosts", "web1"]).expect(0);
    let bin = fleet.root("web1").join("current/node_modules/.bin/semver");
    let out = run(Command::new(&bin)
        .args(["--increment", "minor", "1.2.3"])
        .current_dir("/"));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "1.3.0\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_release_needing_a_host_path_no_host_has_is_refused_everywhere_before_any_switch() {
    let fleet = LocalFleet::bare(&["web1", "web2", "web3"]);
    fleet.pack("v1");
    fleet.ship(&["deploy", "v1", "--hosts", "*"]).expect(0);
    fleet.pack_with("v2", "[app]\nname = \"shop\"\n", |tree| {
        let python = tree.join("venv/bin/python3");
        fs::remove_file(&python).unwrap();
        std::os::unix::fs::symlink("/usr/bin/python3.99", &python).unwrap();
    });
    let inspect = fleet
        .ship(&["inspect", "dist/shop-v2.tar.zst"])
        .expect(0)
        .stdout;
    assert!(
        inspect.contains("host needs   /usr/bin/python3.99 (for venv/bin/python3)"),
        "{inspect}"
    );

    let deploy = fleet.ship(&["deploy", "v2", "--hosts", "*"]).expect(1);
    for host in ["web1", "web2", "web3"] {
        let row = deploy.row(host);
        assert!(
            row.contains(&format!(
                "preflight: {host} lacks /usr/bin/python3.99, which venv/bin/python3 needs"
            )),
            "{row}"
        );
        assert_eq!(
            fleet.current(host).as_deref(),
            Some("releases/v1"),
            "{host}"
        );
        // Refused before the transfer: the release never reached the host.
        assert_eq!(fleet.releases(host), ["v1"], "{host}");
    }
    let check = fleet.ship(&["check", "v2", "--hosts", "*"]).expect(1);
    assert!(
        check
            .row("web2")
            .contains("web2 lacks /usr/bin/python3.99, which venv/bin/python3 needs"),
        "{}",
        check.stdout
    );
    let plan = fleet
        .ship(&["deploy", "v2", "--hosts", "*", "--plan"])
        .expect(1);
    assert!(
        plan.row("web3")
            .contains("web3 lacks /usr/bin/python3.99, which venv/bin/python3 needs"),
        "{}",
        plan.stdout
    );
    // A release that is here, with a path its host lacks, does not go live either.
    let receive = run(Command::new(common::agent_binary())
        .args(["receive", "--root"])
        .arg(fleet.root("web1"))
        .stdin(fs::File::open(fleet.dir.path().join("dist/shop-v2.tar.zst")).unwrap()));
    assert_eq!(receive.code, 0, "{}", receive.stderr);
    let activate = run(Command::new(common::agent_binary())
        .env("SHIP_HOST", "web1")
        .args(["activate", "v2", "--root"])
        .arg(fleet.root("web1")));
    assert_eq!(activate.code, 1, "{}", activate.stderr);
    assert!(
        activate.stderr.contains(
            "preflight failed for v2: web1 lacks /usr/bin/python3.99, which venv/bin/python3 needs"
        ),
        "{}",
        activate.stderr
    );
    assert_eq!(fleet.current("web1").as_deref(), Some("releases/v1"));
}

#[test]
fn the_activation_scripts_of_every_python_here_find_their_virtualenv() {
    // venv quotes the path in its scripts (pyenv's 3.11.7), or leaves a plain path
    // bare (shlex.quote, since 3.11.11 and in Debian's 3.11.2): both are rewritten.
    let mut pythons = vec![common::system_python()];
    if Path::new("/usr/bin/python3").exists() {
        pythons.push("/usr/bin/python3".to_owned());
    }
    for python in pythons {
        let tmp = tempfile::tempdir().unwrap();
        let (app, dist) = build_dirs(tmp.path());
        tool(
            &python,
            &[
                "-m",
                "venv",
                "--without-pip",
                app.join("venv").to_str().unwrap(),
            ],
            tmp.path(),
        );
        let packed = pack(&app, &dist, "v1");
        assert_eq!(packed["relocatability"], json!([]), "{python}: {packed}");
        assert_rewrote(
            &packed,
            &[
                "venv/bin/activate",
                "venv/bin/activate.csh",
                "venv/bin/activate.fish",
                "venv/pyvenv.cfg",
            ],
        );
        fs::remove_dir_all(tmp.path().join("build")).unwrap();
        let release =
            common::unpack_with_tar(&dist.join("shop-v1.tar.zst"), &tmp.path().join("elsewhere"));
        let current = tmp.path().join("elsewhere/current/venv/bin");
        let current = current.to_str().unwrap();
        let venv = release.join("venv");
        for (shell, script) in [
            (
                "bash",
                format!(". {current}/activate && echo \"$VIRTUAL_ENV\""),
            ),
            (
                "dash",
                format!(". {current}/activate && echo \"$VIRTUAL_ENV\""),
            ),
            (
                "fish",
                format!("source {current}/activate.fish; echo $VIRTUAL_ENV"),
            ),
            (
                "tcsh",
                format!("set prompt = \"\"; source {current}/activate.csh; echo $VIRTUAL_ENV"),
            ),
        ] {
            if !common::skip::runs_here(
                installed(shell),
                &format!("{shell}, to source its activation script"),
            ) {
                continue;
            }
            let out = run(Command::new(shell).args(["-c", &script]).current_dir("/"));
            assert_eq!(
                out.stdout.trim(),
                venv.to_str().unwrap(),
                "{python}, {shell}: {}",
                out.stderr
            );
        }
    }
}
