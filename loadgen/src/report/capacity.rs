//! The capacity section, computed from `capacity.csv` alone: sentences ("with p99 < 100 ms, one
//! core of server CPU carried 41k SSE clients …") and a table, apart from how they are formatted.

use std::fmt::Write as _;

use super::{
    document::{Align::Left, Align::Right, Cell, Document, Table},
    fmt::{self, join_and},
};
use crate::{capacity::slo::Slo, output::CapacityRow};

/// `p99 < 100 ms and max < 1 s`, from the file's `p99<100ms,max<1s`.
pub fn goal_text(slo: &str) -> String {
    match Slo::parse(slo) {
        Ok(slo) => slo
            .clauses
            .iter()
            .map(|c| {
                format!(
                    "{} < {}",
                    c.point.name(),
                    fmt::seconds(c.limit.as_secs_f64())
                )
            })
            .collect::<Vec<_>>()
            .join(" and "),
        Err(_) => slo.to_owned(),
    }
}

/// What the capacity counts: `clients` or `events/s`.
fn unit(row: &CapacityRow) -> &'static str {
    if row.vary == "rate" {
        "events/s"
    } else {
        "clients"
    }
}

/// The search in prose: `SSE`, `short polling every 1s`.
fn prose(row: &CapacityRow) -> String {
    let name = row.pattern.prose();
    match row.interval_s {
        Some(interval) => format!("{name} every {}", fmt::interval(interval)),
        None => name.to_owned(),
    }
}

/// `41.2k SSE clients`, `6.2k clients short polling every 1s`, `12k published events/s over WebSocket`.
fn carried(row: &CapacityRow, amount: f64) -> String {
    let amount = fmt::count(amount);
    match (row.vary.as_str(), row.interval_s) {
        ("rate", _) => format!("{amount} published events/s over {}", prose(row)),
        (_, Some(_)) => format!("{amount} clients {}", prose(row)),
        (_, None) => format!("{amount} {} clients", prose(row)),
    }
}

/// The section's sentences: per goal the headline across searches (capacity per core of server
/// CPU, largest first), then one sentence per search with what stopped it.
pub fn sentences(rows: &[CapacityRow]) -> Vec<String> {
    let mut out = Vec::new();
    let mut goals: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.slo.as_str(), r.vary.as_str()))
        .collect();
    goals.dedup();
    for (slo, vary) in goals {
        let mut per_core: Vec<(&CapacityRow, f64)> = rows
            .iter()
            .filter(|r| r.slo == slo && r.vary == vary && r.capacity > 0)
            .filter_map(|r| r.capacity_per_core.map(|c| (r, c)))
            .collect();
        per_core.sort_by(|a, b| b.1.total_cmp(&a.1));
        if per_core.is_empty() {
            continue;
        }
        let parts: Vec<String> = per_core.iter().map(|(r, c)| carried(r, *c)).collect();
        let clients = match (vary, per_core[0].0.clients) {
            ("rate", Some(clients)) => format!(" and {clients} clients"),
            _ => String::new(),
        };
        out.push(format!(
            "With {}{clients}, one core of server CPU carried {}.",
            goal_text(slo),
            join_and(&parts)
        ));
    }
    out.extend(rows.iter().map(search_sentence));
    out
}

/// One search: what met the goal at what cost, and what stopped the search.
fn search_sentence(row: &CapacityRow) -> String {
    let goal = goal_text(&row.slo);
    let unit = unit(row);
    if row.capacity == 0 {
        let failing = row
            .first_failing
            .map_or_else(String::new, |f| format!(": even {f} {unit} failed"));
        return format!(
            "{}: no step met {goal}{failing} ({}: {}).",
            label(row),
            row.constraint,
            row.constraint_detail
        );
    }
    let mut text = format!(
        "{}: {} {unit} met {goal}",
        label(row),
        fmt::count(row.capacity as f64)
    );
    if let Some(p99) = row.p99_ms {
        let _ = write!(text, " ({} p99 {} ms)", row.slo_metric, fmt::num(p99));
    }
    let costs: Vec<String> = [
        row.server_cores
            .map(|c| format!("{} server cores", fmt::num(c))),
        row.server_cpu_us_per_event
            .map(|c| format!("{} µs of server CPU per event", fmt::num(c))),
        row.bytes_per_event
            .map(|b| format!("{} B per event", fmt::num(b))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !costs.is_empty() {
        let _ = write!(text, ", using {}", join_and(&costs));
    }
    match row.first_failing {
        Some(failing) => {
            let _ = write!(
                text,
                "; {failing} did not ({}: {})",
                row.constraint, row.constraint_detail
            );
        }
        None => {
            let _ = write!(
                text,
                "; the search stopped there ({}: {})",
                row.constraint, row.constraint_detail
            );
        }
    }
    if row.constraint.is_lower_bound() {
        text.push_str(", so the server itself may carry more");
    }
    text.push('.');
    text
}

/// `sse`, `short-poll 1s`.
fn label(row: &CapacityRow) -> String {
    row.label()
}

/// One row per search.
pub fn table(rows: &[CapacityRow]) -> Table {
    let mut table = Table::new(&[
        ("search", Left),
        ("capacity", Right),
        ("per server core", Right),
        ("goal p50 / p99 / max ms", Right),
        ("server cores", Right),
        ("srv CPU µs/event", Right),
        ("B/event", Right),
        ("stopped by", Left),
        ("steps", Left),
    ]);
    for r in rows {
        table.row(vec![
            Cell::text(r.label()),
            Cell::sorted(
                format!("{} {}", r.capacity, unit(r)),
                Some(r.capacity as f64),
            ),
            Cell::num(r.capacity_per_core),
            Cell::sorted(
                format!(
                    "{} / {} / {}",
                    fmt::opt(r.p50_ms),
                    fmt::opt(r.p99_ms),
                    fmt::opt(r.max_ms)
                ),
                r.p99_ms,
            ),
            Cell::num(r.server_cores),
            Cell::num(r.server_cpu_us_per_event),
            Cell::num(r.bytes_per_event),
            Cell::text(format!("{}: {}", r.constraint, r.constraint_detail)),
            Cell::text(r.steps.clone()),
        ]);
    }
    table
}

/// The section (nothing when the run has no `capacity.csv`).
pub fn section(doc: &mut Document, rows: &[CapacityRow]) {
    if rows.is_empty() {
        return;
    }
    doc.section("Capacity");
    doc.paragraph(
        "From `capacity.csv`: per pattern (and poll interval), the largest load that met the goal \
         with no loss and no errors — doubling steps, then bisection; every step is a cell of the \
         summary table. Push patterns and long polling are held to publish → delivery latency, \
         pollers on an interval to their round trip, both measured from intended send times: a \
         step where the load generator warned still passes when the goal held (its delay only adds \
         to the latencies), and a miss with such a warning is put down to the harness \
         (`harness`), a lower bound like `fd-limit`, `memory` and `max`. \"Per server core\" \
         divides the capacity by the server CPU used there (CPU seconds ÷ measured seconds); the \
         load generator ran on the same machine.",
    );
    doc.list(sentences(rows));
    doc.table(table(rows));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        capacity::judge::Constraint, output::test_util::capacity_row as row, pattern::Pattern,
    };

    #[test]
    fn the_headline_ranks_clients_per_core() {
        let mut sse = row(Pattern::Sse, None, 8_200, 0.2);
        sse.constraint = Constraint::Harness;
        sse.first_failing = None;
        let poll = row(Pattern::ShortPoll, Some(1.0), 3_100, 0.5);
        let text = sentences(&[poll, sse]);
        assert_eq!(
            text[0],
            "With p99 < 100 ms, one core of server CPU carried 41k SSE clients and 6.2k clients \
             short polling every 1s."
        );
        assert!(text[1].starts_with("short-poll 1s: 3.1k clients met p99 < 100 ms (delivery p99 42 ms), using 0.5 server cores, 20 µs of server CPU per event and 180 B per event; 3410 did not (slo: "), "{}", text[1]);
        assert!(
            text[2].ends_with("so the server itself may carry more."),
            "{}",
            text[2]
        );
    }

    #[test]
    fn a_search_where_nothing_passed_says_so() {
        let mut none = row(Pattern::Ws, None, 0, 0.1);
        none.capacity_per_core = None;
        none.first_failing = Some(250);
        let text = sentences(&[none]);
        assert_eq!(text.len(), 1);
        assert!(
            text[0].starts_with("ws: no step met p99 < 100 ms: even 250 clients failed (slo:"),
            "{}",
            text[0]
        );
    }

    #[test]
    fn rates_are_events_per_second_at_a_client_count() {
        let mut ws = row(Pattern::Ws, None, 12_000, 1.0);
        ws.vary = "rate".into();
        ws.clients = Some(100);
        let text = sentences(&[ws]);
        assert_eq!(
            text[0],
            "With p99 < 100 ms and 100 clients, one core of server CPU carried 12k published events/s over \
             WebSocket."
        );
    }

    #[test]
    fn the_section_has_sentences_and_a_table() {
        let mut doc = Document::new("");
        section(&mut doc, &[]);
        assert!(doc.blocks.is_empty());
        section(&mut doc, &[row(Pattern::Sse, None, 4_000, 0.8)]);
        let out = crate::report::markdown::render(&doc);
        assert!(out.starts_with("## Capacity"), "{out}");
        assert!(out.contains("| sse | 4000 clients | 5000 |"), "{out}");
        assert_eq!(goal_text("p50<20ms,max<1s"), "p50 < 20 ms and max < 1 s");
    }
}
