//! Charts drawn with plotters and an embedded font, as PNG files and as inline SVG for
//! `REPORT.html`: shared styles, legend, markers, the PNG and SVG writers.

pub mod bars;
pub mod brokers;
pub mod bus;
pub mod canvas;
pub mod capacity;
pub mod chart;
pub mod cost;
pub mod frontier;
pub mod latency;
pub mod memory;
pub mod palette;
pub mod peers;
pub mod scaling;

use std::{fmt::Display, path::Path, sync::OnceLock};

use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use self::canvas::{Area, Canvas, TipMark};
use super::ReportError;

/// The family name the embedded font is registered under.
pub const FONT: &str = "sans-serif";

/// DejaVu Sans (Bitstream Vera license, see `assets/DejaVuSans-LICENSE.txt`): charts render the
/// same on a machine without any system font.
static FONT_BYTES: &[u8] = include_bytes!("../../../assets/DejaVuSans.ttf");

/// Registers the embedded font once per process.
pub fn ensure_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        [FontStyle::Normal, FontStyle::Bold]
            .into_iter()
            .all(|style| plotters::style::register_font(FONT, style, FONT_BYTES).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err(ReportError::Font)
    }
}

/// Text in the chart font.
pub fn text(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

/// Text anchored at its left edge, vertically centred.
pub fn text_left(size: u32) -> TextStyle<'static> {
    text(size).pos(Pos::new(HPos::Left, VPos::Center))
}

/// Text centred on its anchor.
pub fn text_centered(size: u32) -> TextStyle<'static> {
    text(size).pos(Pos::new(HPos::Center, VPos::Center))
}

/// Chart-drawing errors as text (every plotters error is `Display`).
pub fn err<E: Display>(error: E) -> String {
    error.to_string()
}

/// Title size, axis-description size and tick-label size.
pub const TITLE: u32 = 26;
pub const AXIS: u32 = 19;
pub const TICKS: u32 = 16;

/// Draws into a new PNG at `path`: white background, `draw`, then encode.
pub fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<(), String>,
) -> Result<(), ReportError> {
    ensure_font()?;
    let chart_error = |message: String| ReportError::Chart {
        path: path.to_owned(),
        message,
    };
    let root = Canvas::Png(BitMapBackend::new(path, size)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_error(err(e)))?;
    draw(&root).map_err(chart_error)?;
    root.present().map_err(|e| chart_error(err(e)))
}

/// Draws into an SVG document (white background, `draw`, then the hover titles over it), for
/// inlining in `REPORT.html`. Text names the chart font's generic family, so the browser renders
/// it with its own sans-serif.
pub fn render_svg(
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<(), String>,
) -> Result<String, String> {
    ensure_font().map_err(err)?;
    let mut svg = String::new();
    let mut tips: Vec<TipMark> = Vec::new();
    {
        let root =
            Canvas::Svg(SVGBackend::with_string(&mut svg, size), &mut tips).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    let end = svg
        .rfind("</svg>")
        .ok_or("the SVG backend wrote no closing tag")?;
    svg.insert_str(end, &canvas::tip_layer(&tips));
    Ok(svg)
}

/// How a legend entry or a series is drawn.
#[derive(Debug, Clone)]
pub struct LegendEntry {
    pub label: String,
    pub color: RGBColor,
    /// Draw the line sample dashed (flagged cells).
    pub dashed: bool,
    /// Draw a marker; hollow for flagged cells.
    pub marker: Option<bool>,
}

impl LegendEntry {
    /// The legend entry of a line with markers; `!` after the label when any point is flagged.
    pub fn for_line(label: &str, color: RGBColor, any_flagged: bool) -> Self {
        Self {
            label: if any_flagged {
                format!("{label} !")
            } else {
                label.to_owned()
            },
            color,
            dashed: false,
            marker: Some(false),
        }
    }
}

/// A filled (normal) or hollow (flagged) circle marker.
pub fn marker<C>(at: C, color: RGBColor, hollow: bool) -> Circle<C, i32> {
    let style = if hollow {
        color.stroke_width(2)
    } else {
        color.filled()
    };
    Circle::new(at, if hollow { 6 } else { 5 }, style)
}

/// Draws `entries` as a legend column in `area` (outside the plot, so it never hides data),
/// with an optional note under it.
pub fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    note: Option<&str>,
) -> Result<(), String> {
    let row = 28;
    let top = 70;
    for (i, entry) in entries.iter().enumerate() {
        let y = top + row * i as i32;
        let style = entry.color.stroke_width(3);
        if entry.dashed {
            for k in 0..3 {
                area.draw(&PathElement::new(
                    vec![(10 + 12 * k, y), (17 + 12 * k, y)],
                    style,
                ))
                .map_err(err)?;
            }
        } else {
            area.draw(&PathElement::new(vec![(10, y), (42, y)], style))
                .map_err(err)?;
        }
        if let Some(hollow) = entry.marker {
            area.draw(&marker((26, y), entry.color, hollow))
                .map_err(err)?;
        }
        area.draw(&Text::new(entry.label.clone(), (52, y), text_left(TICKS)))
            .map_err(err)?;
    }
    if let Some(note) = note {
        let y = top + row * entries.len() as i32 + 10;
        for (k, line) in note.lines().enumerate() {
            area.draw(&Text::new(
                line.to_owned(),
                (10, y + 22 * k as i32),
                text_left(16),
            ))
            .map_err(err)?;
        }
    }
    Ok(())
}

/// A log axis range covering `values` (positive ones) with some headroom; `(1, 10)` when empty.
pub fn log_range(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    let (lo, hi) = (lo / 1.6, hi * 1.6);
    if hi / lo < 10.0 {
        let mid = (lo * hi).sqrt();
        return (mid / 10_f64.sqrt(), mid * 10_f64.sqrt());
    }
    (lo, hi)
}

/// Tick values for a log axis over `lo..hi`: 1-2-5 steps per decade, or only powers of ten when
/// that would give more than `max` ticks.
pub fn log_keys(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let decades = lo.log10().floor() as i32..=hi.log10().ceil() as i32;
    let with = |steps: &[f64]| -> Vec<f64> {
        decades
            .clone()
            .flat_map(|d| steps.iter().map(move |s| s * 10_f64.powi(d)))
            .filter(|v| *v >= lo && *v <= hi)
            .collect()
    };
    let fine = with(&[1.0, 2.0, 5.0]);
    if fine.len() <= max {
        return fine;
    }
    let coarse = with(&[1.0]);
    if coarse.len() >= 2 {
        coarse
    } else {
        fine
    }
}

/// A linear axis range from 0 to above the largest value; `(0, 1)` when empty.
pub fn zero_range(values: impl IntoIterator<Item = f64>) -> f64 {
    let hi = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    if hi > 0.0 {
        hi * 1.15
    } else {
        1.0
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Drawing into memory and checking the picture is not blank.
    use plotters::prelude::*;

    use super::canvas::{Area, Canvas};

    /// Draws with `draw` into an RGB buffer of `size` and returns the number of non-white pixels
    /// and of distinct colours.
    pub fn ink(
        size: (u32, u32),
        draw: impl FnOnce(&Area<'_>) -> Result<(), String>,
    ) -> (usize, usize) {
        super::ensure_font().unwrap();
        let mut buffer = vec![0_u8; (size.0 * size.1 * 3) as usize];
        {
            let root =
                Canvas::Png(BitMapBackend::with_buffer(&mut buffer, size)).into_drawing_area();
            root.fill(&WHITE).unwrap();
            draw(&root).unwrap();
            root.present().unwrap();
        }
        let pixels: Vec<[u8; 3]> = buffer.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
        let inked = pixels.iter().filter(|p| **p != [255, 255, 255]).count();
        let distinct = pixels
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        (inked, distinct)
    }

    /// The hover titles of an SVG drawn by `draw`, in drawing order.
    pub fn svg_titles(
        size: (u32, u32),
        draw: impl FnOnce(&Area<'_>) -> Result<(), String>,
    ) -> Vec<String> {
        let svg = super::render_svg(size, draw).unwrap();
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        svg.split("<title>")
            .skip(1)
            .map(|t| {
                t.split("</title>")
                    .next()
                    .unwrap()
                    .replace("&#39;", "'")
                    .replace("&quot;", "\"")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&")
            })
            .collect()
    }

    /// Width and height from a PNG file's IHDR chunk.
    pub fn png_size(path: &std::path::Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(
            &bytes[..8],
            b"\x89PNG\r\n\x1a\n",
            "{} is a PNG",
            path.display()
        );
        let be = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        (be(16), be(20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;

    #[test]
    fn ranges_have_headroom() {
        let (lo, hi) = log_range([2.0, 500.0]);
        assert!(lo < 2.0 && hi > 500.0);
        let (lo, hi) = log_range([5.0]);
        assert!(lo < 5.0 && hi > 5.0 && hi / lo >= 9.99);
        assert_eq!(log_range([0.0, f64::NAN]), (1.0, 10.0));
        assert_eq!(zero_range([]), 1.0);
        assert_eq!(log_keys(3.0, 60.0, 10), [5.0, 10.0, 20.0, 50.0]);
        assert_eq!(
            log_keys(0.5, 20_000.0, 8),
            [1.0, 10.0, 100.0, 1000.0, 10_000.0]
        );
        assert!(log_keys(0.0, 1.0, 8).is_empty());
        assert!(zero_range([10.0]) > 10.0);
    }

    #[test]
    fn legend_draws_ink() {
        let entries = [
            LegendEntry {
                label: "sse".into(),
                color: palette::pattern_color(Pattern::Sse),
                dashed: false,
                marker: Some(false),
            },
            LegendEntry {
                label: "short-poll 1s !".into(),
                color: palette::pattern_color(Pattern::ShortPoll),
                dashed: true,
                marker: Some(true),
            },
        ];
        let (inked, distinct) = test_util::ink((300, 200), |root| {
            draw_legend(root, &entries, Some("! = flagged"))
        });
        assert!(inked > 500, "{inked}");
        assert!(distinct > 10, "{distinct}");
    }
}
