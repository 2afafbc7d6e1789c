//! Pull mode: `ship publish` to a real store, and hosts that fetch the release from
//! it themselves. The stores are real servers on loopback (tests/common/store.rs):
//! s3s-fs for S3 and nginx for plain HTTP; the hosts are local app roots and, for
//! the end-to-end scenarios, real sshd hosts (scripts/fleet).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::store::{Nginx, S3};
use common::{LocalFleet, SshFleet, events, run};

/// Appends `text` to the fleet file at `path`.
fn add_to(path: &Path, text: &str) {
    let mut toml = fs::read_to_string(path).unwrap();
    toml.push_str(text);
    fs::write(path, toml).unwrap();
}

/// `[store]` for `url` (and an S3 endpoint).
fn store_table(url: &str, endpoint: Option<&str>, extra: &str) -> String {
    let mut table = format!("[store]\nurl = \"{url}\"\n");
    if let Some(endpoint) = endpoint {
        table.push_str(&format!("endpoint = \"{endpoint}\"\n"));
    }
    table.push_str(extra);
    table
}

/// A `SHIP_AGENT` that runs the real agent, but first, for `fetch`, sleeps
/// `FETCH_DELAY` seconds when that is set, and on the host named by `NO_STORE` sends
/// its requests to a proxy that refuses them: that host cannot reach the store.
fn agent_wrapper(dir: &Path) -> PathBuf {
    let path = dir.join("agent-wrapper");
    fs::write(
        &path,
        format!(
            "#!/bin/sh\n\
             case \" $* \" in *\" fetch \"*) [ -n \"$FETCH_DELAY\" ] && sleep \"$FETCH_DELAY\";; esac\n\
             if [ -n \"$NO_STORE\" ] && [ \"$SHIP_HOST\" = \"$NO_STORE\" ]; then\n\
               export ALL_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9\n\
             fi\n\
             exec {} \"$@\"\n",
            common::agent_binary().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// What a host's app root holds besides complete releases: staging leftovers.
fn leftovers(root: &Path) -> Vec<String> {
    fs::read_dir(root.join(".ship/incoming"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn publishing_uploads_once_and_never_overwrites_a_release() {
    if !common::store::can_run() {
        return;
    }
    let nginx = Nginx::start();
    let s3 = S3::start();
    let fleet = LocalFleet::bare(&["h1"]);
    fleet.pack("v1");
    let file_store = fleet.dir.path().join("store");
    for (url, endpoint) in [
        (nginx.url() + "/releases", None),
        ("s3://releases/ship".to_owned(), Some(s3.endpoint())),
        (format!("file://{}", file_store.display()), None),
    ] {
        let config = fleet.dir.path().join("ship.toml");
        let original = fs::read_to_string(&config).unwrap();
        add_to(&config, &store_table(&url, endpoint.as_deref(), ""));
        let publish = |args: &[&str]| {
            let mut cmd = fleet.command(args);
            s3.credentials(&mut cmd);
            run(&mut cmd)
        };
        let first = publish(&["publish", "v1", "--json"]).expect(0);
        let published = &events(&first, "published")[0];
        assert_eq!(published["uploaded"], true, "{url}: {}", first.stdout);
        assert!(published["bytes"].as_u64().unwrap() > 1000, "{url}");
        let again = publish(&["publish", "v1"]).expect(0);
        assert!(
            again.stdout.contains("nothing uploaded"),
            "{url}: {}",
            again.stdout
        );
        fs::write(&config, original).unwrap();
    }
    // Over HTTP, the second publish read the sidecar and sent nothing.
    let puts = nginx
        .requests()
        .iter()
        .filter(|l| l.contains("\"PUT /releases/shop/shop-v1.tar.zst "))
        .count();
    assert_eq!(puts, 1, "{:?}", nginx.requests());
    // In S3 and in the directory, the objects are the artifact's bytes.
    let local = fs::read(fleet.dir.path().join("dist/shop-v1.tar.zst")).unwrap();
    assert_eq!(
        fs::read(s3.object("ship/shop/shop-v1.tar.zst")).unwrap(),
        local
    );
    assert_eq!(
        fs::read(file_store.join("shop/shop-v1.tar.zst")).unwrap(),
        local
    );
    assert_eq!(
        fs::read(nginx.www().join("releases/shop/shop-v1.tar.zst")).unwrap(),
        local
    );

    // Another artifact for v1 (rebuilt with another page) is refused, and the store
    // keeps the first.
    fleet.pack_with("v1", "[app]\nname = \"shop\"\n", |tree| {
        fs::write(tree.join("public/other.txt"), "other\n").unwrap();
    });
    let mut cmd = fleet.command(&[
        "publish",
        "v1",
        "--to",
        &format!("file://{}", file_store.display()),
    ]);
    let refused = run(&mut cmd).expect(1);
    assert!(
        refused
            .stderr
            .contains("already holds another artifact for shop v1")
            && refused.stderr.contains("never overwritten"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        fs::read(file_store.join("shop/shop-v1.tar.zst")).unwrap(),
        local
    );
    // A store of no known kind is a usage error naming the kinds.
    let unknown = fleet
        .ship(&["publish", "v1", "--to", "ftp://example/x"])
        .expect(2);
    assert!(
        unknown.stderr.contains("s3://BUCKET/PREFIX"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn hosts_fetch_a_published_release_from_s3_and_from_http_over_ssh() {
    if !common::store::can_run()
        || !common::skip::runs_here(
            common::skip::is_root() && Path::new("/usr/sbin/sshd").exists(),
            "root and /usr/sbin/sshd (scripts/test installs it)",
        )
    {
        return;
    }
    let mut nginx = Nginx::start();
    let mut s3 = S3::start();
    let fleet = SshFleet::start(2, None);
    let build = LocalFleet::new(&["unused"]);
    let cwd = build.dir.path();
    fleet.artifacts_in(&cwd.join("dist"));
    let config = fleet.dir.path().join("ship.toml");
    let plain = fs::read_to_string(&config).unwrap();
    let ship = |args: &[&str]| {
        let mut cmd = fleet.command(cwd, args);
        s3.credentials(&mut cmd);
        run(&mut cmd)
    };

    // From S3: the hosts get a presigned URL and no credentials.
    add_to(
        &config,
        &store_table("s3://releases/ship", Some(&s3.endpoint()), ""),
    );
    let unpublished = ship(&["deploy", "v1", "--hosts", "*"]).expect(2);
    assert!(
        unpublished
            .stderr
            .contains("shop v1 is not published in s3://releases/ship")
            && unpublished.stderr.contains("ship publish v1"),
        "{}",
        unpublished.stderr
    );
    ship(&["publish", "v1"]).expect(0);
    let deployed = ship(&["-vv", "deploy", "v1", "--hosts", "*", "--json"]).expect(0);
    for host in fleet.hosts() {
        assert_eq!(
            fleet.current(&host).as_deref(),
            Some("releases/v1"),
            "{host}"
        );
    }
    let results = events(&deployed, "result");
    assert_eq!(results.len(), 2, "{}", deployed.stdout);
    for result in &results {
        // Nothing of the artifact went out from here.
        assert_eq!(result["transferred"], 0, "{result}");
        assert!(result["files_sent"].as_u64() > Some(0), "{result}");
    }
    // The signature of the URL is nowhere in ship's log or the hosts' answers.
    assert!(
        !deployed.stderr.contains("X-Amz-Signature")
            && !deployed.stdout.contains("X-Amz-Signature"),
        "{}",
        deployed.stderr
    );
    // `check` and `status` say whether the store holds the release.
    let check = ship(&["check", "v1", "--hosts", "*"]).expect(0);
    assert!(
        check
            .stderr
            .contains("store: s3://releases/ship holds shop v1"),
        "{}",
        check.stderr
    );
    let status = ship(&["status"]).expect(0);
    assert!(status.stderr.contains("holds shop v1"), "{}", status.stderr);

    // From HTTP: the plain URL.
    fs::write(&config, &plain).unwrap();
    add_to(
        &config,
        &store_table(&(nginx.url() + "/releases"), None, ""),
    );
    ship(&["publish", "v2"]).expect(0);
    ship(&["deploy", "v2", "--hosts", "*"]).expect(0);
    for host in fleet.hosts() {
        assert_eq!(
            fleet.current(&host).as_deref(),
            Some("releases/v2"),
            "{host}"
        );
        let verified = fleet.ssh(
            &host,
            "/srv/shop/.ship/bin/ship-agent verify --root /srv/shop v2",
            b"",
        );
        assert_eq!(verified.code, 0, "{host}: {}", verified.stderr);
    }
    let gets = nginx
        .requests()
        .iter()
        .filter(|l| l.contains("\"GET /releases/shop/shop-v2.tar.zst ") && l.contains("\" 200 "))
        .count();
    assert_eq!(gets, 2, "{:?}", nginx.requests());

    // A release this machine has no artifact of is deployed from the store.
    ship(&["publish", "v3"]).expect(0);
    for file in ["shop-v3.tar.zst", "shop-v3.tar.zst.sha256"] {
        fs::remove_file(cwd.join("dist").join(file)).unwrap();
    }
    let plan = ship(&["deploy", "v3", "--hosts", "*", "--plan"]).expect(0);
    assert!(plan.stdout.contains("fetches"), "{}", plan.stdout);
    ship(&["deploy", "v3", "--hosts", "*"]).expect(0);
    for host in fleet.hosts() {
        assert_eq!(
            fleet.current(&host).as_deref(),
            Some("releases/v3"),
            "{host}"
        );
    }

    // A rollback needs no store: both are down.
    nginx.stop();
    drop(std::mem::replace(&mut s3, S3::start()));
    fleet
        .ship(cwd, &["rollback", "--hosts", "*", "--to", "v1"])
        .expect(0);
    for host in fleet.hosts() {
        assert_eq!(
            fleet.current(&host).as_deref(),
            Some("releases/v1"),
            "{host}"
        );
    }
}

/// A local fleet of `hosts` on v1 (pushed), with v2 published to `nginx` and the
/// fleet's store set to it.
fn fleet_on_v1_with_v2_published(
    hosts: &[&str],
    nginx: &Nginx,
    change: impl FnOnce(&Path),
) -> LocalFleet {
    let fleet = LocalFleet::bare(hosts);
    fleet.pack("v1");
    fleet.pack_with("v2", "[app]\nname = \"shop\"\n", change);
    fleet.ship(&["deploy", "v1", "--hosts", "*"]).expect(0);
    add_to(
        &fleet.dir.path().join("ship.toml"),
        &store_table(&(nginx.url() + "/releases"), None, ""),
    );
    fleet.ship(&["publish", "v2"]).expect(0);
    fleet
}

#[test]
fn a_tampered_object_in_the_store_is_refused_by_every_host() {
    if !common::store::can_run() {
        return;
    }
    let nginx = Nginx::start();
    let fleet = fleet_on_v1_with_v2_published(&["h1", "h2", "h3"], &nginx, |_| {});
    let object = nginx.www().join("releases/shop/shop-v2.tar.zst");
    let mut bytes = fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(&object, bytes).unwrap();

    let deploy = fleet.ship(&["deploy", "v2", "--hosts", "*"]).expect(1);
    for host in ["h1", "h2", "h3"] {
        let row = deploy.row(host);
        assert!(row.contains("FAILED"), "{host}: {}", deploy.stdout);
        assert_eq!(
            fleet.current(host).as_deref(),
            Some("releases/v1"),
            "{host}"
        );
        assert_eq!(fleet.releases(host), ["v1"], "{host}");
        assert!(leftovers(&fleet.root(host)).is_empty(), "{host}");
    }
    assert!(
        deploy.stdout.contains("refused") || deploy.stderr.contains("refused"),
        "{}\n{}",
        deploy.stdout,
        deploy.stderr
    );
}

/// A host h1 on v1, with a v2 of 4 MiB more that do not compress published to
/// `nginx`: at a limited rate, long enough a download to cut.
fn fleet_with_a_large_v2(nginx: &Nginx) -> LocalFleet {
    fleet_on_v1_with_v2_published(&["h1"], nginx, |tree| {
        fs::write(
            tree.join("public/noise.bin"),
            common::incompressible(4 << 20),
        )
        .unwrap();
    })
}

#[test]
fn a_download_cut_by_the_store_resumes_where_it_stopped() {
    if !common::store::can_run() {
        return;
    }
    // 4 MiB that do not compress, served at 1 MiB/s: the store goes away a second in.
    let mut nginx = Nginx::start_limited("1m");
    let fleet = fleet_with_a_large_v2(&nginx);
    let mut cmd = fleet.command(&["deploy", "v2", "--hosts", "h1", "--no-progress"]);
    let deploy = common::run_until(&mut cmd, "h1: fetch", |_| {
        std::thread::sleep(std::time::Duration::from_millis(1200));
        nginx.stop();
        std::thread::sleep(std::time::Duration::from_millis(400));
        nginx.restart();
    })
    .expect(0);
    assert!(
        deploy.stderr.contains("broke off after") && deploy.stderr.contains("resuming"),
        "{}",
        deploy.stderr
    );
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v2"));
    // It went on from where it stopped: a second request for the rest.
    let ranged = nginx
        .requests()
        .iter()
        .filter(|l| l.contains("shop-v2.tar.zst") && l.contains("\" 206 "))
        .count();
    assert_eq!(ranged, 1, "{:?}", nginx.requests());
    let verify = run(Command::new(common::agent_binary())
        .args(["verify", "--root"])
        .arg(fleet.root("h1"))
        .arg("v2"));
    assert_eq!(verify.code, 0, "{}", verify.stderr);
}

#[test]
fn a_store_that_stays_down_fails_the_host_and_leaves_it_whole() {
    if !common::store::can_run() {
        return;
    }
    let mut nginx = Nginx::start_limited("1m");
    let fleet = fleet_with_a_large_v2(&nginx);
    let mut cmd = fleet.command(&["deploy", "v2", "--hosts", "h1", "--no-progress"]);
    let deploy = common::run_until(&mut cmd, "h1: fetch", |_| {
        std::thread::sleep(std::time::Duration::from_millis(1000));
        nginx.stop();
    })
    .expect(1);
    assert!(
        deploy.stdout.contains("cannot fetch") && deploy.stdout.contains("broke off after"),
        "{}\n{}",
        deploy.stdout,
        deploy.stderr
    );
    assert!(!deploy.stdout.contains("?"), "{}", deploy.stdout);
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v1"));
    assert_eq!(fleet.releases("h1"), ["v1"]);
    assert!(leftovers(&fleet.root("h1")).is_empty());
}

#[test]
fn a_host_that_cannot_reach_the_store_is_reported_and_the_others_switch() {
    if !common::store::can_run() {
        return;
    }
    let nginx = Nginx::start();
    let fleet = fleet_on_v1_with_v2_published(&["h1", "h2", "h3"], &nginx, |_| {});
    let wrapper = agent_wrapper(fleet.dir.path());
    let mut cmd = fleet.command(&["deploy", "v2", "--hosts", "*", "--max-failures", "1"]);
    cmd.env("SHIP_AGENT", &wrapper).env("NO_STORE", "h2");
    let deploy = run(&mut cmd).expect(1);
    assert!(deploy.row("h2").contains("FAILED"), "{}", deploy.stdout);
    assert!(deploy.stdout.contains("cannot fetch"), "{}", deploy.stdout);
    assert_eq!(fleet.current("h2").as_deref(), Some("releases/v1"));
    for host in ["h1", "h3"] {
        assert_eq!(
            fleet.current(host).as_deref(),
            Some("releases/v2"),
            "{host}"
        );
    }
}

#[test]
fn an_expired_presigned_url_is_a_clear_error() {
    if !common::store::can_run() {
        return;
    }
    let s3 = S3::start();
    let fleet = LocalFleet::bare(&["h1"]);
    fleet.pack("v1");
    add_to(
        &fleet.dir.path().join("ship.toml"),
        &store_table(
            "s3://releases/ship",
            Some(&s3.endpoint()),
            "url_lifetime = \"1s\"\n",
        ),
    );
    let ship = |args: &[&str], delay: Option<&str>| {
        let mut cmd = fleet.command(args);
        s3.credentials(&mut cmd);
        if let Some(delay) = delay {
            cmd.env("SHIP_AGENT", agent_wrapper(fleet.dir.path()))
                .env("FETCH_DELAY", delay);
        }
        run(&mut cmd)
    };
    ship(&["publish", "v1"], None).expect(0);
    // The host gets to the URL three seconds after it was signed for one.
    let late = ship(&["deploy", "v1", "--hosts", "h1"], Some("3")).expect(1);
    assert!(
        late.stdout.contains("cannot fetch")
            && late
                .stdout
                .contains("HTTP 403 Forbidden (AccessDenied: Request has expired)"),
        "{}",
        late.stdout
    );
    assert!(!late.stdout.contains("X-Amz"), "{}", late.stdout);
    assert_eq!(fleet.current("h1"), None);
    // In time, it works.
    ship(&["deploy", "v1", "--hosts", "h1"], None).expect(0);
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v1"));
}

#[test]
fn a_host_that_lacks_what_the_release_needs_downloads_nothing() {
    if !common::store::can_run() {
        return;
    }
    let nginx = Nginx::start();
    let fleet = LocalFleet::bare(&["h1", "h2"]);
    fleet.pack("v1");
    fleet.pack_with(
        "v2",
        "[app]\nname = \"shop\"\n[release]\nrequires.env = [\"SHOP_SECRET\"]\n",
        |_| {},
    );
    fleet.ship(&["deploy", "v1", "--hosts", "*"]).expect(0);
    fleet.configure_host("h2", "env = { SHOP_SECRET = \"s3cret\" }");
    add_to(
        &fleet.dir.path().join("ship.toml"),
        &store_table(&(nginx.url() + "/releases"), None, ""),
    );
    fleet.ship(&["publish", "v2"]).expect(0);
    let deploy = fleet
        .ship(&["deploy", "v2", "--hosts", "*", "--max-failures", "1"])
        .expect(1);
    // h1 lacks the variable: refused at preflight, in the same call as the fetch,
    // before a byte was asked of the store; h2 has it and switches.
    assert!(
        deploy.row("h1").contains("preflight") && deploy.row("h1").contains("SHOP_SECRET"),
        "{}",
        deploy.stdout
    );
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v1"));
    assert_eq!(fleet.current("h2").as_deref(), Some("releases/v2"));
    let gets = nginx
        .requests()
        .iter()
        .filter(|l| l.contains("\"GET /releases/shop/shop-v2.tar.zst "))
        .count();
    assert_eq!(gets, 1, "{:?}", nginx.requests());
    // FROM comes from the host's own answer.
    assert!(deploy.row("h2").contains(" v1 "), "{}", deploy.stdout);
}
