//! `ship analyze`: the configured metric analysis, run now over the chosen hosts,
//! changing nothing — to tune queries and bounds before a rollout trusts them.

use std::time::{Duration, SystemTime};

use manifests::analysis::MetricTable;
use serde_json::json;

use crate::analysis::{self, Analysis, Measurement, Missing, Scope, Verdict};
use crate::error::CliError;
use crate::printer::{Printer, table};
use crate::settings::FleetSettings;

/// What `ship analyze` is asked.
pub struct Request<'a> {
    /// The hosts measured (the canary, for baseline comparisons).
    pub hosts: &'a str,
    /// How far back the "before" of relative judgements is.
    pub since: Duration,
    /// The release the queries may name.
    pub version: Option<String>,
}

/// A metric's measurements and its verdict.
struct Judged {
    metric: String,
    values: Vec<Option<f64>>,
    bound: String,
    verdict: Verdict,
    why: String,
}

pub fn run(settings: &FleetSettings, request: &Request, printer: &Printer) -> Result<(), CliError> {
    let fleet = &settings.fleet;
    let Some(analysis) = Analysis::resolve(&fleet.analysis) else {
        return Err(CliError::usage(format!(
            "{} has no [[analysis.metric]]",
            settings.path.display()
        ))
        .hint("describe the metrics a rollout is judged by in [analysis]; see the README"));
    };
    let selected = fleet.select(request.hosts).map_err(CliError::usage)?;
    let names: Vec<String> = selected.iter().map(|h| h.name.to_string()).collect();
    let others: Vec<String> = fleet
        .hosts
        .iter()
        .map(|h| h.name.to_string())
        .filter(|h| !names.contains(h))
        .collect();
    let scope = |hosts: &[String]| Scope {
        hosts: hosts.to_vec(),
        env: fleet.environment.as_ref().map(ToString::to_string),
        version: request.version.clone(),
        window: analysis.interval,
    };
    let canary = scope(&names);
    let baseline = scope(&others);
    if analysis.metrics.iter().any(|m| m.baseline) && others.is_empty() {
        return Err(CliError::usage(
            "a baseline comparison needs hosts outside --hosts to compare with",
        ));
    }
    // A query the backend rejects is a configuration error, found before waiting.
    for metric in &analysis.metrics {
        if let Err(Missing::Rejected(why)) = analysis::measure(metric, &canary, None) {
            return Err(CliError::usage(format!("metric {:?}: {why}", metric.name))
                .hint("fix the query in [analysis] (ship analyze runs it as a rollout would)"));
        }
    }
    printer.progress(format!(
        "analyzing {} metric(s) over {}: {} measurement(s), {} apart{}",
        analysis.metrics.len(),
        names.join(", "),
        analysis.count,
        humantime::format_duration(analysis.interval),
        if analysis.initial_delay.is_zero() {
            String::new()
        } else {
            format!(
                ", after {}",
                humantime::format_duration(analysis.initial_delay)
            )
        }
    ));
    std::thread::sleep(analysis.initial_delay);
    let before_at = SystemTime::now()
        .checked_sub(request.since)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut judged: Vec<Judged> = analysis
        .metrics
        .iter()
        .map(|m| Judged {
            metric: m.name.clone(),
            values: Vec::new(),
            bound: String::new(),
            verdict: Verdict::Pass,
            why: String::new(),
        })
        .collect();
    let mut failures = vec![0u32; analysis.metrics.len()];
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); analysis.metrics.len()];
    for round in 0..analysis.count {
        if round > 0 {
            std::thread::sleep(analysis.interval);
        }
        for (i, metric) in analysis.metrics.iter().enumerate() {
            let measurement = measure_once(
                metric,
                &analysis,
                &canary,
                &baseline,
                before_at,
                &mut samples[i],
            );
            printer.event("measurement", &measurement);
            printer.note(line(&measurement));
            judged[i].values.push(measurement.value);
            judged[i].bound.clone_from(&measurement.bound);
            match measurement.verdict {
                Verdict::Fail => failures[i] += 1,
                Verdict::Inconclusive => judged[i].verdict = Verdict::Inconclusive,
                Verdict::Pass => {}
            }
        }
    }
    for (i, metric) in analysis.metrics.iter().enumerate() {
        let judged = &mut judged[i];
        if failures[i] > analysis.failure_limit {
            judged.verdict = Verdict::Fail;
            judged.why = format!(
                "{} of {} measurement(s) failed (limit {})",
                failures[i], analysis.count, analysis.failure_limit
            );
        }
        if metric.baseline {
            let (ours, theirs) = &samples[i];
            let need = metric.min_samples.unwrap_or(5) as usize;
            if ours.len() < need || theirs.len() < need {
                let verdict = analysis::no_data(analysis.no_data);
                if verdict != Verdict::Pass && judged.verdict != Verdict::Fail {
                    judged.verdict = verdict;
                }
                judged.why = format!(
                    "baseline comparison: {} and {} sample(s), {need} needed (no data: {})",
                    ours.len(),
                    theirs.len(),
                    analysis.no_data
                );
            } else {
                let p =
                    analysis::mann_whitney(ours, theirs, metric.higher_is_worse.unwrap_or(true));
                let worse = analysis::worse(p);
                if worse {
                    judged.verdict = Verdict::Fail;
                }
                judged.why = format!(
                    "canary against baseline: p = {p:.4} (Mann-Whitney U, one-sided; worse below 0.05){}",
                    if worse { ": the canary is worse" } else { "" }
                );
            }
        }
    }
    let rows: Vec<Vec<String>> = judged
        .iter()
        .map(|j| {
            printer.event(
                "analysis",
                &json!({"metric": j.metric, "hosts": names, "values": j.values,
                        "bound": j.bound, "verdict": j.verdict, "why": j.why}),
            );
            vec![
                j.metric.clone(),
                j.values
                    .iter()
                    .map(|v| v.map_or("-".to_owned(), |v| format!("{v:.6}")))
                    .collect::<Vec<_>>()
                    .join(" "),
                j.bound.clone(),
                j.verdict.to_string(),
                j.why.clone(),
            ]
        })
        .collect();
    printer.data(&table(
        &["METRIC", "VALUES", "BOUND", "VERDICT", "WHY"],
        &rows,
    ));
    let failed: Vec<&str> = judged
        .iter()
        .filter(|j| j.verdict != Verdict::Pass)
        .map(|j| j.metric.as_str())
        .collect();
    if failed.is_empty() {
        printer.note(format!("analysis passed over {}", names.join(", ")));
        Ok(())
    } else {
        Err(CliError::failed_hosts(format!(
            "analysis did not pass over {}: {}",
            names.join(", "),
            failed.join(", ")
        )))
    }
}

/// One measurement of `metric`, judged: its bounds, against its value before for
/// relative ones, and its samples collected for a baseline comparison.
fn measure_once(
    metric: &MetricTable,
    analysis: &Analysis,
    canary: &Scope,
    baseline: &Scope,
    before_at: SystemTime,
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
    let value = match analysis::measure(metric, canary, None) {
        Ok(value) => value,
        Err(missing) => {
            measurement.verdict = analysis::no_data(analysis.no_data);
            measurement.note = format!("{missing}; no data counts as {}", analysis.no_data);
            return measurement;
        }
    };
    measurement.value = Some(value);
    let relative = metric.max_increase.is_some() || metric.max_decrease.is_some();
    let before = if relative {
        match analysis::measure(metric, canary, Some(before_at)) {
            Ok(before) => Some(before),
            Err(missing) => {
                measurement.note = format!("before: {missing}");
                None
            }
        }
    } else {
        None
    };
    let (bound, broken) = analysis::judge(metric, value, before);
    measurement.bound = bound;
    if broken {
        measurement.verdict = Verdict::Fail;
    }
    if metric.baseline {
        samples.0.push(value);
        match analysis::measure(metric, baseline, None) {
            Ok(theirs) => {
                samples.1.push(theirs);
                measurement.note = format!("baseline {theirs}");
            }
            Err(missing) => measurement.note = format!("baseline: {missing}"),
        }
    }
    measurement
}

/// `error-rate web1,web2: 0.021 (<= 0.01) FAIL`.
fn line(m: &Measurement) -> String {
    let value = m.value.map_or("-".to_owned(), |v| v.to_string());
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
