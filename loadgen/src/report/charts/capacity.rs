//! `capacity.png`: clients (or events/s) per core of server CPU at the goal, one bar per search;
//! drawn only for a run with `capacity.csv`.

use plotters::{coord::Shift, prelude::*};

use super::{
    bars::{self, CellBars},
    canvas::ChartBackend,
    chart::Chart,
    palette::pattern_color,
};
use crate::report::{capacity::goal_text, fmt, load::RunData};

pub const FILE: &str = "capacity.png";

pub const CHART: Chart<Input> = Chart {
    file: FILE,
    title: "Capacity per server core at the goal",
    prepare: |c, _| prepare(c.data),
    size,
    draw: |root, input| draw(root, input),
    caption: |_, input| {
        format!(
            "The largest load that met {} with no loss, no errors and the load generator keeping \
             up, divided by the server CPU it used there (cores = CPU seconds ÷ measured \
             seconds). Hollow bars are lower bounds: the load generator, a resource limit or \
             --max stopped the search before the server did. Searches where no step passed are \
             left out.",
            input.goal
        )
    },
};

/// One bar per search: its capacity per core.
pub type Bar = CellBars<1>;

#[derive(Debug, Clone)]
pub struct Input {
    /// `p99 < 100 ms`.
    pub goal: String,
    /// `clients` or `events/s`.
    pub unit: &'static str,
    pub bars: Vec<Bar>,
}

pub fn prepare(data: &RunData) -> Result<Input, String> {
    let first = data
        .capacity
        .first()
        .ok_or("no capacity.csv in this run (only `commbench capacity` writes one)")?;
    let bars: Vec<Bar> = data
        .capacity
        .iter()
        .filter(|row| row.capacity > 0)
        .filter_map(|row| {
            row.capacity_per_core.map(|per_core| Bar {
                label: row.label(),
                color: pattern_color(row.pattern),
                flagged: row.constraint.is_lower_bound(),
                values: [Some(per_core)],
            })
        })
        .collect();
    if bars.is_empty() {
        return Err("no search found a load that met the goal".to_owned());
    }
    Ok(Input {
        goal: goal_text(&first.slo),
        unit: if first.vary == "rate" {
            "events/s"
        } else {
            "clients"
        },
        bars,
    })
}

pub fn size(input: &Input) -> (u32, u32) {
    bars::size(1200, input.bars.len())
}

pub fn draw<DB: ChartBackend>(root: &DrawingArea<DB, Shift>, input: &Input) -> Result<(), String> {
    let title = format!(
        "{} per server core at {} (hollow = lower bound)",
        fmt::capitalized(input.unit),
        input.goal
    );
    let unit = format!("{} per core of server CPU", input.unit);
    bars::draw_panels(root, &title, [("", unit.as_str())], &input.bars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        capacity::judge::Constraint,
        output::{test_util::capacity_row, CapacityRow},
        pattern::Pattern,
        report::{charts::test_util::ink, load::RunMeta},
    };

    fn data(capacity: Vec<CapacityRow>) -> RunData {
        RunData {
            dir: std::env::temp_dir(),
            meta: RunMeta::default(),
            rows: Vec::new(),
            scale_out_rows: Vec::new(),
            job_rows: Vec::new(),
            peer_rows: Vec::new(),
            capacity,
        }
    }

    #[test]
    fn not_drawn_without_capacity_csv() {
        let reason = prepare(&data(Vec::new())).unwrap_err();
        assert!(reason.contains("no capacity.csv"), "{reason}");
    }

    #[test]
    fn one_bar_per_search_that_passed() {
        let mut harness = capacity_row(Pattern::Ws, None, 3_000, 0.3);
        harness.constraint = Constraint::Harness;
        let mut none = capacity_row(Pattern::Sse, None, 0, 0.1);
        none.capacity_per_core = None;
        let input = prepare(&data(vec![
            capacity_row(Pattern::ShortPoll, Some(1.0), 2_000, 0.4),
            harness,
            none,
        ]))
        .unwrap();
        assert_eq!(input.goal, "p99 < 100 ms");
        let labels: Vec<(&str, bool)> = input
            .bars
            .iter()
            .map(|b| (b.label.as_str(), b.flagged))
            .collect();
        assert_eq!(labels, [("short-poll 1s", false), ("ws", true)]);
        let (inked, distinct) = ink(size(&input), |root| draw(root, &input));
        assert!(inked > 5_000, "{inked}");
        assert!(distinct > 10, "{distinct}");
    }
}
