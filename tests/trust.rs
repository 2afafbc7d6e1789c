//! Signed releases end to end: keys made by `ship key`, artifacts signed by `ship
//! sign` and by the `minisign` CLI, hosts (real sshd on loopback, from
//! `scripts/fleet`) that trust keys and refuse everything else, downgrades, key
//! rotation and revocation, push and pull.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{LocalFleet, Run, SshFleet};

fn can_run() -> bool {
    common::skip::runs_here(
        common::skip::is_root()
            && Path::new("/usr/sbin/sshd").exists()
            && Path::new("/usr/bin/minisign").exists(),
        "root, /usr/sbin/sshd and /usr/bin/minisign (scripts/test installs them)",
    )
}

fn has_minisign() -> bool {
    common::skip::runs_here(
        Path::new("/usr/bin/minisign").exists(),
        "/usr/bin/minisign (scripts/test installs it)",
    )
}

/// A keypair `<dir>/<name>.key` (unencrypted) and `.pub`, made by `ship key generate`.
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(name);
    let made = common::ship_in(
        dir,
        &[
            "key",
            "generate",
            "--out",
            out.to_str().unwrap(),
            "--unencrypted",
        ],
    )
    .expect(0);
    fs::write(dir.join(format!("{name}.id")), made.stdout).unwrap();
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// `ship trust ACTION KEY --statement STATEMENT --hosts HOSTS`.
fn by_statement<'a>(
    action: &'a str,
    key: &'a str,
    statement: &'a str,
    hosts: &'a str,
) -> Vec<&'a str> {
    vec![
        "trust",
        action,
        key,
        "--statement",
        statement,
        "--hosts",
        hosts,
    ]
}

/// The id of the public key in `path`, as `ship key generate` printed it.
fn key_id(path: &Path) -> String {
    let ids = fs::read_to_string(path.with_extension("id")).unwrap();
    ids.trim().to_owned()
}

fn artifact(build: &LocalFleet, version: &str) -> PathBuf {
    build
        .dir
        .path()
        .join(format!("dist/shop-{version}.tar.zst"))
}

fn sign(build: &LocalFleet, version: &str, key: &Path, seq: u64) {
    common::ship_in(
        build.dir.path(),
        &[
            "sign",
            artifact(build, version).to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--seq",
            &seq.to_string(),
        ],
    )
    .expect(0);
}

fn signature(build: &LocalFleet, version: &str) -> PathBuf {
    let mut path = artifact(build, version).into_os_string();
    path.push(".minisig");
    PathBuf::from(path)
}

/// The journal of `host`'s app root, a record a line.
fn journal(fleet: &SshFleet, host: &str) -> Vec<serde_json::Value> {
    fs::read_to_string(fleet.root(host).join(".ship/journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn received_ok(fleet: &SshFleet, host: &str, version: &str) -> bool {
    journal(fleet, host)
        .iter()
        .any(|r| r["op"] == "receive" && r["result"] == "ok" && r["version"] == version)
}

/// Nothing half-made is left on a host that refused a release.
fn clean(fleet: &SshFleet, host: &str, version: &str) {
    assert_ne!(
        fleet.current(host),
        Some(format!("releases/{version}")),
        "{host} switched"
    );
    assert!(
        !fleet.root(host).join("releases").join(version).exists(),
        "{host}"
    );
    let incoming = fleet.root(host).join(".ship/incoming");
    let left = fs::read_dir(&incoming).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "{host}: {incoming:?} is not empty");
    // The refusal is the last receive journaled.
    let last = journal(fleet, host)
        .into_iter()
        .rfind(|r| r["op"] == "receive")
        .unwrap();
    assert_eq!(last["result"], "failed", "{host}: {last}");
}

fn refused(run: &Run, host: &str, what: &str) {
    let row = run.row(host);
    assert!(
        row.contains("FAILED") && row.contains(what),
        "{host}: {row}\n{}",
        run.stderr
    );
}

#[test]
fn hosts_with_keys_take_only_what_their_keys_signed() {
    if !can_run() {
        return;
    }
    let fleet = SshFleet::start(3, None);
    let build = LocalFleet::new(&["unused"]);
    fleet.artifacts_in(&build.dir.path().join("dist"));
    let cwd = build.dir.path();
    let (release_key, release_pub) = keypair(cwd, "release");
    let (other_key, other_pub) = keypair(cwd, "other");
    sign(&build, "v1", &release_key, 100);
    sign(&build, "v2", &release_key, 200);

    // The real minisign CLI checks ship's signature.
    let checked = common::tool(
        "minisign",
        &[
            "-Vm",
            artifact(&build, "v2").to_str().unwrap(),
            "-p",
            release_pub.to_str().unwrap(),
        ],
        cwd,
    );
    assert!(
        checked.contains("ship-release app:shop version:v2"),
        "{checked}"
    );
    let verified = fleet
        .ship(
            cwd,
            &[
                "verify",
                artifact(&build, "v2").to_str().unwrap(),
                "--key",
                release_pub.to_str().unwrap(),
            ],
        )
        .expect(0);
    assert!(
        verified.stdout.contains("signed by key"),
        "{}",
        verified.stdout
    );
    fleet
        .ship(
            cwd,
            &[
                "verify",
                artifact(&build, "v2").to_str().unwrap(),
                "--key",
                other_pub.to_str().unwrap(),
            ],
        )
        .expect(1);

    // h1 and h2 take the release key on first contact; h3 trusts nothing.
    let pub_arg = release_pub.to_str().unwrap();
    fleet
        .ship(
            cwd,
            &[
                "trust",
                "add",
                pub_arg,
                "--first-contact",
                "--hosts",
                "h1,h2",
            ],
        )
        .expect(0);
    fleet.ship(cwd, &["deploy", "v1", "--hosts", "*"]).expect(0);
    let plan = fleet
        .ship(cwd, &["deploy", "v2", "--hosts", "*", "--plan"])
        .expect(0);
    assert!(plan.row("h1").contains("required ("), "{}", plan.stdout);
    assert!(plan.row("h3").contains("not required"), "{}", plan.stdout);
    fleet.ship(cwd, &["deploy", "v2", "--hosts", "*"]).expect(0);
    let record = journal(&fleet, "h1")
        .into_iter()
        .rfind(|r| r["op"] == "receive" && r["version"] == "v2")
        .unwrap();
    assert_eq!(record["signed_by"]["seq"], 200, "{record}");

    // v3 unsigned: refused by the hosts that have keys (a delta, for them), taken
    // by the one without.
    let run = fleet
        .ship(
            cwd,
            &[
                "deploy",
                "v3",
                "--hosts",
                "*",
                "--max-failures",
                "2",
                "--on-failure",
                "halt",
            ],
        )
        .expect(1);
    for host in ["h1", "h2"] {
        refused(&run, host, "shop v3: an unsigned release was refused");
        clean(&fleet, host, "v3");
        assert_eq!(fleet.current(host).as_deref(), Some("releases/v2"));
    }
    assert_eq!(fleet.current("h3").as_deref(), Some("releases/v3"));

    // Signed by a key the hosts do not trust.
    sign(&build, "v3", &other_key, 300);
    let run = fleet
        .ship(cwd, &["deploy", "v3", "--hosts", "h1"])
        .expect(1);
    refused(&run, "h1", "which this host does not trust");
    clean(&fleet, "h1", "v3");

    // v1's signature copied onto v3.
    fs::copy(signature(&build, "v1"), signature(&build, "v3")).unwrap();
    let run = fleet
        .ship(cwd, &["deploy", "v3", "--hosts", "h1", "--full"])
        .expect(1);
    refused(&run, "h1", "the signature is for another release");
    clean(&fleet, "h1", "v3");

    // A signature of the same tree packed as another app: same payload, other name.
    common::ship_in(
        cwd,
        &[
            "pack",
            "build-v3",
            "--name",
            "other",
            "--version",
            "v3",
            "--out",
            "other",
        ],
    )
    .expect(0);
    common::ship_in(
        cwd,
        &[
            "sign",
            "other/other-v3.tar.zst",
            "--key",
            release_key.to_str().unwrap(),
            "--seq",
            "300",
        ],
    )
    .expect(0);
    fs::copy(
        cwd.join("other/other-v3.tar.zst.minisig"),
        signature(&build, "v3"),
    )
    .unwrap();
    let run = fleet
        .ship(cwd, &["deploy", "v3", "--hosts", "h1"])
        .expect(1);
    refused(
        &run,
        "h1",
        "it was made for app other, this release has shop",
    );
    clean(&fleet, "h1", "v3");

    // A forged claim: v3's own signature with its sequence raised.
    sign(&build, "v3", &release_key, 300);
    let genuine = fs::read_to_string(signature(&build, "v3")).unwrap();
    fs::write(
        signature(&build, "v3"),
        genuine.replace("seq:300", "seq:900"),
    )
    .unwrap();
    let run = fleet
        .ship(cwd, &["deploy", "v3", "--hosts", "h1"])
        .expect(1);
    refused(&run, "h1", "forged or altered");
    clean(&fleet, "h1", "v3");

    // A truncated signature is refused before anything moves.
    fs::write(signature(&build, "v3"), &genuine[..genuine.len() / 2]).unwrap();
    let run = fleet
        .ship(cwd, &["deploy", "v3", "--hosts", "h1"])
        .expect(1);
    assert!(run.stderr.contains("is unusable"), "{}", run.stderr);
    clean(&fleet, "h1", "v3");
    // And on the host, by hand: the agent refuses it too.
    fs::write(signature(&build, "v3"), &genuine).unwrap();
    let agent = fleet.root("h1").join(".ship/bin/ship-agent");
    let cut = &genuine[..genuine.len() - 30];
    let by_hand = fleet.ssh(
        "h1",
        &format!(
            "printf '%s' '{cut}' > /tmp/cut.minisig && {} receive --root /srv/shop --signature-file /tmp/cut.minisig",
            Path::new("/srv/shop").join(agent.strip_prefix(fleet.root("h1")).unwrap()).display()
        ),
        &fs::read(artifact(&build, "v3")).unwrap(),
    );
    assert_eq!(by_hand.code, 1, "{}", by_hand.stderr);
    assert!(
        by_hand.stderr.contains("not a minisign signature"),
        "{}",
        by_hand.stderr
    );
    clean(&fleet, "h1", "v3");

    // v3 genuinely signed goes through; then v1, signed before it, is a replay.
    fleet
        .ship(cwd, &["deploy", "v3", "--hosts", "h1,h2"])
        .expect(0);
    for host in ["h1", "h2"] {
        fs::remove_dir_all(fleet.root(host).join("releases/v1")).ok();
    }
    let run = fleet
        .ship(cwd, &["deploy", "v1", "--hosts", "h1"])
        .expect(1);
    refused(&run, "h1", "shop v1: the release was refused");
    refused(&run, "h1", "a replay or a downgrade");
    clean(&fleet, "h1", "v1");
    fleet
        .ship(
            cwd,
            &[
                "deploy",
                "v1",
                "--hosts",
                "h1",
                "--allow-downgrade",
                "v3 breaks checkout, INC-7",
            ],
        )
        .expect(0);
    let record = journal(&fleet, "h1")
        .into_iter()
        .rfind(|r| r["op"] == "receive" && r["version"] == "v1" && r["result"] == "ok")
        .unwrap();
    assert_eq!(record["user"], "tester");
    assert!(
        record["signed_by"]["downgrade"]
            .as_str()
            .unwrap()
            .contains("INC-7"),
        "{record}"
    );
    // Going back to a release the host holds is a switch, signed or not.
    fleet
        .ship(cwd, &["rollback", "--hosts", "h1", "--to", "v3"])
        .expect(0);
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v3"));

    // Rotation: a new key endorsed by the release key is taken; one endorsed by an
    // untrusted key is not; a host with keys refuses --first-contact.
    let (new_key, new_pub) = keypair(cwd, "new");
    let new_id = key_id(&new_pub);
    let (_, rogue_pub) = keypair(cwd, "rogue");
    let endorse = |subject: &Path, key: &Path| -> PathBuf {
        let out = common::ship_in(
            cwd,
            &[
                "key",
                "endorse",
                subject.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
        )
        .expect(0);
        PathBuf::from(out.stdout.trim())
    };
    let statement = endorse(&new_pub, &release_key);
    fleet
        .ship(
            cwd,
            &by_statement(
                "add",
                new_pub.to_str().unwrap(),
                statement.to_str().unwrap(),
                "h1,h2",
            ),
        )
        .expect(0);
    let rogue = endorse(&rogue_pub, &other_key);
    let run = fleet
        .ship(
            cwd,
            &by_statement(
                "add",
                rogue_pub.to_str().unwrap(),
                rogue.to_str().unwrap(),
                "h1",
            ),
        )
        .expect(1);
    assert!(
        run.stdout.contains("which this host does not trust"),
        "{}",
        run.stdout
    );
    let run = fleet
        .ship(
            cwd,
            &[
                "trust",
                "add",
                rogue_pub.to_str().unwrap(),
                "--first-contact",
                "--hosts",
                "h1",
            ],
        )
        .expect(1);
    assert!(
        run.stdout.contains("already has trust anchors"),
        "{}",
        run.stdout
    );

    // The old key revoked by the new one: what it signs is refused.
    let out = common::ship_in(
        cwd,
        &["key", "revoke", pub_arg, "--key", new_key.to_str().unwrap()],
    )
    .expect(0);
    fleet
        .ship(
            cwd,
            &by_statement("revoke", pub_arg, out.stdout.trim(), "h1,h2"),
        )
        .expect(0);
    let list = fleet
        .ship(cwd, &["trust", "list", "--hosts", "h1"])
        .expect(0);
    let keys: Vec<&str> = list.row("h1").split_whitespace().collect();
    assert_eq!(
        keys[1..],
        [new_id.as_str(), "requires", "signatures"],
        "{}",
        list.stdout
    );
    build.pack("v4");
    sign(&build, "v4", &release_key, 400);
    let run = fleet
        .ship(cwd, &["deploy", "v4", "--hosts", "h1"])
        .expect(1);
    refused(&run, "h1", "which was revoked");
    sign(&build, "v4", &new_key, 400);
    fleet
        .ship(cwd, &["deploy", "v4", "--hosts", "h1"])
        .expect(0);

    // A revoked key is not taken back by statement, and ship does not revoke a
    // host's last key (which would make it take unsigned releases).
    let back = endorse(&release_pub, &new_key);
    let run = fleet
        .ship(
            cwd,
            &by_statement("add", pub_arg, back.to_str().unwrap(), "h1"),
        )
        .expect(1);
    assert!(
        run.stdout.contains("it was revoked on this host"),
        "{}",
        run.stdout
    );
    let new_arg = new_pub.to_str().unwrap();
    let last = common::ship_in(
        cwd,
        &["key", "revoke", new_arg, "--key", new_key.to_str().unwrap()],
    )
    .expect(0);
    let run = fleet
        .ship(
            cwd,
            &by_statement("revoke", new_arg, last.stdout.trim(), "h1"),
        )
        .expect(1);
    assert!(run.stdout.contains("last trusted key"), "{}", run.stdout);

    // h3 took its releases before it had a key: once it has one, they are not
    // deployed there again until they come again, signed.
    fleet
        .ship(
            cwd,
            &["trust", "add", new_arg, "--first-contact", "--hosts", "h3"],
        )
        .expect(0);
    let run = fleet
        .ship(cwd, &["deploy", "v2", "--hosts", "h3"])
        .expect(1);
    assert!(
        run.row("h3")
            .contains("it was received unsigned, before this host required signatures"),
        "{}",
        run.stdout
    );
    assert_eq!(fleet.current("h3").as_deref(), Some("releases/v3"));
    fleet
        .ship(cwd, &["deploy", "v4", "--hosts", "h3"])
        .expect(0);
    // Going back is a swap, signed or not.
    fleet
        .ship(cwd, &["rollback", "--hosts", "h3", "--to", "v2"])
        .expect(0);
    assert_eq!(fleet.current("h3").as_deref(), Some("releases/v2"));
}

#[test]
fn minisign_signatures_deploy_and_pulls_are_checked_before_download() {
    if !can_run() {
        return;
    }
    let fleet = SshFleet::start(2, None);
    let build = LocalFleet::new(&["unused"]);
    let cwd = build.dir.path();
    let store = tempfile::tempdir().unwrap();
    let toml = fleet.dir.path().join("ship.toml");
    let text = fs::read_to_string(&toml).unwrap();
    fs::write(
        &toml,
        text + &format!("[store]\nurl = \"file://{}\"\n", store.path().display()),
    )
    .unwrap();
    fleet.artifacts_in(&build.dir.path().join("dist"));

    // A key made by the minisign CLI signs v1 with the claim ship prints.
    let (key, public) = (cwd.join("mini.key"), cwd.join("mini.pub"));
    common::tool(
        "minisign",
        &[
            "-G",
            "-W",
            "-s",
            key.to_str().unwrap(),
            "-p",
            public.to_str().unwrap(),
        ],
        cwd,
    );
    let v1 = artifact(&build, "v1");
    let claim = common::ship_in(
        cwd,
        &["sign", v1.to_str().unwrap(), "--print-claim", "--seq", "5"],
    )
    .expect(0)
    .stdout;
    common::tool(
        "minisign",
        &[
            "-S",
            "-s",
            key.to_str().unwrap(),
            "-m",
            v1.to_str().unwrap(),
            "-t",
            claim.trim(),
        ],
        cwd,
    );
    fleet
        .ship(
            cwd,
            &[
                "verify",
                v1.to_str().unwrap(),
                "--key",
                public.to_str().unwrap(),
            ],
        )
        .expect(0);
    fleet.ship(cwd, &["publish", "v1"]).expect(0);
    fleet.ship(cwd, &["publish", "v2"]).expect(0);
    assert!(store.path().join("shop/shop-v1.tar.zst.minisig").is_file());

    fleet
        .ship(
            cwd,
            &[
                "trust",
                "add",
                public.to_str().unwrap(),
                "--first-contact",
                "--hosts",
                "*",
            ],
        )
        .expect(0);
    // Pulled from the store, with the signature the store holds.
    fs::rename(&v1, cwd.join("v1.moved")).unwrap();
    fleet.ship(cwd, &["deploy", "v1", "--hosts", "*"]).expect(0);
    assert!(received_ok(&fleet, "h2", "v1"));
    // v2 is unsigned: each host refuses it before fetching it (its store copy is
    // gone, so a download would fail otherwise).
    fs::remove_file(store.path().join("shop/shop-v2.tar.zst")).unwrap();
    let run = fleet.ship(cwd, &["deploy", "v2", "--hosts", "*"]).expect(1);
    for host in ["h1", "h2"] {
        refused(&run, host, "shop v2: an unsigned release was refused");
        clean(&fleet, host, "v2");
        assert_eq!(fleet.current(host).as_deref(), Some("releases/v1"));
    }
    // v3 signed by a key the hosts do not trust, published with its signature.
    let (other, _) = keypair(cwd, "other");
    sign(&build, "v3", &other, 10);
    fleet.ship(cwd, &["publish", "v3"]).expect(0);
    let run = fleet.ship(cwd, &["deploy", "v3", "--hosts", "*"]).expect(1);
    for host in ["h1", "h2"] {
        refused(&run, host, "which this host does not trust");
        clean(&fleet, host, "v3");
    }
}

#[test]
fn keys_are_encrypted_by_default_and_a_wrong_passphrase_is_named() {
    if !has_minisign() {
        return;
    }
    let build = LocalFleet::new(&["h1"]);
    let cwd = build.dir.path();
    let run = common::run(
        common::ship()
            .current_dir(cwd)
            .args(["key", "generate", "--out", "team"])
            .env("SHIP_KEY_PASSPHRASE", "correct horse"),
    )
    .expect(0);
    assert!(
        run.stderr.contains("encrypted with the passphrase"),
        "{}",
        run.stderr
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(cwd.join("team.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let v1 = artifact(&build, "v1");
    let sign = |passphrase: &str| {
        common::run(
            common::ship()
                .current_dir(cwd)
                .args(["sign", v1.to_str().unwrap(), "--key", "team.key"])
                .env("SHIP_KEY_PASSPHRASE", passphrase),
        )
    };
    let wrong = sign("battery staple").expect(1);
    assert!(
        wrong
            .stderr
            .contains("cannot decrypt the secret key team.key"),
        "{}",
        wrong.stderr
    );
    assert!(!signature(&build, "v1").exists());
    sign("correct horse").expect(0);
    let checked = common::tool(
        "minisign",
        &["-Vm", v1.to_str().unwrap(), "-p", "team.pub"],
        cwd,
    );
    assert!(
        checked.contains("Signature and comment signature verified"),
        "{checked}"
    );
    // Without a terminal or the variable, ship says where the passphrase goes.
    let run = common::run(
        common::ship()
            .current_dir(cwd)
            .args(["sign", v1.to_str().unwrap(), "--key", "team.key"])
            .env_remove("SHIP_KEY_PASSPHRASE")
            .stdin(std::process::Stdio::null()),
    )
    .expect(2);
    assert!(run.stderr.contains("SHIP_KEY_PASSPHRASE"), "{}", run.stderr);
}

#[test]
fn trust_in_ship_toml_and_by_hand_on_the_host() {
    if !has_minisign() {
        return;
    }
    let build = LocalFleet::new(&["h1"]);
    let cwd = build.dir.path();
    let (key, public) = keypair(cwd, "release");
    let (other_key, other_pub) = keypair(cwd, "other");
    let toml = cwd.join("ship.toml");
    let text = fs::read_to_string(&toml).unwrap();
    fs::write(&toml, format!("{text}[trust]\nkeys = [\"release.pub\"]\n")).unwrap();
    let v1 = artifact(&build, "v1");

    // [trust] keys: verify needs a signature by one of them, and deploy sends
    // nothing that lacks one.
    let run = build.ship(&["verify", v1.to_str().unwrap()]).expect(1);
    assert!(run.stderr.contains("it is not signed"), "{}", run.stderr);
    let run = build.ship(&["deploy", "v1", "--hosts", "h1"]).expect(1);
    assert!(
        run.stderr.contains("shop v1 is not deployed") && run.stderr.contains("not signed"),
        "{}",
        run.stderr
    );
    assert!(!build.root("h1").join("releases").exists());
    sign(&build, "v1", &other_key, 1);
    let run = build.ship(&["deploy", "v1", "--hosts", "h1"]).expect(1);
    assert!(run.stderr.contains("not a trusted key"), "{}", run.stderr);
    sign(&build, "v1", &key, 1);
    let run = build.ship(&["verify", v1.to_str().unwrap()]).expect(0);
    assert!(run.stdout.contains("signed by key"), "{}", run.stdout);
    build.ship(&["deploy", "v1", "--hosts", "h1"]).expect(0);
    // Signed while packing (the BLAKE2b computed as the artifact is written): the
    // minisign CLI agrees.
    common::ship_in(
        cwd,
        &[
            "pack",
            "build-v2",
            "--version",
            "v5",
            "--sign",
            "release.key",
        ],
    )
    .expect(0);
    let checked = common::tool(
        "minisign",
        &["-Vm", "dist/shop-v5.tar.zst", "-p", "release.pub"],
        cwd,
    );
    assert!(checked.contains("version:v5"), "{checked}");

    // By hand on the host: the owner adds and revokes keys without statements,
    // down to none, when the host takes unsigned releases again.
    let root = build.root("h1");
    let agent = |args: &[&str]| {
        common::run(
            std::process::Command::new(common::agent_binary())
                .args(["trust", "--root", root.to_str().unwrap()])
                .args(args),
        )
    };
    agent(&["add", public.to_str().unwrap()]).expect(0);
    agent(&["add", other_pub.to_str().unwrap()]).expect(0);
    let list = agent(&["--json", "list"]).expect(0);
    assert_eq!(list.stdout.matches("\"id\"").count(), 2, "{}", list.stdout);
    let unsigned = common::run(
        std::process::Command::new(common::agent_binary())
            .args(["receive", "--root", root.to_str().unwrap()])
            .stdin(fs::File::open(artifact(&build, "v2")).unwrap()),
    )
    .expect(1);
    assert!(
        unsigned.stderr.contains("an unsigned release was refused"),
        "{}",
        unsigned.stderr
    );
    agent(&["revoke", other_pub.to_str().unwrap()]).expect(0);
    let last = agent(&["revoke", &key_id(&public)]).expect(0);
    // Down to no key, the host says what that means.
    assert!(
        last.stderr.contains("it takes unsigned releases"),
        "{}",
        last.stderr
    );
    let list = agent(&["--json", "list"]).expect(0);
    assert!(!list.stdout.contains("\"id\""), "{}", list.stdout);
    common::run(
        std::process::Command::new(common::agent_binary())
            .args(["receive", "--root", root.to_str().unwrap()])
            .stdin(fs::File::open(artifact(&build, "v2")).unwrap()),
    )
    .expect(0);
    // The journal says who changed the trust store.
    let journal = fs::read_to_string(root.join(".ship/journal.jsonl")).unwrap();
    assert_eq!(
        journal.matches("\"op\":\"trust-add\"").count(),
        2,
        "{journal}"
    );
    assert_eq!(
        journal.matches("\"op\":\"trust-revoke\"").count(),
        2,
        "{journal}"
    );
}
