//! Permissions on a host deployed to as an account of its own: over a real sshd
//! (`scripts/fleet`), ship logs in as a non-root deploy account, and the app's own
//! account may then write none of what the agent trusts — its binary, the lock, the
//! journal, the trust store — and an agent that others could replace refuses to run.
//! Needs root (to make the two accounts and the fleet) and openssh-server.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::SshFleet;

const DEPLOY: &str = "ship-deploy";
const APP: &str = "ship-app";

/// Makes the system account `name` (with a shell, so that sshd can run commands as
/// it) unless it exists.
fn account(name: &str) -> u32 {
    let exists = Command::new("id").args(["-u", name]).output().unwrap();
    if !exists.status.success() {
        let made = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh", name])
            .status()
            .unwrap();
        // Another test process may have made it in between.
        assert!(
            made.success() || Command::new("id").arg(name).status().unwrap().success(),
            "useradd {name}"
        );
    }
    // A password of `!` locks the account for sshd, public keys included; `*`
    // only rules out logging in by password.
    let unlocked = Command::new("usermod")
        .args(["-p", "*", name])
        .status()
        .unwrap();
    assert!(unlocked.success(), "usermod -p '*' {name}");
    let id = Command::new("id").args(["-u", name]).output().unwrap();
    String::from_utf8(id.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Runs the shell command line `script` as the app's account; whether it succeeded.
fn as_app(script: &str) -> bool {
    Command::new("runuser")
        .args(["-u", APP, "--", "sh", "-c", script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn deploying_as_its_own_account_leaves_the_app_account_nothing_to_write() {
    if !SshFleet::can_run() {
        return;
    }
    let deploy_uid = account(DEPLOY);
    account(APP);
    let fleet = SshFleet::start(1, None);
    // Plain files: the example app's virtualenv needs this machine's interpreter,
    // under /root, which the deploy account cannot reach.
    let build = common::LocalFleet::bare(&["unused"]);
    fleet.artifacts_in(&build.dir.path().join("dist"));
    let cwd = build.dir.path();
    for version in ["v1", "v2"] {
        let tree = cwd.join(format!("tree-{version}"));
        common::Tree::new(&tree)
            .file("ship.toml", "[app]\nname = \"shop\"\n")
            .file("public/version.txt", format!("{version}\n"));
        common::ship_in(cwd, &["pack", tree.to_str().unwrap(), "--version", version]).expect(0);
    }
    // sshd reads authorized_keys as the account logging in, and the app's account
    // looks at the host's files from outside: both need a way in.
    chmod(fleet.dir.path(), 0o755);
    chmod(&fleet.dir.path().join("authorized_keys"), 0o644);
    let config = fleet.dir.path().join("ship.toml");
    let toml = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        toml.replace("user = \"root\"", &format!("user = \"{DEPLOY}\"")),
    )
    .unwrap();
    let root = fleet.root("h1");
    fs::create_dir_all(&root).unwrap();
    nix::unistd::chown(&root, Some(nix::unistd::Uid::from_raw(deploy_uid)), None).unwrap();

    fleet.ship(cwd, &["deploy", "v1", "--hosts", "*"]).expect(0);
    common::ship_in(cwd, &["key", "generate", "--out", "team", "--unencrypted"]).expect(0);
    let public = cwd.join("team.pub");
    let v2 = cwd.join("dist/shop-v2.tar.zst");
    common::ship_in(cwd, &["sign", v2.to_str().unwrap(), "--key", "team.key"]).expect(0);
    fleet
        .ship(
            cwd,
            &[
                "trust",
                "add",
                public.to_str().unwrap(),
                "--first-contact",
                "--hosts",
                "h1",
            ],
        )
        .expect(0);
    let ship_dir = root.join(".ship");
    let agent = ship_dir.join("bin/ship-agent");
    let journal = ship_dir.join("journal.jsonl");
    let lock = ship_dir.join("lock");
    let trust = ship_dir.join("trust");
    for path in [&ship_dir, &agent, &journal, &lock, &trust] {
        assert_eq!(
            fs::metadata(path).unwrap().uid(),
            deploy_uid,
            "{} belongs to the deploy account",
            path.display()
        );
    }
    assert_eq!(mode(&lock), 0o600);

    let quoted = |p: &Path| format!("'{}'", p.display());
    let tries = [
        format!("echo x >> {}", quoted(&journal)),
        format!(": > {}", quoted(&agent)),
        format!("touch {}/other-agent", quoted(agent.parent().unwrap())),
        format!("touch {}/x", quoted(&ship_dir)),
        format!("mv {} {}/old", quoted(&ship_dir), quoted(&root)),
        // Holding the lock needs only a read descriptor.
        format!("exec 3< {}", quoted(&lock)),
        format!("touch {}/x", quoted(&trust)),
        format!(
            "for f in {}/*; do echo x >> \"$f\" && exit 0; done; exit 1",
            quoted(&trust)
        ),
        format!("ln -sfn releases/v9 {}/current", quoted(&root)),
    ];
    for script in &tries {
        assert!(!as_app(script), "the app's account could: {script}");
    }
    // Reading the release it runs is all it needs.
    assert!(as_app(&format!(
        "cat {}/current/public/version.txt",
        quoted(&root)
    )));

    // What a loose umask or an older agent left writable is tightened by the next
    // operation that takes the lock.
    // (The directories above the agent it refuses instead: see below.)
    chmod(&journal, 0o666);
    chmod(&lock, 0o644);
    chmod(&trust, 0o777);
    fleet.ship(cwd, &["deploy", "v2", "--hosts", "*"]).expect(0);
    assert_eq!(mode(&journal), 0o644);
    assert_eq!(mode(&lock), 0o600);
    assert_eq!(mode(&trust), 0o755);

    // An agent that others could replace refuses to run, and ship says why.
    chmod(agent.parent().unwrap(), 0o777);
    let refused = fleet.ship(cwd, &["rollback", "--hosts", "*"]).expect(1);
    let row = refused.row("h1");
    assert!(
        row.contains("refusing to run /srv/shop/.ship/bin/ship-agent")
            && row.contains("/srv/shop/.ship/bin can be written by others (mode 0777)"),
        "{row}"
    );
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v2"));
    chmod(agent.parent().unwrap(), 0o755);
    fleet.ship(cwd, &["rollback", "--hosts", "*"]).expect(0);
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v1"));
}
