//! `peers.png`: commbench's server beside its peers at the largest client count both ran — per
//! pattern, p99 delivery latency, server CPU and bytes per delivered event, and memory per
//! connection.

use plotters::{coord::Shift, prelude::*};

use super::{
    bars::{self, CellBars},
    canvas::ChartBackend,
    chart::Chart,
    palette::{pattern_color, shade},
};
use crate::report::{
    cells::is_flagged,
    fmt,
    load::RunData,
    peers::{self, rss_kib},
};

pub const FILE: &str = "peers.png";

pub const CHART: Chart<Input> = Chart {
    file: FILE,
    title: "commbench beside its peers",
    prepare: |c, _| prepare(c.data),
    size,
    draw: |root, input| draw(root, input),
    caption: |_, input| {
        format!(
            "At {} clients, each pattern on commbench's server (full colour) and on each peer \
             (lighter): p99 latency, server CPU and bytes per delivered event, and server memory \
             per connection.",
            input.clients
        )
    },
};

/// One cell: p99 ms, CPU µs per event, bytes per event, RSS KiB per connection.
pub type Bar = CellBars<4>;

#[derive(Debug, Clone)]
pub struct Input {
    pub clients: u64,
    pub bars: Vec<Bar>,
}

pub const PANELS: [(&str, &str); 4] = [
    ("p99 latency", "ms"),
    ("server CPU per event", "µs / event"),
    ("bytes per event", "B / event"),
    ("server memory per connection", "KiB / connection"),
];

pub fn prepare(data: &RunData) -> Result<Input, String> {
    let pairs = peers::pairs(&data.rows, &data.peer_rows);
    let Some(clients) = pairs.iter().map(|p| p.peer.clients).max() else {
        return Err(
            "the run has no peer cells (`commbench compare --peers node` adds them)".to_owned(),
        );
    };
    let mut bars = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for pair in pairs.iter().filter(|p| p.peer.clients == clients) {
        for row in [pair.commbench, pair.peer] {
            if seen.contains(&row.cell.as_str()) {
                continue;
            }
            seen.push(&row.cell);
            let base = pattern_color(row.pattern);
            let peer = row.target != crate::result::COMMBENCH;
            let mut label = row.pattern.to_string();
            if let Some(interval) = row.interval_s {
                label.push_str(&format!(" {}", fmt::interval(interval)));
            }
            label.push_str(&format!(" {}", row.target));
            if is_flagged(row) {
                label.push_str(" !");
            }
            bars.push(Bar {
                label,
                color: if peer { shade(base, 0.5) } else { base },
                flagged: is_flagged(row),
                values: [
                    row.p99_ms,
                    row.server_cpu_us_per_event,
                    row.bytes_per_event,
                    rss_kib(row),
                ],
            });
        }
    }
    Ok(Input { clients, bars })
}

pub fn size(input: &Input) -> (u32, u32) {
    bars::size(2000, input.bars.len())
}

pub fn draw<DB: ChartBackend>(root: &DrawingArea<DB, Shift>, input: &Input) -> Result<(), String> {
    let title = format!(
        "commbench's server beside its peers at {} clients: the same pattern and workload",
        input.clients
    );
    bars::draw_panels(root, &title, PANELS, &input.bars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pattern::Pattern, report::charts::test_util::ink};

    #[test]
    fn draws_four_panels() {
        let bar = |label: &str, values: [Option<f64>; 4]| Bar {
            label: label.into(),
            color: pattern_color(Pattern::Ws),
            flagged: false,
            values,
        };
        let input = Input {
            clients: 500,
            bars: vec![
                bar(
                    "ws commbench",
                    [Some(3.0), Some(25.0), Some(175.0), Some(30.0)],
                ),
                bar("ws node", [Some(4.0), Some(60.0), Some(180.0), None]),
            ],
        };
        let (inked, distinct) = ink(size(&input), |root| draw(root, &input));
        assert!(inked > 10_000, "{inked}");
        assert!(distinct > 10, "{distinct}");
    }
}
