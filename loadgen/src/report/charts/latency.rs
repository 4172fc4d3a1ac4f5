//! `latency.png`: HdrHistogram-style percentile spectra of the cells at the largest client count.

use plotters::{coord::Shift, prelude::*};

use super::{
    canvas::{ChartBackend, Tip},
    chart::Chart,
    draw_legend, err, log_keys, log_range,
    palette::SeriesColors,
    text, LegendEntry, AXIS, TICKS, TITLE,
};
use crate::report::{
    cells::{self, Labeler},
    load::{self, RunData},
};

pub const FILE: &str = "latency.png";
pub const SIZE: (u32, u32) = (1400, 800);

pub const CHART: Chart<Input> = Chart {
    file: FILE,
    title: "Latency percentiles",
    prepare: |c, notes| prepare(c.data, c.labeler, c.colors, notes),
    size: |_| SIZE,
    draw: |root, input| draw(root, input),
    caption: |c, _| {
        format!(
            "Percentile spectrum of every cell at {} clients, the run's largest client \
             count (scaling.png covers the others), from the cells' `.hgrm` files: delivery \
             latency (publish → client) for the feed patterns, round trip for \
             request-response. x is 1/(1 − percentile) on a log scale, y is log scale; dashed \
             lines are flagged cells.",
            c.clients
        )
    },
};

/// One cell's spectrum.
#[derive(Debug, Clone)]
pub struct Curve {
    pub label: String,
    pub color: RGBColor,
    pub flagged: bool,
    /// `(1/(1−p), latency ms)`.
    pub points: Vec<(f64, f64)>,
}

/// What the chart shows.
#[derive(Debug, Clone)]
pub struct Input {
    pub clients: u64,
    pub curves: Vec<Curve>,
}

/// Reads the spectra of the cells at the largest client count. Cells whose `.hgrm` is missing or
/// corrupt are left out with a note; `Err` (the reason) when no cell has a spectrum.
pub fn prepare(
    data: &RunData,
    labeler: &Labeler,
    colors: &SeriesColors,
    notes: &mut Vec<String>,
) -> Result<Input, String> {
    let clients = *cells::client_counts(&data.rows).last().ok_or("no cells")?;
    let mut curves = Vec::new();
    for row in cells::at_clients(&data.rows, clients) {
        let Some(metric) = row.latency_metric.as_deref() else {
            continue;
        };
        let path = load::hgrm_path(&data.dir, &row.cell, metric);
        match load::read_hgrm(&path) {
            Ok(Some(rows)) => {
                let points: Vec<(f64, f64)> = rows
                    .iter()
                    .filter_map(|r| r.inverse.map(|inv| (inv, r.value_ms.max(0.001))))
                    .collect();
                if points.is_empty() {
                    notes.push(format!(
                        "{}: {} has no samples; left out of {FILE}.",
                        row.cell,
                        path.display()
                    ));
                    continue;
                }
                curves.push(Curve {
                    label: labeler.cell(row),
                    color: colors.of(row, labeler),
                    flagged: cells::is_flagged(row),
                    points,
                });
            }
            Ok(None) => notes.push(format!(
                "{}: {} is missing; left out of {FILE}.",
                row.cell,
                path.display()
            )),
            Err(e) => notes.push(format!("{e}; left out of {FILE}.")),
        }
    }
    if curves.is_empty() {
        return Err(format!(
            "no cell at {clients} clients has a latency histogram (.hgrm)"
        ));
    }
    Ok(Input { clients, curves })
}

/// The percentile a `1/(1−p)` key point stands for: 2 → `50%`, 1000 → `99.9%`.
pub fn percentile_label(inverse: f64) -> String {
    let p = (1.0 - 1.0 / inverse) * 100.0;
    let text = format!("{p:.4}");
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// The percentiles (as `1/(1−p)`) a curve's hover titles name: 50%, 90%, 99%, … 99.999%.
const TIP_KEYS: [f64; 6] = [2.0, 10.0, 100.0, 1e3, 1e4, 1e5];

/// A curve's points at [`TIP_KEYS`]: the first point at or beyond each.
fn tip_points(curve: &Curve) -> Vec<(f64, (f64, f64))> {
    TIP_KEYS
        .iter()
        .filter_map(|key| {
            let point = curve.points.iter().find(|p| p.0 >= key * 0.999)?;
            Some((*key, *point))
        })
        .collect()
}

pub fn draw<DB: ChartBackend>(root: &DrawingArea<DB, Shift>, input: &Input) -> Result<(), String> {
    let title = format!(
        "Latency by percentile at {} clients (delivery: publish → client; request-response: round trip)",
        input.clients
    );
    let root = root.titled(&title, text(TITLE - 4)).map_err(err)?;
    let (width, _) = root.dim_in_pixel();
    let (plot, legend) = root.split_horizontally(width.saturating_sub(300));
    let max_inverse = input
        .curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .fold(100.0_f64, f64::max);
    let x_max = 10_f64.powf(max_inverse.log10().ceil());
    let keys: Vec<f64> = [2.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7]
        .into_iter()
        .filter(|k| *k <= x_max)
        .collect();
    let (y_lo, y_hi) = log_range(
        input
            .curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.1)),
    );
    let mut chart = ChartBuilder::on(&plot)
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (1.0..x_max).log_scale().with_key_points(keys),
            (y_lo..y_hi)
                .log_scale()
                .with_key_points(log_keys(y_lo, y_hi, 12)),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile (log scale of 1/(1 − p))")
        .y_desc("latency, ms (log scale)")
        .x_label_formatter(&|v| percentile_label(*v))
        .y_label_formatter(&|v| crate::report::fmt::num(*v))
        .axis_desc_style(text(AXIS))
        .label_style(text(TICKS))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    let mut entries = Vec::new();
    for curve in &input.curves {
        let style = curve.color.stroke_width(if curve.flagged { 2 } else { 3 });
        if curve.flagged {
            chart
                .draw_series(DashedLineSeries::new(
                    curve.points.iter().copied(),
                    10,
                    6,
                    style,
                ))
                .map_err(err)?;
        } else {
            chart
                .draw_series(LineSeries::new(curve.points.iter().copied(), style))
                .map_err(err)?;
        }
        chart
            .draw_series(tip_points(curve).into_iter().map(|(key, point)| {
                let title = format!(
                    "{}: p{} {} ms",
                    curve.label,
                    percentile_label(key).trim_end_matches('%'),
                    crate::report::fmt::num(point.1)
                );
                Tip::point(point, 8, title)
            }))
            .map_err(err)?;
        entries.push(LegendEntry {
            label: curve.label.clone(),
            color: curve.color,
            dashed: curve.flagged,
            marker: None,
        });
    }
    let note = if input.curves.iter().any(|c| c.flagged) {
        "! dashed = flagged cell\n(saturated or\nincomplete: listed in\nthe report)"
    } else {
        "HdrHistogram percentile\nspectrum from the .hgrm files"
    };
    draw_legend(&legend, &entries, Some(note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::charts::{
        palette::pattern_color,
        test_util::{ink, svg_titles},
    };

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(2.0), "50%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(10_000.0), "99.99%");
    }

    #[test]
    fn draws_spectra() {
        let curve = |label: &str, scale: f64, flagged: bool| Curve {
            label: label.into(),
            color: pattern_color(label.parse().unwrap()),
            flagged,
            points: [1.0_f64, 2.0, 10.0, 100.0, 1000.0]
                .iter()
                .map(|inv| (*inv, scale * (1.0 + inv.log10())))
                .collect(),
        };
        let input = Input {
            clients: 100,
            curves: vec![curve("sse", 3.0, false), curve("short-poll", 300.0, true)],
        };
        let (inked, distinct) = ink(SIZE, |root| draw(root, &input));
        assert!(inked > 20_000, "{inked}");
        assert!(distinct > 20, "{distinct}");
        let titles = svg_titles(SIZE, |root| draw(root, &input));
        assert_eq!(
            titles[..4],
            [
                "sse: p50 3.9 ms",
                "sse: p90 6 ms",
                "sse: p99 9 ms",
                "sse: p99.9 12 ms"
            ]
        );
        assert_eq!(titles.len(), 8, "{titles:?}");
    }
}
