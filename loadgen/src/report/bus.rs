//! The in-process vs Redis comparison in `REPORT.md`: each Redis cell beside the in-process cell with
//! the same pattern, clients, rate, payload, topics and interval, and what the broker costs.

use std::fmt::Write as _;

use super::{
    cells::{is_flagged, Labeler},
    content,
    document::{
        Align::{Left, Right},
        Cell, Document, Table,
    },
    fmt,
};
use crate::output::SummaryRow;

/// A Redis cell and its in-process counterpart (absent when the run has none).
pub struct BusPair<'a> {
    pub memory: Option<&'a SummaryRow>,
    pub redis: &'a SummaryRow,
}

/// True for the cells that ran on one server with the in-process bus (every chart's input).
pub fn is_in_process(row: &SummaryRow) -> bool {
    row.bus == "memory" && row.instances <= 1
}

/// Every Redis cell, paired with its in-process counterpart (the other brokers are compared with
/// Redis in `brokers.rs`).
pub fn pairs<'a>(memory: &'a [SummaryRow], others: &'a [SummaryRow]) -> Vec<BusPair<'a>> {
    others
        .iter()
        .filter(|row| row.bus == "redis")
        .map(|redis| BusPair {
            memory: memory
                .iter()
                .find(|m| super::cells::same_workload(m, redis)),
            redis,
        })
        .collect()
}

/// Server CPU plus broker CPU per event (µs): what one delivered event costs the whole fleet.
pub fn total_cpu(row: &SummaryRow) -> Option<f64> {
    let server = row.server_cpu_us_per_event?;
    Some(server + row.broker_cpu_us_per_event.unwrap_or(0.0))
}

fn bus_label(row: &SummaryRow) -> String {
    if is_in_process(row) {
        "in-process, 1 server".to_owned()
    } else {
        let servers = if row.instances == 1 {
            "server"
        } else {
            "servers"
        };
        format!("{}, {} {servers}", row.bus, row.instances)
    }
}

/// `mem` or `redis×N`, for chart labels.
pub fn short_label(row: &SummaryRow) -> String {
    if is_in_process(row) {
        "in-process".to_owned()
    } else {
        format!("{}×{}", row.bus, row.instances)
    }
}

/// What a scale-out cell costs, as table cells: servers', broker's and total CPU per event, then
/// servers' and broker's peak RSS in MiB.
pub fn cost_cells(row: &SummaryRow) -> [Cell; 5] {
    let mib = |bytes: Option<u64>| Cell::num(bytes.map(|b| b as f64 / 1_048_576.0));
    [
        Cell::num(row.server_cpu_us_per_event),
        Cell::num(row.broker_cpu_us_per_event),
        Cell::num(total_cpu(row)),
        mib(row.server_peak_rss_bytes),
        mib(row.broker_peak_rss_bytes),
    ]
}

/// One finding per pair: the latency and CPU the broker adds.
pub fn findings(pairs: &[BusPair<'_>], labeler: &Labeler) -> Vec<String> {
    let mut out = Vec::new();
    for pair in pairs {
        let (Some(memory), redis) = (pair.memory, pair.redis) else {
            continue;
        };
        let (Some(m99), Some(r99)) = (memory.p99_ms, redis.p99_ms) else {
            continue;
        };
        let mut text = format!(
            "{} at {} clients over {}: p99 {} ms in-process → {} ms",
            labeler.series(redis),
            redis.clients,
            bus_label(redis),
            fmt::num(m99),
            fmt::num(r99)
        );
        if let Some(cross) = redis.cross_instance_p99_ms {
            let _ = write!(
                text,
                " ({} ms for clients on other instances)",
                fmt::num(cross)
            );
        }
        if let (Some(m_cpu), Some(r_cpu)) = (total_cpu(memory), total_cpu(redis)) {
            if m_cpu > 0.0 {
                let _ = write!(
                    text,
                    "; CPU per event {} µs → {} µs ({}",
                    fmt::num(m_cpu),
                    fmt::num(r_cpu),
                    fmt::times(r_cpu / m_cpu)
                );
                match redis.broker_cpu_us_per_event {
                    Some(broker) => {
                        let _ = write!(text, ", of which Redis {} µs)", fmt::num(broker));
                    }
                    None => text.push(')'),
                }
            }
        }
        let lost = redis.events_lost.unwrap_or(0) + redis.events_duplicated.unwrap_or(0);
        if lost > 0 {
            let _ = write!(text, "; **{lost} events lost or duplicated**");
        }
        text.push('.');
        out.push(text);
    }
    out
}

/// The section: a table of every pair, in-process row first.
pub fn section(doc: &mut Document, pairs: &[BusPair<'_>], labeler: &Labeler) {
    if pairs.is_empty() {
        return;
    }
    doc.section("In-process vs Redis bus");
    doc.paragraph(
        "The same pattern, clients, rate and payload on one server \
         with the in-process bus, and on several servers joined by a real `redis-server` (clients \
         balanced round-robin, events published through the first instance). Cross-instance p99 is \
         the delivery latency of the clients on the other instances: every one of those events \
         crossed Redis. Server CPU and RSS add up all instances; Redis's own CPU and RSS are read \
         from /proc (empty for `--bus-url`). Total CPU = servers + Redis, per delivered event.",
    );
    let mut table = Table::new(&[
        ("cell", Left),
        ("clients", Right),
        ("bus", Left),
        ("p50 ms", Right),
        ("p99 ms", Right),
        ("cross-instance p99 ms", Right),
        ("delivered/expected", Right),
        ("servers µs/event", Right),
        ("Redis µs/event", Right),
        ("total µs/event", Right),
        ("servers RSS MiB", Right),
        ("Redis RSS MiB", Right),
    ]);
    let mut shown: Vec<&str> = Vec::new();
    for pair in pairs {
        for row in pair.memory.into_iter().chain([pair.redis]) {
            if shown.contains(&row.cell.as_str()) {
                continue;
            }
            shown.push(&row.cell);
            let mut cells = vec![
                Cell::text(labeler.cell(row)),
                Cell::count(Some(row.clients)),
                Cell::text(bus_label(row)),
                Cell::num(row.p50_ms),
                Cell::num(row.p99_ms),
                Cell::num(row.cross_instance_p99_ms),
                content::delivered(row),
            ];
            cells.extend(cost_cells(row));
            table.push(cells, is_flagged(row));
        }
    }
    doc.table(table);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;
    use crate::report::cells::fixture::{on_broker, row};

    fn redis(pattern: Pattern) -> SummaryRow {
        let mut r = on_broker("redis", pattern, 14.0, 60.0, 20.0);
        r.cross_instance_p99_ms = Some(15.0);
        r
    }

    #[test]
    fn pairs_and_findings_follow_the_numbers() {
        let memory = vec![row(Pattern::Sse, 1000, None), row(Pattern::Ws, 100, None)];
        let others = vec![redis(Pattern::Sse), redis(Pattern::Ws)];
        let pairs = pairs(&memory, &others);
        assert_eq!(pairs.len(), 2);
        assert!(pairs[0].memory.is_some() && pairs[1].memory.is_none());
        let findings = findings(&pairs, &Labeler::new(&memory));
        assert_eq!(findings.len(), 1);
        let text = &findings[0];
        assert!(text.contains("p99 7 ms in-process → 14 ms"), "{text}");
        assert!(
            text.contains("15 ms for clients on other instances"),
            "{text}"
        );
        assert!(
            text.contains("40 µs → 80 µs (2×, of which Redis 20 µs)"),
            "{text}"
        );
        let mut doc = Document::default();
        section(&mut doc, &pairs, &Labeler::new(&memory));
        let out = crate::report::markdown::render(&doc);
        assert!(out.contains("| redis, 2 servers |"), "{out}");
        assert_eq!(out.matches("\n| sse").count(), 2, "{out}");
    }
}
