//! `.hlog` files: HdrHistogram interval logs (V2 compressed, base64), one histogram per interval.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
    time::{Duration, UNIX_EPOCH},
};

use hdrhistogram::{
    serialization::{
        interval_log::{IntervalLogWriterBuilder, IntervalLogWriterError},
        V2DeflateSerializer,
    },
    Histogram,
};

use super::hgrm::MICROS_PER_MS;

/// The column legend line of the Java `HistogramLogWriter`.
const LEGEND: &str =
    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n";

/// An open interval log. It owns its file, so it can live in a struct across many intervals.
///
/// The header has `StartTime` and `BaseTime` both set to the given start, so interval timestamps
/// are seconds since it. Histograms hold µs; the `Interval_Max` column is in ms.
pub struct HlogWriter {
    out: BufWriter<File>,
    serializer: V2DeflateSerializer,
    line: Vec<u8>,
}

impl HlogWriter {
    /// Creates (truncates) `path` and writes the log header.
    pub fn create(path: impl AsRef<Path>, start_unix_secs: f64) -> io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut serializer = V2DeflateSerializer::new();
        let start = UNIX_EPOCH + seconds(start_unix_secs);
        IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "[Logged with commbench {}]",
                env!("CARGO_PKG_VERSION")
            ))
            .add_comment("[Histogram log format version 1.3]")
            .add_comment("[Values are microseconds; Interval_Max is in milliseconds]")
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(MICROS_PER_MS)
            .begin_log_with(&mut out, &mut serializer)?;
        out.write_all(LEGEND.as_bytes())?;
        Ok(Self {
            out,
            serializer,
            line: Vec::new(),
        })
    }

    /// Appends one interval: it began `start_offset_s` after the start and lasted `duration_s`.
    pub fn write_interval(
        &mut self,
        start_offset_s: f64,
        duration_s: f64,
        hist: &Histogram<u64>,
    ) -> io::Result<()> {
        // The crate's writer borrows its output and serializer, so a short-lived one formats each
        // interval line into a buffer. It starts with a `#[MaxValueDivisor]` header line, which
        // the file already has: only the interval line is kept.
        self.line.clear();
        IntervalLogWriterBuilder::new()
            .with_max_value_divisor(MICROS_PER_MS)
            .begin_log_with(&mut self.line, &mut self.serializer)?
            .write_histogram(hist, seconds(start_offset_s), seconds(duration_s), None)
            .map_err(|error| match error {
                IntervalLogWriterError::IoError(error) => error,
                IntervalLogWriterError::SerializeError(error) => {
                    io::Error::other(format!("cannot serialize histogram: {error}"))
                }
            })?;
        let mut rest = &self.line[..];
        while rest.first() == Some(&b'#') {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            rest = &rest[end..];
        }
        self.out.write_all(rest)
    }

    /// Flushes the file.
    pub fn finish(mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }
}

/// Seconds as a `Duration`; negative or non-finite values become zero.
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use hdrhistogram::serialization::{
        interval_log::{IntervalLogIterator, LogEntry},
        Deserializer,
    };

    use super::*;
    use crate::{output::test_util::temp_path, record::new_histogram};

    /// Standard base64 with padding (the crate's encoding), enough for the test.
    fn base64_decode(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0_u32, 0);
        for c in text.bytes().filter(|&c| c != b'=') {
            let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }

    #[test]
    fn empty_intervals_are_valid_lines() {
        let path = temp_path("empty.hlog");
        let mut log = HlogWriter::create(&path, 0.0).unwrap();
        log.write_interval(-1.0, f64::NAN, &new_histogram())
            .unwrap();
        log.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let entries: Vec<_> = IntervalLogIterator::new(&bytes).collect();
        assert_eq!(entries.len(), 3, "StartTime, BaseTime and one interval");
        let Ok(LogEntry::Interval(interval)) = &entries[2] else {
            panic!("{entries:?}");
        };
        assert_eq!(interval.start_timestamp(), Duration::ZERO);
        assert_eq!(interval.duration(), Duration::ZERO);
    }

    #[test]
    fn intervals_read_back() {
        let path = temp_path("intervals.hlog");
        let start = 1_700_000_000.25;
        let mut log = HlogWriter::create(&path, start).unwrap();
        for i in 0..3_u64 {
            let mut h = new_histogram();
            for v in 0..=(i * 10) {
                h.record(1_000 + v * 1_000).unwrap();
            }
            log.write_interval(i as f64, 1.0, &h).unwrap();
        }
        log.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("#[StartTime: 1700000000.250 (seconds since epoch)]\n"));
        assert!(text.contains("#[BaseTime: 1700000000.250 (seconds since epoch)]\n"));
        assert_eq!(text.matches("#[MaxValueDivisor").count(), 1, "{text}");
        assert!(text.contains(LEGEND));

        let mut deserializer = Deserializer::new();
        let mut intervals = Vec::new();
        let mut start_times = 0;
        for entry in IntervalLogIterator::new(&bytes) {
            match entry.unwrap() {
                LogEntry::StartTime(t) | LogEntry::BaseTime(t) => {
                    assert_eq!(t, Duration::from_millis(1_700_000_000_250));
                    start_times += 1;
                }
                LogEntry::Interval(interval) => {
                    let raw = base64_decode(interval.encoded_histogram());
                    let h: Histogram<u64> = deserializer.deserialize(&mut &raw[..]).unwrap();
                    intervals.push((interval.start_timestamp(), interval.max(), h.len()));
                }
            }
        }
        assert_eq!(start_times, 2);
        assert_eq!(
            intervals,
            vec![
                (Duration::from_secs(0), 1.0, 1),
                (Duration::from_secs(1), 11.007, 11),
                (Duration::from_secs(2), 21.007, 21),
            ]
        );
    }
}
