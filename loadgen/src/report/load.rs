//! Reads a results directory: `summary.csv`, `run.json` and the `.hgrm` percentile files.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::ReportError;
use crate::output::{read_capacity, read_summary, CapacityRow, SummaryRow, CAPACITY_FILE};

/// `run.json` as a report needs it. Only `run_id` is required, so results of older or newer
/// versions still render; unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunMeta {
    pub run_id: String,
    #[serde(default)]
    pub started_unix_s: Option<u64>,
    #[serde(default)]
    pub complete: Option<bool>,
    #[serde(default)]
    pub commbench_version: Option<String>,
    #[serde(default)]
    pub git_commit: Option<String>,
    #[serde(default)]
    pub cpu_model: Option<String>,
    #[serde(default)]
    pub cpus: Option<u64>,
    #[serde(default)]
    pub kernel: Option<String>,
    #[serde(default)]
    pub rustc: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    /// The scenario (or study) as the run recorded it.
    #[serde(default)]
    pub scenario: serde_json::Value,
    #[serde(default)]
    pub cells: Vec<String>,
    /// What the run left out and why.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Where the servers, the broker and the load generator ran (missing before pinning existed).
    #[serde(default)]
    pub cpu_sets: Option<CpuSetsMeta>,
    /// The processes' scheduling class (missing before it was recorded).
    #[serde(default)]
    pub scheduling: Option<SchedulingMeta>,
}

/// `run.json`'s `scheduling`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SchedulingMeta {
    #[serde(default)]
    pub class: String,
    #[serde(default)]
    pub note: String,
}

/// `run.json`'s `cpu_sets`, as the report shows it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CpuSetsMeta {
    #[serde(default)]
    pub note: String,
}

impl RunMeta {
    /// A scenario field as text (numbers and strings; lists joined), if present.
    pub fn scenario_text(&self, field: &str) -> Option<String> {
        self.scenario.get(field).and_then(value_text)
    }

    /// A scenario field as a number (a number, or text that parses as one).
    pub fn scenario_number(&self, field: &str) -> Option<f64> {
        match self.scenario.get(field)? {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// A scalar or list JSON value as one line of text; `None` for null.
pub fn value_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .filter_map(value_text)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        other => Some(other.to_string()),
    }
}

/// Everything read from a results directory.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    pub dir: PathBuf,
    pub meta: RunMeta,
    /// The cells on one server with the in-process bus: what every chart and the model compare.
    pub rows: Vec<SummaryRow>,
    /// Cells on a broker or several instances, compared with their in-process counterparts (Redis)
    /// and with each other (`brokers.rs`) in their own sections.
    pub scale_out_rows: Vec<SummaryRow>,
    /// The message-queue cells (`job-*` patterns, on any bus), in their own section.
    pub job_rows: Vec<SummaryRow>,
    /// Cells of other servers measured beside commbench's (`compare --peers`), set beside
    /// commbench's cells in their own section.
    pub peer_rows: Vec<SummaryRow>,
    /// `capacity.csv` of a `commbench capacity` run; empty for other runs.
    pub capacity: Vec<CapacityRow>,
}

impl RunData {
    /// Every cell of the run, whichever section shows it.
    pub fn all_rows(&self) -> impl Iterator<Item = &SummaryRow> {
        self.rows
            .iter()
            .chain(&self.scale_out_rows)
            .chain(&self.job_rows)
            .chain(&self.peer_rows)
    }
}

/// Reads `summary.csv` and `run.json` from `dir`.
pub fn load_run(dir: &Path) -> Result<RunData, ReportError> {
    match fs::metadata(dir) {
        Err(_) => return Err(ReportError::MissingDir(dir.to_owned())),
        Ok(meta) if !meta.is_dir() => return Err(ReportError::NotADir(dir.to_owned())),
        Ok(_) => {}
    }
    let summary = dir.join("summary.csv");
    if !summary.is_file() {
        return Err(ReportError::MissingFile(summary));
    }
    let rows = read_summary(&summary).map_err(|e| ReportError::Summary {
        path: summary.clone(),
        message: e.to_string(),
    })?;
    if rows.is_empty() {
        return Err(ReportError::EmptySummary(summary));
    }
    let run_json = dir.join("run.json");
    if !run_json.is_file() {
        return Err(ReportError::MissingFile(run_json));
    }
    let text = fs::read_to_string(&run_json).map_err(|source| ReportError::Read {
        path: run_json.clone(),
        source,
    })?;
    let meta: RunMeta = serde_json::from_str(&text).map_err(|e| ReportError::RunJson {
        path: run_json.clone(),
        message: format!("{e} (expected the JSON object commbench writes, with a run_id)"),
    })?;
    let (peer_rows, rows) = super::peers::split(rows);
    let (job_rows, rows): (Vec<_>, Vec<_>) = rows.into_iter().partition(super::jobs::is_job);
    let (rows, scale_out_rows) = rows.into_iter().partition(super::bus::is_in_process);
    let capacity_path = dir.join(CAPACITY_FILE);
    let capacity = if capacity_path.is_file() {
        read_capacity(&capacity_path).map_err(|e| ReportError::Summary {
            path: capacity_path,
            message: e.to_string(),
        })?
    } else {
        Vec::new()
    };
    Ok(RunData {
        dir: dir.to_owned(),
        meta,
        rows,
        scale_out_rows,
        job_rows,
        peer_rows,
        capacity,
    })
}

/// One row of a `.hgrm` file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HgrmRow {
    pub value_ms: f64,
    pub percentile: f64,
    pub total_count: u64,
    /// `1/(1-Percentile)`; absent on the 100% row.
    pub inverse: Option<f64>,
}

/// The path of a cell's histogram file: `<cell>.<metric>.hgrm`.
pub fn hgrm_path(dir: &Path, cell: &str, metric: &str) -> PathBuf {
    dir.join(format!("{cell}.{metric}.hgrm"))
}

/// Reads a `.hgrm` file; `Ok(None)` when it does not exist.
pub fn read_hgrm(path: &Path) -> Result<Option<Vec<HgrmRow>>, ReportError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReportError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    parse_hgrm(&text)
        .map(Some)
        .map_err(|(line, message)| ReportError::Hgrm {
            path: path.to_owned(),
            line,
            message,
        })
}

/// Parses HdrHistogram percentile text: the header, blank and `#[` footer lines are skipped; every
/// other line must be `Value Percentile TotalCount [1/(1-Percentile)]`. Errors give the 1-based line.
pub fn parse_hgrm(text: &str) -> Result<Vec<HgrmRow>, (usize, String)> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("Value") {
            continue;
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if !(3..=4).contains(&fields.len()) {
            return Err((
                index + 1,
                format!("expected 3 or 4 numbers, found `{trimmed}`"),
            ));
        }
        let number = |i: usize| -> Result<f64, (usize, String)> {
            fields[i]
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| (index + 1, format!("`{}` is not a number", fields[i])))
        };
        let total_count = fields[2]
            .parse::<u64>()
            .map_err(|_| (index + 1, format!("`{}` is not a count", fields[2])))?;
        let percentile = number(1)?;
        if !(0.0..=1.0).contains(&percentile) {
            return Err((
                index + 1,
                format!("percentile {percentile} is outside 0..=1"),
            ));
        }
        rows.push(HgrmRow {
            value_ms: number(0)?,
            percentile,
            total_count,
            inverse: if fields.len() == 4 {
                Some(number(3)?)
            } else {
                None
            },
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "       Value     Percentile TotalCount 1/(1-Percentile)\n\n\
        \x20      1.821 0.000000000000          1           1.00\n\
        \x20      3.771 0.500000000000       1503           2.00\n\
        \x20      8.011 0.999707031250       3000        3413.33\n\
        \x20      8.011 1.000000000000       3000\n\
        #[Mean    =        3.851, StdDeviation   =        0.934]\n\
        #[Max     =        8.011, Total count    =         3000]\n";

    #[test]
    fn parses_rows_and_skips_header_and_footer() {
        let rows = parse_hgrm(SAMPLE).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1].value_ms, 3.771);
        assert_eq!(rows[1].inverse, Some(2.0));
        assert_eq!(rows[3].inverse, None);
        assert_eq!(rows[3].total_count, 3000);
    }

    #[test]
    fn bad_rows_name_the_line() {
        let (line, message) = parse_hgrm("Value Percentile\n\n 1.0 x 3 1.0\n").unwrap_err();
        assert_eq!(line, 3);
        assert!(message.contains("`x`"), "{message}");
        let (line, _) = parse_hgrm("1.0 0.5\n").unwrap_err();
        assert_eq!(line, 1);
    }

    #[test]
    fn scenario_fields_read_numbers_text_and_lists() {
        let meta = RunMeta {
            scenario: serde_json::json!({"rate": 20.0, "clients": "100,1000", "patterns": ["sse", "ws"], "arrival": "fixed"}),
            ..RunMeta::default()
        };
        assert_eq!(meta.scenario_number("rate"), Some(20.0));
        assert_eq!(meta.scenario_text("patterns").as_deref(), Some("sse, ws"));
        assert_eq!(meta.scenario_text("arrival").as_deref(), Some("fixed"));
        assert_eq!(meta.scenario_number("clients"), None);
        assert_eq!(meta.scenario_number("missing"), None);
    }
}
