//! `cost.png`: requests, bytes and server CPU per delivered event at the largest client count.

use plotters::{coord::Shift, prelude::*};

use super::{
    bars::{self, CellBars},
    canvas::ChartBackend,
    chart::Chart,
    palette::SeriesColors,
};
use crate::{
    output::SummaryRow,
    report::{
        cells::{self, Labeler},
        load::RunData,
    },
};

pub const FILE: &str = "cost.png";

pub const CHART: Chart<Input> = Chart {
    file: FILE,
    title: "Cost per delivered event",
    prepare: |c, _| prepare(c.data, c.labeler, c.colors),
    size,
    draw: |root, input| draw(root, input),
    caption: |c, _| {
        format!(
            "Requests, bytes on the wire (both directions, headers and framing included) and \
             server CPU per delivered event at {} clients; request-response counts each \
             response as its event. Hollow bars are flagged cells.",
            c.clients
        )
    },
};

/// One cell's costs: requests, bytes, server CPU µs; per delivered event (request-response: per
/// response).
pub type Bar = CellBars<3>;

#[derive(Debug, Clone)]
pub struct Input {
    pub clients: u64,
    pub bars: Vec<Bar>,
}

/// The three panels: title and unit.
pub const PANELS: [(&str, &str); 3] = [
    ("Requests per event", "requests / event"),
    ("Bytes per event", "bytes on the wire / event"),
    ("Server CPU per event", "server CPU µs / event"),
];

fn values(row: &SummaryRow) -> [Option<f64>; 3] {
    [
        row.requests_per_event,
        row.bytes_per_event,
        row.server_cpu_us_per_event,
    ]
}

pub fn prepare(data: &RunData, labeler: &Labeler, colors: &SeriesColors) -> Result<Input, String> {
    let clients = *cells::client_counts(&data.rows).last().ok_or("no cells")?;
    let bars: Vec<Bar> = cells::at_clients(&data.rows, clients)
        .into_iter()
        .map(|row| Bar {
            label: labeler.cell(row),
            color: colors.of(row, labeler),
            flagged: cells::is_flagged(row),
            values: values(row),
        })
        .filter(|bar| bar.values.iter().any(Option::is_some))
        .collect();
    if bars.is_empty() {
        return Err(format!(
            "no cell at {clients} clients delivered an event to divide costs by"
        ));
    }
    Ok(Input { clients, bars })
}

/// Image size: taller with more bars.
pub fn size(input: &Input) -> (u32, u32) {
    bars::size(1800, input.bars.len())
}

pub fn draw<DB: ChartBackend>(root: &DrawingArea<DB, Shift>, input: &Input) -> Result<(), String> {
    let title = format!(
        "Cost per delivered event at {} clients (request-response: per response; ! hollow = flagged cell)",
        input.clients
    );
    bars::draw_panels(root, &title, PANELS, &input.bars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::charts::{palette::pattern_color, test_util::ink};

    #[test]
    fn draws_three_panels_of_bars() {
        let bar = |label: &str, values: [Option<f64>; 3], flagged: bool| Bar {
            label: label.into(),
            color: pattern_color(label.split(' ').next().unwrap().parse().unwrap()),
            flagged,
            values,
        };
        let input = Input {
            clients: 1000,
            bars: vec![
                bar("sse", [Some(0.0), Some(190.0), Some(40.0)], false),
                bar(
                    "short-poll 1s !",
                    [Some(0.2), Some(250.0), Some(90.0)],
                    true,
                ),
                bar("long-poll", [Some(1.0), Some(440.0), None], false),
            ],
        };
        let (inked, distinct) = ink(size(&input), |root| draw(root, &input));
        assert!(inked > 20_000, "{inked}");
        assert!(distinct > 20, "{distinct}");
    }
}
