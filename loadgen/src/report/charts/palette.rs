//! Each pattern's colour (from its row in `crate::pattern`), with shades for a pattern's several lines
//! (poll intervals).

use std::collections::BTreeMap;

use plotters::style::RGBColor;

use crate::{
    output::SummaryRow,
    pattern::Pattern,
    report::cells::{self, Labeler},
};

/// The colour of a pattern.
pub fn pattern_color(pattern: Pattern) -> RGBColor {
    let (r, g, b) = pattern.about().color;
    RGBColor(r, g, b)
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
        let mut per_pattern: BTreeMap<Pattern, Vec<&str>> = BTreeMap::new();
        for (label, members) in &lines {
            if let Some(first) = members.first() {
                per_pattern.entry(first.pattern).or_default().push(label);
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
            .unwrap_or_else(|| pattern_color(row.pattern))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::cells::fixture::row;

    #[test]
    fn patterns_keep_their_colour_and_intervals_get_shades() {
        let rows = vec![
            row(Pattern::Sse, 100, None),
            row(Pattern::ShortPoll, 100, Some(0.5)),
            row(Pattern::ShortPoll, 100, Some(5.0)),
        ];
        let labeler = Labeler::new(&rows);
        let colors = SeriesColors::new(&rows, &labeler);
        assert_eq!(colors.of(&rows[0], &labeler), pattern_color(Pattern::Sse));
        let fast = colors.of(&rows[1], &labeler);
        let slow = colors.of(&rows[2], &labeler);
        assert_ne!(fast, slow);
        assert!(
            fast.0 < pattern_color(Pattern::ShortPoll).0,
            "shorter interval is darker"
        );
        assert!(
            slow.1 > pattern_color(Pattern::ShortPoll).1,
            "longer interval is lighter"
        );
    }
}
