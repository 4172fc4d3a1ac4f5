//! A panel of labelled horizontal bars (flagged cells hollow), shared by the cost and memory charts.

use plotters::{coord::Shift, prelude::*};

use super::{
    canvas::{ChartBackend, Tip},
    err, text, text_left, zero_range, AXIS, TICKS, TITLE,
};
use crate::report::fmt;

/// One bar.
#[derive(Debug, Clone)]
pub struct BarRow {
    pub label: String,
    pub color: RGBColor,
    pub flagged: bool,
    /// `None` draws `n/a` instead of a bar.
    pub value: Option<f64>,
}

/// One cell's bars across several panels (one value per panel).
#[derive(Debug, Clone)]
pub struct CellBars<const N: usize> {
    pub label: String,
    pub color: RGBColor,
    pub flagged: bool,
    pub values: [Option<f64>; N],
}

/// Draws `panels` (caption, unit) side by side under `title`, panel `i` showing every cell's
/// `values[i]`.
pub fn draw_panels<DB: ChartBackend, const N: usize>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    panels: [(&str, &str); N],
    cells: &[CellBars<N>],
) -> Result<(), String> {
    let root = root.titled(title, text(TITLE - 4)).map_err(err)?;
    for (panel, (area, (name, unit))) in root.split_evenly((1, N)).iter().zip(panels).enumerate() {
        let rows: Vec<BarRow> = cells
            .iter()
            .map(|cell| BarRow {
                label: cell.label.clone(),
                color: cell.color,
                flagged: cell.flagged,
                value: cell.values[panel],
            })
            .collect();
        draw_panel(area, name, unit, &rows)?;
    }
    Ok(())
}

/// Pixels of height per bar (plus the axes), for sizing images.
pub const ROW_HEIGHT: u32 = 46;

/// The size of an image of `width` pixels showing `bars` bars per panel.
pub fn size(width: u32, bars: usize) -> (u32, u32) {
    (width, 200 + ROW_HEIGHT * bars as u32)
}

/// Draws `rows` in `area` with `caption` above and `unit` under the x axis; hovering a row shows
/// its value (SVG).
pub fn draw_panel<DB: ChartBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    unit: &str,
    rows: &[BarRow],
) -> Result<(), String> {
    let n = rows.len();
    if n == 0 {
        return Ok(());
    }
    // Room on the right for the value labels, on the left for the longest cell label.
    let x_max = zero_range(rows.iter().filter_map(|r| r.value)) * 1.15;
    let longest = rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(0);
    let label_area = (longest as u32 * 9 + 20).clamp(190, 400);
    // `0..n-1` segmented has n segments; slot i (from the bottom) holds row n − 1 − i, so the
    // first row is at the top.
    let mut chart = ChartBuilder::on(area)
        .caption(caption, text(AXIS + 1))
        .margin(15)
        .x_label_area_size(55)
        .y_label_area_size(label_area)
        .build_cartesian_2d(0.0..x_max, (0..n - 1).into_segmented())
        .map_err(err)?;
    let label_of = |y: &SegmentValue<usize>| match y {
        SegmentValue::CenterOf(slot) if *slot < n => rows[n - 1 - slot].label.clone(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .x_labels(6)
        .x_desc(unit)
        .y_label_formatter(&label_of)
        .x_label_formatter(&|v| fmt::num(*v))
        .axis_desc_style(text(AXIS - 2))
        .label_style(text(TICKS))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    let top = |slot: usize| {
        if slot + 1 >= n {
            SegmentValue::Last
        } else {
            SegmentValue::Exact(slot + 1)
        }
    };
    for (i, row) in rows.iter().enumerate() {
        let slot = n - 1 - i;
        if let Some(v) = row.value {
            let style = if row.flagged {
                row.color.stroke_width(3)
            } else {
                row.color.filled()
            };
            let mut bar = Rectangle::new([(0.0, SegmentValue::Exact(slot)), (v, top(slot))], style);
            bar.set_margin(7, 7, 0, 0);
            chart.draw_series(std::iter::once(bar)).map_err(err)?;
        }
        let label = row.value.map_or_else(|| "n/a".to_owned(), fmt::num);
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((row.value.unwrap_or(0.0), SegmentValue::CenterOf(slot)))
                    + Text::new(label.clone(), (6, 0), text_left(TICKS)),
            ))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Tip::area(
                (0.0, SegmentValue::Exact(slot)),
                (x_max, top(slot)),
                format!("{} — {caption}: {label} ({unit})", row.label),
            )))
            .map_err(err)?;
    }
    Ok(())
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
    fn draws_bars_and_missing_values() {
        let rows = [
            BarRow {
                label: "sse".into(),
                color: pattern_color(Pattern::Sse),
                flagged: false,
                value: Some(40.0),
            },
            BarRow {
                label: "ws !".into(),
                color: pattern_color(Pattern::Ws),
                flagged: true,
                value: Some(55.0),
            },
            BarRow {
                label: "poll-url".into(),
                color: pattern_color(Pattern::PollUrl),
                flagged: false,
                value: None,
            },
        ];
        let (inked, distinct) = ink((600, 300), |root| draw_panel(root, "CPU", "µs", &rows));
        assert!(inked > 8_000, "{inked}");
        assert!(distinct > 10, "{distinct}");
        let titles = svg_titles((600, 300), |root| draw_panel(root, "CPU", "µs", &rows));
        assert_eq!(
            titles,
            [
                "sse — CPU: 40 (µs)",
                "ws ! — CPU: 55 (µs)",
                "poll-url — CPU: n/a (µs)"
            ]
        );
    }
}
