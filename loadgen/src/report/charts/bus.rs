//! `bus.png`: each Redis cell beside its in-process twin — p99 delivery latency and CPU per event
//! (servers and Redis together).

use plotters::{coord::Shift, prelude::*};

use super::{
    bars::{self, CellBars},
    canvas::ChartBackend,
    chart::Chart,
    palette::{pattern_color, shade},
};
use crate::report::{bus, cells::Labeler, load::RunData};

pub const FILE: &str = "bus.png";

pub const CHART: Chart<Input> = Chart {
    file: FILE,
    title: "In-process vs Redis bus",
    prepare: |c, _| prepare(c.data, c.labeler),
    size,
    draw: |root, input| draw(root, input),
    caption: |_, _| {
        "Each Redis cell (lighter bar) under its in-process twin: p99 delivery latency, and CPU \
         per delivered event of all server instances plus Redis itself."
            .to_owned()
    },
};

/// One cell on one bus: p99 ms, total CPU µs per event.
pub type Bar = CellBars<2>;

#[derive(Debug, Clone)]
pub struct Input {
    pub bars: Vec<Bar>,
}

pub const PANELS: [(&str, &str); 2] = [
    ("p99 delivery latency", "ms"),
    ("CPU per delivered event: servers + Redis", "µs / event"),
];

pub fn prepare(data: &RunData, labeler: &Labeler) -> Result<Input, String> {
    let pairs = bus::pairs(&data.rows, &data.scale_out_rows);
    if pairs.is_empty() {
        return Err(
            "the run has no Redis cells (`commbench compare` adds them when redis-server \
                    is installed)"
                .to_owned(),
        );
    }
    let mut bars = Vec::new();
    // An in-process cell twinned with several Redis cells (instance counts) is drawn once.
    let mut seen: Vec<&str> = Vec::new();
    for pair in &pairs {
        let cells = pair.memory.into_iter().chain([pair.redis]);
        for row in cells {
            if seen.contains(&row.cell.as_str()) {
                continue;
            }
            seen.push(&row.cell);
            let base = pattern_color(row.pattern);
            let on_redis = !bus::is_in_process(row);
            bars.push(Bar {
                label: format!("{} {}", labeler.cell(row), bus::short_label(row)),
                color: if on_redis { shade(base, 0.45) } else { base },
                flagged: crate::report::cells::is_flagged(row),
                values: [row.p99_ms, bus::total_cpu(row)],
            });
        }
    }
    Ok(Input { bars })
}

pub fn size(input: &Input) -> (u32, u32) {
    bars::size(1600, input.bars.len())
}

pub fn draw<DB: ChartBackend>(root: &DrawingArea<DB, Shift>, input: &Input) -> Result<(), String> {
    let title =
        "In-process bus (1 server) vs Redis (N servers): the same pattern, clients and rate";
    bars::draw_panels(root, title, PANELS, &input.bars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::charts::test_util::ink;

    #[test]
    fn draws_both_panels() {
        let bar = |label: &str, values: [Option<f64>; 2]| Bar {
            label: label.into(),
            color: pattern_color(label.split(' ').next().unwrap().parse().unwrap()),
            flagged: false,
            values,
        };
        let input = Input {
            bars: vec![
                bar("sse mem", [Some(3.0), Some(25.0)]),
                bar("sse redis×2", [Some(3.2), Some(38.0)]),
            ],
        };
        let (inked, distinct) = ink(size(&input), |root| draw(root, &input));
        assert!(inked > 10_000, "{inked}");
        assert!(distinct > 10, "{distinct}");
    }
}
