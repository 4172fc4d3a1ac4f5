//! `REPORT.html`: the report's [`Document`] as one self-contained page — charts as inline SVG with
//! hover titles, sortable tables (a little inline script), CSS for phones and print, nothing loaded
//! from anywhere. Every piece of text is escaped here; nothing from a result file reaches the page
//! as markup.

use std::{collections::BTreeSet, fmt::Write as _};

use super::document::{Align, Block, Document, Figure, Table};

const STYLE: &str = include_str!("report.css");
const SCRIPT: &str = include_str!("sort.js");

/// Escapes text for HTML (and SVG) content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// The report's inline markup as HTML: `` `code` `` and `**strong**` become elements (when
/// paired), everything else is escaped text.
pub fn inline(text: &str) -> String {
    paired(text, "`", "code", escape, strong)
}

fn strong(text: &str) -> String {
    paired(text, "**", "strong", escape, escape)
}

/// `text` with each span between a pair of `mark`s rendered by `inside` in a `<tag>` element, and
/// the rest (including an unpaired mark) by `outside`.
fn paired(
    text: &str,
    mark: &str,
    tag: &str,
    inside: fn(&str) -> String,
    outside: fn(&str) -> String,
) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(mark) {
        let open = start + mark.len();
        let Some(len) = rest[open..].find(mark) else {
            break;
        };
        out.push_str(&outside(&rest[..start]));
        let _ = write!(out, "<{tag}>{}</{tag}>", inside(&rest[open..open + len]));
        rest = &rest[open + len + mark.len()..];
    }
    out.push_str(&outside(rest));
    out
}

/// An element id from a title: lower-case letters, digits and dashes, unique within the page.
fn slug(text: &str, taken: &mut BTreeSet<String>) -> String {
    let mut base = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            base.push(c);
        } else if !base.ends_with('-') && !base.is_empty() {
            base.push('-');
        }
    }
    let base = match base.trim_end_matches('-') {
        "" => "section".to_owned(),
        trimmed => trimmed.to_owned(),
    };
    let mut id = base.clone();
    let mut n = 2;
    while !taken.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// Renders the whole report.
pub fn render(doc: &Document) -> String {
    // Sections get their title's slug; subsections their section's id in front of theirs.
    let mut taken = BTreeSet::new();
    let mut section = String::new();
    let ids: Vec<Option<String>> = doc
        .blocks
        .iter()
        .map(|block| match block {
            Block::Heading { level, text } if *level <= 2 => {
                section = slug(text, &mut taken);
                Some(section.clone())
            }
            Block::Heading { text, .. } => Some(slug(&format!("{section} {text}"), &mut taken)),
            _ => None,
        })
        .collect();
    let title = escape(&doc.title);
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n\
         <meta name=\"generator\" content=\"commbench report\">\n\
         <title>{title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <header><h1>{title}</h1></header>\n"
    );
    contents(&mut out, doc, &ids);
    out.push_str("<main>\n");
    let mut in_section = false;
    for (block, id) in doc.blocks.iter().zip(&ids) {
        match block {
            Block::Heading { level, text } => {
                let id = id.as_deref().unwrap_or_default();
                if *level <= 2 {
                    if in_section {
                        out.push_str("</section>\n");
                    }
                    let _ = writeln!(out, "<section id=\"{id}\">");
                    in_section = true;
                    let _ = writeln!(out, "<h2>{}</h2>", inline(text));
                } else {
                    let _ = writeln!(out, "<h3 id=\"{id}\">{}</h3>", inline(text));
                }
            }
            Block::Paragraph(text) => {
                let _ = writeln!(out, "<p>{}</p>", inline(text));
            }
            Block::List(items) => {
                out.push_str("<ul>\n");
                for item in items {
                    let _ = writeln!(out, "<li>{}</li>", inline(item));
                }
                out.push_str("</ul>\n");
            }
            Block::Table(table) => table_html(&mut out, table),
            Block::Figure(figure) => figure_html(&mut out, figure),
        }
    }
    if in_section {
        out.push_str("</section>\n");
    }
    let _ = write!(
        out,
        "</main>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n"
    );
    out
}

/// The list of sections, linked.
fn contents(out: &mut String, doc: &Document, ids: &[Option<String>]) {
    out.push_str("<nav class=\"toc\" aria-label=\"Contents\">\n<ol>\n");
    for (block, id) in doc.blocks.iter().zip(ids) {
        if let (Block::Heading { level: 2, text }, Some(id)) = (block, id) {
            let _ = writeln!(out, "<li><a href=\"#{id}\">{}</a></li>", inline(text));
        }
    }
    out.push_str("</ol>\n</nav>\n");
}

fn table_html(out: &mut String, table: &Table) {
    let titled = table.columns.iter().any(|c| !c.title.is_empty());
    // Numbers line up on the right; short text keeps to one line (a narrow screen scrolls the
    // table instead of breaking labels); a column holding sentences wraps.
    let classes: Vec<&str> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let prose = table.rows.iter().any(|row| {
                row.cells
                    .get(i)
                    .is_some_and(|c| c.text.chars().count() > 40)
            });
            match (column.align, prose) {
                (Align::Right, _) => " class=\"num\"",
                (Align::Left, true) => " class=\"prose\"",
                (Align::Left, false) if titled => " class=\"line\"",
                (Align::Left, false) => "",
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "<div class=\"table-wrap\"><table{}>",
        if table.sortable {
            " class=\"sortable\""
        } else {
            ""
        }
    );
    if titled {
        out.push_str("<thead><tr>");
        for column in &table.columns {
            let _ = write!(
                out,
                "<th scope=\"col\"{}>{}</th>",
                if column.align == Align::Right {
                    " class=\"num\""
                } else {
                    ""
                },
                inline(&column.title)
            );
        }
        out.push_str("</tr></thead>\n");
    }
    out.push_str("<tbody>\n");
    for row in &table.rows {
        out.push_str(if row.flagged {
            "<tr class=\"flagged\">"
        } else {
            "<tr>"
        });
        for (i, cell) in row.cells.iter().enumerate() {
            // A table of facts names each row in its first column.
            let tag = if titled || i > 0 { "td" } else { "th" };
            out.push('<');
            out.push_str(tag);
            if !titled && i == 0 {
                out.push_str(" scope=\"row\"");
            }
            out.push_str(classes.get(i).copied().unwrap_or_default());
            if let Some(key) = cell.sort {
                let _ = write!(out, " data-sort=\"{key}\"");
            }
            let _ = write!(out, ">{}</{tag}>", inline(&cell.text));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n");
}

fn figure_html(out: &mut String, figure: &Figure) {
    let stem = figure.file.rsplit_once('.').map_or(figure.file, |(s, _)| s);
    let Some(drawing) = &figure.svg else {
        let _ = writeln!(
            out,
            "<p class=\"not-drawn\" id=\"chart-{}\">Not drawn ({}): {}.</p>",
            escape(stem),
            escape(figure.file),
            inline(&figure.text)
        );
        return;
    };
    // The SVG from the chart writer: plotters escapes its text, the hover layer escapes titles.
    // The chart's own width sets its smallest width on a phone, so every chart's text stays as
    // legible as every other's there (the page's CSS scales it).
    let svg = drawing.markup.replacen(
        "<svg ",
        &format!(
            "<svg role=\"img\" aria-label=\"{}\" style=\"--chart-width: {}\" ",
            escape(figure.title),
            drawing.width
        ),
        1,
    );
    let _ = writeln!(
        out,
        "<figure class=\"chart\" id=\"chart-{}\">\n<div class=\"chart-box\">\n{svg}</div>\n\
         <figcaption>{}</figcaption>\n</figure>",
        escape(stem),
        inline(&figure.text)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::document::Cell;

    const HOSTILE: &str = "<script>alert(\"x\")</script> & 'y' <img src=x onerror=alert(1)>";

    #[test]
    fn inline_markup_becomes_elements_and_the_rest_is_text() {
        assert_eq!(
            inline("a `b<c>` **d & e** f"),
            "a <code>b&lt;c&gt;</code> <strong>d &amp; e</strong> f"
        );
        assert_eq!(inline("odd ` tick and ** star"), "odd ` tick and ** star");
        assert_eq!(inline("`**not strong**`"), "<code>**not strong**</code>");
        assert_eq!(
            inline(HOSTILE),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39; \
             &lt;img src=x onerror=alert(1)&gt;"
        );
    }

    #[test]
    fn ids_are_unique_slugs() {
        let mut taken = BTreeSet::new();
        assert_eq!(
            slug("Measured vs model (polling)", &mut taken),
            "measured-vs-model-polling"
        );
        assert_eq!(
            slug("Measured vs model (polling)", &mut taken),
            "measured-vs-model-polling-2"
        );
        assert_eq!(slug("<>", &mut taken), "section");
    }

    #[test]
    fn text_from_result_files_never_becomes_markup() {
        let mut doc = Document::new(HOSTILE);
        doc.section(HOSTILE);
        doc.subsection(HOSTILE);
        doc.paragraph(HOSTILE);
        doc.list(vec![
            HOSTILE.to_owned(),
            format!("`{HOSTILE}`"),
            format!("**{HOSTILE}**"),
        ]);
        let mut table = Table::new(&[(HOSTILE, Align::Left), ("n", Align::Right)]);
        table.push(vec![Cell::text(HOSTILE), Cell::num(Some(2.5))], true);
        doc.table(table);
        doc.figure(Figure {
            file: "x.png",
            title: "x",
            text: HOSTILE.to_owned(),
            svg: None,
        });
        let html = render(&doc);
        assert_eq!(
            html.matches("<script").count(),
            1,
            "only the sorting script"
        );
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("alert(\""), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
        assert!(html.contains("<tr class=\"flagged\">"));
        assert!(html.contains("<td class=\"num\" data-sort=\"2.5\">2.5</td>"));
        assert!(html.trim_end().ends_with("</html>"));
    }
}
