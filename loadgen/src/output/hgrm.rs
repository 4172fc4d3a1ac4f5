//! `.hgrm` files: HdrHistogram's percentile distribution text (as `outputPercentileDistribution`).

use std::{fmt::Write as _, fs, path::Path};

use hdrhistogram::Histogram;

use super::OutputError;

/// Histograms hold microseconds; `.hgrm` files show milliseconds.
pub const MICROS_PER_MS: f64 = 1000.0;

/// Percentile rows per half distance to 100%, as wrk2 and HdrHistogram's defaults.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The percentile distribution of `hist` in the format of HdrHistogram's (Java)
/// `outputPercentileDistribution`, values divided by `value_scale` (1000 turns µs into ms). The
/// 100% row has no `1/(1-Percentile)` column, as in the Java implementation.
pub fn percentile_distribution(hist: &Histogram<u64>, value_scale: f64) -> String {
    let digits = usize::from(hist.sigfig());
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0_u64;
    for v in hist.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / value_scale;
        let quantile = v.quantile_iterated_to();
        // Writing to a String cannot fail.
        let _ = if quantile < 1.0 {
            writeln!(
                out,
                "{value:12.digits$} {quantile:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - quantile)
            )
        } else {
            writeln!(out, "{value:12.digits$} {quantile:2.12} {total:10}")
        };
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.digits$}, StdDeviation   = {:12.digits$}]",
        hist.mean() / value_scale,
        hist.stdev() / value_scale
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.digits$}, Total count    = {:12}]",
        hist.max() as f64 / value_scale,
        hist.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        hist.buckets(),
        sub_bucket_count(hist.sigfig())
    );
    out
}

/// HdrHistogram's sub-bucket count: the power of two that gives single-unit resolution up to
/// 2 × 10^sigfig (not exposed by the crate).
fn sub_bucket_count(sigfig: u8) -> u64 {
    let largest = 2.0 * 10_f64.powi(i32::from(sigfig));
    1 << (largest.log2().ceil() as u32).max(1)
}

/// Writes `hist` (µs) to `path` as a `.hgrm` file in milliseconds.
pub fn write_hgrm(path: &Path, hist: &Histogram<u64>) -> Result<(), OutputError> {
    fs::write(path, percentile_distribution(hist, MICROS_PER_MS)).map_err(OutputError::write(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::new_histogram;

    fn one_to_thousand_ms() -> Histogram<u64> {
        let mut h = new_histogram();
        for ms in 1..=1000 {
            h.record(ms * 1000).unwrap();
        }
        h
    }

    #[test]
    fn has_header_rows_and_footer() {
        let text = percentile_distribution(&one_to_thousand_ms(), MICROS_PER_MS);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        let median = lines
            .iter()
            .find(|l| l.contains(" 0.500000000000 "))
            .expect("a 50% row");
        let fields: Vec<&str> = median.split_whitespace().collect();
        let value: f64 = fields[0].parse().unwrap();
        assert!((499.0..=501.0).contains(&value), "{median}");
        assert_eq!(fields[2], "500");
        assert_eq!(fields[3], "2.00");
        let last_row = lines[lines.len() - 4];
        assert!(
            last_row.contains(" 1.000000000000       1000"),
            "{last_row}"
        );
        assert_eq!(last_row.split_whitespace().count(), 3);
        assert!(
            lines[lines.len() - 3].starts_with("#[Mean    =      500."),
            "{text}"
        );
        assert!(
            lines[lines.len() - 2].starts_with("#[Max     =     1000."),
            "{text}"
        );
        assert!(lines[lines.len() - 2].ends_with("Total count    =         1000]"));
        assert!(lines[lines.len() - 1].ends_with("SubBuckets     =         2048]"));
    }

    #[test]
    fn empty_histogram_has_only_header_and_footer() {
        let text = percentile_distribution(&new_histogram(), MICROS_PER_MS);
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains("Total count    =            0]"));
    }

    #[test]
    fn writes_a_file() {
        let path = crate::output::test_util::temp_path("x.hgrm");
        write_hgrm(&path, &one_to_thousand_ms()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(text.starts_with("       Value"));
    }
}
