//! `memory.png`: server RSS per connection against client count, one line (or bar) per pattern.

use plotters::{coord::Shift, prelude::*};

use super::{
    bars::{self, BarRow},
    canvas::{ChartBackend, Tip},
    chart::Chart,
    draw_legend, err, marker,
    palette::SeriesColors,
    text, zero_range, LegendEntry, AXIS, TICKS, TITLE,
};
use crate::report::{
    cells::{self, Labeler},
    fmt,
    load::RunData,
};

pub const FILE: &str = "memory.png";
pub const SIZE: (u32, u32) = (1400, 800);

pub const CHART: Chart<Input> = Chart {
    file: FILE,
    title: "Server memory per connection",
    prepare: |c, _| prepare(c.data, c.labeler, c.colors),
    size,
    draw: |root, input| draw(root, input),
    caption: |_, _| {
        "Peak server RSS divided by peak open connections, per cell. It includes the server's \
         baseline memory, so at small client counts it overstates what one connection costs; \
         with several client counts the findings give the marginal cost (the RSS slope)."
            .to_owned()
    },
};

/// Image size: a line chart over client counts, or one panel of bars for a single client count.
pub fn size(input: &Input) -> (u32, u32) {
    if input.client_counts.len() < 2 {
        (1200, 220 + bars::ROW_HEIGHT * input.lines.len() as u32)
    } else {
        SIZE
    }
}

#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    pub color: RGBColor,
    /// `(clients, KiB per connection, flagged)`.
    pub points: Vec<(f64, f64, bool)>,
}

#[derive(Debug, Clone)]
pub struct Input {
    pub client_counts: Vec<u64>,
    pub lines: Vec<Line>,
}

pub fn prepare(data: &RunData, labeler: &Labeler, colors: &SeriesColors) -> Result<Input, String> {
    let lines: Vec<Line> = cells::series(&data.rows, labeler)
        .into_iter()
        .filter_map(|(label, rows)| {
            let first = *rows.first()?;
            let points: Vec<(f64, f64, bool)> = rows
                .iter()
                .filter_map(|r| {
                    let bytes = r.server_rss_per_connection_bytes?;
                    Some((
                        r.clients as f64,
                        bytes as f64 / 1024.0,
                        cells::is_flagged(r),
                    ))
                })
                .collect();
            (!points.is_empty()).then(|| Line {
                label,
                color: colors.of(first, labeler),
                points,
            })
        })
        .collect();
    if lines.is_empty() {
        return Err(
            "no cell has a server RSS (external target, or no connection was open)".to_owned(),
        );
    }
    Ok(Input {
        client_counts: cells::client_counts(&data.rows),
        lines,
    })
}

pub fn draw<DB: ChartBackend>(root: &DrawingArea<DB, Shift>, input: &Input) -> Result<(), String> {
    let root = root
        .titled(
            "Server memory per connection (peak RSS ÷ peak connections)",
            text(TITLE),
        )
        .map_err(err)?;
    if let [clients] = input.client_counts[..] {
        let rows: Vec<BarRow> = input
            .lines
            .iter()
            .flat_map(|l| {
                l.points.iter().map(|p| BarRow {
                    label: if p.2 {
                        format!("{} !", l.label)
                    } else {
                        l.label.clone()
                    },
                    color: l.color,
                    flagged: p.2,
                    value: Some(p.1),
                })
            })
            .collect();
        return bars::draw_panel(
            &root,
            &format!(
                "at {clients} clients (one client count; includes the server's baseline RSS; ! hollow = flagged)"
            ),
            "server RSS per connection, KiB",
            &rows,
        );
    }
    let (width, _) = root.dim_in_pixel();
    let (plot, legend) = root.split_horizontally(width.saturating_sub(300));
    let lo = input.client_counts.first().copied().unwrap_or(1) as f64;
    let hi = input.client_counts.last().copied().unwrap_or(10) as f64;
    let keys: Vec<f64> = input.client_counts.iter().map(|c| *c as f64).collect();
    let y_hi = zero_range(
        input
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1)),
    );
    let mut chart = ChartBuilder::on(&plot)
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(
            (lo / 1.5..hi * 1.5).log_scale().with_key_points(keys),
            0.0..y_hi,
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("clients (log scale)")
        .y_desc("server RSS per connection, KiB")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| fmt::num(*v))
        .axis_desc_style(text(AXIS))
        .label_style(text(TICKS))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for line in &input.lines {
        chart
            .draw_series(LineSeries::new(
                line.points.iter().map(|p| (p.0, p.1)),
                line.color.stroke_width(2),
            ))
            .map_err(err)?;
        chart
            .draw_series(
                line.points
                    .iter()
                    .map(|p| marker((p.0, p.1), line.color, p.2)),
            )
            .map_err(err)?;
        chart
            .draw_series(line.points.iter().map(|p| {
                let title = format!(
                    "{} at {} clients: {} KiB per connection",
                    line.label,
                    p.0,
                    fmt::num(p.1)
                );
                Tip::point((p.0, p.1), 9, title)
            }))
            .map_err(err)?;
    }
    let entries: Vec<LegendEntry> = input
        .lines
        .iter()
        .map(|l| LegendEntry::for_line(&l.label, l.color, l.points.iter().any(|p| p.2)))
        .collect();
    draw_legend(
        &legend,
        &entries,
        Some("! hollow marker = flagged\ncell. RSS includes the\nserver's baseline, so the\nper-connection figure\nfalls as clients grow"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        pattern::Pattern,
        report::charts::{
            palette::pattern_color,
            test_util::{ink, svg_titles},
        },
    };

    #[test]
    fn draws_lines_even_for_one_client_count() {
        let input = Input {
            client_counts: vec![50],
            lines: vec![
                Line {
                    label: "sse".into(),
                    color: pattern_color(Pattern::Sse),
                    points: vec![(50.0, 284.0, false)],
                },
                Line {
                    label: "ws".into(),
                    color: pattern_color(Pattern::Ws),
                    points: vec![(50.0, 399.0, true)],
                },
            ],
        };
        assert_eq!(size(&input).0, 1200, "one client count draws bars");
        let (inked, distinct) = ink(size(&input), |root| draw(root, &input));
        assert!(inked > 15_000, "{inked}");
        assert!(distinct > 20, "{distinct}");
        let titles = svg_titles(size(&input), |root| draw(root, &input));
        assert_eq!(
            titles,
            [
                "sse — at 50 clients (one client count; includes the server's baseline RSS; ! \
                 hollow = flagged): 284 (server RSS per connection, KiB)",
                "ws ! — at 50 clients (one client count; includes the server's baseline RSS; ! \
                 hollow = flagged): 399 (server RSS per connection, KiB)"
            ]
        );
    }
}
