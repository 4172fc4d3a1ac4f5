//! The report as a document — headings, paragraphs, lists, tables and figures — built once from the
//! run (`content.rs`) and rendered by `markdown.rs` into `REPORT.md` and by `html.rs` into
//! `REPORT.html`, so both say the same things.
//!
//! Text is in the report's inline markup: `` `code` `` and `**strong**`, everything else literal.
//! Markdown writes it as it is; HTML escapes it and turns those two marks into elements.

use super::fmt;

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct Document {
    pub title: String,
    pub blocks: Vec<Block>,
}

/// One piece of the report, in reading order.
#[derive(Debug, Clone)]
pub enum Block {
    /// A section (level 2) or subsection (level 3) title.
    Heading {
        level: u8,
        text: String,
    },
    Paragraph(String),
    List(Vec<String>),
    Table(Table),
    Figure(Figure),
}

/// A chart's place in the report: drawn (with a caption, the PNG file beside the report and its SVG)
/// or not drawn (with the reason).
#[derive(Debug, Clone)]
pub struct Figure {
    pub file: &'static str,
    pub title: &'static str,
    /// What the chart shows (drawn) or why it was not drawn.
    pub text: String,
    /// The chart as an SVG document, when it was drawn.
    pub svg: Option<Svg>,
}

/// A chart drawn as SVG, and its size in pixels (the PNG's size, the SVG's view box).
#[derive(Debug, Clone)]
pub struct Svg {
    pub markup: String,
    pub width: u32,
    pub height: u32,
}

impl Figure {
    pub fn drawn(&self) -> bool {
        self.svg.is_some()
    }
}

/// How a column's values line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    /// Numbers.
    Right,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub title: String,
    pub align: Align,
}

/// A table cell: its text, and the number it sorts by when it shows one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cell {
    pub text: String,
    pub sort: Option<f64>,
}

impl Cell {
    /// Text that sorts as text.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            sort: None,
        }
    }

    /// Text that sorts by `key` (e.g. `4998/5000` by the delivered count).
    pub fn sorted(text: impl Into<String>, key: Option<f64>) -> Self {
        Self {
            text: text.into(),
            sort: key.filter(|k| k.is_finite()),
        }
    }

    /// A measured number in the report's format (`-` when absent).
    pub fn num(value: Option<f64>) -> Self {
        Self::sorted(fmt::opt(value), value)
    }

    /// A count (`-` when absent).
    pub fn count(value: Option<u64>) -> Self {
        Self::sorted(
            value.map_or_else(|| "-".to_owned(), |v| v.to_string()),
            value.map(|v| v as f64),
        )
    }
}

/// One table row; `flagged` marks a saturated or unreliable cell (its label carries the `!`).
#[derive(Debug, Clone)]
pub struct Row {
    pub cells: Vec<Cell>,
    pub flagged: bool,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
    /// Readers may reorder the rows by a column (HTML).
    pub sortable: bool,
}

impl Table {
    /// A sortable table with these columns.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            columns: columns
                .iter()
                .map(|(title, align)| Column {
                    title: (*title).to_owned(),
                    align: *align,
                })
                .collect(),
            rows: Vec::new(),
            sortable: true,
        }
    }

    /// A two-column list of facts (no titles, not sortable).
    pub fn facts() -> Self {
        Self {
            sortable: false,
            ..Self::new(&[("", Align::Left), ("", Align::Left)])
        }
    }

    /// Adds a row; it must have one cell per column.
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.push(cells, false);
    }

    /// Adds a row of a flagged cell.
    pub fn push(&mut self, cells: Vec<Cell>, flagged: bool) {
        debug_assert_eq!(cells.len(), self.columns.len(), "one cell per column");
        self.rows.push(Row { cells, flagged });
    }

    /// Adds a `key | value` row to a table of facts.
    pub fn fact(&mut self, key: &str, value: impl Into<String>) {
        self.row(vec![Cell::text(key), Cell::text(value)]);
    }
}

impl Document {
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            blocks: Vec::new(),
        }
    }

    pub fn section(&mut self, title: impl Into<String>) {
        self.blocks.push(Block::Heading {
            level: 2,
            text: title.into(),
        });
    }

    pub fn subsection(&mut self, title: impl Into<String>) {
        self.blocks.push(Block::Heading {
            level: 3,
            text: title.into(),
        });
    }

    pub fn paragraph(&mut self, text: impl Into<String>) {
        self.blocks.push(Block::Paragraph(text.into()));
    }

    pub fn list(&mut self, items: Vec<String>) {
        self.blocks.push(Block::List(items));
    }

    pub fn table(&mut self, table: Table) {
        self.blocks.push(Block::Table(table));
    }

    pub fn figure(&mut self, figure: Figure) {
        self.blocks.push(Block::Figure(figure));
    }

    /// The figures, in order.
    pub fn figures(&self) -> impl Iterator<Item = &Figure> {
        self.blocks.iter().filter_map(|b| match b {
            Block::Figure(f) => Some(f),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_sort_by_their_numbers() {
        assert_eq!(Cell::num(Some(12.345)), Cell::sorted("12.3", Some(12.345)));
        assert_eq!(Cell::num(None), Cell::text("-"));
        assert_eq!(Cell::count(Some(7)).sort, Some(7.0));
        assert_eq!(Cell::sorted("x", Some(f64::NAN)).sort, None);
        let mut facts = Table::facts();
        facts.fact("run id", "r1");
        assert!(!facts.sortable && facts.rows[0].cells[1].text == "r1");
    }
}
