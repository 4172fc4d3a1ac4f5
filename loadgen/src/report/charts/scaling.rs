//! `scaling.png`: p99 latency and server CPU against client count, one line per pattern or interval.

use plotters::{coord::Shift, prelude::*};

use super::{
    canvas::{ChartBackend, Tip},
    chart::Chart,
    draw_legend, err, log_keys, log_range, marker,
    palette::SeriesColors,
    text, zero_range, LegendEntry, AXIS, TICKS, TITLE,
};
use crate::{
    pattern::Kind,
    report::{
        cells::{self, Labeler},
        fmt,
        load::RunData,
    },
};

pub const FILE: &str = "scaling.png";
pub const SIZE: (u32, u32) = (1700, 750);

pub const CHART: Chart<Input> = Chart {
    file: FILE,
    title: "Scaling with clients",
    prepare: |c, _| prepare(c.data, c.labeler, c.colors),
    size: |_| SIZE,
    draw: |root, input| draw(root, input),
    caption: |_, input| {
        let counts: Vec<String> = input.client_counts.iter().map(u64::to_string).collect();
        format!(
            "p99 latency (log scale) and server CPU (% of one core) against client count ({}), \
             one line per pattern and per poll interval. Hollow markers are flagged cells.",
            counts.join(", ")
        )
    },
};

/// One cell on a line.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub clients: f64,
    pub p99_ms: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub flagged: bool,
}

#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone)]
pub struct Input {
    pub client_counts: Vec<u64>,
    pub lines: Vec<Line>,
}

/// `Err` (the reason to skip) when the run has fewer than two client counts.
pub fn prepare(data: &RunData, labeler: &Labeler, colors: &SeriesColors) -> Result<Input, String> {
    let client_counts = cells::client_counts(&data.rows);
    if client_counts.len() < 2 {
        return Err(format!(
            "the run has one client count ({}), so there is nothing to scale over",
            client_counts.first().copied().unwrap_or_default()
        ));
    }
    let lines = cells::series(&data.rows, labeler)
        .into_iter()
        .filter_map(|(label, rows)| {
            let first = *rows.first()?;
            Some(Line {
                label: if first.pattern.kind() == Kind::Request {
                    format!("{label} (round trip)")
                } else {
                    label
                },
                color: colors.of(first, labeler),
                points: rows
                    .iter()
                    .map(|r| Point {
                        clients: r.clients as f64,
                        p99_ms: r.p99_ms,
                        cpu_percent: cells::cpu_percent(r),
                        flagged: cells::is_flagged(r),
                    })
                    .collect(),
            })
        })
        .collect();
    Ok(Input {
        client_counts,
        lines,
    })
}

type Getter = fn(&Point) -> Option<f64>;

pub fn draw<DB: ChartBackend>(root: &DrawingArea<DB, Shift>, input: &Input) -> Result<(), String> {
    let root = root
        .titled("Scaling with client count", text(TITLE))
        .map_err(err)?;
    let (width, _) = root.dim_in_pixel();
    let (plots, legend) = root.split_horizontally(width.saturating_sub(300));
    let panels = plots.split_evenly((1, 2));
    let lo = input.client_counts.first().copied().unwrap_or(1) as f64;
    let hi = input.client_counts.last().copied().unwrap_or(10) as f64;
    let keys: Vec<f64> = input.client_counts.iter().map(|c| *c as f64).collect();
    // Caption, y axis, value, log scale, and the value's unit in hover titles.
    let specs: [(&str, &str, Getter, bool, &str); 2] = [
        (
            "p99 latency",
            "p99 latency, ms (log scale)",
            |p| p.p99_ms,
            true,
            " ms",
        ),
        (
            "Server CPU",
            "server CPU, % of one core",
            |p| p.cpu_percent,
            false,
            "% of one core",
        ),
    ];
    for (area, (caption, y_desc, get, log_y, unit)) in panels.iter().zip(specs) {
        let values = input
            .lines
            .iter()
            .flat_map(|l| l.points.iter().filter_map(get));
        let x_range = (lo / 1.3..hi * 1.3)
            .log_scale()
            .with_key_points(keys.clone());
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(caption, text(AXIS + 1))
            .margin(15)
            .x_label_area_size(55)
            .y_label_area_size(80);
        let series = |line: &Line| -> Vec<(f64, f64, bool)> {
            line.points
                .iter()
                .filter_map(|p| get(p).map(|v| (p.clients, v, p.flagged)))
                .collect()
        };
        macro_rules! plot {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc("clients (log scale)")
                    .y_desc(y_desc)
                    .x_label_formatter(&|v| format!("{v:.0}"))
                    .y_label_formatter(&|v| fmt::num(*v))
                    .axis_desc_style(text(AXIS - 2))
                    .label_style(text(TICKS))
                    .light_line_style(RGBColor(235, 235, 235))
                    .draw()
                    .map_err(err)?;
                for line in &input.lines {
                    let points = series(line);
                    chart
                        .draw_series(LineSeries::new(
                            points.iter().map(|p| (p.0, p.1)),
                            line.color.stroke_width(2),
                        ))
                        .map_err(err)?;
                    chart
                        .draw_series(points.iter().map(|p| marker((p.0, p.1), line.color, p.2)))
                        .map_err(err)?;
                    chart
                        .draw_series(points.iter().map(|p| {
                            let title = format!(
                                "{} at {} clients: {} {}{unit}",
                                line.label,
                                p.0,
                                caption,
                                fmt::num(p.1)
                            );
                            Tip::point((p.0, p.1), 9, title)
                        }))
                        .map_err(err)?;
                }
            }};
        }
        if log_y {
            let (y_lo, y_hi) = log_range(values);
            plot!(builder
                .build_cartesian_2d(
                    x_range,
                    (y_lo..y_hi)
                        .log_scale()
                        .with_key_points(log_keys(y_lo, y_hi, 12)),
                )
                .map_err(err)?);
        } else {
            let y_hi = zero_range(values);
            plot!(builder
                .build_cartesian_2d(x_range, 0.0..y_hi)
                .map_err(err)?);
        }
    }
    let entries: Vec<LegendEntry> = input
        .lines
        .iter()
        .map(|l| LegendEntry::for_line(&l.label, l.color, l.points.iter().any(|p| p.flagged)))
        .collect();
    draw_legend(
        &legend,
        &entries,
        Some("! hollow marker = flagged\ncell (saturated or\nincomplete: listed in\nthe report)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::charts::{
        palette::pattern_color,
        test_util::{ink, svg_titles},
    };

    #[test]
    fn draws_two_panels() {
        let line = |label: &str, base: f64| Line {
            label: label.into(),
            color: pattern_color(label.parse().unwrap()),
            points: [100.0, 1000.0, 5000.0]
                .iter()
                .map(|c| Point {
                    clients: *c,
                    p99_ms: Some(base * c.sqrt()),
                    cpu_percent: Some(c / 100.0),
                    flagged: *c > 4000.0,
                })
                .collect(),
        };
        let input = Input {
            client_counts: vec![100, 1000, 5000],
            lines: vec![line("sse", 1.0), line("long-poll", 3.0)],
        };
        let (inked, distinct) = ink(SIZE, |root| draw(root, &input));
        assert!(inked > 20_000, "{inked}");
        assert!(distinct > 20, "{distinct}");
        let titles = svg_titles(SIZE, |root| draw(root, &input));
        assert_eq!(titles.len(), 12, "two panels of two lines of three points");
        assert_eq!(titles[0], "sse at 100 clients: p99 latency 10 ms");
        assert!(
            titles.contains(&"long-poll at 5000 clients: Server CPU 50% of one core".to_owned())
        );
    }
}
