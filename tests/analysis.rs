//! `ship analyze` against a real Prometheus (Debian's, unpacked by
//! `scripts/test-deps`), started on loopback by the test and stopped by pid. It
//! scrapes, every second, one metrics page per host, served by Python's
//! `http.server` from files the test rewrites: the values are the test's to set.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{LocalFleet, free_port};

/// A child process killed (by pid) and reaped when dropped, even when the test fails.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command line's words.
fn words(line: &str) -> Vec<&str> {
    line.split(' ').collect()
}

/// The metrics pages of `hosts`, served from `dir`/<host>/metrics.
struct Pages {
    dir: PathBuf,
    port: u16,
    _server: Server,
}

impl Pages {
    fn start(dir: &Path, hosts: &[&str]) -> Pages {
        let port = free_port();
        for host in hosts {
            fs::create_dir_all(dir.join(host)).unwrap();
        }
        let server = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pages = Pages {
            dir: dir.to_owned(),
            port,
            _server: Server(server),
        };
        for host in hosts {
            pages.set(host, 0.0, 0.0);
        }
        common::wait_until("the metrics pages are served", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        pages
    }

    /// What `host` reports: its error ratio and its latency.
    fn set(&self, host: &str, errors: f64, latency: f64) {
        let page = format!(
            "# TYPE shop_error_ratio gauge\nshop_error_ratio {errors}\n# TYPE shop_latency_seconds gauge\nshop_latency_seconds {latency}\n"
        );
        let path = self.dir.join(host).join("metrics");
        fs::write(path.with_extension("tmp"), page).unwrap();
        fs::rename(path.with_extension("tmp"), path).unwrap();
    }
}

/// A Prometheus scraping `pages` every second, each host labelled `host`.
struct Prometheus {
    url: String,
    server: Option<Server>,
}

impl Prometheus {
    fn start(dir: &Path, pages: &Pages, hosts: &[&str]) -> Prometheus {
        let mut config = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
        for host in hosts {
            config += &format!(
                "  - job_name: {host}\n    metrics_path: /{host}/metrics\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n        labels:\n          host: {host}\n",
                pages.port
            );
        }
        Prometheus::start_with(dir, &config)
    }

    /// A Prometheus with `config` (its prometheus.yml).
    fn start_with(dir: &Path, config: &str) -> Prometheus {
        let binary = common::test_cache().join("prometheus/usr/bin/prometheus");
        fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            server: Some(Server(child)),
        };
        let ready = format!("{}/-/ready", prometheus.url);
        common::wait_until("prometheus is ready", || {
            ureq::get(&ready).call().is_ok_and(|r| r.status() == 200)
        });
        prometheus
    }

    /// The value Prometheus has now for `query` (a single series).
    fn value(&self, query: &str) -> Option<f64> {
        let mut response = ureq::get(format!("{}/api/v1/query", self.url))
            .query("query", query)
            .call()
            .ok()?;
        let json: serde_json::Value =
            serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until Prometheus has scraped `value` for `query`.
    fn wait_for(&self, query: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.value(query) != Some(value) {
            assert!(
                Instant::now() < deadline,
                "prometheus never saw {query} = {value}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(&mut self) {
        self.server.take();
    }
}

fn can_run() -> bool {
    common::skip::runs_here(
        Path::new("/usr/bin/python3").exists() && Path::new("/usr/bin/apt-get").exists(),
        "python3 and apt-get (for Debian's prometheus package)",
    )
}

/// The error-rate metric (an absolute bound) and the latency one (a loose bound,
/// and the canary against the baseline) of the Prometheus tests, asking `url`.
fn error_and_latency(url: &str) -> String {
    format!(
        r#"[[analysis.metric]]
name = "error-rate"
provider = "prometheus"
url = "{url}"
query = 'max(shop_error_ratio{{host=~"{{{{hosts_regex}}}}"}})'
max = 0.05

[[analysis.metric]]
name = "latency"
provider = "prometheus"
url = "{url}"
query = 'max(shop_latency_seconds{{host=~"{{{{hosts_regex}}}}"}})'
max = 5
baseline = true
min_samples = 4
"#
    )
}

/// A fleet of h1..h3 whose ship.toml has `analysis` appended.
fn fleet_with(analysis: &str) -> LocalFleet {
    let fleet = LocalFleet::bare(&["h1", "h2", "h3"]);
    let path = fleet.dir.path().join("ship.toml");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text + analysis).unwrap();
    fleet
}

#[test]
fn analyze_judges_real_metrics_and_names_what_fails() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let hosts = ["h1", "h2", "h3"];
    let pages = Pages::start(&work.path().join("pages"), &hosts);
    let mut prometheus = Prometheus::start(work.path(), &pages, &hosts);
    let url = &prometheus.url;
    let metrics = error_and_latency(url);
    let fleet = fleet_with(&format!(
        r#"[analysis]
interval = "1s"
count = 4
no_data = "inconclusive"

{metrics}"#
    ));
    for host in hosts {
        pages.set(host, 0.01, 0.1);
    }
    prometheus.wait_for("count(shop_error_ratio == 0.01)", 3.0);
    let run = fleet.ship(&["analyze", "--hosts", "h1"]).expect(0);
    assert!(
        run.stderr.contains("error-rate h1: 0.01 (<= 0.05) pass"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("latency") && run.stdout.contains("p = "),
        "{}",
        run.stdout
    );

    // h1's errors climb; its latency doubles, within the loose absolute bound that
    // only the comparison with h2 and h3 catches.
    pages.set("h1", 0.2, 0.25);
    prometheus.wait_for("shop_latency_seconds{host=\"h1\"}", 0.25);
    let run = fleet
        .ship(&["analyze", "--hosts", "h1", "--json"])
        .expect(1);
    let verdicts: Vec<serde_json::Value> = common::events(&run, "analysis");
    let verdict = |metric: &str| {
        verdicts
            .iter()
            .find(|v| v["metric"] == metric)
            .unwrap_or_else(|| panic!("no {metric} in {}", run.stdout))
            .clone()
    };
    assert_eq!(verdict("error-rate")["verdict"], "fail", "{}", run.stdout);
    assert_eq!(verdict("error-rate")["values"][0], 0.2, "{}", run.stdout);
    let latency = verdict("latency");
    assert_eq!(latency["verdict"], "fail", "{latency}");
    assert!(
        latency["why"]
            .as_str()
            .unwrap()
            .contains("the canary is worse"),
        "{latency}"
    );
    // Every measurement came as an event, with its value and bound.
    let measured = common::events(&run, "measurement");
    assert_eq!(measured.len(), 8, "{}", run.stdout);
    assert!(
        measured
            .iter()
            .all(|m| m["hosts"] == serde_json::json!(["h1"]))
    );

    // h2 alone is healthy.
    fleet.ship(&["analyze", "--hosts", "h2"]).expect(0);

    // A query Prometheus rejects is refused before anything is measured, naming the
    // metric.
    let bad = fleet_with(&format!(
        "[analysis]\n[[analysis.metric]]\nname = \"broken\"\nprovider = \"prometheus\"\nurl = \"{url}\"\nquery = 'sum(rate(shop_error_ratio['\nmax = 1\n"
    ));
    let run = bad.ship(&["analyze"]).expect(2);
    assert!(
        run.stderr.contains("metric \"broken\"") && run.stderr.contains("400"),
        "{}",
        run.stderr
    );

    // Prometheus gone: no data, which this policy calls inconclusive, and says why.
    prometheus.stop();
    let run = fleet.ship(&["analyze", "--hosts", "h2"]).expect(1);
    assert!(
        run.stderr.contains("backend unavailable") && run.stderr.contains("INCONCLUSIVE"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_analysis_configuration_is_refused_naming_the_metric() {
    let fleet = fleet_with(
        "[analysis]\n[[analysis.metric]]\nname = \"rate\"\nprovider = \"prometheus\"\nurl = \"http://127.0.0.1:9\"\nquery = 'x{h=\"{{host}}\"}'\nmax = 1\n",
    );
    let run = fleet.ship(&["analyze"]).expect(2);
    assert!(
        run.stderr.contains("metric \"rate\"") && run.stderr.contains("unknown variable {{host}}"),
        "{}",
        run.stderr
    );
    let fleet = fleet_with(
        "[analysis]\n[[analysis.metric]]\nname = \"rate\"\nprovider = \"influx\"\nquery = 'x'\nmax = 1\n",
    );
    let run = fleet.ship(&["analyze"]).expect(2);
    assert!(
        run.stderr.contains("unknown provider \"influx\""),
        "{}",
        run.stderr
    );
    let plain = LocalFleet::bare(&["h1"]);
    let run = plain.ship(&["analyze"]).expect(2);
    assert!(
        run.stderr.contains("has no [[analysis.metric]]"),
        "{}",
        run.stderr
    );
}

#[test]
fn command_and_http_providers() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pages = Pages::start(&work.path().join("pages"), &["h1"]);
    fs::write(
        work.path().join("pages/h1/rate.json"),
        r#"{"data": {"rate": 0.5}}"#,
    )
    .unwrap();
    let fleet = fleet_with(&format!(
        r#"[analysis]
interval = "1s"
count = 1

[[analysis.metric]]
name = "queue"
provider = "command"
query = "echo $SHIP_HOSTS | wc -c"
max = 3

[[analysis.metric]]
name = "rate"
provider = "http"
url = "http://127.0.0.1:{}/{{{{hosts}}}}/rate.json"
pointer = "/data/rate"
min = 0.4
"#,
        pages.port
    ));
    // "h1\n" is 3 bytes: within the bound; the page's 0.5 is above its minimum.
    let run = fleet.ship(&["analyze", "--hosts", "h1"]).expect(0);
    assert!(
        run.stderr.contains("queue h1: 3 (<= 3) pass"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("rate h1: 0.5 (>= 0.4) pass"),
        "{}",
        run.stderr
    );
    // Two hosts make a longer line; a page without the number is no data, which
    // counts as a failure by default.
    fs::create_dir_all(work.path().join("pages/h1,h2")).unwrap();
    fs::write(work.path().join("pages/h1,h2/rate.json"), r#"{"data": {}}"#).unwrap();
    let run = fleet.ship(&["analyze", "--hosts", "h1,h2"]).expect(1);
    assert!(
        run.stderr.contains("queue h1,h2: 6 (<= 3) FAIL"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("rate h1,h2: -"), "{}", run.stderr);
}

/// A release of the example app whose metrics page (public/metrics, served from
/// each host's `current`) reports `errors` and `latency`.
fn pack_reporting(fleet: &LocalFleet, version: &str, errors: f64, latency: f64) {
    fleet.pack_with(version, "[app]\nname = \"shop\"\n", |tree| {
        fs::write(
            tree.join("public/metrics"),
            format!(
                "# TYPE shop_error_ratio gauge\nshop_error_ratio {errors}\n# TYPE shop_latency_seconds gauge\nshop_latency_seconds {latency}\n"
            ),
        )
        .unwrap();
    });
}

#[test]
fn rollouts_are_judged_by_their_metrics_and_reverted_when_they_drop() {
    if !can_run() {
        return;
    }
    let hosts = ["h1", "h2", "h3"];
    let fleet = LocalFleet::bare(&hosts);
    pack_reporting(&fleet, "v1", 0.01, 0.1);
    pack_reporting(&fleet, "v2", 0.01, 0.1);
    // Healthy, with a fifth of its requests failing.
    pack_reporting(&fleet, "v3", 0.2, 0.1);
    // Healthy, error-free, and two and a half times slower: within the loose bound.
    pack_reporting(&fleet, "v4", 0.01, 0.25);
    fleet.ship(&["deploy", "v1", "--hosts", "*"]).expect(0);

    // Prometheus scrapes what each host's current release serves.
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(fleet.dir.path().join("hosts"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server(server);
    let mut config = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
    for host in hosts {
        config += &format!(
            "  - job_name: {host}\n    metrics_path: /{host}/current/public/metrics\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n        labels:\n          host: {host}\n"
        );
    }
    let mut prometheus = Prometheus::start_with(work.path(), &config);
    prometheus.wait_for("count(shop_error_ratio == 0.01)", 3.0);
    let url = prometheus.url.clone();
    let metrics = error_and_latency(&url);
    let analysis = |no_data: &str| {
        format!(
            r#"[analysis]
interval = "1s"
count = 4
initial_delay = "2s"
no_data = "{no_data}"

{metrics}
[[analysis.metric]]
name = "error-growth"
provider = "prometheus"
url = "{url}"
query = 'max(shop_error_ratio{{host=~"{{{{hosts_regex}}}}"}})'
max_increase = "100%"
"#
        )
    };
    let toml = fleet.dir.path().join("ship.toml");
    let plain = fs::read_to_string(&toml).unwrap();
    // The deploy log gets every event the webhooks get.
    let plain = plain.replace("[groups]", "[notify]\nlog = \"deploys.log\"\n\n[groups]");
    fs::write(&toml, plain.clone() + &analysis("fail")).unwrap();

    // Unchanged metrics: every wave passes.
    let run = fleet
        .ship(&[
            "deploy", "v2", "--hosts", "*", "--canary", "1", "--batch", "1",
        ])
        .expect(0);
    assert!(
        run.stderr
            .contains("wave 1 (canary): analyzing 3 metric(s) over h1 against h2, h3"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("error-rate h3: 0.01 (<= 0.05) pass"),
        "{}",
        run.stderr
    );
    for host in hosts {
        assert_eq!(fleet.current(host).as_deref(), Some("releases/v2"));
    }

    // The canary's error rate climbs: it is reverted, and no other host switches.
    // Its analysis runs beside its health watch.
    let run = fleet
        .ship(&words(
            "deploy v3 --hosts * --canary 1 --canary-wait 3s --json",
        ))
        .expect(1);
    let phases = common::events(&run, "phase");
    assert!(
        phases.iter().any(|p| p["phase"] == "watch"),
        "no health watch: {}",
        run.stdout
    );
    for host in hosts {
        assert_eq!(
            fleet.current(host).as_deref(),
            Some("releases/v2"),
            "{host}"
        );
    }
    let results = common::events(&run, "result");
    let h1 = results.iter().find(|r| r["host"] == "h1").unwrap();
    assert!(
        h1["detail"].as_str().unwrap().contains("error-rate")
            && h1["detail"]
                .as_str()
                .unwrap()
                .contains("0.2 against <= 0.05"),
        "{h1}"
    );
    assert_eq!(h1["failure"]["kind"], "analysis", "{h1}");
    let verdicts = common::events(&run, "analysis");
    assert!(
        verdicts
            .iter()
            .any(|v| v["metric"] == "error-rate" && v["verdict"] == "fail")
    );
    // Against the same host when the deploy started (0.01 then): twenty times.
    let growth = verdicts
        .iter()
        .find(|v| v["metric"] == "error-growth")
        .unwrap();
    assert_eq!(growth["verdict"], "fail", "{growth}");
    assert!(
        growth["bound"]
            .as_str()
            .unwrap()
            .contains("+100% of 0.01 before"),
        "{growth}"
    );
    // The canary's journal keeps the judgement, with its numbers.
    let journal = fs::read_to_string(fleet.root("h1").join(".ship/journal.jsonl")).unwrap();
    let judged: serde_json::Value = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|r| r["op"] == "analysis")
        .expect("an analysis record");
    assert_eq!(judged["result"], "failed", "{judged}");
    assert_eq!(judged["analysis"]["version"], "v3", "{judged}");
    assert_eq!(
        judged["analysis"]["metrics"][0]["values"][3], 0.2,
        "{judged}"
    );
    let log = fs::read_to_string(fleet.dir.path().join("deploys.log")).unwrap();
    let event = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|e| e["event"] == "analysis")
        .unwrap_or_else(|| panic!("no analysis event in {log}"));
    assert_eq!(event["version"], "v3", "{event}");
    assert_eq!(event["metrics"][0]["metric"], "error-rate", "{event}");
    assert_eq!(event["metrics"][0]["verdict"], "fail", "{event}");
    // Slower but error-free: only the comparison with the hosts still on v2
    // catches it (its absolute bound is 5 s).
    let run = fleet
        .ship(&["deploy", "v4", "--hosts", "*", "--canary", "1"])
        .expect(1);
    assert!(run.stdout.contains("the canary is worse"), "{}", run.stdout);
    for host in hosts {
        assert_eq!(
            fleet.current(host).as_deref(),
            Some("releases/v2"),
            "{host}"
        );
    }

    // Under halt, the canary stays on v3; `ship analyze` then judges it as the
    // rollout did.
    let run = fleet
        .ship(&words(
            "deploy v3 --hosts * --canary 1 --on-failure halt --json",
        ))
        .expect(1);
    let rollout = common::events(&run, "analysis");
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v3"));
    let run = fleet
        .ship(&["analyze", "--hosts", "h1", "--version", "v3", "--json"])
        .expect(1);
    let now = common::events(&run, "analysis");
    for metric in ["error-rate", "latency"] {
        let of = |events: &[serde_json::Value]| {
            let e = events
                .iter()
                .find(|e| e["metric"] == metric)
                .unwrap()
                .clone();
            (
                e["verdict"].clone(),
                e["bound"].clone(),
                e["values"][3].clone(),
            )
        };
        assert_eq!(of(&rollout), of(&now), "{metric}");
    }

    // Prometheus stopped in the middle of the canary's analysis, under a policy
    // that calls no data inconclusive: the rollout halts after the canary, which
    // stays for a human to judge.
    fs::write(&toml, plain + &analysis("inconclusive")).unwrap();
    let run = common::run_until(
        &mut fleet.command(&["deploy", "v1", "--hosts", "*", "--canary", "1"]),
        "error-rate h1: 0.01",
        |_| prometheus.stop(),
    )
    .expect(1);
    assert!(run.stderr.contains("backend unavailable"), "{}", run.stderr);
    assert!(
        run.stderr.contains("its metric analysis was inconclusive"),
        "{}",
        run.stderr
    );
    assert_eq!(fleet.current("h1").as_deref(), Some("releases/v1"));
    assert_eq!(fleet.current("h2").as_deref(), Some("releases/v2"));
}

#[test]
fn a_query_the_backend_rejects_stops_a_deploy_before_anything_moves() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pages = Pages::start(&work.path().join("pages"), &["h1"]);
    let prometheus = Prometheus::start(work.path(), &pages, &["h1"]);
    let fleet = LocalFleet::new(&["h1"]);
    let toml = fleet.dir.path().join("ship.toml");
    let text = fs::read_to_string(&toml).unwrap();
    fs::write(
        &toml,
        text + &format!(
            "[analysis]\n[[analysis.metric]]\nname = \"errors\"\nprovider = \"prometheus\"\nurl = \"{}\"\nquery = 'rate(x[5m'\nmax = 1\n",
            prometheus.url
        ),
    )
    .unwrap();
    for args in [
        &["deploy", "v1", "--hosts", "*", "--plan"][..],
        &["deploy", "v1", "--hosts", "*"],
        &["check", "v1"],
    ] {
        let run = fleet.ship(args).expect(2);
        assert!(run.stderr.contains("metric \"errors\""), "{}", run.stderr);
    }
    assert!(!fleet.root("h1").join("releases").exists());
}

/// Debian's graphite-web (its render API), run by Django's server on loopback over
/// whisper files the test writes with the whisper tools of graphite-carbon.
struct Graphite {
    url: String,
    whisper: PathBuf,
    server: Option<Server>,
}

impl Graphite {
    fn start(dir: &Path) -> Graphite {
        let storage = dir.join("storage");
        fs::create_dir_all(storage.join("whisper")).unwrap();
        fs::create_dir_all(storage.join("log/webapp")).unwrap();
        fs::write(
            dir.join("ship_test_graphite.py"),
            format!(
                "STORAGE_DIR = {:?}\nLOG_DIR = {:?}\nSECRET_KEY = 'ship-test'\n",
                storage.display().to_string(),
                storage.join("log/webapp").display().to_string()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = fs::File::create(dir.join("graphite.log")).unwrap();
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "django", "runserver", "--noreload"])
            .arg(format!("127.0.0.1:{port}"))
            .env("PYTHONPATH", dir)
            .env("GRAPHITE_SETTINGS_MODULE", "ship_test_graphite")
            .env("DJANGO_SETTINGS_MODULE", "graphite.settings")
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let graphite = Graphite {
            url: format!("http://127.0.0.1:{port}"),
            whisper: storage.join("whisper"),
            server: Some(Server(child)),
        };
        let probe = format!("{}/render?target=x&format=json", graphite.url);
        common::wait_until("graphite-web is ready", || {
            ureq::get(&probe).call().is_ok_and(|r| r.status() == 200)
        });
        graphite
    }

    /// `shop.<host>.errors` is `value` over the last ten seconds.
    fn set(&self, host: &str, value: f64) {
        let file = self.whisper.join("shop").join(host).join("errors.wsp");
        if !file.exists() {
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            common::tool(
                "whisper-create",
                &[file.to_str().unwrap(), "1s:1h"],
                &self.whisper,
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let points: Vec<String> = (now - 10..=now).map(|t| format!("{t}:{value}")).collect();
        let mut args = vec![file.to_str().unwrap()];
        args.extend(points.iter().map(String::as_str));
        common::tool("whisper-update", &args, &self.whisper);
    }
}

#[test]
fn graphite_render_api() {
    if !common::skip::runs_here(
        Path::new("/usr/bin/whisper-create").exists()
            && Path::new("/usr/lib/python3/dist-packages/graphite/settings.py").exists(),
        "Debian's graphite-web and graphite-carbon (scripts/test installs them)",
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut graphite = Graphite::start(work.path());
    graphite.set("h1", 0.01);
    graphite.set("h2", 0.01);
    let metric = |query: &str| {
        format!(
            "[analysis]\ninterval = \"5s\"\ncount = 1\n\n[[analysis.metric]]\nname = \"errors\"\nprovider = \"graphite\"\nurl = \"{}\"\nquery = '{query}'\nmax = 0.05\n",
            graphite.url
        )
    };
    let fleet = fleet_with(&metric("maxSeries(shop.{{{hosts}}}.errors)"));
    let run = fleet.ship(&["analyze", "--hosts", "h1,h2"]).expect(0);
    assert!(
        run.stderr.contains("errors h1,h2: 0.01 (<= 0.05) pass"),
        "{}",
        run.stderr
    );
    graphite.set("h1", 0.3);
    let run = fleet.ship(&["analyze", "--hosts", "h1"]).expect(1);
    assert!(
        run.stderr.contains("errors h1: 0.3 (<= 0.05) FAIL"),
        "{}",
        run.stderr
    );
    fleet.ship(&["analyze", "--hosts", "h2"]).expect(0);
    // Several series are not one number; a function Graphite does not know is a
    // query it rejects.
    let several = fleet_with(&metric("shop.*.errors"));
    let run = several.ship(&["analyze"]).expect(2);
    assert!(run.stderr.contains("gives 2 series"), "{}", run.stderr);
    let unknown = fleet_with(&metric("nosuchfunction(shop.h1.errors)"));
    let run = unknown.ship(&["analyze"]).expect(2);
    assert!(run.stderr.contains("unknown function"), "{}", run.stderr);
    // Graphite gone: no data, which counts as a failure by default.
    graphite.server.take();
    let run = fleet.ship(&["analyze", "--hosts", "h2"]).expect(1);
    assert!(run.stderr.contains("backend unavailable"), "{}", run.stderr);
}

/// The example app's web servers that deploys started on local hosts (under
/// `shared/tmp/pids/web.pid`): killed by pid when dropped.
struct WebServers(Vec<PathBuf>);

impl Drop for WebServers {
    fn drop(&mut self) {
        for root in &self.0 {
            let pidfile = root.join("shared/tmp/pids/web.pid");
            if let Some(pid) = fs::read_to_string(pidfile)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
}

/// Requests to `/checkout` on every port, every 20 ms, until dropped.
struct Traffic(
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    Option<std::thread::JoinHandle<()>>,
);

impl Traffic {
    fn start(ports: Vec<u16>) -> Traffic {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = stop.clone();
        let thread = std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for port in &ports {
                    let _ = ureq::get(format!("http://127.0.0.1:{port}/checkout")).call();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Traffic(stop, Some(thread))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.1.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn the_example_apps_error_rate_reverts_a_canary_that_passes_its_health_check() {
    if !can_run() {
        return;
    }
    let hosts = ["web1", "web2"];
    let fleet = LocalFleet::bare(&hosts);
    let ports: Vec<u16> = hosts.iter().map(|_| free_port()).collect();
    for (host, port) in hosts.iter().zip(&ports) {
        fleet.configure_host(host, &format!("env = {{ SHOP_PORT = \"{port}\" }}"));
    }
    let _servers = WebServers(hosts.iter().map(|h| fleet.root(h)).collect());
    // The example app as it is (its hook, its restart, its health check), and a
    // v2 that fails half of its checkouts.
    let config = fs::read_to_string(common::example_app().join("ship.toml")).unwrap();
    fleet.pack_with("v1", &config, |_| {});
    fleet.pack_with("v2", &config, |tree| {
        let web = common::shop_module(tree);
        let code = fs::read_to_string(&web).unwrap();
        assert!(code.contains("CHECKOUT_FAILURES = 0.0\n"));
        fs::write(
            &web,
            code.replace("CHECKOUT_FAILURES = 0.0\n", "CHECKOUT_FAILURES = 0.5\n"),
        )
        .unwrap();
    });
    fleet.ship(&["deploy", "v1", "--hosts", "*"]).expect(0);
    let _traffic = Traffic::start(ports.clone());

    // Prometheus scrapes each host's /metrics.
    let work = tempfile::tempdir().unwrap();
    let mut config = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
    for (host, port) in hosts.iter().zip(&ports) {
        config += &format!(
            "  - job_name: {host}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n        labels:\n          host: {host}\n"
        );
    }
    let prometheus = Prometheus::start_with(work.path(), &config);
    prometheus.wait_for("count(shop_requests_total{status=\"200\"} > 0)", 2.0);
    let toml = fleet.dir.path().join("ship.toml");
    let text = fs::read_to_string(&toml).unwrap();
    fs::write(
        &toml,
        text + &format!(
            r#"[analysis]
interval = "1s"
count = 3
initial_delay = "3s"

[[analysis.metric]]
name = "error-rate"
provider = "prometheus"
url = "{}"
query = 'sum(shop_requests_total{{status="500",host=~"{{{{hosts_regex}}}}",release="{{{{version}}}}"}}) / sum(shop_requests_total{{host=~"{{{{hosts_regex}}}}",release="{{{{version}}}}"}})'
max = 0.05
"#,
            prometheus.url
        ),
    )
    .unwrap();

    let run = fleet
        .ship(&["deploy", "v2", "--hosts", "*", "--canary", "1"])
        .expect(1);
    // The canary came up healthy on v2, then its error rate sent it back.
    assert!(run.stderr.contains("web1: health web"), "{}", run.stderr);
    let row = run.row("web1");
    assert!(
        row.contains("error-rate")
            && row.contains("against <= 0.05")
            && row.contains("reverted to v1"),
        "{}",
        run.stdout
    );
    for host in hosts {
        assert_eq!(
            fleet.current(host).as_deref(),
            Some("releases/v1"),
            "{host}"
        );
    }
    // v1 is back, serving without errors.
    let health = ureq::get(format!("http://127.0.0.1:{}/health", ports[0]))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert_eq!(health.trim(), "ok v1");
}

#[test]
fn an_environment_has_its_own_analysis() {
    let fleet = fleet_with(
        r#"[analysis]
interval = "1s"
count = 1

[[analysis.metric]]
name = "everywhere"
provider = "command"
query = "echo 5"
max = 2

[environments.staging]
[environments.staging.hosts.s1]
transport = "local"
root = "hosts/s1"
[environments.staging.analysis]
count = 2

[[environments.staging.analysis.metric]]
name = "staging-only"
provider = "command"
query = "echo 1"
max = 2
"#,
    );
    let run = fleet.ship(&["analyze"]).expect(1);
    assert!(
        run.stderr.contains("everywhere h1,h2,h3: 5 (<= 2) FAIL"),
        "{}",
        run.stderr
    );
    // Its metrics replace the top level's; what it leaves out (the interval) comes
    // from there.
    let run = fleet
        .ship(&["analyze", "--env", "staging", "--json"])
        .expect(0);
    let measured = common::events(&run, "measurement");
    assert_eq!(measured.len(), 2, "{}", run.stdout);
    assert!(
        measured
            .iter()
            .all(|m| m["metric"] == "staging-only" && m["hosts"] == serde_json::json!(["s1"]))
    );
}

#[test]
fn the_failure_limit_and_the_no_data_policy() {
    // The first measurement is bad, the others good: within a limit of one.
    let flaky = "n=$(cat count 2>/dev/null || echo 0); echo $((n + 1)) > count; if [ $n = 0 ]; then echo 9; else echo 1; fi";
    let config = |limit: u32| {
        format!(
            "[analysis]\ninterval = \"1s\"\ncount = 3\nfailure_limit = {limit}\nno_data = \"pass\"\n\n[[analysis.metric]]\nname = \"flaky\"\nprovider = \"command\"\nquery = '{flaky}'\nmax = 2\n\n[[analysis.metric]]\nname = \"silent\"\nprovider = \"command\"\nquery = 'true'\nmax = 2\n"
        )
    };
    let tolerant = fleet_with(&config(1));
    let run = tolerant.ship(&["analyze", "--hosts", "h1"]).expect(0);
    assert!(
        run.stderr.contains("flaky h1: 9 (<= 2) FAIL"),
        "{}",
        run.stderr
    );
    // A command that prints nothing is no data, which this policy passes, saying so.
    assert!(
        run.stderr.contains(
            "silent h1: - pass; no data: \"true\" printed nothing; no data counts as pass"
        ),
        "{}",
        run.stderr
    );
    let strict = fleet_with(&config(0));
    let run = strict.ship(&["analyze", "--hosts", "h1"]).expect(1);
    assert!(
        run.stdout
            .contains("1 of 3 measurement(s) failed (limit 0)"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_later_wave_that_fails_its_analysis_spends_the_budget_like_any_failure() {
    let fleet = LocalFleet::new(&["h1", "h2", "h3"]);
    fleet.ship(&["deploy", "v1", "--hosts", "*"]).expect(0);
    // h2 is the one host whose numbers go bad.
    let toml = fleet.dir.path().join("ship.toml");
    let text = fs::read_to_string(&toml).unwrap();
    fs::write(
        &toml,
        text + "[analysis]\ninterval = \"1s\"\ncount = 1\n\n[[analysis.metric]]\nname = \"h2-errors\"\nprovider = \"command\"\nquery = 'case {{hosts}} in *h2*) echo 1 ;; *) echo 0 ;; esac'\nmax = 0.5\n",
    )
    .unwrap();

    // Within the budget: h2 goes back at once, and the rollout goes on to h3.
    let run = fleet
        .ship(&words("deploy v2 --hosts * --batch 1 --max-failures 1"))
        .expect(1);
    assert!(run.row("h2").contains("h2-errors"), "{}", run.stdout);
    let on = |host: &str| fleet.current(host);
    assert_eq!(on("h1").as_deref(), Some("releases/v2"));
    assert_eq!(on("h2").as_deref(), Some("releases/v1"));
    assert_eq!(on("h3").as_deref(), Some("releases/v2"));

    // Beyond it: the rollout stops after h2's wave, and every host it switched,
    // h1 of the first wave too, goes back.
    let run = fleet
        .ship(&words("deploy v3 --hosts * --batch 1"))
        .expect(1);
    assert!(
        run.stderr.contains("reverted after wave 2"),
        "{}",
        run.stderr
    );
    assert_eq!(on("h1").as_deref(), Some("releases/v2"));
    assert_eq!(on("h2").as_deref(), Some("releases/v1"));
    assert_eq!(on("h3").as_deref(), Some("releases/v2"), "never switched");
}
