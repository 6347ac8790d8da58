//! `--metrics emf`: the run summary as one CloudWatch Embedded Metric Format JSON line on
//! standard output, which the ECS awslogs driver turns into metrics with no agent.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::domain::RetrievalStatus;
use crate::pipeline::RunSummary;

/// The CloudWatch namespace of every metric.
pub(crate) const NAMESPACE: &str = "PcReservePoller";

/// Where metrics go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsFormat {
    /// CloudWatch Embedded Metric Format, one JSON line per run on standard output.
    Emf,
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

fn document(environment: &str, metrics: &[(&str, &str, Value)]) -> Value {
    let mut doc = serde_json::Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": now_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Environment"]],
                "Metrics": metrics.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    doc.insert("Environment".into(), json!(environment));
    for (name, _, value) in metrics {
        doc.insert((*name).into(), value.clone());
    }
    Value::Object(doc)
}

/// The EMF document of a finished run.
pub(crate) fn run_document(environment: &str, s: &RunSummary) -> Value {
    let mut metrics = vec![
        ("RunsFailed", "Count", json!(0)),
        ("Batches", "Count", json!(s.batches)),
        ("Reservations", "Count", json!(s.reservations)),
        ("RecordsSent", "Count", json!(s.records())),
        ("RecordsFound", "Count", json!(s.count(RetrievalStatus::Found))),
        ("RecordsGuestPass", "Count", json!(s.count(RetrievalStatus::GuestPass))),
        ("RecordsMissing", "Count", json!(s.count(RetrievalStatus::Missing))),
        ("Requests", "Count", json!(s.requests)),
        ("RecordsResent", "Count", json!(s.resent)),
        ("Retries", "Count", json!(s.retries)),
        ("DurationSeconds", "Seconds", json!(s.duration.as_secs_f64())),
    ];
    if let Some(lag) = s.cursor_lag {
        metrics.push(("CursorLagSeconds", "Seconds", json!(lag.as_secs())));
    }
    // Absent when not measured, so an alarm treats the run as missing data.
    if let Some(late) = s.late_rows {
        metrics.push(("LateRows", "Count", json!(late)));
    }
    if let Some(deleted) = s.deleted_rows {
        metrics.push(("DeletedRows", "Count", json!(deleted)));
    }
    document(environment, &metrics)
}

/// The EMF document of a failed run.
pub(crate) fn failure_document(environment: &str) -> Value {
    document(environment, &[("RunsFailed", "Count", json!(1))])
}

/// The EMF document of a run refused or stopped by the lease (exit code 3): another runner
/// was sending, which is an expected overlap rather than a failure, so it counts as
/// `RunsRefused` and `RunsFailed` stays 0.
pub(crate) fn refused_document(environment: &str) -> Value {
    document(environment, &[("RunsFailed", "Count", json!(0)), ("RunsRefused", "Count", json!(1))])
}

/// Prints one document as a line on standard output.
pub(crate) fn emit(doc: &Value) {
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Metrics are best effort: a closed standard output must not fail the run.
    let _ = writeln!(out, "{doc}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_declares_every_metric_it_carries() {
        let mut s = RunSummary::default();
        s.by_status.insert(RetrievalStatus::Found, 3);
        s.reservations = 3;
        let doc = run_document("qa", &s);
        let declared = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap();
        for m in declared {
            let name = m["Name"].as_str().unwrap();
            assert!(doc.get(name).is_some(), "{name} declared but absent");
        }
        assert_eq!(doc["RecordsSent"], 3);
        assert_eq!(doc["Environment"], "qa");
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert!(doc.get("LateRows").is_none() && doc.get("DeletedRows").is_none(), "not measured: absent");
        s.late_rows = Some(0);
        s.deleted_rows = Some(2);
        let doc = run_document("qa", &s);
        assert_eq!((doc["LateRows"].clone(), doc["DeletedRows"].clone()), (json!(0), json!(2)));
        let declared = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].to_string();
        assert!(declared.contains(r#"{"Name":"LateRows","Unit":"Count"}"#), "{declared}");
    }
}
