//! `ship analyze`: the configured metric analysis, run now over the chosen hosts,
//! changing nothing — to tune queries and bounds before a rollout trusts them.

use std::time::{Duration, SystemTime};

use crate::analysis::{self, Analysis, Before, Verdict};
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
    let env = fleet.environment.as_ref().map(ToString::to_string);
    let scope =
        |hosts: &[String]| analysis.scope(hosts.to_vec(), env.clone(), request.version.clone());
    let canary = scope(&names);
    let baseline = scope(&others);
    if analysis.metrics.iter().any(|m| m.baseline) && others.is_empty() {
        return Err(CliError::usage(
            "a baseline comparison needs hosts outside --hosts to compare with",
        ));
    }
    if let Some((metric, why)) = analysis::rejected(&analysis, &canary) {
        return Err(CliError::usage(format!("metric {metric:?}: {why}"))
            .hint("fix the query in [analysis] (ship analyze runs it as a rollout would)"));
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
    // "Before" is --since ago, for Prometheus; the other providers have no past.
    let before = Before {
        at: SystemTime::now().checked_sub(request.since),
        version: request.version.clone(),
        values: Default::default(),
    };
    let judged = analysis::evaluate(
        &analysis,
        &canary,
        &baseline,
        &before,
        &|| settings.options.interrupt.is_set(),
        &mut |measurement| {
            printer.event("measurement", measurement);
            printer.note(analysis::line(measurement));
        },
    );
    let rows: Vec<Vec<String>> = judged
        .iter()
        .map(|j| {
            printer.event("analysis", j);
            vec![
                j.metric.clone(),
                j.values
                    .iter()
                    .map(|v| v.map_or("-".to_owned(), analysis::shown))
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
