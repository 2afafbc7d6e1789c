//! `ship pack`, `ship inspect` and `ship verify` end to end, checked with the real
//! GNU tar, zstd and sha256sum.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{Tree, run, sample_app, ship, ship_in, tool};

fn pack_json(cwd: &Path, dir: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["pack", dir, "--name", "shop", "--version", "v1", "--json"];
    args.extend_from_slice(extra);
    let event = ship_in(cwd, &args).expect(0).json();
    assert_eq!(event["type"], "packed");
    event["data"].clone()
}

#[test]
fn pack_writes_artifact_and_sidecar_and_prints_the_digest() {
    let tmp = tempfile::tempdir().unwrap();
    sample_app(tmp.path().join("build"));
    let out = ship_in(
        tmp.path(),
        &["pack", "build", "--name", "shop", "--version", "v1"],
    )
    .expect(0);
    let artifact = tmp.path().join("dist/shop-v1.tar.zst");
    assert!(artifact.is_file());
    // Readable by everyone (deploy users, web servers), like any build output.
    for file in ["dist/shop-v1.tar.zst", "dist/shop-v1.tar.zst.sha256"] {
        let mode = fs::metadata(tmp.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{file}");
    }
    let sidecar = fs::read_to_string(tmp.path().join("dist/shop-v1.tar.zst.sha256")).unwrap();
    let digest = sidecar.split_whitespace().next().unwrap();
    assert_eq!(sidecar, format!("{digest}  shop-v1.tar.zst\n"));
    assert_eq!(out.stdout, format!("{digest}  dist/shop-v1.tar.zst\n"));
    assert!(
        out.stderr.contains("packed shop v1: 11 entries"),
        "{}",
        out.stderr
    );
    // The sidecar is in `sha256sum -c` format.
    let check = tool(
        "sha256sum",
        &["-c", "shop-v1.tar.zst.sha256"],
        &tmp.path().join("dist"),
    );
    assert_eq!(check, "shop-v1.tar.zst: OK\n");
}

#[test]
fn manifest_records_every_entry_sorted_with_normalised_modes() {
    let tmp = tempfile::tempdir().unwrap();
    sample_app(tmp.path().join("build"));
    pack_json(tmp.path(), "build", &[]);
    let manifest = ship_in(tmp.path(), &["inspect", "dist/shop-v1.tar.zst", "--json"])
        .expect(0)
        .json();
    assert_eq!(manifest["format"], 1);
    assert_eq!(manifest["name"], "shop");
    assert_eq!(manifest["version"], "v1");
    assert_eq!(manifest["created"], "1970-01-01T00:00:00Z");
    assert_eq!(manifest["compression"]["level"], 3);
    assert!(
        manifest["compression"]["zstd_version"]
            .as_str()
            .unwrap()
            .starts_with("1.")
    );
    let entries: Vec<(String, String, String)> = manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
                e["mode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("bin", "dir", "0755"),
        ("bin/server", "file", "0755"),
        ("bin/start", "symlink", "0777"),
        ("config", "dir", "0755"),
        ("config/app.conf", "file", "0644"),
        ("current-config", "symlink", "0777"),
        ("public", "dir", "0755"),
        ("public/empty.txt", "file", "0644"),
        ("public/index.html", "file", "0644"),
        ("var", "dir", "0755"),
        ("var/empty-dir", "dir", "0755"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(p, k, m)| (p.to_string(), k.to_string(), m.to_string()))
        .collect();
    assert_eq!(entries, expected);
    assert_eq!(manifest["entry_count"], 11);
    assert_eq!(manifest["unpacked_size"], 23 + 12 + 15);
    assert_eq!(manifest["entries"][2]["target"], "server");
}

#[test]
fn gnu_tar_extracts_what_the_manifest_describes() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = sample_app(tmp.path().join("build"));
    // A path and a symlink target longer than ustar's 100 bytes need PAX headers.
    let deep = format!(
        "{}/file.txt",
        "deep-directory-name"
            .repeat(4)
            .as_str()
            .replace("name", "name/")
    );
    let deep = deep.replace("//", "/");
    tree.file(&deep, "deep content\n");
    let long_target = format!("../{}", "x".repeat(120));
    tree.symlink("public/long-link", &long_target);
    pack_json(tmp.path(), "build", &[]);
    let manifest = ship_in(tmp.path(), &["inspect", "dist/shop-v1.tar.zst", "--json"])
        .expect(0)
        .json();

    for (label, extract) in [
        (
            "tar --zstd",
            "mkdir -p x && tar --zstd -xf dist/shop-v1.tar.zst -C x",
        ),
        (
            "zstd -dc | tar",
            "mkdir -p y && zstd -dc dist/shop-v1.tar.zst | tar -xf - -C y",
        ),
    ] {
        tool("sh", &["-c", extract], tmp.path());
        let dir = tmp
            .path()
            .join(if label == "tar --zstd" { "x" } else { "y" });
        // The manifest is the artifact's first entry and is itself extracted.
        let extracted_manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(".ship/manifest.json")).unwrap()).unwrap();
        assert_eq!(extracted_manifest, manifest);
        let mut files = 0;
        for entry in manifest["entries"].as_array().unwrap() {
            let rel = entry["path"].as_str().unwrap();
            let path = dir.join(rel);
            let meta =
                fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{label}: {rel}: {e}"));
            match entry["kind"].as_str().unwrap() {
                "file" => {
                    files += 1;
                    let sum = tool("sha256sum", &[rel], &dir);
                    assert_eq!(
                        sum.split_whitespace().next(),
                        entry["sha256"].as_str(),
                        "{label}: {rel}"
                    );
                    let mode = format!("{:04o}", meta.permissions().mode() & 0o7777);
                    assert_eq!(mode, entry["mode"].as_str().unwrap(), "{label}: {rel}");
                }
                "dir" => assert!(meta.is_dir(), "{label}: {rel}"),
                "symlink" => assert_eq!(
                    fs::read_link(&path).unwrap().to_str(),
                    entry["target"].as_str(),
                    "{label}: {rel}"
                ),
                other => panic!("unexpected kind {other}"),
            }
        }
        assert_eq!(files, 5);
        assert_eq!(
            fs::read_link(dir.join("public/long-link"))
                .unwrap()
                .to_str(),
            Some(long_target.as_str())
        );
        assert_eq!(
            fs::read_to_string(dir.join(&deep)).unwrap(),
            "deep content\n"
        );
    }
    // Owners and times are normalised in the headers GNU tar reads.
    let listing = tool(
        "tar",
        &["--zstd", "--numeric-owner", "-tvf", "dist/shop-v1.tar.zst"],
        tmp.path(),
    );
    for line in listing.lines() {
        assert!(line.contains(" 0/0 "), "owner not 0/0: {line}");
        assert!(
            line.contains("1970-01-01 00:00"),
            "mtime not normalised: {line}"
        );
    }
    assert!(
        listing
            .lines()
            .next()
            .unwrap()
            .ends_with(".ship/manifest.json")
    );
}

/// Builds the same tree twice in different places, with different mtimes, umask
/// effects, permissions beyond the execute bit and creation order.
fn twin_trees(a: &Path, b: &Path) {
    let first = Tree::new(a);
    first
        .file_mode("bin/run", "#!/bin/sh\nexit 0\n", 0o700)
        .file_mode("lib/a.txt", "alpha\n", 0o600)
        .file_mode("lib/b.txt", "beta\n", 0o644)
        .file("zeta", "z")
        .symlink("link", "lib/a.txt")
        .dir("empty");
    let second = Tree::new(b);
    second
        .dir("empty")
        .symlink("link", "lib/a.txt")
        .file("zeta", "z")
        .file_mode("lib/b.txt", "beta\n", 0o664)
        .file_mode("lib/a.txt", "alpha\n", 0o640)
        .file_mode("bin/run", "#!/bin/sh\nexit 0\n", 0o751);
    // Different mtimes on every file of the second tree.
    tool(
        "sh",
        &["-c", "find . -exec touch -h -d '2001-02-03 04:05:06' {} +"],
        b,
    );
}

#[test]
fn the_same_tree_packs_to_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    twin_trees(
        &tmp.path().join("one/tree"),
        &tmp.path().join("two/somewhere/else"),
    );
    let one = run(ship().current_dir(tmp.path()).args([
        "pack",
        "one/tree",
        "--name",
        "app",
        "--version",
        "1.0.0",
        "--out",
        "out1",
    ]))
    .expect(0);
    // A different umask and working directory for the second run.
    let two = run(std::process::Command::new("sh")
        .current_dir(tmp.path().join("two"))
        .env_remove("SOURCE_DATE_EPOCH")
        .args([
            "-c",
            &format!(
                "umask 077 && {} pack somewhere/else --name app --version 1.0.0 --out ../out2",
                env!("CARGO_BIN_EXE_ship")
            ),
        ]))
    .expect(0);
    let a = fs::read(tmp.path().join("out1/app-1.0.0.tar.zst")).unwrap();
    let b = fs::read(tmp.path().join("out2/app-1.0.0.tar.zst")).unwrap();
    assert!(a == b, "artifacts differ");
    assert_eq!(
        one.stdout.split_whitespace().next(),
        two.stdout.split_whitespace().next()
    );

    // SOURCE_DATE_EPOCH changes the timestamps, and only with it set do they differ.
    let three = run(ship()
        .current_dir(tmp.path())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "pack",
            "one/tree",
            "--name",
            "app",
            "--version",
            "1.0.0",
            "--out",
            "out3",
            "--json",
        ]))
    .expect(0)
    .json()["data"]
        .clone();
    assert_ne!(
        three["sha256"].as_str(),
        one.stdout.split_whitespace().next()
    );
    let manifest = ship_in(tmp.path(), &["inspect", "out3/app-1.0.0.tar.zst", "--json"])
        .expect(0)
        .json();
    assert_eq!(manifest["created"], "2023-11-14T22:13:20Z");
    let listing = tool(
        "tar",
        &["--zstd", "-tvf", "out3/app-1.0.0.tar.zst", "--utc"],
        tmp.path(),
    );
    assert!(listing.contains("2023-11-14 22:13"), "{listing}");
}

#[test]
fn name_and_version_come_from_ship_toml_and_flags_win() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = sample_app(tmp.path().join("build"));
    tree.file(
        "ship.toml",
        "[app]\nname = \"billing\"\nversion = \"2.0.0\"\n",
    );
    let packed = ship_in(tmp.path(), &["pack", "build", "--json"])
        .expect(0)
        .json()["data"]
        .clone();
    assert_eq!(packed["artifact"], "dist/billing-2.0.0.tar.zst");
    let packed = ship_in(
        tmp.path(),
        &["pack", "build", "--version", "2.0.1", "--json"],
    )
    .expect(0)
    .json()["data"]
        .clone();
    assert_eq!(packed["artifact"], "dist/billing-2.0.1.tar.zst");
    assert_eq!(packed["name"], "billing");

    tree.file(
        "ship.toml",
        "[app]\nname = \"billing\"\nverison = \"2.0.0\"\n",
    );
    let bad = ship_in(tmp.path(), &["pack", "build"]).expect(2);
    assert!(
        bad.stderr.contains("unknown key `app.verison`"),
        "{}",
        bad.stderr
    );
    assert!(bad.stderr.contains("build/ship.toml"), "{}", bad.stderr);

    fs::remove_file(tree.root.join("ship.toml")).unwrap();
    let missing = ship_in(tmp.path(), &["pack", "build", "--name", "x"]).expect(2);
    assert!(
        missing
            .stderr
            .starts_with("error: no version\nhint: pass --version"),
        "{}",
        missing.stderr
    );
}

#[test]
fn bad_names_and_versions_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    sample_app(tmp.path().join("build"));
    let cases = [
        ("v1/2", "'/' is not allowed"),
        ("..", "must start with an ASCII letter or digit, not '.'"),
        ("v1..2", "\"..\" is not allowed"),
        ("v 1", "a space is not allowed"),
        ("v1;reboot", "';' is not allowed"),
        ("$(id)", "not '$'"),
        ("v1`id`", "'`' is not allowed"),
    ];
    for (version, reason) in cases {
        let out = ship_in(
            tmp.path(),
            &["pack", "build", "--name", "shop", "--version", version],
        )
        .expect(2);
        assert!(out.stderr.contains(reason), "{version}: {}", out.stderr);
        assert!(
            out.stderr.contains("--version"),
            "{version}: {}",
            out.stderr
        );
    }
    let out = ship_in(
        tmp.path(),
        &["pack", "build", "--name", "../shop", "--version", "v1"],
    )
    .expect(2);
    assert!(out.stderr.contains("invalid app name"), "{}", out.stderr);
    assert!(!tmp.path().join("dist").exists(), "nothing may be written");
}

/// The findings of a packed manifest: path to (kind, detail).
fn findings_of(packed: &serde_json::Value) -> BTreeMap<String, (String, String)> {
    packed["relocatability"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                (
                    f["kind"].as_str().unwrap().to_owned(),
                    f["detail"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

#[test]
fn what_cannot_be_relocated_is_reported_and_strict_makes_it_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = Tree::new(tmp.path().join("build"));
    let build = fs::canonicalize(&tree.root).unwrap();
    let build = build.to_str().unwrap();
    tree.file_mode(
        "bin/tool",
        format!("#!{build}/venv/bin/python\nprint(1)\n"),
        0o755,
    )
    .file_mode("bin/node", "an interpreter", 0o755)
    .file_mode("bin/serve", format!("#!{build}/bin/node\n"), 0o755)
    .file(
        "etc/paths.cfg",
        format!("home = /opt\ncache = {build}/cache\n"),
    )
    .file("etc/other.cfg", format!("unrelated = {build}-other/x\n"))
    .symlink("abs", "/etc/hostname")
    .symlink("up", "../../outside")
    .symlink("fine", "etc/paths.cfg");
    let packed = pack_json(tmp.path(), "build", &[]);
    let findings = findings_of(&packed);
    assert_eq!(findings.len(), 4, "{findings:#?}");
    assert_eq!(findings["up"].0, "escaping-symlink");
    assert_eq!(
        findings["bin/tool"],
        (
            "build-path-in-shebang".to_owned(),
            format!(
                "shebang names {build}/venv/bin/python, which is not in the tree: #!{build}/venv/bin/python"
            )
        )
    );
    assert_eq!(findings["bin/serve"].0, "build-path-in-shebang");
    assert!(
        findings["bin/serve"]
            .1
            .contains("only Python interpreters are rewritten: node"),
        "{findings:#?}"
    );
    assert_eq!(
        findings["etc/paths.cfg"],
        (
            "build-path-in-text".to_owned(),
            format!("line 2 contains the build directory {build}"),
        )
    );
    // An absolute link out of the tree is no finding: it is the host's to provide.
    assert_eq!(
        packed["host_requirements"],
        serde_json::json!([{"link": "abs", "target": "/etc/hostname"}])
    );
    assert_eq!(packed["rewrites"], serde_json::json!([]));

    // Human output warns, naming file and reason, and the manifest keeps them.
    let human = ship_in(
        tmp.path(),
        &["pack", "build", "--name", "shop", "--version", "v2"],
    )
    .expect(0);
    for expected in [
        "warning: not relocatable: up: symlink to ../../outside leads outside the tree",
        "warning: ship-agent refuses to unpack absolute or escaping symlinks",
        "host requirement: every host needs /etc/hostname (abs points to it)",
    ] {
        assert!(human.stderr.contains(expected), "{}", human.stderr);
    }
    let inspect = ship_in(tmp.path(), &["inspect", "dist/shop-v2.tar.zst"]).expect(0);
    for expected in [
        "relocatable  no, 4 finding(s):",
        "host needs   /etc/hostname (for abs)",
    ] {
        assert!(inspect.stdout.contains(expected), "{}", inspect.stdout);
    }

    let strict = ship_in(
        tmp.path(),
        &[
            "pack",
            "build",
            "--name",
            "shop",
            "--version",
            "v3",
            "--strict",
        ],
    )
    .expect(1);
    for expected in [
        "4 relocatability finding(s) and --strict is set",
        "up: symlink to ../../outside leads outside the tree",
        "bin/serve: shebang names the build directory",
        "hint: fix the findings",
    ] {
        assert!(strict.stderr.contains(expected), "{}", strict.stderr);
    }
    assert!(!tmp.path().join("dist/shop-v3.tar.zst").exists());
    let leftovers: Vec<_> = fs::read_dir(tmp.path().join("dist"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        4,
        "temporary files left behind: {leftovers:?}"
    );
}

/// A virtualenv-shaped tree built in `root`, naming `root` where a real one does:
/// a script's #! line, the activation script, pyvenv.cfg, a .pth file and an
/// absolute symlink into the tree; its interpreter links to `python`.
fn venv_like(root: &Path, python: &str) -> Tree {
    let tree = Tree::new(root);
    let build = fs::canonicalize(root).unwrap();
    let build = build.to_str().unwrap();
    tree.file(
        "venv/pyvenv.cfg",
        format!(
            "home = {}\ninclude-system-site-packages = false\ncommand = {python} -m venv {build}/venv\n",
            Path::new(python).parent().unwrap().display()
        ),
    )
    .symlink("venv/bin/python3", python)
    .symlink("venv/bin/python", "python3")
    .file_mode(
        "venv/bin/tool",
        format!(
            "#!{build}/venv/bin/python3\nimport json, sys\nprint(json.dumps([sys.argv[1:], sys.stdin.read(), sys.prefix]))\n"
        ),
        0o755,
    )
    .file(
        "venv/bin/activate",
        format!("# from bash\nVIRTUAL_ENV=\"{build}/venv\"\nexport VIRTUAL_ENV\n"),
    )
    .file(
        "venv/lib/python3/site-packages/app.pth",
        format!("{build}/src\n"),
    )
    .file("src/app.py", "X = 1\n")
    .symlink("venv/lib64", &format!("{build}/venv/lib"));
    tree
}

#[test]
fn relocation_rewrites_what_names_the_build_directory_and_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let python = common::system_python();
    venv_like(&tmp.path().join("build"), &python);
    let packed = pack_json(tmp.path(), "build", &["--strict"]);
    assert_eq!(packed["relocatability"], serde_json::json!([]));
    let rewrites: BTreeMap<String, String> = packed["rewrites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["what"].is_string() && r["why"].is_string(), "{r}");
            (
                r["path"].as_str().unwrap().to_owned(),
                r["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rewrites.into_iter().collect::<Vec<_>>(),
        [
            ("venv/bin/activate", "activate-script"),
            ("venv/bin/tool", "shebang"),
            ("venv/lib/python3/site-packages/app.pth", "pth"),
            ("venv/lib64", "symlink"),
            ("venv/pyvenv.cfg", "pyvenv-cfg"),
        ]
        .map(|(p, k)| (p.to_owned(), k.to_owned()))
    );
    assert_eq!(
        packed["host_requirements"],
        serde_json::json!([{"link": "venv/bin/python3", "target": python}])
    );
    // `ship inspect` says what was rewritten, and why, and what hosts must have.
    let inspect = ship_in(tmp.path(), &["inspect", "dist/shop-v1.tar.zst"]).expect(0);
    for expected in [
        "relocated    5 entries rewritten:",
        "venv/bin/tool: #! line → a sh preamble that runs python3 from the script's real directory (it named the interpreter venv/bin/python3 by its path in the build directory)",
        "venv/lib64: target → lib (",
        &format!("host needs   {python} (for venv/bin/python3)"),
        "relocatable  yes",
    ] {
        assert!(
            inspect.stdout.contains(expected),
            "{expected}\n{}",
            inspect.stdout
        );
    }

    // GNU tar unpacks the rewritten bytes, which the manifest's hashes describe (verify
    // checks every file), and nothing names the build directory any more.
    ship_in(tmp.path(), &["verify", "dist/shop-v1.tar.zst"]).expect(0);
    let release = common::unpack_with_tar(
        &tmp.path().join("dist/shop-v1.tar.zst"),
        &tmp.path().join("elsewhere"),
    );
    let build = fs::canonicalize(tmp.path().join("build")).unwrap();
    let grep = run(Command::new("grep")
        .args(["-rl", build.to_str().unwrap()])
        .arg(&release));
    assert_eq!(grep.stdout, "", "the build directory is still named");
    assert_eq!(
        fs::read_link(release.join("venv/lib64")).unwrap(),
        Path::new("lib")
    );
    assert_eq!(
        fs::read_to_string(release.join("venv/lib/python3/site-packages/app.pth")).unwrap(),
        "../../../../src\n"
    );

    // The build directory is gone; the script runs from its new place, through a
    // symlink to its release, with its arguments and stdin.
    fs::remove_dir_all(tmp.path().join("build")).unwrap();
    let mut script = Command::new(tmp.path().join("elsewhere/current/venv/bin/tool"));
    script
        .args(["a b", "c'd"])
        .stdin(std::process::Stdio::piped());
    let mut child = script.stdout(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"input\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed,
        serde_json::json!([
            ["a b", "c'd"],
            "input\n",
            release.join("venv").to_str().unwrap()
        ])
    );
}

#[test]
fn the_same_tree_built_in_two_places_packs_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let python = common::system_python();
    venv_like(&tmp.path().join("ci-job-1/app"), &python);
    venv_like(&tmp.path().join("ci-job-2/app"), &python);
    let digests: Vec<String> = ["ci-job-1", "ci-job-2"]
        .iter()
        .map(|job| {
            let out = ship_in(
                &tmp.path().join(job),
                &["pack", "app", "--name", "shop", "--version", "v1"],
            )
            .expect(0);
            out.stdout.split_whitespace().next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn no_relocate_keeps_the_bytes_and_reports_what_ties_them_to_the_build() {
    let tmp = tempfile::tempdir().unwrap();
    let python = common::system_python();
    let tree = venv_like(&tmp.path().join("build"), &python);
    let packed = pack_json(tmp.path(), "build", &["--no-relocate"]);
    assert_eq!(packed["rewrites"], serde_json::json!([]));
    let findings = findings_of(&packed);
    let kinds: Vec<(&str, &str)> = findings
        .iter()
        .map(|(path, (kind, _))| (path.as_str(), kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("venv/bin/activate", "build-path-in-text"),
            ("venv/bin/tool", "build-path-in-shebang"),
            (
                "venv/lib/python3/site-packages/app.pth",
                "build-path-in-text"
            ),
            ("venv/lib64", "absolute-symlink"),
            ("venv/pyvenv.cfg", "build-path-in-text"),
        ]
    );
    // Declaring a host requirement changes no byte: it is still declared.
    assert_eq!(
        packed["host_requirements"][0]["link"],
        serde_json::json!("venv/bin/python3")
    );
    let manifest = ship_in(tmp.path(), &["inspect", "dist/shop-v1.tar.zst", "--json"])
        .expect(0)
        .json();
    let tool_entry = manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "venv/bin/tool")
        .unwrap()
        .clone();
    let original = fs::read(tree.root.join("venv/bin/tool")).unwrap();
    assert_eq!(tool_entry["size"], original.len());
}

#[test]
fn elf_rpath_inside_the_build_directory_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = Tree::new(tmp.path().join("build"));
    let build = fs::canonicalize(&tree.root).unwrap();
    let build = build.to_str().unwrap();
    tree.file("src/main.c", "int main(void) { return 0; }\n");
    for (name, rpath, flags) in [
        (
            "bad-runpath",
            format!("{build}/lib"),
            "-Wl,--enable-new-dtags",
        ),
        (
            "bad-rpath",
            format!("{build}/lib"),
            "-Wl,--disable-new-dtags",
        ),
        (
            "good",
            "$ORIGIN/../lib:/usr/lib/x".to_owned(),
            "-Wl,--enable-new-dtags",
        ),
    ] {
        tool(
            "cc",
            &[
                "-o",
                &format!("build/bin/{name}"),
                "build/src/main.c",
                &format!("-Wl,-rpath,{rpath}"),
                flags,
            ],
            &{
                fs::create_dir_all(tree.root.join("bin")).unwrap();
                tmp.path().to_owned()
            },
        );
    }
    let packed = pack_json(tmp.path(), "build", &[]);
    let findings: Vec<(String, String)> = packed["relocatability"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        findings,
        vec![
            (
                "bin/bad-rpath".to_owned(),
                format!("RPATH entry {build}/lib is inside the build directory {build}")
            ),
            (
                "bin/bad-runpath".to_owned(),
                format!("RUNPATH entry {build}/lib is inside the build directory {build}")
            ),
        ]
    );
}

#[test]
fn special_files_and_reserved_names_are_refused_with_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = sample_app(tmp.path().join("build"));
    tool("mkfifo", &["build/var/queue"], tmp.path());
    let out = ship_in(
        tmp.path(),
        &["pack", "build", "--name", "shop", "--version", "v1"],
    )
    .expect(1);
    assert!(
        out.stderr.contains(
            "build/var/queue is a FIFO: only directories, regular files and symlinks can be packed"
        ),
        "{}",
        out.stderr
    );
    fs::remove_file(tree.root.join("var/queue")).unwrap();

    let sock = std::os::unix::net::UnixListener::bind(tree.root.join("app.sock")).unwrap();
    let out = ship_in(
        tmp.path(),
        &["pack", "build", "--name", "shop", "--version", "v1"],
    )
    .expect(1);
    assert!(
        out.stderr.contains("build/app.sock is a socket"),
        "{}",
        out.stderr
    );
    drop(sock);
    fs::remove_file(tree.root.join("app.sock")).unwrap();

    tree.file(".ship/manifest.json", "{}");
    let out = ship_in(
        tmp.path(),
        &["pack", "build", "--name", "shop", "--version", "v1"],
    )
    .expect(1);
    assert!(
        out.stderr.contains("`.ship/` is reserved"),
        "{}",
        out.stderr
    );

    let out = ship_in(
        tmp.path(),
        &["pack", "nowhere", "--name", "shop", "--version", "v1"],
    )
    .expect(1);
    assert!(
        out.stderr.contains("nowhere is not a directory"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_output_directory_inside_the_tree_is_not_packed() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = sample_app(tmp.path().join("app"));
    tree.file("dist/old-artifact.tar.zst", "old");
    let packed = ship_in(
        &tree.root,
        &["pack", ".", "--name", "shop", "--version", "v1", "--json"],
    )
    .expect(0)
    .json()["data"]
        .clone();
    assert_eq!(packed["entries"], 11);
    assert!(tree.root.join("dist/shop-v1.tar.zst").is_file());
}

#[test]
fn verify_accepts_a_good_artifact_and_an_explicit_digest() {
    let tmp = tempfile::tempdir().unwrap();
    sample_app(tmp.path().join("build"));
    let packed = pack_json(tmp.path(), "build", &[]);
    let sha = packed["sha256"].as_str().unwrap();
    let out = ship_in(tmp.path(), &["verify", "dist/shop-v1.tar.zst"]).expect(0);
    assert_eq!(
        out.stdout,
        format!("dist/shop-v1.tar.zst: OK (shop v1, 11 entries, sha256 {sha}; not signed)\n")
    );
    let json = ship_in(tmp.path(), &["verify", "dist/shop-v1.tar.zst", "--json"])
        .expect(0)
        .json();
    assert_eq!(json["type"], "verified");
    assert_eq!(json["data"]["payload_digest"], packed["payload_digest"]);

    fs::remove_file(tmp.path().join("dist/shop-v1.tar.zst.sha256")).unwrap();
    let out = ship_in(tmp.path(), &["verify", "dist/shop-v1.tar.zst"]).expect(1);
    assert!(
        out.stderr.contains("shop-v1.tar.zst.sha256: not found"),
        "{}",
        out.stderr
    );
    ship_in(
        tmp.path(),
        &["verify", "dist/shop-v1.tar.zst", "--digest", sha],
    )
    .expect(0);
    let wrong = "0".repeat(64);
    let out = ship_in(
        tmp.path(),
        &["verify", "dist/shop-v1.tar.zst", "--digest", &wrong],
    )
    .expect(1);
    assert!(
        out.stderr.contains(&format!(
            "the artifact's sha256 is {sha}, but --digest says {wrong}"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn verify_names_what_a_tampered_sidecar_or_artifact_breaks() {
    let tmp = tempfile::tempdir().unwrap();
    sample_app(tmp.path().join("build"));
    pack_json(tmp.path(), "build", &[]);
    let sidecar = tmp.path().join("dist/shop-v1.tar.zst.sha256");
    fs::write(&sidecar, format!("{}  shop-v1.tar.zst\n", "a".repeat(64))).unwrap();
    let out = ship_in(tmp.path(), &["verify", "dist/shop-v1.tar.zst"]).expect(1);
    assert!(
        out.stderr
            .starts_with("error: artifact dist/shop-v1.tar.zst did not verify\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "but dist/shop-v1.tar.zst.sha256 says {}",
            "a".repeat(64)
        )),
        "{}",
        out.stderr
    );
    fs::write(&sidecar, format!("{}  other.tar.zst\n", "a".repeat(64))).unwrap();
    let out = ship_in(tmp.path(), &["verify", "dist/shop-v1.tar.zst"]).expect(1);
    assert!(
        out.stderr.contains("it is for \"other.tar.zst\""),
        "{}",
        out.stderr
    );
}

/// Every truncation and a spread of single-bit flips must be refused with exit 1
/// and a message, never a panic or a pass.
#[test]
fn truncated_and_bit_flipped_artifacts_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = sample_app(tmp.path().join("build"));
    // Enough content for several blocks, some of it incompressible.
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    tree.file("data/noise.bin", &noise);
    let packed = pack_json(tmp.path(), "build", &[]);
    let sha = packed["sha256"].as_str().unwrap().to_owned();
    let good = fs::read(tmp.path().join("dist/shop-v1.tar.zst")).unwrap();
    let bad = tmp.path().join("bad.tar.zst");

    let step = (good.len() / 40).max(1);
    let mut cuts: Vec<usize> = (0..good.len()).step_by(step).collect();
    cuts.extend([1, 4, good.len() - 1]);
    for cut in cuts {
        fs::write(&bad, &good[..cut]).unwrap();
        // --digest pins the good digest: the content checks must fail on their own
        // or the digest must, but never pass.
        let out = ship_in(tmp.path(), &["verify", "bad.tar.zst", "--digest", &sha]).expect(1);
        assert!(
            out.stderr
                .starts_with("error: artifact bad.tar.zst did not verify"),
            "cut {cut}: {}",
            out.stderr
        );
    }
    for i in 0..60 {
        let at = (i * 7919 + 13) % good.len();
        let mut flipped = good.clone();
        flipped[at] ^= 1 << (i % 8);
        fs::write(&bad, &flipped).unwrap();
        let out = ship_in(tmp.path(), &["verify", "bad.tar.zst", "--digest", &sha]).expect(1);
        assert!(
            out.stderr.contains("caused by:"),
            "flip at {at}: {}",
            out.stderr
        );
    }
    // Garbage after the last frame is refused too.
    let mut longer = good.clone();
    longer.extend_from_slice(b"trailing");
    fs::write(&bad, &longer).unwrap();
    ship_in(tmp.path(), &["verify", "bad.tar.zst", "--digest", &sha]).expect(1);
    // And something that is not an artifact at all.
    fs::write(&bad, b"hello, not zstd").unwrap();
    let out = ship_in(tmp.path(), &["inspect", "bad.tar.zst"]).expect(1);
    assert!(
        out.stderr
            .contains("cannot read the manifest of bad.tar.zst"),
        "{}",
        out.stderr
    );
}

#[test]
fn inspect_summarises_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    sample_app(tmp.path().join("build"));
    let packed = pack_json(tmp.path(), "build", &[]);
    let out = ship_in(tmp.path(), &["inspect", "dist/shop-v1.tar.zst"]).expect(0);
    let payload = packed["payload_digest"].as_str().unwrap();
    let summary: String = out
        .stdout
        .replace(payload, "[payload]")
        .lines()
        .filter(|l| !l.contains("compression"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        summary,
        "shop v1
  created      1970-01-01T00:00:00Z
  source       unknown (not packed from a git work tree)
  entries      11 (5 directories, 4 files, 2 symlinks)
  unpacked     50 B
  payload      [payload]
  relocatable  yes
"
    );
}

#[test]
fn the_example_app_packs_relocatably() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("build");
    common::build_shop(&tree);
    let out = run(ship().current_dir(tmp.path()).args([
        "pack",
        "build",
        "--version",
        "v1",
        "--strict",
        "--json",
    ]))
    .expect(0)
    .json()["data"]
        .clone();
    assert_eq!(out["name"], "shop");
    assert_eq!(out["relocatability"], serde_json::json!([]));
    let rewritten: BTreeMap<String, String> = out["rewrites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_owned(),
                r["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (path, kind) in [
        ("venv/bin/shop-web", "shebang"),
        ("venv/bin/activate", "activate-script"),
        ("venv/bin/activate.fish", "activate-script"),
        ("venv/bin/activate.csh", "activate-script"),
        ("venv/pyvenv.cfg", "pyvenv-cfg"),
    ] {
        assert_eq!(
            rewritten.get(path).map(String::as_str),
            Some(kind),
            "{rewritten:#?}"
        );
    }
    let python = fs::read_link(tree.join("venv/bin/python3")).unwrap();
    assert_eq!(
        out["host_requirements"],
        serde_json::json!([{"link": "venv/bin/python3", "target": python.to_str().unwrap()}])
    );
    ship_in(tmp.path(), &["verify", "dist/shop-v1.tar.zst"]).expect(0);
}

#[test]
fn a_full_output_disk_is_reported_and_leaves_nothing_behind() {
    if !common::skip::runs_here(common::skip::is_root(), "root, to mount a tmpfs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = sample_app(tmp.path().join("build"));
    tree.file("data/noise.bin", common::incompressible(3 << 20));
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let _mount = common::Tmpfs::mount(&out, "size=1m");
    let run = ship_in(
        tmp.path(),
        &[
            "pack",
            "build",
            "--name",
            "shop",
            "--version",
            "v1",
            "--out",
            "out",
        ],
    )
    .expect(1);
    assert!(
        run.stderr.contains("cannot write out/shop-v1.tar.zst"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        0,
        "leftovers in the output"
    );
}

#[test]
fn the_apps_behaviour_travels_in_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = sample_app(tmp.path().join("build"));
    tree.file(
        "ship.toml",
        r#"[app]
name = "shop"
[release]
shared = ["log/", "config/.env"]
requires.env = ["DATABASE_URL"]
[hooks]
pre_activate = "bin/server"
timeout = "1m"
[[service]]
name = "web"
restart = { signal = "HUP", pidfile = "shared/web.pid" }
health = { http = "http://127.0.0.1:8080/health", expect = 200 }
"#,
    );
    let packed = ship_in(tmp.path(), &["pack", "build", "--version", "v1", "--json"])
        .expect(0)
        .json();
    assert_eq!(packed["type"], "packed");
    let manifest = ship_in(tmp.path(), &["inspect", "dist/shop-v1.tar.zst", "--json"])
        .expect(0)
        .json();
    let behaviour = &manifest["behaviour"];
    assert_eq!(
        behaviour["shared"],
        serde_json::json!(["log/", "config/.env"])
    );
    assert_eq!(
        behaviour["requires"]["env"],
        serde_json::json!(["DATABASE_URL"])
    );
    assert_eq!(behaviour["hooks"]["timeout"], "1m");
    assert_eq!(behaviour["services"][0]["restart"]["signal"], "HUP");
    assert_eq!(behaviour["services"][0]["health"]["expect"], 200);

    // A shared path the tree itself contains is an error at pack time.
    tree.file("log/old.log", "x");
    let out = ship_in(tmp.path(), &["pack", "build", "--version", "v2"]).expect(1);
    assert!(
        out.stderr
            .contains("shared path \"log\" is also in the artifact (log)"),
        "{}",
        out.stderr
    );
    assert!(!tmp.path().join("dist/shop-v2.tar.zst").exists());
}
