//! Fixed colours keyed by pattern name, with shades for a pattern's several lines (poll intervals).

use std::collections::BTreeMap;

use plotters::style::RGBColor;

use crate::{
    output::SummaryRow,
    report::cells::{self, Labeler},
};

/// The colour of a pattern (the colour-blind-friendly "tab10" set; unknown patterns are slate).
pub fn pattern_color(pattern: &str) -> RGBColor {
    match pattern {
        "graphql-sub" => RGBColor(23, 190, 207),
        "graphql-poll" => RGBColor(188, 189, 34),
        "sse" => RGBColor(31, 119, 180),
        "ws" => RGBColor(44, 160, 44),
        "long-poll" => RGBColor(255, 127, 14),
        "short-poll" => RGBColor(214, 39, 40),
        "request-response" => RGBColor(127, 127, 127),
        "poll-url" => RGBColor(148, 103, 189),
        "sse-url" => RGBColor(140, 86, 75),
        "ws-url" => RGBColor(227, 119, 194),
        // The job patterns: the light "tab20" partner of the pattern that notifies them.
        "job-short-poll" => RGBColor(255, 152, 150),
        "job-long-poll" => RGBColor(255, 187, 120),
        "job-sse" => RGBColor(174, 199, 232),
        "job-ws" => RGBColor(152, 223, 138),
        // Socket.IO's own near-black: tab10 is used up, and it stands apart from every hue above.
        "socketio" => RGBColor(33, 33, 33),
        _ => RGBColor(47, 79, 79),
    }
}

/// `color` mixed towards black (`amount < 0`) or white (`amount > 0`).
pub fn shade(color: RGBColor, amount: f64) -> RGBColor {
    let mix = |c: u8| {
        let c = f64::from(c);
        let target = if amount < 0.0 { 0.0 } else { 255.0 };
        (c + (target - c) * amount.abs().min(1.0)).round() as u8
    };
    RGBColor(mix(color.0), mix(color.1), mix(color.2))
}

/// Colours of every line (series label) of a run: the pattern's colour, shaded from dark to light
/// across its lines in display order (e.g. shortest to longest poll interval).
#[derive(Debug, Clone, Default)]
pub struct SeriesColors {
    by_label: BTreeMap<String, RGBColor>,
}

impl SeriesColors {
    pub fn new(rows: &[SummaryRow], labeler: &Labeler) -> Self {
        let lines = cells::series(rows, labeler);
        let mut by_label = BTreeMap::new();
        let mut per_pattern: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (label, members) in &lines {
            if let Some(first) = members.first() {
                per_pattern
                    .entry(first.pattern.as_str())
                    .or_default()
                    .push(label);
            }
        }
        for (pattern, labels) in per_pattern {
            let base = pattern_color(pattern);
            let n = labels.len();
            for (k, label) in labels.into_iter().enumerate() {
                let amount = if n < 2 {
                    0.0
                } else {
                    -0.35 + 0.75 * k as f64 / (n - 1) as f64
                };
                by_label.insert(label.to_owned(), shade(base, amount));
            }
        }
        Self { by_label }
    }

    /// The colour of `row`'s line.
    pub fn of(&self, row: &SummaryRow, labeler: &Labeler) -> RGBColor {
        self.by_label
            .get(&labeler.series(row))
            .copied()
            .unwrap_or_else(|| pattern_color(&row.pattern))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::cells::fixture::row;

    #[test]
    fn every_pattern_has_its_own_colour() {
        let mut colours: Vec<(u8, u8, u8)> = crate::scenario::PatternName::ALL
            .iter()
            .map(|p| pattern_color(p.as_str()))
            .chain([pattern_color("unknown")])
            .map(|c| (c.0, c.1, c.2))
            .collect();
        let all = colours.len();
        colours.sort_unstable();
        colours.dedup();
        assert_eq!(colours.len(), all);
    }

    #[test]
    fn patterns_keep_their_colour_and_intervals_get_shades() {
        let rows = vec![
            row("sse", 100, None),
            row("short-poll", 100, Some(0.5)),
            row("short-poll", 100, Some(5.0)),
        ];
        let labeler = Labeler::new(&rows);
        let colors = SeriesColors::new(&rows, &labeler);
        assert_eq!(colors.of(&rows[0], &labeler), pattern_color("sse"));
        let fast = colors.of(&rows[1], &labeler);
        let slow = colors.of(&rows[2], &labeler);
        assert_ne!(fast, slow);
        assert!(
            fast.0 < pattern_color("short-poll").0,
            "shorter interval is darker"
        );
        assert!(
            slow.1 > pattern_color("short-poll").1,
            "longer interval is lighter"
        );
    }
}
