//! `--fail-if`: pass/fail thresholds over the columns of a result file (`summary.csv`, or
//! `capacity.csv` for `commbench capacity`), parsed before anything runs and checked after the run
//! has written everything.

pub mod check;
pub mod columns;

use std::{fmt, str::FromStr};

use commbench_servers::units::{parse_bytes, parse_count, parse_duration};

pub use self::{
    check::{check, CheckReport, Checked},
    columns::{columns_of, Column, ColumnKind},
};
use crate::{pattern::Pattern, scenario::RawScenario};

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    /// Longest first, so `<=` is not read as `<`.
    const ALL: [(&'static str, Op); 6] = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

    fn as_str(self) -> &'static str {
        Op::ALL
            .iter()
            .find(|(_, op)| *op == self)
            .map_or("?", |(text, _)| text)
    }

    fn holds<T: PartialOrd>(self, left: &T, right: &T) -> bool {
        match self {
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Eq => left == right,
            Op::Ne => left != right,
        }
    }
}

/// The value a column is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    Number(f64),
    Bool(bool),
    Text(String),
}

/// One threshold: `[pattern:]column OP value`. The run fails when it does not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// Only rows of this pattern; `None` = every row.
    pub pattern: Option<Pattern>,
    pub column: &'static str,
    pub op: Op,
    pub bound: Bound,
    /// As the user wrote it.
    pub text: String,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Threshold {
    /// Whether `value` (the row's cell in `column`) meets the threshold.
    fn holds_for(&self, value: &Bound) -> bool {
        match (value, &self.bound) {
            (Bound::Number(v), Bound::Number(b)) => self.op.holds(v, b),
            (Bound::Bool(v), Bound::Bool(b)) => self.op.holds(v, b),
            (Bound::Text(v), Bound::Text(b)) => self.op.holds(v, b),
            // Parsing matched the bound to the column's kind; a file disagreeing with its own
            // type cannot meet a threshold.
            _ => false,
        }
    }
}

/// The thresholds of a run, and what an empty column means for them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds {
    pub list: Vec<Threshold>,
    /// A threshold on a column that is empty for a cell (does not apply there), or that matches no
    /// cell at all, fails instead of being skipped.
    pub fail_if_missing: bool,
}

/// A threshold that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: `{expression}`: {detail}")]
pub struct ThresholdError {
    pub origin: String,
    pub expression: String,
    pub detail: String,
}

impl Thresholds {
    /// The `fail_if` and `fail_if_missing` settings of a scenario (flags or file) over `columns`.
    pub fn from_raw(raw: &RawScenario, columns: &[Column]) -> Result<Self, ThresholdError> {
        let list = match raw.text_of("fail_if") {
            Some(text) => parse_list(text, &raw.origin_of("fail_if"), columns)?,
            None => Vec::new(),
        };
        let fail_if_missing = match raw.text_of("fail_if_missing").map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ThresholdError {
                    origin: raw.origin_of("fail_if_missing"),
                    expression: other.to_owned(),
                    detail: "expected true or false".to_owned(),
                })
            }
        };
        Ok(Self {
            list,
            fail_if_missing,
        })
    }
}

/// Parses `EXPR[,EXPR…]`; the error names the expression at fault and, for an unknown column,
/// lists the columns.
pub fn parse_list(
    text: &str,
    origin: &str,
    columns: &[Column],
) -> Result<Vec<Threshold>, ThresholdError> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            parse(part, columns).map_err(|detail| ThresholdError {
                origin: origin.to_owned(),
                expression: part.to_owned(),
                detail,
            })
        })
        .collect()
}

/// Parses one `[pattern:]column OP value`.
pub fn parse(text: &str, columns: &[Column]) -> Result<Threshold, String> {
    let (at, op_text, op) = find_op(text).ok_or_else(|| {
        "no comparison: write `column OP value` with OP one of < <= > >= == != (e.g. p99_ms<50)"
            .to_owned()
    })?;
    let (left, right) = (&text[..at], text[at + op_text.len()..].trim());
    let (pattern, column) = match left.split_once(':') {
        Some((pattern, column)) => (Some(Pattern::from_str(pattern)?), column.trim()),
        None => (None, left.trim()),
    };
    let known = || {
        columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if column.is_empty() {
        return Err(format!(
            "no column before `{op_text}` (columns: {})",
            known()
        ));
    }
    let column = columns
        .iter()
        .find(|c| c.name == column)
        .ok_or_else(|| format!("unknown column `{column}` (columns: {})", known()))?;
    if right.is_empty() {
        return Err(format!("no value after `{op_text}`"));
    }
    let bound = bound(column, op, right)?;
    Ok(Threshold {
        pattern,
        column: column.name,
        op,
        bound,
        text: text.trim().to_owned(),
    })
}

/// The first comparison operator in `text`: its byte offset, spelling and meaning.
fn find_op(text: &str) -> Option<(usize, &'static str, Op)> {
    let at = text.find(['<', '>', '=', '!'])?;
    Op::ALL
        .iter()
        .find(|(spelling, _)| text[at..].starts_with(spelling))
        .map(|(spelling, op)| (at, *spelling, *op))
}

/// `text` read as a value of `column`: numbers in the column's unit (friendly units allowed),
/// `true`/`false`, or text (quotes optional) compared with `==`/`!=` only.
fn bound(column: &Column, op: Op, text: &str) -> Result<Bound, String> {
    let equality = matches!(op, Op::Eq | Op::Ne);
    match column.kind {
        ColumnKind::Number => number(column.name, text).map(Bound::Number),
        ColumnKind::Bool => match (text, equality) {
            ("true", true) => Ok(Bound::Bool(true)),
            ("false", true) => Ok(Bound::Bool(false)),
            (_, true) => Err(format!("{} is true or false, not `{text}`", column.name)),
            (_, false) => Err(format!(
                "{} is true or false: compare it with == or !=",
                column.name
            )),
        },
        ColumnKind::Text if equality => Ok(Bound::Text(unquote(text).to_owned())),
        ColumnKind::Text => Err(format!(
            "{} is text: compare it with == or != (`{}` is not ordered)",
            column.name,
            op.as_str()
        )),
    }
}

fn unquote(text: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = text
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner;
        }
    }
    text
}

/// A number in `column`'s unit: a plain number, or with the unit the column's name ends in
/// (`_ms`, `_s`, `_us`: durations such as `100ms`, `2s`; `bytes`: sizes such as `64KiB`; other
/// columns, rates `_per_s` among them: counts such as `10k`).
fn number(column: &str, text: &str) -> Result<f64, String> {
    if let Ok(value) = text.parse::<f64>() {
        if value.is_finite() {
            return Ok(value);
        }
    }
    let nanos_per_unit = [("_ms", 1e6), ("_us", 1e3), ("_s", 1e9)]
        .into_iter()
        .find(|(suffix, _)| column.ends_with(suffix))
        .filter(|_| !column.ends_with("_per_s"));
    let parsed = if let Some((_, per)) = nanos_per_unit {
        parse_duration(text).map(|d| d.as_nanos() as f64 / per)
    } else if column.contains("bytes") {
        parse_bytes(text).map(|b| b as f64)
    } else {
        parse_count(text).map(|c| c as f64)
    };
    parsed.map_err(|e| format!("{column} needs a number: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::SummaryRow;

    fn summary() -> Vec<Column> {
        columns_of::<SummaryRow>()
    }

    fn one(text: &str) -> Threshold {
        parse(text, &summary()).unwrap()
    }

    fn refused(text: &str) -> String {
        parse(text, &summary()).unwrap_err()
    }

    #[test]
    fn reads_each_operator() {
        for (text, op) in [
            ("p99_ms<50", Op::Lt),
            ("p99_ms <= 50", Op::Le),
            ("p99_ms>50", Op::Gt),
            ("p99_ms>=50", Op::Ge),
            ("p99_ms==50", Op::Eq),
            ("p99_ms!=50", Op::Ne),
        ] {
            let t = one(text);
            assert_eq!(
                (t.column, t.op, t.bound),
                ("p99_ms", op, Bound::Number(50.0))
            );
        }
    }

    #[test]
    fn numbers_take_the_columns_units() {
        assert_eq!(one("p99_ms<100ms").bound, Bound::Number(100.0));
        assert_eq!(one("p99_ms<1.5s").bound, Bound::Number(1500.0));
        assert_eq!(one("server_cpu_s<=500ms").bound, Bound::Number(0.5));
        assert_eq!(one("loadgen_lag_p99_us<2ms").bound, Bound::Number(2000.0));
        assert_eq!(
            one("server_peak_rss_bytes<64MiB").bound,
            Bound::Number(64.0 * 1024.0 * 1024.0)
        );
        assert_eq!(one("events_received>=10k").bound, Bound::Number(10_000.0));
        assert_eq!(one("achieved_rate_per_s>=1k").bound, Bound::Number(1_000.0));
        assert_eq!(one("bytes_per_event<250.5").bound, Bound::Number(250.5));
        assert_eq!(
            one("server_cpu_us_per_event<=30").bound,
            Bound::Number(30.0)
        );
        let error = refused("events_lost==10ms");
        assert!(error.contains("events_lost needs a number"), "{error}");
    }

    #[test]
    fn a_pattern_prefix_selects_its_cells() {
        let t = one("ws:p99_ms<20");
        assert_eq!(t.pattern, Some(Pattern::Ws));
        assert_eq!(t.text, "ws:p99_ms<20");
        assert_eq!(one("websocket:errors==0").pattern, Some(Pattern::Ws));
        let error = refused("pigeon:p99_ms<20");
        assert!(error.contains("unknown pattern `pigeon`"), "{error}");
    }

    #[test]
    fn booleans_and_text_compare_for_equality() {
        assert_eq!(one("complete==true").bound, Bound::Bool(true));
        assert_eq!(one("warnings==\"\"").bound, Bound::Text(String::new()));
        assert_eq!(one("bus!=redis").bound, Bound::Text("redis".into()));
        assert!(refused("complete<true").contains("== or !="));
        assert!(refused("complete==yes").contains("true or false"));
        assert!(refused("warnings<abc").contains("is text"));
        assert_eq!(one("target==node").bound, Bound::Text("node".into()));
        assert!(refused("target>=node").contains("is text"));
    }

    #[test]
    fn malformed_expressions_name_the_problem() {
        assert!(refused("p99_ms").contains("no comparison"));
        assert!(refused("p99_ms=50").contains("no comparison"));
        assert!(refused("<50").contains("no column"));
        assert!(refused("p99_ms<").contains("no value"));
        assert!(refused("p99_ms<fast").contains("p99_ms needs a number"));
    }

    #[test]
    fn an_unknown_column_lists_the_columns() {
        let error = refused("p98_ms<50");
        assert!(error.contains("unknown column `p98_ms`"), "{error}");
        assert!(
            error.contains("p99_ms") && error.contains("events_lost"),
            "{error}"
        );
    }

    #[test]
    fn lists_split_on_commas_and_errors_name_the_origin() {
        let list = parse_list(
            "p99_ms<50, events_lost==0,,errors==0",
            "--fail-if",
            &summary(),
        )
        .unwrap();
        assert_eq!(list.len(), 3);
        let error = parse_list("p99_ms<50,p98_ms<1", "--fail-if", &summary())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("--fail-if: `p98_ms<1`: unknown column"),
            "{error}"
        );
    }

    #[test]
    fn scenario_files_set_thresholds() {
        let raw = RawScenario::from_toml(
            "fail_if = [\"p99_ms<50\", \"errors==0\"]\nfail_if_missing = true\n",
            "s.toml",
        )
        .unwrap();
        let thresholds = Thresholds::from_raw(&raw, &summary()).unwrap();
        assert_eq!(thresholds.list.len(), 2);
        assert!(thresholds.fail_if_missing);
        let raw = RawScenario::from_toml("fail_if = \"p99<50\"\n", "s.toml").unwrap();
        let error = Thresholds::from_raw(&raw, &summary())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("s.toml: field `fail_if`: `p99<50`"),
            "{error}"
        );
    }
}
