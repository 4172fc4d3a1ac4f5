//! `brokers.png`: the same cells over each broker side by side — p99 delivery latency and the CPU
//! of all server instances plus the broker per delivered event (per job for job cells).

use plotters::{coord::Shift, prelude::*};

// The in-process vs Redis chart's bars (one cell: p99 ms, total CPU µs per unit) and size.
use super::{
    bars,
    bus::{size, Bar, Input},
    canvas::ChartBackend,
    chart::Chart,
    palette::{pattern_color, shade},
};
use crate::{
    report::{brokers, bus, cells::Labeler, load::RunData},
    scenario::BusKind,
};

pub const FILE: &str = "brokers.png";

pub const CHART: Chart<Input> = Chart {
    file: FILE,
    title: "Brokers side by side",
    prepare: |c, _| prepare(c.data, c.labeler),
    size,
    draw: |root, input| draw(root, input),
    caption: |_, _| {
        "Each cell on every broker the run measured, in the pattern's colour (Redis, then \
         RabbitMQ darker, then Kafka lighter): p99 latency, and CPU per delivered event (per job \
         for job cells) of all server instances plus the broker process."
            .to_owned()
    },
};

pub const PANELS: [(&str, &str); 2] = [
    ("p99 latency", "ms"),
    (
        "CPU per delivered event or job: servers + broker",
        "µs / unit",
    ),
];

/// How much a broker's bars are shaded, so brokers tell apart within a pattern's colour.
fn broker_shade(bus: &str) -> f64 {
    match BusKind::parse(bus) {
        Ok(BusKind::RabbitMq) => -0.35,
        Ok(BusKind::Kafka) => 0.45,
        _ => 0.0,
    }
}

pub fn prepare(data: &RunData, labeler: &Labeler) -> Result<Input, String> {
    let groups = brokers::groups(data);
    if groups.is_empty() {
        return Err(
            "the run has no RabbitMQ or Kafka cells (`commbench compare` adds them when \
             rabbitmq-server or tansu is installed)"
                .to_owned(),
        );
    }
    let bars = groups
        .iter()
        .flatten()
        .map(|row| Bar {
            label: format!(
                "{} {}×{}",
                labeler.cell(row),
                BusKind::title_of(&row.bus),
                row.instances
            ),
            color: shade(pattern_color(row.pattern), broker_shade(&row.bus)),
            flagged: crate::report::cells::is_flagged(row),
            values: [row.p99_ms, bus::total_cpu(row)],
        })
        .collect();
    Ok(Input { bars })
}

pub fn draw<DB: ChartBackend>(root: &DrawingArea<DB, Shift>, input: &Input) -> Result<(), String> {
    let title = "The same cells on each broker (N servers): latency and what a unit costs";
    bars::draw_panels(root, title, PANELS, &input.bars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::charts::test_util::ink;

    #[test]
    fn draws_both_panels() {
        let bar = |label: &str, bus: &str, values: [Option<f64>; 2]| Bar {
            label: label.into(),
            color: shade(
                pattern_color(crate::pattern::Pattern::Ws),
                broker_shade(bus),
            ),
            flagged: false,
            values,
        };
        let input = Input {
            bars: vec![
                bar("ws Redis×2", "redis", [Some(8.9), Some(30.0)]),
                bar("ws RabbitMQ×2", "rabbitmq", [Some(12.0), Some(48.0)]),
                bar("ws Kafka×2", "kafka", [Some(14.0), None]),
            ],
        };
        let (inked, distinct) = ink(size(&input), |root| draw(root, &input));
        assert!(inked > 10_000, "{inked}");
        assert!(distinct > 10, "{distinct}");
    }
}
