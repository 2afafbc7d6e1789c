//! Metric analysis: the `[analysis]` of ship.toml resolved, each metric measured from
//! its provider (Prometheus's query API, an HTTP endpoint returning JSON, a command
//! that prints a number) and judged: an absolute bound, a change against the same
//! hosts earlier, or the canary hosts against the others (Mann-Whitney U).
//!
//! A backend that rejects a query is a configuration error, named with the metric;
//! one that is down, or has no data, follows the no-data policy and says so. `ship
//! analyze` runs an analysis now and changes nothing.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use manifests::analysis::{AnalysisTable, MetricTable, NoData};
use serde::Serialize;

/// Time allowed for one query.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The significance of the baseline comparison (one-sided).
const ALPHA: f64 = 0.05;

/// An analysis as a run uses it: the table with its defaults.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub interval: Duration,
    pub count: u32,
    pub initial_delay: Duration,
    pub failure_limit: u32,
    pub no_data: NoData,
    pub metrics: Vec<MetricTable>,
}

impl Analysis {
    /// `table` with its defaults; `None` when it names no metric.
    pub fn resolve(table: &AnalysisTable) -> Option<Analysis> {
        if table.metrics.is_empty() {
            return None;
        }
        let interval = table.interval.unwrap_or(Duration::from_secs(10));
        // A duration is a measurement each interval, the first at its start.
        let over = table.duration.map(|d| {
            let n = d.as_secs_f64() / interval.as_secs_f64().max(0.001);
            (n.floor() as u32).saturating_add(1)
        });
        // By default, enough measurements for every baseline comparison.
        let samples = table
            .metrics
            .iter()
            .filter(|m| m.baseline)
            .map(|m| m.min_samples.unwrap_or(5))
            .max()
            .unwrap_or(0);
        Some(Analysis {
            interval,
            count: table.count.or(over).unwrap_or(samples.max(3)).max(1),
            initial_delay: table.initial_delay.unwrap_or_default(),
            failure_limit: table.failure_limit.unwrap_or(0),
            no_data: table.no_data.unwrap_or_default(),
            metrics: table.metrics.clone(),
        })
    }
}

impl Analysis {
    /// What a query over `hosts` may name: the environment, the release, and this
    /// analysis's window.
    pub fn scope(&self, hosts: Vec<String>, env: Option<String>, version: Option<String>) -> Scope {
        Scope {
            hosts,
            env,
            version,
            window: self.interval,
        }
    }
}

/// What a query's template may name.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The hosts measured.
    pub hosts: Vec<String>,
    /// The environment, when there is one.
    pub env: Option<String>,
    /// The release concerned, when there is one.
    pub version: Option<String>,
    /// The window each measurement covers: the interval.
    pub window: Duration,
}

impl Scope {
    fn variables(&self) -> BTreeMap<&'static str, String> {
        let seconds = self.window.as_secs().max(1);
        BTreeMap::from([
            ("hosts", self.hosts.join(",")),
            (
                "hosts_regex",
                self.hosts
                    .iter()
                    .map(|h| regex_escape(h))
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            ("env", self.env.clone().unwrap_or_default()),
            ("version", self.version.clone().unwrap_or_default()),
            ("window", format!("{seconds}s")),
            ("window_seconds", seconds.to_string()),
        ])
    }

    /// `template` with its variables filled in, read as the check reads them: the
    /// names trimmed, a third brace the query's own.
    fn render(&self, template: &str) -> String {
        let variables = self.variables();
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(mut start) = rest.find("{{") {
            while rest[start + 2..].starts_with('{') {
                start += 1;
            }
            let Some(end) = rest[start + 2..].find("}}") else {
                break;
            };
            let name = rest[start + 2..start + 2 + end].trim();
            out.push_str(&rest[..start]);
            match variables.get(name) {
                Some(value) => out.push_str(value),
                None => out.push_str(&rest[start..start + 4 + end]),
            }
            rest = &rest[start + 4 + end..];
        }
        out.push_str(rest);
        out
    }
}

/// A host name as a regular expression inside a PromQL string: a dot (any other
/// sign) is escaped for the regular expression, and that backslash for the string.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' && c != '-' {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

/// Why a measurement has no number.
#[derive(Debug, Clone, PartialEq)]
pub enum Missing {
    /// The backend answered, with nothing (or NaN).
    NoData(String),
    /// The backend could not be asked.
    Unavailable(String),
    /// The backend refused the query: the configuration is wrong.
    Rejected(String),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::NoData(why) => write!(f, "no data: {why}"),
            Missing::Unavailable(why) => write!(f, "backend unavailable: {why}"),
            Missing::Rejected(why) => write!(f, "query rejected: {why}"),
        }
    }
}

/// Measures `metric` over `scope`, as of `at` (a past time, for Prometheus), or now.
pub fn measure(
    metric: &MetricTable,
    scope: &Scope,
    at: Option<SystemTime>,
) -> Result<f64, Missing> {
    match metric.provider.as_str() {
        "prometheus" => prometheus(metric, scope, at),
        "graphite" => graphite(metric, scope, at),
        "http" => http_json(metric, scope),
        "command" => command(metric, scope),
        other => Err(Missing::Rejected(format!(
            "provider {other} is not available"
        ))),
    }
}

fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .user_agent(concat!("ship/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// GETs `url` (with `query` parameters) and parses its JSON body; a 4xx is the
/// backend refusing the request.
fn get_json(url: &str, query: &[(&str, &str)]) -> Result<serde_json::Value, Missing> {
    let mut request = client().get(url);
    for (name, value) in query {
        request = request.query(*name, *value);
    }
    let mut response = request
        .call()
        .map_err(|e| Missing::Unavailable(format!("{url}: {e}")))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| Missing::Unavailable(format!("{url}: {e}")))?;
    let json: Result<serde_json::Value, _> = serde_json::from_str(&body);
    if status.is_client_error() {
        let why = json
            .ok()
            .and_then(|j| j["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(200).collect());
        return Err(Missing::Rejected(format!(
            "{url} answered {}: {why}",
            status.as_u16()
        )));
    }
    if !status.is_success() {
        return Err(Missing::Unavailable(format!(
            "{url} answered {}",
            status.as_u16()
        )));
    }
    json.map_err(|e| Missing::Unavailable(format!("{url} did not answer JSON: {e}")))
}

/// Prometheus's instant query API: the query must give one series or a scalar.
fn prometheus(metric: &MetricTable, scope: &Scope, at: Option<SystemTime>) -> Result<f64, Missing> {
    let base = metric
        .url
        .as_deref()
        .unwrap_or_default()
        .trim_end_matches('/');
    let query = scope.render(&metric.query);
    let time = at.map(|t| {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        format!("{secs:.3}")
    });
    let mut params = vec![("query", query.as_str())];
    if let Some(time) = &time {
        params.push(("time", time.as_str()));
    }
    let json = get_json(&format!("{base}/api/v1/query"), &params)?;
    if json["status"] != "success" {
        return Err(Missing::Rejected(
            json["error"].as_str().unwrap_or("an error").to_owned(),
        ));
    }
    let data = &json["data"];
    let value = match data["resultType"].as_str() {
        Some("scalar") => data["result"][1].as_str(),
        Some("vector") => {
            let result = data["result"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            match result {
                [] => return Err(Missing::NoData(format!("{query} matched no series"))),
                [one] => one["value"][1].as_str(),
                many => {
                    return Err(Missing::Rejected(format!(
                        "{query} gives {} series; aggregate it to one (sum, avg, max)",
                        many.len()
                    )));
                }
            }
        }
        other => {
            return Err(Missing::Rejected(format!(
                "{query} gives a {}, not a vector or a scalar",
                other.unwrap_or("nothing")
            )));
        }
    };
    number(value, &query)
}

/// Graphite's render API: the query (a target) must give one series; its last
/// value in the window (ending at `at`, or now) counts.
fn graphite(metric: &MetricTable, scope: &Scope, at: Option<SystemTime>) -> Result<f64, Missing> {
    let base = metric
        .url
        .as_deref()
        .unwrap_or_default()
        .trim_end_matches('/');
    let target = scope.render(&metric.query);
    let window = scope.window.as_secs().max(1);
    let (from, until) = match at {
        Some(at) => {
            let until = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            ((until - window.min(until)).to_string(), until.to_string())
        }
        None => (format!("-{window}s"), "now".to_owned()),
    };
    let json = get_json(
        &format!("{base}/render"),
        &[
            ("target", target.as_str()),
            ("from", from.as_str()),
            ("until", until.as_str()),
            ("format", "json"),
        ],
    )?;
    let series = json.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let points = match series {
        [] => return Err(Missing::NoData(format!("{target} matched no series"))),
        [one] => one["datapoints"].as_array().cloned().unwrap_or_default(),
        many => {
            return Err(Missing::Rejected(format!(
                "{target} gives {} series; aggregate it to one (sumSeries, averageSeries, maxSeries)",
                many.len()
            )));
        }
    };
    points
        .iter()
        .rev()
        .find_map(|point| point[0].as_f64())
        .ok_or_else(|| Missing::NoData(format!("{target} has no value in the last {window}s")))
}

/// A number as text; NaN (a rate over nothing) is no data.
fn number(value: Option<&str>, what: &str) -> Result<f64, Missing> {
    let text = value.ok_or_else(|| Missing::NoData(format!("{what} has no value")))?;
    match text.trim().parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(n),
        Ok(_) => Err(Missing::NoData(format!("{what} is {text}"))),
        Err(_) => Err(Missing::Rejected(format!(
            "{what} gave {text:?}, not a number"
        ))),
    }
}

/// An HTTP endpoint returning JSON; the pointer picks the number.
fn http_json(metric: &MetricTable, scope: &Scope) -> Result<f64, Missing> {
    let url = scope.render(metric.url.as_deref().unwrap_or_default());
    let json = get_json(&url, &[])?;
    let pointer = metric.pointer.as_deref().unwrap_or_default();
    match json.pointer(pointer) {
        None | Some(serde_json::Value::Null) => {
            Err(Missing::NoData(format!("{url} has nothing at {pointer}")))
        }
        Some(serde_json::Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| Missing::NoData(format!("{url} {pointer}"))),
        Some(serde_json::Value::String(s)) => number(Some(s), &format!("{url} {pointer}")),
        Some(other) => Err(Missing::Rejected(format!(
            "{url} has {other} at {pointer}, not a number"
        ))),
    }
}

/// A command (run by `sh -c`) that prints a number; the scope is in its
/// environment too (SHIP_HOSTS, SHIP_ENV, SHIP_VERSION, SHIP_WINDOW_SECONDS).
fn command(metric: &MetricTable, scope: &Scope) -> Result<f64, Missing> {
    let line = scope.render(&metric.query);
    let vars = scope.variables();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(&line)
        .env("SHIP_HOSTS", &vars["hosts"])
        .env("SHIP_ENV", &vars["env"])
        .env("SHIP_VERSION", &vars["version"])
        .env("SHIP_WINDOW_SECONDS", &vars["window_seconds"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Missing::Unavailable(format!("cannot run sh: {e}")))?;
    // A command gets as long as a query: then it is killed, and that is no answer.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while child
        .try_wait()
        .map_err(|e| Missing::Unavailable(format!("{line:?}: {e}")))?
        .is_none()
    {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Missing::Unavailable(format!(
                "{line:?} did not finish within {} s",
                TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Missing::Unavailable(format!("{line:?}: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Missing::Unavailable(format!(
            "{line:?} failed ({}): {}",
            out.status,
            stderr.trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.trim().is_empty() {
        return Err(Missing::NoData(format!("{line:?} printed nothing")));
    }
    number(Some(stdout.trim()), &format!("{line:?}"))
}

/// A measurement's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Inconclusive => "INCONCLUSIVE",
        })
    }
}

/// One judged measurement of one metric.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub metric: String,
    pub hosts: Vec<String>,
    /// The value, when there was one.
    pub value: Option<f64>,
    /// What it was judged against, in words (`<= 0.01`, `+20% of 0.004`).
    pub bound: String,
    pub verdict: Verdict,
    /// Why it has no value, or what else is worth knowing.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// What relative judgements compare with: Prometheus is asked for the value at
/// `at` (the same query and hosts); other providers were measured before, when
/// there was a before (`values`, by metric).
#[derive(Debug, Clone, Default)]
pub struct Before {
    pub at: Option<SystemTime>,
    /// The release the hosts ran then, for `{{version}}` in the query.
    pub version: Option<String>,
    pub values: BTreeMap<String, f64>,
}

impl Before {
    /// The values of the relative metrics of `analysis` that are not Prometheus's,
    /// measured now over `scope` (before anything switches).
    pub fn measure(
        analysis: &Analysis,
        scope: &Scope,
        at: SystemTime,
        version: Option<String>,
    ) -> Before {
        let values = analysis
            .metrics
            .iter()
            .filter(|m| relative(m) && !has_past(m))
            .filter_map(|m| measure(m, scope, None).ok().map(|v| (m.name.clone(), v)))
            .collect();
        Before {
            at: Some(at),
            version,
            values,
        }
    }
}

/// Whether the provider can be asked for a value in the past.
fn has_past(metric: &MetricTable) -> bool {
    matches!(metric.provider.as_str(), "prometheus" | "graphite")
}

fn relative(metric: &MetricTable) -> bool {
    metric.max_increase.is_some() || metric.max_decrease.is_some()
}

/// A metric's measurements and its verdict, once an analysis is over.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    pub metric: String,
    pub hosts: Vec<String>,
    pub values: Vec<Option<f64>>,
    pub bound: String,
    pub verdict: Verdict,
    /// The decisive numbers, in words.
    pub why: String,
}

/// The first query of `analysis` its backend rejects, with the metric's name: a
/// configuration error, found before anything waits or switches. Commands are not
/// run for this: no backend refuses them, and running one is not free.
pub fn rejected(analysis: &Analysis, scope: &Scope) -> Option<(String, String)> {
    analysis
        .metrics
        .iter()
        .filter(|metric| metric.provider != "command")
        .find_map(|metric| match measure(metric, scope, None) {
            Err(Missing::Rejected(why)) => Some((metric.name.clone(), why)),
            _ => None,
        })
}

/// Runs `analysis`: `count` rounds `interval` apart (after its initial delay), each
/// metric measured over `canary` (and `baseline`, for a baseline comparison) and
/// judged, every measurement handed to `report` as it comes; then each metric's
/// verdict. `stop` ends it early (Ctrl-C).
pub fn evaluate(
    analysis: &Analysis,
    canary: &Scope,
    baseline: &Scope,
    before: &Before,
    stop: &dyn Fn() -> bool,
    report: &mut dyn FnMut(&Measurement),
) -> Vec<Judged> {
    let n = analysis.metrics.len();
    let mut judged: Vec<Judged> = analysis
        .metrics
        .iter()
        .map(|m| Judged {
            metric: m.name.clone(),
            hosts: canary.hosts.clone(),
            values: Vec::new(),
            bound: String::new(),
            verdict: Verdict::Pass,
            why: String::new(),
        })
        .collect();
    let mut failures = vec![0u32; n];
    let mut notes = vec![String::new(); n];
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); n];
    let mut interrupted = !pause(analysis.initial_delay, stop);
    for round in 0..analysis.count {
        if interrupted || (round > 0 && !pause(analysis.interval, stop)) {
            interrupted = true;
            break;
        }
        for (i, metric) in analysis.metrics.iter().enumerate() {
            let measurement =
                measure_once(metric, analysis, canary, baseline, before, &mut samples[i]);
            report(&measurement);
            judged[i].values.push(measurement.value);
            if !measurement.bound.is_empty() {
                judged[i].bound.clone_from(&measurement.bound);
            }
            match measurement.verdict {
                Verdict::Fail => {
                    failures[i] += 1;
                    let value = measurement.value.map_or("no value".to_owned(), shown);
                    notes[i] = if measurement.bound.is_empty() {
                        format!("{value}: {}", measurement.note)
                    } else {
                        format!("{value} against {}", measurement.bound)
                    };
                }
                Verdict::Inconclusive => {
                    judged[i].verdict = Verdict::Inconclusive;
                    judged[i].why = measurement.note.clone();
                }
                Verdict::Pass => {}
            }
        }
    }
    for (i, metric) in analysis.metrics.iter().enumerate() {
        let judged = &mut judged[i];
        let mut why = std::mem::take(&mut judged.why);
        let mut say = |text: String| {
            if !why.is_empty() {
                why.push_str("; ");
            }
            why.push_str(&text);
        };
        if failures[i] > analysis.failure_limit {
            judged.verdict = Verdict::Fail;
            say(format!(
                "{} of {} measurement(s) failed (limit {}), last {}",
                failures[i],
                judged.values.len(),
                analysis.failure_limit,
                notes[i]
            ));
        } else if interrupted {
            // Cut short (Ctrl-C): what was not measured is not a pass.
            judged.verdict = Verdict::Inconclusive;
            say(format!(
                "interrupted after {} of {} measurement(s)",
                judged.values.len(),
                analysis.count
            ));
        }
        if metric.baseline && baseline.hosts.is_empty() {
            // The last wave: every host runs the release, none is left to compare.
            say("baseline comparison: no host is left on the old release".into());
        } else if metric.baseline {
            let (ours, theirs) = &samples[i];
            let need = metric.min_samples.unwrap_or(5) as usize;
            if ours.len() < need || theirs.len() < need {
                let verdict = no_data(analysis.no_data);
                if verdict != Verdict::Pass && judged.verdict != Verdict::Fail {
                    judged.verdict = verdict;
                }
                say(format!(
                    "baseline comparison: {} and {} sample(s), {need} needed (no data counts as {})",
                    ours.len(),
                    theirs.len(),
                    analysis.no_data
                ));
            } else {
                let p = mann_whitney(ours, theirs, metric.higher_is_worse.unwrap_or(true));
                let canary_worse = worse(p);
                if canary_worse {
                    judged.verdict = Verdict::Fail;
                }
                say(format!(
                    "canary {} against baseline {}: p = {p:.4} (Mann-Whitney U, one-sided; worse below {ALPHA}){}",
                    summary(ours),
                    summary(theirs),
                    if canary_worse {
                        ": the canary is worse"
                    } else {
                        ""
                    }
                ));
            }
        }
        judged.why = why;
    }
    judged
}

/// Sleeps `time` in short steps, giving up when `stop` says so: whether it slept
/// the whole time.
fn pause(time: Duration, stop: &dyn Fn() -> bool) -> bool {
    let until = std::time::Instant::now() + time;
    loop {
        if stop() {
            return false;
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// `median 0.25 of 4`.
fn summary(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    format!("median {median} of {}", values.len())
}

/// One measurement of `metric`, judged: its bounds, against its value before for
/// relative ones, and its samples collected for a baseline comparison.
fn measure_once(
    metric: &MetricTable,
    analysis: &Analysis,
    canary: &Scope,
    baseline: &Scope,
    before: &Before,
    samples: &mut (Vec<f64>, Vec<f64>),
) -> Measurement {
    let mut measurement = Measurement {
        metric: metric.name.clone(),
        hosts: canary.hosts.clone(),
        value: None,
        bound: String::new(),
        verdict: Verdict::Pass,
        note: String::new(),
    };
    let value = match measure(metric, canary, None) {
        Ok(value) => value,
        Err(missing) => {
            measurement.verdict = no_data(analysis.no_data);
            measurement.note = format!("{missing}; no data counts as {}", analysis.no_data);
            return measurement;
        }
    };
    measurement.value = Some(value);
    let mut notes = Vec::new();
    let earlier = if !relative(metric) {
        None
    } else if has_past(metric) {
        // The same query, over the same hosts and the release they ran then.
        let then = Scope {
            version: before.version.clone(),
            ..canary.clone()
        };
        match before.at.map(|at| measure(metric, &then, Some(at))) {
            Some(Ok(v)) => Some(v),
            Some(Err(missing)) => {
                notes.push(format!("before: {missing}"));
                None
            }
            None => None,
        }
    } else {
        let earlier = before.values.get(&metric.name).copied();
        if earlier.is_none() {
            notes.push("before: not measured (this provider has no past)".to_owned());
        }
        earlier
    };
    let (bound, broken) = judge(metric, value, earlier);
    measurement.bound = bound;
    if broken {
        measurement.verdict = Verdict::Fail;
    } else if relative(metric) && earlier.is_none() {
        // A relative bound that could not be checked is no data, not a pass.
        measurement.verdict = no_data(analysis.no_data);
        notes.push(format!("no data counts as {}", analysis.no_data));
    }
    if metric.baseline && !baseline.hosts.is_empty() {
        samples.0.push(value);
        match measure(metric, baseline, None) {
            Ok(theirs) => {
                samples.1.push(theirs);
                notes.push(format!("baseline {}", shown(theirs)));
            }
            Err(missing) => notes.push(format!("baseline: {missing}")),
        }
    }
    measurement.note = notes.join("; ");
    measurement
}

/// A value as people read it: four significant digits at most.
pub fn shown(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return value.to_string();
    }
    let digits = 3 - value.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits);
    ((value * scale).round() / scale).to_string()
}

/// `error-rate web1,web2: 0.021 (<= 0.01) FAIL`: a measurement as people read it.
pub fn line(m: &Measurement) -> String {
    let value = m.value.map_or("-".to_owned(), shown);
    let bound = if m.bound.is_empty() {
        String::new()
    } else {
        format!(" ({})", m.bound)
    };
    let note = if m.note.is_empty() {
        String::new()
    } else {
        format!("; {}", m.note)
    };
    format!(
        "{} {}: {value}{bound} {}{note}",
        m.metric,
        m.hosts.join(","),
        m.verdict
    )
}

/// The bounds of `metric` on a value, given what it was before (for relative
/// judgements): the first one broken, or `None`.
pub fn judge(metric: &MetricTable, value: f64, before: Option<f64>) -> (String, bool) {
    let mut bounds = Vec::new();
    let mut broken = false;
    if let Some(max) = metric.max {
        bounds.push(format!("<= {}", max.0));
        broken |= value > max.0;
    }
    if let Some(min) = metric.min {
        bounds.push(format!(">= {}", min.0));
        broken |= value < min.0;
    }
    // A change relative to nothing is no change one can bound: from 0, only the
    // absolute bounds hold.
    let before = before.filter(|b| *b != 0.0);
    if let (Some(up), Some(before)) = (metric.max_increase, before) {
        let limit = before + before.abs() * up.0.0 / 100.0;
        bounds.push(format!(
            "<= {} (+{up} of {} before)",
            shown(limit),
            shown(before)
        ));
        broken |= value > limit;
    }
    if let (Some(down), Some(before)) = (metric.max_decrease, before) {
        let limit = before - before.abs() * down.0.0 / 100.0;
        bounds.push(format!(
            ">= {} (-{down} of {} before)",
            shown(limit),
            shown(before)
        ));
        broken |= value < limit;
    }
    (bounds.join(", "), broken)
}

/// The no-data policy's verdict.
pub fn no_data(policy: NoData) -> Verdict {
    match policy {
        NoData::Fail => Verdict::Fail,
        NoData::Pass => Verdict::Pass,
        NoData::Inconclusive => Verdict::Inconclusive,
    }
}

/// One-sided Mann-Whitney U test that `canary` is worse than `baseline` (higher
/// values worse when `higher_is_worse`): the p-value. Exact (all rank arrangements
/// counted) for small samples without ties; the normal approximation with a tie
/// correction otherwise.
pub fn mann_whitney(canary: &[f64], baseline: &[f64], higher_is_worse: bool) -> f64 {
    let (n1, n2) = (canary.len(), baseline.len());
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    // U of the canary: pairs where it is worse, ties counting half.
    let mut u = 0.0;
    let mut ties = false;
    for &c in canary {
        for &b in baseline {
            let worse = if higher_is_worse { c > b } else { c < b };
            if worse {
                u += 1.0;
            } else if c == b {
                u += 0.5;
                ties = true;
            }
        }
    }
    if ties && n1 + n2 <= 16 {
        return exact_with_ties(canary, baseline, u, higher_is_worse);
    }
    if !ties && n1 * n2 <= 400 {
        // The number of arrangements giving each U under the null hypothesis.
        let counts = u_distribution(n1, n2);
        let total: f64 = counts.iter().sum();
        let at_least: f64 = counts[u as usize..].iter().sum();
        return at_least / total;
    }
    let (n1, n2) = (n1 as f64, n2 as f64);
    let mean = n1 * n2 / 2.0;
    let mut all: Vec<f64> = canary.iter().chain(baseline).copied().collect();
    all.sort_by(f64::total_cmp);
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < all.len() {
        let j = all[i..].iter().take_while(|&&x| x == all[i]).count();
        let t = j as f64;
        tie_term += t * t * t - t;
        i += j;
    }
    let n = n1 + n2;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if variance <= 0.0 {
        return 1.0;
    }
    // Continuity correction.
    let z = (u - mean - 0.5) / variance.sqrt();
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The exact p-value with ties: of every way to pick n1 of the pooled values as
/// "the canary" (all equally likely under the null hypothesis), the share whose U
/// is at least `observed`.
fn exact_with_ties(canary: &[f64], baseline: &[f64], observed: f64, higher_is_worse: bool) -> f64 {
    let pooled: Vec<f64> = canary.iter().chain(baseline).copied().collect();
    let (n, n1) = (pooled.len(), canary.len());
    let (mut total, mut extreme) = (0u64, 0u64);
    for mask in 0u32..(1 << n) {
        if mask.count_ones() as usize != n1 {
            continue;
        }
        let mut u = 0.0;
        for i in (0..n).filter(|i| mask & (1 << i) != 0) {
            for j in (0..n).filter(|j| mask & (1 << j) == 0) {
                let (c, b) = (pooled[i], pooled[j]);
                if if higher_is_worse { c > b } else { c < b } {
                    u += 1.0;
                } else if c == b {
                    u += 0.5;
                }
            }
        }
        total += 1;
        if u >= observed - 1e-9 {
            extreme += 1;
        }
    }
    extreme as f64 / total as f64
}

/// How many arrangements of n1 + n2 distinct values give each U (0..=n1*n2).
fn u_distribution(n1: usize, n2: usize) -> Vec<f64> {
    // f[i][j][u]: arrangements of i canary and j baseline values with U = u.
    let mut f = vec![vec![vec![0.0; n1 * n2 + 1]; n2 + 1]; n1 + 1];
    for row in f.iter_mut() {
        row[0][0] = 1.0;
    }
    for cell in f[0].iter_mut() {
        cell[0] = 1.0;
    }
    for i in 1..=n1 {
        for j in 1..=n2 {
            for u in 0..=i * j {
                // The largest value is a canary one (beating all j baseline ones),
                // or a baseline one.
                let with_canary = if u >= j { f[i - 1][j][u - j] } else { 0.0 };
                let with_baseline = f[i][j - 1][u];
                f[i][j][u] = with_canary + with_baseline;
            }
        }
    }
    f[n1][n2].clone()
}

/// The complementary error function (Abramowitz and Stegun 7.1.26, |error| <
/// 1.5e-7), enough for a p-value.
fn erfc(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = poly * (-x * x).exp();
    if x >= 0.0 { y } else { 2.0 - y }
}

/// Whether a baseline comparison's p-value means the canary is worse.
pub fn worse(p: f64) -> bool {
    p < ALPHA
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mann_whitney_exact_and_approximate() {
        // Every canary value above every baseline one: the most extreme of the
        // C(8, 4) = 70 arrangements.
        let p = mann_whitney(&[5.0, 6.0, 7.0, 8.0], &[1.0, 2.0, 3.0, 4.0], true);
        assert!((p - 1.0 / 70.0).abs() < 1e-12, "{p}");
        assert!(worse(p));
        // The same, judged with lower as worse: not worse at all.
        assert!(!worse(mann_whitney(
            &[5.0, 6.0, 7.0, 8.0],
            &[1.0, 2.0, 3.0, 4.0],
            false
        )));
        // Interleaved: no evidence.
        let p = mann_whitney(&[1.0, 3.0, 5.0, 7.0], &[2.0, 4.0, 6.0, 8.0], true);
        assert!(p > 0.5, "{p}");
        // Three against three cannot get below 1/20.
        let p = mann_whitney(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0], true);
        assert!((p - 0.05).abs() < 1e-12, "{p}");
        // Ties, in small samples: counted exactly, as without.
        let p = mann_whitney(&[9.0, 9.0, 9.0, 9.0, 9.0], &[1.0, 1.0, 1.0, 1.0, 2.0], true);
        assert!((p - 1.0 / 252.0).abs() < 1e-12, "{p}");
        // Mostly zeros: three ones of five are not evidence (10 of 120 ... 126
        // arrangements do as well).
        let p = mann_whitney(&[1.0, 1.0, 1.0, 0.0, 0.0], &[0.0; 5], true);
        assert!(!worse(p), "{p}");
        // Large samples with ties: the approximation.
        let many: Vec<f64> = (0..20).map(|i| f64::from(i % 3)).collect();
        let more: Vec<f64> = many.iter().map(|v| v + 2.0).collect();
        assert!(worse(mann_whitney(&more, &many, true)));
        let p = mann_whitney(&[1.0; 5], &[1.0; 5], true);
        assert!(!worse(p), "{p}");
        // The distribution counts every arrangement.
        assert_eq!(u_distribution(3, 4).iter().sum::<f64>(), 35.0);
    }

    #[test]
    fn templates_fill_in_the_scope() {
        let scope = Scope {
            hosts: vec!["web1".into(), "web.2".into()],
            env: Some("prod".into()),
            version: Some("v42".into()),
            window: Duration::from_secs(30),
        };
        assert_eq!(
            scope.render("x{host=~\"{{hosts_regex}}\",env=\"{{ env }}\"}[{{window}}] {{version }}"),
            // In a PromQL string, `\\.` is the regular expression's `\.`.
            "x{host=~\"web1|web\\\\.2\",env=\"prod\"}[30s] v42"
        );
    }

    #[test]
    fn a_duration_is_a_measurement_each_interval() {
        let table: AnalysisTable = toml::from_str(
            "interval = \"10s\"\nduration = \"1m\"\n[[metric]]\nname = \"m\"\nprovider = \"command\"\nquery = \"x\"\nmax = 1",
        )
        .unwrap();
        assert_eq!(Analysis::resolve(&table).unwrap().count, 7);
        let both: AnalysisTable = toml::from_str("count = 2\nduration = \"1m\"").unwrap();
        assert!(
            both.check("[analysis]")
                .unwrap_err()
                .contains("both count and duration")
        );
    }

    #[test]
    fn bounds_absolute_and_relative() {
        let metric: MetricTable = toml::from_str(
            "name = \"e\"\nprovider = \"command\"\nquery = \"x\"\nmax = 0.5\nmax_increase = \"20%\"",
        )
        .unwrap();
        assert!(!judge(&metric, 0.4, Some(0.4)).1);
        assert!(judge(&metric, 0.6, None).1);
        let (bound, broken) = judge(&metric, 0.3, Some(0.2));
        assert!(broken, "{bound}");
        assert!(bound.contains("+20% of 0.2 before"), "{bound}");
    }
}
