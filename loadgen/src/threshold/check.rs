//! Checks thresholds against the rows a run wrote: every threshold against every row of its
//! pattern, each failure with the measured value and the row it was measured in.

use std::fmt;

use serde::Serialize;

use super::{Bound, Threshold, Thresholds};
use crate::{output::SummaryRow, pattern::Pattern};

/// A result-file row thresholds apply to.
pub trait Checked: Serialize {
    /// How messages name the row (a cell name, or a pattern and interval).
    fn label(&self) -> String;
    fn pattern(&self) -> Pattern;
}

impl Checked for SummaryRow {
    fn label(&self) -> String {
        self.cell.clone()
    }

    fn pattern(&self) -> Pattern {
        self.pattern
    }
}

/// What checking found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckReport {
    /// One line per threshold that did not hold for a row (or, with `fail_if_missing`, had no
    /// value there).
    pub failed: Vec<String>,
    /// Thresholds left unchecked for a row whose column is empty (does not apply there), or that
    /// matched no row.
    pub skipped: Vec<String>,
    /// Threshold × row pairs that held.
    pub held: usize,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.failed.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.failed {
            writeln!(f, "threshold FAILED: {line}")?;
        }
        for line in &self.skipped {
            writeln!(f, "threshold skipped: {line}")?;
        }
        write!(
            f,
            "thresholds: {} held, {} failed, {} skipped",
            self.held,
            self.failed.len(),
            self.skipped.len()
        )
    }
}

/// Checks every threshold against every row it selects.
pub fn check<R: Checked>(thresholds: &Thresholds, rows: &[R]) -> CheckReport {
    let mut report = CheckReport::default();
    let missing = |report: &mut CheckReport, line: String| {
        if thresholds.fail_if_missing {
            report.failed.push(format!("{line} (--fail-if-missing)"));
        } else {
            report.skipped.push(line);
        }
    };
    for threshold in &thresholds.list {
        let selected: Vec<&R> = rows
            .iter()
            .filter(|row| threshold.applies_to(row.pattern()))
            .collect();
        if selected.is_empty() {
            let what = threshold
                .pattern
                .map_or_else(|| "no row".to_owned(), |p| format!("no {p} row"));
            missing(&mut report, format!("{threshold}: {what} in this run"));
        }
        for row in selected {
            match value(row, threshold.column) {
                Some(value) if threshold.holds_for(&value) => report.held += 1,
                Some(value) => report.failed.push(format!(
                    "{threshold}: {} has {} = {}",
                    row.label(),
                    threshold.column,
                    shown(&value)
                )),
                None => missing(
                    &mut report,
                    format!(
                        "{threshold}: {} is empty for {} (does not apply there)",
                        threshold.column,
                        row.label()
                    ),
                ),
            }
        }
    }
    report
}

/// The row's value in `column`; `None` when empty.
fn value<R: Serialize>(row: &R, column: &str) -> Option<Bound> {
    match serde_json::to_value(row).ok()?.get(column)? {
        serde_json::Value::Number(n) => n.as_f64().map(Bound::Number),
        serde_json::Value::Bool(b) => Some(Bound::Bool(*b)),
        serde_json::Value::String(s) => Some(Bound::Text(s.clone())),
        _ => None,
    }
}

fn shown(value: &Bound) -> String {
    match value {
        Bound::Number(n) => n.to_string(),
        Bound::Bool(b) => b.to_string(),
        Bound::Text(t) => format!("\"{t}\""),
    }
}

impl Threshold {
    /// Whether this threshold selects rows of `pattern`.
    pub fn applies_to(&self, pattern: Pattern) -> bool {
        self.pattern.is_none_or(|p| p == pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        output::test_util::sample_cell,
        threshold::{columns_of, parse_list},
    };

    fn thresholds(text: &str, fail_if_missing: bool) -> Thresholds {
        Thresholds {
            list: parse_list(text, "--fail-if", &columns_of::<SummaryRow>()).unwrap(),
            fail_if_missing,
        }
    }

    fn rows() -> Vec<SummaryRow> {
        let sse = SummaryRow::from_cell("r", &sample_cell(Pattern::Sse, true));
        let rr = SummaryRow::from_cell("r", &sample_cell(Pattern::RequestResponse, true));
        vec![sse, rr]
    }

    #[test]
    fn held_thresholds_pass() {
        // sample_cell: p99 ≈ 990 ms, 2 errors, 10 lost events on sse.
        let report = check(
            &thresholds("p99_ms<2s,errors<=2,complete==true", false),
            &rows(),
        );
        assert!(report.passed(), "{report}");
        assert_eq!(report.held, 6);
    }

    #[test]
    fn a_failure_names_the_row_and_the_measured_value() {
        let report = check(&thresholds("sse:events_lost==0,errors==0", false), &rows());
        assert!(!report.passed());
        assert_eq!(
            report.failed,
            [
                "sse:events_lost==0: sse-c1000-r50-p128 has events_lost = 10",
                "errors==0: sse-c1000-r50-p128 has errors = 2",
                "errors==0: request-response-c1000-r50-p128 has errors = 2",
            ]
        );
    }

    #[test]
    fn empty_columns_are_skipped_unless_asked_to_fail() {
        let report = check(&thresholds("events_lost<=10", false), &rows());
        assert!(report.passed(), "{report}");
        assert_eq!(report.held, 1);
        assert_eq!(
            report.skipped,
            [
                "events_lost<=10: events_lost is empty for request-response-c1000-r50-p128 (does \
              not apply there)"
            ]
        );
        let report = check(&thresholds("events_lost<=10", true), &rows());
        assert!(!report.passed());
        assert!(
            report.failed[0].ends_with("(--fail-if-missing)"),
            "{report}"
        );
    }

    #[test]
    fn the_target_column_compares_as_text() {
        let report = check(&thresholds("target==commbench", false), &rows());
        assert!(report.passed() && report.held == 2, "{report}");
        let report = check(&thresholds("target!=commbench", false), &rows());
        assert_eq!(
            report.failed,
            [
                "target!=commbench: sse-c1000-r50-p128 has target = \"commbench\"",
                "target!=commbench: request-response-c1000-r50-p128 has target = \"commbench\"",
            ]
        );
    }

    #[test]
    fn a_pattern_with_no_row_is_said() {
        let report = check(&thresholds("ws:p99_ms<20", false), &rows());
        assert!(report.passed());
        assert_eq!(report.skipped, ["ws:p99_ms<20: no ws row in this run"]);
        assert!(!check(&thresholds("ws:p99_ms<20", true), &rows()).passed());
    }
}
