//! The `[analysis]` table of `ship.toml`: the metrics a rollout is judged by, where
//! each comes from, and what counts as a failure.
//!
//! ```toml
//! [analysis]
//! interval = "10s"        # between measurements
//! count = 3               # measurements per analysis (or duration = "5m")
//! initial_delay = "0s"    # before the first
//! failure_limit = 0       # failed measurements tolerated
//! no_data = "fail"        # fail | pass | inconclusive
//!
//! [[analysis.metric]]
//! name = "error-rate"
//! provider = "prometheus" # prometheus | graphite | http | command
//! url = "http://prometheus:9090"
//! query = 'sum(rate(shop_errors_total{host=~"{{hosts_regex}}"}[{{window}}]))'
//! max = 0.01              # an absolute bound; or min, max_increase = "20%",
//!                         # max_decrease, or baseline = true (canary against
//!                         # the hosts still on the old release)
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A number from the file (an integer or a float), compared by value.
#[derive(Debug, Clone, Copy, Default)]
pub struct Number(pub f64);

impl PartialEq for Number {
    fn eq(&self, other: &Number) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Number {}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Number, D::Error> {
        f64::deserialize(d).map(Number)
    }
}

/// A relative change, written `"20%"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percent(pub Number);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Percent, D::Error> {
        let text = String::deserialize(d)?;
        text.strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map(|n| Percent(Number(n)))
            .ok_or_else(|| {
                serde::de::Error::custom(format!("{text:?} is not a percentage such as \"20%\""))
            })
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0.0)
    }
}

/// What a measurement that finds no data counts as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoData {
    /// A failed measurement.
    #[default]
    Fail,
    /// A passed one.
    Pass,
    /// Neither: the rollout halts for a human.
    Inconclusive,
}

impl fmt::Display for NoData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoData::Fail => "fail",
            NoData::Pass => "pass",
            NoData::Inconclusive => "inconclusive",
        })
    }
}

/// The `[analysis]` table (or an environment's, field by field over it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AnalysisTable {
    /// Time between measurements (default 10s).
    #[serde(default, deserialize_with = "crate::config::duration")]
    pub interval: Option<Duration>,
    /// Measurements per analysis (default 3).
    pub count: Option<u32>,
    /// Instead of a count: how long an analysis measures (a measurement each
    /// interval).
    #[serde(default, deserialize_with = "crate::config::duration")]
    pub duration: Option<Duration>,
    /// Wait before the first measurement (default 0s).
    #[serde(default, deserialize_with = "crate::config::duration")]
    pub initial_delay: Option<Duration>,
    /// Failed measurements tolerated, per metric (default 0).
    pub failure_limit: Option<u32>,
    /// What a measurement without data counts as (default fail).
    pub no_data: Option<NoData>,
    /// The metrics; an environment that lists its own replaces the top level's.
    #[serde(default, rename = "metric")]
    pub metrics: Vec<MetricTable>,
}

impl AnalysisTable {
    /// What is wrong with this table (`table` names it in the message).
    pub fn check(&self, table: &str) -> Result<(), String> {
        if self.count.is_some() && self.duration.is_some() {
            return Err(format!("{table} sets both count and duration: choose one"));
        }
        if self.interval.is_some_and(|i| i.is_zero()) {
            return Err(format!("{table} interval must be more than 0s"));
        }
        for metric in &self.metrics {
            metric.check().map_err(|e| format!("{table} {e}"))?;
            if let (true, Some(count)) = (metric.baseline, self.count) {
                let need = metric.min_samples.unwrap_or(5);
                if count < need {
                    return Err(format!(
                        "{table} metric {:?}: a baseline comparison needs {need} samples (min_samples), and count is {count}",
                        metric.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// This table, with what `over` sets winning, field by field (its metrics, when
    /// it has any, replace these).
    pub fn overridden_by(&self, over: &AnalysisTable) -> AnalysisTable {
        AnalysisTable {
            interval: over.interval.or(self.interval),
            // Count and duration say one thing: the table that sets either wins.
            count: if over.count.is_some() || over.duration.is_some() {
                over.count
            } else {
                self.count
            },
            duration: if over.count.is_some() || over.duration.is_some() {
                over.duration
            } else {
                self.duration
            },
            initial_delay: over.initial_delay.or(self.initial_delay),
            failure_limit: over.failure_limit.or(self.failure_limit),
            no_data: over.no_data.or(self.no_data),
            metrics: if over.metrics.is_empty() {
                self.metrics.clone()
            } else {
                over.metrics.clone()
            },
        }
    }
}

/// A `[[analysis.metric]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct MetricTable {
    /// Its name in output and records.
    pub name: String,
    /// `prometheus`, `graphite`, `http` or `command`.
    pub provider: String,
    /// The provider's address: Prometheus's or Graphite's base URL, the HTTP
    /// endpoint (a template too).
    pub url: Option<String>,
    /// The query (PromQL, a Graphite target, or the command line), a template: see
    /// the variables below.
    #[serde(default)]
    pub query: String,
    /// For `http`: the JSON pointer (RFC 6901) to the number, such as `/data/rate`.
    pub pointer: Option<String>,
    /// Fail when the value is above this.
    pub max: Option<Number>,
    /// Fail when the value is below this.
    pub min: Option<Number>,
    /// Fail when the value rose by more than this against the same hosts before
    /// the deploy.
    pub max_increase: Option<Percent>,
    /// Fail when the value fell by more than this against the same hosts before.
    pub max_decrease: Option<Percent>,
    /// Compare the canary hosts with the hosts still on the old release over the
    /// same window (Mann-Whitney U, one-sided, at 5%).
    #[serde(default)]
    pub baseline: bool,
    /// Samples each side needs for the baseline comparison (default 5).
    pub min_samples: Option<u32>,
    /// Whether a higher value is worse (default true), for the baseline comparison.
    pub higher_is_worse: Option<bool>,
}

/// The variables a query or URL template may name, as `{{name}}`.
pub const TEMPLATE_VARIABLES: &[&str] = &[
    "hosts",
    "hosts_regex",
    "env",
    "version",
    "window",
    "window_seconds",
];

/// The providers a metric may name.
pub const PROVIDERS: &[&str] = &["prometheus", "graphite", "http", "command"];

impl MetricTable {
    /// What is wrong with this metric's definition, naming it.
    pub fn check(&self) -> Result<(), String> {
        let name = &self.name;
        let bad = |why: String| Err(format!("metric {name:?}: {why}"));
        if name.trim().is_empty() {
            return Err("a metric has no name".into());
        }
        if !PROVIDERS.contains(&self.provider.as_str()) {
            return bad(format!(
                "unknown provider {:?} (one of: {})",
                self.provider,
                PROVIDERS.join(", ")
            ));
        }
        if self.query.trim().is_empty() && self.provider != "http" {
            return bad("it has no query".into());
        }
        if self.url.is_none() && self.provider != "command" {
            return bad(format!("provider {} needs a url", self.provider));
        }
        match (&self.provider[..], &self.pointer) {
            ("http", None) => {
                return bad(
                    "provider http needs a pointer to the number (such as \"/value\")".into(),
                );
            }
            (_, Some(pointer)) if !pointer.is_empty() && !pointer.starts_with('/') => {
                return bad(format!(
                    "pointer {pointer:?} is not a JSON pointer: it starts with / (such as \"/data/rate\")"
                ));
            }
            _ => {}
        }
        for template in [Some(&self.query), self.url.as_ref()].into_iter().flatten() {
            for variable in template_variables(template)? {
                if !TEMPLATE_VARIABLES.contains(&variable) {
                    return bad(format!(
                        "its template names an unknown variable {{{{{variable}}}}} (known: {})",
                        TEMPLATE_VARIABLES.join(", ")
                    ));
                }
            }
        }
        let judged = self.max.is_some()
            || self.min.is_some()
            || self.max_increase.is_some()
            || self.max_decrease.is_some()
            || self.baseline;
        if !judged {
            return bad(
                "it has no judgement: set max, min, max_increase, max_decrease or baseline".into(),
            );
        }
        Ok(())
    }
}

/// The `{{name}}`s in `template`; an unclosed `{{` is an error.
pub fn template_variables(template: &str) -> Result<Vec<&str>, String> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some(mut start) = rest.find("{{") {
        // In `{{{hosts}}}` (a Graphite glob around a variable) the first brace is
        // the query's own.
        while rest[start + 2..].starts_with('{') {
            start += 1;
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("an unclosed {{{{ in {template:?}"))?;
        found.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(extra: &str) -> MetricTable {
        toml::from_str(&format!(
            "name = \"errors\"\nprovider = \"prometheus\"\nurl = \"http://p:9090\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn metrics_are_checked_naming_the_metric() {
        assert!(metric("query = 'up'\nmax = 1").check().is_ok());
        let e = metric("query = 'up'").check().unwrap_err();
        assert!(
            e.contains("\"errors\"") && e.contains("no judgement"),
            "{e}"
        );
        let e = metric("query = 'x{h=\"{{hostz}}\"}'\nmax = 1")
            .check()
            .unwrap_err();
        assert!(e.contains("unknown variable {{hostz}}"), "{e}");
        let e = metric("query = 'up{{'\nmax = 1").check().unwrap_err();
        assert!(e.contains("unclosed"), "{e}");
        let mut m = metric("query = 'up'\nmax = 1");
        m.provider = "influx".into();
        assert!(
            m.check()
                .unwrap_err()
                .contains("unknown provider \"influx\"")
        );
        let p: MetricTable = toml::from_str(
            "name = \"p\"\nprovider = \"command\"\nquery = \"echo 1\"\nmax_increase = \"20%\"",
        )
        .unwrap();
        assert_eq!(p.max_increase.unwrap().to_string(), "20%");
        assert!(p.check().is_ok());
        assert!(
            toml::from_str::<MetricTable>(
                "name = \"p\"\nprovider = \"command\"\nmax_increase = \"lots\""
            )
            .is_err()
        );
    }
}
