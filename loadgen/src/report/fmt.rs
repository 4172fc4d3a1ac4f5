//! Number formatting shared by the report text and the chart labels.

use crate::pattern::Pattern;

/// `value` with about three significant digits and no trailing zeros: 6.951 → `6.95`,
/// 511.2 → `511`, 0.1 → `0.1`, 12345.6 → `12346`.
pub fn num(value: f64) -> String {
    if !value.is_finite() {
        return "-".to_owned();
    }
    let magnitude = value.abs();
    let decimals = if magnitude >= 100.0 || magnitude == 0.0 {
        0
    } else if magnitude >= 10.0 {
        1
    } else if magnitude >= 1.0 {
        2
    } else {
        // Three significant digits below 1, at most 6 decimals.
        ((-magnitude.log10()).floor() as usize + 3).min(6)
    };
    trim(format!("{value:.decimals$}"))
}

/// A count with a thousands suffix and about three significant digits: 512 → `512`,
/// 6_200 → `6.2k`, 41_234 → `41.2k`, 1_500_000 → `1.5M`.
pub fn count(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 999_500.0 {
        format!("{}M", num(value / 1e6))
    } else if magnitude >= 999.5 {
        format!("{}k", num(value / 1e3))
    } else {
        num(value.round())
    }
}

/// A ratio: `12.3×`.
pub fn times(ratio: f64) -> String {
    format!("{}×", num(ratio))
}

/// A percentage of a fraction: 0.1234 → `12.3%`.
pub fn percent(fraction: f64) -> String {
    format!("{}%", num(fraction * 100.0))
}

/// A signed number with one decimal, `0` when it rounds to zero: `+1.9`, `-12.3`, `0`.
pub fn signed_one_decimal(value: f64) -> String {
    if value.abs() < 0.05 || !value.is_finite() {
        "0".to_owned()
    } else {
        format!("{value:+.1}")
    }
}

/// An optional number, `-` when absent.
pub fn opt(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), num)
}

/// Bytes in KiB with three significant digits.
pub fn kib(bytes: f64) -> String {
    num(bytes / 1024.0)
}

/// Seconds as a poll-interval label: 0.5 → `500ms`, 1 → `1s`, 2.5 → `2.5s`.
pub fn interval(seconds: f64) -> String {
    if seconds > 0.0 && seconds < 1.0 {
        format!("{}ms", trim(format!("{:.3}", seconds * 1000.0)))
    } else {
        format!("{}s", trim(format!("{seconds:.3}")))
    }
}

/// A computed duration: 0.1667 → `167 ms`, 12.5 → `12.5 s`.
pub fn seconds(value: f64) -> String {
    if value.abs() < 0.9995 {
        format!("{} ms", num(value * 1000.0))
    } else {
        format!("{} s", num(value))
    }
}

fn trim(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Parts of a sentence joined with `, ` and a final ` and `.
pub fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The text with its first letter upper-case: `node` → `Node`.
pub fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A pattern, with its poll interval when it has one: `sse`, `short-poll 1s`.
pub fn pattern_at(pattern: Pattern, interval_s: Option<f64>) -> String {
    match interval_s {
        Some(seconds) => format!("{pattern} {}", interval(seconds)),
        None => pattern.to_string(),
    }
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(unix_s: u64) -> String {
    let [year, month, day, hour, minute, second] = crate::clock::utc_fields(unix_s);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_significant_digits() {
        assert_eq!(num(6.951), "6.95");
        assert_eq!(num(511.231), "511");
        assert_eq!(num(43.537), "43.5");
        assert_eq!(num(0.1), "0.1");
        assert_eq!(num(0.012345), "0.0123");
        assert_eq!(num(1.0), "1");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(-2.5), "-2.5");
        assert_eq!(num(f64::NAN), "-");
        assert_eq!(times(12.34), "12.3×");
        assert_eq!(count(512.4), "512");
        assert_eq!(count(6_200.0), "6.2k");
        assert_eq!(count(41_234.0), "41.2k");
        assert_eq!(count(999_999.0), "1M");
        assert_eq!(count(1_500_000.0), "1.5M");
    }

    #[test]
    fn intervals_and_percentages() {
        assert_eq!(interval(0.5), "500ms");
        assert_eq!(interval(1.0), "1s");
        assert_eq!(interval(2.5), "2.5s");
        assert_eq!(interval(0.25), "250ms");
        assert_eq!(pattern_at(Pattern::ShortPoll, Some(1.0)), "short-poll 1s");
        assert_eq!(pattern_at(Pattern::Sse, None), "sse");
        assert_eq!(seconds(1.0 / 6.0), "167 ms");
        assert_eq!(seconds(12.5), "12.5 s");
        assert_eq!(percent(0.1234), "12.3%");
        assert_eq!(signed_one_decimal(1.92), "+1.9");
        assert_eq!(signed_one_decimal(-0.004), "0");
        assert_eq!(signed_one_decimal(-12.34), "-12.3");
    }

    #[test]
    fn unix_times_are_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }
}
