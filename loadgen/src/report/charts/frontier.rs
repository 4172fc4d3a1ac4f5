//! `frontier.png`: server CPU (or bytes) per event vs p99 latency, log–log, one labelled point per cell.

use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{
    canvas::{ChartBackend, Tip},
    chart::Chart,
    err, log_keys, log_range, marker,
    palette::SeriesColors,
    text, AXIS, TICKS, TITLE,
};
use crate::{
    pattern::Pattern,
    report::{
        cells::{self, Labeler},
        fmt,
        load::RunData,
    },
};

pub const FILE: &str = "frontier.png";
pub const SIZE: (u32, u32) = (1300, 850);

pub const CHART: Chart<Input> = Chart {
    file: FILE,
    title: "Trade-off frontier",
    prepare: |c, _| prepare(c.data, c.labeler, c.colors),
    size: |_| SIZE,
    draw: |root, input| draw(root, input),
    caption: |_, input| {
        let fallback = if input.cost == Cost::BytesPerEvent {
            " (server CPU is missing for some cells, so bytes stand in for cost)"
        } else {
            ""
        };
        format!(
            "One point per feed cell at {} clients: x = {}{fallback}, y = p99 delivery \
             latency; both log scale, lower left is better. A poller's intervals ({}) are joined \
             by a dashed line; request-response is left out (it does not carry the feed). Hollow \
             points and `!` labels are flagged cells.",
            input.clients,
            input.cost.axis(),
            Pattern::names_where(is_interval_poller)
        )
    },
};

/// A feed poller on an interval: its cells at several intervals form a curve.
fn is_interval_poller(pattern: Pattern) -> bool {
    pattern.uses_feed() && pattern.polls_on_interval()
}

/// One cell on the frontier.
#[derive(Debug, Clone)]
pub struct Point {
    pub label: String,
    pub pattern: Pattern,
    pub color: RGBColor,
    pub flagged: bool,
    pub x: f64,
    pub p99_ms: f64,
}

/// Which cost the x axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    CpuPerEvent,
    BytesPerEvent,
}

impl Cost {
    pub fn axis(self) -> &'static str {
        match self {
            Cost::CpuPerEvent => "server CPU per delivered event, µs (log scale)",
            Cost::BytesPerEvent => "bytes on the wire per delivered event (log scale)",
        }
    }

    /// A value of this cost in words: `18.3 µs of server CPU per event`.
    pub fn describe(self, value: f64) -> String {
        match self {
            Cost::CpuPerEvent => format!("{} µs of server CPU per event", fmt::num(value)),
            Cost::BytesPerEvent => format!("{} B per event", fmt::num(value)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Input {
    pub clients: u64,
    pub cost: Cost,
    pub points: Vec<Point>,
}

pub fn prepare(data: &RunData, labeler: &Labeler, colors: &SeriesColors) -> Result<Input, String> {
    let clients = *cells::client_counts(&data.rows).last().ok_or("no cells")?;
    let rows: Vec<_> = cells::at_clients(&data.rows, clients)
        .into_iter()
        .filter(|r| r.pattern.uses_feed() && r.p99_ms.is_some_and(|p| p > 0.0))
        .collect();
    if rows.is_empty() {
        return Err(format!(
            "no feed pattern ({}) at {clients} clients has a p99 latency",
            Pattern::names_where(Pattern::uses_feed)
        ));
    }
    let cost = if rows
        .iter()
        .all(|r| r.server_cpu_us_per_event.is_some_and(|v| v > 0.0))
    {
        Cost::CpuPerEvent
    } else {
        Cost::BytesPerEvent
    };
    let points: Vec<Point> = rows
        .into_iter()
        .filter_map(|r| {
            let x = match cost {
                Cost::CpuPerEvent => r.server_cpu_us_per_event,
                Cost::BytesPerEvent => r.bytes_per_event,
            }
            .filter(|x| *x > 0.0)?;
            Some(Point {
                label: labeler.cell(r),
                pattern: r.pattern,
                color: colors.of(r, labeler),
                flagged: cells::is_flagged(r),
                x,
                p99_ms: r.p99_ms?,
            })
        })
        .collect();
    if points.is_empty() {
        return Err(format!(
            "no feed cell at {clients} clients has a cost per event"
        ));
    }
    Ok(Input {
        clients,
        cost,
        points,
    })
}

/// A pixel rectangle `(left, top, right, bottom)`.
type Rect = (i32, i32, i32, i32);

fn overlaps(a: Rect, b: Rect) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// Chooses where a label of `size` goes next to the point at `at`: right, left, above, below,
/// further right, … the first place that stays inside `bounds` and clear of `taken`.
fn place_label(at: (i32, i32), size: (i32, i32), bounds: Rect, taken: &[Rect]) -> (Rect, HPos) {
    let (w, h) = size;
    let candidates = [
        (at.0 + 10, at.1 - h / 2, HPos::Left),
        (at.0 - 10 - w, at.1 - h / 2, HPos::Left),
        (at.0 - w / 2, at.1 - 12 - h, HPos::Left),
        (at.0 - w / 2, at.1 + 12, HPos::Left),
        (at.0 + 10, at.1 - 12 - h, HPos::Left),
        (at.0 + 10, at.1 + 12, HPos::Left),
        (at.0 - 10 - w, at.1 - 12 - h, HPos::Left),
        (at.0 - 10 - w, at.1 + 12, HPos::Left),
    ];
    let rect = |c: &(i32, i32, HPos)| (c.0, c.1, c.0 + w, c.1 + h);
    candidates
        .iter()
        .map(|c| (rect(c), c.2))
        .find(|(r, _)| {
            r.0 >= bounds.0
                && r.2 <= bounds.2
                && r.1 >= bounds.1
                && r.3 <= bounds.3
                && !taken.iter().any(|t| overlaps(*r, *t))
        })
        .unwrap_or((rect(&candidates[0]), HPos::Left))
}

pub fn draw<DB: ChartBackend>(root: &DrawingArea<DB, Shift>, input: &Input) -> Result<(), String> {
    let title = format!(
        "Trade-off frontier at {} clients: cost vs p99 latency (lower left is better; ! hollow = flagged)",
        input.clients
    );
    let area = root.titled(&title, text(TITLE - 5)).map_err(err)?;
    let (x_lo, x_hi) = log_range(input.points.iter().map(|p| p.x));
    let (y_lo, y_hi) = log_range(input.points.iter().map(|p| p.p99_ms));
    let mut chart = ChartBuilder::on(&area)
        .margin(25)
        .x_label_area_size(60)
        .y_label_area_size(85)
        .build_cartesian_2d(
            (x_lo..x_hi)
                .log_scale()
                .with_key_points(log_keys(x_lo, x_hi, 12)),
            (y_lo..y_hi)
                .log_scale()
                .with_key_points(log_keys(y_lo, y_hi, 12)),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(input.cost.axis())
        .y_desc("p99 delivery latency, ms (log scale)")
        .x_label_formatter(&|v| fmt::num(*v))
        .y_label_formatter(&|v| fmt::num(*v))
        .axis_desc_style(text(AXIS))
        .label_style(text(TICKS))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    // A poller's intervals form a curve: join them in interval order.
    for poller in Pattern::ALL.into_iter().filter(|p| is_interval_poller(*p)) {
        let polls: Vec<(f64, f64)> = input
            .points
            .iter()
            .filter(|p| p.pattern == poller)
            .map(|p| (p.x, p.p99_ms))
            .collect();
        if polls.len() > 1 {
            let color = super::palette::pattern_color(poller);
            chart
                .draw_series(DashedLineSeries::new(
                    polls,
                    8,
                    6,
                    color.mix(0.6).stroke_width(2),
                ))
                .map_err(err)?;
        }
    }
    chart
        .draw_series(
            input
                .points
                .iter()
                .map(|p| marker((p.x, p.p99_ms), p.color, p.flagged)),
        )
        .map_err(err)?;
    chart
        .draw_series(input.points.iter().map(|p| {
            let title = format!(
                "{}: {}, p99 {} ms",
                p.label,
                input.cost.describe(p.x),
                fmt::num(p.p99_ms)
            );
            Tip::point((p.x, p.p99_ms), 9, title)
        }))
        .map_err(err)?;
    // Labels, placed clear of the points and of each other, in backend pixels.
    let style = text(TICKS + 1);
    let (x_px, y_px) = chart.plotting_area().get_pixel_range();
    let bounds = (x_px.start, y_px.start, x_px.end, y_px.end);
    let centres: Vec<(i32, i32)> = input
        .points
        .iter()
        .map(|p| chart.backend_coord(&(p.x, p.p99_ms)))
        .collect();
    let mut taken: Vec<Rect> = centres
        .iter()
        .map(|c| (c.0 - 7, c.1 - 7, c.0 + 7, c.1 + 7))
        .collect();
    for (point, centre) in input.points.iter().zip(&centres) {
        let (w, h) = root.estimate_text_size(&point.label, &style).map_err(err)?;
        let (rect, hpos) = place_label(*centre, (w as i32 + 2, h as i32 + 2), bounds, &taken);
        taken.push(rect);
        root.draw_text(
            &point.label,
            &style
                .color(&point.color.mix(1.0))
                .pos(Pos::new(hpos, VPos::Top)),
            (rect.0, rect.1),
        )
        .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::charts::{
        palette::pattern_color,
        test_util::{ink, svg_titles},
    };

    #[test]
    fn labels_avoid_each_other() {
        let bounds = (0, 0, 1000, 1000);
        let (first, _) = place_label((500, 500), (80, 20), bounds, &[]);
        assert_eq!(first, (510, 490, 590, 510));
        let (second, _) = place_label((500, 500), (80, 20), bounds, &[first]);
        assert!(!overlaps(first, second));
        let (edge, _) = place_label((995, 500), (80, 20), bounds, &[]);
        assert!(edge.2 <= 1000, "{edge:?}");
    }

    #[test]
    fn draws_labelled_points() {
        let point = |label: &str, pattern: &str, x: f64, y: f64| Point {
            label: label.into(),
            pattern: pattern.parse().unwrap(),
            color: pattern_color(pattern.parse().unwrap()),
            flagged: label.ends_with('!'),
            x,
            p99_ms: y,
        };
        let input = Input {
            clients: 1000,
            cost: Cost::CpuPerEvent,
            points: vec![
                point("sse", "sse", 40.0, 7.0),
                point("ws", "ws", 55.0, 8.0),
                point("long-poll", "long-poll", 170.0, 13.0),
                point("short-poll 500ms", "short-poll", 53.0, 500.0),
                point("short-poll 100ms !", "short-poll", 160.0, 100.0),
                point("graphql-sub", "graphql-sub", 90.0, 9.0),
                point("graphql-poll 500ms", "graphql-poll", 80.0, 505.0),
                point("graphql-poll 100ms", "graphql-poll", 240.0, 104.0),
            ],
        };
        let (inked, distinct) = ink(SIZE, |root| draw(root, &input));
        assert!(inked > 15_000, "{inked}");
        assert!(distinct > 20, "{distinct}");
        let titles = svg_titles(SIZE, |root| draw(root, &input));
        assert_eq!(titles.len(), input.points.len());
        assert_eq!(titles[0], "sse: 40 µs of server CPU per event, p99 7 ms");
    }
}
