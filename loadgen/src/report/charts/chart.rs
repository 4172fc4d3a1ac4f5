//! What a chart of the report is: a descriptor (file, title, and how its input is prepared, sized,
//! drawn and described) that each chart module declares once, and how the report renders one: the
//! same draw function makes the PNG beside `REPORT.md` and the inline SVG of `REPORT.html`.

use std::path::Path;

use super::{canvas::Area, palette::SeriesColors};
use crate::report::{
    cells::Labeler,
    document::{Figure, Svg},
    load::RunData,
    ReportError,
};

/// What every chart is prepared from.
pub struct ChartContext<'a> {
    pub data: &'a RunData,
    pub labeler: &'a Labeler,
    pub colors: &'a SeriesColors,
    /// The run's largest client count: the charts that show one count show this one.
    pub clients: u64,
}

/// One chart of the report.
pub struct Chart<I> {
    pub file: &'static str,
    pub title: &'static str,
    /// The chart's input from the run, or why it is not drawn; what it leaves out goes to `notes`.
    pub prepare: fn(&ChartContext<'_>, &mut Vec<String>) -> Result<I, String>,
    /// The image size in pixels (the SVG's view box).
    pub size: fn(&I) -> (u32, u32),
    /// Draws on a PNG or an SVG canvas alike.
    pub draw: for<'b> fn(&Area<'b>, &I) -> Result<(), String>,
    /// The text under the chart in the report.
    pub caption: fn(&ChartContext<'_>, &I) -> String,
}

/// A chart of any input, as the report's list holds it.
pub trait ReportChart {
    /// Draws the chart into `dir` as a PNG, and as an SVG for the figure, when it has data; says
    /// what became of it.
    fn render(
        &self,
        context: &ChartContext<'_>,
        dir: &Path,
        notes: &mut Vec<String>,
    ) -> Result<Figure, ReportError>;
}

impl<I> ReportChart for Chart<I> {
    fn render(
        &self,
        context: &ChartContext<'_>,
        dir: &Path,
        notes: &mut Vec<String>,
    ) -> Result<Figure, ReportError> {
        let figure = |text: String, svg: Option<Svg>| Figure {
            file: self.file,
            title: self.title,
            text,
            svg,
        };
        let input = match (self.prepare)(context, notes) {
            Ok(input) => input,
            Err(reason) => return Ok(figure(reason, None)),
        };
        let path = dir.join(self.file);
        let size = (self.size)(&input);
        super::render_png(&path, size, |root| (self.draw)(root, &input))?;
        let markup =
            super::render_svg(size, |root| (self.draw)(root, &input)).map_err(|message| {
                ReportError::Chart {
                    path,
                    message: format!("as SVG for the HTML report: {message}"),
                }
            })?;
        let svg = Svg {
            markup,
            width: size.0,
            height: size.1,
        };
        Ok(figure((self.caption)(context, &input), Some(svg)))
    }
}
