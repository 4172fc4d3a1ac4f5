//! The report renderer: a run's result files (it never measures) → PNG charts, `REPORT.md` and
//! `REPORT.html`, both rendered from one document.

pub mod analysis;
pub mod brokers;
pub mod bus;
pub mod capacity;
pub mod cells;
pub mod charts;
pub mod content;
pub mod document;
mod error;
pub mod fmt;
pub mod html;
pub mod jobs;
pub mod load;
pub mod markdown;
pub mod model;
pub mod model_table;
pub mod peers;

use std::{
    fmt::Display,
    path::{Path, PathBuf},
};

pub use error::ReportError;

use self::{
    cells::Labeler,
    charts::{
        capacity as capacity_chart,
        chart::{ChartContext, ReportChart},
        cost, frontier, latency, memory,
        palette::SeriesColors,
        scaling,
    },
    content::ReportParts,
    document::Document,
};

/// The report's file name.
pub const REPORT_FILE: &str = "REPORT.md";

/// The HTML report's file name.
pub const HTML_FILE: &str = "REPORT.html";

/// Renders the report's document into one file's text.
type Renderer = fn(&Document) -> String;

/// The files the report's document is rendered into, in the order they are written.
const RENDERINGS: [(&str, Renderer); 2] =
    [(REPORT_FILE, markdown::render), (HTML_FILE, html::render)];

/// What [`render_report`] did.
#[derive(Debug, Clone)]
pub struct ReportOutcome {
    pub dir: PathBuf,
    /// Every file written: the charts, then `REPORT.md` and `REPORT.html`.
    pub written: Vec<PathBuf>,
    /// Charts not drawn, as `(file, reason)` (e.g. `scaling.png` with one client count).
    pub skipped: Vec<(String, String)>,
    /// Cells flagged as saturated or unreliable (warnings, or incomplete).
    pub flagged: Vec<String>,
    /// Things left out along the way (a missing `.hgrm`, …); also listed in the report.
    pub notes: Vec<String>,
}

impl ReportOutcome {
    /// The path of `REPORT.md`.
    pub fn report(&self) -> PathBuf {
        self.dir.join(REPORT_FILE)
    }

    /// The path of `REPORT.html`.
    pub fn html(&self) -> PathBuf {
        self.dir.join(HTML_FILE)
    }
}

impl Display for ReportOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .written
            .iter()
            .map(|p| {
                p.file_name()
                    .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
            })
            .collect();
        write!(
            f,
            "report: {} ({})",
            self.report().display(),
            names.join(", ")
        )?;
        for (file, reason) in &self.skipped {
            write!(f, "\n  {file} not drawn: {reason}")?;
        }
        if !self.flagged.is_empty() {
            write!(
                f,
                "\n  ! flagged (saturated or unreliable): {}",
                self.flagged.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The report's charts, in the order the report shows them.
const CHARTS: [&dyn ReportChart; 9] = [
    &latency::CHART,
    &cost::CHART,
    &scaling::CHART,
    &frontier::CHART,
    &memory::CHART,
    &charts::bus::CHART,
    &charts::brokers::CHART,
    &charts::peers::CHART,
    &capacity_chart::CHART,
];

/// Renders `dir`'s charts ([`CHARTS`]), `REPORT.md` and `REPORT.html` from its result files. Fails with a message
/// naming the file when the directory, `summary.csv` or `run.json` is missing or corrupt; a chart
/// without data (e.g. scaling with one client count) is skipped and the report says why.
pub fn render_report(dir: &Path) -> Result<ReportOutcome, ReportError> {
    let data = load::load_run(dir)?;
    charts::ensure_font()?;
    let labeler = Labeler::new(&data.rows);
    let colors = SeriesColors::new(&data.rows, &labeler);
    let context = ChartContext {
        data: &data,
        labeler: &labeler,
        colors: &colors,
        clients: cells::client_counts(&data.rows)
            .last()
            .copied()
            .unwrap_or(0),
    };
    let mut notes = Vec::new();
    let figures = CHARTS
        .iter()
        .map(|chart| chart.render(&context, dir, &mut notes))
        .collect::<Result<Vec<_>, _>>()?;

    let table = model_table::model_table(&data, &labeler);
    let findings = analysis::findings(&data, &labeler, &table);
    let document = content::document(&ReportParts {
        data: &data,
        labeler: &labeler,
        table: &table,
        findings: &findings,
        charts: &figures,
        notes: &notes,
    });
    let mut written: Vec<PathBuf> = figures
        .iter()
        .filter(|f| f.drawn())
        .map(|f| dir.join(f.file))
        .collect();
    for (file, render) in RENDERINGS {
        let path = dir.join(file);
        std::fs::write(&path, render(&document)).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(ReportOutcome {
        dir: dir.to_owned(),
        written,
        skipped: figures
            .into_iter()
            .filter(|f| !f.drawn())
            .map(|f| (f.file.to_owned(), f.text))
            .collect(),
        flagged: data
            .all_rows()
            .filter(|r| cells::is_flagged(r))
            .map(|r| r.cell.clone())
            .collect(),
        notes,
    })
}

#[cfg(test)]
mod tests;
