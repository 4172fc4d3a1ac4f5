//! `REPORT.md`: the report's [`Document`] as Markdown, charts as links to the PNG files beside it.

use std::fmt::Write as _;

use super::document::{Align, Block, Document, Figure, Table};

/// Escapes text for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// Renders the whole report.
pub fn render(doc: &Document) -> String {
    let mut out = String::new();
    if !doc.title.is_empty() {
        let _ = writeln!(out, "# {}\n", doc.title);
    }
    for block in &doc.blocks {
        match block {
            Block::Heading { level, text } => {
                let _ = writeln!(out, "{} {text}\n", "#".repeat(usize::from(*level)));
            }
            Block::Paragraph(text) => {
                let _ = writeln!(out, "{text}\n");
            }
            Block::List(items) => {
                for item in items {
                    let _ = writeln!(out, "- {item}");
                }
                out.push('\n');
            }
            Block::Table(table) => table_text(&mut out, table),
            Block::Figure(figure) => figure_text(&mut out, figure),
        }
    }
    out
}

fn table_text(out: &mut String, table: &Table) {
    out.push('|');
    for column in &table.columns {
        if column.title.is_empty() {
            out.push_str(" |");
        } else {
            let _ = write!(out, " {} |", column.title);
        }
    }
    out.push_str("\n|");
    for column in &table.columns {
        out.push_str(match column.align {
            Align::Left => "---|",
            Align::Right => "---:|",
        });
    }
    out.push('\n');
    for row in &table.rows {
        out.push('|');
        for value in &row.cells {
            let _ = write!(out, " {} |", cell(&value.text));
        }
        out.push('\n');
    }
    out.push('\n');
}

fn figure_text(out: &mut String, figure: &Figure) {
    if figure.drawn() {
        let _ = writeln!(
            out,
            "![{}]({})\n\n{}\n",
            figure.title, figure.file, figure.text
        );
    } else {
        let _ = writeln!(out, "Not drawn ({}): {}.\n", figure.file, figure.text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::document::{Align::Right, Cell};

    #[test]
    fn tables_escape_cells_and_align_numbers() {
        let mut doc = Document::new("t");
        doc.section("S");
        let mut table = Table::new(&[("cell", Align::Left), ("n", Right), ("", Align::Left)]);
        table.row(vec![
            Cell::text("a|b\nc"),
            Cell::num(Some(1.5)),
            Cell::text(""),
        ]);
        doc.table(table);
        doc.list(vec!["one".into()]);
        assert_eq!(
            render(&doc),
            "# t\n\n## S\n\n| cell | n | |\n|---|---:|---|\n| a\\|b c | 1.5 |  |\n\n- one\n\n"
        );
    }
}
