//! commbench's server beside its peers (`compare --peers`): each peer cell paired with commbench's
//! cell of the same pattern and workload, a table of what each server costs per delivered event,
//! and sentences computed from the pairs.

use std::fmt::Write as _;

use super::{
    cells::{is_flagged, same_workload},
    content,
    document::{Align::Left, Align::Right, Cell, Document, Table},
    fmt,
};
use crate::{output::SummaryRow, result::COMMBENCH};

/// A peer's cell and commbench's cell of the same pattern, clients, rate, payload, topics and
/// interval.
pub struct PeerPair<'a> {
    pub commbench: &'a SummaryRow,
    pub peer: &'a SummaryRow,
}

/// Splits a run's rows into `(peer rows, the rest)`: when the run measured commbench's server,
/// every other target's cell is a peer cell; a run of one target only keeps all its rows.
pub fn split(rows: Vec<SummaryRow>) -> (Vec<SummaryRow>, Vec<SummaryRow>) {
    if !rows.iter().any(|r| r.target == COMMBENCH) {
        return (Vec::new(), rows);
    }
    rows.into_iter().partition(|r| r.target != COMMBENCH)
}

/// Every peer cell with commbench's twin, in display order (pattern, interval, clients, peer).
pub fn pairs<'a>(commbench: &'a [SummaryRow], peers: &'a [SummaryRow]) -> Vec<PeerPair<'a>> {
    let mut pairs: Vec<PeerPair<'a>> = peers
        .iter()
        .filter_map(|peer| {
            let twin = commbench.iter().find(|c| same_workload(c, peer))?;
            Some(PeerPair {
                commbench: twin,
                peer,
            })
        })
        .collect();
    pairs.sort_by(|a, b| {
        let key = |r: &SummaryRow| (r.pattern.rank(), r.interval_s.unwrap_or(0.0), r.clients);
        let (ka, kb) = (key(a.peer), key(b.peer));
        ka.0.cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then(ka.2.cmp(&kb.2))
            .then(a.peer.target.cmp(&b.peer.target))
    });
    pairs
}

/// The pattern (and interval) as the sentences name it: `ws`, `short-poll 1s`.
fn pattern_label(row: &SummaryRow) -> String {
    fmt::pattern_at(row.pattern, row.interval_s)
}

/// RSS per connection in KiB.
pub fn rss_kib(row: &SummaryRow) -> Option<f64> {
    row.server_rss_per_connection_bytes
        .map(|b| b as f64 / 1024.0)
}

/// "2.4× the server CPU per delivered event of …" style comparisons of one pair, `None` when
/// neither side measured anything comparable.
fn comparison(pair: &PeerPair<'_>) -> Option<String> {
    let (c, p) = (pair.commbench, pair.peer);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some((a / b, a, b)),
        _ => None,
    };
    let mut parts = Vec::new();
    if let Some((r, a, b)) = ratio(p.server_cpu_us_per_event, c.server_cpu_us_per_event) {
        parts.push(format!(
            "{} the server CPU per delivered event of commbench's {} ({} vs {} µs)",
            fmt::times(r),
            c.pattern.prose(),
            fmt::num(a),
            fmt::num(b)
        ));
    }
    if let Some((r, a, b)) = ratio(p.bytes_per_event, c.bytes_per_event) {
        parts.push(format!(
            "{} its bytes per event ({} vs {} B)",
            fmt::times(r),
            fmt::num(a),
            fmt::num(b)
        ));
    }
    if let Some((r, a, b)) = ratio(rss_kib(p), rss_kib(c)) {
        parts.push(format!(
            "{} its memory per connection ({} vs {} KiB)",
            fmt::times(r),
            fmt::num(a),
            fmt::num(b)
        ));
    }
    if parts.is_empty() {
        return None;
    }
    let mut text = format!(
        "At {} clients {} `{}` used {}",
        p.clients,
        fmt::capitalized(&p.target),
        pattern_label(p),
        fmt::join_and(&parts)
    );
    if let (Some(p50), Some(p99), Some(c50), Some(c99)) = (p.p50_ms, p.p99_ms, c.p50_ms, c.p99_ms) {
        let metric = p.latency_metric.as_deref().unwrap_or("latency");
        let _ = write!(
            text,
            "; {metric} p50 {} vs {} ms, p99 {} vs {} ms",
            fmt::num(p50),
            fmt::num(c50),
            fmt::num(p99),
            fmt::num(c99)
        );
    }
    let lost = p.events_lost.unwrap_or(0) + p.events_duplicated.unwrap_or(0);
    if lost > 0 {
        let _ = write!(text, "; **{lost} events lost or duplicated**");
    }
    if p.errors > 0 {
        let _ = write!(text, "; {} errors ({})", p.errors, p.error_kinds);
    }
    text.push('.');
    Some(text)
}

/// One sentence per pattern (and poll interval) at the largest client count both servers ran.
pub fn findings(commbench: &[SummaryRow], peers: &[SummaryRow]) -> Vec<String> {
    let pairs = pairs(commbench, peers);
    let largest = pairs.iter().map(|p| p.peer.clients).max().unwrap_or(0);
    pairs
        .iter()
        .filter(|p| p.peer.clients == largest)
        .filter_map(comparison)
        .collect()
}

/// The section: every pair, commbench's row first.
pub fn section(doc: &mut Document, commbench: &[SummaryRow], peers: &[SummaryRow]) {
    let pairs = pairs(commbench, peers);
    if pairs.is_empty() {
        return;
    }
    let mut names: Vec<&str> = pairs.iter().map(|p| p.peer.target.as_str()).collect();
    names.dedup();
    doc.section("commbench beside its peers");
    doc.paragraph(format!(
        "The same cells against commbench's server and against {} (started from its target \
         profile; its CPU and RSS read from /proc like commbench's). commbench's cells use its own \
         clients, the peer's the profile-driven ones, which find each event by the stamp in its \
         payload; latency is publish → delivery for both (request-response: the round trip), bytes \
         are counted on the socket. Per-event costs divide by events received; RSS per connection \
         is the server's peak RSS over its peak connections, so it includes the process's own \
         baseline.",
        names.join(", ")
    ));
    let mut table = Table::new(&[
        ("pattern", Left),
        ("clients", Right),
        ("target", Left),
        ("p50 ms", Right),
        ("p99 ms", Right),
        ("delivered/expected", Right),
        ("srv CPU µs/event", Right),
        ("B/event", Right),
        ("RSS/conn KiB", Right),
        ("errors", Right),
    ]);
    let mut shown: Vec<&str> = Vec::new();
    for pair in &pairs {
        for row in [pair.commbench, pair.peer] {
            if shown.contains(&row.cell.as_str()) {
                continue;
            }
            shown.push(&row.cell);
            let flagged = is_flagged(row);
            let label = if flagged {
                format!("{} !", pattern_label(row))
            } else {
                pattern_label(row)
            };
            table.push(
                vec![
                    Cell::text(label),
                    Cell::count(Some(row.clients)),
                    Cell::text(row.target.clone()),
                    Cell::num(row.p50_ms),
                    Cell::num(row.p99_ms),
                    content::delivered(row),
                    Cell::num(row.server_cpu_us_per_event),
                    Cell::num(row.bytes_per_event),
                    Cell::num(rss_kib(row)),
                    Cell::count(Some(row.errors)),
                ],
                flagged,
            );
        }
    }
    doc.table(table);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pattern::Pattern, report::cells::fixture::row};

    fn node(pattern: Pattern, clients: u64) -> SummaryRow {
        let mut r = row(pattern, clients, None);
        r.cell.push_str("-node");
        r.target = "node".into();
        r.server_cpu_us_per_event = Some(96.0);
        r.bytes_per_event = Some(190.0);
        r.p99_ms = Some(14.0);
        r
    }

    #[test]
    fn peers_are_set_beside_commbench_with_computed_sentences() {
        let commbench = vec![row(Pattern::Ws, 100, None), row(Pattern::Ws, 1000, None)];
        let peers = vec![
            node(Pattern::Ws, 100),
            node(Pattern::Ws, 1000),
            node(Pattern::Sse, 1000),
        ];
        let pairs = pairs(&commbench, &peers);
        assert_eq!(pairs.len(), 2, "sse has no commbench twin");
        let text = findings(&commbench, &peers);
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(
            text[0].starts_with(
                "At 1000 clients Node `ws` used 2.4× the server CPU per delivered event of \
                 commbench's WebSocket (96 vs 40 µs), 1× its bytes per event (190 vs 190 B)"
            ),
            "{}",
            text[0]
        );
        assert!(
            text[0].contains("delivery p50 3 vs 3 ms, p99 14 vs 7 ms"),
            "{}",
            text[0]
        );
        let mut doc = Document::new("t");
        section(&mut doc, &commbench, &peers);
        let out = crate::report::markdown::render(&doc);
        assert_eq!(out.matches("\n| ws | 1000 | node |").count(), 1, "{out}");
        assert_eq!(
            out.matches("\n| ws | 1000 | commbench |").count(),
            1,
            "{out}"
        );
    }

    #[test]
    fn a_run_of_one_target_keeps_its_rows() {
        let (peers, rest) = split(vec![node(Pattern::Ws, 10)]);
        assert!(peers.is_empty() && rest.len() == 1);
        let (peers, rest) = split(vec![node(Pattern::Ws, 10), row(Pattern::Ws, 10, None)]);
        assert_eq!((peers.len(), rest.len()), (1, 1));
    }
}
