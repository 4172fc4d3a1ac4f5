//! `capacity.csv`: one row per capacity search (a pattern, and a poll interval for pollers): the
//! largest load that met the goal, what stopped the search, and the costs at that load.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    csv_file::{read_rows, write_rows},
    OutputError,
};
use crate::{capacity::judge::Constraint, pattern::Pattern};

/// The file's name in a results directory.
pub const CAPACITY_FILE: &str = "capacity.csv";

/// One search. Empty cells (`None`) mean "does not apply", e.g. no step passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityRow {
    pub run_id: String,
    pub pattern: Pattern,
    /// Poll interval of the polling patterns.
    pub interval_s: Option<f64>,
    /// What the search varied: `clients` or `rate` (events published per second).
    pub vary: String,
    /// The goal, e.g. `p99<100ms`.
    pub slo: String,
    /// The latency the goal holds: `delivery`, or `round_trip` for pollers and request-response.
    pub slo_metric: String,
    /// The largest client count (or rate) that passed; 0 when no step did.
    pub capacity: u64,
    /// What stopped the search: `slo`, `loss`, `errors`, `harness`, `server-cpu`, `fd-limit`,
    /// `memory`, `max` or `interrupted`.
    pub constraint: Constraint,
    /// The constraint in words, with the measured values.
    pub constraint_detail: String,
    /// The smallest value that failed; empty when a ceiling (`--max`, a resource limit) did.
    pub first_failing: Option<u64>,
    /// The passing step at capacity: its cell name (the prefix of its files), clients and rate.
    pub cell: Option<String>,
    pub clients: Option<u64>,
    pub rate_per_s: Option<f64>,
    /// The goal's latency at capacity, ms.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Server CPU seconds per second at capacity.
    pub server_cores: Option<f64>,
    /// Capacity per core of server CPU: `capacity / server_cores`.
    pub capacity_per_core: Option<f64>,
    pub server_cpu_us_per_event: Option<f64>,
    pub bytes_per_event: Option<f64>,
    pub server_peak_rss_bytes: Option<u64>,
    /// Steps measured (refused steps, checked before running, not counted).
    pub steps_run: u64,
    /// Every step in the order tried: `value verdict`, `; `-separated.
    pub steps: String,
}

impl CapacityRow {
    /// `sse`, or `short-poll 1s` for a poller.
    pub fn label(&self) -> String {
        crate::report::fmt::pattern_at(self.pattern, self.interval_s)
    }
}

impl crate::threshold::Checked for CapacityRow {
    fn label(&self) -> String {
        CapacityRow::label(self)
    }

    fn pattern(&self) -> Pattern {
        self.pattern
    }
}

/// Writes `capacity.csv`.
pub fn write_capacity(path: &Path, rows: &[CapacityRow]) -> Result<(), OutputError> {
    write_rows(path, rows)
}

/// Reads a `capacity.csv` back; the error names the file and the row or column at fault.
pub fn read_capacity(path: &Path) -> Result<Vec<CapacityRow>, OutputError> {
    read_rows(path, "capacity")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_util::{capacity_row as row, temp_path};

    #[test]
    fn csv_round_trips_and_labels_name_the_interval() {
        let path = temp_path("capacity.csv");
        let mut none_passed = row(Pattern::ShortPoll, Some(1.0), 0, 0.5);
        none_passed.cell = None;
        none_passed.p99_ms = None;
        let rows = [row(Pattern::Sse, None, 4000, 0.8), none_passed];
        write_capacity(&path, &rows).unwrap();
        let back = read_capacity(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, rows);
        assert_eq!(back[0].label(), "sse");
        assert_eq!(back[1].label(), "short-poll 1s");
    }

    #[test]
    fn a_bad_file_is_named() {
        let path = temp_path("bad-capacity.csv");
        std::fs::write(&path, "run_id,pattern\nr,sse\n").unwrap();
        let error = read_capacity(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(
            error.contains("bad-capacity.csv is not a valid capacity file"),
            "{error}"
        );
    }
}
