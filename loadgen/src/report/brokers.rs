//! The broker comparison in `REPORT.md`: the same cells (pattern, clients, rate, payload, topics,
//! interval, server instances) over Redis, RabbitMQ and Kafka side by side — latency, what one
//! delivered event or finished job costs the servers and the broker, memory — and one sentence per
//! broker relative to the first one (Redis when it ran).

use std::fmt::Write as _;

use super::{
    bus::{cost_cells, total_cpu},
    cells::{is_flagged, same_workload, Labeler},
    content,
    document::{
        Align::{Left, Right},
        Cell, Document, Table,
    },
    fmt,
    load::RunData,
};
use crate::{output::SummaryRow, scenario::BusKind};

/// The same cell on several brokers, in [`BusKind::BROKERS`] order.
pub type Group<'a> = Vec<&'a SummaryRow>;

/// The broker a row ran on (`None` for the in-process bus and unknown names).
fn broker(row: &SummaryRow) -> Option<BusKind> {
    BusKind::parse(&row.bus).ok().filter(|b| b.is_broker())
}

/// True when the run measured a broker the in-process vs Redis section does not cover (RabbitMQ or
/// Kafka): then every broker cell, feed and jobs, is shown here.
pub fn is_shown(data: &RunData) -> bool {
    data.all_rows()
        .any(|r| matches!(broker(r), Some(BusKind::RabbitMq | BusKind::Kafka)))
}

/// Every broker cell of the run grouped by workload and instance count, when [`is_shown`].
pub fn groups(data: &RunData) -> Vec<Group<'_>> {
    if !is_shown(data) {
        return Vec::new();
    }
    let mut groups: Vec<Group<'_>> = Vec::new();
    let on_brokers = data
        .scale_out_rows
        .iter()
        .chain(&data.job_rows)
        .filter(|r| broker(r).is_some());
    for row in on_brokers {
        let same = |g: &Group<'_>| same_workload(g[0], row) && g[0].instances == row.instances;
        match groups.iter_mut().find(|g| same(g)) {
            Some(group) => group.push(row),
            None => groups.push(vec![row]),
        }
    }
    for group in &mut groups {
        group.sort_by_key(|r| broker(r));
    }
    groups
}

/// The job cells the message-queue section shows: the in-process ones when this section shows the
/// broker ones, every one otherwise.
pub fn job_rows(data: &RunData) -> Vec<SummaryRow> {
    let shown = is_shown(data);
    data.job_rows
        .iter()
        .filter(|r| !shown || broker(r).is_none())
        .cloned()
        .collect()
}

/// What one unit of a cell is: a delivered event, or a job its user learned was done.
fn unit(row: &SummaryRow) -> &'static str {
    if row.pattern.is_job() {
        "job"
    } else {
        "delivery"
    }
}

/// Per group, one sentence per broker after the first: its server+broker CPU per unit as a
/// multiple of the first broker's, and the p99 difference.
pub fn findings(groups: &[Group<'_>], labeler: &Labeler) -> Vec<String> {
    let mut out = Vec::new();
    for group in groups {
        let Some((base, others)) = group.split_first() else {
            continue;
        };
        let base_name = BusKind::title_of(&base.bus);
        for row in others {
            let mut parts = Vec::new();
            if let (Some(base_cpu), Some(cpu)) = (total_cpu(base), total_cpu(row)) {
                if base_cpu > 0.0 {
                    parts.push(format!(
                        "a {} cost {} {base_name}'s server+broker CPU ({} µs vs {} µs)",
                        unit(row),
                        fmt::times(cpu / base_cpu),
                        fmt::num(cpu),
                        fmt::num(base_cpu)
                    ));
                }
            }
            if let (Some(base_p99), Some(p99)) = (base.p99_ms, row.p99_ms) {
                parts.push(format!(
                    "p99 {} ms ({} ms vs {} ms)",
                    fmt::signed_one_decimal(p99 - base_p99),
                    fmt::num(p99),
                    fmt::num(base_p99)
                ));
            }
            if parts.is_empty() {
                continue;
            }
            let mut text = format!(
                "{} at {} clients on {} servers: through {} {}",
                labeler.series(row),
                row.clients,
                row.instances,
                BusKind::title_of(&row.bus),
                parts.join("; ")
            );
            let lost = row.events_lost.unwrap_or(0) + row.events_duplicated.unwrap_or(0);
            if lost > 0 {
                let _ = write!(text, "; **{lost} lost or duplicated**");
            }
            text.push('.');
            out.push(text);
        }
    }
    out
}

/// The section: one table row per broker cell, each group's cells together.
pub fn section(doc: &mut Document, groups: &[Group<'_>], labeler: &Labeler) {
    if groups.is_empty() {
        return;
    }
    doc.section("Brokers side by side");
    doc.paragraph(
        "The same cells on several server instances joined by each broker the run measured: \
         Redis (pub/sub and streams), RabbitMQ (a stream per topic; the job log and lane queues) \
         and Kafka (tansu: a topic per feed topic; the job log). Clients are balanced round-robin \
         and events published through the first instance. CPU per unit is per delivered event \
         (jobs: per finished job) for all server instances, for the broker process alone (read \
         from /proc; empty for `--bus-url`), and both together; `vs first` divides that total by \
         the first broker's in the group. Broker cells run a short window (`broker_duration`).",
    );
    let mut table = Table::new(&[
        ("cell", Left),
        ("clients", Right),
        ("servers", Right),
        ("broker", Left),
        ("p50 ms", Right),
        ("p99 ms", Right),
        ("cross-instance p99 ms", Right),
        ("delivered/expected", Right),
        ("vs first", Right),
        ("servers µs/unit", Right),
        ("broker µs/unit", Right),
        ("total µs/unit", Right),
        ("servers RSS MiB", Right),
        ("broker RSS MiB", Right),
    ]);
    for group in groups {
        let first = total_cpu(group[0]);
        for row in group {
            let ratio = match (total_cpu(row), first) {
                (Some(cpu), Some(first)) if first > 0.0 => Some(cpu / first),
                _ => None,
            };
            let mut cells = vec![
                Cell::text(labeler.cell(row)),
                Cell::count(Some(row.clients)),
                Cell::count(Some(row.instances)),
                Cell::text(BusKind::title_of(&row.bus)),
                Cell::num(row.p50_ms),
                Cell::num(row.p99_ms),
                Cell::num(row.cross_instance_p99_ms),
                content::delivered(row),
                Cell::sorted(ratio.map_or_else(|| "-".to_owned(), fmt::times), ratio),
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
    use crate::{pattern::Pattern, report::cells::fixture::on_broker as on};

    fn data(rows: Vec<SummaryRow>) -> RunData {
        let (job_rows, scale_out_rows) = rows.into_iter().partition(|r| r.pattern.is_job());
        RunData {
            scale_out_rows,
            job_rows,
            ..RunData::default()
        }
    }

    #[test]
    fn brokers_side_by_side_with_sentences_relative_to_redis() {
        let run = data(vec![
            on("kafka", Pattern::Ws, 12.0, 30.0, 18.0),
            on("redis", Pattern::Ws, 8.9, 20.0, 10.0),
            on("rabbitmq", Pattern::Ws, 12.0, 28.0, 20.0),
            on("rabbitmq", Pattern::JobWs, 40.0, 300.0, 100.0),
            on("redis", Pattern::JobWs, 30.0, 200.0, 50.0),
            on("redis", Pattern::Sse, 5.0, 10.0, 5.0),
        ]);
        let grouped = groups(&run);
        assert_eq!(grouped.len(), 3);
        let order: Vec<&str> = grouped[0].iter().map(|r| r.bus.as_str()).collect();
        assert_eq!(order, ["redis", "rabbitmq", "kafka"]);
        let labeler = Labeler::default();
        let found = findings(&grouped, &labeler);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(
            found[0],
            "ws at 1000 clients on 2 servers: through RabbitMQ a delivery cost 1.6× Redis's \
             server+broker CPU (48 µs vs 30 µs); p99 +3.1 ms (12 ms vs 8.9 ms)."
        );
        assert!(found[1].starts_with("ws at 1000 clients on 2 servers: through Kafka"));
        assert!(
            found[2].contains("through RabbitMQ a job cost 1.6× Redis's"),
            "{found:?}"
        );
        let mut doc = Document::default();
        section(&mut doc, &grouped, &labeler);
        let out = crate::report::markdown::render(&doc);
        assert!(out.contains("## Brokers side by side"), "{out}");
        assert!(
            out.contains("| RabbitMQ |") && out.contains("| Kafka |"),
            "{out}"
        );
        assert!(out.contains("| 1.6× |"), "{out}");
        // Redis alone is the in-process vs Redis section's: nothing here.
        let redis_only = data(vec![on("redis", Pattern::Ws, 8.9, 20.0, 10.0)]);
        assert!(groups(&redis_only).is_empty());
    }

    #[test]
    fn a_lost_event_is_said_and_a_missing_measure_leaves_its_part_out() {
        let mut kafka = on("kafka", Pattern::Sse, 9.0, 20.0, 5.0);
        kafka.events_lost = Some(2);
        kafka.broker_cpu_us_per_event = None;
        kafka.server_cpu_us_per_event = None;
        let run = data(vec![on("redis", Pattern::Sse, 5.0, 10.0, 5.0), kafka]);
        let found = findings(&groups(&run), &Labeler::default());
        assert_eq!(
            found,
            [
                "sse at 1000 clients on 2 servers: through Kafka p99 +4.0 ms (9 ms vs 5 ms); \
              **2 lost or duplicated**."
            ]
        );
    }
}
