//! What a chart of the report is: a descriptor (file, title, and how its input is prepared, sized,
//! drawn and described) that each chart module declares once, and how the report renders one.

use std::path::Path;

use plotters::{coord::Shift, prelude::*};

use super::palette::SeriesColors;
use crate::report::{cells::Labeler, load::RunData, markdown::ChartStatus, ReportError};

/// What every chart is prepared from.
pub struct ChartContext<'a> {
    pub data: &'a RunData,
    pub labeler: &'a Labeler,
    pub colors: &'a SeriesColors,
    /// The run's largest client count: the charts that show one count show this one.
    pub clients: u64,
}

/// The drawing area of a PNG.
pub type Png<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// One chart of the report.
pub struct Chart<I> {
    pub file: &'static str,
    pub title: &'static str,
    /// The chart's input from the run, or why it is not drawn; what it leaves out goes to `notes`.
    pub prepare: fn(&ChartContext<'_>, &mut Vec<String>) -> Result<I, String>,
    /// The image size in pixels.
    pub size: fn(&I) -> (u32, u32),
    pub draw: for<'b> fn(&Png<'b>, &I) -> Result<(), String>,
    /// The text under the chart in `REPORT.md`.
    pub caption: fn(&ChartContext<'_>, &I) -> String,
}

/// A chart of any input, as the report's list holds it.
pub trait ReportChart {
    /// Draws the chart into `dir` when it has data; says what became of it.
    fn render(
        &self,
        context: &ChartContext<'_>,
        dir: &Path,
        notes: &mut Vec<String>,
    ) -> Result<ChartStatus, ReportError>;
}

impl<I> ReportChart for Chart<I> {
    fn render(
        &self,
        context: &ChartContext<'_>,
        dir: &Path,
        notes: &mut Vec<String>,
    ) -> Result<ChartStatus, ReportError> {
        let status = |text: String, drawn: bool| ChartStatus {
            file: self.file,
            title: self.title,
            text,
            drawn,
        };
        let input = match (self.prepare)(context, notes) {
            Ok(input) => input,
            Err(reason) => return Ok(status(reason, false)),
        };
        let path = dir.join(self.file);
        super::render_png(&path, (self.size)(&input), |root| (self.draw)(root, &input))?;
        Ok(status((self.caption)(context, &input), true))
    }
}
