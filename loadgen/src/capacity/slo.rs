//! The latency goal of a capacity search: `p50|p90|p99|p999|max < DURATION`, several joined with
//! `,`, checked against the histogram of the latency that matters for the pattern.

use std::{fmt, time::Duration};

use commbench_servers::units::parse_duration;
use hdrhistogram::Histogram;

use crate::{
    pattern::{Kind, Pattern},
    record::Metric,
};

/// Which point of the distribution a clause bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    P50,
    P90,
    P99,
    P999,
    Max,
}

impl Point {
    const ALL: [(&'static str, Point); 5] = [
        ("p50", Point::P50),
        ("p90", Point::P90),
        ("p99", Point::P99),
        ("p999", Point::P999),
        ("max", Point::Max),
    ];

    pub fn name(self) -> &'static str {
        Point::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(name, _)| name)
    }

    /// The value at this point, µs.
    fn of(self, histogram: &Histogram<u64>) -> u64 {
        match self {
            Point::P50 => histogram.value_at_quantile(0.5),
            Point::P90 => histogram.value_at_quantile(0.9),
            Point::P99 => histogram.value_at_quantile(0.99),
            Point::P999 => histogram.value_at_quantile(0.999),
            Point::Max => histogram.max(),
        }
    }
}

/// `point < limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clause {
    pub point: Point,
    pub limit: Duration,
}

/// Every clause must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slo {
    pub clauses: Vec<Clause>,
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .clauses
            .iter()
            .map(|c| format!("{}<{}", c.point.name(), duration_text(c.limit)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A duration as a user would write it: `250us`, `100ms`, `2500ms`, `30s`.
pub fn duration_text(d: Duration) -> String {
    let micros = d.as_micros();
    if micros % 1_000 != 0 {
        format!("{micros}us")
    } else if micros % 1_000_000 != 0 {
        format!("{}ms", micros / 1_000)
    } else {
        format!("{}s", micros / 1_000_000)
    }
}

impl Slo {
    /// Parses `p99<100ms` or `p50<20ms,p99<100ms`; the error names the part at fault.
    pub fn parse(text: &str) -> Result<Slo, String> {
        let clauses = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| clause(part).map_err(|detail| format!("`{part}`: {detail}")))
            .collect::<Result<Vec<_>, _>>()?;
        if clauses.is_empty() {
            return Err(format!(
                "`{text}` names no goal (write e.g. p99<100ms or p50<20ms,p99<100ms)"
            ));
        }
        Ok(Slo { clauses })
    }

    /// The clauses `histogram` (µs) breaks, each with the measured value in ms.
    pub fn broken(&self, histogram: &Histogram<u64>) -> Vec<(Clause, f64)> {
        self.clauses
            .iter()
            .filter_map(|clause| {
                let value = clause.point.of(histogram);
                (value as u128 >= clause.limit.as_micros())
                    .then_some((*clause, value as f64 / 1_000.0))
            })
            .collect()
    }
}

fn clause(part: &str) -> Result<Clause, String> {
    let (point, limit) = part
        .split_once('<')
        .ok_or("write `POINT<DURATION`, e.g. p99<100ms")?;
    let point = point.trim().to_ascii_lowercase();
    let point = Point::ALL
        .iter()
        .find(|(name, _)| *name == point)
        .map(|(_, p)| *p)
        .ok_or_else(|| format!("unknown point `{point}` (use p50, p90, p99, p999 or max)"))?;
    let limit = limit.trim();
    if limit.starts_with('=') {
        return Err("the goal is strictly below its limit: use `<`".to_owned());
    }
    let limit = parse_duration(limit)?;
    if limit.is_zero() {
        return Err("a latency goal of 0 cannot be met".to_owned());
    }
    Ok(Clause { point, limit })
}

/// The latency a pattern's goal is about: what a user waits for. Push patterns and long polling:
/// publish → delivery. Pollers on an interval: the poll's round trip from its intended send time
/// (their delivery staleness is the interval by design, and no server makes it shorter).
/// Request-response: the round trip.
pub fn metric(pattern: Pattern) -> Option<Metric> {
    match pattern.kind() {
        _ if pattern.polls_on_interval() => Some(Metric::RoundTrip),
        Kind::Request => Some(Metric::RoundTrip),
        Kind::FeedPush | Kind::FeedPoll(_) => Some(Metric::Delivery),
        Kind::Job | Kind::External => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::new_histogram;

    #[test]
    fn reads_one_or_several_clauses() {
        let slo = Slo::parse("p99<100ms").unwrap();
        assert_eq!(
            slo.clauses,
            [Clause {
                point: Point::P99,
                limit: Duration::from_millis(100)
            }]
        );
        let slo = Slo::parse(" p50 < 20ms , P999<1s,max<2.5s").unwrap();
        let points: Vec<Point> = slo.clauses.iter().map(|c| c.point).collect();
        assert_eq!(points, [Point::P50, Point::P999, Point::Max]);
        assert_eq!(slo.to_string(), "p50<20ms,p999<1s,max<2500ms");
        assert_eq!(Slo::parse("p90<250us").unwrap().to_string(), "p90<250us");
        assert_eq!(Slo::parse("p99<30s").unwrap().to_string(), "p99<30s");
    }

    #[test]
    fn errors_name_the_bad_part() {
        let error = Slo::parse("p99<100ms,p98<1s").unwrap_err();
        assert!(
            error.starts_with("`p98<1s`: unknown point `p98`"),
            "{error}"
        );
        let error = Slo::parse("p99>100ms").unwrap_err();
        assert!(
            error.contains("`p99>100ms`") && error.contains("POINT<DURATION"),
            "{error}"
        );
        let error = Slo::parse("p99<soon").unwrap_err();
        assert!(
            error.contains("`p99<soon`") && error.contains("not a duration"),
            "{error}"
        );
        assert!(Slo::parse("p99<=1s").unwrap_err().contains("use `<`"));
        assert!(Slo::parse("p99<0ms").unwrap_err().contains("cannot be met"));
        assert!(Slo::parse(" , ").unwrap_err().contains("names no goal"));
    }

    #[test]
    fn broken_clauses_carry_the_measured_value() {
        let mut histogram = new_histogram();
        for ms in 1..=100 {
            histogram.record(ms * 1_000).unwrap();
        }
        let slo = Slo::parse("p50<60ms,p99<50ms,max<1s").unwrap();
        let broken = slo.broken(&histogram);
        assert_eq!(broken.len(), 1);
        assert_eq!(broken[0].0.point, Point::P99);
        assert!((broken[0].1 - 99.0).abs() < 0.5, "{}", broken[0].1);
    }

    #[test]
    fn pollers_are_held_to_their_round_trip() {
        assert_eq!(metric(Pattern::Sse), Some(Metric::Delivery));
        assert_eq!(metric(Pattern::LongPoll), Some(Metric::Delivery));
        assert_eq!(metric(Pattern::ShortPoll), Some(Metric::RoundTrip));
        assert_eq!(metric(Pattern::GraphqlPoll), Some(Metric::RoundTrip));
        assert_eq!(metric(Pattern::RequestResponse), Some(Metric::RoundTrip));
        assert_eq!(metric(Pattern::JobSse), None);
        assert_eq!(metric(Pattern::SseUrl), None);
    }
}
