//! Friendly units for flags and scenario files: durations (`250ms`, `30s`, `2m`), counts (`10k`, `1.5M`)
//! and byte sizes (`64KiB`, `1MiB`, `512`), each parsed with an error that names the allowed form.

use std::time::Duration;

/// Splits `12.5ms` into `(12.5, "ms")`; `None` when it does not start with a number.
fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit))
}

/// Parses `250ms`, `30s`, `2m`, `1h`, `1500us`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (value, unit) = number_and_unit(text)
        .ok_or_else(|| format!("`{text}` is not a duration (use e.g. 250ms, 30s, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{text}` (use ns, us, ms, s, m, h)"
            ))
        }
    };
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(format!("duration `{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses `10000`, `10k`, `1.5M`, `2G` into a whole count.
pub fn parse_count(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, factor) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1e3),
        Some((i, 'm' | 'M')) => (&text[..i], 1e6),
        Some((i, 'g' | 'G')) => (&text[..i], 1e9),
        _ => (text, 1.0),
    };
    let value: f64 = number
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{text}` is not a count (use e.g. 500, 10k, 1.5M)"))?;
    let total = value * factor;
    if !total.is_finite() || total < 0.0 || total > u64::MAX as f64 || total.fract() != 0.0 {
        return Err(format!("`{text}` is not a whole, non-negative count"));
    }
    Ok(total as u64)
}

/// Parses `512`, `64KiB`, `64k`, `1MiB`, `1MB` into bytes (k and KiB both mean 1024).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (value, unit) = number_and_unit(text)
        .ok_or_else(|| format!("`{text}` is not a size (use e.g. 512, 64KiB, 1MiB)"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}` (use B, KiB, MiB, GiB)"
            ))
        }
    };
    let total = value * factor;
    if !total.is_finite() || total > u64::MAX as f64 || total.fract() != 0.0 {
        return Err(format!(
            "size `{text}` is out of range or not a whole number of bytes"
        ));
    }
    Ok(total as u64)
}

/// Checks `value` lies in `min..=max`, naming the range in the error.
pub fn in_range<T: PartialOrd + std::fmt::Display>(value: T, min: T, max: T) -> Result<T, String> {
    if value < min || value > max {
        return Err(format!("{value} is out of range (allowed {min}..={max})"));
    }
    Ok(value)
}

/// Parses a duration (as [`parse_duration`]) and checks it lies in `min..=max`.
pub fn duration_in(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let value = parse_duration(text)?;
    if value < min || value > max {
        return Err(format!(
            "{value:?} is out of range (allowed {min:?}..={max:?})"
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("10k"), Ok(10_000));
        assert_eq!(parse_count("1.5M"), Ok(1_500_000));
        assert_eq!(parse_count("42"), Ok(42));
        assert!(parse_count("1.5").is_err());
        assert!(parse_count("lots").is_err());
        assert!(parse_count("99999999999999999999999G").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64KiB"), Ok(65_536));
        assert_eq!(parse_bytes("64k"), Ok(65_536));
        assert_eq!(parse_bytes("1MiB"), Ok(1_048_576));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert!(parse_bytes("12 bananas").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(in_range(5, 1, 10), Ok(5));
        assert!(in_range(0, 1, 10).unwrap_err().contains("1..=10"));
    }
}
