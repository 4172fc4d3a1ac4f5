//! Conclusions computed from the numbers (cell-to-cell comparisons, the model table), never fixed prose.

use super::{
    cells::{self, Labeler},
    fmt,
    load::RunData,
    model,
    model_table::ModelTable,
};
use crate::{
    output::SummaryRow,
    pattern::{Kind, Layer, Pattern},
};

/// A cell's name in prose: `short polling at 1s`, `SSE`, with `[!]` when flagged.
fn cell_name(row: &SummaryRow) -> String {
    let prose = row.pattern.prose();
    let mut name = match row.interval_s {
        Some(i) => format!("{prose} at {}", fmt::interval(i)),
        None => prose.to_owned(),
    };
    if cells::is_flagged(row) {
        name.push_str(" [!]");
    }
    name
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Cells at the same client count that share rate, payload and topics (comparable cells).
fn contexts<'a>(rows: &[&'a SummaryRow]) -> Vec<Vec<&'a SummaryRow>> {
    let mut groups: Vec<Vec<&SummaryRow>> = Vec::new();
    for row in rows {
        let same = |other: &&SummaryRow| {
            other.rate_per_s == row.rate_per_s
                && other.payload_bytes == row.payload_bytes
                && other.topics == row.topics
        };
        match groups.iter_mut().find(|g| g.first().is_some_and(same)) {
            Some(group) => group.push(row),
            None => groups.push(vec![row]),
        }
    }
    groups
}

/// The cheapest push cell (by server CPU per event, else bytes per event).
fn reference_push<'a>(group: &[&'a SummaryRow]) -> Option<&'a SummaryRow> {
    let push: Vec<&SummaryRow> = group
        .iter()
        .copied()
        .filter(|r| r.pattern.is_plain_push())
        .collect();
    let key = |r: &SummaryRow| {
        r.server_cpu_us_per_event
            .or(r.bytes_per_event)
            .unwrap_or(f64::INFINITY)
    };
    push.into_iter().min_by(|a, b| key(a).total_cmp(&key(b)))
}

/// "X× the server CPU per delivered event of REF (a vs b µs)" and the same for bytes.
fn cost_comparison(row: &SummaryRow, reference: &SummaryRow) -> Vec<String> {
    let mut parts = Vec::new();
    let name = cell_name(reference);
    if let (Some(r), Some(a), Some(b)) = (
        ratio(
            row.server_cpu_us_per_event,
            reference.server_cpu_us_per_event,
        ),
        row.server_cpu_us_per_event,
        reference.server_cpu_us_per_event,
    ) {
        parts.push(format!(
            "{} the server CPU per delivered event of {name} ({} vs {} µs)",
            fmt::times(r),
            fmt::num(a),
            fmt::num(b)
        ));
    }
    if let (Some(r), Some(a), Some(b)) = (
        ratio(row.bytes_per_event, reference.bytes_per_event),
        row.bytes_per_event,
        reference.bytes_per_event,
    ) {
        parts.push(format!(
            "{} its bytes per event ({} vs {} B)",
            fmt::times(r),
            fmt::num(a),
            fmt::num(b)
        ));
    }
    parts
}

fn p99(row: &SummaryRow) -> String {
    row.p99_ms
        .map_or_else(|| "n/a".to_owned(), |v| format!("{} ms", fmt::num(v)))
}

/// All computed findings, most important first.
pub fn findings(data: &RunData, labeler: &Labeler, table: &ModelTable) -> Vec<String> {
    let mut out = Vec::new();
    let counts = cells::client_counts(&data.rows);
    if let Some(&largest) = counts.last() {
        let at = cells::at_clients(&data.rows, largest);
        for group in contexts(&at) {
            out.extend(group_findings(largest, &group));
        }
    }
    out.extend(scaling_findings(data, labeler));
    out.extend(health_findings(data));
    out.push(model_finding(table));
    let pairs = super::bus::pairs(&data.rows, &data.scale_out_rows);
    out.extend(super::bus::findings(&pairs, labeler));
    out.extend(super::brokers::findings(
        &super::brokers::groups(data),
        labeler,
    ));
    out.extend(super::peers::findings(&data.rows, &data.peer_rows));
    out.extend(super::jobs::findings(
        &super::brokers::job_rows(data),
        labeler,
    ));
    out.extend(inter_arrival_finding(data));
    out
}

/// Cells whose server sent its own events: what their latency columns mean instead.
fn inter_arrival_finding(data: &RunData) -> Option<String> {
    let cells: Vec<String> = data
        .all_rows()
        .filter(|r| r.latency_metric.as_deref() == Some("inter_arrival"))
        .map(|r| format!("`{}`", r.cell))
        .collect();
    (!cells.is_empty()).then(|| {
        format!(
            "{} measured the time between messages (`latency_metric = inter_arrival`), not \
             delivery latency: the server sends its own events rather than the published \
             payloads, so neither delivery latency nor loss can be computed for {}.",
            cells.join(", "),
            if cells.len() == 1 { "it" } else { "them" }
        )
    })
}

fn group_findings(clients: u64, group: &[&SummaryRow]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(first) = group.first() else {
        return out;
    };
    // The first sentence names the whole context; the rest only the client count.
    let full_context = format!(
        "At {clients} clients ({} events/s over {} topic{}, {} B payloads)",
        fmt::num(first.rate_per_s),
        first.topics,
        if first.topics == 1 { "" } else { "s" },
        first.payload_bytes
    );
    let short_context = format!("At {clients} clients");
    let mut context_used = false;
    let mut next_context = || {
        if std::mem::replace(&mut context_used, true) {
            short_context.clone()
        } else {
            full_context.clone()
        }
    };
    let by = |pattern: Pattern| -> Vec<&SummaryRow> {
        group
            .iter()
            .copied()
            .filter(|r| r.pattern == pattern)
            .collect()
    };
    let reference = reference_push(group);
    if let Some(reference) = reference {
        let others: Vec<String> = group
            .iter()
            .filter(|r| r.pattern.is_plain_push() && r.cell != reference.cell)
            .map(|other| {
                let parts = cost_comparison(other, reference);
                format!(
                    "{} used {}; p99 {} vs {}",
                    cell_name(other),
                    fmt::join_and(&parts),
                    p99(other),
                    p99(reference)
                )
            })
            .collect();
        let basis = if reference.server_cpu_us_per_event.is_some() {
            "server CPU per delivered event"
        } else {
            "bytes per delivered event"
        };
        let mut sentence = format!(
            "{}, the cheapest push pattern by {basis} was {} ({} µs of server CPU and {} B per event, p99 {}).",
            next_context(),
            cell_name(reference),
            fmt::opt(reference.server_cpu_us_per_event),
            fmt::opt(reference.bytes_per_event),
            p99(reference)
        );
        if !others.is_empty() {
            sentence.push_str(&format!(" {}.", fmt::capitalized(&others.join("; "))));
        }
        out.push(sentence);
        for poll in by(Pattern::ShortPoll) {
            let parts = cost_comparison(poll, reference);
            if parts.is_empty() {
                continue;
            }
            let slower = ratio(poll.p99_ms, reference.p99_ms)
                .map(|r| format!(", {} as stale", fmt::times(r)))
                .unwrap_or_default();
            out.push(format!(
                "{}, {} used {} and had a p99 staleness of {} ({}: {}{slower}).",
                next_context(),
                cell_name(poll),
                fmt::join_and(&parts),
                p99(poll),
                cell_name(reference),
                p99(reference)
            ));
        }
        if let Some(sentence) = break_even(group, reference) {
            out.push(sentence);
        }
    }
    let sse = by(Pattern::Sse).first().copied().or(reference);
    if let Some(sse) = sse {
        for long in by(Pattern::LongPoll) {
            let parts = cost_comparison(long, sse);
            out.push(format!(
                "{}, {} used {}{} requests per event: {}; p99 latency {} ({}: {}).",
                next_context(),
                long.pattern.prose(),
                fmt::join_and(&parts),
                if parts.is_empty() { "" } else { ";" },
                fmt::opt(long.requests_per_event),
                p99(long),
                cell_name(sse),
                p99(sse)
            ));
        }
    }
    for (layered, layer, plain) in layered_pairs(group) {
        let parts = cost_comparison(layered, plain);
        if parts.is_empty() {
            continue;
        }
        out.push(format!(
            "{}, {} on top of {}: {} used {}; p99 {} vs {}.",
            next_context(),
            layer.name,
            cell_name(plain),
            cell_name(layered),
            fmt::join_and(&parts),
            p99(layered),
            p99(plain)
        ));
    }
    if let Some(sentence) = bytes_ranking(group) {
        out.push(format!("{}, {sentence}", next_context()));
    }
    if let Some(sentence) = latency_ranking(group) {
        out.push(format!("{}, {sentence}", next_context()));
    }
    out
}

/// Each cell of a layered pattern with the plain pattern it wraps on the same transport (e.g.
/// graphql-sub with ws, graphql-poll with short-poll at the same interval).
fn layered_pairs<'a>(group: &[&'a SummaryRow]) -> Vec<(&'a SummaryRow, Layer, &'a SummaryRow)> {
    group
        .iter()
        .filter_map(|layered| {
            let layer = layered.pattern.layer()?;
            let twin = group
                .iter()
                .find(|r| r.pattern == layer.over && r.interval_s == layered.interval_s)?;
            Some((*layered, layer, *twin))
        })
        .collect()
}

/// Splits short-poll CPU per event into a part per poll and a part per event (a line through the
/// intervals) and solves for the interval at which it would equal the reference's CPU per event.
fn break_even(group: &[&SummaryRow], reference: &SummaryRow) -> Option<String> {
    let polls: Vec<&SummaryRow> = group
        .iter()
        .copied()
        .filter(|r| r.pattern == Pattern::ShortPoll)
        .collect();
    let points: Vec<(f64, f64)> = polls
        .iter()
        .filter_map(|r| Some((r.requests_per_event?, r.server_cpu_us_per_event?)))
        .collect();
    let (per_poll, per_event) = model::fit_line(&points)?;
    let target = reference.server_cpu_us_per_event?;
    let lambda = cells::lambda_per_client(polls.first()?)?;
    let head = format!(
        "Across the {} short-poll intervals, server CPU per event ≈ {} µs per poll × polls per event + {} µs",
        points.len(),
        fmt::num(per_poll),
        fmt::num(per_event)
    );
    if per_poll <= 0.0 {
        return Some(format!(
            "{head}: CPU did not grow with polls per event, so no break-even interval is computed."
        ));
    }
    if per_event >= target {
        return Some(format!(
            "{head}: even with no empty polls short polling costs more CPU per event than {} ({} µs) at any interval.",
            cell_name(reference),
            fmt::num(target)
        ));
    }
    let polls_per_event = (target - per_event) / per_poll;
    let interval = 1.0 / (lambda * polls_per_event);
    let rtt = polls.iter().find_map(|r| r.rtt_p50_ms).unwrap_or(0.0);
    Some(format!(
        "{head}; it would match {}'s {} µs per event at {} polls per event, i.e. an interval of {} (λ = {}/s), \
         where the model puts its p99 staleness at ≈ {} ms ({}: {}).",
        cell_name(reference),
        fmt::num(target),
        fmt::num(polls_per_event),
        fmt::seconds(interval),
        fmt::num(lambda),
        fmt::num(model::short_poll_staleness_quantile_ms(0.99, interval, rtt)),
        cell_name(reference),
        p99(reference)
    ))
}

fn bytes_ranking(group: &[&SummaryRow]) -> Option<String> {
    let mut ranked: Vec<(&SummaryRow, f64)> = group
        .iter()
        .filter(|r| r.pattern.kind() != Kind::Request)
        .filter_map(|r| Some((*r, r.bytes_per_event?)))
        .filter(|(_, b)| *b > 0.0)
        .collect();
    if ranked.len() < 2 {
        return None;
    }
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    let leanest = ranked[0].1;
    let list: Vec<String> = ranked
        .iter()
        .enumerate()
        .map(|(i, (row, bytes))| {
            if i == 0 {
                format!("{} {} B (leanest)", cell_name(row), fmt::num(*bytes))
            } else {
                format!(
                    "{} {} B ({})",
                    cell_name(row),
                    fmt::num(*bytes),
                    fmt::times(bytes / leanest)
                )
            }
        })
        .collect();
    let rr = group
        .iter()
        .find(|r| r.pattern.kind() == Kind::Request)
        .and_then(|r| Some((r.pattern.prose(), r.bytes_per_event?)))
        .map(|(name, b)| format!("; {name} {} B per response", fmt::num(b)))
        .unwrap_or_default();
    Some(format!(
        "bytes on the wire per delivered event: {}{rr}.",
        list.join(", ")
    ))
}

fn latency_ranking(group: &[&SummaryRow]) -> Option<String> {
    let feed: Vec<(&SummaryRow, f64)> = group
        .iter()
        .filter(|r| r.latency_metric.as_deref() == Some("delivery"))
        .filter_map(|r| Some((*r, r.p99_ms?)))
        .collect();
    let lowest = feed.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
    let highest = feed.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
    if feed.len() < 2 {
        return None;
    }
    Some(format!(
        "p99 delivery latency ranged from {} ms ({}) to {} ms ({}), {} higher.",
        fmt::num(lowest.1),
        cell_name(lowest.0),
        fmt::num(highest.1),
        cell_name(highest.0),
        fmt::times(highest.1 / lowest.1.max(1e-9))
    ))
}

fn scaling_findings(data: &RunData, labeler: &Labeler) -> Vec<String> {
    let mut out = Vec::new();
    if cells::client_counts(&data.rows).len() < 2 {
        return out;
    }
    let mut memory = Vec::new();
    for (label, rows) in cells::series(&data.rows, labeler) {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            continue;
        };
        if first.clients == last.clients {
            continue;
        }
        let mut parts = Vec::new();
        if let (Some(a), Some(b)) = (first.p99_ms, last.p99_ms) {
            parts.push(format!(
                "p99 {} ms at {} clients → {} ms at {} ({})",
                fmt::num(a),
                first.clients,
                fmt::num(b),
                last.clients,
                fmt::times(b / a.max(1e-9))
            ));
        }
        if let (Some(a), Some(b)) = (cells::cpu_percent(first), cells::cpu_percent(last)) {
            parts.push(format!(
                "server CPU {}% → {}% of one core",
                fmt::num(a),
                fmt::num(b)
            ));
        }
        let flagged = rows.iter().any(|r| cells::is_flagged(r));
        if !parts.is_empty() {
            out.push(format!(
                "Scaling, {label}{}: {}.",
                if flagged { " [some cells !]" } else { "" },
                parts.join("; ")
            ));
        }
        if let (Some(a), Some(b)) = (first.server_peak_rss_bytes, last.server_peak_rss_bytes) {
            let slope = (b as f64 - a as f64) / (last.clients - first.clients) as f64;
            memory.push(format!("{label} {} KiB", fmt::kib(slope)));
        }
    }
    if !memory.is_empty() {
        out.push(format!(
            "Marginal server memory per added connection (peak RSS slope from the smallest to the largest client count): {}.",
            memory.join(", ")
        ));
    }
    out
}

fn health_findings(data: &RunData) -> Vec<String> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for row in &data.rows {
        let mut issues = Vec::new();
        if let (Some(lost), Some(expected)) = (row.events_lost, row.events_expected) {
            if lost > 0 {
                issues.push(format!(
                    "lost {lost} of {expected} events ({})",
                    fmt::percent(lost as f64 / expected.max(1) as f64)
                ));
            }
        }
        if let Some(d) = row.events_duplicated.filter(|d| *d > 0) {
            issues.push(format!("{d} duplicates"));
        }
        if let Some(o) = row.events_out_of_order.filter(|o| *o > 0) {
            issues.push(format!("{o} out of order"));
        }
        if row.errors > 0 {
            issues.push(format!("{} errors ({})", row.errors, row.error_kinds));
        }
        if !issues.is_empty() {
            problems.push(format!("{}: {}", row.cell, issues.join(", ")));
        }
    }
    if problems.is_empty() {
        out.push(
            "Every feed cell delivered every expected event (no loss, duplicates or reordering) and no cell counted an error."
                .to_owned(),
        );
    } else {
        out.push(format!("Delivery problems: {}.", problems.join("; ")));
    }
    let flagged: Vec<&str> = data
        .rows
        .iter()
        .filter(|r| cells::is_flagged(r))
        .map(|r| r.cell.as_str())
        .collect();
    out.push(if flagged.is_empty() {
        "No cell was flagged as saturated or incomplete.".to_owned()
    } else {
        format!(
            "{} of {} cells are flagged as saturated or unreliable ({}): their numbers may describe the load generator or an interrupted run rather than the pattern (see the list below).",
            flagged.len(),
            data.rows.len(),
            flagged.join(", ")
        )
    });
    out
}

fn model_finding(table: &ModelTable) -> String {
    let deviating: Vec<String> = table
        .deviating()
        .map(|r| {
            format!(
                "{} at {} clients, {} (measured {}, model {})",
                r.label,
                r.clients,
                r.quantity,
                r.value_text(r.measured),
                r.value_text(r.model)
            )
        })
        .collect();
    if table.rows.is_empty() {
        format!(
            "No polling cell ({}) to compare with the analytic model.",
            super::model_table::modelled_patterns().join(", ")
        )
    } else if deviating.is_empty() {
        format!(
            "All {} measured-vs-model comparisons of the polling cells are within {}.",
            table.rows.len(),
            fmt::percent(model::TOLERANCE)
        )
    } else {
        format!(
            "{} of {} measured-vs-model comparisons deviate by more than {}: {}.",
            deviating.len(),
            table.rows.len(),
            fmt::percent(model::TOLERANCE),
            deviating.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{cells::fixture::row, load::RunMeta, model_table::model_table};

    fn run(rows: Vec<SummaryRow>) -> Vec<String> {
        let data = RunData {
            dir: std::env::temp_dir(),
            meta: RunMeta {
                run_id: "r".into(),
                ..RunMeta::default()
            },
            rows,
            scale_out_rows: Vec::new(),
            job_rows: Vec::new(),
            peer_rows: Vec::new(),
            capacity: Vec::new(),
        };
        let labeler = Labeler::new(&data.rows);
        let table = model_table(&data, &labeler);
        findings(&data, &labeler, &table)
    }

    fn rows(poll_cpu: f64) -> Vec<SummaryRow> {
        let sse = row(Pattern::Sse, 1000, None);
        let mut ws = row(Pattern::Ws, 1000, None);
        ws.server_cpu_us_per_event = Some(60.0);
        let mut poll = row(Pattern::ShortPoll, 1000, Some(1.0));
        poll.server_cpu_us_per_event = Some(poll_cpu);
        poll.p99_ms = Some(990.0);
        poll.requests_per_event = Some(0.05);
        vec![sse, ws, poll]
    }

    #[test]
    fn short_poll_sentence_follows_the_numbers() {
        let text = run(rows(400.0)).join("\n");
        assert!(
            text.contains("short polling at 1s used 10× the server CPU per delivered event of SSE (400 vs 40 µs)"),
            "{text}"
        );
        assert!(
            text.contains("p99 staleness of 990 ms (SSE: 7 ms"),
            "{text}"
        );
        let doubled = run(rows(800.0)).join("\n");
        assert!(doubled.contains("used 20× the server CPU"), "{doubled}");
        assert!(
            text.contains("the cheapest push pattern by server CPU per delivered event was SSE")
        );
        assert!(
            text.contains("WebSocket used 1.5× the server CPU"),
            "{text}"
        );
    }

    #[test]
    fn the_cheaper_push_pattern_becomes_the_reference() {
        let mut cells = rows(400.0);
        cells[0].server_cpu_us_per_event = Some(100.0);
        let text = run(cells).join("\n");
        assert!(text.contains("was WebSocket (60 µs"), "{text}");
        assert!(text.contains("of WebSocket (400 vs 60 µs)"), "{text}");
    }

    #[test]
    fn break_even_interval_is_solved_from_two_intervals() {
        let mut cells = rows(400.0);
        // 10 µs per event plus 100 µs per poll: 0.5 polls/event → 60 µs, 0.1 → 20 µs.
        cells[2].requests_per_event = Some(0.5);
        cells[2].server_cpu_us_per_event = Some(60.0);
        let mut slow = row(Pattern::ShortPoll, 1000, Some(5.0));
        slow.requests_per_event = Some(0.1);
        slow.server_cpu_us_per_event = Some(20.0);
        cells.push(slow);
        let text = run(cells).join("\n");
        // SSE's 40 µs = 10 + 100 × 0.3 → 0.3 polls per event → T = 1/(20 × 0.3) s.
        assert!(
            text.contains("at 0.3 polls per event, i.e. an interval of 167 ms"),
            "{text}"
        );
    }

    #[test]
    fn graphql_is_compared_with_the_pattern_it_wraps() {
        let mut cells = rows(400.0);
        let mut sub = row(Pattern::GraphqlSub, 1000, None);
        sub.server_cpu_us_per_event = Some(90.0);
        sub.bytes_per_event = Some(285.0);
        sub.p99_ms = Some(9.0);
        let mut poll = row(Pattern::GraphqlPoll, 1000, Some(1.0));
        poll.server_cpu_us_per_event = Some(600.0);
        poll.bytes_per_event = Some(380.0);
        poll.p99_ms = Some(995.0);
        // Another interval has no short-poll twin: no sentence for it.
        let lonely = row(Pattern::GraphqlPoll, 1000, Some(3.0));
        cells.extend([sub, poll, lonely]);
        let text = run(cells).join("\n");
        assert!(
            text.contains(
                "GraphQL on top of WebSocket: GraphQL subscriptions used 1.5× the server CPU per \
                 delivered event of WebSocket (90 vs 60 µs) and 1.5× its bytes per event (285 vs \
                 190 B); p99 9 ms vs 7 ms."
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "GraphQL on top of short polling at 1s: GraphQL polling at 1s used 1.5× the server \
                 CPU per delivered event of short polling at 1s (600 vs 400 µs) and 2× its bytes \
                 per event (380 vs 190 B); p99 995 ms vs 990 ms."
            ),
            "{text}"
        );
        assert!(!text.contains("GraphQL polling at 3s used"), "{text}");
    }

    #[test]
    fn health_lists_loss_and_flags() {
        let mut cells = rows(400.0);
        cells[0].events_lost = Some(20);
        cells[1].warnings = "harness saturated".into();
        let text = run(cells).join("\n");
        assert!(text.contains("lost 20 of 200000 events"), "{text}");
        assert!(text.contains("1 of 3 cells are flagged"), "{text}");
        assert!(text.contains("WebSocket [!]"), "{text}");
    }
}
